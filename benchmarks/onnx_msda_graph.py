"""onnxruntime on detrx's standard-operator MSDA graph, against another version of that graph and
against the GridSample graph, at the standard 800x1333 shapes, in one process.

    python benchmarks/onnx_msda_graph.py [--baseline REV] [--threads 1] [--json PATH] [--quick]

Cases: the op alone, "encoder N=1" (Lq = S = 22,223) and "decoder N=2 Lq=300" (realistic
locations, benchmarks/attn_inputs.py), each exported at its fixed size. Columns, median ms of
onnxruntime (CPU execution provider, `--threads` intra-op threads):
  standard: this tree's `detrx/onnx/ms_deform_attn.py`;
  baseline: the same file at git revision `--baseline` (default HEAD~1), loaded from `git show`;
  GridSample: the op written with torch.nn.functional.grid_sample (detrx's reference, as HF's code
  does), which torch.onnx writes as ONNX GridSample.
The three sessions are timed alternately (common.time_interleaved), so that a load that drifts
slows them alike: compare the ratios, "standard / baseline" and "standard / GridSample" (time over
time, < 1 is faster), not the ms of different runs. Last column: the largest |difference| of the
standard graph's output from detrx's op.
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from attn_inputs import CASES as OP_SHAPES, make_inputs  # noqa: E402
from common import describe_machine, format_table, time_interleaved, write_json  # noqa: E402
from deploy_cases import MSDA  # noqa: E402
from deploy_runtimes import export as export_file, onnxruntime_runner  # noqa: E402

TRANSLATION = "detrx/onnx/ms_deform_attn.py"
SHAPES = ("encoder N=1", "decoder N=2 Lq=300")


def baseline_translation(revision):
    """The standard-operator translation function of TRANSLATION at a git revision."""
    source = subprocess.run(["git", "show", f"{revision}:{TRANSLATION}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "ms_deform_attn_baseline.py")
    with open(path, "w") as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location("ms_deform_attn_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ms_deform_attn_onnx


def export_with(translation, module, inputs, path):
    import detrx.onnx

    table = {torch.ops.detrx.ms_deform_attn.default: translation}
    detrx.onnx.export(module, inputs, path, custom_translation_table=table, verbose=False)


def measure(shape_name, baseline, threads, min_run_time, rounds, work_dir):
    shapes = next(shape for shape in OP_SHAPES if shape.name == shape_name)
    inputs = tuple(make_inputs(shapes, "realistic", torch.float32, "cpu")[0][:5])
    module = MSDA(inputs[1].tolist()).eval()
    paths = {"standard": os.path.join(work_dir, "standard.onnx"), "gridsample": os.path.join(work_dir, "grid.onnx")}
    export_file(module, inputs, paths["standard"], "standard")
    module.reference = True
    export_file(module, inputs, paths["gridsample"], "gridsample")
    module.reference = False
    if baseline is not None:
        paths["baseline"] = os.path.join(work_dir, "baseline.onnx")
        export_with(baseline, module, inputs, paths["baseline"])
    with torch.no_grad():
        expected = module(*inputs)
    functions, differences = {}, {}
    for name, path in paths.items():
        run = onnxruntime_runner(path, threads)
        start = time.perf_counter()
        (got,) = run(*inputs)  # also the warm-up
        functions[name] = (lambda run=run: run(*inputs), time.perf_counter() - start)
        differences[name] = float((torch.as_tensor(got) - expected).abs().max())
    timings = time_interleaved(functions, min_run_time, min_samples=rounds)
    row = {"case": shape_name, "threads": threads, "max_abs_difference": differences,
           "standard_difference": differences["standard"]}
    for name, timing in timings.items():
        row[f"{name}_ms"] = timing["median_s"] * 1e3
        row[f"{name}_times_s"] = timing["times_s"]
    row["standard / GridSample"] = row["standard_ms"] / row["gridsample_ms"]
    if baseline is not None:
        row["standard / baseline"] = row["standard_ms"] / row["baseline_ms"]
    return row


TABLE = [("case", "case", ""), ("thr", "threads", ""), ("standard ms", "standard_ms", ".1f"),
         ("baseline ms", "baseline_ms", ".1f"), ("GridSample ms", "gridsample_ms", ".1f"),
         ("standard / baseline", "standard / baseline", ".3f"),
         ("standard / GridSample", "standard / GridSample", ".3f"),
         ("max|diff|", "standard_difference", ".1e")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD~1", help="git revision of the baseline graph ('' for none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default=",".join(SHAPES), help=f"comma list of {list(SHAPES)}")
    parser.add_argument("--min-run-time", type=float, default=6.0, help="seconds per graph and case")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1.5 s per graph (a smoke run)")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "onnx_msda_graph.json"))
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.min_run_time, opts.rounds = 1.5, 3
    names = opts.cases.split(",")
    if any(name not in SHAPES for name in names):
        parser.error(f"--cases must be a comma list of {list(SHAPES)}, got {opts.cases!r}")
    torch.set_num_threads(opts.threads)
    baseline = baseline_translation(opts.baseline) if opts.baseline else None
    machine, start, rows = describe_machine("cpu"), time.time(), []
    with tempfile.TemporaryDirectory() as work_dir:
        for name in names:
            rows.append(measure(name, baseline, opts.threads, opts.min_run_time, opts.rounds, work_dir))
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__} on {machine['cpu_model']}, {opts.threads} thread(s), baseline "
          f"{opts.baseline or '-'}; median ms, ratios are time over time")
    print(format_table(rows, TABLE))
    machine["load_average_1min_end"] = describe_machine("cpu")["load_average_1min"]
    write_json(opts.json, {"machine": machine, "onnxruntime": onnxruntime.__version__, "baseline": opts.baseline,
                           "quick": opts.quick, "wall_s": time.time() - start, "rows": rows})
    print(f"load average {machine['load_average_1min']} at the start, {machine['load_average_1min_end']} at the "
          f"end; {time.time() - start:.0f} s; JSON: {opts.json}")


if __name__ == "__main__":
    main()
