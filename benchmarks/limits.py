"""This machine's two roofline limits, measured: memory copy bandwidth and float32 GEMM rate.

Both run at the current torch thread count, like the kernels they bound.
"""
import torch

from common import time_callable


def copy_bandwidth(device, megabytes=256, min_run_time=0.5):
    """Bytes read + bytes written per second by copy_ between two ~256 MB float32 buffers."""
    numel = megabytes * 2**20 // 4
    source = torch.rand(numel, device=device)
    target = torch.empty_like(source)
    timing = time_callable(lambda: target.copy_(source), min_run_time)
    return 2 * source.numel() * source.element_size() / timing["median_s"]


def gemm_multiply_adds(device, size=2048, min_run_time=0.5):
    """Multiply-adds per second of a float32 size^3 torch.mm (half the usual FLOP/s figure)."""
    a = torch.rand(size, size, device=device)
    b = torch.rand(size, size, device=device)
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # a true float32 GEMM on GPUs too
    try:
        timing = time_callable(lambda: torch.mm(a, b), min_run_time)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
    return size**3 / timing["median_s"]


def roofline(seconds, compulsory_bytes, multiply_adds, bandwidth, multiply_add_rate):
    """How close a measured time comes to the bandwidth-bound and compute-bound times (1.0 = at the limit)."""
    bandwidth_bound_s = compulsory_bytes / bandwidth
    compute_bound_s = multiply_adds / multiply_add_rate
    return {
        "measured_s": seconds,
        "compulsory_bytes": compulsory_bytes,
        "multiply_adds": multiply_adds,
        "bandwidth_bound_s": bandwidth_bound_s,
        "compute_bound_s": compute_bound_s,
        "fraction_of_bandwidth_bound": bandwidth_bound_s / seconds,
        "fraction_of_compute_bound": compute_bound_s / seconds,
    }
