"""Losses on perfect predictions, and COCO mAP = 1 for detections that equal the ground truth."""
import pytest
import torch

from detrx.data import SyntheticShapes
from detrx.engine.coco_eval import coco_evaluate, coco_gt_from_dict
from detrx.engine.loop import to_coco_detections
from detrx.models.criterion import SetCriterion, build_weight_dict
from detrx.models.matcher import HungarianMatcher
from detrx.models.postprocess import PostProcess
from detrx.util.box_ops import box_xyxy_to_cxcywh

from _models_config import tiny_args

NUM_CLASSES, QUERIES = 3, 6


def _targets():
    return [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.1]])},
            {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
            {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]


def _perfect_outputs(targets, loss, scale=30.0):
    """Queries 1.. hold the ground truth (shuffled order), the rest predict "no object"."""
    extra = 1 if loss == "ce" else 0
    logits = torch.full((len(targets), QUERIES, NUM_CLASSES + extra), -scale)
    boxes = torch.full((len(targets), QUERIES, 4), 0.5)
    if loss == "ce":
        logits[..., -1] = scale
    for b, t in enumerate(targets):
        for j, (label, box) in enumerate(zip(t["labels"], t["boxes"])):
            q = QUERIES - 1 - j
            logits[b, q] = -scale
            logits[b, q, label] = scale
            boxes[b, q] = box
    return {"pred_logits": logits, "pred_boxes": boxes,
            "aux_outputs": [{"pred_logits": logits.clone(), "pred_boxes": boxes.clone()}]}


@pytest.mark.parametrize("loss", ["ce", "focal"])
def test_losses_vanish_on_perfect_predictions(loss):
    args = tiny_args("detr", "--loss", loss)
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher(focal=loss == "focal"), build_weight_dict(args), loss=loss)
    targets = _targets()
    losses = criterion(_perfect_outputs(targets, loss), targets)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_bbox_0", "loss_giou_0"}
    for key, value in losses.items():
        assert value.item() == pytest.approx(0.0, abs=1e-4), key
    # and a wrong box is penalised by L1 and GIoU
    outputs = _perfect_outputs(targets, loss)
    outputs["pred_boxes"][1, QUERIES - 1] = torch.tensor([0.2, 0.2, 0.1, 0.1])
    losses = criterion(outputs, targets)
    assert losses["loss_bbox"].item() > 0.05 and losses["loss_giou"].item() > 0.05
    assert criterion.total(losses).item() > 0.5


def _dn_case(loss, generator):
    """DN outputs and targets of 2 images with 2 and 1 gts, 2 groups (K = 4 slots, group size 2):
    image 1's second slot of each group is padding. Predicted boxes are the targets with cx
    shifted by a known dx per slot. -> (dn_outputs, dn_targets, dx [B, K])."""
    extra = 1 if loss == "ce" else 0
    gt_boxes = torch.tensor([[[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.2]], [[0.5, 0.5, 0.4, 0.2], [0, 0, 0, 0]]])
    boxes = gt_boxes.repeat(1, 2, 1)  # [B, K, 4]: group 0, then group 1
    valid = torch.tensor([[True, True, True, True], [True, False, True, False]])
    labels = torch.tensor([[0, 2, 0, 2], [1, NUM_CLASSES, 1, NUM_CLASSES]])
    dx = 0.01 + 0.04 * torch.rand(2, 4, generator=generator)
    pred_boxes = boxes.clone()
    pred_boxes[..., 0] += dx
    dn_outputs = {"pred_logits": torch.randn(2, 4, NUM_CLASSES + extra, generator=generator),
                  "pred_boxes": pred_boxes, "aux_outputs": []}
    dn_targets = {"labels": labels, "boxes": boxes * valid[..., None], "box_mask": valid, "valid": valid,
                  "num_groups": 2}
    return dn_outputs, dn_targets, dx


def _expected_class_loss(loss, logits, labels, num_dn_boxes, eos_coef=0.1, alpha=0.25):
    """CE: the class-weighted mean of -log softmax at the target ("no object" weighs eos_coef);
    focal: sigmoid focal loss summed over slots and classes, divided by num_dn_boxes."""
    if loss == "ce":
        nll = -logits.log_softmax(-1).gather(-1, labels[:, None])[:, 0]
        weight = torch.where(labels == NUM_CLASSES, eos_coef, 1.0)
        return (weight * nll).sum() / weight.sum()
    onehot = torch.zeros_like(logits)
    rows = labels < NUM_CLASSES
    onehot[rows.nonzero()[:, 0], labels[rows]] = 1
    p = logits.sigmoid()
    p_t = torch.where(onehot == 1, p, 1 - p)
    alpha_t = torch.where(onehot == 1, alpha, 1 - alpha)
    return (alpha_t * (1 - p_t) ** 2 * -p_t.log()).sum() / num_dn_boxes


