"""Builders shared by the OpenVINO tests: a one-node ONNX model of detrx's MSDA operation, and an
OpenVINO core with (or without) detrx's extension."""
import onnx
import pytest
from onnx import TensorProto, helper

INPUT_NAMES = ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")


def msda_onnx(path, element=TensorProto.FLOAT, location_element=None):
    """Writes an ONNX model whose one node is MultiScaleDeformableAttention of domain "detrx", every
    size dynamic; value of `element`, locations and weights of `location_element` (default the same)."""
    location_element = element if location_element is None else location_element
    inputs = [helper.make_tensor_value_info("value", element, ["N", "S", "M", "D"]),
              helper.make_tensor_value_info("spatial_shapes", TensorProto.INT64, ["L", 2]),
              helper.make_tensor_value_info("level_start_index", TensorProto.INT64, ["L"]),
              helper.make_tensor_value_info("sampling_locations", location_element, ["N", "Lq", "M", "L", "P", 2]),
              helper.make_tensor_value_info("attention_weights", location_element, ["N", "Lq", "M", "L", "P"])]
    output = helper.make_tensor_value_info("output", element, ["N", "Lq", "MD"])
    node = helper.make_node("MultiScaleDeformableAttention", list(INPUT_NAMES), ["output"], domain="detrx")
    graph = helper.make_graph([node], "msda", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("detrx", 1)])
    onnx.save(model, path)
    return path


def core_with_extension():
    import openvino

    import detrx.openvino

    core = openvino.Core()
    core.add_extension(detrx.openvino.library_path())
    return core


def skip_without_extension(needs_compiled_op=False):
    """Skips the calling test module when detrx's OpenVINO library (or, if asked, the compiled op)
    is not built."""
    import detrx
    import detrx.openvino

    if needs_compiled_op and not detrx.is_compiled():
        pytest.skip("the compiled op is what gets converted or exported", allow_module_level=True)
    try:
        detrx.openvino.library_path()
    except FileNotFoundError as missing:
        pytest.skip(str(missing), allow_module_level=True)

