"""End-to-end models: Hugging Face transformers' own MSDA path vs the same model patched onto detrx.

For each model (random weights at its real size, built offline) it times an eval forward and a
training step (forward, loss, backward) with HF's path and with `detrx.integrations.transformers`
patched in, alternated in the same process, median of several runs; then one profiled run of each
gives the MSDA share of the time: the self CPU/CUDA time of grid_sampler_2d (+ backward) in HF's
path, of detrx's ms_deform_attn (+ backward) when patched (HF's weighted sum after grid_sample is
not counted, so HF's share is a lower bound). rfdetr's model runs when detrx has its rfdetr patch
(`detrx.integrations.rfdetr`).

    python benchmarks/models.py [--device cpu|cuda] [--threads N] [--quick] [--runs N] [--only TEXT] [--json PATH]
"""
import argparse
import importlib.util
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (add_common_options, apply_common_options, describe_machine, format_table,  # noqa: E402
                    load_average, machine_header, native_stderr_silenced, time_interleaved, write_json)

MSDA_OPS = ("aten::grid_sampler_2d", "aten::grid_sampler_2d_backward", "detrx::ms_deform_attn",
            "detrx::ms_deform_attn_backward")


def detection_labels(device, batch, num_boxes=8, num_classes=80):
    """Random COCO-like targets: boxes (cx, cy, w, h) in [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    labels = []
    for _ in range(batch):
        centres = 0.2 + 0.6 * torch.rand(num_boxes, 2, generator=generator)
        sizes = 0.05 + 0.3 * torch.rand(num_boxes, 2, generator=generator)
        labels.append({"class_labels": torch.randint(0, num_classes, (num_boxes,), generator=generator).to(device),
                       "boxes": torch.cat([centres, sizes], 1).to(device)})
    return labels


def segmentation_labels(device, batch, size, num_masks=4, num_classes=80):
    generator = torch.Generator().manual_seed(0)
    height, width = size
    mask_labels, class_labels = [], []
    for _ in range(batch):
        masks = torch.zeros(num_masks, height, width)
        for k in range(num_masks):
            y, x = torch.randint(0, height // 2, (1,), generator=generator), torch.randint(0, width // 2, (1,),
                                                                                            generator=generator)
            masks[k, y:y + height // 3, x:x + width // 3] = 1
        mask_labels.append(masks.to(device))
        class_labels.append(torch.randint(0, num_classes, (num_masks,), generator=generator).to(device))
    return {"mask_labels": mask_labels, "class_labels": class_labels}


def build_deformable_detr():
    import transformers
    # The default config: ResNet-50 (timm, random weights), d_model 256, 6 + 6 layers, 4 levels, 300 queries.
    return transformers.DeformableDetrForObjectDetection(transformers.DeformableDetrConfig(num_labels=80))


def build_rt_detr():
    import transformers
    # The default config: ResNet-50-vd backbone, hybrid encoder, 6 decoder layers, 300 queries.
    return transformers.RTDetrForObjectDetection(transformers.RTDetrConfig(num_labels=80))


def build_mask2former():
    import transformers
    # The default config: Swin-Tiny backbone, 6 MSDA pixel-decoder layers, 10 decoder layers, 100 queries.
    return transformers.Mask2FormerForUniversalSegmentation(transformers.Mask2FormerConfig(num_labels=80))


def build_rfdetr():
    from rfdetr.config import RFDETRNanoConfig
    from rfdetr.models.lwdetr import build_model_from_config
    # Nano: built offline (Base would fetch DINOv2 weights without a checkpoint); its default 384x384.
    return build_model_from_config(RFDETRNanoConfig(pretrain_weights=None, device="cpu"))


# name, builder, image (H, W), batch, label kind, patch module, which of eval/train to run
CASES = [
    ("HF Deformable DETR R50", build_deformable_detr, (800, 1333), 1, "detection", "transformers", ("eval",)),
    ("HF Deformable DETR R50", build_deformable_detr, (512, 683), 1, "detection", "transformers", ("eval", "train")),
    ("HF RT-DETR R50", build_rt_detr, (640, 640), 1, "detection", "transformers", ("eval", "train")),
    ("HF Mask2Former Swin-T", build_mask2former, (512, 512), 1, "segmentation", "transformers", ("eval", "train")),
    ("rfdetr RF-DETR Nano", build_rfdetr, (384, 384), 1, "rfdetr", "rfdetr", ("eval",)),
]


def patch_module(name):
    """detrx's patch module for a library, or None where this detrx has none."""
    if importlib.util.find_spec(f"detrx.integrations.{name}") is None:
        return None
    return importlib.import_module(f"detrx.integrations.{name}")


def step_functions(model, kind, mode, pixels, labels, integration):
    """(HF's step, patched step): eval forward or a training step, as zero-argument callables."""
    def run():
        if mode == "eval":
            with torch.no_grad():
                return model(pixels) if kind == "rfdetr" else model(pixel_values=pixels)
        model.zero_grad(set_to_none=True)
        output = model(pixel_values=pixels, **labels)
        output.loss.backward()

    def patched_run():
        with integration.patched():
            return run()

    return run, patched_run


