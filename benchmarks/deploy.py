"""CPU deployment latency: each detector (and the MSDA op alone) in eager PyTorch, onnxruntime and
OpenVINO, with MSDA as the runtime's own GridSample path and as detrx's op, in one process.

    python benchmarks/deploy.py [--threads 1,2] [--runs 5] [--json PATH] [--quick]

Columns (median ms per image / per call, alternated round by round, float32, batch 1):
  eager grid_sample  HF's own model (detrx's: its grid_sample reference; the op: HF's MultiScaleDeformableAttention)
  eager detrx        the same model with detrx's op (HF: detrx.integrations.transformers.patch())
  ort GridSample     onnxruntime on the model exported the usual way (torch.onnx, dynamo): GridSample nodes
  ort detrx          onnxruntime on detrx.onnx.export's file (MSDA in standard operators)
  ov GridSample      OpenVINO on the GridSample file
  ov detrx op        OpenVINO on detrx's runtime-op file (`--runtime-op`) with detrx's extension loaded;
                     "n/a" when detrx.openvino (the extension) is not built
Rows: HF Deformable DETR R50 (800x1333, 512x683), HF RT-DETR R50 (640x640), detrx's Deformable DETR
(d_model 256, 2 + 2 layers: benchmarks/export.py "d256"), MSDA alone (DESIGN.md's 800x1333 shapes,
realistic locations; encoder N=1, decoder N=1 Lq=300). Random weights. Files are exported at each
size (fixed-size graphs). OpenVINO runs with INFERENCE_PRECISION_HINT f32 (its CPU default is bf16
where the CPU has it) and the LATENCY hint; onnxruntime with non-spinning threads.
--quick: tiny HF Deformable DETR at 128x128 and the decoder case, 1 thread, 3 runs (a smoke run).
"""
import argparse
import copy
import logging
import os
import sys
import tempfile
import time
import types
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from attn_inputs import CASES, Case, make_inputs  # noqa: E402
from common import describe_machine, format_table, markdown_table, time_interleaved, use_reference, write_json  # noqa: E402
from deploy_runtimes import LABELS, Runtimes  # noqa: E402

import detrx  # noqa: E402
from detrx.ops import ms_deform_attn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OP_CASES = {"encoder N=1": next(case for case in CASES if case.name == "encoder N=1"),
            "decoder N=1 Lq=300": Case("decoder N=1 Lq=300", "decoder", 1, 300)}


class OpModule(torch.nn.Module):
    """MSDA at fixed level sizes, (value, locations, weights) in: detrx's op, or with hf=True HF's own
    pure-PyTorch MultiScaleDeformableAttention (per-level grid_sample, split by the sizes as ints)."""

    def __init__(self, spatial_shapes, level_start_index, hf=False):
        super().__init__()
        self.register_buffer("spatial_shapes", spatial_shapes)  # [L, 2]
        self.register_buffer("level_start_index", level_start_index)  # [L]
        self.shapes_list = [tuple(hw) for hw in spatial_shapes.tolist()]
        self.hf = None
        if hf:
            from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention
            self.hf = MultiScaleDeformableAttention()

    def forward(self, value, sampling_locations, attention_weights):
        if self.hf is not None:
            return self.hf(value, self.spatial_shapes, self.shapes_list, self.level_start_index, sampling_locations,
                           attention_weights, 64)
        return ms_deform_attn(value, self.spatial_shapes, self.level_start_index, sampling_locations,
                              attention_weights, spatial_shapes_list=self.shapes_list)


class HFDetections(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        output = self.model(pixel_values=pixel_values)
        return output.logits, output.pred_boxes


def hf_model(name, quick):
    import transformers

    if quick:  # a tiny ResNet and transformer: a smoke run
        backbone = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                             layer_type="basic", out_features=["stage2", "stage3", "stage4"])
        return transformers.DeformableDetrForObjectDetection(transformers.DeformableDetrConfig(
            backbone_config=backbone, d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32,
            decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10, num_labels=3))
    if name == "deformable_detr":  # ResNet-50 (timm, random weights), 6 + 6 layers, 300 queries
        return transformers.DeformableDetrForObjectDetection(transformers.DeformableDetrConfig(num_labels=80))
    return transformers.RTDetrForObjectDetection(transformers.RTDetrConfig(num_labels=80))  # R50-vd


def hf_own_copy(module):
    """A copy whose MSDA layers keep HF's own forward (bound per layer) while detrx's patch is on,
    so that both eager columns alternate without patching and unpatching between calls."""
    own = copy.deepcopy(module)
    for layer in own.modules():
        if type(layer).__name__ == "MultiScaleDeformableAttention":
            layer.forward = types.MethodType(type(layer).forward, layer)
    return own


