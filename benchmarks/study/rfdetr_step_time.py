"""Can RF-DETR be fine-tuned on the synthetic set within the convergence study's CPU budget? The
training step of RF-DETR (random weights, rfdetr's criterion with its group-DETR queries, AdamW step
and gradient clipping included) at its input side, batch 8 and batch 2, next to the study's detrx
DETR (batch 8, the study's images), timed in the same process (`rfdetr_compare.py --step-time`).

The images are the synthetic training set's (RF-DETR sees them resized to its side). Each figure is
the median of --steps steps after one warm-up step. The budget: 15 minutes per model (a study pair
gets 30 minutes on 2 cores), and the study's own schedule (its epochs x steps per epoch at batch 8).
"""
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F

from common import describe_machine, write_json
from study.config import STUDY_CONFIG, VARIANTS
from study.rfdetr_detectors import IMAGENET_MEAN, IMAGENET_STD, quiet_rfdetr, rfdetr_config_class

from detrx.data import build_synthetic, build_transforms, collate_fn
from detrx.engine.config import parse_args
from detrx.models import build_model
from detrx.util.box_ops import box_xyxy_to_cxcywh

BUDGET_S = 15 * 60  # per model: the study's 30 minutes per pair
RFDETR_BATCHES = (8, 2)


def timed_steps(step, steps):
    """Median seconds of `steps` calls of step() after one warm-up call, and all the times."""
    step()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), seconds


def optimizer_step(model, loss, optimizer, max_norm=0.1):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()


def detr_step(study_args, data_opts):
    """The study's DETR training step (random weights) on its first batch."""
    torch.manual_seed(0)
    model, criterion, _ = build_model(study_args, num_classes=data_opts.num_classes)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=study_args.lr, weight_decay=study_args.weight_decay)
    dataset = build_synthetic("train", data_opts, build_transforms(True, study_args.sizes, study_args.image_max_size,
                                                                   study_args.flip))
    images, mask, targets = collate_fn([dataset[i] for i in range(study_args.batch_size)])

    def step():
        losses = criterion(model(images, mask, targets), targets)
        optimizer_step(model, criterion.total(losses), optimizer, study_args.clip_max_norm)
    return step


def rfdetr_step(variant, resolution, data_opts, batch):
    """RF-DETR's training step (random weights, rfdetr's criterion) on `batch` synthetic training
    images resized to its side; -> (step, side)."""
    from rfdetr import config as rf_config
    from rfdetr.models.lwdetr import build_criterion_from_config, build_model_from_config

    options = {"pretrain_weights": None, "device": "cpu", "num_classes": data_opts.num_classes}
    if resolution:
        options["resolution"] = resolution
    with quiet_rfdetr():
        model_config = rfdetr_config_class(variant)(**options)
        train_config = rf_config.TrainConfig(dataset_dir=".", output_dir=".")
        torch.manual_seed(0)
        model = build_model_from_config(model_config).train()
        criterion, _ = build_criterion_from_config(model_config, train_config)
    side = model_config.resolution
    dataset = build_synthetic("train", data_opts)
    pixels, targets = [], []
    for index in range(batch):
        image, boxes, labels = dataset.render(index)
        pixels.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255)  # [3, H, W]
        scale = torch.tensor([image.shape[1], image.shape[0]] * 2, dtype=torch.float32)
        targets.append({"labels": labels, "boxes": box_xyxy_to_cxcywh(boxes / scale)})  # normalised cxcywh
    pixels = F.interpolate(torch.stack(pixels), size=(side, side), mode="bilinear", align_corners=False)
    pixels = (pixels - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)

    def step():
        losses = criterion(model(pixels), targets)
        loss = sum(losses[k] * criterion.weight_dict[k] for k in losses if k in criterion.weight_dict)
        optimizer_step(model, loss, optimizer, train_config.clip_max_norm)
    return step, side


def budget_row(name, batch, side, median_s, seconds, study_images, num_train):
    """What BUDGET_S allows at this step time, and how long the study's schedule would take."""
    steps = int(BUDGET_S // median_s)
    return {"model": name, "batch": batch, "input": f"{side}x{side}", "step_median_s": median_s,
            "step_times_s": seconds, "steps_in_budget": steps, "epochs_in_budget": steps * batch / num_train,
            "study_schedule_hours": math.ceil(study_images / batch) * median_s / 3600}


def markdown(report):
    lines = ["| model | batch | input | s per step (median) | steps in 15 min | epochs in 15 min | "
             "study schedule would take |", "|" + "---|" * 7]
    for row in report["rows"]:
        lines.append(f"| {row['model']} | {row['batch']} | {row['input']} | {row['step_median_s']:.3f} | "
                     f"{row['steps_in_budget']} | {row['epochs_in_budget']:.2f} | "
                     f"{row['study_schedule_hours']:.2f} h |")
    study = report["study"]
    lines += ["", f"Random weights, {report['threads']} thread(s) on {report['machine']['cpu_model']} "
              f"(1-min load average {report['machine']['load_average_1min']} at the start); median of "
              f"{report['steps']} steps after a warm-up, optimizer step included. Epochs: of the "
              f"{study['num_train']}-image synthetic training set. Study schedule: {study['epochs']} epochs x "
              f"{study['steps_per_epoch']} steps at batch {study['batch_size']} = {study['images']} images."]
    return "\n".join(lines) + "\n"


def step_time(opts):
    """Times the steps, prints the table, writes --out_step_time.json and .md; returns the report."""
    torch.set_num_threads(opts.threads)
    study_args = parse_args([*STUDY_CONFIG, *VARIANTS["detr"], "--num-classes", str(opts.num_classes)])
    steps_per_epoch = math.ceil(study_args.num_train / study_args.batch_size)
    study = {"epochs": study_args.epochs, "steps_per_epoch": steps_per_epoch, "batch_size": study_args.batch_size,
             "num_train": opts.num_train, "images": study_args.epochs * steps_per_epoch * study_args.batch_size}
    machine = describe_machine("cpu")
    rows = []
    median_s, seconds = timed_steps(detr_step(study_args, opts), opts.steps)
    rows.append(budget_row("detrx DETR (study config)", study_args.batch_size, opts.image_size, median_s, seconds,
                           study["images"], opts.num_train))
    print(f"{rows[-1]['model']}, batch {study_args.batch_size}: {median_s:.3f} s per step", flush=True)
    for batch in RFDETR_BATCHES:
        step, side = rfdetr_step(opts.rfdetr_model, opts.rfdetr_resolution, opts, batch)
        median_s, seconds = timed_steps(step, opts.steps)
        rows.append(budget_row(f"RF-DETR {opts.rfdetr_model}", batch, side, median_s, seconds, study["images"],
                               opts.num_train))
        print(f"{rows[-1]['model']}, batch {batch}: {median_s:.3f} s per step", flush=True)
    report = {"machine": machine, "threads": opts.threads, "steps": opts.steps, "budget_s": BUDGET_S,
              "study": study, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
    write_json(opts.out + "_step_time.json", report)
    table = markdown(report)
    with open(opts.out + "_step_time.md", "w") as f:
        f.write(table)
    print(table)
    return report
