"""ms_deform_attn on CUDA never synchronises with the host: forward and backward run under
torch.cuda.set_sync_debug_mode("error"), inside a captured CUDA graph, and on a side stream; a bad
level layout without spatial_shapes_list stops the kernel with a device-side assertion."""
import os
import subprocess
import sys

import pytest
import torch

import detrx
from helpers import make_inputs
from detrx.ops import ms_deform_attn

LIST = [(5, 7), (3, 2)]

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and detrx.build_info()["cuda"]),
                                reason="needs a GPU and detrx's CUDA kernels")


def cuda_inputs(dtype=torch.float32, channels=32, seed=0):
    return make_inputs(channels=channels, dtype=dtype, device="cuda", seed=seed)


def forward_backward(inputs, grad_output, spatial_shapes_list):
    value, shapes, starts, locations, weights = inputs
    leaves = [t.detach().requires_grad_() for t in (value, locations, weights)]
    output = ms_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2], spatial_shapes_list=spatial_shapes_list)
    return (output,) + torch.autograd.grad(output, leaves, grad_output)


@pytest.mark.parametrize("spatial_shapes_list", [LIST, None], ids=["with list", "tensor only"])
@pytest.mark.parametrize("channels", [32, 30])  # vector loads, one channel per thread
def test_cuda_no_sync_forward_backward(spatial_shapes_list, channels):
    inputs = cuda_inputs(channels=channels)
    grad_output = torch.randn(2, 6, 2 * channels, device="cuda")
    expected = forward_backward(inputs, grad_output, spatial_shapes_list)  # warm-up (lazy inits may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        results = forward_backward(inputs, grad_output, spatial_shapes_list)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_cuda_graph_capture_and_replay():
    static = [t.clone() for t in cuda_inputs(seed=0)]
    grad_output = torch.randn(2, 6, 64, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the capture, as torch.cuda.graphs asks
        forward_backward(static, grad_output, LIST)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = forward_backward(static, grad_output, LIST)
    for seed in (1, 2):  # new data into the static inputs, then replay
        fresh = cuda_inputs(seed=seed)
        for target, source in zip(static, fresh):
            target.copy_(source)
        graph.replay()
        expected = forward_backward(fresh, grad_output, LIST)
        for got, want in zip(captured, expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_cuda_non_default_stream():
    inputs = cuda_inputs()
    grad_output = torch.randn(2, 6, 64, device="cuda")
    expected = forward_backward(inputs, grad_output, None)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        # Inputs produced on the side stream right before the op: the kernels must run there.
        produced = [t * 1 if t.is_floating_point() else t for t in inputs]
        results = forward_backward(produced, grad_output, None)
    stream.synchronize()
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


BAD_LAYOUT = """
import torch
from detrx.ops import ms_deform_attn
value = torch.randn(1, 41, 2, 8, device="cuda")
shapes = torch.tensor([[5, 7], [3, 2]], device="cuda")
starts = torch.tensor([0, 34], device="cuda")  # should be [0, 35]
locations = torch.rand(1, 4, 2, 2, 3, 2, device="cuda")
weights = torch.rand(1, 4, 2, 2, 3, device="cuda")
ms_deform_attn(value, shapes, starts, locations, weights)  # returns at once: nothing is checked on the host
print("launched", flush=True)
torch.cuda.synchronize()
"""


def test_cuda_bad_layout_is_a_device_side_assertion():
    # In a child process: a device-side assertion leaves the CUDA context unusable.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(detrx.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", BAD_LAYOUT], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert result.stdout.strip() == "launched"
    assert "device-side assert" in result.stderr
