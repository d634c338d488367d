"""benchmarks/study/rfdetr_compare.py: RF-DETR next to detrx's DETR and DN-DETR on synthetic val images,
end to end with random weights (tiny detrx checkpoints, RF-DETR Nano at 32x32), its metrics and its errors."""
import json
import os
import sys

import pytest
import torch
from PIL import Image

pytest.importorskip("rfdetr")

_saved_path = list(sys.path)  # the benchmarks folder is on the path only while they are imported
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
try:
    from study import rfdetr_compare
    from study.rfdetr_detectors import Detector, build_rfdetr, rfdetr_detector, rfdetr_label_names
finally:
    sys.path[:] = _saved_path

from _models_config import tiny_args  # noqa: E402
from detrx.data import build_synthetic, synthetic_classes  # noqa: E402
from detrx.engine.checkpoint import save_checkpoint  # noqa: E402
from detrx.models import MODEL_OPTIONS, build_model  # noqa: E402
from helpers import shared_unless_mutating  # noqa: E402

DATA = ["--num-val", "3", "--num-classes", "1", "--image-size", "64", "--max-objects", "3",
        "--object-min-size", "12", "--object-max-size", "32"]
RUN = [*DATA, "--rfdetr-resolution", "32", "--threads", "1", "--draw-images", "2", "--scale", "2"]


