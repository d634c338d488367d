"""Picks the dataset and its transforms from the CLI args."""
from detrx.data.coco import CocoDetection
from detrx.data.synthetic import build_synthetic
from detrx.data.transforms import build_transforms


def build_dataset(split, args):
    """split "train" or "val" -> a dataset with `coco_dict()`, `label_to_category_id`, `class_names`.

    For COCO-format data, args.num_classes is set from the annotation file's categories.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    transforms = build_transforms(split == "train", args.sizes, args.max_size, args.flip)
    if args.dataset == "synthetic":
        return build_synthetic(split, args, transforms)
    images, ann = (args.train_images, args.train_ann) if split == "train" else (args.val_images, args.val_ann)
    dataset = CocoDetection(images, ann, transforms)
    args.num_classes = dataset.num_classes
    return dataset