def hf_row(runtimes, name, size, quick):
    """Eager (HF, patched), HF's GridSample export, detrx's standard-op and runtime-op exports."""
    from detrx.integrations import transformers as detrx_hf

    torch.manual_seed(0)
    module = HFDetections(hf_model(name, quick)).eval()
    hf_module = hf_own_copy(module)  # before patch(): HF's forward
    images = (torch.rand(1, 3, *size),)
    with detrx_hf.patched(), torch.no_grad():
        files = runtimes.export_detrx(module, images)
        files["gridsample"] = runtimes.export_plain(hf_module, images)
        return runtimes.row(f"HF {name}", "x".join(map(str, size)), lambda: hf_module(*images),
                            lambda: module(*images), files, images)


def detrx_row(runtimes, size, quick):
    from export import MODELS, build
    from detrx.onnx.detector import ExportableDetector

    model = build(MODELS["study" if quick else "d256"])
    module = ExportableDetector(model).eval()
    images = (torch.rand(1, 3, *size),)

    def eager(reference):
        def call():
            use_reference(model, reference)
            with torch.no_grad():
                return module(*images)
        return call

    use_reference(model, False)
    files = runtimes.export_detrx(module, images)
    use_reference(model, True)
    files["gridsample"] = runtimes.export_plain(module, images)
    use_reference(model, False)
    return runtimes.row("detrx Deformable DETR", "x".join(map(str, size)), eager(True), eager(False), files, images)


def op_row(runtimes, case):
    value, shapes, starts, locations, weights = make_inputs(case, "realistic", torch.float32, "cpu")[0][:5]
    inputs = (value, locations, weights)
    detrx_op, hf_op = OpModule(shapes, starts), OpModule(shapes, starts, hf=True)
    files = runtimes.export_detrx(detrx_op, inputs)
    files["gridsample"] = runtimes.export_plain(hf_op, inputs)
    with torch.no_grad():
        return runtimes.row("MSDA op", case.name, lambda: hf_op(*inputs), lambda: detrx_op(*inputs), files, inputs)


COLUMNS = [("model", "model", ""), ("image / case", "size", ""), ("threads", "threads", "d")] + \
          [(LABELS[key], f"{key}_cell", "") for key in LABELS] + \
          [("ort detrx / ort GridSample", "ort_ratio", ".2f"), ("ov detrx op / eager detrx", "ov_ratio", ".2f")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu"], help="CPU only: the runtimes' CPU paths")
    parser.add_argument("--dtype", default="float32", choices=["float32"])
    parser.add_argument("--threads", default="1,2", help="comma list of thread counts (torch, onnxruntime, OpenVINO)")
    parser.add_argument("--runs", type=int, default=5, help="alternating rounds per row (the median is of these)")
    parser.add_argument("--quick", action="store_true", help="tiny models, 1 thread, 3 runs (a smoke run)")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "deploy_cpu.json"))
    opts = parser.parse_args(argv)
    try:
        threads = [int(t) for t in opts.threads.split(",")]
    except ValueError:
        parser.error(f"--threads must be a comma list of integers, got {opts.threads!r}")
    if opts.runs < 1 or any(t < 1 for t in threads):
        parser.error("--runs and --threads must be >= 1")
    if opts.quick:
        threads, opts.runs = [1], 3
    if not detrx.is_compiled():
        parser.error("detrx's compiled extension is not loaded: the eager detrx column needs it")
    logging.getLogger("onnxscript").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    machine = describe_machine("cpu")
    start = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        runtimes = Runtimes(work_dir, threads, opts.runs)
        print(f"# deploy benchmark: {machine['cpu_model']} ({machine['cpus_usable']} usable cores), threads "
              f"{threads}, torch {machine['torch']}, {runtimes.versions()}, {machine['date_utc']}; "
              f"OpenVINO detrx op: {runtimes.extension_status}", flush=True)
        jobs = [lambda: op_row(runtimes, OP_CASES["decoder N=1 Lq=300"])]
        if opts.quick:
            jobs += [lambda: hf_row(runtimes, "deformable_detr", (128, 128), True)]
        else:
            jobs = [lambda: op_row(runtimes, OP_CASES["encoder N=1"])] + jobs + [
                lambda: hf_row(runtimes, "deformable_detr", (800, 1333), False),
                lambda: hf_row(runtimes, "deformable_detr", (512, 683), False),
                lambda: hf_row(runtimes, "rt_detr", (640, 640), False),
                lambda: detrx_row(runtimes, (800, 1333), False)]
        for job in jobs:
            new_rows = job()
            rows += new_rows
            print(format_table(new_rows, COLUMNS), flush=True)
    machine["load_average_1min_at_end"] = describe_machine("cpu")["load_average_1min"]
    print()
    print(markdown_table(rows, COLUMNS))
    print(f"load average {machine['load_average_1min']} at the start, {machine['load_average_1min_at_end']} at the "
          f"end; {time.time() - start:.0f} s")
    write_json(opts.json, {"machine": machine, "versions": runtimes.versions(), "threads": threads, "runs": opts.runs,
                           "quick": opts.quick, "openvino_extension": runtimes.extension_status,
                           "wall_s": time.time() - start, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
