"""ONNX translations of `detrx::ms_deform_attn` for the dynamo exporter (onnxscript).

`ms_deform_attn_onnx` writes the op with standard ONNX ops only (no GridSample, no plugin). Per
axis it finds the two pixels around every sampling point, whether each lies on the map, its
bilinear weight and its index; per bilinear corner it combines them into the corner's weight
(times the attention weight) and its row in the flattened values, gathers those rows with one
`Gather` (an off-map corner has weight 0 and reads a pixel of its level) and sums the L * P
samples of each (query, head) with a `MatMul`. The conventions are the op's:

- pixel coordinate = location * size - 0.5 (grid_sample, align_corners=False);
- corners off the map contribute zero (padding_mode="zeros": weight 0 times a finite value),
  locations outside [0, 1] are legal;
- non-finite locations sample nothing; levels of size 0 contribute nothing;
- float16 / bfloat16 inputs are computed in float32 (like the kernels), float64 in float64.

Batch, query count and the level sizes are read from the tensors at run time, so one graph
serves every image size. The rows gathered for one corner take N * Lq * M * L * P * D elements.

`ms_deform_attn_trt_plugin` instead emits one node `trt::MultiscaleDeformableAttnPlugin_TRT` with
the inputs of TensorRT's multi-scale deformable attention plugin (value [N, S, M, D], int32
spatial shapes and level starts, locations, weights; no attributes; output [N, Lq, M, D]),
followed by a Reshape to [N, Lq, M * D]. Only TensorRT with that plugin runs such a graph.
"""
import numpy as np
from onnx.defs import OpSchema
from onnxscript import ir
from onnxscript import opset18 as op
from onnxscript.values import Op, Opset

TRT_DOMAIN = "trt"
TRT_PLUGIN = "MultiscaleDeformableAttnPlugin_TRT"


