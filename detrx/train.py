"""Train / evaluate a DETR-family detector: `python -m detrx.train --model dn_detr ...`.

The data are checked before anything is built (`--check-data` only checks them). Each epoch prints
one line (losses, val AP); per-step losses and per-epoch COCO mAP go to <output-dir>/log.jsonl, and
everything needed to rebuild the model and continue the run to <output-dir>/checkpoint.pth, written
atomically. `--resume` continues from it (same data order and random numbers); `--eval --resume`
only evaluates and prints the COCO table. Multi-process: `torchrun --nproc_per_node 2 -m
detrx.train ...` (gloo on CPU, NCCL on CUDA).
"""
import json
import os
import random
import sys
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from detrx.data import DatasetError, build_datasets, check_datasets, collate_fn
from detrx.data.check import format_report
from detrx.engine.checkpoint import checkpoint_classes, load_checkpoint, save_checkpoint
from detrx.engine.coco_eval import coco_gt_from_dict
from detrx.engine.config import parse_args
from detrx.engine.dist import (all_gather_list, get_rank, get_world_size, init_distributed, is_distributed,
                               is_main_process)
from detrx.engine.loop import evaluate, train_one_epoch
from detrx.engine.resume import apply_learning_rates, describe_changes, rng_state, run_options, set_rng_state
from detrx.models import MODEL_OPTIONS, build_model


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def say(*parts):
    """One line on stdout from the main process."""
    if is_main_process():
        print(*parts, flush=True)


def build_loaders(args, train_set, val_set):
    """Train loader (shuffled by its own generator, or a DistributedSampler under DDP), val loader
    (each process a disjoint slice, without the padding duplicates DistributedSampler would add to
    the evaluation), and the train sampler's generator (None under DDP)."""
    val_part = Subset(val_set, range(get_rank(), len(val_set), get_world_size()))
    val_loader = DataLoader(val_part, args.batch_size, collate_fn=collate_fn, num_workers=args.num_workers)  # in order
    if train_set is None:
        return None, val_loader, None
    generator = None
    if is_distributed():
        sampler = DistributedSampler(train_set, seed=args.seed)
    else:
        generator = torch.Generator().manual_seed(args.seed)
        sampler = RandomSampler(train_set, generator=generator)
    drop_last = len(train_set) >= args.batch_size  # pragma: no mutate (`>`: one exact batch is kept either way)
    train_loader = DataLoader(train_set, args.batch_size, sampler=sampler, collate_fn=collate_fn,
                              num_workers=args.num_workers, drop_last=drop_last)
    return train_loader, val_loader, generator


def build_optimizer(args, model):
    """AdamW with two groups (rest at --lr, backbone at --lr-backbone) and a 10x StepLR drop."""
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": rest, "lr": args.lr},
                                   {"params": backbone, "lr": backbone_lr(args)}], weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.lr_drop or 10 ** 9)
    return optimizer, scheduler


def backbone_lr(args):
    return args.lr if args.lr_backbone is None else args.lr_backbone


class JsonlLog:
    """Appends one JSON object per line (main process only)."""

    def __init__(self, path):
        self.path = path if is_main_process() else None

    def __call__(self, record):
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


class EpochLosses:
    """Logs each step record and keeps the epoch's mean losses."""

    def __init__(self, log):
        self.log, self.sums, self.count = log, {}, 0

    def __call__(self, record):
        self.log({"type": "train", **record})
        self.count += 1
        for key, value in record.items():
            if key.startswith("loss"):
                self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self):
        return {key: value / max(self.count, 1) for key, value in self.sums.items()}


def epoch_line(epoch, epochs, step, losses, stats, lr, seconds):
    """'epoch 2/10  step 250  loss 3.210 (ce 0.71 bbox 0.12 giou 0.43 ...)  val AP 0.123 AP50 0.301  lr 1e-04  12 s'."""
    parts = [f"epoch {epoch + 1}/{epochs}", f"step {step}", f"loss {losses.get('loss', float('nan')):.3f}"]
    terms = " ".join(f"{key[5:]} {value:.3f}" for key, value in losses.items() if key.startswith("loss_"))
    if terms:
        parts[-1] += f" ({terms})"
    if stats is not None:
        parts.append(f"val AP {stats['AP']:.3f} AP50 {stats['AP50']:.3f}")
    parts += [f"lr {lr:.2e}", f"{seconds:.0f} s"]
    return "  ".join(parts)


def checkpoint_dict(args, classes, module, optimizer, scheduler, scaler, epoch, step, rng_states):
    """Everything to rebuild the model and continue the run (format: detrx.engine.checkpoint)."""
    return {"model_options": {name: getattr(args, name) for name in MODEL_OPTIONS},
            "classes": classes.to_dict(),
            "image": {"sizes": args.sizes, "max_size": args.image_max_size if args.sizes else None},
            "model": module.state_dict(), "run": run_options(args), "epoch": epoch, "step": step,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_states}


