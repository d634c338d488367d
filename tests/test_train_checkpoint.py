"""Checkpoints: atomic saves that survive a kill mid-write, validation on load, rebuilding a model."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from detrx.engine.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from detrx.models import MODEL_OPTIONS, build_model

from _models_config import tiny_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Saves checkpoints of ~64 MB in a loop, each filled with its number, announcing each save before
# it starts; the test kills it in the middle of one.
SAVER = textwrap.dedent("""
    import sys, torch
    from detrx.engine.checkpoint import save_checkpoint
    from detrx.engine.config import get_args_parser
    from detrx.models import MODEL_OPTIONS
    options = vars(get_args_parser().parse_args([]))
    base = {"model_options": {k: options[k] for k in MODEL_OPTIONS}, "image": {"sizes": None, "max_size": None},
            "classes": {"names": ["a"], "category_ids": [1]}}
    for n in range(1000):
        weights = torch.full((16 * 2 ** 20,), float(n))
        print("saving", n, flush=True)
        save_checkpoint({**base, "model": {"w": weights}}, sys.argv[1])
""")


def _inference_checkpoint(args, model, names=("a", "b", "c")):
    return {"model_options": {k: getattr(args, k) for k in MODEL_OPTIONS}, "image": {"sizes": None, "max_size": None},
            "classes": {"names": list(names), "category_ids": list(range(1, len(names) + 1))},
            "model": model.state_dict()}


@pytest.mark.parametrize("delay_s", [0.0, 0.02, 0.05])
def test_checkpoint_survives_a_kill_while_it_is_saved(tmp_path, delay_s):
    path = str(tmp_path / "checkpoint.pth")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    saver = subprocess.Popen([sys.executable, "-c", SAVER, path], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        for line in saver.stdout:
            if line.split() == ["saving", "2"]:  # saves 0 and 1 are complete, 2 has begun
                break
        time.sleep(delay_s)
        saver.send_signal(signal.SIGKILL)
    finally:
        saver.wait(timeout=60)
    assert saver.returncode == -signal.SIGKILL
    checkpoint = load_checkpoint(path)
    weights = checkpoint["model"]["w"]
    assert weights.numel() == 16 * 2 ** 20 and weights[0].item() in (1.0, 2.0)
    assert torch.equal(weights, torch.full_like(weights, weights[0].item()))  # one whole save, not a mix
    save_checkpoint(checkpoint, path)  # the next save clears the leftover temporary file
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


def test_load_checkpoint_rejects_what_is_not_a_detrx_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nope.pth"))
    torch.save({"model": {}}, tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="not a detrx checkpoint"):
        load_checkpoint(str(tmp_path / "plain.pth"))
    args = tiny_args("detr")
    model, _, _ = build_model(args)
    path = save_checkpoint(_inference_checkpoint(args, model), str(tmp_path / "good.pth"))
    (tmp_path / "cut.pth").write_bytes(open(path, "rb").read()[:5000])
    with pytest.raises(ValueError, match="cut.pth' could not be read"):
        load_checkpoint(str(tmp_path / "cut.pth"))
    with pytest.raises(ValueError, match=r"not a training checkpoint: it lacks \['run'"):
        load_checkpoint(path, for_training=True)


def test_build_model_from_checkpoint_needs_no_options(tmp_path):
    torch.manual_seed(0)
    args = tiny_args("deformable_detr", "--num-queries", "5")
    model, _, _ = build_model(args, num_classes=4)
    path = save_checkpoint(_inference_checkpoint(args, model, names=("a", "b", "c", "d")), str(tmp_path / "c.pth"))
    rebuilt, postprocess, classes = build_model_from_checkpoint(path)
    assert classes.names == ("a", "b", "c", "d") and classes.category_ids == (1, 2, 3, 4)
    images, mask = torch.rand(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        expected, got = model.eval()(images, mask), rebuilt(images, mask)
    assert got["pred_logits"].shape == (1, 5, 4)
    assert torch.equal(expected["pred_logits"], got["pred_logits"]) and torch.equal(expected["pred_boxes"], got["pred_boxes"])


def test_format_versions_newer_than_this_reader_are_refused_and_older_ones_completed(tmp_path):
    args = tiny_args("detr")
    model, _, _ = build_model(args)
    checkpoint = _inference_checkpoint(args, model)
    path = str(tmp_path / "c.pth")
    save_checkpoint(checkpoint, path)
    assert load_checkpoint(path)["version"] == 1
    torch.save({**torch.load(path, weights_only=True), "version": 2}, path)
    with pytest.raises(ValueError, match="has format version 2; this detrx reads version 1 and older"):
        load_checkpoint(path)
    # a file from before the version entry and before the options added since: read with their defaults
    old = {key: value for key, value in torch.load(path, weights_only=True).items() if key != "version"}
    old["model_options"] = {k: v for k, v in old["model_options"].items()
                            if k not in ("dn_number", "mixed_selection", "deformable_cross_layers")}
    old["model_options"]["look_forward_twice"] = False  # present: kept as written, not reset to the default
    torch.save(old, path)
    options = load_checkpoint(path)["model_options"]
    assert (options["dn_number"], options["mixed_selection"], options["deformable_cross_layers"]) == (100, True, [])
    assert options["look_forward_twice"] is False
    del old["model_options"]["num_queries"]
    torch.save(old, path)
    with pytest.raises(ValueError, match=r"model_options lacks \['num_queries'\]"):
        load_checkpoint(path)
    torch.save([old], path)
    with pytest.raises(ValueError, match="not a detrx checkpoint"):
        load_checkpoint(path)
