"""One --amp training step of every model on CUDA, through the training CLI: the step runs, its
losses are finite, and the checkpoint is written."""
import json
import math
import os

import pytest
import torch

import detrx
from detrx import train

from _models_config import TINY

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and detrx.build_info()["cuda"]),
                                reason="needs a GPU and detrx's CUDA kernels")
MODELS = [("detr", []), ("dn_detr", ["--contrastive"]), ("deformable_detr", []),
          ("deformable_detr", ["--two-stage"]), ("dn_deformable_detr", ["--dn-noise-style", "dino"])]


@pytest.mark.parametrize("model, extra", MODELS, ids=[" ".join([m, *e]) for m, e in MODELS])
def test_cuda_amp_training_step(tmp_path, model, extra):
    out = str(tmp_path / "run")
    train.main(["--model", model, *TINY, *extra, "--num-train", "4", "--num-val", "2", "--epochs", "1",
                "--max-steps-per-epoch", "1", "--device", "cuda", "--amp", "--output-dir", out])
    with open(os.path.join(out, "log.jsonl")) as log:
        records = [json.loads(line) for line in log]
    [step] = [r for r in records if r["type"] == "train"]
    assert math.isfinite(step["loss"]) and step["loss"] > 0
    assert os.path.exists(os.path.join(out, "checkpoint.pth"))
