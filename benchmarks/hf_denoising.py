"""Hugging Face's get_contrastive_denoising_training_group against detrx's (detrx.integrations.hf_denoising).

    python benchmarks/hf_denoising.py [--device cpu|cuda] [--dtype float32|float16|bfloat16|float64] [--threads N]
                                      [--quick] [--json PATH]

RT-DETR's settings: num_denoising_queries 100, label_noise_ratio 0.5, box_noise_scale 1.0,
300 matching queries, 80 classes, class_embed an nn.Embedding(81, 256) (it and the boxes in --dtype). B images with gt counts
uniform in [1, max] (one image at the max). Calls alternate between the two; the table gives the
median and the 10th-90th percentile in ms per call, and the ratio of the medians.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (DTYPES, add_common_options, apply_common_options, describe_machine,  # noqa: E402
                               machine_header, write_json)
from detrx.integrations.hf_denoising import get_contrastive_denoising_training_group  # noqa: E402

NUM_CLASSES, NUM_QUERIES, NUM_DENOISING = 80, 300, 100
CASES = [(4, 10), (16, 20), (16, 50), (64, 20), (64, 100)]


def make_targets(batch, max_gts, device, dtype, generator):
    counts = torch.randint(1, max_gts + 1, (batch,), generator=generator)
    counts[0] = max_gts
    targets = []
    for n in counts.tolist():
        boxes = torch.cat([0.2 + 0.6 * torch.rand(n, 2, generator=generator),
                           0.05 + 0.3 * torch.rand(n, 2, generator=generator)], 1)
        targets.append({"class_labels": torch.randint(0, NUM_CLASSES, (n,), generator=generator).to(device),
                        "boxes": boxes.to(device, dtype)})
    return targets


def time_alternated(functions, device, min_calls, min_seconds):
    """Per-call times (s) of each function, calls alternated, after one warm-up call each."""
    for function in functions:
        function()
    times = [[] for _ in functions]
    start = time.perf_counter()
    while len(times[0]) < min_calls or time.perf_counter() - start < min_seconds:
        for function, samples in zip(functions, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            function()
            if device.type == "cuda":
                torch.cuda.synchronize()
            samples.append(time.perf_counter() - t0)
    return times


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(parser, quick="the first two cases, short timings", dtypes=tuple(DTYPES))
    args = parser.parse_args()
    device, dtype = apply_common_options(parser, args)
    machine = describe_machine(device)
    print(machine_header(machine), flush=True)
    from transformers.models.rt_detr.modeling_rt_detr import get_contrastive_denoising_training_group as hf_builder

    class_embed = torch.nn.Embedding(NUM_CLASSES + 1, 256, padding_idx=NUM_CLASSES).to(device, dtype)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for batch, max_gts in CASES[:2] if args.quick else CASES:
        targets = make_targets(batch, max_gts, device, dtype, generator)

        def call(builder):
            return lambda: builder(targets, NUM_CLASSES, NUM_QUERIES, class_embed, NUM_DENOISING, 0.5, 1.0)

        with torch.no_grad():
            hf_times, detrx_times = time_alternated([call(hf_builder), call(get_contrastive_denoising_training_group)],
                                                    device, min_calls=20, min_seconds=0.5 if args.quick else 2.0)
        rows.append({"batch": batch, "max_gts": max_gts, "hf_s": hf_times, "detrx_s": detrx_times,
                     "speedup": statistics.median(hf_times) / statistics.median(detrx_times)})

    print(f"get_contrastive_denoising_training_group on {device} ({machine.get('gpu_name', machine['cpu_model'])}, "
          f"{machine['torch_threads']} threads), {args.dtype}, torch {machine['torch']}; ms per call, median (p10-p90)")
    print(f"{'B':>3} {'max gts':>7} {'K':>5} | {'HF':>22} | {'detrx':>22} | speed-up")
    for row in rows:
        groups = max(NUM_DENOISING // row["max_gts"], 1)
        cells = [f"{statistics.median(s) * 1e3:7.3f} ({percentile(s, 0.1) * 1e3:.3f}-{percentile(s, 0.9) * 1e3:.3f})"
                 for s in (row["hf_s"], row["detrx_s"])]
        print(f"{row['batch']:>3} {row['max_gts']:>7} {2 * groups * row['max_gts']:>5} | {cells[0]:>22} | "
              f"{cells[1]:>22} | {row['speedup']:6.1f}x")
    if args.json:
        write_json(args.json, {"machine": dict(machine, dtype=args.dtype), "rows": rows})


if __name__ == "__main__":
    main()
