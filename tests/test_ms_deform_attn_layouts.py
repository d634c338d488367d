"""ms_deform_attn on unusual layouts and sizes: strided or misaligned views, empty and degenerate sizes, empty
levels, and its determinism across runs, thread counts and deterministic mode."""
import pytest
import torch

from helpers import assert_matches_reference, make_inputs, output_and_grads
from detrx.ops import ms_deform_attn, ms_deform_attn_reference


def interleaved(tensor):
    """A view of tensor's values with every stride doubled (non-contiguous)."""
    return torch.stack([tensor, torch.zeros_like(tensor)], dim=-1)[..., 0]


def strided_views(inputs):
    """The same values as non-contiguous views: a transposed value, interleaved other tensors."""
    value, spatial_shapes, level_start_index, locations, weights = inputs
    value_view = value.transpose(1, 2).contiguous().transpose(1, 2)  # [N, S, M, D], strides of [N, M, S, D]
    views = (value_view, interleaved(spatial_shapes), interleaved(level_start_index), interleaved(locations),
             interleaved(weights))
    assert not any(view.is_contiguous() for view in views)
    return views


def assert_same_results(actual, expected, device):
    """(output, grads...) bitwise equal; on CUDA the gradients only close, as atomics sum them in any order."""
    for index, (got, want) in enumerate(zip(actual, expected)):
        if device == "cpu" or index == 0:
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want)


def test_non_contiguous_inputs_give_the_same_results(device):
    inputs = make_inputs(channels=32, device=device)
    expected = output_and_grads(ms_deform_attn, inputs)
    assert_same_results(output_and_grads(ms_deform_attn, strided_views(inputs)), expected, device)


def misaligned(tensor):
    """A contiguous copy of tensor whose data starts one element past an allocation's start,
    so it is not 16-byte aligned (vector loads must not assume it is)."""
    storage = torch.empty(tensor.numel() + 1, dtype=tensor.dtype, device=tensor.device)
    view = storage[1:].view(tensor.shape)
    view.copy_(tensor)
    return view


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_misaligned_contiguous_inputs_give_the_same_results(device, dtype):
    inputs = make_inputs(channels=32, dtype=dtype, device=device)
    expected = output_and_grads(ms_deform_attn, inputs)
    value, spatial_shapes, level_start_index, locations, weights = inputs
    shifted = (misaligned(value), spatial_shapes, level_start_index, misaligned(locations), misaligned(weights))
    assert shifted[0].is_contiguous() and shifted[0].data_ptr() % 16 != 0
    assert_same_results(output_and_grads(ms_deform_attn, shifted), expected, device)


@pytest.mark.parametrize("batch, queries", [(0, 6), (2, 0), (0, 0)], ids=["N=0", "Lq=0", "both"])
def test_empty_batch_or_queries(device, batch, queries):
    inputs = make_inputs(batch=batch, queries=queries, heads=2, channels=8, device=device)
    output, grad_value, grad_locations, grad_weights = output_and_grads(ms_deform_attn, inputs)
    value, _, _, locations, weights = inputs
    assert output.shape == (batch, queries, 2 * 8)
    assert grad_value.shape == value.shape and grad_locations.shape == locations.shape
    assert grad_weights.shape == weights.shape
    # With no queries nothing is sampled, so value (if any) gets an all-zero gradient.
    assert grad_value.numel() == 0 or grad_value.abs().max() == 0


@pytest.mark.parametrize("sizes", [dict(points=0), dict(channels=0), dict(heads=0)], ids=["P=0", "D=0", "M=0"])
def test_degenerate_sizes_match_reference(device, sizes):
    assert_matches_reference(make_inputs(device=device, **sizes), tolerance=0)


@pytest.mark.parametrize("empty_level", [(0, 3), (3, 0)], ids=["H=0", "W=0"])
def test_an_empty_level_contributes_nothing(device, empty_level):
    """A 0 x 3 or 3 x 0 level gives the same as leaving that level out, in the op and in the reference."""
    levels = [(5, 7), empty_level, (3, 2)]
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(levels=levels, device=device)
    kept = [0, 2]
    without = (value, spatial_shapes[kept], level_start_index[kept], locations[:, :, :, kept], weights[:, :, :, kept])
    output, grad_value, grad_locations, grad_weights = output_and_grads(
        ms_deform_attn, (value, spatial_shapes, level_start_index, locations, weights))
    expected = output_and_grads(ms_deform_attn_reference, without)
    torch.testing.assert_close(output, expected[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_value, expected[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_locations[:, :, :, kept], expected[2], rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_weights[:, :, :, kept], expected[3], rtol=0, atol=1e-12)
    assert grad_locations[:, :, :, 1].abs().max() == 0 and grad_weights[:, :, :, 1].abs().max() == 0
    reference = output_and_grads(ms_deform_attn_reference, (value, spatial_shapes, level_start_index, locations, weights))
    torch.testing.assert_close(reference[0], expected[0], rtol=0, atol=1e-12)


def cpu_results_with_threads(inputs, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return output_and_grads(ms_deform_attn, inputs)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cpu_results_are_bitwise_reproducible(dtype):
    """Many queries hit the same pixels, so any race or schedule-dependent summation order in the
    grad_value scatter would change float32 bits between runs or thread counts."""
    inputs = make_inputs(levels=[(4, 4), (2, 2)], batch=2, queries=300, heads=4, channels=32, points=4,
                         low=0.0, high=1.0, dtype=dtype)
    first = cpu_results_with_threads(inputs, 2)
    second = cpu_results_with_threads(inputs, 2)
    single_thread = cpu_results_with_threads(inputs, 1)
    for a, b, c in zip(first, second, single_thread):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_deterministic_mode(device):
    """The CPU backward is deterministic and runs under torch.use_deterministic_algorithms; the CUDA
    backward scatters grad_value with atomics and must refuse."""
    inputs = make_inputs(channels=16, device=device)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        if device == "cpu":
            output_and_grads(ms_deform_attn, inputs)
        else:
            with pytest.raises(RuntimeError, match="deterministic"):
                output_and_grads(ms_deform_attn, inputs)
    finally:
        torch.use_deterministic_algorithms(previous)
