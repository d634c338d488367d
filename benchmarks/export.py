"""CPU inference latency of Deformable DETR: eager PyTorch with detrx's compiled MSDA op, eager
with the grid_sample reference, and the ONNX export (`detrx.onnx`, MSDA in standard ONNX ops) in
onnxruntime, in one process.

    python benchmarks/export.py [--sizes 512x512,800x1333] [--threads N] [--json PATH] [--quick]
                                (--device cpu --dtype float32)

Models (random weights, the paper's MSDA initialisation, eval mode, batch 1):
- "study": the convergence study's Deformable DETR (benchmarks/study/config.py STUDY_CONFIG: d_model 64,
  4 heads, 3 levels, 1 encoder and 3 decoder layers, 8 queries);
- "d256": a paper-width one (train_step.py PAPER_WIDTH_CONFIG: d_model 256, 8 heads, 4 levels, 4 points,
  2 encoder and 2 decoder layers, 100 queries).
Each model is exported once with dynamic batch/height/width and run at every size. Timings
alternate between the three implementations (benchmarks/common.time_interleaved); the table gives
the median ms per image and the inter-quartile range, and the largest |difference| of
onnxruntime's logits and boxes against eager (compiled op).

The op alone is timed the same way at DESIGN.md's standard shapes (800x1333 levels, M = 8, D = 32,
P = 4, realistic locations): the encoder with N = 1 and the decoder with N = 2, Lq = 300.
"""
import argparse
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from attn_inputs import CASES, make_inputs  # noqa: E402
from common import (add_common_options, apply_common_options, describe_machine, format_table,  # noqa: E402
                    machine_header, time_interleaved, use_reference, write_json)
from study.config import STUDY_CONFIG  # noqa: E402
from train_step import PAPER_WIDTH_CONFIG  # noqa: E402

from detrx.engine.config import parse_args  # noqa: E402
from detrx.models import build_model  # noqa: E402
from detrx.ops import ms_deform_attn, ms_deform_attn_reference  # noqa: E402

MODELS = {"study": STUDY_CONFIG, "d256": STUDY_CONFIG + PAPER_WIDTH_CONFIG}  # later options win
EXPORT_SIZE = (256, 256)  # every level at least 2 x 2, so no axis is fixed to 1


def build(config):
    torch.manual_seed(0)
    model, _, _ = build_model(parse_args(["--model", "deformable_detr", *config]))
    return model.eval()


def export(module, path):
    import detrx.onnx

    dynamic = torch.export.Dim.DYNAMIC
    start = time.perf_counter()
    detrx.onnx.export(module, (torch.rand(2, 3, *EXPORT_SIZE),), path, input_names=["images"],
                      output_names=module.output_names, verbose=False,
                      dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},))
    return time.perf_counter() - start


