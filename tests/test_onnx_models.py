"""ONNX export of whole detrx detectors (random weights): onnxruntime vs eager at image sizes and
batch sizes other than the export ones; no GridSample; DN models refuse a training-mode export."""
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnx.numpy_helper  # noqa: E402

import detrx  # noqa: E402
from _models_config import tiny_args  # noqa: E402
from _onnx_helpers import max_difference, operator_types, run, session  # noqa: E402
from detrx.models import build_model  # noqa: E402
from detrx.nn import MSDeformAttn  # noqa: E402

if not detrx.is_compiled():
    pytest.skip("the compiled op is what gets exported", allow_module_level=True)
import detrx.onnx  # noqa: E402
from detrx.onnx.detector import ExportableDetector  # noqa: E402

# torch.export fixes every axis that has size 1 in the example input: the export size must make
# every level at least 2 x 2 (the stride-64 level too), and the batch at least 2.
EXPORT_SHAPE = (2, 3, 128, 96)
CHECK_SHAPES = ((1, 3, 64, 64), (3, 3, 72, 104))  # at 64 px the stride-64 level is 1 x 1


def random_detector(name, *extra):
    torch.manual_seed(0)
    model, _, _ = build_model(tiny_args(name, *extra))
    with torch.no_grad():  # MSDA heads away from their initialisation, as after training
        for module in model.modules():
            if isinstance(module, MSDeformAttn):
                module.sampling_offsets.weight.normal_(0, 0.2)
                module.attention_weights.weight.normal_(0, 0.2)
    return model.eval()


def export_and_compare(tmp_path, model):
    """Exports at EXPORT_SHAPE with dynamic axes, checks onnxruntime against eager at CHECK_SHAPES -> the file."""
    module = ExportableDetector(model).eval()
    path = tmp_path / "model.onnx"
    dynamic = torch.export.Dim.DYNAMIC
    detrx.onnx.export(module, (torch.rand(EXPORT_SHAPE),), path, input_names=["images"],
                      output_names=module.output_names, dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},))
    assert "GridSample" not in {op_type for _, op_type in operator_types(path)}
    sess = session(path)
    assert [meta.name for meta in sess.get_outputs()] == ["logits", "boxes"]
    for shape in CHECK_SHAPES:
        images = torch.rand(shape)
        with torch.no_grad():
            expected = module(images)
        got = run(sess, images)
        assert got[0].shape == tuple(expected[0].shape) and got[1].shape == tuple(expected[1].shape)
        assert max(max_difference(g, e) for g, e in zip(got, expected)) <= 1e-4, shape
    return path


def test_deformable_detr_with_box_refinement_and_two_stage(tmp_path):
    # d_model 64: GroupNorm(32 groups) of a 1 x 1 level needs 2 channels per group
    model = random_detector("deformable_detr", "--two-stage", "--num-feature-levels", "4", "--d-model", "64")
    assert model.box_refine and model.two_stage
    export_and_compare(tmp_path, model)


def test_dino_without_its_denoising_part(tmp_path):
    """DINO (4 levels, as in the paper) exports its inference graph: mixed query selection and the
    per-layer query positions are in it, the DN label embedding is not."""
    model = random_detector("dino", "--num-feature-levels", "4", "--d-model", "64")
    path = export_and_compare(tmp_path, model)
    label_embed = model.denoising.label_embed.weight.detach().numpy()
    # flattened: constant folding may give a weight another shape
    weights = [onnx.numpy_helper.to_array(t).ravel() for t in onnx.load(str(path)).graph.initializer]
    content = model.query_selection.content.weight.detach().numpy().ravel()
    assert any(np.array_equal(w, content) for w in weights)
    assert not any(np.array_equal(w, label_embed.ravel()) for w in weights)


def test_detr(tmp_path):
    export_and_compare(tmp_path, random_detector("detr"))


@pytest.mark.parametrize("name", ["dn_detr", "dn_deformable_detr", "dino"])
def test_training_mode_dn_model_is_refused(tmp_path, name):
    model = random_detector(name).train()
    with pytest.raises(ValueError, match="training mode.*DN.*model.eval"):
        detrx.onnx.export(ExportableDetector(model), (torch.rand(EXPORT_SHAPE),), tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
    detrx.onnx.check_exportable(ExportableDetector(model.eval()))  # the detector's own mode decides
