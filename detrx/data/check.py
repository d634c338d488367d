"""Checks COCO-format data without training: `python -m detrx.data.check --train-images DIR
--train-ann FILE --val-images DIR --val-ann FILE` (either split alone works too).

Reads every annotation and looks for every image file, then prints all problems at once, grouped
by file and kind: errors (training refuses the data) and notes (what training and evaluation do
about them, identically: boxes clipped to their image or dropped, categories one split lacks kept).
Exit status 1 when there are errors, 0 otherwise. `python -m detrx.train --check-data ...` does the
same with the training options.
"""
import argparse
import sys

from detrx.data.coco_check import check_coco_splits


def format_report(report):
    """The problems, a count line and the class list."""
    lines = [report.format() or "no problems found",
             f"{len(report.errors)} error(s), {len(report.notes)} note(s); "
             f"{len(report.classes)} classes (id name): "
             + ", ".join(f"{cid} {name}" for cid, name in zip(report.classes.category_ids, report.classes.names))]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser("detrx.data.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for split in ("train", "val"):
        parser.add_argument(f"--{split}-images", default="", help=f"{split} images folder")
        parser.add_argument(f"--{split}-ann", default="", help=f"{split} annotations JSON")
    opts = parser.parse_args(argv)
    paths = {}
    for split in ("train", "val"):
        images, ann = getattr(opts, f"{split}_images"), getattr(opts, f"{split}_ann")
        if bool(images) != bool(ann):
            parser.error(f"give both --{split}-images and --{split}-ann, or neither")
        if images:
            paths[split] = (images, ann)
    if not paths:
        parser.error("give --train-images/--train-ann and/or --val-images/--val-ann")
    report = check_coco_splits(paths)
    print(format_report(report))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
