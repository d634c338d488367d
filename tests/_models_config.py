"""Tiny model / data settings shared by the model, train and data tests (kept small for CI)."""
from detrx.engine.config import parse_args

TINY = ["--d-model", "32", "--nheads", "4", "--enc-layers", "1", "--dec-layers", "2", "--dim-feedforward", "64",
        "--num-queries", "8", "--backbone-widths", "8,16,32,32", "--backbone-blocks", "1,1,1,1",
        "--num-feature-levels", "3", "--num-train", "8", "--num-val", "4", "--image-size", "64",
        "--max-objects", "4", "--object-min-size", "6", "--batch-size", "2", "--dropout", "0", "--no-progress"]


def tiny_args(model="detr", *extra):
    return parse_args(["--model", model, *TINY, *extra])
