"""The compiled ms_deform_attn matches the grid_sample reference: outputs and all three gradients."""
import warnings

import pytest
import torch

from helpers import assert_matches_reference, make_inputs, output_and_grads
from detrx.ops import ms_deform_attn, ms_deform_attn_reference

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}  # relative to max(1, |expected|)

# The CPU kernel specialises D = 16, 32, 64; the others take the runtime-sized path.
CHANNELS = (1, 2, 16, 30, 32, 64, 71)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("channels", CHANNELS)
def test_every_channel_count(device, dtype, channels):
    inputs = make_inputs(channels=channels, heads=3, dtype=dtype, device=device)
    assert_matches_reference(inputs, TOLERANCE[dtype])


@pytest.mark.parametrize("levels", [
    [(6, 9)],                              # one level
    [(1, 11)],                             # one row
    [(8, 3), (4, 2), (2, 1), (1, 1)],      # four levels down to a single pixel
    [(13, 21), (7, 11), (4, 6), (2, 3)],   # Deformable DETR's aspect ratio
], ids=["one-level", "one-row", "down-to-1x1", "detr-like"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_level_layouts(device, dtype, levels):
    inputs = make_inputs(levels=levels, channels=32, points=4, dtype=dtype, device=device)
    assert_matches_reference(inputs, TOLERANCE[dtype])


def border_locations(levels, batch, queries, heads, points, seed=0):
    """[N, Lq, M, L, P, 2] drawn from each level's exact special coordinates.

    Per axis of size K: 0 and 1 (the map's outer edges), pixel edges i / K, pixel centres
    (i + 0.5) / K, and -0.3 / 1.3 (outside the map). With power-of-two sizes these are exact
    in binary (other sizes: test_ms_deform_attn_creases.py).
    """
    generator = torch.Generator().manual_seed(seed)
    per_level = []
    for height, width in levels:
        coords = []
        for size in (width, height):
            edges = torch.arange(size + 1, dtype=torch.float64) / size
            centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size
            candidates = torch.cat([edges, centres, torch.tensor([-0.3, 1.3], dtype=torch.float64)])
            pick = torch.randint(len(candidates), (batch, queries, heads, 1, points), generator=generator)
            coords.append(candidates[pick])
        per_level.append(torch.stack(coords, dim=-1))
    return torch.cat(per_level, dim=3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_locations_on_borders_edges_and_centres(device, dtype):
    levels = [(4, 8), (2, 4), (1, 2)]
    locations = border_locations(levels, batch=2, queries=40, heads=2, points=4)
    inputs = make_inputs(levels=levels, queries=40, points=4, channels=16, dtype=dtype, device=device,
                         locations=locations)
    assert_matches_reference(inputs, TOLERANCE[dtype])


def test_far_outside_the_map_samples_zero(device):
    locations = torch.tensor([-5.0, -1.0, 2.0, 7.5, float(2**40)], dtype=torch.float64)
    locations = torch.stack([locations, locations.flip(0)], -1).view(1, 5, 1, 1, 1, 2)
    inputs = make_inputs(levels=[(3, 4)], batch=1, queries=5, heads=1, points=1, device=device,
                         locations=locations)
    output, grad_value, grad_locations, grad_weights = output_and_grads(ms_deform_attn, inputs)
    assert output.abs().max() == 0 and grad_value.abs().max() == 0
    assert grad_locations.abs().max() == 0 and grad_weights.abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_at_most_twice_the_reference_error(device, dtype):
    """flash-attention's rule: against a float64 reference, the kernel in a low dtype may have at
    most twice the error of the PyTorch reference computed in that same dtype."""
    inputs = make_inputs(levels=[(6, 10), (3, 5)], queries=20, heads=2, channels=32, points=4,
                         low=0.0, high=1.0, dtype=dtype, device=device)
    exact = output_and_grads(ms_deform_attn_reference, [t.double() if t.is_floating_point() else t
                                                        for t in inputs])
    kernel = output_and_grads(ms_deform_attn, inputs)
    same_dtype_reference = output_and_grads(ms_deform_attn_reference, inputs)
    names = ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")
    for name, got, baseline, want in zip(names, kernel, same_dtype_reference, exact):
        assert got.dtype == dtype, name
        error = (got.double() - want).abs().max().item()
        baseline_error = (baseline.double() - want).abs().max().item()
        assert error <= 2 * baseline_error, f"{name}: error {error:.3g} > 2 * {baseline_error:.3g}"


@pytest.mark.parametrize("channels", [1, 32])  # plain and SIMD channel paths
def test_nan_value_under_a_zero_weight_tap_propagates(device, channels):
    # One 1x2 level whose second pixel is NaN, sampled at the first pixel's exact centre: the
    # second pixel is inside the map with bilinear weight 0, and 0 * NaN is NaN in grid_sample.
    value = torch.tensor([1.0, float("nan")], dtype=torch.float64, device=device).view(1, 2, 1, 1)
    value = value.expand(1, 2, 1, channels).contiguous()
    inputs = make_inputs(levels=[(1, 2)], batch=1, queries=1, heads=1, channels=channels, points=1, device=device,
                         locations=torch.tensor([0.25, 0.5], dtype=torch.float64).view(1, 1, 1, 1, 1, 2))
    inputs = (value,) + inputs[1:]
    assert ms_deform_attn_reference(*inputs).isnan().all()
    assert ms_deform_attn(*inputs).isnan().all()


@pytest.mark.parametrize("value_dtype", [torch.float64, torch.bfloat16])
def test_reference_raises_no_warning_and_keeps_values_dtype(value_dtype):
    """grid_sample warns when align_corners is left to its default: the reference sets it. A bfloat16
    value comes with float32 locations and weights (as under autocast)."""
    compute_dtype = torch.float64 if value_dtype == torch.float64 else torch.float32
    value, *others = make_inputs(levels=[(5, 7), (0, 3), (3, 2)], dtype=compute_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output = ms_deform_attn_reference(value.to(value_dtype), *others)
    assert output.dtype == value_dtype
