"""COCO box mAP with pycocotools."""
import contextlib
import copy
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_gt_from_dict(coco_dict):
    """A pycocotools COCO index built from an in-memory dict (no file, no printing)."""
    coco = COCO()
    coco.dataset = copy.deepcopy(coco_dict)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_evaluate(coco_gt, detections):
    """coco_gt: COCO index; detections: list of {"image_id", "category_id", "bbox" [x, y, w, h],
    "score"} -> {"AP", "AP50", "AP75", "APs", "APm", "APl"} (-1 where no ground truth falls in the
    area range; 0 everywhere when there are no detections)."""
    return coco_evaluate_with_table(coco_gt, detections)[0]


def coco_evaluate_with_table(coco_gt, detections):
    """-> (the stats of coco_evaluate, pycocotools' 12-line summary table as text)."""
    if not detections:
        return {name: 0.0 for name in STAT_NAMES}, "no detections: every AP is 0"
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress lines
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        evaluator.summarize()
    stats = {name: float(np.round(value, 6)) for name, value in zip(STAT_NAMES, evaluator.stats[:6])}
    return stats, table.getvalue().rstrip()
