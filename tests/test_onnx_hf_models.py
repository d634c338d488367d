"""HF Deformable DETR, RT-DETR, D-FINE and rfdetr's RF-DETR through detrx.onnx.export with the drop-in
patched: no GridSample in the file, and onnxruntime and OpenVINO match the unpatched model's eager
outputs (HF's / rfdetr's own grid_sample path) within 1e-4, at image sizes other than the export size.
RF-DETR and D-FINE get fixed-size files, one per size (docs/export.md says why)."""
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")
openvino = pytest.importorskip("openvino")

import detrx  # noqa: E402
from _onnx_helpers import operator_types, session  # noqa: E402

if not detrx.is_compiled():
    pytest.skip("the compiled op is what gets exported", allow_module_level=True)
import detrx.onnx  # noqa: E402
from detrx.onnx.detector import HFExportableDetector  # noqa: E402
from detrx.integrations import transformers as detrx_hf  # noqa: E402
from test_integrations_transformers import (build_d_fine, build_deformable_detr, build_rt_detr,  # noqa: E402
                                            perturb_sampling_offsets)
from helpers import shared_unless_mutating  # noqa: E402

EXPORT_SHAPE = (2, 3, 128, 128)
CHECK_SHAPES = ((1, 3, 160, 96), (1, 3, 96, 192))
TOLERANCE = 1e-4
HF_FAMILIES = {"deformable_detr": build_deformable_detr, "rt_detr": build_rt_detr, "d_fine": build_d_fine}
FIXED_SIZE = {"d_fine"}  # its dynamic file runs at other sizes, but its logits differ there


def trained_like(model):
    """Sampling offsets off the pixel centres, no constant-initialised heads (zero weights make every
    query score tie and the top-k query selection arbitrary), and batch norms calibrated on random
    images: with their initial statistics RT-DETR's tiny encoder outputs ~1e-7, so nothing after it
    would depend on the image, MSDA included."""
    perturb_sampling_offsets(model, torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.unique().numel() < 2:
                module.weight.normal_(0, 0.3, generator=generator)
        norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # running statistics = the calibration batch's
        model.eval()
        for norm in norms:
            norm.train()
        model(pixel_values=torch.rand(2, 3, *EXPORT_SHAPE[2:], generator=generator))
    return model.eval()


def openvino_outputs(path, images):
    """OpenVINO's CPU plugin computes in bfloat16 by default where the CPU has it: ask for float32."""
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(images.numpy())
    return [result[output] for output in compiled.outputs]


def assert_runtimes_match(path, expected_by_images):
    sess = session(path)
    for images, expected in expected_by_images:
        feeds = {sess.get_inputs()[0].name: images.numpy()}
        for runtime, got in (("onnxruntime", sess.run(None, feeds)), ("openvino", openvino_outputs(path, images))):
            assert len(got) == len(expected)
            for g, e in zip(got, expected):
                assert g.shape == tuple(e.shape), (runtime, list(images.shape))
                difference = float(np.abs(g - e.numpy()).max())
                assert difference <= TOLERANCE, (runtime, list(images.shape), difference)


@pytest.mark.dynamic_export
@pytest.mark.parametrize("family", HF_FAMILIES)
def test_hf_model_export_matches_hf_eager(tmp_path, family):
    torch.manual_seed(0)
    model = trained_like(HF_FAMILIES[family]()[0])  # built before patch()
    module = HFExportableDetector(model).eval()
    checks = [torch.rand(shape, generator=torch.Generator().manual_seed(i)) for i, shape in enumerate(CHECK_SHAPES)]
    with torch.no_grad():
        expected = [(images, module(images)) for images in checks]  # HF's own grid_sample path
    dynamic = torch.export.Dim.DYNAMIC
    exports = [(torch.rand(EXPORT_SHAPE), ({0: dynamic, 2: dynamic, 3: dynamic},), expected)]
    if family in FIXED_SIZE:
        exports = [(images, None, [(images, outputs)]) for images, outputs in expected]
    for i, (example, dynamic_shapes, checked) in enumerate(exports):
        path = tmp_path / f"{family}_{i}.onnx"
        with detrx_hf.patched():
            detrx.onnx.export(module, (example,), path, input_names=["pixel_values"], dynamic_shapes=dynamic_shapes,
                              check_inputs=[(images,) for images, _ in checked])
        types = {op_type for _, op_type in operator_types(path)}
        assert "GridSample" not in types and "MatMul" in types
        assert_runtimes_match(path, checked)


@pytest.fixture(scope=shared_unless_mutating)
def rf_detr_nano():
    """RF-DETR Nano's architecture (two levels), random weights, in rfdetr's export mode."""
    pytest.importorskip("rfdetr")
    from rfdetr.config import RFDETRNanoConfig
    from rfdetr.models.lwdetr import build_model_from_config

    def build(resolution):
        with warnings.catch_warnings():  # rfdetr warns that random weights are less accurate
            warnings.simplefilter("ignore")
            config = RFDETRNanoConfig(pretrain_weights=None, resolution=resolution, num_queries=10, num_select=10,
                                      projector_scale=["P3", "P5"], num_classes=3)
            torch.manual_seed(0)
            model = build_model_from_config(config)
        perturb_sampling_offsets(model, torch.Generator().manual_seed(1))
        model.eval().export()
        return model

    return build


@pytest.mark.parametrize("resolution", [64, 96])
def test_rf_detr_fixed_size_exports_match_rfdetr_eager(tmp_path, rf_detr_nano, resolution):
    from detrx.integrations import rfdetr as detrx_rfdetr

    model = rf_detr_nano(resolution)
    images = torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(images)[:2]  # boxes, logits: rfdetr's own grid_sample path
    path = tmp_path / "rf_detr.onnx"
    with detrx_rfdetr.patched():
        detrx.onnx.export(model, (images,), path, check_inputs=[(images,)])
    assert "GridSample" not in {op_type for _, op_type in operator_types(path)}
    sess = session(path)
    assert sess.get_inputs()[0].shape == [1, 3, resolution, resolution]
    assert_runtimes_match(path, [(images, expected)])
