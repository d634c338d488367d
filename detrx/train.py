"""Train / evaluate a DETR-family detector: `python -m detrx.train --model dn_detr ...`.

Per-step losses and per-epoch COCO mAP go to <output-dir>/log.jsonl, the latest state to
<output-dir>/checkpoint.pth (`--resume` continues from it; `--eval --resume` only evaluates).
Multi-process: `torchrun --nproc_per_node 2 -m detrx.train ...` (gloo on CPU, NCCL on CUDA).
"""
import json
import os
import random
import sys

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from detrx.data import build_dataset, collate_fn
from detrx.engine.coco_eval import coco_gt_from_dict
from detrx.engine.config import parse_args
from detrx.engine.dist import get_rank, get_world_size, init_distributed, is_distributed, is_main_process
from detrx.engine.loop import evaluate, train_one_epoch
from detrx.models import build_model


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def build_loaders(args, train_set, val_set):
    """Train loader (shuffled; DistributedSampler under DDP) and val loader (each process a disjoint
    slice, without the padding duplicates DistributedSampler would add to the evaluation)."""
    val_part = Subset(val_set, range(get_rank(), len(val_set), get_world_size()))
    val_loader = DataLoader(val_part, args.batch_size, shuffle=False, collate_fn=collate_fn,
                            num_workers=args.num_workers)
    if train_set is None:
        return None, val_loader
    if is_distributed():
        sampler = DistributedSampler(train_set, seed=args.seed)
    else:
        sampler = RandomSampler(train_set, generator=torch.Generator().manual_seed(args.seed))
    train_loader = DataLoader(train_set, args.batch_size, sampler=sampler, collate_fn=collate_fn,
                              num_workers=args.num_workers, drop_last=len(train_set) >= args.batch_size)
    return train_loader, val_loader


def build_optimizer(args, model):
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": rest, "lr": args.lr},
                                   {"params": backbone, "lr": args.lr_backbone}], weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.lr_drop or 10 ** 9)
    return optimizer, scheduler


class JsonlLog:
    """Appends one JSON object per line (main process only)."""

    def __init__(self, path):
        self.path = path if is_main_process() else None

    def __call__(self, record):
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def train(args, epoch_hook=None):
    """Runs the whole job described by args; returns the list of per-epoch eval records.

    epoch_hook(epoch, model, record) is called after each evaluated epoch (model unwrapped from DDP).
    """
    device = init_distributed(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.amp and device.type != "cuda":
        raise ValueError(f"--amp needs a CUDA device, got {device}")
    seed_everything(args.seed + get_rank())
    train_set = None if args.eval else build_dataset("train", args)
    val_set = build_dataset("val", args)
    train_loader, val_loader = build_loaders(args, train_set, val_set)
    model, criterion, postprocess = build_model(args)
    model.to(device)
    criterion.to(device)
    module = model
    if is_distributed():
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, scheduler = build_optimizer(args, module)
    scaler = torch.amp.GradScaler("cuda") if args.amp else None
    start_epoch, step = 0, 0
    if args.resume:
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=False)
        module.load_state_dict(checkpoint["model"])
        if not args.eval:
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            start_epoch, step = checkpoint["epoch"] + 1, checkpoint["step"]
    os.makedirs(args.output_dir, exist_ok=True)
    log = JsonlLog(os.path.join(args.output_dir, "log.jsonl"))
    coco_gt = coco_gt_from_dict(val_set.coco_dict())
    if args.eval:
        record = {"type": "eval", **evaluate(module, postprocess, val_loader, device, coco_gt, val_set.label_to_category_id)}
        log(record)
        return [record]
    history = []
    for epoch in range(start_epoch, args.epochs):
        if is_distributed():
            train_loader.sampler.set_epoch(epoch)
        step = train_one_epoch(model, criterion, train_loader, optimizer, device, epoch, step, scaler,
                               args.clip_max_norm, args.max_steps_per_epoch,
                               lambda r: log({"type": "train", **r}), args.progress)
        scheduler.step()
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            stats = evaluate(module, postprocess, val_loader, device, coco_gt, val_set.label_to_category_id)
            record = {"type": "eval", "epoch": epoch, "step": step, **stats}
            log(record)
            history.append(record)
            if is_main_process() and args.progress:
                print(json.dumps(record), flush=True)
            if epoch_hook is not None:
                epoch_hook(epoch, module, record)
        if is_main_process():
            torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step, "args": vars(args)},
                       os.path.join(args.output_dir, "checkpoint.pth"))
    return history


def main(argv=None):
    args = parse_args(argv)
    try:
        train(args)
    finally:
        if is_distributed():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