def _trt_plugin_schema():
    """The plugin's interface as an OpSchema (for onnxscript; nothing registers it with onnx)."""
    parameter = OpSchema.FormalParameter
    return OpSchema(
        TRT_PLUGIN, TRT_DOMAIN, 1, doc="TensorRT's multi-scale deformable attention plugin",
        inputs=[parameter("value", "T"), parameter("spatial_shapes", "tensor(int32)"),
                parameter("level_start_index", "tensor(int32)"), parameter("sampling_locations", "T"),
                parameter("attention_weights", "T")],
        outputs=[parameter("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "value and output type")])


_trt_plugin = Op(Opset(TRT_DOMAIN, 1), TRT_PLUGIN, _trt_plugin_schema())

_HALF_TYPES = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def _ints(*values):
    return op.Constant(value=ir.tensor(np.array(values, dtype=np.int64)))


def _dim(tensor, axis):
    """The size of one axis as an int64 [1] tensor."""
    return op.Shape(tensor, start=axis, end=axis + 1)


def _arange(size):
    """size int64 [1] -> 0, 1, ..., size - 1."""
    return op.Range(op.Constant(value_int=0), op.Squeeze(size, _ints(0)), op.Constant(value_int=1))


def _level_column(spatial_shapes, column):
    """spatial_shapes int64 [L, 2] -> its column (0: H, 1: W) as [L, 1], broadcasting over P."""
    return op.Reshape(op.Gather(spatial_shapes, _ints(column), axis=1), _ints(-1, 1))


def _scalar(number, dtype):
    return op.Cast(op.Constant(value_float=number), to=dtype)


def _axis_taps(pixel, size, tap_axis, dtype):
    """Pixel coordinates along one axis [N, Lq, M, L, P], the level sizes along it [L, 1] -> the two
    neighbouring pixels (floor, floor + 1) on a new axis of length 2, axis 3 (tap_axis 0, y) or 4
    (tap_axis 1, x) of [N, Lq, M, ., ., L, P]: (bilinear weight 1 - |pixel - neighbour|, int64
    neighbour index), with weight 0 and index 0 where the neighbour is off the map or the
    coordinate is NaN or infinite."""
    zero = _scalar(0.0, dtype)
    offsets = op.Cast(op.Reshape(_ints(0, 1), _ints(2, 1, 1, 1) if tap_axis == 0 else _ints(2, 1, 1)), to=dtype)
    pixel = op.Unsqueeze(pixel, _ints(3, 4))  # [N, Lq, M, 1, 1, L, P]
    neighbour = op.Add(op.Floor(pixel), offsets)  # [N, Lq, M, 2, 1, L, P] or [N, Lq, M, 1, 2, L, P]
    weight = op.Sub(_scalar(1.0, dtype), op.Abs(op.Sub(pixel, neighbour)))
    on_map = op.And(op.GreaterOrEqual(neighbour, zero), op.Less(neighbour, size))  # false for NaN
    return op.Where(on_map, weight, zero), op.Where(on_map, op.Cast(neighbour, to=ir.DataType.INT64), _ints(0))


def ms_deform_attn_onnx(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                        spatial_shapes_hw=None):
    """Standard-ONNX translation of detrx::ms_deform_attn (see the module docstring). spatial_shapes_hw,
    the level sizes as ints, only spares the compiled op a host copy: the graph reads spatial_shapes."""
    out_type = value.dtype
    dtype = ir.DataType.FLOAT if out_type in _HALF_TYPES else out_type  # the computation's
    if out_type in _HALF_TYPES:
        value = op.Cast(value, to=dtype)
        sampling_locations = op.Cast(sampling_locations, to=dtype)
        attention_weights = op.Cast(attention_weights, to=dtype)
    batch, num_values, heads, channels = (_dim(value, axis) for axis in range(4))
    queries = _dim(sampling_locations, 1)
    corners = op.Mul(op.Mul(_dim(sampling_locations, 3), _dim(sampling_locations, 4)), _ints(4))  # 4 * L * P

    heights_int = _level_column(spatial_shapes, 0)  # [L, 1]
    widths_int = _level_column(spatial_shapes, 1)
    heights, widths = op.Cast(heights_int, to=dtype), op.Cast(widths_int, to=dtype)
    rows = op.Reshape(value, op.Concat(_ints(-1), channels, axis=0))  # [N * S * M, D], row (n * S + s) * M + m

    half = _scalar(0.5, dtype)
    x = op.Sub(op.Mul(op.Gather(sampling_locations, op.Constant(value_int=0), axis=-1), widths), half)
    y = op.Sub(op.Mul(op.Gather(sampling_locations, op.Constant(value_int=1), axis=-1), heights), half)
    y_weight, y_index = _axis_taps(y, heights, 0, dtype)  # [N, Lq, M, 2, 1, L, P]
    x_weight, x_index = _axis_taps(x, widths, 1, dtype)   # [N, Lq, M, 1, 2, L, P]

    # row of pixel (iy, ix) of level l for image n and head m: (n * S + start_l + iy * W_l + ix) * M + m.
    # A corner off the map on either axis has weight 0 and index 0 on that axis, so it reads a pixel
    # of its level's first row or column; for an empty level (0 x W) that is start_l + ix, which
    # start_l <= S - W_l keeps among the values.
    level_start = op.Min(op.Reshape(level_start_index, _ints(-1, 1)), op.Sub(num_values, widths_int))  # [L, 1]
    image_start = op.Add(op.Mul(op.Reshape(_arange(batch), _ints(-1, 1, 1, 1, 1, 1, 1)), num_values),
                         level_start)  # [N, 1, 1, 1, 1, L, 1]
    head_index = op.Reshape(_arange(heads), _ints(1, 1, -1, 1, 1, 1, 1))  # [1, 1, M, 1, 1, 1, 1]
    y_rows = op.Add(op.Mul(op.Add(image_start, op.Mul(y_index, widths_int)), heads), head_index)
    corner_rows = op.Add(y_rows, op.Mul(x_index, heads))  # [N, Lq, M, 2, 2, L, P]
    corner_weights = op.Mul(op.Mul(y_weight, op.Unsqueeze(attention_weights, _ints(3, 4))), x_weight)

    # the 4 * L * P corners of each (query, head): one Gather, one weighted sum
    gathered = op.Gather(rows, op.Reshape(corner_rows, op.Concat(batch, queries, heads, corners, axis=0)), axis=0)
    weights = op.Reshape(corner_weights, op.Concat(batch, queries, heads, _ints(1), corners, axis=0))
    output = op.MatMul(weights, gathered)  # [N, Lq, M, 1, 4 * L * P] x [N, Lq, M, 4 * L * P, D]
    output = op.Reshape(output, op.Concat(batch, queries, op.Mul(heads, channels), axis=0))
    return op.Cast(output, to=out_type) if out_type in _HALF_TYPES else output


def ms_deform_attn_trt_plugin(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                              spatial_shapes_hw=None):
    """detrx::ms_deform_attn as TensorRT's multi-scale deformable attention plugin node."""
    output = _trt_plugin(
        value, op.Cast(spatial_shapes, to=ir.DataType.INT32), op.Cast(level_start_index, to=ir.DataType.INT32),
        sampling_locations, attention_weights)  # [N, Lq, M, D]
    channels = op.Mul(_dim(value, 2), _dim(value, 3))  # M * D
    return op.Reshape(output, op.Concat(_dim(value, 0), _dim(sampling_locations, 1), channels, axis=0))
