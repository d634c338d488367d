"""How much DETR's query slots specialise on image regions.

A slot specialises when where it predicts an object depends on which slot it is. Measured over a
set of predictions (the caller chooses which: e.g. a split's hits) as the mutual information
between the slot and the region (cell of a `grid` x `grid` partition of the image) of the predicted
box centre, in units of the region entropy: 0 when every slot predicts everywhere alike, 1 when a
slot's predictions fall in one region that no other slot uses. The estimate from a finite sample is
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


def regions(centres, grid=3):
    """centres [D, 2] in [0, 1] -> cell index [D] of a grid x grid partition (row-major)."""
    cells = np.clip((np.asarray(centres) * grid).astype(int), 0, grid - 1)
    return cells[:, 1] * grid + cells[:, 0]


def specialisation(slot, centres, grid=3, shuffles=20, seed=0):
    """slot [D] ints and centres [D, 2] (cx, cy) in [0, 1] of D predictions ->
    {"specialisation": (I(slot; region) - mean shuffled I) / H(region), "raw": I / H(region),
    "predictions": D}; both are NaN with fewer than 2 predictions or a single region."""
    slot, centres = np.asarray(slot), np.asarray(centres, dtype=float).reshape(-1, 2)
    if slot.shape != (len(centres),):
        raise ValueError(f"expected slot [D] and centres [D, 2], got {slot.shape} and {centres.shape}")
    region = regions(centres, grid)
    region_entropy = entropy(region) if len(region) else 0.0
    if len(slot) < 2 or region_entropy == 0:
        return {"specialisation": float("nan"), "raw": float("nan"), "predictions": int(len(slot))}
    rng = np.random.default_rng(seed)
    shuffled = np.mean([mutual_information(rng.permutation(slot), region) for _ in range(shuffles)])
    information = mutual_information(slot, region)
    return {"specialisation": (information - shuffled) / region_entropy, "raw": information / region_entropy,
            "predictions": int(len(slot))}
