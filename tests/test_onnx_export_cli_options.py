"""`python -m detrx.export`'s options: the export size and batch (the checkpoint's image size unless
given), the outputs with and without --postprocess, the onnxruntime check and its failure, the
plugin files it does not check, and bad values named."""
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

import detrx  # noqa: E402
import detrx.export  # noqa: E402
from _models_config import tiny_args  # noqa: E402
from detrx.export import DEFAULT_IMAGE_SIZE, main, trained_image_size  # noqa: E402
from test_onnx_export_cli import write_checkpoint  # noqa: E402

if not detrx.is_compiled():
    pytest.skip("the compiled op is what gets exported", allow_module_level=True)


def input_shape(path):
    """The `images` input's dims in the file: ints, or names for dynamic axes."""
    (graph_input,) = onnx.load(str(path)).graph.input
    assert graph_input.name == "images"
    return [dim.dim_param or dim.dim_value for dim in graph_input.type.tensor_type.shape.dim]


def output_names(path):
    return [output.name for output in onnx.load(str(path)).graph.output]


def test_trained_image_size_is_the_largest_evaluation_size_else_the_runs_else_the_default():
    assert trained_image_size({"image": {"sizes": [40, 24, 32]}, "run": {"image_size": 64}}) == 40
    assert trained_image_size({"image": {"sizes": None}, "run": {"image_size": 48}}) == 48
    assert trained_image_size({"image": {"sizes": []}, "run": {}}) == DEFAULT_IMAGE_SIZE
    assert trained_image_size({"image": {"sizes": None}}) == DEFAULT_IMAGE_SIZE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A DETR checkpoint evaluated at sizes 24 and 40 (so not at its run's --image-size 64)."""
    torch.manual_seed(0)
    return write_checkpoint(tmp_path_factory.mktemp("export") / "checkpoint.pth", tiny_args("detr"),
                            sizes=[24, 40], run={"image_size": 64})


def test_static_export_is_at_the_evaluation_size_with_one_image_and_checked(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    main(["--checkpoint", str(checkpoint), "--out", str(out)])
    printed = capsys.readouterr().out.splitlines()
    assert input_shape(out) == [1, 3, 40, 40]
    assert output_names(out) == ["logits", "boxes"]
    assert printed[0] == f"wrote {out}: detr, inputs images [1, 3, 40, 40], outputs logits, boxes"
    assert len(printed) == 2 and printed[1].startswith("onnxruntime vs eager on images [1, 3, 40, 40]: "
                                                        "largest |difference| logits "), printed


def test_given_height_width_and_batch_are_the_export_shape(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    main(["--checkpoint", str(checkpoint), "--out", str(out), "--height", "48", "--width", "32",
          "--batch-size", "3", "--postprocess", "--no-check"])
    assert input_shape(out) == [3, 3, 48, 32]
    assert output_names(out) == ["scores", "labels", "boxes"]
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {out}: detr, inputs images [3, 3, 48, 32], outputs scores, labels, boxes"]


def test_height_alone_sets_a_square_export(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    main(["--checkpoint", str(checkpoint), "--out", str(out), "--height", "56", "--no-check"])
    assert input_shape(out) == [1, 3, 56, 56]


def test_dynamic_export_is_checked_at_two_batch_and_image_sizes(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    main(["--checkpoint", str(checkpoint), "--out", str(out), "--dynamic"])
    printed = capsys.readouterr().out.splitlines()
    assert [isinstance(dim, str) for dim in input_shape(out)] == [True, False, True, True]
    assert printed[0] == f"wrote {out}: detr, inputs images [B, 3, H, W], outputs logits, boxes"
    # exported at the smallest dynamic size (above the evaluation size 40), then one image and
    # one step of each side larger
    assert [line.split(":")[0] for line in printed[1:]] == [
        "onnxruntime vs eager on images [2, 3, 128, 128]", "onnxruntime vs eager on images [3, 3, 160, 144]"]


def test_a_file_that_fails_its_check_is_an_error(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(detrx.export, "CHECK_TOLERANCE", -1.0)  # no file can be that close
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "model.onnx")])
    assert str(exit_info.value.code).startswith("detrx.export: the written file failed its check: ")


def test_trt_plugin_file_skips_the_check_and_names_tensorrt(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "deformable.pth", tiny_args("deformable_detr"), sizes=[64])
    out = tmp_path / "model.onnx"
    main(["--checkpoint", str(checkpoint), "--out", str(out), "--trt-plugin"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[1] == ("onnxruntime check skipped: onnxruntime cannot run TensorRT's plugin node; "
                          "run the file in TensorRT with that plugin")
    assert "MultiscaleDeformableAttnPlugin_TRT" in {node.op_type for node in onnx.load(str(out)).graph.node}


@pytest.mark.parametrize("option, value, expected", [
    ("--height", "0", "--height must be >= 1, got 0"),
    ("--width", "-2", "--width must be >= 1, got -2"),
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--opset", "17", "--opset must be >= 18 (the exporter's operator library), got 17"),
])
def test_bad_values_are_named_before_anything_is_read(tmp_path, capsys, option, value, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "model.onnx"), option, value])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"error: {expected}")


def test_runtime_op_and_trt_plugin_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "model.onnx"),
              "--runtime-op", "--trt-plugin"])
    assert "--trt-plugin and --runtime-op are two ways of writing MSDA: choose one" in capsys.readouterr().err


def test_checkpoint_and_out_are_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--dynamic"])
    assert exit_info.value.code == 2
    assert "error: the following arguments are required: --checkpoint, --out" in capsys.readouterr().err
