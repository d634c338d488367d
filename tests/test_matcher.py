import itertools

import pytest
import torch

from detrx.models.matcher import HungarianMatcher


def _random_case(generator, batch, num_queries, counts, num_logits):
    outputs = {"pred_logits": torch.randn(batch, num_queries, num_logits, generator=generator),
               "pred_boxes": torch.rand(batch, num_queries, 4, generator=generator) * 0.5 + 0.1}
    targets = [{"labels": torch.randint(0, 3, (n,), generator=generator),
                "boxes": torch.rand(n, 4, generator=generator) * 0.5 + 0.1} for n in counts]
    return outputs, targets


def _brute_force_cost(cost):
    """Smallest total cost over all injective maps of the n targets into the Q queries."""
    q, n = cost.shape
    return min(sum(cost[p[j], j].item() for j in range(n)) for p in itertools.permutations(range(q), n))


@pytest.mark.parametrize("focal", [False, True])
def test_matcher_is_optimal_against_brute_force(focal):
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
            cost = matcher.cost_matrix(outputs["pred_logits"][b], outputs["pred_boxes"][b],
                                       targets[b]["labels"], targets[b]["boxes"])
            assert cost[rows, cols].sum().item() == pytest.approx(_brute_force_cost(cost), abs=1e-5)


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
