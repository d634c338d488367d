"""The DN models' denoising part: where DN queries look first, what each group can see, and the
mask the decoder gets."""
import pytest
import torch

import detrx.ops
from detrx.models import build_model
from detrx.models.denoising import DenoisingQueries

from _models_config import tiny_args
from helpers import shapes_batch

DN_MODELS = [("dn_detr", []), ("dn_deformable_detr", []), ("dn_deformable_detr", ["--two-stage"])]


def record_calls(monkeypatch, owner, name):
    """Replaces owner.name by a wrapper that records (args, result) of every call."""
    calls, original = [], getattr(owner, name)

    def recorded(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, result))
        return result

    monkeypatch.setattr(owner, name, recorded)
    return calls


@pytest.mark.parametrize("extra, dims", [([], 2), (["--two-stage"], 4)])
def test_dn_reference_points_are_the_noisy_boxes(monkeypatch, extra, dims):
    """DN-Deformable-DETR: the decoder's reference points for the K DN slots are the noisy boxes'
    centres (x, y), or the whole noisy boxes when the matching queries have 4-d references."""
    torch.manual_seed(0)
    model = build_model(tiny_args("dn_deformable_detr", *extra))[0]
    built = record_calls(monkeypatch, model.denoising, "forward")
    decoded = record_calls(monkeypatch, model.transformer, "decode")
    images, mask, targets = shapes_batch()
    model(images, mask, targets)
    dn = built[0][1][0]
    reference_points = decoded[0][0][3]  # decode(encoded, tgt, query_pos, reference_points, ...)
    assert dn.num_dn > 0 and reference_points.shape == (2, dn.num_dn + 8, dims)
    torch.testing.assert_close(reference_points[:, :dn.num_dn], dn.boxes[..., :dims], rtol=0, atol=0)


def perturb_group(dn, group):
    """The DN queries with every slot of `group` given another label and another box."""
    slots = slice(group * dn.group_size, (group + 1) * dn.group_size)
    labels, boxes = dn.labels.clone(), dn.boxes.clone()
    labels[:, slots] = (labels[:, slots] + 1) % dn.num_classes
    boxes[:, slots] = 0.25 + 0.5 * torch.rand(boxes[:, slots].shape, generator=torch.Generator().manual_seed(1))
    return dn._replace(labels=labels, boxes=boxes)


@pytest.mark.parametrize("model_name, extra", DN_MODELS)
def test_dn_groups_do_not_see_each_other(monkeypatch, model_name, extra):
    """Eval mode (no dropout), the same DN queries twice except group 1 (the second): every other
    group's outputs and the matching queries' are unchanged, group 1's change."""
    torch.manual_seed(0)
    args = tiny_args(model_name, *extra, "--dn-groups", "3")
    model = build_model(args)[0].eval()
    images, mask, targets = shapes_batch()
    build_dn_queries = detrx.ops.build_dn_queries
    with torch.no_grad():
        plain = model(images, mask, targets, use_dn=True, generator=torch.Generator().manual_seed(0))
        monkeypatch.setattr(detrx.ops, "build_dn_queries", lambda *a, **kw: perturb_group(build_dn_queries(*a, **kw), 1))
        perturbed = model(images, mask, targets, use_dn=True, generator=torch.Generator().manual_seed(0))
    group_size = plain["dn_outputs"]["pred_boxes"].shape[1] // args.dn_groups
    group_1 = torch.zeros(plain["dn_outputs"]["pred_boxes"].shape[1], dtype=torch.bool)
    group_1[group_size:2 * group_size] = True
    for layer_plain, layer_perturbed in zip([plain["dn_outputs"], *plain["dn_outputs"]["aux_outputs"]],
                                            [perturbed["dn_outputs"], *perturbed["dn_outputs"]["aux_outputs"]]):
        for key in ("pred_logits", "pred_boxes"):
            torch.testing.assert_close(layer_perturbed[key][:, ~group_1], layer_plain[key][:, ~group_1],
                                       rtol=0, atol=2e-6)  # float rounding only
            assert (layer_perturbed[key][:, group_1] - layer_plain[key][:, group_1]).abs().max() > 2e-5
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(perturbed[key], plain[key], rtol=0, atol=2e-6)


def test_every_dn_mask_row_sees_the_matching_queries():
    """The decoder's DN mask is the op's, per head: padded slots (image 1 has one gt, image 2 none)
    are hidden from every query, themselves included, yet no row is fully blocked, as every
    query sees the N matching queries, so the attention softmax has no empty row."""
    denoising = DenoisingQueries(num_classes=3, d_model=16, num_groups=2, contrastive=True)
    targets = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.2, 0.3]])},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
               {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    num_queries, nhead = 5, 2
    dn, _, attn_mask, dn_targets = denoising(targets, num_queries, nhead)
    K = dn.num_dn
    assert attn_mask.shape == (3 * nhead, K + num_queries, K + num_queries)
    assert torch.equal(attn_mask, dn.attn_mask.repeat_interleave(nhead, dim=0))
    assert not attn_mask[..., K:].any()
    assert not attn_mask.all(-1).any()
    padded = ~dn_targets["valid"].repeat_interleave(nhead, dim=0)  # [B * nhead, K]
    assert padded[nhead:].any() and not padded[:nhead].any()
    assert attn_mask[..., :K].permute(0, 2, 1)[padded].all()  # a padded slot's column: blocked in every row


@pytest.mark.parametrize("model_name, extra", DN_MODELS)
def test_dn_training_step_is_finite_with_padded_slots(model_name, extra):
    """An image without gts makes all its DN slots padding: loss and gradients stay finite."""
    torch.manual_seed(0)
    model, criterion, _ = build_model(tiny_args(model_name, *extra))
    images, mask, targets = shapes_batch()
    targets[1] = {**targets[1], "labels": targets[1]["labels"][:0], "boxes": targets[1]["boxes"][:0]}
    outputs = model(images, mask, targets)
    assert not outputs["dn_targets"]["valid"][1].any()
    total = criterion.total(criterion(outputs, targets))
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
