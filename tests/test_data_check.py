"""The dataset check: every problem of a COCO-format set reported at once, the classes as the union
of the train and val categories, boxes clipped or dropped the same way in training and evaluation."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detrx import train
from detrx.data import CocoDetection, DatasetError, check_coco_splits
from detrx.data import check as data_check
from detrx.data.build import build_datasets
from detrx.engine.checkpoint import load_checkpoint
from detrx.engine.config import parse_args

from _models_config import TINY


def write_split(folder, images, annotations, categories, sizes=None):
    """Writes PNGs (64 x 48 unless `sizes` says) for the image entries and the annotations JSON."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    rng = np.random.default_rng(0)
    for entry in images:
        h, w = (sizes or {}).get(entry["file_name"], (48, 64))
        entry.setdefault("height", h)
        entry.setdefault("width", w)
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)  # [H, W, 3]
        Image.fromarray(pixels).save(os.path.join(folder, "images", entry["file_name"]))
    ann_file = os.path.join(folder, "annotations.json")
    with open(ann_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return os.path.join(folder, "images"), ann_file


def _ann(ann_id, image_id, category_id, bbox):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0}


def broken_split(tmp_path):
    """One split with one problem of each kind."""
    entries = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}]
    images, ann_file = write_split(str(tmp_path / "broken"), entries, [], [])
    os.remove(os.path.join(images, "b.png"))  # missing image file
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 48, "width": 64},
                       {"id": 2, "file_name": "b.png", "height": 48, "width": 64},
                       {"id": 1, "file_name": "c.png", "height": 48, "width": 64}],  # duplicate image id
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 2, "name": "wolf"}],  # duplicate
            "annotations": [_ann(1, 1, 1, [4, 4, 10, 10]),
                            _ann(2, 1, 7, [4, 4, 10, 10]),      # unknown category id
                            _ann(3, 5, 1, [4, 4, 10, 10]),      # unknown image id
                            _ann(4, 1, 1, [4, 4, 10]),          # malformed bbox
                            _ann(5, 1, 2, [4, 4, -3, 10]),      # negative width: dropped
                            _ann(6, 1, 2, [60, 40, 10, 10])]}   # reaches outside: clipped
    with open(ann_file, "w") as f:
        json.dump(data, f)
    return images, ann_file


def test_every_problem_is_reported_at_once(tmp_path):
    images, ann_file = broken_split(tmp_path)
    report = check_coco_splits({"train": (images, ann_file)})
    kinds = {(p.severity, p.kind) for p in report.problems}
    assert {("error", f"missing image file in {images}"), ("error", "duplicate image id"),
            ("error", "duplicate category id"), ("error", "unknown category id"),
            ("error", "annotation of an unknown image id"),
            ("error", "malformed bbox (need 4 finite numbers x, y, w, h)"),
            ("note", "box with non-positive width or height, dropped"),
            ("note", "box reaching outside its image, clipped to it")} <= kinds
    text = report.format()
    assert "b.png (image id 2)" in text and "2: 'dog' and 'wolf'" in text and "annotation 2 (category id 7)" in text
    assert "annotation 3 (image id 5)" in text and "annotation 4: [4, 4, 10]" in text


def test_unreadable_json_names_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    report = check_coco_splits({"val": (str(tmp_path / "images"), str(bad))})
    [problem] = report.errors
    assert problem.file == str(bad) and problem.kind == "not valid JSON"


def test_check_commands_report_and_exit_1(tmp_path, capsys):
    images, ann_file = broken_split(tmp_path)
    assert data_check.main(["--train-images", images, "--train-ann", ann_file]) == 1
    out = capsys.readouterr().out
    assert "duplicate category id" in out and "missing image file" in out and "6 error(s), 2 note(s)" in out
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", "coco", "--check-data", "--train-images", images, "--train-ann", ann_file,
                    "--val-images", images, "--val-ann", ann_file])
    assert exit_info.value.code == 1 and "duplicate category id" in capsys.readouterr().out


