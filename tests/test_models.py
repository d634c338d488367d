"""Model output shapes in train and eval, DN queries only in training, and the DN leakage test."""
import pytest
import torch

from detrx.models import build_model

from _models_config import tiny_args
from helpers import shapes_batch

MODELS = ["detr", "deformable_detr", "dn_detr", "dn_deformable_detr", "dino"]


def _expected_logits(args):
    return args.num_classes + (1 if args.loss == "ce" else 0)


@pytest.mark.parametrize("model_name", MODELS)
def test_output_shapes_train_and_eval(model_name):
    torch.manual_seed(0)
    args = tiny_args(model_name)
    model, criterion, _ = build_model(args)
    images, mask, targets = shapes_batch()
    B, N, K = images.shape[0], args.num_queries, _expected_logits(args)
    model.train()
    outputs = model(images, mask, targets)
    assert outputs["pred_logits"].shape == (B, N, K)
    assert outputs["pred_boxes"].shape == (B, N, 4)
    assert len(outputs["aux_outputs"]) == args.dec_layers - 1
    assert all(aux["pred_boxes"].shape == (B, N, 4) for aux in outputs["aux_outputs"])
    assert ((outputs["pred_boxes"] > 0) & (outputs["pred_boxes"] < 1)).all()
    if model_name.startswith("dn_"):
        most = max(len(t["labels"]) for t in targets)
        num_dn = args.dn_groups * most
        assert outputs["dn_outputs"]["pred_logits"].shape == (B, num_dn, K)
        assert outputs["dn_outputs"]["pred_boxes"].shape == (B, num_dn, 4)
        assert len(outputs["dn_outputs"]["aux_outputs"]) == args.dec_layers - 1
        assert outputs["dn_targets"]["boxes"].shape == (B, num_dn, 4)
        assert outputs["dn_targets"]["num_groups"] == args.dn_groups
    losses = criterion(outputs, targets)
    total = criterion.total(losses)
    total.backward()
    assert torch.isfinite(total)
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient: {unused}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        outputs = model(images, mask, targets)
    assert outputs["pred_logits"].shape == (B, N, K)
    assert "dn_outputs" not in outputs and "dn_targets" not in outputs  # no DN at inference, even with targets


@pytest.mark.parametrize("stride", [8, 16])
def test_detr_on_a_finer_stride_uses_every_parameter(stride):
    model, criterion, _ = build_model(tiny_args("detr", "--detr-stride", str(stride)))
    images, mask, targets = shapes_batch()
    outputs = model(images, mask, targets)
    criterion.total(criterion(outputs, targets)).backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP fails on unused parameters
    assert model.backbone(images, mask)[-1][0].shape[-1] == 64 // stride


@pytest.mark.parametrize("model_name, extra", [("dn_detr", []), ("dn_deformable_detr", []),
                                               ("dn_deformable_detr", ["--two-stage"]), ("dino", [])])
@pytest.mark.parametrize("contrastive", [False, True])
def test_matching_queries_do_not_see_dn_queries(model_name, extra, contrastive):
    """Eval mode (no dropout): the matching queries' outputs are identical with and without DN
    queries in the decoder; with the DN mask removed they change (so the test can fail)."""
    torch.manual_seed(0)
    args = tiny_args(model_name, *extra, *(["--contrastive"] if contrastive else []))
    model, _, _ = build_model(args)
    model.eval()
    images, mask, targets = shapes_batch()
    with torch.no_grad():
        plain = model(images, mask)
        with_dn = model(images, mask, targets, use_dn=True)
    assert with_dn["dn_outputs"]["pred_boxes"].shape[1] > 0
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(with_dn[key], plain[key], rtol=0, atol=2e-6)  # float rounding only
        for aux_dn, aux in zip(with_dn["aux_outputs"], plain["aux_outputs"]):
            torch.testing.assert_close(aux_dn[key], aux[key], rtol=0, atol=2e-6)

    unmasked = model.denoising.forward

    def without_mask(*a, **kw):
        dn, pos, attn_mask, dn_targets = unmasked(*a, **kw)
        return dn, pos, torch.zeros_like(attn_mask), dn_targets

    model.denoising.forward = without_mask
    with torch.no_grad():
        leaky = model(images, mask, targets, use_dn=True)
    assert (leaky["pred_logits"] - plain["pred_logits"]).abs().max() > 1e-5


def test_dn_queries_need_targets():
    model, _, _ = build_model(tiny_args("dn_detr"))
    images, mask, _ = shapes_batch()
    with pytest.raises(ValueError, match="targets"):
        model(images, mask, None, use_dn=True)


def test_build_model_rejects_unknown_names():
    args = tiny_args("detr")
    args.model = "yolo"
    with pytest.raises(ValueError, match="model must be one of"):
        build_model(args)
    args = tiny_args("detr")
    args.backbone = "resnet50"
    with pytest.raises(ValueError, match="backbone-weights"):
        build_model(args)
