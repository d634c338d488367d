"""ONNX translations of `detrx::ms_deform_attn` for the dynamo exporter (onnxscript).

`ms_deform_attn_onnx` writes the op with standard ONNX ops only (no GridSample, no plugin). Per
axis it finds, for every sampling point, the first of the two pixels it weighs (floor of the
coordinate, clamped into the map) and the bilinear weights of that pixel and the next, as tent
weights max(0, 1 - |coordinate - pixel|), which are 0 for a neighbour off the map. The 2 x 2
corner weights (times the attention weight) and the corners' rows in the flattened values then
come from broadcasts over a corner axis; one `Gather` takes the 4 * L * P rows of each (query,
head) and one `MatMul` sums them. The conventions are the op's:

- pixel coordinate = location * size - 0.5 (grid_sample, align_corners=False);
- corners off the map contribute zero (padding_mode="zeros": weight 0 times a finite value),
  locations outside [0, 1] are legal;
- non-finite locations sample nothing; levels of size 0 contribute nothing;
- float16 / bfloat16 inputs are computed in float32 (like the kernels), float64 in float64.

Batch, query count and the level sizes are read from the tensors at run time, so one graph
serves every image size. The gathered rows take N * Lq * M * 4 * L * P * D elements.

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


def _axis_cells(pixel, size, nonempty, dtype):
    """Pixel coordinates along one axis [N, Lq, M, L, P], the level sizes along it [L, 1] (int64),
    whether each level has pixels [L, 1] -> the first of the two pixels that the sample weighs,
    base = clamp(floor(pixel), 0, size - 2), int64 [N, Lq, M, L, P], and the bilinear weights of
    pixels base and base + 1, max(0, 1 - |pixel - pixel index|) [N, Lq, M, 2, L, P]: an off-map
    neighbour of a sample near the edge gets weight 0 that way. A coordinate outside (-1, size)
    (NaN and infinities too) and every coordinate of an empty level weighs nothing (both weights
    0); the second pixel of a level of size 1 weighs nothing."""
    zero, one = _scalar(0.0, dtype), _scalar(1.0, dtype)
    extent = op.Where(nonempty, op.Cast(size, to=dtype), op.Neg(one))  # [L, 1]
    on_range = op.And(op.Greater(pixel, op.Neg(one)), op.Less(pixel, extent))  # false for NaN
    pixel = op.Where(on_range, pixel, _scalar(-2.0, dtype))  # -2 is too far from pixels 0 and 1
    last_base = op.Cast(op.Max(op.Sub(size, _ints(2)), _ints(0)), to=dtype)  # [L, 1]
    base = op.Max(op.Min(op.Floor(pixel), last_base), zero)
    offsets = op.Cast(op.Reshape(_ints(0, 1), _ints(2, 1, 1)), to=dtype)  # [2, 1, 1]
    distance = op.Abs(op.Sub(op.Unsqueeze(op.Sub(pixel, base), _ints(3)), offsets))  # [N, Lq, M, 2, L, P]
    has_second = op.Unsqueeze(op.Cast(op.GreaterOrEqual(size, _ints(2)), to=dtype), _ints(0))  # [1, L, 1]
    tap_mask = op.Concat(op.Expand(one, op.Shape(has_second)), has_second, axis=0)  # [2, L, 1]
    weights = op.Mul(op.Relu(op.Sub(one, distance)), tap_mask)
    return op.Cast(base, to=ir.DataType.INT64), weights


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

    heights = _level_column(spatial_shapes, 0)  # [L, 1] int64
    widths = _level_column(spatial_shapes, 1)
    nonempty = op.Greater(op.Mul(heights, widths), _ints(0))
    half = _scalar(0.5, dtype)
    x = op.Sub(op.Mul(op.Gather(sampling_locations, op.Constant(value_int=0), axis=-1), op.Cast(widths, to=dtype)), half)
    y = op.Sub(op.Mul(op.Gather(sampling_locations, op.Constant(value_int=1), axis=-1), op.Cast(heights, to=dtype)), half)
    base_x, x_weights = _axis_cells(x, widths, nonempty, dtype)  # [N, Lq, M, L, P], [N, Lq, M, 2, L, P]
    base_y, y_weights = _axis_cells(y, heights, nonempty, dtype)
    # the 2 x 2 corners (y tap, x tap) in row-major order: [N * Lq, M, 2, 2, L, P]. Images and queries
    # share one axis because OpenVINO's CPU plugin (2026.4) computes a rank-7 broadcast Mul wrongly.
    y_weights = op.Mul(y_weights, op.Unsqueeze(attention_weights, _ints(3)))  # [N, Lq, M, 2, L, P]
    taps_shape = op.Concat(_ints(-1), op.Shape(y_weights, start=2), axis=0)  # [N * Lq, M, 2, L, P]
    weights = op.Mul(op.Unsqueeze(op.Reshape(y_weights, taps_shape), _ints(3)),
                     op.Unsqueeze(op.Reshape(x_weights, taps_shape), _ints(2)))
    weights = op.Reshape(weights, op.Concat(batch, queries, heads, _ints(1), corners, axis=0))

    # Value row of pixel (iy, ix) of level l for image n and head m: (n * S + start_l + iy * W_l + ix) * M + m,
    # value rows [N * S * M, D]. The corners of base (by, bx) are that pixel plus 0, dx, dy, dy + dx pixels
    # (dx = 1, dy = W_l; 0 on an axis of size 1, whose second tap weighs nothing). start_l <= S - max(W_l, 1)
    # keeps an empty last level, whose samples weigh nothing, among the values.
    rows = op.Reshape(value, op.Concat(_ints(-1), channels, axis=0))
    level_start = op.Min(op.Reshape(level_start_index, _ints(-1, 1)),
                         op.Sub(num_values, op.Max(widths, _ints(1))))  # [L, 1]
    image_start = op.Add(op.Mul(op.Reshape(_arange(batch), _ints(-1, 1, 1, 1, 1)), num_values), level_start)
    first_row = op.Add(op.Mul(image_start, heads), op.Reshape(_arange(heads), _ints(1, 1, -1, 1, 1)))  # [N, 1, M, L, 1]
    base_row = op.Add(op.Add(op.Mul(base_y, op.Mul(widths, heads)), op.Mul(base_x, heads)), first_row)
    dx = op.Cast(op.GreaterOrEqual(widths, _ints(2)), to=ir.DataType.INT64)  # [L, 1]
    dy = op.Mul(op.Cast(op.GreaterOrEqual(heights, _ints(2)), to=ir.DataType.INT64), widths)
    corner_offsets = op.Mul(op.Concat(op.Mul(dx, _ints(0)), dx, dy, op.Add(dy, dx), axis=1), heads)  # [L, 4]
    corner_offsets = op.Transpose(op.Unsqueeze(corner_offsets, _ints(2)), perm=[1, 0, 2])  # [4, L, 1]
    corner_rows = op.Add(op.Unsqueeze(base_row, _ints(3)), corner_offsets)  # [N, Lq, M, 4, L, P]

    gathered = op.Gather(rows, op.Reshape(corner_rows, op.Concat(batch, queries, heads, corners, axis=0)), axis=0)
    output = op.MatMul(weights, gathered)  # [N, Lq, M, 1, 4 * L * P] x [N, Lq, M, 4 * L * P, D], 4: outer
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
