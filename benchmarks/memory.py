"""Peak memory that a function allocates above what was already allocated when it started.

CUDA: the caching allocator's own statistics (max_memory_allocated after a reset).

CPU: the process's resident-memory high-water mark (Linux: VmHWM in /proc/self/status, reset by
writing 5 to /proc/self/clear_refs) at the end of the call, minus the resident memory (VmRSS) at its
start. This counts every page the call touches: tensors, and buffers a kernel allocates privately.
It is exact only if freed memory goes back to the OS instead of waiting in malloc's free lists to be
reused unseen, so prepare_cpu_process() lowers glibc's mmap threshold to 64 KiB (every block from
64 KiB up gets pages of its own and returns them when freed). That also changes what allocations
cost, so benchmarks measure CPU memory in a child process (see attn.py) and time in their own. The
method is checked on a known pattern of allocations (check_cpu_peak_method) before it is trusted.
"""
import ctypes
import ctypes.util
import os

import torch

CLEAR_REFS = "/proc/self/clear_refs"
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def cpu_peak_supported():
    """Whether this process can reset and read its resident-memory high-water mark (Linux)."""
    return os.path.exists(CLEAR_REFS) and os.access(CLEAR_REFS, os.W_OK)


def prepare_cpu_process():
    """Make freed blocks of 64 KiB and more go back to the OS (glibc); see the module docstring."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024):
        raise RuntimeError("mallopt(M_MMAP_THRESHOLD) failed: not glibc?")


def _cpu_peak(fn):
    with open(CLEAR_REFS, "w") as clear_refs:
        clear_refs.write("5")  # the high-water mark := the current resident size
    before = _status_bytes("VmRSS")
    result = fn()
    return result, max(0, _status_bytes("VmHWM") - before)


def _cuda_peak(fn, device):
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = fn()
    torch.cuda.synchronize(device)
    return result, torch.cuda.max_memory_allocated(device) - before


def peak_memory(fn, device):
    """(fn(), peak bytes allocated during the call above the memory allocated before it)."""
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_peak(fn, device)
    if device.type == "cpu":
        return _cpu_peak(fn)
    raise ValueError(f"peak_memory: unsupported device {device}")


def check_cpu_peak_method():
    """Touch 32 MiB, then 16 MiB, free the 16, touch 8: the peak must read 48 MiB (within 1 MiB)."""
    mib = 2**20

    def known_pattern():
        kept = torch.ones(32 * mib, dtype=torch.uint8)
        temporary = torch.ones(16 * mib, dtype=torch.uint8)
        del temporary
        return kept, torch.ones(8 * mib, dtype=torch.uint8)

    _, peak = _cpu_peak(known_pattern)
    if abs(peak - 48 * mib) > mib:
        raise RuntimeError(f"the resident-memory peak read {peak / mib:.2f} MiB for a known 48 MiB peak; "
                           "call prepare_cpu_process() first (glibc only)")
