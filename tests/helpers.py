"""Builders and checks shared by the tests.

Multi-scale deformable attention (MSDA) inputs follow the op's conventions: value [N, S, M, D],
spatial_shapes int64 [L, 2] (H, W), level_start_index int64 [L], sampling_locations
[N, Lq, M, L, P, 2] (x, y), attention_weights [N, Lq, M, L, P]. Model tests take a small batch of
the synthetic shapes set (`shapes_batch`). Nothing here touches CUDA at import.
"""
import os

import torch

from detrx.data import SyntheticShapes, build_transforms, collate_fn
from detrx.ops import ms_deform_attn, ms_deform_attn_reference

SMALL_LEVELS = ((5, 7), (3, 2))  # non-square, one of each orientation


def shared_unless_mutating(fixture_name, config):
    """Fixture scope: one per module, but one per test under mutmut, which credits what a fixture
    calls to the first test that uses it and would then skip the other tests for those mutants."""
    return "function" if "MUTANT_UNDER_TEST" in os.environ else "module"


def level_layout(levels, device="cpu"):
    """spatial_shapes [L, 2] and level_start_index [L] of the given (H, W) levels."""
    spatial_shapes = torch.tensor(levels, dtype=torch.int64, device=device)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    return spatial_shapes, level_start_index


def off_grid_locations(levels, batch, queries, heads, points, dtype=torch.float64, seed=0):
    """Locations whose pixel coordinates all have a fractional part in [0.2, 0.8].

    Bilinear sampling is piecewise bilinear in the pixel coordinate (loc * W - 0.5): its derivative
    jumps where that coordinate is an integer, i.e. at pixel centres, including the map's outer
    edge at -1 and W. Finite differences (gradcheck) straddling such a kink disagree with the
    analytic one-sided gradient, so these locations are built as integer cell + fraction in
    [0.2, 0.8], cells from -1 (partly outside the map) to W - 1, far from every kink. Returns
    [N, Lq, M, L, P, 2].
    """
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, queries, heads, len(levels), points)
    per_level = []
    for height, width in levels:
        coords = []
        for size in (width, height):  # (x, y)
            cell = torch.randint(-1, size, shape[:3] + (1, points), generator=generator)
            fraction = 0.2 + 0.6 * torch.rand(shape[:3] + (1, points), generator=generator, dtype=torch.float64)
            coords.append((cell + fraction + 0.5) / size)
        per_level.append(torch.stack(coords, dim=-1))
    return torch.cat(per_level, dim=3).to(dtype)


def make_inputs(levels=SMALL_LEVELS, batch=2, queries=6, heads=2, channels=8, points=3,
                dtype=torch.float64, device="cpu", locations=None, low=-0.3, high=1.3, seed=0):
    """One set of ms_deform_attn arguments (value, spatial_shapes, level_start_index, locations, weights).

    Locations are uniform in [low, high] unless given ([N, Lq, M, L, P, 2]); the default range
    reaches outside [0, 1], where grid_sample samples zeros. Weights are softmaxed over (L, P).
    """
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start_index = level_layout(levels, device)
    num_values = sum(h * w for h, w in levels)
    value = torch.randn(batch, num_values, heads, channels, generator=generator, dtype=torch.float64)
    sample_shape = (batch, queries, heads, len(levels), points)
    if locations is None:
        locations = low + (high - low) * torch.rand(sample_shape + (2,), generator=generator, dtype=torch.float64)
    logits = torch.randn(sample_shape, generator=generator, dtype=torch.float64)
    weights = logits.flatten(-2).softmax(-1).view(sample_shape)
    return (value.to(device, dtype), spatial_shapes, level_start_index,
            locations.to(device, dtype), weights.to(device, dtype))


def output_and_grads(op, inputs, grad_output=None):
    """op's output and d sum(output * grad_output) / d (value, locations, weights).

    grad_output defaults to a fixed random tensor so that every channel gets its own gradient.
    """
    value, spatial_shapes, level_start_index, locations, weights = (
        t.detach().requires_grad_(t.is_floating_point()) for t in inputs)
    output = op(value, spatial_shapes, level_start_index, locations, weights)  # [N, Lq, M * D]
    if grad_output is None:
        generator = torch.Generator().manual_seed(1)
        grad_output = torch.randn(output.shape, generator=generator, dtype=torch.float64)
    grad_output = grad_output.to(output.device, output.dtype)
    grads = torch.autograd.grad(output, (value, locations, weights), grad_output, allow_unused=True)
    return (output.detach(),) + grads


def assert_close_to(actual, expected, tolerance, name="output"):
    """max |actual - expected| <= tolerance * max(1, max |expected|), compared in float64."""
    actual, expected = actual.double(), expected.double()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    error = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert error <= tolerance * scale, f"{name}: max abs error {error:.3g} > {tolerance:.1g} * {scale:.3g}"


def assert_matches_reference(inputs, tolerance):
    """The compiled op's output and three gradients match the grid_sample reference's."""
    names = ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")
    actual = output_and_grads(ms_deform_attn, inputs)
    expected = output_and_grads(ms_deform_attn_reference, inputs)
    for name, got, want in zip(names, actual, expected):
        assert_close_to(got, want, tolerance, name)


def shapes_batch(num_images=2, seed=0):
    """images [B, 3, 64, 64], mask [B, 64, 64], targets of synthetic shapes; the second image is
    padded on the right, as in a mixed-size batch."""
    dataset = SyntheticShapes(num_images, image_size=64, max_objects=4, min_size=6, seed=seed,
                              transforms=build_transforms(False))
    images, mask, targets = collate_fn([dataset[i] for i in range(num_images)])
    mask[1, :, 56:] = True
    return images, mask, targets
