"""Tiny detectors overfit four images: the loss falls and mAP50 rises far above chance."""
import pytest
import torch

from detrx.data import SyntheticShapes, build_transforms, collate_fn
from detrx.engine.coco_eval import coco_evaluate, coco_gt_from_dict
from detrx.engine.loop import to_coco_detections
from detrx.models import build_model

from _models_config import tiny_args


@pytest.mark.parametrize("model_name, extra, steps, loss_drop", [
    ("detr", ["--detr-stride", "8"], 160, 4),
    ("deformable_detr", ["--two-stage"], 120, 2),
    ("dino", [], 120, 2),
])
def test_tiny_model_overfits_a_few_images(model_name, extra, steps, loss_drop):
    """After `steps` AdamW steps on four images, the mean loss of the last ten steps is below
    1 / loss_drop of the first ten's, and mAP50 on those images is above 0.6 (from chance)."""
    torch.manual_seed(0)
    args = tiny_args(model_name, *extra, "--max-objects", "3", "--object-min-size", "8", "--lr", "1e-3")
    model, criterion, postprocess = build_model(args)
    dataset = SyntheticShapes(4, image_size=64, max_objects=3, min_size=8, seed=0, transforms=build_transforms(False))
    images, mask, targets = collate_fn([dataset[i] for i in range(4)])
    coco_gt = coco_gt_from_dict(dataset.coco_dict())
    optimizer = torch.optim.AdamW(model.parameters(), args.lr, weight_decay=1e-4)

    def map50():
        model.eval()
        with torch.no_grad():
            detections = postprocess(model(images, mask), torch.tensor([[64, 64]] * 4))
        model.train()
        return coco_evaluate(coco_gt, to_coco_detections(detections, targets, dataset.label_to_category_id))["AP50"]

    before = map50()
    losses = []
    for _ in range(steps):
        total = criterion.total(criterion(model(images, mask, targets), targets))
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        losses.append(total.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 / loss_drop
    assert before < 0.05  # chance level for untrained queries
    assert map50() > 0.6
