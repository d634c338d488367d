"""ms_deform_attn on the creases of bilinear sampling, where its derivative is one-sided.

Bilinear sampling is piecewise bilinear in the pixel coordinate (loc * size - 0.5): the location
derivative jumps where that coordinate is an integer (a pixel centre), including -1, where the
map's first pixel enters with weight 0. There the last bit of the computed pixel coordinate picks
the side, so the kernels must round it exactly as grid_sample does; and every pixel that grid_sample
reads with weight 0 must be read too, so that a NaN in it is carried the same way. Each test
compares the compiled op's output and all three gradients with the grid_sample reference.
"""
import pytest
import torch

from helpers import assert_close_to, level_layout, make_inputs, output_and_grads
from detrx.nn import MSDeformAttn
from detrx.ops import ms_deform_attn, ms_deform_attn_reference

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}  # relative to max(1, |expected|)
NAMES = ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")
# Sizes that are not powers of two: there loc * size - 0.5 and grid_sample's rounding of the same
# pixel coordinate differ in the last bit for some pixel centres.
ODD_LEVELS = ((7, 13), (10, 21), (5, 3), (1, 6))


def assert_all_match_reference(inputs, dtype):
    actual = output_and_grads(ms_deform_attn, inputs)
    expected = output_and_grads(ms_deform_attn_reference, inputs)
    for name, got, want in zip(NAMES, actual, expected):
        assert_close_to(got, want, TOLERANCE[dtype], name)


def pixel_centre_locations(levels, batch, queries, heads, points, seed=0):
    """[N, Lq, M, L, P, 2]: on each level, (x, y) = ((i + 0.5) / W, (j + 0.5) / H) for random pixels
    i in [-1, W], j in [-1, H] (one pixel beyond the map on each side)."""
    generator = torch.Generator().manual_seed(seed)
    per_level = []
    for height, width in levels:
        coords = [(torch.randint(-1, size + 1, (batch, queries, heads, 1, points), generator=generator) + 0.5) / size
                  for size in (width, height)]
        per_level.append(torch.stack(coords, -1).double())
    return torch.cat(per_level, dim=3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("levels", [ODD_LEVELS, ((8, 16), (4, 2))], ids=["odd-sizes", "powers-of-two"])
def test_pixel_centres_on_every_level(device, dtype, levels):
    locations = pixel_centre_locations(levels, batch=2, queries=64, heads=2, points=4)
    inputs = make_inputs(levels=levels, queries=64, heads=2, channels=16, points=4, dtype=dtype,
                         device=device, locations=locations)
    assert_all_match_reference(inputs, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_encoder_initialisation_pattern(device, dtype):
    """Every query of level 0 at its own pixel centre, plus whole-pixel offsets of each level (what
    Deformable DETR's initialisation gives): the level-0 points all lie on pixel centres."""
    levels = ODD_LEVELS
    height, width = levels[0]
    heads, points = 2, 4
    y, x = torch.meshgrid((torch.arange(height) + 0.5) / height, (torch.arange(width) + 0.5) / width,
                          indexing="ij")
    reference = torch.stack([x, y], -1).view(1, -1, 1, 1, 1, 2).double()  # [1, Lq, 1, 1, 1, 2]
    queries = reference.shape[1]
    generator = torch.Generator().manual_seed(0)
    offsets = torch.randint(-3, 4, (1, queries, heads, len(levels), points, 2), generator=generator)
    level_size = torch.tensor(levels, dtype=torch.float64).flip(-1)  # [L, 2] (W, H)
    locations = reference.to(dtype) + offsets.to(dtype) / level_size[:, None, :].to(dtype)  # in dtype, as a model
    inputs = make_inputs(levels=levels, batch=1, queries=queries, heads=heads, channels=16, points=points,
                         dtype=dtype, device=device, locations=locations)
    assert_all_match_reference(inputs, dtype)


def test_fresh_module_gradients_match_reference(device):
    """A freshly initialised MSDeformAttn over encoder reference points (pixel centres): every
    parameter gradient equals the grid_sample module's, sampling offsets included."""
    levels = ((6, 10), (3, 5))
    spatial_shapes, level_start_index = level_layout(levels, device)
    centres = []
    for height, width in levels:
        y, x = torch.meshgrid((torch.arange(height, dtype=torch.float64) + 0.5) / height,
                              (torch.arange(width, dtype=torch.float64) + 0.5) / width, indexing="ij")
        centres.append(torch.stack([x, y], -1).view(-1, 2))
    reference_points = torch.cat(centres)[None, :, None, :].expand(1, -1, len(levels), 2).to(device)  # [1, S, L, 2]
    generator = torch.Generator().manual_seed(0)
    src = torch.randn(1, reference_points.shape[1], 32, generator=generator, dtype=torch.float64).to(device)
    grads = []
    for use_reference in (False, True):
        torch.manual_seed(0)
        module = MSDeformAttn(32, len(levels), n_heads=8, n_points=2, use_reference=use_reference)
        module = module.to(device, torch.float64)
        output = module(src, reference_points, src, spatial_shapes, level_start_index)
        (output * output).sum().backward()
        grads.append({name: p.grad for name, p in module.named_parameters()})
    compiled, reference = grads
    assert reference["sampling_offsets.bias"].abs().max() > 0
    for name in reference:
        assert_close_to(compiled[name], reference[name], 1e-12, name)


def crease_coordinates(size):
    """Normalised locations whose pixel coordinate is exactly -1, 0, size - 1, size - 0.5 and size
    (exact in binary for a power-of-two size), and just below -1 (outside the map)."""
    pixels = torch.tensor([-1.0, -1.0 - 2.0**-10, 0.0, size - 1.0, size - 0.5, float(size)], dtype=torch.float64)
    return (pixels + 0.5) / size


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_map_edges_exactly(device, dtype):
    """All pairs of the crease coordinates in x and y, on power-of-two levels (1 x 4 included)."""
    levels = ((4, 8), (2, 2), (1, 4))
    per_level = []
    for height, width in levels:
        xs, ys = crease_coordinates(width), crease_coordinates(height)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="ij"), -1).view(-1, 2)  # [36, 2]
        per_level.append(grid)
    queries = per_level[0].shape[0]
    locations = torch.stack(per_level, 1).view(1, queries, 1, len(levels), 1, 2).expand(2, -1, 2, -1, 2, -1)
    inputs = make_inputs(levels=levels, queries=queries, heads=2, channels=8, points=2, dtype=dtype,
                         device=device, locations=locations)
    assert_all_match_reference(inputs, dtype)
    # At x = -1 with y inside the map, grid_sample's location gradient is its one-sided one, not 0.
    _, _, grad_locations, _ = output_and_grads(ms_deform_attn, inputs)
    at_minus_one = (locations[..., 0] == crease_coordinates(8)[0]) & (locations[..., 1] == crease_coordinates(4)[2])
    assert grad_locations[..., 0][at_minus_one.to(device)].abs().min() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("channels", [3, 16])  # plain and SIMD channel paths of the CPU kernel
