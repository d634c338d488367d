"""ONNX export of detrx's ops and models (needs the `onnx` extra: onnx, onnxscript, onnxruntime).

    import detrx.onnx
    detrx.onnx.export(model, (images,), "model.onnx")         # any model that calls detrx's ops
    torch.onnx.export(model, (images,), "model.onnx", dynamo=True,
                      custom_translation_table=detrx.onnx.translations())   # the same, by hand

`import detrx` never imports this package (nor onnx, onnxscript or onnxruntime).
"""
import torch

try:
    from detrx.onnx.ms_deform_attn import TRT_DOMAIN, TRT_PLUGIN, ms_deform_attn_onnx, ms_deform_attn_trt_plugin
except ImportError as error:
    raise ImportError(f"detrx.onnx needs the onnx extra (onnx, onnxscript, onnxruntime): "
                      f"pip install 'detrx[onnx]' ({error})") from error

__all__ = ["TRT_DOMAIN", "TRT_PLUGIN", "check_exportable", "export", "translations"]


def translations(trt_plugin=False):
    """The `custom_translation_table` for `torch.onnx.export(..., dynamo=True)` covering detrx's ops.

    trt_plugin=False: MSDA in standard ONNX ops (runs in onnxruntime, TensorRT, any runtime).
    trt_plugin=True: MSDA as a `trt::MultiscaleDeformableAttnPlugin_TRT` node, the interface of
    TensorRT's multi-scale deformable attention plugin (only TensorRT with that plugin runs it).
    """
    if not hasattr(torch.ops.detrx, "ms_deform_attn"):
        raise RuntimeError("detrx's compiled extension is not loaded, so its ops cannot be exported; "
                           "rebuild it (pip install -e .)")
    translation = ms_deform_attn_trt_plugin if trt_plugin else ms_deform_attn_onnx
    return {torch.ops.detrx.ms_deform_attn.default: translation}


def check_exportable(model):
    """Raises ValueError for a model with a DN detector in training mode: its graph would build DN
    queries from targets, which exist only in training; the inference graph is the eval-mode one."""
    from detrx.models.denoising import DenoisingQueries

    for module in model.modules() if isinstance(model, torch.nn.Module) else ():
        if isinstance(getattr(module, "denoising", None), DenoisingQueries) and module.training:
            raise ValueError(f"{type(module).__name__} is in training mode, where it adds denoising (DN) "
                             f"queries built from the targets; call model.eval() to export its inference graph")


def export(model, args, path=None, trt_plugin=False, optimize=True, external_data=False, **kwargs):
    """`torch.onnx.export(model, args, dynamo=True, custom_translation_table=translations())`,
    saved to `path` (if given) -> the ONNXProgram.

    kwargs go to torch.onnx.export (dynamic_shapes, input_names, output_names, opset_version, ...).
    optimize: fold constants and drop unused nodes (onnxscript's constant folding). The exporter's
    own optimizer also applies rewrite rules, one of which (Min/Max -> Clip fusion, onnxscript
    0.7) leaves a dangling initializer reference in graphs that clamp one value twice, as the box
    refinement does; constant folding alone keeps the graph valid, and onnxruntime and TensorRT
    fuse the rest themselves. external_data: store the weights in a separate file (needed > 2 GB).
    """
    import onnxscript.optimizer

    check_exportable(model)
    table = {**translations(trt_plugin), **kwargs.pop("custom_translation_table", {})}
    program = torch.onnx.export(model, args, dynamo=True, optimize=False, custom_translation_table=table, **kwargs)
    if optimize:
        onnxscript.optimizer.fold_constants(program.model)
        onnxscript.optimizer.remove_unused_nodes(program.model)
    if path is not None:
        program.save(path, external_data=external_data)
    return program
