"""The training CLI: one short epoch with a checkpoint, --resume continuing from it, --eval,
drawing predictions, and torchrun with two CPU processes (gloo)."""
import json
import os
import subprocess
import sys

import pytest

from detrx import predict, train
from detrx.data import export_synthetic

from _models_config import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = TINY + ["--num-train", "6", "--num-val", "4", "--max-steps-per-epoch", "2"]


def _read_log(path):
    with open(os.path.join(path, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_train_checkpoint_resume_eval_and_draw(tmp_path):
    out = str(tmp_path / "run")
    train.main(["--model", "detr", *SHORT, "--epochs", "1", "--output-dir", out])
    log = _read_log(out)
    steps = [r for r in log if r["type"] == "train"]
    assert [r["step"] for r in steps] == [0, 1] and all(r["epoch"] == 0 for r in steps)
    assert {"loss", "loss_ce", "loss_bbox", "loss_giou", "matched_total", "lr"} <= set(steps[0])
    evals = [r for r in log if r["type"] == "eval"]
    assert len(evals) == 1 and {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(evals[0])
    checkpoint = os.path.join(out, "checkpoint.pth")
    assert os.path.exists(checkpoint)

    train.main(["--model", "detr", *SHORT, "--epochs", "2", "--output-dir", out, "--resume", checkpoint])
    resumed = [r for r in _read_log(out)[len(log):] if r["type"] == "train"]
    assert [r["step"] for r in resumed] == [2, 3] and all(r["epoch"] == 1 for r in resumed)

    train.main(["--model", "detr", *SHORT, "--output-dir", out, "--resume", checkpoint, "--eval"])
    assert _read_log(out)[-1]["type"] == "eval"

    images = str(tmp_path / "images")
    export_synthetic.main(["--out-dir", images, "--splits", "val", "--num-val", "2", "--image-size", "64"])
    drawn = str(tmp_path / "drawn")
    predict.main(["--checkpoint", checkpoint, "--images", os.path.join(images, "val", "images"), "--out-dir", drawn,
                  "--score-threshold", "0"])
    assert sorted(os.listdir(drawn)) == ["000000.png", "000001.png", "predictions.json"]


@pytest.mark.parametrize("model", ["deformable_detr", "dn_detr"])
def test_train_one_epoch_other_models(tmp_path, model):
    out = str(tmp_path / "run")
    train.main(["--model", model, *SHORT, "--epochs", "1", "--max-steps-per-epoch", "1", "--output-dir", out])
    log = _read_log(out)
    assert [r["type"] for r in log] == ["train", "eval"]
    if model.startswith("dn_"):
        assert {"loss_ce_dn", "loss_bbox_dn", "loss_giou_dn"} <= set(log[0])
    assert os.path.exists(os.path.join(out, "checkpoint.pth"))


def test_torchrun_two_cpu_processes(tmp_path):
    out = str(tmp_path / "ddp")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "detrx.train", "--model", "detr", *SHORT, "--num-train", "8", "--epochs", "1", "--device", "cpu", "--output-dir", out]
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = _read_log(out)
    # 8 images, 2 processes x batch 2: each process takes 2 steps, and only rank 0 writes the log
    assert [r["step"] for r in log if r["type"] == "train"] == [0, 1]
    assert len([r for r in log if r["type"] == "eval"]) == 1
    assert os.path.exists(os.path.join(out, "checkpoint.pth"))