def ort_session(path, threads):
    """An onnxruntime CPU session with `threads` threads that do not spin while idle (spinning
    threads would take the CPU from the eager runs interleaved with it)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OpModule(torch.nn.Module):
    def forward(self, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        return ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def bench_op(case_names, threads, min_run_time, work_dir):
    """The MSDA op alone: compiled, grid_sample reference, onnxruntime (one dynamic export)."""
    import detrx.onnx

    cases = [case for case in CASES if case.name in case_names]
    path = os.path.join(work_dir, "ms_deform_attn.onnx")
    example = make_inputs(cases[-1], "realistic", torch.float32, "cpu")[0][:5]
    batch, queries = torch.export.Dim.DYNAMIC, torch.export.Dim.DYNAMIC
    detrx.onnx.export(OpModule().eval(), example, path, verbose=False, dynamic_shapes=(
        {0: batch}, None, None, {0: batch, 1: queries}, {0: batch, 1: queries}))
    session = ort_session(path, threads)
    rows = []
    for case in cases:
        inputs = make_inputs(case, "realistic", torch.float32, "cpu")[0][:5]
        feeds = {meta.name: tensor.numpy() for meta, tensor in zip(session.get_inputs(), inputs)}
        expected = ms_deform_attn(*inputs)
        difference = float(abs(torch.from_numpy(session.run(None, feeds)[0]) - expected).max())
        functions = {}
        for label, fn in (("eager_detrx", lambda: ms_deform_attn(*inputs)),
                          ("eager_reference", lambda: ms_deform_attn_reference(*inputs)),
                          ("onnxruntime", lambda: session.run(None, feeds))):
            start = time.perf_counter()
            fn()
            functions[label] = (fn, time.perf_counter() - start)
        rows.append(summarize({"model": "MSDA op", "size": case.name, "onnx_vs_eager_max_abs": difference},
                              time_interleaved(functions, min_run_time)))
        print(format_table(rows[-1:], COLUMNS), flush=True)
    return rows


def summarize(row, timings):
    row["timings"] = timings
    for label, timing in timings.items():
        row[f"{label}_ms"] = timing["median_s"] * 1000
        row[f"{label}_iqr_ms"] = timing["iqr_s"] * 1000
    row["onnxruntime_over_detrx"] = row["onnxruntime_ms"] / row["eager_detrx_ms"]
    row["reference_over_detrx"] = row["eager_reference_ms"] / row["eager_detrx_ms"]
    return row


def bench_model(name, config, sizes, threads, min_run_time, work_dir):
    from detrx.onnx.detector import ExportableDetector

    model = build(config)
    module = ExportableDetector(model).eval()
    path = os.path.join(work_dir, f"{name}.onnx")
    export_s = export(module, path)
    session = ort_session(path, threads)
    rows = []
    for height, width in sizes:
        images = torch.rand(1, 3, height, width)
        feeds = {"images": images.numpy()}
        with torch.no_grad():
            use_reference(model, False)
            expected = module(images)
            got = session.run(None, feeds)
            difference = max(float(abs(torch.from_numpy(g) - e).max()) for g, e in zip(got, expected))

            def eager(reference):
                def call():
                    use_reference(model, reference)
                    module(images)
                return call

            functions = {}
            for label, fn in (("eager_detrx", eager(False)), ("eager_reference", eager(True)),
                              ("onnxruntime", lambda: session.run(None, feeds))):
                start = time.perf_counter()
                fn()  # warm-up, and one call's time for time_interleaved
                functions[label] = (fn, time.perf_counter() - start)
            timings = time_interleaved(functions, min_run_time)
            use_reference(model, False)
        rows.append(summarize({"model": name, "size": f"{height}x{width}", "onnx_vs_eager_max_abs": difference,
                               "export_s": export_s}, timings))
        print(format_table(rows[-1:], COLUMNS), flush=True)
    return rows


COLUMNS = [("model", "model", ""), ("image / case", "size", ""),
           ("eager detrx ms", "eager_detrx_ms", ".1f"), ("(IQR)", "eager_detrx_iqr_ms", ".1f"),
           ("eager grid_sample ms", "eager_reference_ms", ".1f"), ("(IQR)", "eager_reference_iqr_ms", ".1f"),
           ("onnxruntime ms", "onnxruntime_ms", ".1f"), ("(IQR)", "onnxruntime_iqr_ms", ".1f"),
           ("ort / detrx", "onnxruntime_over_detrx", ".2f"), ("grid_sample / detrx", "reference_over_detrx", ".2f"),
           ("ort vs eager max|diff|", "onnx_vs_eager_max_abs", ".1e")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512x512,800x1333", help="comma list of HxW")
    parser.add_argument("--models", default="study,d256", help=f"comma list of {sorted(MODELS)}")
    parser.add_argument("--min-run-time", type=float, default=6.0, help="seconds per implementation and case")
    parser.add_argument("--op-cases", default="encoder N=1,decoder N=2 Lq=300",
                        help="comma list of benchmarks/attn_inputs.py cases for the op alone ('' for none)")
    add_common_options(parser, quick="one small size, short timing", devices=("cpu",),
                       narrowed_because="onnxruntime runs the float32 export on the CPU here",
                       threads="torch's and onnxruntime's",
                       json_default=os.path.join(ROOT, "benchmarks", "results", "export_cpu.json"))
    opts = parser.parse_args(argv)
    apply_common_options(parser, opts)
    try:
        sizes = [tuple(int(v) for v in size.split("x")) for size in opts.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be a comma list of HxW, got {opts.sizes!r}")
    models = opts.models.split(",")
    if any(m not in MODELS for m in models):
        parser.error(f"--models must be a comma list of {sorted(MODELS)}, got {opts.models!r}")
    if opts.quick:
        sizes, opts.min_run_time, opts.op_cases = [(256, 320)], 1.0, "decoder N=2 Lq=300"
    threads = torch.get_num_threads()
    machine = describe_machine("cpu")
    print(machine_header(machine), flush=True)
    start = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        if opts.op_cases:
            rows += bench_op(opts.op_cases.split(","), threads, opts.min_run_time, work_dir)
        for name in models:
            rows += bench_model(name, MODELS[name], sizes, threads, opts.min_run_time, work_dir)
    import onnxruntime

    print()
    print(f"Deformable DETR inference and the MSDA op on cpu ({machine['cpu_model']}, {threads} threads), "
          f"float32; models: batch 1, median ms per image (IQR); op: median ms per call (IQR)")
    print(format_table(rows, COLUMNS))
    machine["load_average_1min_end"] = describe_machine("cpu")["load_average_1min"]
    write_json(opts.json, {"machine": machine, "onnxruntime": onnxruntime.__version__, "threads": threads,
                           "quick": opts.quick, "wall_s": time.time() - start,
                           "models": {name: MODELS[name] for name in models}, "export_size": EXPORT_SIZE,
                           "rows": rows})
    print(f"load average {machine['load_average_1min']} at the start, {machine['load_average_1min_end']} "
          f"at the end; {time.time() - start:.0f} s; JSON: {opts.json}")


if __name__ == "__main__":
    main()
