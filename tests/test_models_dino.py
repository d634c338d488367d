"""DINO: mixed query selection, look forward twice, contrastive denoising inside the model, and the
two ablation switches (each must change the gradients). The overfit, export and resume tests
include dino in their own files."""
import pytest
import torch

import detrx.ops
from detrx.engine.config import finalize_args, get_args_parser, parse_args
from detrx.models import build_model
from detrx.models.deformable_transformer import EncodedImages
from detrx.models.dino_queries import MixedQuerySelection
from detrx.models.two_stage import FINEST_PROPOSAL_SIDE

from _models_config import tiny_args
from helpers import shapes_batch


def dino(*extra):
    """A tiny DINO with 3 decoder layers and random box heads (zero-initialised last layers would
    hide the gradients that look-forward-twice routes between layers)."""
    torch.manual_seed(0)
    model, criterion, _ = build_model(tiny_args("dino", "--dec-layers", "3", *extra))
    with torch.no_grad():
        for head in model.bbox_embed:
            head.layers[-1].weight.normal_(0, 0.1)
    return model, criterion


def targets_with_counts(counts, seed=0):
    """Targets with the given gt counts per image (random boxes well inside the image)."""
    generator = torch.Generator().manual_seed(seed)
    return [{"labels": torch.randint(0, 3, (n,), generator=generator),
             "boxes": torch.cat([0.3 + 0.4 * torch.rand(n, 2, generator=generator),
                                 0.1 + 0.2 * torch.rand(n, 2, generator=generator)], 1)} for n in counts]


def test_content_queries_are_learned_and_trained_by_the_decoder_loss():
    """Two different batches get the same content queries (the embedding, not a function of the
    encoder output), and the decoder's loss alone gives that embedding a gradient."""
    model, criterion = dino()
    selection = model.query_selection
    with torch.no_grad():
        first = selection(model.encode(*shapes_batch(seed=0)[:2]), model.num_queries)
        second = selection(model.encode(*shapes_batch(seed=1)[:2]), model.num_queries)
    assert not torch.equal(first.reference_points, second.reference_points)  # the encoders differ
    torch.testing.assert_close(first.tgt, selection.content.weight[None].expand_as(first.tgt), rtol=0, atol=0)
    torch.testing.assert_close(second.tgt, first.tgt, rtol=0, atol=0)
    images, mask, targets = shapes_batch()
    outputs = model(images, mask, targets)
    losses = criterion(outputs, targets)
    decoder_loss = sum(losses[k] * criterion.weight_dict[k] for k in ("loss_ce", "loss_bbox", "loss_giou"))
    decoder_loss.backward()
    assert selection.content.weight.grad.abs().sum() > 0


def test_reference_boxes_are_the_top_k_proposals_by_score():
    """A hand-built 4 x 5 level: the "object" score follows feature 0 of the memory, box deltas are
    zero, so the reference boxes must be the proposals of an independent top-K of feature 0, in
    score order, with no gradient."""
    d_model, num_queries, (h, w) = 8, 6, (4, 5)
    class_head, box_head = torch.nn.Linear(d_model, 3), torch.nn.Linear(d_model, 4)
    selection = MixedQuerySelection(d_model, class_head, box_head, "focal", num_queries)
    with torch.no_grad():
        selection.memory_proj.weight.copy_(torch.eye(d_model))
        selection.memory_proj.bias.zero_()
        class_head.weight.zero_()
        class_head.weight[0, 0] = 1.0
        class_head.bias.zero_()
        box_head.weight.zero_()
        box_head.bias.zero_()
    generator = torch.Generator().manual_seed(3)
    memory = torch.randn(2, h * w, d_model, generator=generator, requires_grad=True)
    encoded = EncodedImages(memory, torch.zeros(2, h * w, dtype=torch.bool), torch.tensor([[h, w]]),
                            torch.tensor([0]), torch.ones(2, 1, 2), [(h, w)])
    queries = selection(encoded, num_queries)
    normed = torch.nn.functional.layer_norm(memory.detach(), (d_model,))  # memory_norm at its initialisation
    order = torch.argsort(normed[..., 0], dim=1, descending=True)[:, :num_queries]  # [B, N]
    rows, cols = order // w, order % w
    expected = torch.stack([(cols + 0.5) / w, (rows + 0.5) / h, torch.full(order.shape, FINEST_PROPOSAL_SIDE),
                            torch.full(order.shape, FINEST_PROPOSAL_SIDE)], -1)  # [B, N, 4]
    torch.testing.assert_close(queries.reference_points, expected, rtol=0, atol=1e-5)
    assert not queries.reference_points.requires_grad
    assert queries.encoder_outputs["pred_logits"].requires_grad  # the encoder's own loss trains the heads


