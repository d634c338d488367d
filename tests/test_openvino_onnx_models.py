"""detrx detectors exported with --runtime-op (MSDA as the `detrx` domain node) run in OpenVINO with
detrx's extension: eager outputs within 1e-4 at image and batch sizes other than the export ones."""
import numpy as np
import pytest
import torch

openvino = pytest.importorskip("openvino")
pytest.importorskip("onnxscript")


from _openvino_helpers import core_with_extension, skip_without_extension  # noqa: E402

skip_without_extension(needs_compiled_op=True)

import detrx.onnx  # noqa: E402
from detrx.onnx.detector import ExportableDetector  # noqa: E402

from _onnx_helpers import operator_types  # noqa: E402
from test_onnx_models import CHECK_SHAPES, EXPORT_SHAPE, random_detector  # noqa: E402


@pytest.mark.parametrize("name, extra", [
    ("deformable_detr", ("--num-feature-levels", "4", "--d-model", "64")),
    ("deformable_detr", ("--two-stage", "--num-feature-levels", "4", "--d-model", "64")),
], ids=["box_refine", "two_stage"])
def test_runtime_op_file_matches_eager_at_other_sizes(tmp_path, name, extra):
    module = ExportableDetector(random_detector(name, *extra)).eval()
    path = str(tmp_path / "model.onnx")
    dynamic = torch.export.Dim.DYNAMIC
    detrx.onnx.export(module, (torch.rand(EXPORT_SHAPE),), path, runtime_op=True, input_names=["images"],
                      output_names=module.output_names, dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},))
    types = {op_type for _, op_type in operator_types(path)}
    assert "MultiScaleDeformableAttention" in types and "GridSample" not in types
    core = core_with_extension()
    model = core.read_model(path)
    assert "MultiScaleDeformableAttention" in {op.get_type_name() for op in model.get_ops()}
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for shape in CHECK_SHAPES:
        images = torch.rand(shape)
        with torch.no_grad():
            expected = module(images)
        got = [np.asarray(out) for out in compiled([images.numpy()]).values()]
        for g, e in zip(got, expected):
            assert g.shape == tuple(e.shape)
            assert np.abs(g - e.numpy()).max() <= 1e-4, shape
