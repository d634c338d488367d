"""ONNX export of the MSDA op and of detrx.nn.MSDeformAttn: standard ops only, onnxruntime vs eager."""
import subprocess
import sys

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

import detrx  # noqa: E402
from helpers import level_layout, shared_unless_mutating  # noqa: E402
from detrx.nn import MSDeformAttn  # noqa: E402
from detrx.ops import ms_deform_attn  # noqa: E402

from _onnx_helpers import max_difference, operator_types, run, session  # noqa: E402

if not detrx.is_compiled():
    pytest.skip("the compiled op is what gets exported", allow_module_level=True)
import detrx.onnx  # noqa: E402

HEADS, CHANNELS, POINTS = 2, 4, 3
EXPORT_LEVELS = ((6, 8), (3, 4), (1, 1))


class OpModule(torch.nn.Module):
    def forward(self, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        return ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def op_inputs(levels, batch, queries, dtype=torch.float32, seed=0):
    """Random inputs; a third of the locations fall outside [0, 1] (up to 0.3 beyond each edge)."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start_index = level_layout(levels)
    num_values = int(spatial_shapes.prod(1).sum())
    value = torch.randn(batch, num_values, HEADS, CHANNELS, generator=generator, dtype=dtype)
    shape = (batch, queries, HEADS, len(levels), POINTS)
    locations = torch.rand(*shape, 2, generator=generator, dtype=dtype) * 1.6 - 0.3
    weights = torch.rand(*shape, generator=generator, dtype=dtype).flatten(-2).softmax(-1).view(shape)
    return value, spatial_shapes, level_start_index, locations, weights


def export_op(path, dtype, trt_plugin=False):
    dims = {name: torch.export.Dim(name) for name in ("batch", "values", "queries")}
    batched = {0: dims["batch"], 1: dims["queries"]}
    detrx.onnx.export(OpModule().eval(), op_inputs(EXPORT_LEVELS, 2, 5, dtype), path, trt_plugin=trt_plugin,
                      dynamic_shapes=({0: dims["batch"], 1: dims["values"]}, None, None, batched, batched))
    return path


@pytest.fixture(scope=shared_unless_mutating)
def op_file(tmp_path_factory):
    return export_op(tmp_path_factory.mktemp("onnx") / "ms_deform_attn.onnx", torch.float32)


def test_exported_op_passes_the_checker_and_has_no_grid_sample(op_file):
    onnx.checker.check_model(onnx.load(str(op_file)), full_check=True)
    types = {op_type for _, op_type in operator_types(op_file)}
    assert "GridSample" not in types and {"Gather", "MatMul", "Floor"} <= types
    assert {domain for domain, _ in operator_types(op_file)} <= {"", "ai.onnx"}  # standard ops only


@pytest.mark.parametrize("levels, batch, queries", [
    (EXPORT_LEVELS, 2, 5),                 # the export shapes
    (((9, 5), (4, 7), (1, 1)), 3, 11),     # other image size, batch and query count
    (((2, 3), (1, 1), (1, 2)), 1, 1),
    (((4, 6), (0, 3), (2, 2)), 2, 7),      # an empty level
    (((4, 6), (2, 2), (0, 3)), 2, 3),      # an empty last level
])
def test_onnxruntime_matches_the_op(op_file, levels, batch, queries):
    inputs = op_inputs(levels, batch, queries, seed=batch + queries)
    (got,) = run(session(op_file), *inputs)
    assert max_difference(got, ms_deform_attn(*inputs)) <= 1e-5


def test_non_finite_locations_sample_nothing(op_file):
    value, shapes, starts, locations, weights = op_inputs(EXPORT_LEVELS, 2, 4)
    locations[0, 0, 0, 0, 0, 0] = float("nan")
    locations[0, 1, 1, 1, 1, 1] = float("inf")
    locations[1, 2, 0, 2, 2, 0] = -float("inf")
    locations[1, 3, 1, 0, 1, 1] = 1e30  # finite but far off the map
    (got,) = run(session(op_file), value, shapes, starts, locations, weights)
    expected = ms_deform_attn(value, shapes, starts, locations, weights)
    assert torch.isfinite(expected).all() and max_difference(got, expected) <= 1e-5


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float16, 2e-3)])
def test_other_dtypes(tmp_path, dtype, tolerance):
    """float64 is computed in float64; float16 in float32 (as the kernels do), rounded at the end."""
    path = export_op(tmp_path / "op.onnx", dtype)
    inputs = op_inputs(((7, 5), (2, 2), (1, 1)), 2, 6, dtype, seed=3)
    (got,) = run(session(path), *inputs)
    assert str(got.dtype) == str(dtype).removeprefix("torch.")
    assert max_difference(got.astype("float64"), ms_deform_attn(*inputs).double()) <= tolerance


def test_trt_plugin_flag_emits_the_plugin_node(tmp_path):
    path = export_op(tmp_path / "trt.onnx", torch.float32, trt_plugin=True)
    types = operator_types(path)
    assert (detrx.onnx.TRT_DOMAIN, detrx.onnx.TRT_PLUGIN) in types
    assert not any(op_type in ("GridSample", "Gather", "MatMul") for _, op_type in types)


def test_msdeformattn_module_exports_with_dynamic_queries_and_image_size(tmp_path):
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=3).eval()
    with torch.no_grad():  # heads away from the initialisation, as after training
        module.sampling_offsets.weight.normal_(0, 0.5)
        module.attention_weights.weight.normal_(0, 0.5)

    def inputs(levels, batch, queries, reference_dims):
        shapes, starts = level_layout(levels)
        values = int(shapes.prod(1).sum())
        reference = torch.rand(batch, queries, len(levels), reference_dims) * 1.2 - 0.1
        padding = torch.zeros(batch, values, dtype=torch.bool)
        padding[0, -3:] = True
        return torch.randn(batch, queries, 16), reference, torch.randn(batch, values, 16), shapes, starts, padding

    batch, queries, values = (torch.export.Dim(name) for name in ("batch", "queries", "values"))
    for reference_dims in (2, 4):
        path = tmp_path / f"msdeformattn_{reference_dims}.onnx"
        detrx.onnx.export(module, inputs(EXPORT_LEVELS, 2, 6, reference_dims), path, dynamic_shapes=(
            {0: batch, 1: queries}, {0: batch, 1: queries}, {0: batch, 1: values}, None, None, {0: batch, 1: values}))
        assert "GridSample" not in {op_type for _, op_type in operator_types(path)}
        sess = session(path)
        for levels, n, lq in ((EXPORT_LEVELS, 2, 6), (((10, 7), (5, 4), (1, 1)), 3, 13)):
            args = inputs(levels, n, lq, reference_dims)
            with torch.no_grad():
                expected = module(*args)
            (got,) = run(sess, *args)
            assert max_difference(got, expected) <= 1e-5


def test_import_detrx_loads_no_onnx_package():
    code = ("import sys, detrx, detrx.models, detrx.nn, detrx.export\n"
            "loaded = [m for m in ('onnx', 'onnxscript', 'onnxruntime') if m in sys.modules]\n"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)