def box_head_gradients(model, layer, loss_key="pred_boxes"):
    """Gradients of every decoder box head from a loss on one decoder layer's outputs (eval mode,
    no DN queries): {head index: summed |grad|}."""
    model.eval()
    images, mask, _ = shapes_batch()
    outputs = model(images, mask)
    per_layer = [*outputs["aux_outputs"], outputs]
    model.zero_grad()
    per_layer[layer][loss_key].square().sum().backward()
    return {i: 0.0 if head.layers[-1].weight.grad is None else head.layers[-1].weight.grad.abs().sum().item()
            for i, head in enumerate(model.bbox_embed)}


def test_look_forward_twice_trains_the_previous_layers_box_head():
    """A loss on layer 2's boxes reaches layer 1's box head with look forward twice, not without;
    never layer 0's (only one layer back)."""
    grads = box_head_gradients(dino()[0], layer=2)
    assert grads[2] > 0 and grads[1] > 0 and grads[0] == 0
    grads = box_head_gradients(dino("--no-look-forward-twice")[0], layer=2)
    assert grads[2] > 0 and grads[1] == 0 and grads[0] == 0


def test_reference_entering_the_next_layer_carries_no_gradient():
    """A loss on layer 2's class logits depends on layer 1's box only through the reference (and
    query positions) that layer 2 got: it must not reach any box head, nor the encoder's box head
    (the initial reference boxes are detached too)."""
    model = dino()[0]
    grads = box_head_gradients(model, layer=2, loss_key="pred_logits")
    assert grads == {0: 0.0, 1: 0.0, 2: 0.0}
    assert model.query_selection.box_head.layers[-1].weight.grad is None
    assert model.query_decoder.query_pos_head.layers[0].weight.grad.abs().sum() > 0  # the positions do matter


def test_look_forward_twice_changes_gradients_not_boxes():
    """Same weights, same batch and DN noise: the boxes are equal, the parameter gradients are not."""
    images, mask, targets = shapes_batch()
    results = []
    for extra in ([], ["--no-look-forward-twice"]):
        model, criterion = dino(*extra)
        outputs = model(images, mask, targets, generator=torch.Generator().manual_seed(0))
        criterion.total(criterion(outputs, targets)).backward()
        results.append((outputs["pred_boxes"].detach(), {n: p.grad for n, p in model.named_parameters()}))
    (boxes, grads), (boxes_once, grads_once) = results
    torch.testing.assert_close(boxes, boxes_once, rtol=0, atol=1e-6)
    assert max((grads[n] - grads_once[n]).abs().max().item() for n in grads) > 1e-4


def test_pure_selection_takes_content_from_the_encoder_and_changes_gradients():
    """Without mixed selection the content queries are the selected tokens' features (detached),
    there is no learned content, and the shared parameters get other gradients."""
    images, mask, targets = shapes_batch()
    mixed, criterion = dino()
    pure, _ = dino("--no-mixed-selection")
    assert not hasattr(pure.query_selection, "content")
    pure.load_state_dict({k: v for k, v in mixed.state_dict().items() if "content" not in k})
    with torch.no_grad():
        encoded = pure.encode(images, mask)
        queries = pure.query_selection(encoded, pure.num_queries)
        reference, top, memory, _ = pure.query_selection.select(encoded, pure.num_queries)
    torch.testing.assert_close(queries.tgt, memory[torch.arange(2)[:, None], top], rtol=0, atol=0)
    grads = []
    for model in (mixed, pure):
        outputs = model(images, mask, targets, generator=torch.Generator().manual_seed(0))
        criterion.total(criterion(outputs, targets)).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    shared = [n for n in grads[1] if grads[1][n] is not None]
    assert max((grads[0][n] - grads[1][n]).abs().max().item() for n in shared) > 1e-4


