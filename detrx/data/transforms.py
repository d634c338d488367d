"""Joint image + target transforms: resize, horizontal flip, normalise.

Images are float tensors [3, H, W] in [0, 1]; targets hold absolute xyxy "boxes" until `Normalize`,
the last transform, which standardises the image and turns boxes into normalised (cx, cy, w, h)
(what DETR predicts).
"""
import random

import torch
import torch.nn.functional as F

from detrx.util.box_ops import box_xyxy_to_cxcywh

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target


class RandomHorizontalFlip:
    """Mirror image and boxes with probability p."""

    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image, target):
        if random.random() >= self.p:
            return image, target
        width = image.shape[-1]
        target = dict(target)
        boxes = target["boxes"]
        target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], -1)
        return image.flip(-1), target


def _resized_hw(h, w, size, max_size):
    """(H, W) with the shorter side `size`, unless that makes the longer side exceed max_size."""
    if max_size is not None and max(h, w) / min(h, w) * size > max_size:
        size = int(round(max_size * min(h, w) / max(h, w)))
    if h <= w:
        return size, int(round(size * w / h))
    return int(round(size * h / w)), size


class RandomResize:
    """Resize the shorter side to one of `sizes` (picked at random), capping the longer at max_size."""

    def __init__(self, sizes, max_size=None):
        sizes = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must be positive side lengths, got {sizes}")
        self.sizes, self.max_size = sizes, max_size

    def __call__(self, image, target):
        h, w = image.shape[-2:]
        new_h, new_w = _resized_hw(h, w, random.choice(self.sizes), self.max_size)
        if (new_h, new_w) == (h, w):
            return image, target
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
        target = dict(target)
        scale = torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h])
        target["boxes"] = target["boxes"] * scale
        target["size"] = torch.tensor([new_h, new_w])
        return image, target


class Normalize:
    """Standardise the image; boxes: absolute xyxy -> normalised cxcywh (by the unpadded size)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image, target):
        image = (image - self.mean) / self.std
        target = dict(target)
        h, w = image.shape[-2:]
        boxes = target["boxes"] / torch.tensor([w, h, w, h], dtype=torch.float32)
        target["boxes"] = box_xyxy_to_cxcywh(boxes.clamp(0, 1))
        return image, target


def build_transforms(train, sizes=None, max_size=None, flip=True):
    """Training: random flip + random resize to `sizes`; eval: resize to the largest size.

    With sizes=None images keep their size (the synthetic set is generated at its final size).
    """
    steps = []
    if train and flip:
        steps.append(RandomHorizontalFlip())
    if sizes:
        steps.append(RandomResize(sizes if train else [max(sizes)], max_size))
    steps.append(Normalize())
    return Compose(steps)
