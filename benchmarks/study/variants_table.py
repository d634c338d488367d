"""The measured columns of the DETR variants table: parameters and CPU eval latency of each detector,
built with random weights at its published size, with its own MSDA and with detrx's op, in one
process on one machine.

    python benchmarks/study/variants_table.py [--size 640] [--threads 2] [--repeats 10] [--quick]
                                              [--only TEXT] [--out PREFIX]

Every figure is an eval forward of one image of --size x --size (batch 1, float32, no_grad), the
median and inter-quartile range of --repeats calls after one warm-up call per path; the two paths
of a model alternate call by call (benchmarks/common.time_interleaved), so load that drifts on a
shared machine slows both alike. The paths:
- own: the library's own MSDA. HF transformers and rfdetr: their grid_sample code; detrx's
  Deformable DETR: its grid_sample reference (`MSDeformAttn(use_reference=True)` on every module).
  DETR and DN-DETR have no MSDA: one path, one figure.
- detrx: the compiled op (`detrx.integrations.transformers` / `.rfdetr` patched in for HF and
  rfdetr models; `use_reference=False` for detrx's).
"max rel diff" is the largest |own - detrx| / max |own| over the output tensors of the warm-up calls.

Writes PREFIX.json and PREFIX.md (default benchmarks/study/results/variants_table_cpu; with --quick
nothing unless --out is given). Nothing is downloaded: detrx's ResNet-50 gets random torchvision
weights through a temporary file, HF and rfdetr models are built from their configs.
"""
import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch

STUDY = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(STUDY)))  # detrx itself
sys.path.insert(0, os.path.dirname(STUDY))  # benchmarks/: common, models

from common import (describe_machine, format_table, load_average, markdown_table, median_iqr_ms,  # noqa: E402
                    run_conditions, time_interleaved, use_reference, write_json)
from models import build_rt_detr, max_relative_difference, patch_module, step_functions  # noqa: E402

NUM_CLASSES = 80


@dataclass(frozen=True)
class Variant:
    """One table row: how to build the detector (size -> nn.Module) and which library runs it."""

    model: str
    source: str  # "detrx", "HF" or "rfdetr"
    config: str
    build: Callable
    msda: bool = True


def random_resnet50_weights(folder):
    """A state_dict file of a randomly initialised torchvision ResNet-50 (what --backbone-weights reads)."""
    import torchvision

    path = os.path.join(folder, "resnet50_random.pth")
    if not os.path.exists(path):
        torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def detrx_builder(model, options):
    """A builder of detrx's `model` with ResNet-50 and the `detrx.train` options given."""
    def build(size):
        from detrx.engine.config import parse_args
        from detrx.models import build_model

        with tempfile.TemporaryDirectory() as folder:
            args = parse_args(["--model", model, "--backbone", "resnet50",
                               "--backbone-weights", random_resnet50_weights(folder),
                               "--output-dir", folder, *options])
            return build_model(args, NUM_CLASSES)[0]
    return build


def build_d_fine(size):
    import transformers
    # The default config: HGNetV2-B4 backbone, hidden 256, 6 decoder layers, 300 queries (D-FINE-L's size).
    return transformers.DFineForObjectDetection(transformers.DFineConfig(num_labels=NUM_CLASSES))


def build_lw_detr(size):
    import transformers
    # LW-DETR small: ViT (192 wide, 10 layers, windowed), one projector level (P4), 3 decoder layers, 300 queries.
    return transformers.LwDetrForObjectDetection(
        transformers.LwDetrConfig(projector_scale_factors=[1.0], num_labels=NUM_CLASSES))


def build_rf_detr_nano(size):
    from rfdetr.config import RFDETRNanoConfig
    from rfdetr.models.lwdetr import build_model_from_config
    # Nano (DINOv2-S windowed, patch 16, P4, 2 decoder layers, 300 queries) at the table's resolution.
    return build_model_from_config(RFDETRNanoConfig(pretrain_weights=None, device="cpu", resolution=size))


