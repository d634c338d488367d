"""RF-DETR end to end: rfdetr's own MSDA path against detrx's op (detrx.integrations.rfdetr), in one process.

    python benchmarks/rfdetr_e2e.py [--device cpu|cuda] [--model nano|small|medium] [--resolution N]
                                [--cases eval,train] [--threads N] [--repeats N] [--quick] [--json PATH]

A random-weight RF-DETR (built offline from the variant's config with pretrain_weights=None) at the
variant's default resolution: the eval forward of one image and a training step (train mode, with
rfdetr's group DETR queries, rfdetr's criterion on two images with 8 boxes each, backward). Calls
alternate between unpatched and patched; each figure is the median of --repeats. On a CPU shared
with other work, --threads 1 gives steadier figures (a multi-threaded region waits for every thread). The MSDA share is
the part of the step the profiler attributes to the MSDA core (rfdetr's function and what it runs,
or detrx's function and its op; in training also their backward ops).
"""
import argparse
import contextlib
import logging
import os
import statistics
import sys
import time
import warnings

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (add_common_options, apply_common_options, describe_machine,  # noqa: E402
                               machine_header, write_json)
from detrx.integrations import rfdetr as detrx_rfdetr  # noqa: E402

MSDA_SCOPE = "msda_core"
# Backward ops of the two MSDA cores: grid_sample's (rfdetr's path; its weighted sum's backward is
# not counted, so its share is a lower bound) and detrx's backward op.
MSDA_BACKWARD = ("GridSampler2DBackward0", "detrx::ms_deform_attn_backward")


def build(variant, resolution, device):
    """A random-weight LWDETR of the variant, its config, and rfdetr's criterion."""
    from rfdetr import config as rf_config
    from rfdetr.models.lwdetr import build_criterion_from_config, build_model_from_config

    config_class = {"nano": rf_config.RFDETRNanoConfig, "small": rf_config.RFDETRSmallConfig,
                    "medium": rf_config.RFDETRMediumConfig}[variant]
    options = dict(pretrain_weights=None, device=device.type)
    if resolution:
        options["resolution"] = resolution
    model_config = config_class(**options)
    torch.manual_seed(0)
    model = build_model_from_config(model_config).to(device)
    criterion, _ = build_criterion_from_config(model_config, rf_config.TrainConfig(dataset_dir=".", output_dir="."))
    return model, model_config, criterion.to(device)


def make_inputs(resolution, device, batch, generator):
    pixels = torch.rand(batch, 3, resolution, resolution, generator=generator).to(device)
    targets = []
    for _ in range(batch):
        boxes = torch.cat([0.2 + 0.6 * torch.rand(8, 2, generator=generator),
                           0.05 + 0.2 * torch.rand(8, 2, generator=generator)], 1)
        targets.append({"labels": torch.randint(0, 80, (8,), generator=generator).to(device),
                        "boxes": boxes.to(device)})
    return pixels, targets


def eval_forward(model, pixels):
    model.eval()
    with torch.no_grad():
        model(pixels)


def training_step(model, criterion, pixels, targets):
    model.train()
    model.zero_grad(set_to_none=True)
    outputs = model(pixels)
    losses = criterion(outputs, targets)
    loss = sum(losses[name] * criterion.weight_dict[name] for name in losses if name in criterion.weight_dict)
    loss.backward()


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def profiled_core(core):
    """The MSDeformAttn module's call site bound to `core` (rfdetr's own if None) in a profiler scope."""
    import rfdetr.models.ops.modules.ms_deform_attn as msda_module
    original = msda_module.ms_deform_attn_core_pytorch
    run = original if core is None else core

    def scoped(*args, **kwargs):
        with record_function(MSDA_SCOPE):
            return run(*args, **kwargs)

    msda_module.ms_deform_attn_core_pytorch = scoped
    try:
        yield
    finally:
        msda_module.ms_deform_attn_core_pytorch = original


