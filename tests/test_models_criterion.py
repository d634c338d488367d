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


def test_dn_losses_use_the_given_assignment():
    args = tiny_args("detr")
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher(), build_weight_dict(args))
    targets = _targets()
    outputs = _perfect_outputs(targets, "ce")
    dn_logits = torch.full((3, 2, NUM_CLASSES + 1), -30.0)
    dn_logits[0, 0, 2] = dn_logits[0, 1, 3] = 30  # slot 0: class 2; slot 1: a negative -> no object
    dn_boxes = torch.rand(3, 2, 4) * 0.2 + 0.3
    box_mask = torch.tensor([[True, False], [False, False], [False, False]])
    dn_targets = dn_boxes.clone()
    outputs["dn"] = {"pred_logits": dn_logits, "pred_boxes": dn_boxes, "aux_outputs": [],
                     "labels": torch.tensor([[2, 3], [3, 3], [3, 3]]), "boxes": dn_targets,
                     "box_mask": box_mask, "valid": torch.tensor([[True, True], [False, False], [False, False]]),
                     "num_groups": 1}
    losses = criterion(outputs, targets)
    assert losses["loss_ce_dn"].item() == pytest.approx(0, abs=1e-4)
    assert losses["loss_bbox_dn"].item() == pytest.approx(0, abs=1e-6)
    outputs["dn"]["boxes"] = dn_targets + 0.05 * box_mask[..., None]  # only slot (0, 0) has a box loss
    # L1 = 4 * 0.05 summed, normalised by num_boxes (3) * num_groups (1)
    assert criterion(outputs, targets)["loss_bbox_dn"].item() == pytest.approx(0.2 / 3, rel=1e-4)


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
