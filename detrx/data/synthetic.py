"""Synthetic shapes: a detection dataset that is generated, not downloaded.

Every image is a pure function of (seed, split, index): a noisy background with 1-10 shapes of
several classes, varied colour, size (down to a few pixels), aspect ratio and overlap. Boxes are the
tight boxes of the drawn shapes. `export_coco` (and `python -m detrx.data.export_synthetic`) writes
the split as PNGs + a COCO JSON, so the same data can be read back with `CocoDetection` (or any
COCO tool).
"""
import json
import os

import numpy as np
import torch
from PIL import Image

from detrx.data.classes import ClassList
from detrx.util.arg_types import non_negative_int, positive_int
from detrx.util.box_ops import box_iou

CLASS_NAMES = ("rectangle", "ellipse", "triangle", "cross", "diamond")
_SPLIT_IDS = {"train": 0, "val": 1}


def _shape_mask(kind, h, w):
    """Boolean [h, w] mask of shape `kind` filling an h x w box (touching all four sides)."""
    y = (np.arange(h) + 0.5) / h * 2 - 1  # [-1, 1], pixel centres
    x = (np.arange(w) + 0.5) / w * 2 - 1
    yy, xx = np.meshgrid(y, x, indexing="ij")
    if kind == "rectangle":
        mask = np.ones((h, w), dtype=bool)
    elif kind == "ellipse":
        mask = xx ** 2 + yy ** 2 <= 1.0
    elif kind == "triangle":  # apex at the top centre, base along the bottom edge
        mask = np.abs(xx) <= (yy + 1) / 2
    elif kind == "cross":
        mask = (np.abs(xx) <= 0.34) | (np.abs(yy) <= 0.34)
    else:  # diamond
        mask = np.abs(xx) + np.abs(yy) <= 1.0
    if not mask.any():
        mask[h // 2, w // 2] = True
    return mask


def _mask_box(mask, x0, y0):
    """Tight xyxy box (pixel edges) of a placed mask."""
    rows, cols = np.nonzero(mask)
    return [x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1]


class SyntheticShapes(torch.utils.data.Dataset):
    """Shapes on a noisy background.

    Items are (image float [3, H, W] in [0, 1], target) before `transforms`; the target holds
    "boxes" float [n, 4] absolute xyxy, "labels" int64 [n], "image_id", "orig_size" and "size" (H, W).
    `transforms(image, target)` (see `detrx.data.transforms`) converts boxes to normalised cxcywh.

    Args:
        num_images: images in the split.
        image_size: side of the square images, pixels.
        num_classes: how many of CLASS_NAMES to use (1-5).
        min_objects, max_objects: objects per image, drawn uniformly.
        min_size, max_size: object size range (longest side, pixels; drawn log-uniformly).
        max_overlap: largest IoU a new object may have with one already placed.
        seed: dataset seed; split: "train" or "val" (independent streams).
    """

    def __init__(self, num_images, image_size=64, num_classes=3, min_objects=1, max_objects=10,
                 min_size=4, max_size=None, max_overlap=0.3, seed=0, split="train", transforms=None):
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if not 1 <= num_classes <= len(CLASS_NAMES):
            raise ValueError(f"num_classes must be in [1, {len(CLASS_NAMES)}], got {num_classes}")
        if not 1 <= min_objects <= max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
        max_size = max_size or image_size // 2
        if not 2 <= min_size <= max_size <= image_size:
            raise ValueError(f"need 2 <= min_size <= max_size <= image_size, got {min_size}, {max_size}, {image_size}")
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
        self.num_images, self.image_size, self.num_classes = num_images, image_size, num_classes
        self.min_objects, self.max_objects = min_objects, max_objects
        self.min_size, self.max_size, self.max_overlap = min_size, max_size, max_overlap
        self.seed, self.split, self.transforms = seed, split, transforms
        self.classes = synthetic_classes(num_classes)
        self.class_names = self.classes.names
        self.label_to_category_id = list(self.classes.category_ids)

    def __len__(self):
        return self.num_images

    def render(self, index):
        """Image uint8 [H, W, 3], boxes float [n, 4] xyxy pixels, labels int64 [n]."""
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
        s = self.image_size
        base = rng.uniform(0, 255, size=3)
        gradient = np.linspace(-30, 30, s)[:, None, None] * rng.uniform(-1, 1, size=3)
        image = base + gradient + rng.normal(0, 12, size=(s, s, 3))  # [H, W, 3]
        boxes, labels = [], []
        for _ in range(rng.integers(self.min_objects, self.max_objects + 1)):
            for _attempt in range(20):  # rejection sampling keeps overlaps bounded
                size = np.exp(rng.uniform(np.log(self.min_size), np.log(self.max_size)))
                aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
                h = int(np.clip(round(size / max(aspect, 1.0)), 2, s))
                w = int(np.clip(round(size * min(aspect, 1.0)), 2, s))
                y0, x0 = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
                candidate = torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32)
                if not boxes or _max_iou(candidate, boxes) <= self.max_overlap:
                    break
            else:
                continue
            label = int(rng.integers(0, self.num_classes))
            mask = _shape_mask(self.class_names[label], h, w)
            colour = (base + rng.choice([-1, 1], size=3) * rng.uniform(70, 160, size=3)) % 256
            image[y0:y0 + h, x0:x0 + w][mask] = colour
            boxes.append(_mask_box(mask, x0, y0))
            labels.append(label)
        image = np.clip(image, 0, 255).astype(np.uint8)
        return image, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64)

    def __getitem__(self, index):
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        image, boxes, labels = self.render(index)
        s = self.image_size
        target = {"boxes": boxes, "labels": labels, "image_id": index,
                  "orig_size": torch.tensor([s, s]), "size": torch.tensor([s, s])}
        image = torch.from_numpy(image).permute(2, 0, 1).float() / 255  # [3, H, W]
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def coco_dict(self):
        """The split's ground truth as a COCO-format dict (what pycocotools' COCO() loads)."""
        images, annotations = [], []
        for index in range(self.num_images):
            _, boxes, labels = self.render(index)
            images.append({"id": index, "file_name": f"{index:06d}.png",
                           "height": self.image_size, "width": self.image_size})
            for box, label in zip(boxes.tolist(), labels.tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append({"id": len(annotations) + 1, "image_id": index, "iscrowd": 0,
                                    "category_id": self.label_to_category_id[label],
                                    "bbox": [box[0], box[1], w, h], "area": w * h})
        categories = [{"id": i, "name": n} for i, n in zip(self.label_to_category_id, self.class_names)]
        return {"images": images, "annotations": annotations, "categories": categories}


def synthetic_classes(num_classes):
    """The first num_classes shape names, category ids 1..num_classes."""
    return ClassList(CLASS_NAMES[:num_classes], tuple(range(1, num_classes + 1)))


def _max_iou(candidate, boxes):
    """Largest IoU of candidate [1, 4] with any of the placed xyxy boxes."""
    return box_iou(candidate, torch.tensor(boxes, dtype=torch.float32))[0].max().item()


def export_coco(dataset, out_dir):
    """Writes `out_dir/images/*.png` and `out_dir/annotations.json`; returns the two paths."""
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    coco = dataset.coco_dict()
    for entry in coco["images"]:
        image, _, _ = dataset.render(entry["id"])
        Image.fromarray(image).save(os.path.join(image_dir, entry["file_name"]))
    ann_file = os.path.join(out_dir, "annotations.json")
    with open(ann_file, "w") as f:
        json.dump(coco, f)
    return image_dir, ann_file


def add_synthetic_arguments(group, help_prefix=""):
    """Declares the options that describe the synthetic set (read by build_synthetic) on an argparse
    parser or group; help_prefix starts each help text (e.g. "synthetic: ")."""
    group.add_argument("--num-train", type=positive_int, default=1000, help=f"{help_prefix}training images")
    group.add_argument("--num-val", type=positive_int, default=200, help=f"{help_prefix}validation images")
    group.add_argument("--image-size", type=positive_int, default=128, help=f"{help_prefix}image side, pixels")
    group.add_argument("--num-classes", type=positive_int, default=3,
                       help=f"{help_prefix}shape classes (1-{len(CLASS_NAMES)})")
    group.add_argument("--min-objects", type=positive_int, default=1, help=f"{help_prefix}fewest objects per image")
    group.add_argument("--max-objects", type=positive_int, default=10, help=f"{help_prefix}most objects per image")
    group.add_argument("--object-min-size", type=positive_int, default=4,
                       help=f"{help_prefix}smallest object side, pixels")
    group.add_argument("--object-max-size", type=positive_int, default=None,
                       help=f"{help_prefix}largest object side, pixels (default: half the image)")
    group.add_argument("--data-seed", type=non_negative_int, default=0, help=f"{help_prefix}dataset seed")


def build_synthetic(split, args, transforms=None):
    """The synthetic split described by the CLI args (`--num-train`, `--image-size`,
    `--object-min-size`, ...)."""
    return SyntheticShapes(args.num_train if split == "train" else args.num_val,
                           image_size=args.image_size, num_classes=args.num_classes,
                           min_objects=args.min_objects, max_objects=args.max_objects,
                           min_size=args.object_min_size, max_size=args.object_max_size, seed=args.data_seed,
                           split=split, transforms=transforms)
