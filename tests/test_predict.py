"""detrx.predict needs only a checkpoint and images: folders are searched, non-images skipped,
equal file names in different folders kept apart, class names taken from the checkpoint."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detrx import predict
from detrx.data import build_transforms
from detrx.engine.checkpoint import build_model_from_checkpoint, save_checkpoint
from detrx.models import MODEL_OPTIONS, build_model

from _models_config import tiny_args
from helpers import shared_unless_mutating


def _save_tiny_checkpoint(path, image):
    """A tiny detr checkpoint whose classes exist in no dataset on disk."""
    torch.manual_seed(0)
    args = tiny_args("detr")
    model, _, _ = build_model(args, num_classes=2)
    return save_checkpoint({"model_options": {k: getattr(args, k) for k in MODEL_OPTIONS},
                            "classes": {"names": ["apple", "pear"], "category_ids": [3, 9]},
                            "image": image, "model": model.state_dict()}, str(path))


@pytest.fixture(scope=shared_unless_mutating)
def checkpoint(tmp_path_factory):
    return _save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.pth", {"sizes": None, "max_size": None})


@pytest.fixture(scope=shared_unless_mutating)
def resizing_checkpoint(tmp_path_factory):
    """Trained at sizes 24 and 40, longest side at most 48: a 48x64 image is seen at 36x48."""
    return _save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.pth", {"sizes": [24, 40], "max_size": 48})


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


def _expected_detections(checkpoint_path, image):
    """The checkpoint's model on `image` [H, W, 3] uint8, seen the way it was evaluated in training."""
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    model, postprocess, _ = build_model_from_checkpoint(checkpoint)
    transforms = build_transforms(False, checkpoint["image"]["sizes"], checkpoint["image"]["max_size"])
    tensor, _ = transforms(torch.from_numpy(image).permute(2, 0, 1).float() / 255,
                           {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
    assert tensor.shape[-2:] == (36, 48)
    with torch.no_grad():
        outputs = model(tensor[None], torch.zeros(1, *tensor.shape[-2:], dtype=torch.bool))
        return postprocess(outputs, torch.tensor([image.shape[:2]]))[0]


def test_predictions_json_holds_the_models_detections(tmp_path, resizing_checkpoint, capsys):
    _image(str(tmp_path / "in" / "a.png"))
    _image(str(tmp_path / "in" / "b.png"))
    image = np.array(Image.open(tmp_path / "in" / "b.png"))  # [48, 64, 3]
    expected = _expected_detections(resizing_checkpoint, image)
    scores = sorted(expected["scores"].tolist(), reverse=True)
    threshold = scores[2]  # a detection scoring exactly the threshold is kept
    out = tmp_path / "out"
    predict.main(["--checkpoint", resizing_checkpoint, "--images", str(tmp_path / "in"), "--out-dir", str(out),
                  "--score-threshold", repr(threshold), "--scale", "2"])

    assert capsys.readouterr().out.splitlines() == [str(out / "a.png"), str(out / "b.png")]
    results = json.loads((out / "predictions.json").read_text())
    assert [(r["image"], r["drawing"]) for r in results] == [
        (str(tmp_path / "in" / "a.png"), str(out / "a.png")), (str(tmp_path / "in" / "b.png"), str(out / "b.png"))]
    kept = expected["scores"] >= threshold
    detections = results[1]["detections"]
    assert len(detections) == 3 == int(kept.sum())
    names, ids = ["apple", "pear"], [3, 9]
    labels = expected["labels"][kept].tolist()
    assert [d["label"] for d in detections] == [names[label] for label in labels]
    assert [d["category_id"] for d in detections] == [ids[label] for label in labels]
    torch.testing.assert_close(torch.tensor([d["score"] for d in detections]), expected["scores"][kept])
    torch.testing.assert_close(torch.tensor([d["box"] for d in detections]), expected["boxes"][kept])
    with Image.open(out / "b.png") as drawn:
        assert drawn.size == (64 * 2, 48 * 2)  # --scale 2


def test_no_images_is_an_error_naming_the_inputs(tmp_path, checkpoint):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="not an image"), pytest.raises(SystemExit) as exit_info:
        predict.main(["--checkpoint", checkpoint, "--images", str(tmp_path / "docs"), "--out-dir", str(tmp_path / "out")])
    assert "no image files in" in str(exit_info.value.code) and str(tmp_path / "docs") in str(exit_info.value.code)


@pytest.mark.parametrize("drop, named", [("--checkpoint", "--checkpoint"), ("--images", "--images"),
                                         ("--out-dir", "--out-dir")])
def test_required_options_are_named_when_missing(tmp_path, checkpoint, capsys, drop, named):
    _image(str(tmp_path / "x.png"))
    given = {"--checkpoint": [checkpoint], "--images": [str(tmp_path / "x.png")], "--out-dir": [str(tmp_path / "out")]}
    argv = [word for option, values in given.items() if option != drop for word in (option, *values)]
    with pytest.raises(SystemExit) as exit_info:
        predict.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("usage: detrx.predict")
    assert "the following arguments are required: " + named in err


@pytest.mark.parametrize("argv_tail, message", [(["--scale", "0"], "--scale"),
                                                (["--out-dir", "FILE"], "exists and is not a folder")])
def test_bad_scale_and_out_dir_are_usage_errors(tmp_path, checkpoint, capsys, argv_tail, message):
    _image(str(tmp_path / "x.png"))
    (tmp_path / "FILE").write_text("a file where the output folder should go")
    argv = ["--checkpoint", checkpoint, "--images", str(tmp_path / "x.png"), "--out-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        predict.main(argv + [str(tmp_path / w) if w == "FILE" else w for w in argv_tail])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predict_on_cuda_matches_cpu(tmp_path, resizing_checkpoint):
    _image(str(tmp_path / "in" / "a.png"))
    for device in ("cpu", "cuda"):
        predict.main(["--checkpoint", resizing_checkpoint, "--images", str(tmp_path / "in"),
                      "--out-dir", str(tmp_path / device), "--score-threshold", "0", "--device", device])
    on_cpu, on_cuda = (json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("cpu", "cuda"))
    torch.testing.assert_close(torch.tensor([d["box"] for d in on_cuda[0]["detections"]]),
                               torch.tensor([d["box"] for d in on_cpu[0]["detections"]]), rtol=1e-4, atol=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no CUDA device is")
def test_cuda_without_a_device_is_a_usage_error(tmp_path, checkpoint, capsys):
    _image(str(tmp_path / "x.png"))
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--checkpoint", checkpoint, "--images", str(tmp_path / "x.png"), "--out-dir", str(tmp_path / "out"),
                      "--device", "cuda:0"])
    assert exit_info.value.code == 2 and "--device cuda:0: no CUDA device is available" in capsys.readouterr().err
