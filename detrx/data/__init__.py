"""Datasets (synthetic shapes, COCO format), transforms and the padding collate."""
from detrx.data.build import build_dataset
from detrx.data.coco import CocoDetection
from detrx.data.collate import collate_fn, pad_images
from detrx.data.synthetic import CLASS_NAMES, SyntheticShapes, build_synthetic, export_coco
from detrx.data.transforms import build_transforms

__all__ = ["CLASS_NAMES", "CocoDetection", "SyntheticShapes", "build_dataset", "build_synthetic",
           "build_transforms", "collate_fn", "export_coco", "pad_images"]
