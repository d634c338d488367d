"""openvino.convert_model of PyTorch modules that call detrx's op: the PyTorch-frontend conversions map
it to detrx.MultiScaleDeformableAttention (TorchScript and torch.export alike), for the op alone with
every size dynamic, for detrx's Deformable DETR and for HF's Deformable DETR with the drop-in."""
import numpy as np
import pytest
import torch

openvino = pytest.importorskip("openvino")

import detrx.openvino  # noqa: E402
from detrx.ops import ms_deform_attn  # noqa: E402

from _openvino_helpers import skip_without_extension  # noqa: E402
from helpers import make_inputs  # noqa: E402

skip_without_extension(needs_compiled_op=True)

# OpenVINO's CPU plugin runs float32 models in bfloat16 where the CPU has bfloat16 instructions
# unless told otherwise: the comparisons with eager PyTorch ask for float32.
FLOAT32 = {"INFERENCE_PRECISION_HINT": "f32"}


class ScaledAttention(torch.nn.Module):
    def forward(self, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        return 2 * ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def operation_types(model):
    return {op.get_type_name() for op in model.get_ops()}


def compile_and_run(model, inputs):
    compiled = openvino.Core().compile_model(model, "CPU", FLOAT32)
    return [torch.from_numpy(np.asarray(out)) for out in compiled([t.numpy() for t in inputs]).values()]


def other_inputs():
    """Every size different from make_inputs' defaults: batch, queries, heads' channels, levels."""
    return make_inputs(levels=((4, 9), (2, 2), (1, 1)), batch=1, queries=3, heads=2, channels=8, points=3,
                       dtype=torch.float32, seed=1)


def test_traced_module_converts_to_the_operation_with_dynamic_sizes():
    module, inputs = ScaledAttention(), make_inputs(dtype=torch.float32)
    model = openvino.convert_model(module, example_input=inputs, extension=[detrx.openvino.library_path()])
    assert "MultiScaleDeformableAttention" in operation_types(model)
    for check in (inputs, other_inputs()):
        torch.testing.assert_close(compile_and_run(model, check)[0], module(*check), atol=1e-5, rtol=0)


def test_exported_program_converts_to_the_operation_with_dynamic_sizes():
    module, inputs = ScaledAttention(), make_inputs(dtype=torch.float32)
    dynamic = torch.export.Dim.DYNAMIC
    program = torch.export.export(module, inputs, dynamic_shapes=(
        {0: dynamic, 1: dynamic}, {0: dynamic}, {0: dynamic}, {0: dynamic, 1: dynamic, 3: dynamic, 4: dynamic},
        {0: dynamic, 1: dynamic, 3: dynamic, 4: dynamic}))
    model = openvino.convert_model(program, extension=[detrx.openvino.library_path()])
    assert "MultiScaleDeformableAttention" in operation_types(model)
    for check in (inputs, other_inputs()):
        torch.testing.assert_close(compile_and_run(model, check)[0], module(*check), atol=1e-5, rtol=0)


def test_without_the_extension_conversion_fails_naming_the_op():
    with pytest.raises(Exception, match="ms_deform_attn"):
        openvino.convert_model(ScaledAttention(), example_input=make_inputs(dtype=torch.float32))


def test_detrx_deformable_detr():
    from detrx.onnx.detector import ExportableDetector
    from test_onnx_models import random_detector

    module = ExportableDetector(random_detector("deformable_detr", "--num-feature-levels", "4",
                                                "--d-model", "64")).eval()
    images = torch.rand(2, 3, 128, 96)
    model = openvino.convert_model(module, example_input=(images,), extension=[detrx.openvino.library_path()])
    types = operation_types(model)
    assert "MultiScaleDeformableAttention" in types and "GridSample" not in types
    with torch.no_grad():
        expected = module(images)
    for got, want in zip(compile_and_run(model, (images,)), expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_hf_deformable_detr_with_the_drop_in():
    pytest.importorskip("transformers")
    from detrx.integrations import transformers as detrx_hf
    from test_integrations_transformers import build_deformable_detr, perturb_sampling_offsets

    torch.manual_seed(0)
    hf_model = build_deformable_detr()[0].eval()  # two-stage, box refinement
    perturb_sampling_offsets(hf_model, torch.Generator().manual_seed(0))

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = hf_model

        def forward(self, pixel_values):
            output = self.model(pixel_values=pixel_values)
            return output.logits, output.pred_boxes

    module, images = Logits().eval(), torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        expected = module(images)  # HF's own grid_sample path
    with detrx_hf.patched():
        model = openvino.convert_model(module, example_input=(images,), extension=[detrx.openvino.library_path()])
    types = operation_types(model)
    assert "MultiScaleDeformableAttention" in types and "GridSample" not in types
    for got, want in zip(compile_and_run(model, (images,)), expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