def msda_share(step, device, core):
    """(MSDA time, step time) in seconds of one profiled call of step() with the given MSDA core."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profiled_core(core), profile(activities=activities) as profiler:
        with record_function("step"):
            step()
        synchronize(device)
    events = profiler.key_averages()
    if device.type == "cuda":
        msda = sum(e.device_time_total for e in events if e.key == MSDA_SCOPE or e.key in MSDA_BACKWARD)
        return msda / 1e6, sum(e.self_device_time_total for e in events) / 1e6
    msda = sum(e.cpu_time_total for e in events if e.key == MSDA_SCOPE or e.key in MSDA_BACKWARD)
    return msda / 1e6, sum(e.cpu_time_total for e in events if e.key == "step") / 1e6


def run_case(name, step, device, repeats):
    """Alternates rfdetr's path and detrx's; medians, the MSDA shares and the speed-up."""
    times = {"rfdetr": [], "detrx": []}
    for path in times:  # warm-up, one call each
        with detrx_rfdetr.patched() if path == "detrx" else contextlib.nullcontext():
            step()
    for _ in range(repeats):
        for path in times:
            with detrx_rfdetr.patched() if path == "detrx" else contextlib.nullcontext():
                synchronize(device)
                start = time.perf_counter()
                step()
                synchronize(device)
                times[path].append(time.perf_counter() - start)
    result = {"case": name}
    for path, samples in times.items():
        msda, total = msda_share(step, device, detrx_rfdetr.ms_deform_attn_core if path == "detrx" else None)
        result[path] = {"median_s": statistics.median(samples), "min_s": min(samples), "times_s": samples,
                        "msda_share": msda / total if total else None}
    result["speedup"] = result["rfdetr"]["median_s"] / result["detrx"]["median_s"]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nano", choices=["nano", "small", "medium"])
    parser.add_argument("--resolution", type=int, default=None, help="default: the variant's")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cases", default="eval,train", help="comma-separated: eval, train")
    add_common_options(parser, quick="3 repeats, eval forward only", narrowed_because="a half-precision training step needs autocast and loss scaling, not a cast")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    cases_asked = set(args.cases.split(","))
    if not cases_asked or not cases_asked <= {"eval", "train"}:
        parser.error(f"--cases must be a comma-separated subset of eval,train, got {args.cases!r}")
    if args.quick:
        cases_asked = {"eval"}
    if args.resolution is not None and args.resolution < 1:
        parser.error(f"--resolution must be >= 1, got {args.resolution}")
    device, _ = apply_common_options(parser, args)
    repeats = 3 if args.quick else args.repeats
    warnings.filterwarnings("ignore")
    logging.getLogger("rf-detr").setLevel(logging.ERROR)

    machine = describe_machine(device)
    print(machine_header(machine), flush=True)
    model, model_config, criterion = build(args.model, args.resolution, device)
    resolution = model_config.resolution
    pixels, targets = make_inputs(resolution, device, 2, torch.Generator().manual_seed(0))
    cases = []
    if "eval" in cases_asked:
        cases.append((f"eval forward, 1 image {resolution}x{resolution}", lambda: eval_forward(model, pixels[:1])))
    if "train" in cases_asked:
        cases.append((f"training step, 2 images {resolution}x{resolution}",
                      lambda: training_step(model, criterion, pixels, targets)))
    results = [run_case(name, step, device, repeats) for name, step in cases]

    print(f"RF-DETR {args.model} (random weights, {resolution}x{resolution}, "
          f"{len(model.transformer.decoder.layers)} decoder layers) on {machine['cpu_model'] if device.type == 'cpu' else machine.get('gpu_name')}, "
          f"{machine['torch_threads']} threads, torch {machine['torch']}; median of {repeats}, calls alternated")
    print(f"{'case':>40}  {'rfdetr s':>9}  {'detrx s':>9}  {'speed-up':>8}  {'MSDA share rfdetr':>17}  {'detrx':>6}")
    for r in results:
        print(f"{r['case']:>40}  {r['rfdetr']['median_s']:9.3f}  {r['detrx']['median_s']:9.3f}  {r['speedup']:7.2f}x  "
              f"{r['rfdetr']['msda_share']:17.1%}  {r['detrx']['msda_share']:6.1%}")
    if args.json:
        write_json(args.json, {"machine": machine, "model": args.model, "resolution": resolution, "repeats": repeats,
                               "results": results})


if __name__ == "__main__":
    main()
