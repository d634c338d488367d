"""The CUDA kernels of ms_deform_attn against the CPU kernels: every dtype, both channel paths
(16-byte vector loads, and one channel per thread for D = 30), value and grad_output that start one
element into their buffer (misaligned for vector loads) in float16/bfloat16, and shapes whose
grid-stride loops go round more than once. Forward and the three gradients."""
import pytest
import torch

import detrx
from helpers import make_inputs, off_grid_locations

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and detrx.build_info()["cuda"]),
                                reason="needs a GPU and detrx's CUDA kernels")
LEVELS = ((6, 9), (3, 5), (1, 1))
# max |cuda - cpu| / max(1, max |cpu|): both sum in float32 (float64 for float64); reduced-precision
# outputs are rounded once, so they may differ by an ulp of the output dtype.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def misaligned(tensor):
    """The same values, stored one element into a larger buffer (not 16-byte aligned)."""
    buffer = torch.empty(tensor.numel() + 1, dtype=tensor.dtype, device=tensor.device)
    view = buffer[1:].view(tensor.shape)
    view.copy_(tensor)
    return view


def cuda_and_cpu(inputs, grad_output, misalign=False):
    """(output, grad_value, grad_locations, grad_weights) of the raw ops on CUDA and on the CPU."""
    results = {}
    for device in ("cuda", "cpu"):
        value, shapes, starts, locations, weights = (t.to(device) for t in inputs)
        grad = grad_output.to(device)
        if device == "cuda" and misalign:
            value, grad = misaligned(value), misaligned(grad)
            assert value.data_ptr() % 16 != 0 and grad.data_ptr() % 16 != 0
        output = torch.ops.detrx.ms_deform_attn(value, shapes, starts, locations, weights)
        grads = torch.ops.detrx.ms_deform_attn_backward(grad, value, shapes, starts, locations, weights)
        results[device] = [t.cpu().double() for t in (output, *grads)]
    return results["cuda"], results["cpu"]


NAMES = ("output", "grad_value", "grad_locations", "grad_weights")


def assert_close(cuda, cpu, tolerance, names=NAMES):
    for name, got, want in zip(names, cuda, cpu):
        scale = max(1.0, want.abs().max().item())
        error = (got - want).abs().max().item()
        assert error <= tolerance * scale, f"{name}: {error:.3g} > {tolerance:.1g} * {scale:.3g}"


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("channels", [32, 30], ids=["vector loads", "channel per thread"])
@pytest.mark.parametrize("misalign", [False, True], ids=["aligned", "misaligned"])
def test_cuda_matches_cpu_kernels(dtype, channels, misalign):
    if misalign and dtype not in (torch.float16, torch.bfloat16):
        pytest.skip("misalignment is checked on the half-precision vector path")
    locations = off_grid_locations(LEVELS, batch=2, queries=33, heads=3, points=4)
    inputs = make_inputs(levels=LEVELS, queries=33, heads=3, channels=channels, points=4, dtype=dtype,
                         locations=locations)
    grad_output = torch.randn(2, 33, 3 * channels, generator=torch.Generator().manual_seed(5)).to(dtype)
    cuda, cpu = cuda_and_cpu(inputs, grad_output, misalign)
    assert_close(cuda, cpu, TOLERANCE[dtype])


def test_cuda_grid_stride_loops_run_more_than_once():
    # The kernels launch at most 2^20 blocks of 256 threads = 2^28 threads; with one channel per thread
    # (D = 30) every (query, channel) is a thread: 9.5 M queries x 30 channels > 2^28.
    queries, channels = 9_500_000, 30
    assert queries * channels > 2**28
    generator = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[4, 4]])
    starts = torch.tensor([0])
    value = torch.randn(1, 16, 1, channels, generator=generator)
    locations = torch.rand(1, queries, 1, 1, 1, 2, generator=generator) * 1.2 - 0.1
    weights = torch.rand(1, queries, 1, 1, 1, generator=generator)
    grad_output = torch.randn(1, queries, channels, generator=generator)
    cuda, cpu = cuda_and_cpu((value, shapes, starts, locations, weights), grad_output)
    per_sample = [0, 2, 3]  # output and the location and weight gradients: a handful of terms each
    assert_close([cuda[i] for i in per_sample], [cpu[i] for i in per_sample], 2e-5, [NAMES[i] for i in per_sample])
    # grad_value sums ~2.4 M float32 terms per element, in another order on each device
    assert_close(cuda[1:2], cpu[1:2], 1e-3, NAMES[1:2])
