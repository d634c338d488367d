"""Reads COCO-format annotation files and checks every entry before anything trains on them.

`read_coco_split` returns the cleaned split and every problem found in it; `check_coco_splits`
does it for train and val, adds the problems between the two, and merges their class lists.
Problems are errors (training cannot use the data: missing or unreadable files, unknown or
duplicate ids, malformed boxes) or notes (handled the same way in training and evaluation: boxes
clipped to their image or dropped, categories one split lacks).
"""
import json
import math
import os
from dataclasses import dataclass, field

from detrx.data.classes import ClassList, merge_categories
from detrx.data.image_io import image_size

ERROR, NOTE = "error", "note"
SHOWN_PER_KIND = 10  # examples listed per kind of problem; the rest are counted


@dataclass
class Problem:
    severity: str  # ERROR or NOTE
    file: str  # the annotation file (or folder) concerned
    kind: str  # what is wrong, e.g. "missing image file"
    detail: str  # which entry, e.g. "img_3.png (image id 3)"


@dataclass
class CocoSplit:
    """A checked split: image entries (id, file_name, height, width) and, per image id, the kept
    annotations with their boxes clipped to the image (xywh, pixels)."""

    image_folder: str
    ann_file: str
    images: list
    annotations: dict  # image id -> list of {"bbox", "category_id", "iscrowd", "area"}
    categories: list


@dataclass
class DataReport:
    """Every problem found, and the classes (union of the splits' categories, by id)."""

    problems: list = field(default_factory=list)
    splits: dict = field(default_factory=dict)  # "train"/"val" -> CocoSplit
    classes: ClassList = None

    @property
    def errors(self):
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def notes(self):
        return [p for p in self.problems if p.severity == NOTE]

    def format(self):
        """The problems grouped by file and kind, a few examples each, errors first."""
        lines = []
        for severity in (ERROR, NOTE):
            groups = {}
            for problem in self.problems:
                if problem.severity == severity:
                    groups.setdefault((problem.file, problem.kind), []).append(problem.detail)
            for (file, kind), details in groups.items():
                shown = ", ".join(details[:SHOWN_PER_KIND])
                more = f" and {len(details) - SHOWN_PER_KIND} more" if len(details) > SHOWN_PER_KIND else ""
                lines.append(f"{severity}: {file}: {kind} ({len(details)}): {shown}{more}")
        return "\n".join(lines)


class DatasetError(ValueError):
    """The dataset check found errors; the message lists all of them."""


def _load_json(ann_file, problems):
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except OSError as error:
        problems.append(Problem(ERROR, ann_file, "unreadable annotation file", str(error)))
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        problems.append(Problem(ERROR, ann_file, "not valid JSON", str(error)))
        return None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict)
               or not isinstance(data.get(k), list)]
    if missing:
        problems.append(Problem(ERROR, ann_file, "not COCO format", f"no {' / '.join(repr(k) for k in missing)} list"))
        return None
    return data


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _unique_by_id(entries, what, ann_file, problems, describe):
    """{id: entry} of the entries with an int id; missing and duplicate ids are errors."""
    by_id = {}
    for entry in entries:
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            problems.append(Problem(ERROR, ann_file, f"{what} without an integer id", repr(entry)[:80]))
        elif entry["id"] in by_id:
            problems.append(Problem(ERROR, ann_file, f"duplicate {what} id",
                                    f"{entry['id']}: {describe(by_id[entry['id']])} and {describe(entry)}"))
        else:
            by_id[entry["id"]] = entry
    return by_id


def _check_images(images, image_folder, ann_file, problems):
    """Image entries with their file present and their size known (read from the header if absent)."""
    kept = []
    for image_id, entry in images.items():
        name = entry.get("file_name")
        if not isinstance(name, str) or not name:
            problems.append(Problem(ERROR, ann_file, "image without a file_name", f"image id {image_id}"))
            continue
        path = os.path.join(image_folder, name)
        if not os.path.isfile(path):
            problems.append(Problem(ERROR, ann_file, f"missing image file in {image_folder}",
                                    f"{name} (image id {image_id})"))
            continue
        height, width = entry.get("height"), entry.get("width")
        if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            try:
                height, width = image_size(path)
            except OSError as error:
                problems.append(Problem(ERROR, ann_file, "unreadable image file",
                                        f"{name} (image id {image_id}): {error}"))
                continue
        kept.append({"id": image_id, "file_name": name, "height": height, "width": width})
    return kept


def _clean_box(bbox, height, width):
    """COCO xywh -> (xywh clipped to the image or None, what happened: None or a key of BOX_FATES)."""
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return None, "empty"
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        return None, "outside"
    clipped = [x0, y0, x1 - x0, y1 - y0]
    return clipped, ("clipped" if clipped != [x, y, w, h] else None)


BOX_FATES = {"empty": "box with non-positive width or height, dropped",
             "outside": "box outside its image, dropped",
             "clipped": "box reaching outside its image, clipped to it"}


