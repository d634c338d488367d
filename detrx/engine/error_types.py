"""Sorts a detector's confident predictions into error types, per image, class-agnostically.

Each confident prediction (score >= `score_threshold`), taken in descending score order, is:
    hit        the first to reach IoU >= 0.5 with a ground-truth box (that box is now covered)
    duplicate  IoU >= 0.5 with a ground-truth box, but every such box is already covered
    near_miss  best IoU with any ground-truth box in [0.1, 0.5)
    background best IoU below 0.1
A ground-truth box that no confident prediction covers is `missed`. This is COCO's greedy matching
at IoU 0.5, without classes, so that localisation errors are counted apart from class errors.
"""
import numpy as np
import torch

from detrx.util.box_ops import box_cxcywh_to_xyxy, box_iou

HIT_IOU, NEAR_MISS_IOU = 0.5, 0.1
ERROR_TYPES = ("hit", "duplicate", "near_miss", "background", "missed")


def prediction_types(scores, boxes, gt_boxes, score_threshold=0.3):
    """One image: scores [Q], boxes [Q, 4] and gt_boxes [G, 4], normalised cxcywh (numpy or torch)
    -> (the error type of each prediction, a list of Q names, None below the threshold;
    covered [G] bool, the ground-truth boxes some prediction hit)."""
    scores, boxes, gt_boxes = (torch.as_tensor(np.asarray(x), dtype=torch.float64) for x in (scores, boxes, gt_boxes))
    if scores.dim() != 1 or boxes.shape != (scores.shape[0], 4) or gt_boxes.dim() != 2 or gt_boxes.shape[1] != 4:
        raise ValueError(f"expected scores [Q], boxes [Q, 4] and gt_boxes [G, 4], got {tuple(scores.shape)}, "
                         f"{tuple(boxes.shape)} and {tuple(gt_boxes.shape)}")
    types = [None] * scores.shape[0]
    confident = torch.nonzero(scores >= score_threshold)[:, 0]
    order = confident[scores[confident].argsort(descending=True, stable=True)].tolist()
    covered = torch.zeros(gt_boxes.shape[0], dtype=torch.bool)
    if gt_boxes.shape[0]:
        iou, _ = box_iou(box_cxcywh_to_xyxy(boxes)[:, None], box_cxcywh_to_xyxy(gt_boxes)[None])  # [Q, G]
    for q in order:
        if not gt_boxes.shape[0] or iou[q].max() < NEAR_MISS_IOU:
            types[q] = "background"
            continue
        overlapping = iou[q] >= HIT_IOU  # [G]
        free = overlapping & ~covered
        if free.any():
            covered[torch.where(free, iou[q], -1.0).argmax()] = True
            types[q] = "hit"
        else:
            types[q] = "duplicate" if overlapping.any() else "near_miss"
    return types, covered.numpy()


def classify_image(scores, boxes, gt_boxes, score_threshold=0.3):
    """One image (arguments as prediction_types) -> {error type: count}."""
    types, covered = prediction_types(scores, boxes, gt_boxes, score_threshold)
    counts = {key: types.count(key) for key in ERROR_TYPES}
    counts["missed"] = int((~covered).sum())
    return counts


def error_types_per_image(scores, boxes, gt_boxes, gt_labels, score_threshold=0.3):
    """A whole split: scores [V, Q], boxes [V, Q, 4], gt_boxes [V, G, 4] and gt_labels [V, G] (-1 at
    padding) -> {error type: mean count per image}."""
    if len(scores) == 0:
        raise ValueError("need at least one image")
    totals = dict.fromkeys(ERROR_TYPES, 0)
    for image_scores, image_boxes, image_gt, image_labels in zip(scores, boxes, gt_boxes, gt_labels):
        counts = classify_image(image_scores, image_boxes, image_gt[np.asarray(image_labels) >= 0], score_threshold)
        for key in ERROR_TYPES:
            totals[key] += counts[key]
    return {key: value / len(scores) for key, value in totals.items()}
