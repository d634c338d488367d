"""Benchmark helpers shared by detrx's benchmarks: the machine description, timing, tables, JSON.

Timing uses torch.utils.benchmark.Timer (CUDA-synchronising, warm-up included) at the current
torch thread count; Timer's own default is a single thread, which would understate the CPU kernels.
"""
import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import sys

import torch

# torch.utils.benchmark imports torch.utils.cpp_extension, which logs "No CUDA runtime is found" on
# any machine with a CUDA build of torch and no GPU: a fact about torch's build, not a result here.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def thread_count(text):
    """argparse type: a thread count, 1 or more."""
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"a thread count is 1 or more, got {count}")
    return count


def thread_counts(text):
    """argparse type: a comma list of thread counts."""
    return [thread_count(word) for word in text.split(",")]


def add_common_options(parser, quick, devices=("cpu", "cuda"), dtypes=("float32",), narrowed_because=None,
                       default_device="cpu", threads="torch's", default_threads=None, thread_list=False,
                       json_default=None):
    """The options every timing script has, spelled and documented alike: --device, --dtype,
    --threads, --json, --quick (apply_common_options applies them).

    quick: what --quick runs (a phrase). devices, dtypes: the values the script runs with (the
    first dtype is the default); where either is narrowed to one value, narrowed_because says why.
    threads: whose threads --threads sets; thread_list: a comma list of counts, each timed.
    default_threads: None for torch's own count."""
    if 1 in (len(devices), len(dtypes)) and not narrowed_because:
        raise ValueError("a --device or --dtype with one choice needs narrowed_because")

    def choice_help(what, values, default):
        return f"{what}: {values[0]} only ({narrowed_because})" if len(values) == 1 else f"{what} (default {default})"

    parser.add_argument("--device", choices=devices, default=default_device,
                        help=choice_help("where it runs", devices, default_device))
    parser.add_argument("--dtype", choices=dtypes, default=dtypes[0],
                        help=choice_help("the dtype of the timed tensors", dtypes, dtypes[0]))
    default = "torch's own" if default_threads is None else default_threads
    parser.add_argument("--threads", type=thread_counts if thread_list else thread_count, default=default_threads,
                        metavar="N,N..." if thread_list else "N",
                        help=f"{threads} threads{', a comma list: each case is timed at each' if thread_list else ''}"
                             f" (default {default})")
    parser.add_argument("--json", metavar="PATH", default=json_default,
                        help=f"write every figure and the machine description here (default {json_default or 'none'})")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {quick}")


def apply_common_options(parser, args):
    """Sets torch's thread count from a single --threads, refuses a cuda --device where no GPU is
    visible, and returns (device, dtype) as torch's objects."""
    if isinstance(args.threads, int):
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is visible")
    return device, DTYPES[args.dtype]


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else platform's best guess."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    """The 1-minute load average (how busy the machine was; None where the OS has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def describe_machine(device):
    """What a reader needs to compare these figures with others: hardware, software, load, date."""
    description = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": load_average(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.device(device).type == "cuda":
        description["gpu_name"] = torch.cuda.get_device_name(device)
        description["cuda_runtime"] = torch.version.cuda
    return description



def machine_header(machine):
    """The line every timing table starts with: the machine, threads, torch and date, all read from
    describe_machine()."""
    hardware = machine.get("gpu_name") or machine["cpu_model"]
    return (f"{hardware} ({machine['device']}), {machine['torch_threads']} threads of {machine['cpus_usable']} "
            f"usable CPUs, torch {machine['torch']}, {machine['date_utc'][:10]}, "
            f"1-min load average {machine['load_average_1min']}")

