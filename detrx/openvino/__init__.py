"""detrx's OpenVINO extension: multi-scale deformable attention as the OpenVINO operation
`detrx.MultiScaleDeformableAttention`, evaluated on the CPU by the same kernel as `detrx.ops.ms_deform_attn`.

    import openvino as ov
    import detrx.openvino

    core = ov.Core()
    core.add_extension(detrx.openvino.library_path())
    model = core.read_model("detector.onnx")                 # written by: python -m detrx.export --runtime-op
    # or: ov.convert_model(torch_model, example_input=images, extension=detrx.openvino.library_path())

The library needs OpenVINO's runtime only, not PyTorch: a deployment copies the file that
`library_path()` names and loads it in a process that never imports torch (importing this module
imports detrx, and so torch; it never imports openvino).
"""
import os

LIBRARY_NAME = "libdetrx_openvino.so"
OPERATION = "detrx.MultiScaleDeformableAttention"


def library_path() -> str:
    """The path of the extension library, for `openvino.Core().add_extension` or `convert_model(extension=...)`."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"detrx's OpenVINO extension ({LIBRARY_NAME}) is not built: it is built with the package when the "
            "openvino package is importable at build time; reinstall detrx (pip install -e \".[openvino]\"), "
            "without DETRX_OPENVINO=0")
    return path


def missing_extension_message(error: Exception) -> str:
    """The error OpenVINO gives for a model with detrx's operation, plus what to load, or '' when the
    error is about something else."""
    text = str(error)
    if "MultiScaleDeformableAttention" not in text:
        return ""
    return (f"{text}\nThis model uses {OPERATION}: load detrx's OpenVINO extension first, "
            f"core.add_extension(detrx.openvino.library_path()) (the file {LIBRARY_NAME}).")


def read_model(core, model, **kwargs):
    """`core.read_model(model)`, raising a RuntimeError that names the extension to load when the model
    has detrx's operation and `core` lacks the extension."""
    try:
        return core.read_model(model, **kwargs)
    except RuntimeError as error:
        message = missing_extension_message(error)
        if message:
            raise RuntimeError(message) from error
        raise
