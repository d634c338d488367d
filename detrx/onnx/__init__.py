"""ONNX export of detrx's ops and models (needs the `onnx` extra: onnx, onnxscript, onnxruntime).

    import detrx.onnx
    detrx.onnx.export(model, (images,), "model.onnx")         # any model that calls detrx's ops
    torch.onnx.export(model, (images,), "model.onnx", dynamo=True,
                      custom_translation_table=detrx.onnx.translations())   # the same, by hand
    detrx.onnx.export(model, (images,), "model.onnx", runtime_op=True)      # MSDA as detrx's own node

`import detrx` never imports this package (nor onnx, onnxscript or onnxruntime).
"""
import torch

try:
    from detrx.onnx.dynamic_axes import check_dynamic_axes
    from detrx.onnx.ms_deform_attn import TRT_DOMAIN, TRT_PLUGIN, ms_deform_attn_onnx, ms_deform_attn_trt_plugin
    from detrx.onnx.runtime_op import RUNTIME_OP, RUNTIME_OP_DOMAIN, ms_deform_attn_runtime_op
    from detrx.onnx.trace_safe import is_all_true_onnx, symbolic_sizes_kept
    from detrx.onnx.verify import verify
except ImportError as error:
    raise ImportError(f"detrx.onnx needs the onnx extra (onnx, onnxscript, onnxruntime): "
                      f"pip install 'detrx[onnx]' ({error})") from error

__all__ = ["RUNTIME_OP", "RUNTIME_OP_DOMAIN", "TRT_DOMAIN", "TRT_PLUGIN", "check_dynamic_axes", "check_exportable",
           "export", "translations"]


def translations(trt_plugin=False, runtime_op=False):
    """The `custom_translation_table` for `torch.onnx.export(..., dynamo=True)` covering detrx's ops.

    trt_plugin=False: MSDA in standard ONNX ops (runs in onnxruntime, TensorRT, any runtime).
    trt_plugin=True: MSDA as a `trt::MultiscaleDeformableAttnPlugin_TRT` node, the interface of
    TensorRT's multi-scale deformable attention plugin (only TensorRT with that plugin runs it).
    runtime_op=True: MSDA as one `detrx::MultiScaleDeformableAttention` node (detrx.onnx.runtime_op),
    which runtimes with detrx's op loaded run (OpenVINO with detrx's extension); onnxruntime does not.
    """
    if trt_plugin and runtime_op:
        raise ValueError("translations: choose one of trt_plugin and runtime_op, got both True")
    if not hasattr(torch.ops.detrx, "ms_deform_attn"):
        raise RuntimeError("detrx's compiled extension is not loaded, so its ops cannot be exported; "
                           "rebuild it (pip install -e .)")
    translation = ms_deform_attn_trt_plugin if trt_plugin else ms_deform_attn_onnx
    if runtime_op:
        translation = ms_deform_attn_runtime_op
    return {torch.ops.detrx.ms_deform_attn.default: translation, torch.ops.aten._is_all_true.default: is_all_true_onnx}


def check_exportable(model):
    """Raises ValueError for a model with a DN detector in training mode: its graph would build DN
    queries from targets, which exist only in training; the inference graph is the eval-mode one."""
    from detrx.models.denoising import DenoisingQueries

    for module in model.modules() if isinstance(model, torch.nn.Module) else ():
        if isinstance(getattr(module, "denoising", None), DenoisingQueries) and module.training:
            raise ValueError(f"{type(module).__name__} is in training mode, where it adds denoising (DN) "
                             f"queries built from the targets; call model.eval() to export its inference graph")


def export(model, args, path=None, trt_plugin=False, runtime_op=False, optimize=True, external_data=False,
           check_inputs=(), tolerance=1e-4, **kwargs):
    """`torch.onnx.export(model, args, dynamo=True, custom_translation_table=translations())`,
    saved to `path` (if given) -> the ONNXProgram.

    kwargs go to torch.onnx.export (dynamic_shapes, input_names, output_names, opset_version, ...).
    trt_plugin / runtime_op: how MSDA is written (see translations()). Every axis that dynamic_shapes
    asks to be dynamic must be dynamic in the written graph (torch.export fixes some silently, for
    example a named Dim whose range it rejects): ValueError naming the input and axis otherwise.
    optimize: fold constants and drop unused nodes (onnxscript's constant folding). The exporter's
    own optimizer also applies rewrite rules, one of which (Min/Max -> Clip fusion, onnxscript
    0.7) leaves a dangling initializer reference in graphs that clamp one value twice, as the box
    refinement does; constant folding alone keeps the graph valid, and onnxruntime and TensorRT
    fuse the rest themselves. external_data: store the weights in a separate file (needed > 2 GB).
    check_inputs: tuples of inputs (other sizes than `args`, for a dynamic export) at which the saved
    file is run in onnxruntime and compared with the eager model (detrx.onnx.verify): ValueError when
    it fails to run or differs by more than `tolerance` (needs `path`; not for plugin/runtime-op files).
    """
    if check_inputs and (path is None or trt_plugin or runtime_op):
        raise ValueError("export: check_inputs runs the saved file in onnxruntime, so it needs `path` and the "
                         "standard-operator graph (trt_plugin=False, runtime_op=False)")
    import onnxscript.optimizer

    check_exportable(model)
    table = {**translations(trt_plugin, runtime_op), **kwargs.pop("custom_translation_table", {})}
    with symbolic_sizes_kept():
        program = torch.onnx.export(model, args, dynamo=True, optimize=False, custom_translation_table=table, **kwargs)
    check_dynamic_axes(program.model, model, args, kwargs.get("dynamic_shapes"), kwargs.get("input_names"))
    if optimize:
        onnxscript.optimizer.fold_constants(program.model)
        onnxscript.optimizer.remove_unused_nodes(program.model)
    if path is not None:
        program.save(path, external_data=external_data)
    if check_inputs:
        verify(path, model, check_inputs, tolerance)
    return program
