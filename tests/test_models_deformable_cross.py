"""--deformable-cross-layers: chosen decoder cross-attentions of DETR and DN-DETR become single-level
deformable attention on the compiled op; everything else, and old checkpoints, stay as they were."""
import pytest
import torch
from torch import nn

from detrx.engine.checkpoint import build_model_from_checkpoint, save_checkpoint
from detrx.models import MODEL_OPTIONS, build_model
from detrx.models.transformer import DeformableCrossAttention, valid_ratios
from detrx.nn import MSDeformAttn

from _models_config import tiny_args
from helpers import shapes_batch


@pytest.mark.parametrize("model_name", ["detr", "dn_detr"])
def test_only_the_chosen_layers_change_and_every_parameter_learns(model_name):
    torch.manual_seed(0)
    args = tiny_args(model_name, "--deformable-cross-layers", "1")
    model, criterion, _ = build_model(args)
    kinds = [type(layer.cross_attn) for layer in model.transformer.decoder]
    assert kinds == [nn.MultiheadAttention, DeformableCrossAttention]
    images, mask, targets = shapes_batch()
    model.train()
    total = criterion.total(criterion(model(images, mask, targets), targets))
    total.backward()
    assert torch.isfinite(total)
    deformable = model.transformer.decoder[1].cross_attn
    for name, p in deformable.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_compiled_op_matches_the_grid_sample_reference_in_the_model():
    torch.manual_seed(0)
    model, _, _ = build_model(tiny_args("detr", "--deformable-cross-layers", "0,1"))
    model.eval()
    for layer in model.transformer.decoder:  # move the sampling points off their initial grid
        with torch.no_grad():
            layer.cross_attn.attn.sampling_offsets.bias.add_(torch.randn_like(layer.cross_attn.attn.sampling_offsets.bias))
    images, mask, _ = shapes_batch()
    with torch.no_grad():
        compiled = model(images, mask)["pred_boxes"]
        for module in model.modules():
            if isinstance(module, MSDeformAttn):
                module.use_reference = True
        reference = model(images, mask)["pred_boxes"]
    assert torch.allclose(compiled, reference, atol=1e-5)


def test_reference_points_stay_in_the_unpadded_map():
    mask = torch.zeros(2, 4 * 6, dtype=torch.bool)
    mask.view(2, 4, 6)[1, :, 3:] = True  # second image: right half padded
    mask.view(2, 4, 6)[1, 3:, :] = True  # and its last row
    assert torch.equal(valid_ratios(mask, (4, 6)), torch.tensor([[1.0, 1.0], [0.5, 0.75]]))


def test_the_padded_part_of_the_memory_is_never_read():
    """Changing the memory under the padding changes nothing: the samples stay in the valid map and
    MSDeformAttn zeroes padded values."""
    torch.manual_seed(0)
    attention = DeformableCrossAttention(d_model=16, nhead=2, n_points=3).eval()
    tgt, query_pos = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    memory = torch.randn(2, 4 * 6, 16)
    mask = torch.zeros(2, 4 * 6, dtype=torch.bool)
    mask.view(2, 4, 6)[1, :, 3:] = True
    changed = memory.clone()
    changed[mask] = 1e3
    with torch.no_grad():
        assert torch.equal(attention(tgt, query_pos, memory, (4, 6), mask),
                           attention(tgt, query_pos, changed, (4, 6), mask))


@pytest.mark.parametrize("extra, message", [
    (["--model", "detr", "--deformable-cross-layers", "2"], "decoder layers in [0, 2)"),
    (["--model", "deformable_detr", "--deformable-cross-layers", "0"], "applies to detr and dn_detr"),
    (["--model", "detr", "--deformable-cross-layers", "-1"], "integers >= 0"),
])
def test_bad_layer_choices_are_usage_errors(extra, message, capsys):
    with pytest.raises(SystemExit) as raised:
        tiny_args(extra[1], *extra[2:])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_a_checkpoint_written_before_the_option_existed_still_loads(tmp_path):
    torch.manual_seed(0)
    args = tiny_args("detr")
    model, _, _ = build_model(args)
    options = {k: getattr(args, k) for k in MODEL_OPTIONS if k != "deformable_cross_layers"}
    checkpoint = {"model_options": options, "image": {"sizes": None, "max_size": None},
                  "classes": {"names": ["a", "b", "c"], "category_ids": [1, 2, 3]}, "model": model.state_dict()}
    rebuilt, _, _ = build_model_from_checkpoint(save_checkpoint(checkpoint, str(tmp_path / "old.pth")))
    assert all(isinstance(layer.cross_attn, nn.MultiheadAttention) for layer in rebuilt.transformer.decoder)
