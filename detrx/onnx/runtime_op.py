"""detrx::ms_deform_attn as one node of detrx's own ONNX domain, for runtimes that load detrx's op.

`ms_deform_attn_runtime_op` writes the op as a single node `detrx::MultiScaleDeformableAttention`
(domain `detrx`, version 1) with the op's inputs in the op's order and no attributes:

    value               float  [N, S, M, D]
    spatial_shapes      int64  [L, 2]   (H, W)
    level_start_index   int64  [L]
    sampling_locations  float  [N, Lq, M, L, P, 2]
    attention_weights   float  [N, Lq, M, L, P]
    -> output           float  [N, Lq, M * D]

This is the contract of detrx's OpenVINO extension (`core.add_extension(detrx.openvino.library_path())`
before `core.read_model(path)`). A runtime without an implementation of that node cannot run the file:
onnxruntime refuses it at session creation ("No opset import for domain 'detrx'" or "Could not find
an implementation for MultiScaleDeformableAttention(1) node ... domain 'detrx'").
"""
from onnx.defs import OpSchema
from onnxscript.values import Op, Opset

RUNTIME_OP_DOMAIN = "detrx"
RUNTIME_OP = "MultiScaleDeformableAttention"
RUNTIME_OP_VERSION = 1


def _runtime_op_schema():
    """The node's interface as an OpSchema (for onnxscript; nothing registers it with onnx)."""
    parameter = OpSchema.FormalParameter
    return OpSchema(
        RUNTIME_OP, RUNTIME_OP_DOMAIN, RUNTIME_OP_VERSION, doc="detrx's multi-scale deformable attention",
        inputs=[parameter("value", "T"), parameter("spatial_shapes", "tensor(int64)"),
                parameter("level_start_index", "tensor(int64)"), parameter("sampling_locations", "T"),
                parameter("attention_weights", "T")],
        outputs=[parameter("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"],
                           "value, locations, weights and output type")])


_runtime_op = Op(Opset(RUNTIME_OP_DOMAIN, RUNTIME_OP_VERSION), RUNTIME_OP, _runtime_op_schema())


def ms_deform_attn_runtime_op(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                              spatial_shapes_hw=None):
    """detrx::ms_deform_attn as one `detrx::MultiScaleDeformableAttention` node -> [N, Lq, M * D]."""
    # spatial_shapes and level_start_index are int64: detrx.ops.ms_deform_attn accepts nothing else
    return _runtime_op(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