def _measure(timer, min_run_time, min_samples, seconds_per_call):
    """A Measurement of at least min_samples samples (see time_callable)."""
    if seconds_per_call is not None and seconds_per_call * min_samples >= min_run_time:
        samples = [timer.timeit(1) for _ in range(min_samples)]
    else:
        samples = [timer.blocked_autorange(min_run_time=min_run_time)]
    calls_per_sample = samples[0].number_per_run
    while sum(len(sample.times) for sample in samples) < min_samples:
        samples.append(timer.timeit(calls_per_sample))
    return benchmark.Measurement.merge(samples)[0]  # times stay per call


def _summary(measurement):
    return {"median_s": measurement.median, "iqr_s": measurement.iqr, "samples": len(measurement.times),
            "times_s": list(measurement.times)}


def _timer(fn):
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())


def time_callable(fn, min_run_time, min_samples=3, seconds_per_call=None):
    """Median and inter-quartile range (seconds) of fn(), from at least min_samples samples.

    Fast functions: blocked_autorange picks how many calls make one sample (warming up on the way)
    and samples for min_run_time. Slow functions, whose caller has just warmed them up and measured
    one call (seconds_per_call) at over min_run_time / min_samples: one call per sample,
    min_samples of them, which saves the block-size estimate (one more slow call).
    """
    return _summary(_measure(_timer(fn), min_run_time, min_samples, seconds_per_call))


def time_interleaved(functions, min_run_time, min_samples=3):
    """time_callable for several functions ({name: (fn, seconds_per_call)}), measured in
    min_samples alternating rounds, so that a machine whose load drifts (a shared one) slows them
    all alike and their ratios stay meaningful. Returns {name: timing}."""
    timers = {name: _timer(fn) for name, (fn, _) in functions.items()}
    rounds = {name: [] for name in functions}
    for _ in range(min_samples):
        for name, (_, seconds_per_call) in functions.items():
            rounds[name].append(_measure(timers[name], min_run_time / min_samples, 1, seconds_per_call))
    return {name: _summary(benchmark.Measurement.merge(measurements)[0]) for name, measurements in rounds.items()}


def format_table(rows, columns):
    """An aligned text table. columns: (header, key, format spec) triples; missing values print '-'."""
    cells = [[header for header, _, _ in columns]]
    for row in rows:
        cells.append([format(row[key], spec) if row.get(key) is not None else "-" for _, key, spec in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_json(path, payload):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as file:
        json.dump(payload, file, indent=2, sort_keys=False)
        file.write("\n")


def median_iqr_ms(row, prefix, digits):
    """The table cell "median (IQR)" in ms of the timing stored as row[prefix_median_s], row[prefix_iqr_s]."""
    return f"{1e3 * row[f'{prefix}_median_s']:.{digits}f} ({1e3 * row[f'{prefix}_iqr_s']:.{digits}f})"


def run_conditions(machine):
    """How busy the machine was and how long the run took, from describe_machine's dict plus
    "load_average_1min_at_end" and "benchmark_seconds"."""
    return (f"1-min load average {machine['load_average_1min']} at the start, {machine['load_average_1min_at_end']} "
            f"at the end; the run took {machine['benchmark_seconds']:.0f} s")


@contextlib.contextmanager
def native_stderr_silenced():
    """Sends what C++ code writes to the process's stderr (file descriptor 2) to /dev/null for the
    block: torch's profiler logs "profiler_start/stop" and device-query lines there on every run,
    bypassing Python's logging. Python's own sys.stderr is flushed first and keeps working after."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)



def use_reference(model, flag):
    """Sets `use_reference` on every `detrx.nn.MSDeformAttn` of `model`: True runs the grid_sample
    reference, False detrx's compiled op."""
    from detrx.nn import MSDeformAttn

    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.use_reference = flag


def markdown_table(rows, columns):
    """format_table's table as GitHub markdown; columns whose cells all start with a digit (or are
    missing) are right-aligned."""
    cells = [[format(row[key], spec) if row.get(key) is not None else "-" for _, key, spec in columns]
             for row in rows]
    numeric = [all(line[i][:1].isdigit() or line[i] == "-" for line in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(header for header, _, _ in columns) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines)