def test_training_refuses_broken_data_before_building_a_model(tmp_path, monkeypatch, capsys):
    images, ann_file = broken_split(tmp_path)
    monkeypatch.setattr(train, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(SystemExit, match="(?s)dataset check found errors.*missing image file.*unknown category id"):
        train.main(["--dataset", "coco", *TINY, "--train-images", images, "--train-ann", ann_file,
                    "--val-images", images, "--val-ann", ann_file, "--output-dir", str(tmp_path / "run")])


def two_splits(tmp_path):
    """train lists cat, dog, bird (ids 1, 2, 5); val lists cat and dog only."""
    categories = [{"id": 5, "name": "bird"}, {"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    train_paths = write_split(str(tmp_path / "train"), [{"id": i, "file_name": f"t{i}.png"} for i in (1, 2, 3, 4)],
                              [_ann(1, 1, 1, [4, 4, 20, 16]), _ann(2, 2, 2, [30, 10, 20, 20]),
                               _ann(3, 3, 5, [10, 20, 24, 20]), _ann(4, 4, 5, [2, 2, 12, 12])], categories)
    val_paths = write_split(str(tmp_path / "val"), [{"id": 7, "file_name": "v7.png"}, {"id": 8, "file_name": "v8.png"}],
                            [_ann(1, 7, 2, [50, 30, 20, 30]),      # reaches outside the 64 x 48 image: clipped
                             _ann(2, 8, 1, [10, 10, 0, 5]),        # zero width: dropped
                             _ann(3, 8, 1, [8, 8, 16, 16])], categories[1:])
    return train_paths, val_paths


def _coco_options(train_paths, val_paths):
    return ["--dataset", "coco", "--train-images", train_paths[0], "--train-ann", train_paths[1],
            "--val-images", val_paths[0], "--val-ann", val_paths[1]]


def test_classes_are_the_union_of_both_splits_and_boxes_agree(tmp_path):
    train_paths, val_paths = two_splits(tmp_path)
    args = parse_args([*TINY, *_coco_options(train_paths, val_paths), "--output-dir", str(tmp_path)])
    datasets = build_datasets(args)
    assert datasets.classes.names == ("cat", "dog", "bird") and datasets.classes.category_ids == (1, 2, 5)
    assert [note.kind for note in datasets.report.notes] == [
        "box reaching outside its image, clipped to it", "box with non-positive width or height, dropped",
        "category only in train's list, kept as a class"]
    val = CocoDetection.from_split(datasets.val.split, datasets.classes)  # no transforms: pixel boxes
    _, target = val[0]
    assert target["boxes"].tolist() == [[50.0, 30.0, 64.0, 48.0]] and target["labels"].tolist() == [1]  # dog
    _, target = val[1]
    assert target["boxes"].tolist() == [[8.0, 8.0, 24.0, 24.0]]  # the zero-width box is gone
    ground_truth = datasets.val.coco_dict()
    assert [a["bbox"] for a in ground_truth["annotations"]] == [[50.0, 30.0, 14.0, 18.0], [8.0, 8.0, 16.0, 16.0]]
    assert [c["id"] for c in ground_truth["categories"]] == [1, 2, 5]
    _, target = datasets.train[2]
    assert target["labels"].tolist() == [2]  # bird is label 2 in training too


def test_category_named_differently_in_the_splits_is_an_error(tmp_path):
    image = [{"id": 1, "file_name": "a.png"}]
    train_paths = write_split(str(tmp_path / "train"), image, [], [{"id": 1, "name": "cat"}])
    val_paths = write_split(str(tmp_path / "val"), [dict(image[0])], [], [{"id": 1, "name": "kitten"}])
    report = check_coco_splits({"train": train_paths, "val": val_paths})
    assert [p.detail for p in report.errors] == ["category id 1 is named 'cat' in one split and 'kitten' in another"]


def test_training_uses_every_class_when_val_lacks_one(tmp_path):
    train_paths, val_paths = two_splits(tmp_path)
    out = str(tmp_path / "run")
    train.main(["--model", "deformable_detr", *TINY, *_coco_options(train_paths, val_paths), "--epochs", "1",
                "--max-steps-per-epoch", "1", "--output-dir", out])
    checkpoint = load_checkpoint(os.path.join(out, "checkpoint.pth"))
    assert checkpoint["classes"] == {"names": ["cat", "dog", "bird"], "category_ids": [1, 2, 5]}
    class_head = [v for k, v in checkpoint["model"].items() if k.startswith("class_embed") and k.endswith("bias")]
    assert class_head and all(bias.shape == (3,) for bias in class_head)  # focal loss: one logit per class


def test_sixteen_bit_images_load_through_the_dataset(tmp_path):
    folder = tmp_path / "grey"
    (folder / "images").mkdir(parents=True)
    grey = np.linspace(0, 65535, 48 * 64).round().astype(np.uint16).reshape(48, 64)
    Image.fromarray(grey).save(folder / "images" / "g.png")
    ann_file = folder / "ann.json"
    ann_file.write_text(json.dumps({"images": [{"id": 1, "file_name": "g.png", "height": 48, "width": 64}],
                                    "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    image, _ = CocoDetection(str(folder / "images"), str(ann_file))[0]
    assert torch.allclose(image[0], torch.from_numpy(np.round(grey / 257) / 255).float())


def test_missing_category_is_an_error_not_a_shift(tmp_path):
    with pytest.raises(DatasetError, match="unknown category id"):
        images, ann_file = write_split(str(tmp_path / "s"), [{"id": 1, "file_name": "a.png"}],
                                       [_ann(1, 1, 3, [1, 1, 5, 5])], [{"id": 1, "name": "cat"}])
        CocoDetection(images, ann_file)


@pytest.mark.parametrize("evaluate_only, exit_code", [(False, 1), (True, 0)])
def test_check_data_looks_at_the_splits_the_run_reads(tmp_path, capsys, evaluate_only, exit_code):
    """A broken train split fails the check of a training run; `--eval` reads only val, which is clean."""
    images, ann_file = broken_split(tmp_path)
    _, val_paths = two_splits(tmp_path)
    argv = ["--dataset", "coco", "--check-data", "--train-images", images, "--train-ann", ann_file,
            "--val-images", val_paths[0], "--val-ann", val_paths[1]]
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv + ["--eval", "--allow-random"] * evaluate_only)
    out = capsys.readouterr().out
    assert exit_info.value.code == exit_code
    assert ("duplicate category id" in out) == (not evaluate_only)
    assert "box with non-positive width or height, dropped" in out  # val was checked either way