def msda_share(step, device):
    """Fraction of one profiled step's wall time spent in MSDA ops (their self time)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with native_stderr_silenced(), torch.profiler.profile(activities=activities) as profiler:
        start = time.perf_counter()
        step()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    msda_us = sum(max(event.self_cpu_time_total, getattr(event, "self_device_time_total", 0))
                  for event in profiler.key_averages() if event.key in MSDA_OPS)
    return msda_us * 1e-6 / wall


def max_relative_difference(a, b):
    """Largest |a - b| / max |b| over the floating-point tensors of two model outputs."""
    tensors_a = [t for t in (a.values() if isinstance(a, dict) else a) if isinstance(t, torch.Tensor)]
    tensors_b = [t for t in (b.values() if isinstance(b, dict) else b) if isinstance(t, torch.Tensor)]
    errors = [((x - y).abs().max() / y.abs().max()).item() for x, y in zip(tensors_a, tensors_b)
              if x.is_floating_point() and y.numel() and torch.isfinite(y).all()]
    return max(errors) if errors else None


def run_case(case, device, runs):
    name, build, size, batch, kind, library, modes = case
    integration = patch_module(library)
    if integration is None:
        print(f"skipped {name}: detrx has no integrations.{library} module", flush=True)
        return []
    torch.manual_seed(0)
    model = build().to(device)
    pixels = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1)).to(device)
    if kind == "detection":
        labels = {"labels": detection_labels(device, batch)}
    elif kind == "segmentation":
        labels = segmentation_labels(device, batch, size)
    else:
        labels = {}
    rows = []
    for mode in modes:
        model.train(mode == "train")
        hf_step, detrx_step = step_functions(model, kind, mode, pixels, labels, integration)
        warm = {}
        outputs = {}
        for label, step in (("hf", hf_step), ("detrx", detrx_step)):
            start = time.perf_counter()
            outputs[label] = step()  # warm-up, and the seconds a call takes
            warm[label] = time.perf_counter() - start
        timings = time_interleaved({"hf": (hf_step, warm["hf"]), "detrx": (detrx_step, warm["detrx"])},
                                   min_run_time=1e-3 * runs, min_samples=runs)
        row = {"model": name, "image": f"{size[0]}x{size[1]}", "batch": batch, "mode": mode,
               "hf_s": timings["hf"]["median_s"], "detrx_s": timings["detrx"]["median_s"],
               "hf_iqr_s": timings["hf"]["iqr_s"], "detrx_iqr_s": timings["detrx"]["iqr_s"],
               "speedup": timings["hf"]["median_s"] / timings["detrx"]["median_s"],
               "hf_msda_share": msda_share(hf_step, device), "detrx_msda_share": msda_share(detrx_step, device),
               "runs": runs, "timings": timings}
        if mode == "eval":
            row["max_rel_diff"] = max_relative_difference(outputs["detrx"], outputs["hf"])
        print(format_table([row], COLUMNS), flush=True)
        rows.append(row)
    del model
    return rows


COLUMNS = [("model", "model", "s"), ("image", "image", "s"), ("mode", "mode", "s"),
           ("HF s", "hf_s", ".2f"), ("detrx s", "detrx_s", ".2f"), ("speed-up", "speedup", ".2f"),
           ("HF MSDA share", "hf_msda_share", ".0%"), ("detrx MSDA share", "detrx_msda_share", ".0%"),
           ("max rel diff", "max_rel_diff", ".1e")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="timed runs a figure (default 5; --quick 3)")
    parser.add_argument("--only", default=None, help="run only the models whose name contains this text")
    add_common_options(parser, quick="3 runs a figure and no 800x1333 row",
                       narrowed_because="a half-precision training step needs autocast and loss scaling, not a cast")
    args = parser.parse_args(argv)
    apply_common_options(parser, args)
    runs = args.runs if args.runs is not None else (3 if args.quick else 5)
    if runs < 1:
        parser.error(f"--runs must be >= 1, got {runs}")
    import transformers  # noqa: F401  (the extra `detrx[transformers]`; fail early if missing)

    started = time.perf_counter()
    load_start = load_average()
    cases = [case for case in CASES if not (args.quick and case[2] == (800, 1333))
             and (args.only is None or args.only in case[0])]
    machine = describe_machine(args.device)
    print(machine_header(machine), flush=True)
    rows = []
    for case in cases:
        rows += run_case(case, args.device, runs)
        if args.json:  # after every model, so that an interrupted run keeps what it measured
            write_json(args.json, {"machine": machine, "runs": runs, "complete": False, "rows": rows})
    print(f"\nHF's own path vs patched onto detrx, {args.device}, {machine.get('gpu_name', machine['cpu_model'])}, "
          f"{machine['torch_threads']} threads, float32, random weights; median of {runs} alternated runs; "
          f"1-min load average {load_start} at the start, {load_average()} at the end; "
          f"{time.perf_counter() - started:.0f} s in all")
    print(format_table(rows, COLUMNS))
    print("MSDA share: self time of grid_sampler_2d (+ backward) or detrx's ops in one profiled run, over its "
          "wall time; HF's weighted sum after grid_sample is not counted")
    if args.json:
        machine["load_average_1min_end"] = load_average()
        write_json(args.json, {"machine": machine, "runs": runs, "complete": True, "rows": rows})


if __name__ == "__main__":
    main()
