import itertools
import math

import pytest
import torch

from detrx.models.matcher import HungarianMatcher


def _random_case(generator, batch, num_queries, counts, num_logits):
    outputs = {"pred_logits": torch.randn(batch, num_queries, num_logits, generator=generator),
               "pred_boxes": torch.rand(batch, num_queries, 4, generator=generator) * 0.5 + 0.1}
    targets = [{"labels": torch.randint(0, 3, (n,), generator=generator),
                "boxes": torch.rand(n, 4, generator=generator) * 0.5 + 0.1} for n in counts]
    return outputs, targets


def _giou(a, b):
    """GIoU of two (cx, cy, w, h) boxes, from the definition."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def _pair_cost(logits, box, label, target_box, focal, weights=(1.0, 5.0, 2.0), alpha=0.25, gamma=2.0):
    """DETR's matching cost of one (query, target) pair, written out from the papers: class
    term (-p for softmax; focal: positive minus negative focal loss of p), L1, and -GIoU."""
    if focal:
        p = 1 / (1 + math.exp(-logits[label]))
        class_cost = alpha * (1 - p) ** gamma * -math.log(p) - (1 - alpha) * p ** gamma * -math.log(1 - p)
    else:
        exp = [math.exp(x) for x in logits]
        class_cost = -exp[label] / sum(exp)
    l1 = sum(abs(x - y) for x, y in zip(box, target_box))
    return weights[0] * class_cost + weights[1] * l1 - weights[2] * _giou(box, target_box)


def _brute_force_cost(cost):
    """Smallest total cost over all injective maps of the n targets into the Q queries."""
    q, n = len(cost), len(cost[0])
    return min(sum(cost[p[j]][j] for j in range(n)) for p in itertools.permutations(range(q), n))


@pytest.mark.parametrize("focal", [False, True])
def test_matcher_is_optimal_against_brute_force(focal):
    """The matcher's assignment has the smallest total cost over all assignments, by costs
    computed here from the definitions (so a wrong term in the matcher's cost fails it)."""
    generator = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher(1.0, 5.0, 2.0, focal=focal)
    for trial in range(6):
        counts = [trial % 4, 3, 0]
        outputs, targets = _random_case(generator, 3, 5, counts, 3 if focal else 4)
        indices = matcher(outputs, targets)
        for b, (rows, cols) in enumerate(indices):
            n = counts[b]
            assert len(rows) == len(cols) == n
            assert sorted(cols.tolist()) == list(range(n))  # every target matched once
            assert len(set(rows.tolist())) == n  # to distinct queries
            if n == 0:
                continue
            logits, boxes = outputs["pred_logits"][b].tolist(), outputs["pred_boxes"][b].tolist()
            labels, target_boxes = targets[b]["labels"].tolist(), targets[b]["boxes"].tolist()
            cost = [[_pair_cost(logits[i], boxes[i], labels[j], target_boxes[j], focal) for j in range(n)]
                    for i in range(len(boxes))]  # [Q][n], computed without the matcher
            matched = sum(cost[i][j] for i, j in zip(rows.tolist(), cols.tolist()))
            assert matched == pytest.approx(_brute_force_cost(cost), abs=1e-5)


def test_matcher_finds_the_obvious_assignment():
    boxes = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2], [0.5, 0.2, 0.3, 0.1]])
    outputs = {"pred_logits": torch.zeros(1, 3, 4), "pred_boxes": boxes[None]}
    targets = [{"labels": torch.tensor([1, 0]), "boxes": boxes[[2, 0]]}]
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 2, 1: 0}


def test_matcher_with_all_images_empty():
    outputs = {"pred_logits": torch.zeros(2, 3, 4), "pred_boxes": torch.rand(2, 3, 4)}
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
    assert all(len(r) == len(c) == 0 for r, c in HungarianMatcher()(outputs, targets))


def test_matcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="can't all be 0"):
        HungarianMatcher(0, 0, 0)
    outputs = {"pred_logits": torch.zeros(2, 3, 4), "pred_boxes": torch.rand(2, 3, 4)}
    with pytest.raises(ValueError, match="targets has 1 entries"):
        HungarianMatcher()(outputs, [{"labels": torch.tensor([0]), "boxes": torch.rand(1, 4)}])
