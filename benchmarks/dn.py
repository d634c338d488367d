"""Times the compiled denoising-query op against the DN-DETR/DINO-style loop reference, in one process.

    python benchmarks/dn.py [--device cpu|cuda] [--dtype float32|float16|bfloat16|float64] [--threads N]
                            [--quick] [--json PATH]

Configurations: B in {2, 16, 64} images, max gts in {5, 20, 100} (gt counts uniform in [1, max], one
image at the max), DN-DETR (5 groups, N = 300 matching queries, centre/size noise) and DINO
(dn_number = 100, contrastive, corner noise, N = 900). Like is compared with like: "shared" builds the
queries and the shared [K+N, K+N] mask (the loop's DN-DETR mask), "per-image" also builds the padded
[B, K+N, K+N] mask (the loop then blocks the padded slots image by image). Both get max_gt from the
caller (pad_targets' G). The two implementations are timed in alternating rounds (common.py), so
that load drifts on a shared machine hit both alike; the table gives the median time per call with
its inter-quartile range, and the loop / op ratio of the medians. --dtype is the boxes' dtype.
On CUDA it also runs the op once under torch.cuda.set_sync_debug_mode("error").
On a CPU shared with other work, --threads 1 gives steadier figures (a multi-threaded region
waits for every thread to be scheduled).
"""
import argparse
import time

import torch

from common import (DTYPES, add_common_options, apply_common_options, describe_machine, format_table, load_average,
                    machine_header, median_iqr_ms, run_conditions, time_interleaved, write_json)
from detrx.ops import build_dn_queries, build_dn_queries_reference

MODES = {
    "dn_detr": dict(num_groups=5, num_queries=300, noise_style="dn_detr", contrastive=False),
    "dino": dict(dn_number=100, num_queries=900, noise_style="dino", contrastive=True),
}
NUM_CLASSES = 80


def make_batch(batch, max_gts, device, dtype, generator):
    """gt_labels [B, G], gt_boxes [B, G, 4], gt_counts [B] with G = max_gts and image 0 full."""
    counts = torch.randint(1, max_gts + 1, (batch,), generator=generator)
    counts[0] = max_gts
    labels = torch.randint(0, NUM_CLASSES, (batch, max_gts), generator=generator)
    boxes = torch.cat([0.2 + 0.6 * torch.rand(batch, max_gts, 2, generator=generator),
                       0.05 + 0.3 * torch.rand(batch, max_gts, 2, generator=generator)], -1)
    return labels.to(device), boxes.to(device, dtype), counts.to(device)


def check_no_sync(batch_inputs, mode, max_gt):
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        build_dn_queries(*batch_inputs, num_classes=NUM_CLASSES, max_gt=max_gt, **MODES[mode])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "no host sync (set_sync_debug_mode('error') passed)"


def measure(mode, form, batch, max_gts, device, dtype, generator, budget):
    """One configuration: the loop and the op timed in alternating rounds -> a row."""
    inputs = make_batch(batch, max_gts, device, dtype, generator)
    noise_generator = torch.Generator(device=device).manual_seed(1)
    kwargs = dict(num_classes=NUM_CLASSES, max_gt=max_gts, generator=noise_generator,
                  per_image_mask=form == "per-image", **MODES[mode])
    num_dn = build_dn_queries(*inputs, **kwargs).num_dn
    timings = time_interleaved({"loop": (lambda: build_dn_queries_reference(*inputs, **kwargs), None),
                                "fused": (lambda: build_dn_queries(*inputs, **kwargs), None)}, **budget)
    row = dict(mode=mode, form=form, batch=batch, max_gts=max_gts, num_dn=num_dn,
               total_queries=num_dn + MODES[mode]["num_queries"])
    for name, timing in timings.items():
        row.update({f"{name}_{key}": value for key, value in timing.items() if key != "times_s"})
    row["speedup"] = row["loop_median_s"] / row["fused_median_s"]
    return row


def print_report(rows, machine):
    rows = [dict(row) for row in rows]  # display columns added to copies, not to the JSON rows
    for row in rows:
        for name in ("loop", "fused"):
            row[f"{name}_ms"] = median_iqr_ms(row, name, 3)
    print(f"\nbuild_dn_queries on {machine['device']} ({machine.get('gpu_name', machine['cpu_model'])}, "
          f"{machine['torch_threads']} threads), {machine['dtype']} boxes: loop reference vs compiled op\n"
          f"times: median (IQR) in ms per call; speed-up = loop median / op median\n{run_conditions(machine)}\n")
    print(format_table(rows, [
        ("mode", "mode", ""), ("form", "form", ""), ("B", "batch", "d"), ("gts", "max_gts", "d"),
        ("K", "num_dn", "d"), ("K+N", "total_queries", "d"),
        ("loop ms (IQR)", "loop_ms", ""), ("op ms (IQR)", "fused_ms", ""), ("speed-up", "speedup", ".1f"),
    ]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser, quick="short timings", dtypes=tuple(DTYPES))
    args = parser.parse_args()
    device, dtype = apply_common_options(parser, args)
    budget = {"min_run_time": 0.15 if args.quick else 0.6, "min_samples": 3}
    machine = describe_machine(device)
    print(machine_header(machine), flush=True)
    machine["dtype"] = args.dtype
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    rows = [measure(mode, form, batch, max_gts, device, dtype, generator, budget)
            for mode in MODES for form in ("shared", "per-image") for batch in (2, 16, 64) for max_gts in (5, 20, 100)]
    machine["load_average_1min_at_end"] = load_average()
    machine["benchmark_seconds"] = time.perf_counter() - start
    print_report(rows, machine)
    result = {"machine": machine, "budget": budget, "rows": rows}
    if device.type == "cuda":
        result["sync_check"] = check_no_sync(make_batch(16, 20, device, dtype, generator), "dino", 20)
        print(result["sync_check"])
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
