"""Writes the synthetic shapes set as COCO-format files: `python -m detrx.data.export_synthetic
--out-dir data/shapes` -> data/shapes/{train,val}/images/*.png and .../annotations.json.

The same options as `detrx.train` describe the set (--num-train, --image-size, --object-min-size,
...), so the exported files hold exactly the images training generates; train on them with
`--dataset coco --train-images data/shapes/train/images --train-ann data/shapes/train/annotations.json ...`.
"""
import argparse
import os
import sys

from detrx.data.synthetic import add_synthetic_arguments, build_synthetic, export_coco


def main(argv=None):
    parser = argparse.ArgumentParser("detrx.data.export_synthetic", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out-dir", required=True, help="one folder per split is written here")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"],
                        help="splits to write")
    add_synthetic_arguments(parser)
    opts = parser.parse_args(argv)
    if os.path.exists(opts.out_dir) and not os.path.isdir(opts.out_dir):
        parser.error(f"--out-dir {opts.out_dir!r} exists and is not a folder")
    for split in opts.splits:
        try:
            dataset = build_synthetic(split, opts)
        except ValueError as error:
            parser.error(str(error))
        image_dir, ann_file = export_coco(dataset, os.path.join(opts.out_dir, split))
        print(f"{split}: {len(dataset)} images in {image_dir}, annotations in {ann_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