def write_detrx_checkpoint(path, model_name):
    """A one-class tiny detrx model (random weights) in detrx's checkpoint format."""
    args = tiny_args(model_name, "--num-classes", "1")
    torch.manual_seed(0)
    model, _, _ = build_model(args, num_classes=1)
    save_checkpoint({"model_options": {name: getattr(args, name) for name in MODEL_OPTIONS},
                     "classes": synthetic_classes(1).to_dict(), "image": {"sizes": None, "max_size": None},
                     "model": model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope=shared_unless_mutating)
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    not_a_checkpoint = folder / "notes.pth"
    not_a_checkpoint.write_text("not a checkpoint")
    return {"detr": write_detrx_checkpoint(folder / "detr.pth", "detr"),
            "dn_detr": write_detrx_checkpoint(folder / "dn_detr.pth", "dn_detr"),
            "text": str(not_a_checkpoint)}


@pytest.fixture(scope=shared_unless_mutating)
def run(checkpoints, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("compare") / "compare")
    rfdetr_compare.main(["--detr-checkpoint", checkpoints["detr"], "--dn-detr-checkpoint", checkpoints["dn_detr"],
                         "--allow-random", *RUN, "--out", out])
    with open(out + ".json") as f:
        return out, json.load(f)


def test_every_model_gets_coco_metrics(run):
    _, report = run
    assert [row["name"] for row in report["models"]] == ["detrx detr", "detrx dn_detr", "RF-DETR nano"]
    for row in report["models"]:
        for kind in ("class_aware", "agnostic"):
            stats = row["metrics"][kind]
            assert set(stats) == set(report["metric_names"])
            assert all(0 <= value <= 1 or value == -1 for value in stats.values()), (row["name"], kind, stats)
        assert len(row["latency_s"]) == 3 and row["latency_median_s"] > 0
    # one class: a detrx model's every label is that class, so class-aware and agnostic agree exactly
    for row in report["models"][:2]:
        assert row["class_aware"] and row["metrics"]["class_aware"] == row["metrics"]["agnostic"]


def test_random_weights_are_labelled_everywhere(run):
    out, report = run
    weights = {row["name"]: row["weights"] for row in report["models"]}
    assert weights["RF-DETR nano"] == "random weights"
    assert weights["detrx detr"] == "checkpoint detr.pth"
    with open(out + ".md") as f:
        table = f.read()
    assert "| RF-DETR nano | random weights | 32x32 |" in table
    assert "| detrx detr | checkpoint detr.pth | 64x64 |" in table


def test_side_by_side_picture_size(run):
    out, report = run
    with Image.open(out + ".png") as picture:
        side = 64 * 2
        columns = 1 + len(report["models"])
        assert picture.size == (columns * side, rfdetr_compare.TITLE_HEIGHT + rfdetr_compare.HEADER_HEIGHT + 2 * side)


def detector(label_names, predict=None):
    return Detector("test", "random weights", label_names, "64x64", 0, predict)


def test_metrics_tell_class_errors_from_localisation():
    """Ground-truth boxes score AP 1 both ways; the same boxes with the wrong class keep the agnostic
    AP at 1 and lose the class-aware one; a model with other classes gets the agnostic metrics only."""
    opts = rfdetr_compare.parse_args(["--allow-random", "--num-val", "4", "--num-classes", "2"])
    dataset = build_synthetic("val", opts)
    coco_dict = dataset.coco_dict()
    truth = []
    for index in range(len(dataset)):
        _, boxes, labels = dataset.render(index)
        truth.append({"boxes": boxes, "scores": torch.ones(len(labels)), "labels": labels})
    right = rfdetr_compare.metrics(detector(list(dataset.class_names)), truth, coco_dict)
    assert right["class_aware"]["AP"] == right["agnostic"]["AP"] == 1.0
    swapped = rfdetr_compare.metrics(detector(list(reversed(dataset.class_names))), truth, coco_dict)
    assert swapped["agnostic"]["AP"] == 1.0 and swapped["class_aware"]["AP"] < 0.5
    foreign = rfdetr_compare.metrics(detector(["person", "car"]), truth, coco_dict)
    assert foreign["class_aware"] is None and foreign["agnostic"]["AP"] == 1.0


def test_rfdetr_checkpoint_names_its_classes(tmp_path):
    """A fine-tuned RF-DETR checkpoint (class names in its args) loads with its classes, and is refused
    as another variant's; COCO-pretrained weights label with COCO's category ids."""
    model, _, _ = build_rfdetr("nano", 32, num_classes=1)
    path = tmp_path / "checkpoint_best_ema.pth"
    torch.save({"model": model.state_dict(), "args": {"class_names": ["rectangle"], "num_classes": 1}}, path)
    loaded = rfdetr_detector("nano", 32, str(path), ["rectangle"])
    assert loaded.label_names == ["rectangle"] and loaded.weights == "checkpoint checkpoint_best_ema.pth"
    image = build_synthetic("val", rfdetr_compare.parse_args(["--allow-random"])).render(0)[0]
    with torch.no_grad():
        found = loaded.predict(image)
    assert found["boxes"].shape[1] == 4 and float(found["boxes"].max()) <= 64
    with pytest.raises(ValueError, match="lacks .* weights of RF-DETR small .*--rfdetr-model"):
        rfdetr_detector("small", 32, str(path), ["rectangle"])  # Small has a third decoder layer
    coco = rfdetr_label_names([], 90)
    assert coco[1] == "person" and coco[90] == "toothbrush" and coco[0] is None and coco[12] is None


def error_of(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        rfdetr_compare.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_bad_inputs_give_clear_errors(checkpoints, capsys, tmp_path):
    out = ["--out", str(tmp_path / "x")]
    message = error_of(capsys, [*RUN, *out, "--detr-checkpoint", checkpoints["detr"],
                                "--dn-detr-checkpoint", checkpoints["dn_detr"]])
    assert "--rfdetr-checkpoint" in message and "--allow-random" in message
    message = error_of(capsys, [*RUN, *out, "--allow-random", "--detr-checkpoint", str(tmp_path / "missing.pth")])
    assert "--detr-checkpoint" in message and "does not exist" in message
    message = error_of(capsys, [*RUN, *out, "--allow-random", "--dn-detr-checkpoint", checkpoints["text"]])
    assert "--dn-detr-checkpoint" in message and "could not be read" in message
    message = error_of(capsys, [*RUN, *out, "--allow-random", "--rfdetr-checkpoint", checkpoints["text"]])
    assert "--rfdetr-checkpoint" in message and "could not be read" in message
    message = error_of(capsys, [*RUN, *out, "--allow-random", "--rfdetr-checkpoint", checkpoints["detr"]])
    assert "--rfdetr-checkpoint" in message and "detrx checkpoint" in message
    message = error_of(capsys, [*RUN, *out, "--allow-random", "--rfdetr-resolution", "48"])
    assert "--rfdetr-resolution must be a multiple of 32" in message
    assert not os.path.exists(tmp_path / "x.json")


def test_step_time_reports_the_budget(tmp_path):
    """--step-time: one timed step per case (RF-DETR at 32x32 to stay fast); what 15 minutes allow."""
    out = str(tmp_path / "compare")
    report = rfdetr_compare.main(["--step-time", "--steps", "1", "--rfdetr-resolution", "32", "--threads", "1",
                                  "--out", out])
    with open(out + "_step_time.json") as f:
        assert json.load(f)["rows"] == json.loads(json.dumps(report["rows"]))
    assert [(row["model"], row["batch"], row["input"]) for row in report["rows"]] == [
        ("detrx DETR (study config)", 8, "64x64"), ("RF-DETR nano", 8, "32x32"), ("RF-DETR nano", 2, "32x32")]
    study = report["study"]
    assert (study["epochs"], study["steps_per_epoch"], study["images"]) == (48, 250, 96000)
    for row in report["rows"]:
        assert row["step_median_s"] > 0 and len(row["step_times_s"]) == 1
        assert row["steps_in_budget"] == int(15 * 60 // row["step_median_s"])
        assert row["study_schedule_hours"] == pytest.approx(96000 / row["batch"] * row["step_median_s"] / 3600)
    with open(out + "_step_time.md") as f:
        assert "| RF-DETR nano | 2 | 32x32 |" in f.read()