@pytest.mark.parametrize("loss", ["ce", "focal"])
def test_dn_losses_are_normalised_by_boxes_times_groups(loss):
    """3 gts in the batch and 2 groups: L1 and GIoU sum over the 6 positive slots and divide by
    3 * 2 (focal: the class loss too). A predicted box is its target shifted by dx along x, so its
    L1 is dx and 1 - GIoU = 2 dx / (w + dx)."""
    args = tiny_args("detr", "--loss", loss)
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher(focal=loss == "focal"), build_weight_dict(args), loss=loss)
    targets = _targets()[:2]  # 2 + 1 gts
    dn_outputs, dn_targets, dx = _dn_case(loss, torch.Generator().manual_seed(0))
    outputs = {**_perfect_outputs(targets, loss), "dn_outputs": dn_outputs, "dn_targets": dn_targets}
    losses = criterion(outputs, targets)
    mask = dn_targets["valid"]
    widths = dn_targets["boxes"][..., 2]
    assert losses["loss_bbox_dn"].item() == pytest.approx(dx[mask].sum().item() / 6, rel=1e-5)
    giou_terms = 2 * dx / (widths + dx)
    assert losses["loss_giou_dn"].item() == pytest.approx(giou_terms[mask].sum().item() / 6, rel=1e-5)
    expected_class = _expected_class_loss(loss, dn_outputs["pred_logits"][mask], dn_targets["labels"][mask], 6)
    assert losses["loss_ce_dn"].item() == pytest.approx(expected_class.item(), rel=1e-5)


@pytest.mark.parametrize("loss", ["ce", "focal"])
def test_a_dn_negative_is_trained_towards_no_object(loss):
    """A valid negative slot (no box loss) whose logits are confident in its gt's class has a
    class loss, which falls when it predicts "no object" instead."""
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher(focal=loss == "focal"),
                             build_weight_dict(tiny_args("detr", "--loss", loss)), loss=loss)
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    logits = torch.full((1, 2, NUM_CLASSES + (1 if loss == "ce" else 0)), -10.0)
    logits[0, :, 1] = 10.0  # slot 0 (positive) and slot 1 (its negative) both say "class 1"
    dn_targets = {"labels": torch.tensor([[1, NUM_CLASSES]]), "boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.0] * 4]]),
                  "box_mask": torch.tensor([[True, False]]), "valid": torch.tensor([[True, True]]), "num_groups": 1}
    outputs = {**_perfect_outputs(targets, loss), "dn_targets": dn_targets,
               "dn_outputs": {"pred_logits": logits, "pred_boxes": dn_targets["boxes"].clone(), "aux_outputs": []}}
    confident_in_the_gt_class = criterion(outputs, targets)["loss_ce_dn"].item()
    assert confident_in_the_gt_class > 0.5
    logits[0, 1] = -10.0
    if loss == "ce":
        logits[0, 1, -1] = 10.0  # the "no object" logit
    predicting_no_object = criterion(outputs, targets)["loss_ce_dn"].item()
    assert predicting_no_object < confident_in_the_gt_class / 100


@pytest.mark.parametrize("loss", ["ce", "focal"])
def test_pycocotools_map_is_one_on_perfect_predictions(loss):
    dataset = SyntheticShapes(6, image_size=64, num_classes=3, max_objects=4, min_size=6, seed=3)
    coco_gt = coco_gt_from_dict(dataset.coco_dict())
    targets, logits, boxes = [], [], []
    for i in range(len(dataset)):
        _, gt_boxes, gt_labels = dataset.render(i)
        targets.append({"image_id": i, "labels": gt_labels, "boxes": gt_boxes / 64})
    outputs = _perfect_outputs([{"labels": t["labels"], "boxes": box_xyxy_to_cxcywh(t["boxes"])} for t in targets], loss)
    detections = PostProcess(loss)(outputs, torch.tensor([[64, 64]] * len(targets)))
    stats = coco_evaluate(coco_gt, to_coco_detections(detections, targets, dataset.label_to_category_id))
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AP50"] == pytest.approx(1.0)
    # a detector that misses everything scores 0
    assert coco_evaluate(coco_gt, [])["AP"] == 0.0


def test_postprocess_rejects_bad_sizes():
    outputs = _perfect_outputs(_targets(), "ce")
    with pytest.raises(ValueError, match="target_sizes"):
        PostProcess("ce")(outputs, torch.tensor([[64, 64]]))
    with pytest.raises(ValueError, match="loss"):
        PostProcess("softmax")
