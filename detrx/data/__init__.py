"""Datasets (synthetic shapes, COCO format), their check, transforms and the padding collate."""
from detrx.data.build import Datasets, build_dataset, build_datasets, check_datasets
from detrx.data.classes import ClassList, merge_categories
from detrx.data.coco import CocoDetection
from detrx.data.coco_check import DatasetError, check_coco_splits, read_coco_split
from detrx.data.collate import collate_fn, pad_images
from detrx.data.image_io import load_rgb
from detrx.data.synthetic import CLASS_NAMES, SyntheticShapes, build_synthetic, export_coco, synthetic_classes
from detrx.data.transforms import build_transforms

__all__ = ["CLASS_NAMES", "ClassList", "CocoDetection", "DatasetError", "Datasets", "SyntheticShapes",
           "build_dataset", "build_datasets", "build_synthetic", "build_transforms", "check_coco_splits",
           "check_datasets", "collate_fn", "export_coco", "load_rgb", "merge_categories", "pad_images",
           "read_coco_split", "synthetic_classes"]
