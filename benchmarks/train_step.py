"""Times a Deformable DETR training step (forward, losses, backward, AdamW step) with the compiled
MSDA op and with its grid_sample reference, in one process.

    python benchmarks/train_step.py [--device cpu|cuda] [--threads N] [--quick] [--json PATH]

Two models on synthetic shapes: the convergence study's (study/config.py: d_model 64, 3 levels,
64 x 64 images, batch 8) and a paper-width one (d_model 256, 8 heads, 4 levels, 4 points, 128 x 128
images, batch 2), where MSDA is a larger part of the step. The two variants of each model are timed
in alternating rounds (common.py); the rest of the step (backbone, linear layers, losses) is the
same in both. One thread by default, as in the study's runs. On CUDA the step is not bound by MSDA
at these sizes.
"""
import argparse
import time

import torch

from common import (add_common_options, apply_common_options, describe_machine, format_table, load_average,
                    machine_header, median_iqr_ms, run_conditions, time_interleaved, write_json)
from study.config import STUDY_CONFIG
from detrx import build_info
from detrx.data import build_dataset, collate_fn
from detrx.engine.config import parse_args
from detrx.engine.loop import to_device
from detrx.models import build_model
from detrx.nn import MSDeformAttn

PAPER_WIDTH_CONFIG = [
    "--image-size", "128", "--num-train", "8", "--backbone-widths", "32,64,128,256", "--backbone-blocks", "1,1,1,1",
    "--d-model", "256", "--nheads", "8", "--enc-layers", "2", "--dec-layers", "2", "--dim-feedforward", "512",
    "--num-queries", "100", "--num-feature-levels", "4", "--n-points", "4", "--batch-size", "2"]
MODELS = {"study model": STUDY_CONFIG, "paper width": PAPER_WIDTH_CONFIG}


def training_step(config, use_reference, device):
    """A callable that runs one training step of a Deformable DETR built from `config` (CLI options)
    on a fixed batch on `device`, its MSDA modules on the compiled op or on the reference."""
    args = parse_args(["--model", "deformable_detr", *config])
    torch.manual_seed(0)
    dataset = build_dataset("train", args)
    model, criterion, _ = build_model(args)
    model.to(device)
    criterion.to(device)
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.use_reference = use_reference
    images, mask, targets = to_device(*collate_fn([dataset[i] for i in range(args.batch_size)]), device)
    optimizer = torch.optim.AdamW(model.parameters(), args.lr)

    def step():
        total = criterion.total(criterion(model(images, mask, targets), targets))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    return step, args.batch_size


def measure(name, config, device, budget):
    """Both variants of one model -> a row (median and IQR per step, reference / compiled)."""
    functions, batch_size = {}, None
    for variant, use_reference in (("compiled", False), ("reference", True)):
        step, batch_size = training_step(config, use_reference, device)
        step()  # warm-up
        start = time.perf_counter()
        step()
        functions[variant] = (step, time.perf_counter() - start)
    row = {"model": name, "batch_size": batch_size}
    for variant, timing in time_interleaved(functions, **budget).items():
        row.update({f"{variant}_{key}": value for key, value in timing.items() if key != "times_s"})
    row["reference_over_compiled"] = row["reference_median_s"] / row["compiled_median_s"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser, quick="fewer steps", narrowed_because="a half-precision training step needs autocast and loss scaling, not a cast",
                       default_threads=1)
    args = parser.parse_args()
    device, _ = apply_common_options(parser, args)
    budget = {"min_run_time": 1.0, "min_samples": 3} if args.quick else {"min_run_time": 6.0, "min_samples": 10}
    machine = describe_machine(device)
    print(machine_header(machine), flush=True)
    machine["compiled_op"] = build_info()["compiled"]
    start = time.perf_counter()
    rows = [measure(name, config, device, budget) for name, config in MODELS.items()]
    machine["load_average_1min_at_end"] = load_average()
    machine["benchmark_seconds"] = time.perf_counter() - start
    display = [dict(row) for row in rows]
    for row in display:
        for variant in ("compiled", "reference"):
            row[f"{variant}_ms"] = median_iqr_ms(row, variant, 0)
    print(f"\nDeformable DETR training step on {device} ({machine.get('gpu_name', machine['cpu_model'])}, "
          f"{machine['torch_threads']} threads): "
          f"MSDA compiled vs grid_sample reference\ntimes: median (IQR) in ms per step\n{run_conditions(machine)}\n")
    print(format_table(display, [
        ("model", "model", ""), ("batch", "batch_size", "d"), ("compiled ms (IQR)", "compiled_ms", ""),
        ("reference ms (IQR)", "reference_ms", ""), ("reference / compiled", "reference_over_compiled", ".2f"),
    ]))
    if args.json:
        write_json(args.json, {"machine": machine, "budget": budget, "rows": rows})


if __name__ == "__main__":
    main()
