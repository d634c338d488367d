"""COCO-format detection data: an images folder and an annotations JSON, so users can train on
their own data. Category ids are mapped to contiguous labels 0..C-1 (and back for evaluation)."""
import json
import os

import numpy as np
import torch
from PIL import Image

from detrx.util.box_ops import box_xywh_to_xyxy


class CocoDetection(torch.utils.data.Dataset):
    """Items are (image float [3, H, W] in [0, 1], target) before `transforms`, with the same target
    keys as `SyntheticShapes`; crowd annotations and empty boxes are dropped."""

    def __init__(self, image_folder, ann_file, transforms=None):
        if not os.path.isdir(image_folder):
            raise ValueError(f"image_folder {image_folder!r} is not a directory")
        if not os.path.isfile(ann_file):
            raise ValueError(f"ann_file {ann_file!r} does not exist")
        with open(ann_file) as f:
            self._coco = json.load(f)
        for key in ("images", "annotations", "categories"):
            if key not in self._coco:
                raise ValueError(f"ann_file {ann_file!r} is not COCO format: no {key!r} key")
        self.image_folder, self.transforms = image_folder, transforms
        categories = sorted(self._coco["categories"], key=lambda c: c["id"])
        self.label_to_category_id = [c["id"] for c in categories]
        self.class_names = [c["name"] for c in categories]
        self.num_classes = len(categories)
        self._label_of = {cid: label for label, cid in enumerate(self.label_to_category_id)}
        self._images = sorted(self._coco["images"], key=lambda im: im["id"])
        self._annotations = {im["id"]: [] for im in self._images}
        for ann in self._coco["annotations"]:
            self._annotations[ann["image_id"]].append(ann)

    def __len__(self):
        return len(self._images)

    def __getitem__(self, index):
        info = self._images[index]
        with Image.open(os.path.join(self.image_folder, info["file_name"])) as pil:
            array = np.asarray(pil.convert("RGB"))
        image = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255  # [3, H, W]
        h, w = image.shape[-2:]
        anns = [a for a in self._annotations[info["id"]] if not a.get("iscrowd", 0)]
        boxes = box_xywh_to_xyxy(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4))
        boxes = boxes.clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=torch.float32))
        labels = torch.tensor([self._label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = {"boxes": boxes[keep], "labels": labels[keep], "image_id": info["id"],
                  "orig_size": torch.tensor([h, w]), "size": torch.tensor([h, w])}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def coco_dict(self):
        """The ground truth as loaded (what pycocotools' COCO() evaluates against)."""
        return self._coco
