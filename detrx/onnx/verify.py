"""Run a written ONNX file in onnxruntime and compare it with the eager model it came from.

`largest_differences(path, model, inputs)` -> {output name: max |onnxruntime - eager|}, and
`verify(path, model, checks, tolerance)` raises ValueError when the file fails to run at one of
the check inputs or differs from eager by more than the tolerance. A dynamic file is only known to
be dynamic once it has run at a size other than the export size: `detrx.onnx.export(...,
check_inputs=...)` and `python -m detrx.export --dynamic` call this before they report success.
"""
import numpy as np
import torch
import torch.utils._pytree as pytree


def onnxruntime_session(path):
    """A CPU onnxruntime session; a ValueError that says why for a file with detrx's runtime-op node."""
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail / InvalidGraph types
        if "detrx" in str(error):
            raise ValueError(f"{path}: onnxruntime cannot run detrx's MultiScaleDeformableAttention node (a file "
                             f"written with runtime_op=True / --runtime-op); run it in OpenVINO with detrx's "
                             f"extension (core.add_extension(detrx.openvino.library_path())), or export the "
                             f"standard-operator graph (the default) for onnxruntime") from error
        raise


def _tensors(outputs):
    return [leaf for leaf in pytree.tree_leaves(outputs) if isinstance(leaf, torch.Tensor)]


def largest_differences(session, model, inputs):
    """{output name: max |onnxruntime - eager|} for one tuple of example inputs (tensors in graph order)."""
    with torch.no_grad():
        expected = _tensors(model(*inputs))
    feeds = {meta.name: tensor.numpy() for meta, tensor in zip(session.get_inputs(), _tensors(inputs))}
    outputs = session.run(None, feeds)
    differences = {}
    for meta, got, want in zip(session.get_outputs(), outputs, expected):
        if got.shape != tuple(want.shape):
            raise ValueError(f"output {meta.name!r} has shape {list(got.shape)} in onnxruntime, "
                             f"{list(want.shape)} in eager PyTorch")
        differences[meta.name] = float(np.abs(got.astype(np.float64) - want.double().numpy()).max()) if got.size else 0.0
    return differences


def verify(path, model, checks, tolerance):
    """Runs the file at every inputs tuple of `checks` -> [(input shapes, differences)];
    ValueError naming the input shapes where onnxruntime fails or differs by more than tolerance."""
    session = onnxruntime_session(path)
    results = []
    for inputs in checks:
        shapes = [list(tensor.shape) for tensor in _tensors(inputs)]
        try:
            differences = largest_differences(session, model, inputs)
        except Exception as error:
            raise ValueError(f"{path} does not run in onnxruntime at input shapes {shapes}: {error}") from error
        worst = max(differences.values(), default=0.0)
        if not worst <= tolerance:  # also catches NaN
            raise ValueError(f"{path} differs from eager PyTorch by {worst:.3g} (> {tolerance:g}) at input shapes "
                             f"{shapes}: " + ", ".join(f"{name} {value:.3g}" for name, value in differences.items()))
        results.append((shapes, differences))
    return results