def _is_box(bbox):
    return (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox))


def _annotation_error(ann, image_ids, category_ids):
    """(kind, detail) of what makes an annotation unusable, or None."""
    if not isinstance(ann, dict):
        return "annotation is not an object", repr(ann)[:80]
    label = f"annotation {ann.get('id')!r}" if "id" in ann else "annotation without id"
    if ann.get("image_id") not in image_ids:
        return "annotation of an unknown image id", f"{label} (image id {ann.get('image_id')!r})"
    if ann.get("category_id") not in category_ids:
        return "unknown category id", f"{label} (category id {ann.get('category_id')!r})"
    if not _is_box(ann.get("bbox")):
        return "malformed bbox (need 4 finite numbers x, y, w, h)", f"{label}: {ann.get('bbox')!r}"
    return None


def _check_annotations(data, images, category_ids, ann_file, problems):
    """{image id: kept annotations}; unknown ids and malformed boxes are errors, boxes clipped or
    dropped are notes."""
    image_by_id = {image["id"]: image for image in images}
    by_image = {image_id: [] for image_id in image_by_id}
    declared = {entry.get("id") for entry in data["images"] if isinstance(entry, dict)}
    for ann in data["annotations"]:
        error = _annotation_error(ann, declared, category_ids)
        if error is not None:
            problems.append(Problem(ERROR, ann_file, *error))
            continue
        image = image_by_id.get(ann["image_id"])
        if image is None:
            continue  # its image file is missing: already an error
        box, fate = _clean_box([float(v) for v in ann["bbox"]], image["height"], image["width"])
        if fate is not None:
            detail = f"annotation {ann.get('id')!r}: {list(ann['bbox'])} in {image['width']}x{image['height']}"
            problems.append(Problem(NOTE, ann_file, BOX_FATES[fate], detail))
        if box is not None:
            by_image[image["id"]].append({"bbox": box, "category_id": ann["category_id"], "area": box[2] * box[3],
                                          "iscrowd": int(bool(ann.get("iscrowd", 0)))})
    return by_image


def read_coco_split(image_folder, ann_file):
    """-> (CocoSplit or None when unusable, [Problem]) for one images folder + annotation file."""
    problems = []
    if not os.path.isdir(image_folder):
        problems.append(Problem(ERROR, image_folder, "not a folder", "the images folder"))
    data = _load_json(ann_file, problems)
    if data is None or problems:
        return None, problems
    categories = _unique_by_id(data["categories"], "category", ann_file, problems,
                               lambda c: repr(c.get("name")))
    for cid, category in categories.items():
        if not isinstance(category.get("name"), str):
            problems.append(Problem(ERROR, ann_file, "category without a name", f"category id {cid}"))
    images = _unique_by_id(data["images"], "image", ann_file, problems, lambda im: repr(im.get("file_name")))
    kept_images = sorted(_check_images(images, image_folder, ann_file, problems), key=lambda im: im["id"])
    annotations = _check_annotations(data, kept_images, set(categories), ann_file, problems)
    category_list = [{"id": cid, "name": str(c.get("name"))} for cid, c in sorted(categories.items())]
    return CocoSplit(image_folder, ann_file, kept_images, annotations, category_list), problems


def _cross_split_problems(splits):
    """Notes for categories one split lists (or annotates) and another does not."""
    problems = []
    if len(splits) < 2:
        return problems
    listed = {name: {c["id"]: c["name"] for c in split.categories} for name, split in splits.items()}
    for name, split in splits.items():
        for other, ids in listed.items():
            for cid in sorted(set(ids) - set(listed[name])):
                problems.append(Problem(NOTE, split.ann_file, f"category only in {other}'s list, kept as a class",
                                        f"{cid} {ids[cid]!r}"))
    used = {name: {a["category_id"] for anns in split.annotations.values() for a in anns}
            for name, split in splits.items()}
    if "train" in splits:
        for cid in sorted(set(listed["train"]) - used["train"]):
            problems.append(Problem(NOTE, splits["train"].ann_file, "category with no training box",
                                    f"{cid} {listed['train'][cid]!r}"))
    return problems


def check_coco_splits(paths):
    """paths {"train": (image_folder, ann_file), "val": (...)} (either may be absent) -> DataReport
    with the classes = union of the splits' categories, matched by id."""
    report = DataReport()
    for name, (image_folder, ann_file) in paths.items():
        split, problems = read_coco_split(image_folder, ann_file)
        report.problems += problems
        if split is not None:
            report.splits[name] = split
    report.problems += _cross_split_problems(report.splits)
    classes, conflicts = merge_categories(*(split.categories for split in report.splits.values()))
    first_file = next(iter(paths.values()))[1]
    report.problems += [Problem(ERROR, first_file, "category named differently in the two splits", conflict)
                        for conflict in conflicts]
    report.classes = classes
    if not report.errors and not len(classes):
        report.problems.append(Problem(ERROR, first_file, "no categories", "the category lists are empty"))
    return report
