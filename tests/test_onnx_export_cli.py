"""`python -m detrx.export`: a DN checkpoint exports its inference graph (with post-processing),
the file matches eager PyTorch in onnxruntime, and files that are not detrx checkpoints get a
clear error."""
import re

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

import detrx  # noqa: E402
from _models_config import tiny_args  # noqa: E402
from _onnx_helpers import max_difference, operator_types, run, session  # noqa: E402
from detrx.export import load_detector, main  # noqa: E402
from detrx.data.classes import ClassList  # noqa: E402
from detrx.engine.checkpoint import save_checkpoint  # noqa: E402
from detrx.models import MODEL_OPTIONS, build_model  # noqa: E402

if not detrx.is_compiled():
    pytest.skip("the compiled op is what gets exported", allow_module_level=True)


def write_checkpoint(path, args, state_dict=None, sizes=None, run=None):
    """An inference checkpoint in detrx's format, for the model `args` describe (evaluation resize
    `sizes`, and the run's options `run` when given)."""
    model, _, _ = build_model(args)
    classes = ClassList(tuple(f"class {i}" for i in range(args.num_classes)), tuple(range(1, args.num_classes + 1)))
    save_checkpoint({"model_options": {name: getattr(args, name) for name in MODEL_OPTIONS},
                     "classes": classes.to_dict(), "image": {"sizes": sizes, "max_size": None},
                     "model": state_dict or model.state_dict(), **({"run": run} if run else {})}, str(path))
    return path


@pytest.mark.parametrize("model_name", ["dn_deformable_detr", "dino"])
def test_dn_checkpoint_exports_its_postprocessed_inference_graph(tmp_path, capsys, model_name):
    torch.manual_seed(0)
    checkpoint = write_checkpoint(tmp_path / "checkpoint.pth", tiny_args(model_name))
    out = tmp_path / "model.onnx"
    main(["--checkpoint", str(checkpoint), "--out", str(out), "--dynamic", "--postprocess", "--opset", "20"])
    printed = capsys.readouterr().out
    differences = [float(v) for v in re.findall(r"(?:scores|labels|boxes) ([0-9.e+-]+)", printed)]
    assert len(differences) == 6 and max(differences) <= 1e-4, printed  # two checks of three outputs
    assert "GridSample" not in {op_type for _, op_type in operator_types(out)}
    assert {(entry.domain, entry.version) for entry in onnx.load(str(out)).opset_import} == {("", 20)}

    model, postprocess, _ = load_detector(checkpoint)
    sess = session(out)
    assert [meta.name for meta in sess.get_outputs()] == ["scores", "labels", "boxes"]
    images = torch.rand(2, 3, 80, 72)
    with torch.no_grad():
        detections = postprocess(model(images, torch.zeros(2, 80, 72, dtype=torch.bool)),
                                 torch.tensor([[80, 72]] * 2))
    scores, labels, boxes = run(sess, images)
    for i, expected in enumerate(detections):
        assert (labels[i] == expected["labels"].numpy()).all()
        assert max_difference(scores[i], expected["scores"]) <= 1e-5
        assert max_difference(boxes[i], expected["boxes"]) <= 1e-3  # pixels


@pytest.mark.parametrize("content", ["text", "foreign_dict", "unknown_model"])
def test_non_detrx_checkpoint_is_a_clear_error(tmp_path, capsys, content):
    path = tmp_path / "checkpoint.pth"
    if content == "text":
        path.write_text("not a checkpoint")
    elif content == "foreign_dict":
        torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": 3}, path)
    else:
        torch.save({"model": {}, "args": {"model": "yolo"}}, path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(path), "--out", str(tmp_path / "model.onnx")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert str(path) in error and ("is not a detrx checkpoint" in error or "could not be read" in error), error
    assert not (tmp_path / "model.onnx").exists()


def test_weights_that_do_not_fit_the_options_are_a_clear_error(tmp_path, capsys):
    small = tiny_args("detr")
    path = write_checkpoint(tmp_path / "checkpoint.pth", tiny_args("detr", "--d-model", "64"),
                            build_model(small)[0].state_dict())
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(path), "--out", str(tmp_path / "model.onnx")])
    assert "weights do not fit the detr" in capsys.readouterr().err
