"""How much DETR's query slots specialise on image regions.

A slot specialises when where it predicts an object depends on which slot it is. Measured over a
split's confident predictions (score >= `score_threshold`) as the mutual information between the
slot and the region (cell of a `grid` x `grid` partition of the image) of the predicted box centre,
in units of the region entropy: 0 when every slot predicts everywhere alike, 1 when a slot's
predictions fall in one region that no other slot uses. The estimate from a finite sample is
biased upwards; `specialisation` subtracts the mean over shuffled slot assignments, so that
interchangeable slots score about 0 at any sample size.
"""
import numpy as np


def mutual_information(a, b):
    """Mutual information (bits) of two equally long integer label arrays, from their joint histogram."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two 1-d label arrays of one length, got {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= a.size
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log2(joint[nonzero] / outer[nonzero])).sum())


def entropy(labels):
    """Entropy (bits) of an integer label array."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def confident_predictions(scores, boxes, score_threshold=0.3):
    """scores [V, Q], boxes [V, Q, 4] cxcywh -> (slot [D], centres [D, 2] (cx, cy)) of the predictions
    with score >= score_threshold, over all images."""
    scores, boxes = np.asarray(scores), np.asarray(boxes)
    if scores.ndim != 2 or boxes.shape != scores.shape + (4,):
        raise ValueError(f"expected scores [V, Q] and boxes [V, Q, 4], got {scores.shape} and {boxes.shape}")
    image, slot = np.nonzero(scores >= score_threshold)
    return slot, boxes[image, slot, :2]


def regions(centres, grid=3):
    """centres [D, 2] in [0, 1] -> cell index [D] of a grid x grid partition (row-major)."""
    cells = np.clip((np.asarray(centres) * grid).astype(int), 0, grid - 1)
    return cells[:, 1] * grid + cells[:, 0]


def specialisation(scores, boxes, score_threshold=0.3, grid=3, shuffles=20, seed=0):
    """scores [V, Q], boxes [V, Q, 4] -> {"specialisation": (I(slot; region) - mean shuffled I) / H(region),
    "raw": I / H(region), "predictions": D}; specialisation is NaN with fewer than 2 confident predictions."""
    slot, centres = confident_predictions(scores, boxes, score_threshold)
    region = regions(centres, grid)
    region_entropy = entropy(region) if len(region) else 0.0
    if len(slot) < 2 or region_entropy == 0:
        return {"specialisation": float("nan"), "raw": float("nan"), "predictions": int(len(slot))}
    rng = np.random.default_rng(seed)
    shuffled = np.mean([mutual_information(rng.permutation(slot), region) for _ in range(shuffles)])
    information = mutual_information(slot, region)
    return {"specialisation": (information - shuffled) / region_entropy, "raw": information / region_entropy,
            "predictions": int(len(slot))}
