"""CPU deployment of DETR-family detectors: eager PyTorch, onnxruntime and OpenVINO, each with the
grid_sample path that HF's and RT-DETR's own code and exports use, and with detrx's MSDA, in one
process.

    python benchmarks/deploy.py [--threads 1,2] [--cases ...] [--json PATH] [--quick]   (--device cpu --dtype float32)

Columns, per case and thread count (batch 1, float32, random weights):
  eager grid_sample | eager detrx | ort GridSample | ort detrx | OV GridSample | OV detrx op
"ort GridSample" and "OV GridSample" run the file torch.onnx writes for the model as it is (MSDA as
grid_sample, so ONNX GridSample); "ort detrx" runs detrx's standard-operator export; "OV detrx op"
runs detrx's runtime-op export with detrx's OpenVINO extension (benchmarks/deploy_runtimes.py).
HF models take detrx's op through `detrx_hf.patch()`; detrx's model through its own op or
`use_reference`. Every implementation of a case is timed alternately with the others
(common.time_interleaved, at least 5 rounds; see measure()); the table gives median ms and, last,
the largest |difference| of any runtime's outputs against eager detrx (the JSON has each column's).

Cases: "op encoder" and "op decoder" (MSDA alone at the standard 800x1333 shapes, encoder N = 1,
decoder N = 2, Lq = 300, realistic locations); "hf_deformable_detr" (R50, 800x1333 and 512x683);
"rt_detr" (R50, 640x640); "detrx_deformable_detr" (d_model 256, 4 levels, 800x1333).
With random weights RT-DETR's query selection is a top-k over nearly tied scores, which a runtime
may break differently from eager PyTorch: its difference column then shows reordered queries (0.75
for the tiny --quick model, GridSample and detrx files alike), not an error in MSDA.
Targets on the 2-core CPU: OV detrx op within 1.3x of eager detrx on the op alone; OV detrx op
>= 1.5x faster than OV GridSample on HF Deformable DETR end to end; ort detrx no slower than ort
GridSample on every model.
"""
import argparse
import statistics
import os
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from deploy_cases import CASES, build_case  # noqa: E402
from deploy_runtimes import export_files, runtime_columns  # noqa: E402
from common import (add_common_options, apply_common_options, describe_machine, format_table,  # noqa: E402
                    machine_header, time_interleaved, write_json)

COLUMNS = ("eager_gridsample", "eager_detrx", "ort_gridsample", "ort_detrx", "ov_gridsample", "ov_detrx_op")
RATIOS = {  # name: (numerator, denominator)
    "OV op / eager detrx": ("ov_detrx_op", "eager_detrx"),
    "OV GridSample / OV op": ("ov_gridsample", "ov_detrx_op"),
    "ort GridSample / ort detrx": ("ort_gridsample", "ort_detrx"),
}


def max_difference(got, expected):
    as_list = lambda outputs: outputs if isinstance(outputs, (list, tuple)) else [outputs]  # noqa: E731
    return max(float((torch.as_tensor(g) - e).abs().max()) for g, e in zip(as_list(got), as_list(expected)))


def merge(timings):
    """One timing per column from the phases that measured it: the median over all their calls."""
    merged = {}
    for phase in timings:
        for column, timing in phase.items():
            merged.setdefault(column, []).extend(timing["times_s"])
    return {column: statistics.median(times) for column, times in merged.items()}


def measure(case, threads, min_run_time, work_dir):
    """One row: each column's median ms at `threads` threads, the ratios, and each runtime's largest
    |difference| from eager detrx (eager grid_sample's too). Two phases, one per path (switching HF's
    drop-in on and off costs more than a call): eager grid_sample or eager detrx, each alternated with
    the four runtime columns, whose times merge over both phases."""
    if case.paths is None:
        case.paths, case.export_s = export_files(case.module, case.inputs, work_dir, case.name,
                                                 case.grid_sample_path, case.detrx_path)
    torch.set_num_threads(threads)
    runtimes = {column: (lambda fn=fn: fn(*case.inputs)) for column, fn in runtime_columns(case.paths, threads).items()}
    eager = lambda: case.module(*case.inputs)  # noqa: E731
    with torch.no_grad(), case.detrx_path():
        expected = eager()
    phases, differences = [], {}
    for eager_column, path in (("eager_gridsample", case.grid_sample_path), ("eager_detrx", case.detrx_path)):
        with torch.no_grad(), path():
            functions = {}
            for column, fn in {eager_column: eager, **runtimes}.items():
                start = time.perf_counter()
                differences[column] = max_difference(fn(), expected)  # also the warm-up
                functions[column] = (fn, time.perf_counter() - start)
            phases.append(time_interleaved(functions, min_run_time, min_samples=5))
    medians = merge(phases)
    row = {"case": case.label, "threads": threads, "export_s": case.export_s, "max_abs_difference": differences,
           "worst_runtime_difference": max(d for column, d in differences.items() if not column.startswith("eager"))}
    for column in COLUMNS:
        row[f"{column}_ms"] = medians[column] * 1e3 if column in medians else float("nan")
    for name, (numerator, denominator) in RATIOS.items():
        row[name] = row[f"{numerator}_ms"] / row[f"{denominator}_ms"]
    return row


TABLE = ([("case", "case", ""), ("thr", "threads", "")]
         + [(column.replace("_", " ") + " ms", f"{column}_ms", ".1f") for column in COLUMNS]
         + [(name, name, ".2f") for name in RATIOS] + [("runtimes max|diff|", "worst_runtime_difference", ".1e")])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {list(CASES)}")
    parser.add_argument("--min-run-time", type=float, default=3.0, help="seconds per implementation and row")
    add_common_options(parser, quick="tiny models and sizes, short timings", devices=("cpu",),
                       narrowed_because="onnxruntime and OpenVINO run float32 on the CPU here",
                       threads="torch's, onnxruntime's and OpenVINO's", default_threads="1,2", thread_list=True,
                       json_default=os.path.join(HERE, "results", "deploy_cpu.json"))
    opts = parser.parse_args(argv)
    apply_common_options(parser, opts)
    names = opts.cases.split(",")
    if any(name not in CASES for name in names):
        parser.error(f"--cases must be a comma list of {list(CASES)}, got {opts.cases!r}")
    if opts.quick:
        opts.min_run_time = 0.2
    machine, start, rows = describe_machine("cpu"), time.time(), []
    print(machine_header(machine), flush=True)
    with tempfile.TemporaryDirectory() as work_dir:
        for name in names:
            for case in build_case(name, opts.quick):
                for threads in opts.threads:
                    rows.append(measure(case, threads, opts.min_run_time, work_dir))
                    print(format_table(rows[-1:], TABLE), flush=True)
    import onnxruntime
    import openvino

    print(f"\nCPU deployment on {machine['cpu_model']}, torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}, OpenVINO {openvino.__version__.split('-')[0]}, {machine['date_utc']}; "
          f"batch 1, float32, median ms")
    print(format_table(rows, TABLE))
    machine["load_average_1min_end"] = describe_machine("cpu")["load_average_1min"]
    write_json(opts.json, {"machine": machine, "onnxruntime": onnxruntime.__version__,
                           "openvino": openvino.__version__, "quick": opts.quick, "wall_s": time.time() - start,
                           "rows": rows})
    print(f"load average {machine['load_average_1min']} at the start, {machine['load_average_1min_end']} at the "
          f"end; {time.time() - start:.0f} s; JSON: {opts.json}")


if __name__ == "__main__":
    main()
