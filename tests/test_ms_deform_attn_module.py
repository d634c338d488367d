"""detrx.nn.MSDeformAttn: Deformable DETR's module on the compiled op."""
import math

import pytest
import torch

from helpers import level_layout
from detrx.nn import MSDeformAttn
from detrx.ops import ms_deform_attn_reference

LEVELS = ((6, 9), (3, 5), (2, 2))  # S = 54 + 15 + 4 = 73
D_MODEL, HEADS, POINTS = 32, 4, 3


def module_inputs(reference_dims, batch=2, queries=5, seed=0):
    """query [N, Lq, C], reference_points [N, Lq, L, 2 | 4], input_flatten [N, S, C], shapes, starts."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start_index = level_layout(LEVELS)
    num_values = int(spatial_shapes.prod(1).sum())
    query = torch.randn(batch, queries, D_MODEL, generator=generator, dtype=torch.float64)
    input_flatten = torch.randn(batch, num_values, D_MODEL, generator=generator, dtype=torch.float64)
    reference_points = torch.rand(batch, queries, len(LEVELS), reference_dims, generator=generator,
                                  dtype=torch.float64)
    if reference_dims == 4:
        reference_points[..., 2:] = 0.05 + 0.4 * reference_points[..., 2:]  # box sizes (w, h)
    return query, reference_points, input_flatten, spatial_shapes, level_start_index


def trained_module(use_reference=False, seed=0):
    """A module in float64 whose heads are perturbed away from the initialisation (as after training)."""
    torch.manual_seed(seed)
    module = MSDeformAttn(D_MODEL, len(LEVELS), HEADS, POINTS, use_reference=use_reference).double()
    with torch.no_grad():
        for linear in (module.sampling_offsets, module.attention_weights):
            linear.weight.normal_(0, 0.3)
    return module


def deformable_detr_forward(module, query, reference_points, input_flatten, spatial_shapes, level_start_index,
                            padding_mask=None):
    """The forward of fundamentalvision/Deformable-DETR's MSDeformAttn, written out as the oracle."""
    N, Lq, C = query.shape
    S, M, L, P = input_flatten.shape[1], HEADS, len(LEVELS), POINTS
    value = module.value_proj(input_flatten)
    if padding_mask is not None:
        value = value.masked_fill(padding_mask[..., None], 0.0)
    value = value.view(N, S, M, C // M)
    offsets = module.sampling_offsets(query).view(N, Lq, M, L, P, 2)
    weights = torch.softmax(module.attention_weights(query).view(N, Lq, M, L * P), -1).view(N, Lq, M, L, P)
    if reference_points.shape[-1] == 2:
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    else:
        locations = (reference_points[:, :, None, :, None, :2]
                     + offsets / P * reference_points[:, :, None, :, None, 2:] * 0.5)
    output = ms_deform_attn_reference(value, spatial_shapes, level_start_index, locations, weights)
    return module.output_proj(output)


@pytest.mark.parametrize("reference_dims", [2, 4])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "padding-mask"])
def test_forward_matches_deformable_detr(reference_dims, masked):
    module = trained_module()
    inputs = module_inputs(reference_dims)
    padding_mask = None
    if masked:
        padding_mask = torch.zeros(inputs[2].shape[:2], dtype=torch.bool)
        padding_mask[1, -30:] = True
    expected = deformable_detr_forward(module, *inputs, padding_mask)
    torch.testing.assert_close(module(*inputs, padding_mask), expected, rtol=0, atol=1e-10)


