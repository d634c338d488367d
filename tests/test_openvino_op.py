"""detrx's OpenVINO operation against the torch op: values over random shapes, the op's conventions
(off-map zeros, non-finite locations, empty and 1x1 levels), dynamic shapes, the errors, and a
process that never imports torch."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
openvino = pytest.importorskip("openvino")

import detrx.openvino  # noqa: E402
from detrx.ops import ms_deform_attn  # noqa: E402

from _openvino_helpers import core_with_extension, msda_onnx, skip_without_extension  # noqa: E402
from helpers import make_inputs, shared_unless_mutating  # noqa: E402

skip_without_extension()


@pytest.fixture(scope=shared_unless_mutating)
def onnx_path(tmp_path_factory):
    return msda_onnx(str(tmp_path_factory.mktemp("openvino") / "msda.onnx"))


@pytest.fixture(scope=shared_unless_mutating)
def compiled(onnx_path):
    """One compiled model for every test: all its sizes are dynamic."""
    core = core_with_extension()
    return core.compile_model(core.read_model(onnx_path), "CPU")


def run(compiled_model, inputs):
    return torch.from_numpy(compiled_model([t.numpy() for t in inputs])[0])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # read-only model
@given(levels=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=4),
       batch=st.integers(1, 2), queries=st.integers(1, 5), heads=st.integers(1, 3),
       channels=st.one_of(st.integers(1, 9), st.sampled_from([16, 32, 64])), points=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_random_shapes_match_the_torch_op(compiled, levels, batch, queries, heads, channels, points, seed):
    inputs = make_inputs(levels=levels, batch=batch, queries=queries, heads=heads, channels=channels,
                         points=points, dtype=torch.float32, seed=seed)
    got = run(compiled, inputs)
    want = ms_deform_attn(*inputs)
    assert got.shape == want.shape == (batch, queries, heads * channels)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_standard_decoder_shapes_with_off_map_and_non_finite_locations(compiled):
    levels = ((25, 42), (13, 21), (7, 11), (1, 1))  # non-square levels, and a 1x1 one
    inputs = list(make_inputs(levels=levels, batch=2, queries=30, heads=8, channels=32, points=4,
                              dtype=torch.float32, low=-0.5, high=1.5))
    locations = inputs[3]
    locations[0, 0, 0, 0, 0] = torch.tensor([float("nan"), 0.5])
    locations[0, 1, 1, 1, 1] = torch.tensor([0.5, float("inf")])
    locations[1, 2, 2, 2, 2] = torch.tensor([-float("inf"), -float("inf")])
    got = run(compiled, inputs)
    want = ms_deform_attn(*inputs)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # Locations far off every map sample nothing: exact zeros, as grid_sample's zero padding gives.
    inputs[3] = torch.full_like(locations, 3.0)
    assert run(compiled, inputs).abs().max() == 0


def test_zero_queries_give_an_empty_output(compiled):
    inputs = make_inputs(queries=0, dtype=torch.float32)
    assert run(compiled, inputs).shape == (2, 0, 2 * 8)


@pytest.mark.parametrize("corrupt, message", [
    (lambda inputs: inputs.__setitem__(2, torch.tensor([0, 34])), "level_start_index must be the running sum"),
    (lambda inputs: inputs.__setitem__(1, torch.tensor([[5, 7], [3, 3]])), "areas sum to 44 but value has S = 41"),
    (lambda inputs: inputs.__setitem__(1, torch.tensor([[5, 7], [-3, -2]])), "spatial_shapes must be non-negative"),
    (lambda inputs: inputs.__setitem__(4, inputs[4][:, :, :, :, :2]), "attention_weights must be"),
])
def test_a_bad_layout_raises_naming_the_argument(compiled, corrupt, message):
    inputs = list(make_inputs(dtype=torch.float32))  # levels (5, 7), (3, 2): S = 41
    corrupt(inputs)
    with pytest.raises(RuntimeError, match=message):
        run(compiled, inputs)


@pytest.mark.parametrize("hint", ["f32", "bf16", "f16"])
def test_inference_precision_hints_leave_the_operation_in_float32(onnx_path, hint):
    """OpenVINO's CPU plugin keeps a custom operation in the model's own type whatever precision
    the rest of the model runs in: the result is the float32 kernel's, exactly."""
    core = core_with_extension()
    compiled_model = core.compile_model(core.read_model(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    inputs = make_inputs(dtype=torch.float32)
    assert torch.equal(run(compiled_model, inputs), ms_deform_attn(*inputs))


@pytest.mark.parametrize("location_element", ["float16", "float32"])
def test_float16_models_are_computed_in_float32(tmp_path, location_element):
    from onnx import TensorProto

    elements = {"float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT}
    path = msda_onnx(str(tmp_path / "msda16.onnx"), TensorProto.FLOAT16, elements[location_element])
    core = core_with_extension()
    compiled_model = core.compile_model(core.read_model(path), "CPU")
    value, shapes, starts, locations, weights = make_inputs(dtype=torch.float32)
    location_dtype = getattr(torch, location_element)
    inputs = (value.half(), shapes, starts, locations.to(location_dtype), weights.to(location_dtype))
    got = run(compiled_model, inputs)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), ms_deform_attn(*inputs).float(), atol=2e-3, rtol=0)


def test_without_the_extension_the_error_names_it(onnx_path):
    with pytest.raises(RuntimeError, match=r"core\.add_extension\(detrx\.openvino\.library_path\(\)\)"):
        detrx.openvino.read_model(openvino.Core(), onnx_path)


def test_read_model_passes_its_options_on_and_leaves_other_errors_alone(tmp_path):
    """An OpenVINO IR whose weights file lies elsewhere: read with `weights=`, with and without the
    extension; a file that is no model gets OpenVINO's own error, with nothing about detrx added."""
    scale = onnx.numpy_helper.from_array(np.array(2.0, dtype=np.float32), "scale")
    model = onnx.load(msda_onnx(str(tmp_path / "msda.onnx")))
    model.graph.initializer.append(scale)
    model.graph.node.insert(0, onnx.helper.make_node("Mul", ["value", "scale"], ["scaled_value"]))
    model.graph.node[1].input[0] = "scaled_value"
    onnx.save(model, str(tmp_path / "scaled.onnx"))
    openvino.save_model(core_with_extension().read_model(str(tmp_path / "scaled.onnx")), str(tmp_path / "scaled.xml"))
    os.replace(tmp_path / "scaled.bin", tmp_path / "weights_elsewhere.bin")
    weights = str(tmp_path / "weights_elsewhere.bin")

    read = detrx.openvino.read_model(core_with_extension(), str(tmp_path / "scaled.xml"), weights=weights)
    inputs = make_inputs(levels=((5, 3), (2, 4)), queries=4, heads=2, channels=8, points=3, dtype=torch.float32)
    got = run(core_with_extension().compile_model(read, "CPU"), inputs)
    torch.testing.assert_close(got, 2 * ms_deform_attn(*inputs), atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError, match=r"core\.add_extension\(detrx\.openvino\.library_path\(\)\)"):
        detrx.openvino.read_model(openvino.Core(), str(tmp_path / "scaled.xml"), weights=weights)

    (tmp_path / "not_a_model.onnx").write_bytes(b"not a model")
    with pytest.raises(RuntimeError) as raised:
        detrx.openvino.read_model(core_with_extension(), str(tmp_path / "not_a_model.onnx"))
    assert "add_extension" not in str(raised.value) and raised.value.__cause__ is None


CHILD = """
import json, sys
import numpy as np
import openvino
core = openvino.Core()
core.add_extension(sys.argv[1])
compiled = core.compile_model(core.read_model(sys.argv[2]), "CPU")
inputs = np.load(sys.argv[3])
output = compiled([inputs[name] for name in ("value", "spatial_shapes", "level_start_index",
                                             "sampling_locations", "attention_weights")])[0]
np.save(sys.argv[4], output)
print(json.dumps({"torch_loaded": "torch" in sys.modules}))
"""


def test_the_extension_runs_in_a_process_without_torch(onnx_path, tmp_path):
    inputs = make_inputs(levels=((6, 9), (3, 5), (1, 1)), queries=7, heads=4, channels=32, points=4,
                         dtype=torch.float32)
    names = ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")
    np.savez(tmp_path / "inputs.npz", **{name: t.numpy() for name, t in zip(names, inputs)})
    # Blocks `import torch` in the child, so that a library needing torch would fail to load.
    blocker = tmp_path / "blocker"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('this process must not load torch')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker))
    child = subprocess.run([sys.executable, "-c", CHILD, detrx.openvino.library_path(), onnx_path,
                            str(tmp_path / "inputs.npz"), str(tmp_path / "output.npy")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout.strip().splitlines()[-1]) == {"torch_loaded": False}
    got = torch.from_numpy(np.load(tmp_path / "output.npy"))
    torch.testing.assert_close(got, ms_deform_attn(*inputs), atol=1e-5, rtol=0)
