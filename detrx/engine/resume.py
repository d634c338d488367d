"""`--resume`: options from the checkpoint, refusals and reported changes, and restoring the state.

Model options always come from the checkpoint; one given on the command line with another value is
refused (the weights would not fit it). Every other option not given comes from the checkpoint's
run, so `--resume PATH` alone continues the same run; one given with another value (a new `--lr`,
more `--epochs`) is honoured and reported in `args.resume_changes`. The output folder is the
checkpoint's own unless `--output-dir` is given.
"""
import os
import random

import numpy as np
import torch

from detrx.engine.checkpoint import load_checkpoint
from detrx.models import MODEL_OPTIONS

# Options that describe this invocation, not the run: never taken from the checkpoint.
PER_INVOCATION = ("resume", "eval", "allow_random", "check_data", "device", "num_workers", "progress",
                  "output_dir", "resume_changes")


def _flag(name):
    return "--" + name.replace("_", "-")


def merge_checkpoint_options(args, given, error):
    """args with the checkpoint's options for those not in `given` (dest names set on the command
    line); error(message) for an unreadable checkpoint or a contradicting model option."""
    try:
        checkpoint = load_checkpoint(args.resume, for_training=not args.eval)
    except ValueError as problem:
        error(str(problem))
    model_options = checkpoint["model_options"]
    conflicts = [f"{_flag(name)} {getattr(args, name)} (checkpoint: {model_options[name]})"
                 for name in MODEL_OPTIONS if name in given and getattr(args, name) != model_options[name]]
    if conflicts:
        error("--resume: the checkpoint's model was built with other options; leave these out (they come "
              "from the checkpoint) or start a new run: " + ", ".join(conflicts))
    run, changes = checkpoint.get("run", {}), {}
    for name, value in list(vars(args).items()):
        if name in MODEL_OPTIONS:
            setattr(args, name, model_options[name])
        elif name in PER_INVOCATION or name not in run:
            continue
        elif name not in given:
            setattr(args, name, run[name])
        elif run[name] != value:
            changes[name] = (run[name], value)
    if "output_dir" not in given:
        args.output_dir = os.path.dirname(os.path.abspath(args.resume))
    args.resume_changes = changes
    return args


def run_options(args):
    """The options a checkpoint stores as its run (what a resume takes back)."""
    return {k: v for k, v in vars(args).items() if k not in PER_INVOCATION}


def describe_changes(changes):
    """'--lr 0.0001 -> 0.001, --epochs 2 -> 4' (empty string for none)."""
    return ", ".join(f"{_flag(name)} {old} -> {new}" for name, (old, new) in sorted(changes.items()))


def rng_state(sampler_generator=None):
    """This process's random-number states as plain Python values (they travel between processes
    and load with weights_only)."""
    kind, keys, *rest = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (kind, keys.tolist(), *rest),
            "torch": torch.get_rng_state().tolist(),
            "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
            "sampler": sampler_generator.get_state().tolist() if sampler_generator is not None else None}


def _bytes_tensor(values):
    return torch.tensor(values, dtype=torch.uint8)


def set_rng_state(state, sampler_generator=None):
    """Restores what rng_state saved."""
    random.setstate(_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes_tensor(s) for s in state["cuda"]])
    if sampler_generator is not None and state["sampler"] is not None:
        sampler_generator.set_state(_bytes_tensor(state["sampler"]))


def _tuples(value):
    """Lists back to tuples (random.setstate wants the tuples getstate gave)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def apply_learning_rates(optimizer, scheduler, lr, lr_backbone, lr_drop, weight_decay):
    """Sets new base learning rates / drop interval / weight decay on a restored optimizer and
    StepLR; the current rates become what the schedule gives at the restored epoch."""
    scheduler.base_lrs = [lr, lr_backbone]
    scheduler.step_size = lr_drop or 10 ** 9
    drops = scheduler.last_epoch // scheduler.step_size
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["initial_lr"] = base
        group["lr"] = base * scheduler.gamma ** drops
        group["weight_decay"] = weight_decay
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
