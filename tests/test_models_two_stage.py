"""Two-stage Deformable DETR: the encoder's proposals, the top-k query selection and the encoder's
loss terms (test_models_overfit.py has a tiny two-stage model overfit a few images)."""
import pytest
import torch

from detrx.engine.config import parse_args
from detrx.models import build_model
from detrx.models.deformable_transformer import EncodedImages
from detrx.models.two_stage import TwoStageQueries, encoder_proposals

from _models_config import tiny_args
from helpers import shapes_batch


def _encoded(levels, valid_widths, channels=8, memory=None):
    """EncodedImages for images whose level l is valid_widths[b][l] columns wide (rest: padding)."""
    shapes = torch.tensor(levels)
    areas = shapes[:, 0] * shapes[:, 1]
    level_start = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    padding = torch.cat([torch.stack([torch.arange(w)[None].expand(h, w).reshape(-1) >= valid[level]
                                      for valid in valid_widths]) for level, (h, w) in enumerate(levels)], 1)
    ratios = torch.tensor([[[valid[level] / w, 1.0] for level, (_, w) in enumerate(levels)] for valid in valid_widths])
    if memory is None:
        memory = torch.randn(len(valid_widths), int(areas.sum()), channels)
    return EncodedImages(memory, padding, shapes, level_start, ratios, [tuple(hw) for hw in levels])


def test_proposals_are_pixel_centres_with_a_side_doubling_per_level():
    encoded = _encoded([(2, 4), (1, 2)], valid_widths=[[4, 2], [2, 1]])
    proposals, valid = encoder_proposals(encoded)
    # image 0, level 0: centres ((i + 0.5) / 4, (j + 0.5) / 2), side 0.05; level 1: ((i + 0.5) / 2, 0.5), side 0.1
    expected_level0 = [[(i + 0.5) / 4, (j + 0.5) / 2, 0.05, 0.05] for j in range(2) for i in range(4)]
    expected_level1 = [[0.25, 0.5, 0.1, 0.1], [0.75, 0.5, 0.1, 0.1]]
    torch.testing.assert_close(proposals[0], torch.tensor(expected_level0 + expected_level1))
    assert valid[0].all()
    # image 1 is half as wide: its centres are normalised by the unpadded width, padding is invalid
    torch.testing.assert_close(proposals[1, :4, 0], torch.tensor([0.25, 0.75, 1.25, 1.75]))
    assert valid[1].tolist() == [True, True, False, False, True, True, False, False, True, False]


def test_proposals_larger_than_the_valid_range_are_invalid():
    encoded = _encoded([(1, 1)] * 6, valid_widths=[[1] * 6])
    proposals, valid = encoder_proposals(encoded)
    torch.testing.assert_close(proposals[0, :, 2], torch.tensor([0.05, 0.1, 0.2, 0.4, 0.8, 1.6]))
    assert valid[0].tolist() == [True] * 5 + [False]  # a side of 1.6 is outside (0.01, 0.99)


def test_selection_takes_the_top_scoring_valid_tokens_only():
    """Valid tokens are built to score below the (zeroed) invalid ones: the selection must still
    return exactly the valid tokens' boxes when num_queries equals their count."""
    torch.manual_seed(0)
    d_model = 8
    class_head, box_head = torch.nn.Linear(d_model, 3), torch.nn.Linear(d_model, 4)
    selection = TwoStageQueries(d_model, class_head, box_head, loss="focal")
    with torch.no_grad():
        selection.memory_proj.weight.copy_(torch.eye(d_model))
        selection.memory_proj.bias.zero_()
        class_head.weight.zero_()
        class_head.weight[0, 0] = 5.0  # "object" score follows feature 0
        class_head.bias.zero_()
        box_head.weight.zero_()
        box_head.bias.zero_()
    memory = torch.randn(1, 10, d_model)
    memory[..., 0] = -10.0  # valid tokens: feature 0 far below the zeroed invalid tokens' 0
    encoded = _encoded([(2, 4), (1, 2)], valid_widths=[[2, 1]], memory=memory)
    proposals, valid = encoder_proposals(encoded)
    queries = selection(encoded, num_queries=int(valid.sum()))
    assert queries.tgt.shape == queries.query_pos.shape == (1, int(valid.sum()), d_model)
    chosen = sorted(map(tuple, queries.reference_points[0].tolist()))
    expected = sorted(map(tuple, proposals[0][valid[0]].tolist()))
    torch.testing.assert_close(torch.tensor(chosen), torch.tensor(expected))  # zero box deltas: the proposals
    assert queries.encoder_outputs["pred_logits"].shape == (1, 10, 3)
    assert queries.encoder_outputs["pred_boxes"].shape == (1, 10, 4)


def test_selection_rejects_more_queries_than_tokens():
    selection = TwoStageQueries(8, torch.nn.Linear(8, 3), torch.nn.Linear(8, 4), loss="focal")
    with pytest.raises(ValueError, match="num_queries <= the 10 encoder tokens"):
        selection(_encoded([(2, 4), (1, 2)], valid_widths=[[4, 2]]), num_queries=11)


@pytest.mark.parametrize("model_name", ["deformable_detr", "dn_deformable_detr"])
def test_two_stage_model_trains_every_parameter_with_encoder_losses(model_name):
    torch.manual_seed(0)
    args = tiny_args(model_name, "--two-stage")
    model, criterion, _ = build_model(args)
    images, mask, targets = shapes_batch()
    outputs = model(images, mask, targets)
    num_tokens = sum((64 // s) ** 2 for s in (8, 16, 32))
    assert outputs["enc_outputs"]["pred_logits"].shape == (2, num_tokens, args.num_classes)
    assert outputs["pred_boxes"].shape == (2, args.num_queries, 4)
    losses = criterion(outputs, targets)
    assert {"loss_ce_enc", "loss_bbox_enc", "loss_giou_enc"} <= set(losses)
    assert all(key in criterion.weight_dict for key in losses)
    criterion.total(losses).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_two_stage_is_only_for_deformable_models(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--model", "detr", "--two-stage"])
    assert exit_info.value.code == 2 and "--two-stage applies to the deformable models" in capsys.readouterr().err
