"""detrx checkpoints: one file that rebuilds the detector and continues its training.

A checkpoint is a dict saved with `torch.save` that loads with `torch.load(weights_only=True)`:

    "format"         "detrx-checkpoint"
    "version"        1
    "model_options"  {option: value} for every name in detrx.models.MODEL_OPTIONS: the model name
                     ("detr", "dn_detr", ...), architecture, loss and matcher settings
    "classes"        {"names": [str], "category_ids": [int]}: label i is names[i], written to COCO
                     results as category_ids[i]; len(names) is the model's class count
    "image"          {"sizes": [int] or None, "max_size": int or None}: the evaluation resize
                     (shorter side max(sizes), longer side capped at max_size; None = keep the size)
    "model"          the model's state_dict
  training state (present in checkpoints written by `detrx.train`):
    "run"            {option: value}: every `detrx.train` option of the run
    "epoch"          the last finished epoch (0-based); "step": the global step after it
    "optimizer", "scheduler"   state_dicts; "scaler": the AMP GradScaler's state_dict or None
    "rng"            one dict per process (rank order): {"python", "numpy", "torch", "cuda", "sampler"}
                     random-number states, so a resumed run continues the same data order and noise

`save_checkpoint` writes atomically: a temporary file in the same folder, flushed and fsynced, then
`os.replace`; the previous checkpoint stays whole until the new one is complete.
"""
import argparse
import glob
import os
import tempfile

import torch

from detrx.data.classes import ClassList
from detrx.models import MODEL_OPTIONS, build_model
from detrx.models.registry import ADDED_MODEL_OPTIONS

FORMAT = "detrx-checkpoint"
VERSION = 1
INFERENCE_KEYS = ("model_options", "classes", "image", "model")
TRAINING_KEYS = ("run", "epoch", "step", "optimizer", "scheduler", "scaler", "rng")


def save_checkpoint(checkpoint, path):
    """Writes the checkpoint dict (format and version added) to `path` atomically."""
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")):
        os.remove(stale)  # left by a process killed while saving
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **checkpoint}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)
    return path


def _fsync_folder(folder):
    """Makes the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path, for_training=False):
    """Reads and validates a detrx checkpoint -> its dict (tensors on the CPU).

    ValueError, naming the file, when it is missing, unreadable or cut short, not a detrx checkpoint,
    from a newer format, or lacks keys (the training keys too when for_training).
    """
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} does not exist or is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, pickle or unsafe-type errors
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"checkpoint {path!r} could not be read ({type(error).__name__}: {first_line}); "
                         "is it a complete file written by detrx.train?") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a detrx checkpoint (no 'format': {FORMAT!r} entry); "
                         "detrx checkpoints are written by `python -m detrx.train`")
    if checkpoint.get("version", 0) > VERSION:
        raise ValueError(f"checkpoint {path!r} has format version {checkpoint['version']}; this detrx reads "
                         f"version {VERSION} and older")
    required = INFERENCE_KEYS + (TRAINING_KEYS if for_training else ())
    missing = [key for key in required if key not in checkpoint]
    if missing:
        what = "a training checkpoint" if for_training else "a detrx checkpoint"
        raise ValueError(f"checkpoint {path!r} is not {what}: it lacks {missing}")
    for name, value in ADDED_MODEL_OPTIONS.items():
        checkpoint["model_options"].setdefault(name, value)
    missing_options = [name for name in MODEL_OPTIONS if name not in checkpoint["model_options"]]
    if missing_options:
        raise ValueError(f"checkpoint {path!r}: model_options lacks {missing_options}")
    return checkpoint


def checkpoint_classes(checkpoint):
    """The ClassList stored in a checkpoint dict."""
    return ClassList.from_dict(checkpoint["classes"])


def build_model_from_checkpoint(checkpoint):
    """A checkpoint dict or path -> (model in eval mode with its weights, postprocess, ClassList).

    The model is rebuilt from the checkpoint's model options and class count alone.
    """
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    options = argparse.Namespace(**checkpoint["model_options"])
    classes = checkpoint_classes(checkpoint)
    model, _, postprocess = build_model(options, num_classes=len(classes))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), postprocess, classes

