"""Writes the synthetic shapes set as COCO-format files: `python -m detrx.data.export_synthetic
--out-dir data/shapes` -> data/shapes/{train,val}/images/*.png and .../annotations.json.

The same options as `detrx.train` describe the set (--num-train, --image-size, --object-min-size,
...), so the exported files hold exactly the images training generates; train on them with
`--dataset coco --train-images data/shapes/train/images --train-ann data/shapes/train/annotations.json ...`.
"""
import argparse
import os
import sys

from detrx.data.synthetic import CLASS_NAMES, SyntheticShapes, export_coco
from detrx.util.arg_types import non_negative_int, positive_int


def main(argv=None):
    parser = argparse.ArgumentParser("detrx.data.export_synthetic", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out-dir", required=True, help="one folder per split is written here")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"],
                        help="splits to write")
    parser.add_argument("--num-train", type=positive_int, default=1000, help="training images")
    parser.add_argument("--num-val", type=positive_int, default=200, help="validation images")
    parser.add_argument("--image-size", type=positive_int, default=128, help="image side, pixels")
    parser.add_argument("--num-classes", type=positive_int, default=3, help=f"shape classes (1-{len(CLASS_NAMES)})")
    parser.add_argument("--min-objects", type=positive_int, default=1, help="fewest objects per image")
    parser.add_argument("--max-objects", type=positive_int, default=10, help="most objects per image")
    parser.add_argument("--object-min-size", type=positive_int, default=4, help="smallest object side, pixels")
    parser.add_argument("--object-max-size", type=positive_int, default=None,
                        help="largest object side, pixels (default: half the image)")
    parser.add_argument("--data-seed", type=non_negative_int, default=0, help="dataset seed")
    opts = parser.parse_args(argv)
    if os.path.exists(opts.out_dir) and not os.path.isdir(opts.out_dir):
        parser.error(f"--out-dir {opts.out_dir!r} exists and is not a folder")
    for split in opts.splits:
        try:
            dataset = SyntheticShapes(opts.num_train if split == "train" else opts.num_val, image_size=opts.image_size,
                                      num_classes=opts.num_classes, min_objects=opts.min_objects,
                                      max_objects=opts.max_objects, min_size=opts.object_min_size,
                                      max_size=opts.object_max_size, seed=opts.data_seed, split=split)
        except ValueError as error:
            parser.error(str(error))
        image_dir, ann_file = export_coco(dataset, os.path.join(opts.out_dir, split))
        print(f"{split}: {len(dataset)} images in {image_dir}, annotations in {ann_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
