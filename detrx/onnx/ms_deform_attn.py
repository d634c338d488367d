"""ONNX translations of `detrx::ms_deform_attn` for the dynamo exporter (onnxscript).

`ms_deform_attn_onnx` writes the op with standard ONNX ops only (no GridSample, no plugin):
for each of the four bilinear corners of every sampling point it computes the corner's pixel,
whether that pixel lies on the map, and its bilinear weight times the attention weight; gathers
the corner's value rows with one `Gather` from the flattened values; and reduces over the L * P
samples of each (query, head) with a `MatMul`. The conventions are the op's:

- pixel coordinate = location * size - 0.5 (grid_sample, align_corners=False);
- corners off the map contribute zero (padding_mode="zeros"), locations outside [0, 1] are legal;
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

_CORNERS = ((0, 0), (1, 0), (0, 1), (1, 1))  # (dx, dy) from the pixel at (floor(x), floor(y))
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


def ms_deform_attn_onnx(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Standard-ONNX translation of detrx::ms_deform_attn (see the module docstring)."""
    out_type = value.dtype
    if out_type in _HALF_TYPES:
        value = op.Cast(value, to=ir.DataType.FLOAT)
        sampling_locations = op.Cast(sampling_locations, to=ir.DataType.FLOAT)
        attention_weights = op.Cast(attention_weights, to=ir.DataType.FLOAT)
    batch, num_values, heads, channels = (_dim(value, axis) for axis in range(4))
    queries = _dim(sampling_locations, 1)
    samples = op.Mul(_dim(sampling_locations, 3), _dim(sampling_locations, 4))  # L * P

    # Value rows [N * S * M + 1, D]: row (n * S + s) * M + m, then one zero row that every
    # off-map corner reads (so no off-map value, however large, reaches the sum).
    rows = op.Reshape(value, op.Concat(_ints(-1), channels, axis=0))
    zero_row = op.Expand(op.CastLike(op.Constant(value_float=0.0), value), op.Concat(_ints(1), channels, axis=0))
    rows = op.Concat(rows, zero_row, axis=0)
    zero_row_index = op.Mul(op.Mul(batch, num_values), heads)  # [1]

    heights_int = _level_column(spatial_shapes, 0)  # [L, 1]
    widths_int = _level_column(spatial_shapes, 1)
    heights, widths = op.CastLike(heights_int, value), op.CastLike(widths_int, value)
    starts = op.Reshape(level_start_index, _ints(-1, 1))  # [L, 1]
    batch_offset = op.Mul(op.Reshape(_arange(batch), _ints(-1, 1, 1, 1, 1)), num_values)  # [N, 1, 1, 1, 1]
    head_index = op.Reshape(_arange(heads), _ints(1, 1, -1, 1, 1))  # [1, 1, M, 1, 1]

    half, one, zero = (op.CastLike(op.Constant(value_float=v), value) for v in (0.5, 1.0, 0.0))
    loc_x = op.Gather(sampling_locations, op.Constant(value_int=0), axis=-1)  # [N, Lq, M, L, P]
    loc_y = op.Gather(sampling_locations, op.Constant(value_int=1), axis=-1)
    x = op.Sub(op.Mul(loc_x, widths), half)  # pixel coordinates
    y = op.Sub(op.Mul(loc_y, heights), half)
    x0, y0 = op.Floor(x), op.Floor(y)
    frac_x, frac_y = op.Sub(x, x0), op.Sub(y, y0)

    sample_shape = op.Concat(batch, queries, heads, samples, channels, axis=0)  # [N, Lq, M, L*P, D]
    weight_shape = op.Concat(batch, queries, heads, _ints(1), samples, axis=0)  # [N, Lq, M, 1, L*P]
    output = None
    for dx, dy in _CORNERS:
        corner_x = op.Add(x0, one) if dx else x0
        corner_y = op.Add(y0, one) if dy else y0
        # False for NaN and infinities: comparisons with NaN are false, floor(inf) is off the map
        on_map = op.And(op.And(op.GreaterOrEqual(corner_x, zero), op.Less(corner_x, widths)),
                        op.And(op.GreaterOrEqual(corner_y, zero), op.Less(corner_y, heights)))
        bilinear = op.Mul(frac_x if dx else op.Sub(one, frac_x), frac_y if dy else op.Sub(one, frac_y))
        weight = op.Where(on_map, op.Mul(bilinear, attention_weights), zero)  # [N, Lq, M, L, P]
        pixel_x = op.Cast(op.Where(on_map, corner_x, zero), to=ir.DataType.INT64)
        pixel_y = op.Cast(op.Where(on_map, corner_y, zero), to=ir.DataType.INT64)
        token = op.Add(op.Add(starts, op.Mul(pixel_y, widths_int)), pixel_x)  # index into S
        row = op.Add(op.Mul(op.Add(batch_offset, token), heads), head_index)
        row = op.Where(on_map, row, zero_row_index)
        gathered = op.Reshape(op.Gather(rows, row, axis=0), sample_shape)  # [N, Lq, M, L*P, D]
        corner = op.MatMul(op.Reshape(weight, weight_shape), gathered)  # [N, Lq, M, 1, D]
        output = corner if output is None else op.Add(output, corner)
    output = op.Reshape(output, op.Concat(batch, queries, op.Mul(heads, channels), axis=0))
    return op.Cast(output, to=out_type) if out_type in _HALF_TYPES else output


def ms_deform_attn_trt_plugin(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """detrx::ms_deform_attn as TensorRT's multi-scale deformable attention plugin node."""
    output = _trt_plugin(
        value, op.Cast(spatial_shapes, to=ir.DataType.INT32), op.Cast(level_start_index, to=ir.DataType.INT32),
        sampling_locations, attention_weights)  # [N, Lq, M, D]
    channels = op.Mul(_dim(value, 2), _dim(value, 3))  # M * D
    return op.Reshape(output, op.Concat(_dim(value, 0), _dim(sampling_locations, 1), channels, axis=0))