def test_backward_matches_the_reference_module():
    compiled, reference = trained_module(), trained_module(use_reference=True)
    query, reference_points, input_flatten, spatial_shapes, level_start_index = module_inputs(2)
    grads = []
    for module in (compiled, reference):
        leaves = [query.clone().requires_grad_(), input_flatten.clone().requires_grad_()]
        output = module(leaves[0], reference_points, leaves[1], spatial_shapes, level_start_index)
        output.pow(2).sum().backward()
        grads.append([leaf.grad for leaf in leaves] + [p.grad for p in module.parameters()])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_padded_values_do_not_matter():
    module = trained_module()
    query, reference_points, input_flatten, spatial_shapes, level_start_index = module_inputs(2)
    padding_mask = torch.zeros(input_flatten.shape[:2], dtype=torch.bool)
    padding_mask[:, 40:] = True
    changed = input_flatten.clone()
    changed[:, 40:] = 1e3
    outputs = [module(query, reference_points, flat, spatial_shapes, level_start_index, padding_mask)
               for flat in (input_flatten, changed)]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_paper_initialisation():
    module = MSDeformAttn(d_model=256, n_levels=4, n_heads=8, n_points=4)
    offsets = module.sampling_offsets.bias.view(8, 4, 4, 2)  # [M, L, P, (x, y)]
    # Head h points along angle 2*pi*h/8, scaled onto the unit square; point p sits at distance p+1.
    expected_directions = torch.tensor([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]],
                                       dtype=torch.float32)
    for point in range(4):
        for level in range(4):
            torch.testing.assert_close(offsets[:, level, point], expected_directions * (point + 1),
                                       rtol=0, atol=1e-5)
    assert module.sampling_offsets.weight.abs().max() == 0
    assert module.attention_weights.weight.abs().max() == 0 and module.attention_weights.bias.abs().max() == 0
    bound = math.sqrt(6 / (256 + 256))  # xavier_uniform
    for projection in (module.value_proj, module.output_proj):
        assert projection.weight.abs().max() <= bound and projection.bias.abs().max() == 0


@pytest.mark.parametrize("bad, match", [
    (lambda args: (args[0][..., :-1],) + args[1:], "query"),
    (lambda args: (args[0], torch.cat([args[1], args[1][..., :1]], -1)) + args[2:], "reference_points"),
    (lambda args: (args[0], args[1][:, :, :2]) + args[2:], "reference_points"),
    (lambda args: args[:2] + (args[2][:1],) + args[3:], "input_flatten"),
])
def test_bad_inputs_name_the_argument(bad, match):
    with pytest.raises(ValueError, match=match):
        trained_module()(*bad(module_inputs(2)))


def test_bad_padding_mask_names_the_argument():
    query, reference_points, input_flatten, spatial_shapes, level_start_index = module_inputs(2)
    with pytest.raises(ValueError, match="input_padding_mask"):
        trained_module()(query, reference_points, input_flatten, spatial_shapes, level_start_index,
                         torch.zeros(2, 10, dtype=torch.bool))


def test_heads_must_divide_d_model():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        MSDeformAttn(d_model=30, n_heads=8)


def test_samples_in_the_modules_dtype_whatever_the_reference_points_dtype():
    """A float32 module given float64 reference points (anchors computed in double) samples in float32,
    like one given float32 points."""
    module = trained_module().float()
    query, reference_points, input_flatten, spatial_shapes, level_start_index = module_inputs(4)
    single = [query.float(), reference_points.float(), input_flatten.float(), spatial_shapes, level_start_index]
    output = module(single[0], reference_points, *single[2:])
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, module(*single), rtol=0, atol=1e-6)


def test_runs_under_autocast(device):
    """Under autocast the projections give a low-precision value, while the softmax may be float32
    (it is on CUDA): the op gets locations and weights in one dtype."""
    module = trained_module().float().to(device)
    query, reference_points, input_flatten, spatial_shapes, level_start_index = module_inputs(2)
    single = [query.float(), reference_points.float(), input_flatten.float(), spatial_shapes, level_start_index]
    single = [tensor.to(device) for tensor in single]
    low = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.autocast(device, dtype=low):
        output = module(*single)
    assert output.dtype == low
    torch.testing.assert_close(output.float(), module(*single), rtol=0, atol=0.1)


def test_defaults_are_the_papers_settings():
    module = MSDeformAttn()
    assert (module.d_model, module.n_levels, module.n_heads, module.n_points) == (256, 4, 8, 4)
    assert not module.use_reference and module.sampling_offsets.out_features == 8 * 4 * 4 * 2