def restore_training(args, checkpoint, optimizer, scheduler, scaler, sampler_generator):
    """Loads the optimizer, schedule and random states; applies honoured option changes.
    Returns (start epoch, step)."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    if scaler is not None and checkpoint["scaler"] is not None:
        scaler.load_state_dict(checkpoint["scaler"])
    apply_learning_rates(optimizer, scheduler, args.lr, backbone_lr(args), args.lr_drop, args.weight_decay)
    states = checkpoint["rng"]
    if len(states) == get_world_size():
        set_rng_state(states[get_rank()], sampler_generator)
    else:
        say(f"resume: the checkpoint holds random states for {len(states)} process(es), this run has "
            f"{get_world_size()}: the data order and noise will differ from an uninterrupted run")
    changes = describe_changes(getattr(args, "resume_changes", {}))
    say(f"resuming {args.resume} after epoch {checkpoint['epoch'] + 1} (step {checkpoint['step']})"
        + (f"; changed from the checkpoint and honoured: {changes}" if changes else "")
        + f"; learning rate now {optimizer.param_groups[0]['lr']:.2e}")
    return checkpoint["epoch"] + 1, checkpoint["step"]


def train(args, epoch_hook=None):
    """Runs the whole job described by args; returns the list of per-epoch eval records.

    epoch_hook(epoch, model, record) is called after each evaluated epoch (model unwrapped from DDP).
    """
    device = init_distributed(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    seed_everything(args.seed + get_rank())
    checkpoint = load_checkpoint(args.resume, for_training=not args.eval) if args.resume else None
    classes = checkpoint_classes(checkpoint) if checkpoint is not None else None
    datasets = build_datasets(args, with_train=not args.eval, classes=classes)
    if checkpoint is not None and not args.eval and datasets.report.classes != classes:
        raise DatasetError(f"the checkpoint was trained on classes {list(classes.names)}; this data has "
                           f"{list(datasets.report.classes.names)}")
    if datasets.report.notes:
        say(datasets.report.format())
    classes = datasets.classes
    train_loader, val_loader, sampler_generator = build_loaders(args, datasets.train, datasets.val)
    model, criterion, postprocess = build_model(args, num_classes=len(classes))
    model.to(device)
    criterion.to(device)
    module = model
    if is_distributed():
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, scheduler = build_optimizer(args, module)
    scaler = torch.amp.GradScaler("cuda") if args.amp else None
    start_epoch, step = 0, 0
    if checkpoint is not None:
        module.load_state_dict(checkpoint["model"])
        if not args.eval:
            start_epoch, step = restore_training(args, checkpoint, optimizer, scheduler, scaler, sampler_generator)
        del checkpoint
    os.makedirs(args.output_dir, exist_ok=True)
    log = JsonlLog(os.path.join(args.output_dir, "log.jsonl"))
    coco_gt = coco_gt_from_dict(datasets.val.coco_dict())
    label_to_category_id = list(classes.category_ids)
    if args.eval:
        stats, table = evaluate(module, postprocess, val_loader, device, coco_gt, label_to_category_id, with_table=True)
        source = args.resume or "random weights (--allow-random)"
        say(f"COCO box evaluation of {source} on {len(datasets.val)} val images:\n{table}")
        record = {"type": "eval", **stats}
        log(record)
        return [record]
    if start_epoch >= args.epochs:
        say(f"nothing to train: the checkpoint has finished epoch {start_epoch} of --epochs {args.epochs}; "
            "give a larger --epochs to train longer")
        return []
    num_params = sum(p.numel() for p in module.parameters())
    say(f"training {args.model} ({num_params / 1e6:.2f} M parameters) on {device}: {len(datasets.train)} train / "
        f"{len(datasets.val)} val images, {len(classes)} classes, epochs {start_epoch + 1}-{args.epochs}; "
        f"output in {args.output_dir}")
    history = []
    for epoch in range(start_epoch, args.epochs):
        start = time.time()
        if is_distributed():
            train_loader.sampler.set_epoch(epoch)
        losses = EpochLosses(log)
        lr = optimizer.param_groups[0]["lr"]
        step = train_one_epoch(model, criterion, train_loader, optimizer, device, epoch, step, scaler,
                               args.clip_max_norm, args.max_steps_per_epoch, losses, args.progress)
        scheduler.step()
        stats = None
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            stats = evaluate(module, postprocess, val_loader, device, coco_gt, label_to_category_id)
            record = {"type": "eval", "epoch": epoch, "step": step, **stats}
            log(record)
            history.append(record)
            if epoch_hook is not None:
                epoch_hook(epoch, module, record)
        say(epoch_line(epoch, args.epochs, step, losses.means(), stats, lr, time.time() - start))
        rng_states = all_gather_list([rng_state(sampler_generator)])  # every process's, in rank order
        if is_main_process():
            state = checkpoint_dict(args, classes, module, optimizer, scheduler, scaler, epoch, step, rng_states)
            save_checkpoint(state, os.path.join(args.output_dir, "checkpoint.pth"))
    return history


def check_data_only(args):
    """`--check-data`: prints the dataset report; exit status 1 when it has errors."""
    report = check_datasets(args, with_train=not args.eval)
    print(format_report(report))
    return 1 if report.errors else 0


def main(argv=None):
    args = parse_args(argv)
    if args.check_data:
        raise SystemExit(check_data_only(args))
    try:
        train(args)
    except DatasetError as error:
        raise SystemExit(f"detrx.train: {error}")
    finally:
        if is_distributed():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
