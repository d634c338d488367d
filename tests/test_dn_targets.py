"""The DN loss inputs: splitting decoder outputs and the clean targets of each DN slot."""
import torch

from detrx.ops import build_dn_queries, dn_loss_targets, pad_targets, split_dn_outputs


def test_split_dn_outputs_along_the_query_dim():
    outputs = torch.arange(2 * 3 * 9 * 4).view(2, 3, 9, 4)              # [layers, B, K+N, 4]
    dn_part, match_part = split_dn_outputs(outputs, 5)
    assert dn_part.shape == (2, 3, 5, 4) and match_part.shape == (2, 3, 4, 4)
    assert torch.equal(torch.cat([dn_part, match_part], dim=-2), outputs)
    logits_dn, logits_match = split_dn_outputs(torch.zeros(3, 9, 7), 0)
    assert logits_dn.shape == (3, 0, 7) and logits_match.shape == (3, 9, 7)
    logits_dn, logits_match = split_dn_outputs(torch.zeros(3, 9, 7), 9)  # DN queries only
    assert logits_dn.shape == (3, 9, 7) and logits_match.shape == (3, 0, 7)


def test_dn_loss_targets_positive_negative_and_padding():
    targets = [{"labels": torch.tensor([4, 1]), "boxes": torch.tensor([[0.2, 0.3, 0.1, 0.1], [0.6, 0.5, 0.2, 0.4]])},
               {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]])}]
    gt_labels, gt_boxes, gt_counts = pad_targets(targets)
    dn = build_dn_queries(gt_labels, gt_boxes, gt_counts, num_classes=6, num_queries=3, num_groups=2,
                          contrastive=True, label_noise_ratio=1.0, generator=torch.Generator().manual_seed(0))
    tgt_labels, tgt_boxes, box_mask = dn_loss_targets(dn, gt_labels, gt_boxes)
    assert tgt_labels.shape == (2, 8) and tgt_boxes.shape == (2, 8, 4) and box_mask.shape == (2, 8)
    # Image 0, group 0: slots 0, 1 positives of gts 0, 1; slots 2, 3 their negatives.
    assert tgt_labels[0, :4].tolist() == [4, 1, 6, 6]
    assert torch.equal(tgt_boxes[0, :2], targets[0]["boxes"]) and (tgt_boxes[0, 2:4] == 0).all()
    assert box_mask[0].tolist() == [True, True, False, False] * 2
    # Image 1 has one gt: slot 1 (padding) and the negatives are "no object" without a box.
    assert tgt_labels[1].tolist() == [2, 6, 6, 6] * 2
    assert box_mask[1].tolist() == [True, False, False, False] * 2
    assert torch.equal(tgt_boxes[1, 4], targets[1]["boxes"][0]) and (tgt_boxes[1, 1:4] == 0).all()


def test_dn_loss_targets_without_gts():
    gt_labels, gt_boxes = torch.zeros(2, 0, dtype=torch.int64), torch.zeros(2, 0, 4)
    dn = build_dn_queries(gt_labels, gt_boxes, torch.zeros(2, dtype=torch.int64), num_classes=3, num_queries=2,
                          max_gt=2)
    tgt_labels, tgt_boxes, box_mask = dn_loss_targets(dn, gt_labels, gt_boxes)
    assert (tgt_labels == 3).all() and (tgt_boxes == 0).all() and not box_mask.any()
    assert tgt_labels.shape == (2, dn.num_dn) == (2, 10) and tgt_boxes.shape == (2, 10, 4)
