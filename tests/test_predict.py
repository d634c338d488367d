"""detrx.predict needs only a checkpoint and images: folders are searched, non-images skipped,
equal file names in different folders kept apart, class names taken from the checkpoint."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detrx import predict
from detrx.engine.checkpoint import save_checkpoint
from detrx.models import MODEL_OPTIONS, build_model

from _models_config import tiny_args


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny detr checkpoint whose classes exist in no dataset on disk."""
    torch.manual_seed(0)
    args = tiny_args("detr")
    model, _, _ = build_model(args, num_classes=2)
    path = str(tmp_path_factory.mktemp("ckpt") / "checkpoint.pth")
    return save_checkpoint({"model_options": {k: getattr(args, k) for k in MODEL_OPTIONS},
                            "classes": {"names": ["apple", "pear"], "category_ids": [3, 9]},
                            "image": {"sizes": None, "max_size": None}, "model": model.state_dict()}, path)


def _image(path, size=(48, 64)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def test_folders_equal_names_and_non_images(tmp_path, checkpoint):
    photos = tmp_path / "photos"
    _image(str(photos / "a" / "x.png"))
    _image(str(photos / "b" / "x.png"))
    _image(str(photos / "b" / "deep" / "y.jpg"))
    (photos / "b" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="skipping .*notes.txt': not an image"):
        predict.main(["--checkpoint", checkpoint, "--images", str(photos), "--out-dir", str(out), "--score-threshold", "0"])
    drawings = sorted(os.path.relpath(os.path.join(root, f), out) for root, _, files in os.walk(out) for f in files)
    assert drawings == ["a/x.png", "b/deep/y.jpg.png", "b/x.png", "predictions.json"]
    with Image.open(out / "a" / "x.png") as drawn:
        assert drawn.size == (64 * 4, 48 * 4)  # --scale 4
    results = json.loads((out / "predictions.json").read_text())
    assert len(results) == 3 and all(len(r["detections"]) == 8 for r in results)  # 8 queries, threshold 0
    assert {d["label"] for r in results for d in r["detections"]} <= {"apple", "pear"}
    assert {d["category_id"] for r in results for d in r["detections"]} <= {3, 9}


def test_files_from_two_folders_with_one_name(tmp_path, checkpoint):
    _image(str(tmp_path / "left" / "img.png"))
    _image(str(tmp_path / "right" / "img.png"))
    out = tmp_path / "out"
    predict.main(["--checkpoint", checkpoint, "--images", str(tmp_path / "left" / "img.png"),
                  str(tmp_path / "right" / "img.png"), "--out-dir", str(out)])
    assert os.path.isfile(out / "left" / "img.png") and os.path.isfile(out / "right" / "img.png")


def test_output_names_are_unique():
    names = predict.output_names(["/d/x", "/d/x.png", "/d/sub/x.png", "/d/x.JPG"])
    assert names == ["x.png", "x_.png", "sub/x.png", "x.JPG.png"]


def test_bad_arguments_are_usage_errors(tmp_path, checkpoint, capsys):
    fake = tmp_path / "fake.pth"
    torch.save({"model": {}}, fake)
    for argv, message in [(["--checkpoint", str(fake), "--images", str(tmp_path)], "is not a detrx checkpoint"),
                          (["--checkpoint", checkpoint, "--images", str(tmp_path / "none.png")], "do not exist"),
                          (["--checkpoint", checkpoint, "--images", str(tmp_path), "--score-threshold", "2"],
                           "must be a number in [0, 1]")]:
        with pytest.raises(SystemExit) as exit_info:
            predict.main([*argv, "--out-dir", str(tmp_path / "out")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
