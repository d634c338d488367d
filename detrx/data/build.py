"""Builds the train and val datasets, their transforms and their shared class list from the CLI args."""
from dataclasses import dataclass, field

from detrx.data.classes import ClassList
from detrx.data.coco import CocoDetection
from detrx.data.coco_check import DataReport, DatasetError, check_coco_splits
from detrx.data.synthetic import build_synthetic, synthetic_classes
from detrx.data.transforms import build_transforms


@dataclass
class Datasets:
    """train (None when not needed) and val datasets labelled with the same classes; report.classes
    are the data's own (the same unless a checkpoint's classes were given)."""

    train: object
    val: object
    classes: ClassList
    report: DataReport = field(default_factory=DataReport)


def coco_paths(args, with_train=True):
    """{"train": (images, ann), "val": (images, ann)} from the CLI args."""
    paths = {"train": (args.train_images, args.train_ann)} if with_train else {}
    paths["val"] = (args.val_images, args.val_ann)
    return paths


def check_datasets(args, with_train=True):
    """The DataReport of the data the args describe (synthetic data has no problems)."""
    if args.dataset == "synthetic":
        return DataReport(classes=synthetic_classes(args.num_classes))
    return check_coco_splits(coco_paths(args, with_train))


def build_datasets(args, with_train=True, classes=None):
    """-> Datasets. COCO-format data is checked first: DatasetError lists every error found; the
    classes are the union of the train and val category lists, matched by id, unless `classes`
    (a checkpoint's) is given: then every category of the data must be one of them."""
    train_transforms = build_transforms(True, args.sizes, args.image_max_size, args.flip)
    val_transforms = build_transforms(False, args.sizes, args.image_max_size)
    report = check_datasets(args, with_train)
    if report.errors:
        raise DatasetError("the dataset check found errors:\n" + report.format())
    if classes is not None:
        check_classes_cover(classes, report.classes)
    classes = classes or report.classes
    if args.dataset == "synthetic":
        train = build_synthetic("train", args, train_transforms) if with_train else None
        return Datasets(train, build_synthetic("val", args, val_transforms), classes, report)
    train = CocoDetection.from_split(report.splits["train"], classes, train_transforms) if with_train else None
    val = CocoDetection.from_split(report.splits["val"], classes, val_transforms)
    return Datasets(train, val, classes, report)


def check_classes_cover(classes, data_classes):
    """Every (category id, name) of data_classes is one of `classes`; DatasetError otherwise."""
    known = dict(zip(classes.category_ids, classes.names))
    foreign = [f"{cid} {name!r}" for cid, name in zip(data_classes.category_ids, data_classes.names)
               if known.get(cid) != name]
    if foreign:
        raise DatasetError(f"the data has categories the checkpoint's classes lack (id, name): {', '.join(foreign)}; "
                           f"the checkpoint knows {[f'{c} {n!r}' for c, n in known.items()]}")


def build_dataset(split, args):
    """One split ("train" or "val") of `build_datasets`, labelled with the classes of both."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    datasets = build_datasets(args, with_train=split == "train")
    return datasets.train if split == "train" else datasets.val
