"""Times the compiled denoising-query op against the DN-DETR/DINO-style loop reference, in one process.

    python benchmarks/dn.py [--device cpu|cuda] [--threads N] [--json results.json] [--quick]

Configurations: B in {2, 16, 64} images, max gts in {5, 20, 100} (gt counts uniform in [1, max], one
image at the max), DN-DETR (5 groups, N = 300 matching queries, centre/size noise) and DINO
(dn_number = 100, contrastive, corner noise, N = 900). Like is compared with like: "shared" builds the
queries and the shared [K+N, K+N] mask (the loop's DN-DETR mask), "per-image" also builds the padded
[B, K+N, K+N] mask (the loop then blocks the padded slots image by image). Both get max_gt from the
caller (pad_targets' G). Calls alternate between the two implementations; the table gives the
median time per call and the spread (10th-90th percentile), and the loop / fused ratio of the
medians and of the 10th percentiles (the latter is less hit by preemption on a busy machine).
On CUDA it also runs the fused op once under torch.cuda.set_sync_debug_mode("error").
On a CPU shared with other work, --threads 1 gives steadier figures (a multi-threaded region
waits for every thread to be scheduled).
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from detrx.ops import build_dn_queries, build_dn_queries_reference  # noqa: E402

MODES = {
    "dn_detr": dict(num_groups=5, num_queries=300, noise_style="dn_detr", contrastive=False),
    "dino": dict(dn_number=100, num_queries=900, noise_style="dino", contrastive=True),
}
NUM_CLASSES = 80


def make_batch(batch, max_gts, device, generator):
    counts = torch.randint(1, max_gts + 1, (batch,), generator=generator)
    counts[0] = max_gts
    labels = torch.randint(0, NUM_CLASSES, (batch, max_gts), generator=generator)
    boxes = torch.cat([0.2 + 0.6 * torch.rand(batch, max_gts, 2, generator=generator),
                       0.05 + 0.3 * torch.rand(batch, max_gts, 2, generator=generator)], -1)
    return labels.to(device), boxes.to(device), counts.to(device)


def time_calls(functions, device, min_seconds, min_calls):
    """Alternates the functions; returns a list of per-call times (seconds) for each."""
    times = [[] for _ in functions]
    for function in functions:  # warm-up
        function()
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


def check_no_sync(batch_inputs, mode, max_gt):
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        build_dn_queries(*batch_inputs, num_classes=NUM_CLASSES, max_gt=max_gt, **MODES[mode])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "no host sync (set_sync_debug_mode('error') passed)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for both implementations (torch's default if unset)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--quick", action="store_true", help="fewer calls per configuration")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    min_seconds, min_calls = (0.1, 5) if args.quick else (0.5, 15)
    generator = torch.Generator().manual_seed(0)
    rows = []
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    header = f"{'mode':8} {'form':9} {'B':>3} {'gts':>4} {'K':>4} {'K+N':>5} | " \
             f"{'loop median (p10-p90)':>26} | {'fused median (p10-p90)':>26} | {'speed-up':>8} {'at p10':>7}"
    print(header)
    print("-" * len(header))
    for mode, options in MODES.items():
        for form in ("shared", "per-image"):
            for batch in (2, 16, 64):
                for max_gts in (5, 20, 100):
                    inputs = make_batch(batch, max_gts, device, generator)
                    noise_generator = torch.Generator(device=device).manual_seed(1)
                    kwargs = dict(num_classes=NUM_CLASSES, max_gt=max_gts, generator=noise_generator,
                                  per_image_mask=form == "per-image", **options)
                    dn = build_dn_queries(*inputs, **kwargs)
                    loop, fused = time_calls([lambda: build_dn_queries_reference(*inputs, **kwargs),
                                              lambda: build_dn_queries(*inputs, **kwargs)],
                                             device, min_seconds, min_calls)
                    row = dict(mode=mode, form=form, batch=batch, max_gts=max_gts, num_dn=dn.num_dn,
                               num_queries=options["num_queries"], calls=len(fused),
                               loop_ms=[1e3 * percentile(loop, q) for q in (0.1, 0.5, 0.9)],
                               fused_ms=[1e3 * percentile(fused, q) for q in (0.1, 0.5, 0.9)])
                    row["speedup"] = row["loop_ms"][1] / row["fused_ms"][1]
                    row["speedup_p10"] = row["loop_ms"][0] / row["fused_ms"][0]
                    rows.append(row)
                    loop_text = "{1:9.3f} ({0:.3f}-{2:.3f})".format(*row["loop_ms"])
                    fused_text = "{1:9.3f} ({0:.3f}-{2:.3f})".format(*row["fused_ms"])
                    print(f"{mode:8} {form:9} {batch:3d} {max_gts:4d} {dn.num_dn:4d} "
                          f"{dn.num_dn + options['num_queries']:5d} | {loop_text:>26} | {fused_text:>26} | "
                          f"{row['speedup']:7.1f}x {row['speedup_p10']:6.1f}x", flush=True)
    print("times in ms per call")
    result = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    if device.type == "cuda":
        result["sync_check"] = check_no_sync(make_batch(16, 20, device, generator), "dino", 20)
        print(result["sync_check"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
