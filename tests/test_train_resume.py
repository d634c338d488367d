"""Resuming: an interrupted-and-resumed run equals an uninterrupted one, model options come from
the checkpoint, changed options are honoured and said; what training and --eval print."""
import json
import os

import pytest
import torch

from detrx import train
from detrx.engine.checkpoint import load_checkpoint

from _models_config import TINY
from helpers import shared_unless_mutating

# dropout, random flips and DN noise all draw random numbers: the resumed run must draw the same
SHORT = [*TINY, "--num-train", "6", "--num-val", "2", "--max-steps-per-epoch", "2", "--dropout", "0.1"]


def _log(folder):
    with open(os.path.join(folder, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope=shared_unless_mutating)
def one_epoch(tmp_path_factory):
    """A dn_detr run stopped after epoch 1 of 3 (its folder)."""
    out = str(tmp_path_factory.mktemp("part"))
    train.main(["--model", "dn_detr", *SHORT, "--epochs", "1", "--output-dir", out])
    return out


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, one_epoch, capsys):
    full = str(tmp_path / "full")
    train.main(["--model", "dn_detr", *SHORT, "--epochs", "3", "--output-dir", full])
    resumed = str(tmp_path / "resumed")
    os.makedirs(resumed)
    for name in ("checkpoint.pth", "log.jsonl"):
        with open(os.path.join(one_epoch, name), "rb") as src, open(os.path.join(resumed, name), "wb") as dst:
            dst.write(src.read())
    capsys.readouterr()
    train.main(["--resume", os.path.join(resumed, "checkpoint.pth"), "--epochs", "3"])  # writes next to it
    assert "changed from the checkpoint and honoured: --epochs 1 -> 3" in capsys.readouterr().out
    expected, got = load_checkpoint(os.path.join(full, "checkpoint.pth")), load_checkpoint(os.path.join(resumed, "checkpoint.pth"))
    assert got["epoch"] == expected["epoch"] == 2 and got["step"] == expected["step"] == 6
    assert expected["model"].keys() == got["model"].keys()
    for name, weights in expected["model"].items():
        assert torch.equal(weights, got["model"][name]), name
    assert [r for r in _log(full) if r["type"] == "train"] == [r for r in _log(resumed) if r["type"] == "train"]


def test_contradicting_model_option_is_refused(one_epoch, capsys):
    checkpoint = os.path.join(one_epoch, "checkpoint.pth")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--resume", checkpoint, "--d-model", "64", "--num-queries", "8", "--model", "detr"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the checkpoint's model was built with other options" in message
    assert "--d-model 64 (checkpoint: 32)" in message and "--model detr (checkpoint: dn_detr)" in message
    assert "--num-queries" not in message  # the same value as the checkpoint's is fine


def test_lr_and_lr_drop_on_resume_are_honoured_and_said(tmp_path, one_epoch, capsys):
    out = str(tmp_path / "more")
    capsys.readouterr()
    train.main(["--resume", os.path.join(one_epoch, "checkpoint.pth"), "--epochs", "3", "--lr", "1e-3",
                "--lr-drop", "2", "--output-dir", out])
    printed = capsys.readouterr().out
    assert "--lr 0.0001 -> 0.001" in printed and "--lr-drop None -> 2" in printed
    lrs = {r["epoch"]: r["lr"] for r in _log(out) if r["type"] == "train"}
    assert lrs == {1: pytest.approx(1e-3), 2: pytest.approx(1e-4)}  # dropped 10x after epoch 2
    checkpoint = load_checkpoint(os.path.join(out, "checkpoint.pth"), for_training=True)
    assert checkpoint["run"]["lr"] == 1e-3 and checkpoint["run"]["lr_drop"] == 2


def test_resume_refuses_other_classes(one_epoch):
    checkpoint = os.path.join(one_epoch, "checkpoint.pth")
    with pytest.raises(SystemExit, match=r"the data has categories the checkpoint's classes lack \(id, name\): 4 'cross'"):
        train.main(["--resume", checkpoint, "--num-classes", "4"])
    with pytest.raises(SystemExit, match=r"the checkpoint was trained on classes \['rectangle', 'ellipse', 'triangle'\]"):
        train.main(["--resume", checkpoint, "--num-classes", "2"])


def test_epoch_lines_without_progress_and_the_eval_table(one_epoch, capsys):
    capsys.readouterr()
    train.main(["--model", "dn_detr", *SHORT, "--epochs", "1", "--output-dir", one_epoch + "_again"])
    lines = capsys.readouterr().out.splitlines()
    [line] = [l for l in lines if l.startswith("epoch ")]
    assert line.startswith("epoch 1/1  step 2  loss ") and "(ce " in line and " bbox_dn " in line and "val AP " in line
    train.main(["--resume", os.path.join(one_epoch, "checkpoint.pth"), "--eval"])
    printed = capsys.readouterr().out
    assert "COCO box evaluation of" in printed
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in printed or "no detections" in printed
    train.main(["--model", "detr", *SHORT, "--eval", "--allow-random", "--output-dir", one_epoch + "_random"])
    assert "random weights (--allow-random)" in capsys.readouterr().out


def test_dino_options_come_from_the_checkpoint_on_resume_and_eval(tmp_path, capsys):
    """DINO with both ablation switches and its own DN budget: `--resume PATH` alone rebuilds that
    model and continues exactly as the uninterrupted run; `--eval` on it runs."""
    options = ["--model", "dino", "--no-mixed-selection", "--no-look-forward-twice", "--dn-number", "20", *SHORT]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train.main([*options, "--epochs", "2", "--output-dir", full])
    train.main([*options, "--epochs", "1", "--output-dir", part])
    train.main(["--resume", os.path.join(part, "checkpoint.pth"), "--epochs", "2"])
    expected = load_checkpoint(os.path.join(full, "checkpoint.pth"))
    got = load_checkpoint(os.path.join(part, "checkpoint.pth"))
    assert {k: got["model_options"][k] for k in ("dn_number", "mixed_selection", "look_forward_twice")} == \
        {"dn_number": 20, "mixed_selection": False, "look_forward_twice": False}
    assert got["step"] == expected["step"] == 4 and expected["model"].keys() == got["model"].keys()
    for name, weights in expected["model"].items():
        assert torch.equal(weights, got["model"][name]), name
    assert [r for r in _log(full) if r["type"] == "train"] == [r for r in _log(part) if r["type"] == "train"]
    capsys.readouterr()
    train.main(["--resume", os.path.join(part, "checkpoint.pth"), "--eval"])
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in capsys.readouterr().out