DETR_OPTIONS = ["--d-model", "256", "--nheads", "8", "--enc-layers", "6", "--dec-layers", "6",
                "--dim-feedforward", "2048", "--num-queries", "100"]
DEFORMABLE_OPTIONS = ["--d-model", "256", "--nheads", "8", "--enc-layers", "6", "--dec-layers", "6",
                      "--dim-feedforward", "1024", "--num-queries", "300", "--num-feature-levels", "4",
                      "--n-points", "4"]
DINO_OPTIONS = ["--d-model", "256", "--nheads", "8", "--enc-layers", "6", "--dec-layers", "6",
                "--dim-feedforward", "2048", "--num-queries", "900", "--num-feature-levels", "4", "--n-points", "4"]

VARIANTS = [
    Variant("DETR", "detrx", "R50, 100 queries, 6+6 layers, FFN 2048", detrx_builder("detr", DETR_OPTIONS),
            msda=False),
    Variant("DN-DETR", "detrx", "R50, 100 queries, 6+6 layers, FFN 2048, 5 DN groups",
            detrx_builder("dn_detr", DETR_OPTIONS), msda=False),
    Variant("Deformable DETR", "detrx", "R50, 4 levels x 4 points, 300 queries, 6+6 layers, FFN 1024, box refine",
            detrx_builder("deformable_detr", DEFORMABLE_OPTIONS)),
    Variant("Deformable DETR two-stage", "detrx", "as above + two-stage queries",
            detrx_builder("deformable_detr", DEFORMABLE_OPTIONS + ["--two-stage"])),
    Variant("DINO", "detrx", "R50, 4 levels x 4 points, 900 queries, 6+6 layers, FFN 2048, mixed query selection",
            detrx_builder("dino", DINO_OPTIONS)),
    Variant("RT-DETR", "HF", "R50-vd, hybrid encoder, 300 queries, 6 decoder layers", lambda size: build_rt_detr()),
    Variant("D-FINE", "HF", "HGNetV2-B4 (D-FINE-L size), 300 queries, 6 decoder layers", build_d_fine),
    Variant("LW-DETR small", "HF", "ViT-192 x 10 layers, P4, 300 queries, 3 decoder layers", build_lw_detr),
    Variant("RF-DETR Nano", "rfdetr", "DINOv2-S windowed, P4, 300 queries, 2 decoder layers", build_rf_detr_nano),
]

INTEGRATION = {"HF": "transformers", "rfdetr": "rfdetr"}


def count_parameters(model):
    return sum(parameter.numel() for parameter in model.parameters())


def detrx_paths(model, pixels):
    """(own path, detrx path) of a detrx model: the grid_sample reference and the compiled op."""
    mask = torch.zeros(pixels.shape[0], *pixels.shape[2:], dtype=torch.bool)  # [B, H, W], no padding

    def run(reference):
        use_reference(model, reference)
        with torch.no_grad():
            return model(pixels, mask)

    return (lambda: run(True)), (lambda: run(False))


def build_and_paths(variant, size, pixels):
    """The model (eval mode) and its (own path, detrx path) callables; detrx path None without MSDA."""
    torch.manual_seed(0)
    if variant.source == "detrx":
        model = variant.build(size).eval()
        own, detrx = detrx_paths(model, pixels)
        return model, own, (detrx if variant.msda else None)
    integration = patch_module(INTEGRATION[variant.source])
    # Built while patched: D-FINE's layers keep the MSDA function they were built with, and the
    # patched one runs HF's own code whenever the patch is off.
    with integration.patched():
        model = variant.build(size).eval()
    kind = "rfdetr" if variant.source == "rfdetr" else "detection"
    own, detrx = step_functions(model, kind, "eval", pixels, {}, integration)
    return model, own, detrx


