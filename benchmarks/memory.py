"""Peak memory that a function allocates above what was already allocated when it started.

CUDA: the caching allocator's own statistics (max_memory_allocated after a reset).

CPU: PyTorch's CPU allocator reports every allocation and free (size, time) to the profiler when
profile_memory=True. Replaying those events in time order and keeping the running maximum of the
cumulative sum gives the peak of tensor memory held at once by the function, above its inputs
(which were allocated before and are not freed inside). It sees tensor storage only, not malloc
calls made privately inside a kernel, nor the Python interpreter. The method is checked on a known
pattern of allocations (check_cpu_peak_method) before it is trusted.
"""
import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile


def _walk(events):
    for event in events:
        yield event
        yield from _walk(event.children)


def _cpu_peak(fn):
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    # The event tree (torch's structured profiler results) keeps each allocation's signed size and
    # timestamp; prof.events() folds them into the enclosing ops and loses their order.
    allocations = [event for event in _walk(prof.profiler.kineto_results.experimental_event_tree())
                   if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu"]
    held, peak = 0, 0
    for event in sorted(allocations, key=lambda event: event.start_time_ns):
        held += event.extra_fields.alloc_size  # negative for a free
        peak = max(peak, held)
    return result, peak


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
    """Allocate 32 MiB, then 16 MiB, free the 16, allocate 8: the peak must read exactly 48 MiB."""
    mib = 2**20

    def known_pattern():
        kept = torch.empty(32 * mib, dtype=torch.uint8)
        temporary = torch.empty(16 * mib, dtype=torch.uint8)
        del temporary
        return kept, torch.empty(8 * mib, dtype=torch.uint8)

    _, peak = _cpu_peak(known_pattern)
    if peak != 48 * mib:
        raise RuntimeError(f"CPU peak-memory replay read {peak / mib:.2f} MiB for a known 48 MiB peak; "
                           "this torch's profiler no longer reports allocations as expected")
