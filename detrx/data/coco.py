"""COCO-format detection data: an images folder and an annotations JSON, so users can train on
their own data. Category ids are mapped to contiguous labels 0..C-1 (and back for evaluation)."""
import os

import torch

from detrx.data.classes import ClassList
from detrx.data.coco_check import DatasetError, read_coco_split
from detrx.data.image_io import load_rgb
from detrx.util.box_ops import box_xywh_to_xyxy


class CocoDetection(torch.utils.data.Dataset):
    """Items are (image float [3, H, W] in [0, 1], target) before `transforms`, with the same target
    keys as `SyntheticShapes`.

    The annotations are checked when read (`detrx.data.coco_check`): any error raises DatasetError
    listing all of them. Boxes reaching outside their image are clipped to it, empty ones dropped;
    crowd boxes are left out of training and kept (as ignored regions) in `coco_dict()`, the ground
    truth of the evaluation, which holds the same clipped boxes.

    Args:
        image_folder, ann_file: the split's files.
        transforms: joint image/target transforms (`detrx.data.transforms`).
        classes: the ClassList to label with (default: this file's categories); training passes
            the union of the train and val categories.
    """

    def __init__(self, image_folder, ann_file, transforms=None, classes=None):
        split, problems = read_coco_split(image_folder, ann_file)
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise DatasetError("\n".join(f"{p.file}: {p.kind}: {p.detail}" for p in errors))
        self._init_from_split(split, classes or ClassList.from_categories(split.categories), transforms)

    @classmethod
    def from_split(cls, split, classes, transforms=None):
        """A dataset over an already checked CocoSplit."""
        dataset = cls.__new__(cls)
        dataset._init_from_split(split, classes, transforms)
        return dataset

    def _init_from_split(self, split, classes, transforms):
        unknown = sorted({c["id"] for c in split.categories} - set(classes.category_ids))
        if unknown:
            raise ValueError(f"classes lack category ids {unknown} of {split.ann_file!r}")
        self.split, self.classes, self.transforms = split, classes, transforms
        self.class_names = list(classes.names)
        self.label_to_category_id = list(classes.category_ids)
        self.num_classes = len(classes)
        self._label_of = classes.label_of()

    def __len__(self):
        return len(self.split.images)

    def __getitem__(self, index):
        info = self.split.images[index]
        path = os.path.join(self.split.image_folder, info["file_name"])
        array = load_rgb(path)  # [H, W, 3] uint8
        h, w = array.shape[:2]
        if (h, w) != (info["height"], info["width"]):
            raise ValueError(f"{path!r} is {w}x{h} pixels but {self.split.ann_file!r} says "
                             f"{info['width']}x{info['height']} (image id {info['id']})")
        image = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255  # [3, H, W]
        anns = [a for a in self.split.annotations[info["id"]] if not a["iscrowd"]]
        boxes = box_xywh_to_xyxy(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4))
        labels = torch.tensor([self._label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        target = {"boxes": boxes, "labels": labels, "image_id": info["id"],
                  "orig_size": torch.tensor([h, w]), "size": torch.tensor([h, w])}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def coco_dict(self):
        """The checked ground truth (clipped boxes, dropped ones left out, annotation ids 1..N, every
        class listed): what pycocotools' COCO() evaluates against."""
        annotations = []
        for info in self.split.images:
            for ann in self.split.annotations[info["id"]]:
                annotations.append({"id": len(annotations) + 1, "image_id": info["id"], **ann})
        categories = [{"id": cid, "name": name} for cid, name in zip(self.classes.category_ids, self.classes.names)]
        return {"images": [dict(info) for info in self.split.images], "annotations": annotations,
                "categories": categories}