def measure(variant, size, repeats):
    """One table row for `variant`: parameters, the two paths' timings and their output difference."""
    pixels = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))  # [1, 3, H, W]
    model, own, detrx = build_and_paths(variant, size, pixels)
    paths = {"own": own} if detrx is None else {"own": own, "detrx": detrx}
    warm, outputs = {}, {}
    for name, step in paths.items():
        start = time.perf_counter()
        outputs[name] = step()  # warm-up, and the seconds a call takes
        warm[name] = time.perf_counter() - start
    timings = time_interleaved({name: (step, warm[name]) for name, step in paths.items()},
                               min_run_time=1e-3 * repeats, min_samples=repeats)
    row = {"model": variant.model, "source": variant.source, "config": variant.config,
           "image": f"{size}x{size}", "params_m": count_parameters(model) / 1e6, "repeats": repeats,
           "timings": timings}
    for name, timing in timings.items():
        row[f"{name}_median_s"], row[f"{name}_iqr_s"] = timing["median_s"], timing["iqr_s"]
        row[f"{name}_ms"] = median_iqr_ms(row, name, 0 if timing["median_s"] >= 0.1 else 1)
    if detrx is not None:
        row["ratio"] = row["own_median_s"] / row["detrx_median_s"]
        row["max_rel_diff"] = max_relative_difference(outputs["detrx"], outputs["own"])
    return row


COLUMNS = [("model", "model", "s"), ("source", "source", "s"), ("config", "config", "s"),
           ("params M", "params_m", ".1f"), ("eval ms, own MSDA (IQR)", "own_ms", "s"),
           ("eval ms, detrx op (IQR)", "detrx_ms", "s"), ("own / detrx", "ratio", ".2f"),
           ("max rel diff", "max_rel_diff", ".0e")]


def describe_run(machine, size, repeats):
    return (f"CPU eval forward at {size}x{size}, batch 1, float32, random weights, {machine['cpu_model']}, "
            f"{machine['torch_threads']} threads, torch {machine['torch']}, {machine['date_utc']}; median "
            f"(inter-quartile range) of {repeats} call{'s' if repeats > 1 else ''} a path after one warm-up call, "
            f"the two paths alternated; {run_conditions(machine)}. Own MSDA: HF's and rfdetr's grid_sample code, "
            f"detrx's grid_sample reference for its Deformable DETR; DETR and DN-DETR have no MSDA, their one "
            f"figure is in that column.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=None, help="square image side (default 640; --quick 320)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls a path (default 10; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 320x320, 1 timed call a path")
    parser.add_argument("--only", default=None, help="run only the models whose name contains this text")
    parser.add_argument("--out", default=None, help="write PREFIX.json and PREFIX.md "
                        "(default benchmarks/study/results/variants_table_cpu; --quick: no files)")
    args = parser.parse_args(argv)
    size = args.size if args.size is not None else (320 if args.quick else 640)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 10)
    if size < 64 or size % 64:
        parser.error(f"--size must be a positive multiple of 64 (the ViT backbones' window grid), got {size}")
    if repeats < 1:
        parser.error(f"--repeats must be >= 1, got {repeats}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    variants = [v for v in VARIANTS if args.only is None or args.only.lower() in v.model.lower()]
    if not variants:
        parser.error(f"--only {args.only!r} matches none of {[v.model for v in VARIANTS]}")
    out = args.out or (None if args.quick else os.path.join(STUDY, "results", "variants_table_cpu"))
    import transformers  # noqa: F401  (the extras `detrx[transformers,rfdetr]`; fail early if missing)
    import rfdetr  # noqa: F401

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    machine = describe_machine("cpu")
    rows = []
    for variant in variants:
        rows.append(measure(variant, size, repeats))
        print(format_table(rows[-1:], COLUMNS), flush=True)
    machine["load_average_1min_at_end"] = load_average()
    machine["benchmark_seconds"] = time.perf_counter() - started
    summary = describe_run(machine, size, repeats)
    print(f"\n{summary}\n{format_table(rows, COLUMNS)}")
    if out:
        write_json(f"{out}.json", {"machine": machine, "image_size": size, "repeats": repeats, "rows": rows})
        with open(f"{out}.md", "w") as file:
            file.write(f"{summary}\n\n{markdown_table(rows, COLUMNS)}\n")


if __name__ == "__main__":
    main()