@pytest.mark.parametrize("counts, groups", [([3, 1], 4), ([1, 0], 12), ([5, 2], 2)])
def test_dn_groups_follow_the_dn_number_budget(counts, groups):
    """dn_number 25: max(1, 25 // (2 * largest gt count)) groups of positives and negatives per
    batch; a negative slot's class target is "no object", a positive's its gt class."""
    model, _ = dino("--dn-number", "25")
    targets = targets_with_counts(counts)
    images, mask, _ = shapes_batch()
    outputs = model(images, mask, targets)
    dn_targets, most = outputs["dn_targets"], max(counts)
    assert dn_targets["num_groups"] == groups
    assert outputs["dn_outputs"]["pred_logits"].shape[1] == groups * 2 * most
    slot = torch.arange(groups * 2 * most) % (2 * most)  # position inside its group
    negative, positive = slot >= most, slot < most
    for b, n in enumerate(counts):
        real = (slot % most) < n
        assert (dn_targets["labels"][b, negative & real] == model.num_classes).all()
        assert not dn_targets["box_mask"][b, negative].any()
        expected = targets[b]["labels"][(slot % most)[positive & real]]
        assert torch.equal(dn_targets["labels"][b, positive & real], expected)


def test_negatives_are_trained_towards_no_object():
    """The DN class loss pushes every class score of a negative slot down (focal targets all 0)."""
    model, criterion = dino("--dn-number", "12")
    images, mask, targets = shapes_batch()
    outputs = model(images, mask, targets)
    logits = outputs["dn_outputs"]["pred_logits"]
    logits.retain_grad()
    criterion.dn_losses(outputs["dn_outputs"], outputs["dn_targets"], 1.0)["loss_ce_dn"].backward()
    most = max(len(t["labels"]) for t in targets)
    negative = (torch.arange(logits.shape[1]) % (2 * most)) >= most
    real = outputs["dn_targets"]["valid"]
    assert (logits.grad[real & negative[None]] > 0).all()  # gradient descent lowers them


def test_matching_queries_never_see_dn_queries(monkeypatch):
    """Eval mode: the matching queries' outputs do not change when every DN query gets another
    label and box; the DN outputs do."""
    model = dino()[0].eval()
    images, mask, targets = shapes_batch()
    build_dn_queries = detrx.ops.build_dn_queries

    def perturbed(*args, **kwargs):
        dn = build_dn_queries(*args, **kwargs)
        boxes = 0.25 + 0.5 * torch.rand(dn.boxes.shape, generator=torch.Generator().manual_seed(1))
        return dn._replace(labels=(dn.labels + 1) % dn.num_classes, boxes=boxes)

    with torch.no_grad():
        plain = model(images, mask, targets, use_dn=True, generator=torch.Generator().manual_seed(0))
        monkeypatch.setattr(detrx.ops, "build_dn_queries", perturbed)
        changed = model(images, mask, targets, use_dn=True, generator=torch.Generator().manual_seed(0))
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(changed[key], plain[key], rtol=0, atol=2e-6)  # float rounding only
        for aux_changed, aux in zip(changed["aux_outputs"], plain["aux_outputs"]):
            torch.testing.assert_close(aux_changed[key], aux[key], rtol=0, atol=2e-6)
    assert (changed["dn_outputs"]["pred_boxes"] - plain["dn_outputs"]["pred_boxes"]).abs().max() > 1e-4


def test_dino_defaults_and_switches():
    """The paper's defaults when not given; the ablation switches are refused for other models."""
    args = parse_args(["--model", "dino", "--output-dir", "/tmp/detrx_dino_defaults"])
    assert (args.num_queries, args.dn_number, args.box_noise_scale, args.label_noise_ratio) == (900, 100, 1.0, 0.5)
    assert args.contrastive and args.dn_noise_style == "dino" and args.loss == "focal"
    assert (args.n_points, args.num_feature_levels) == (4, 4)
    plain = parse_args(["--model", "dn_deformable_detr", "--output-dir", "/tmp/detrx_dino_defaults"])
    assert (plain.num_queries, plain.box_noise_scale, plain.dn_noise_style, plain.contrastive) == \
        (100, 0.4, "dn_detr", False)
    for extra in (["--model", "dn_deformable_detr", "--no-mixed-selection"],
                  ["--model", "deformable_detr", "--no-look-forward-twice"], ["--model", "dino", "--two-stage"]):
        with pytest.raises(ValueError, match="mixed-selection|look-forward-twice|two-stage"):
            finalize_args(get_args_parser().parse_args(extra + ["--output-dir", "/tmp/detrx_dino_defaults"]))