def test_nan_under_zero_weight_taps_at_the_edges(device, dtype, channels):
    """NaN value pixels read with bilinear weight 0 (at pixel coordinate -1 in x or y, and on an
    inner crease) make the output and the location and weight gradients NaN, exactly where
    grid_sample's do; pixels that are not read (just below -1, or elsewhere) leave them finite."""
    height, width = 4, 8
    #                 (x pixel, y pixel): taps of weight 0 read from the NaN pixels (row, column)
    pixels = torch.tensor([[-1.0, 1.0],           # (1, 0) and (2, 0)
                           [2.0, 0.5],            # (0, 3) and (1, 3)
                           [5.5, -1.0],           # (0, 5) and (0, 6)
                           [-1.0 - 2.0**-10, 1.0],  # nothing: outside the map
                           [6.25, 2.5]], dtype=torch.float64)  # weights > 0, no NaN pixel
    locations = (pixels + 0.5) / torch.tensor([width, height], dtype=torch.float64)
    queries = locations.shape[0]
    inputs = make_inputs(levels=[(height, width)], batch=1, queries=queries, heads=2, channels=channels, points=1,
                         dtype=dtype, device=device, locations=locations.view(1, queries, 1, 1, 1, 2).expand(
                             1, queries, 2, 1, 1, 2))
    value = inputs[0].clone()
    for row, column in ((1, 0), (0, 3), (0, 5)):
        value[:, row * width + column, :, 0] = float("nan")  # channel 0 of both heads
    inputs = (value,) + inputs[1:]
    actual = output_and_grads(ms_deform_attn, inputs)
    expected = output_and_grads(ms_deform_attn_reference, inputs)
    nan_query = torch.tensor([True, True, True, False, False], device=device)
    for name, got, want in zip(NAMES, actual, expected):
        assert torch.equal(got.isnan(), want.isnan()), f"{name}: NaN where grid_sample has none, or none where it has"
        finite = ~want.isnan()
        assert_close_to(got[finite], want[finite], TOLERANCE[dtype], name)
    output, _, grad_locations, grad_weights = actual
    assert output.view(queries, 2, channels)[:, :, 0].isnan().eq(nan_query[:, None]).all()
    assert output.view(queries, 2, channels)[:, :, 1:].isfinite().all()
    assert grad_locations.view(queries, 2, 2).isnan().eq(nan_query[:, None, None]).all()
    assert grad_weights.view(queries, 2).isnan().eq(nan_query[:, None]).all()


def test_non_finite_locations_still_sample_nothing(device):
    """NaN and infinite locations (documented: they sample nothing) next to a -1 crease point."""
    locations = torch.tensor([[float("nan"), 0.5], [-float("inf"), 0.5], [0.5, float("inf")], [-1 / 16, 0.5]],
                             dtype=torch.float64)
    inputs = make_inputs(levels=[(4, 8)], batch=1, queries=4, heads=1, points=1, device=device,
                         locations=locations.view(1, 4, 1, 1, 1, 2))
    output, grad_value, grad_locations, grad_weights = output_and_grads(ms_deform_attn, inputs)
    assert output[:, :3].abs().max() == 0 and grad_locations[:, :3].abs().max() == 0
    assert grad_weights[:, :3].abs().max() == 0
    assert grad_locations[:, 3, ..., 0].abs().max() > 0  # pixel x = -1: the one-sided gradient
    assert grad_value.isfinite().all()
