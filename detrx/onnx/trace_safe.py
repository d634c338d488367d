"""Three things that keep detection models from exporting with dynamic image sizes, and their remedies.

A size read from a feature map is symbolic under torch.export, but two common calls silently turn it
into a constant of the example, so the exported graph runs only at the export size:
- `torch.linspace(start, end, steps)` takes `steps` as a plain int: HF's Deformable DETR builds its
  encoder reference points and two-stage proposals with `torch.linspace(0.5, H - 0.5, H)`;
- `torch.tensor` / `torch.as_tensor` of a list of sizes: HF's `spatial_shapes =
  torch.as_tensor(spatial_shapes_list)` (Deformable DETR, RT-DETR), D-FINE's offset normaliser.
`symbolic_sizes_kept()` makes those calls keep symbolic sizes symbolic while it is active: linspace
computes torch's values from `torch.arange(steps)`, and a list holding symbolic sizes becomes a
stack of `torch.scalar_tensor`s; every other call is torch's own. detrx.onnx.export runs
torch.export inside it.

- `torch._check_tensor_all(cond)` (HF's `torch_compilable_check` under tracing: D-FINE, DEIMv2)
  leaves `aten._is_all_true` in the graph, which the exporter has no translation for;
  `is_all_true_onnx` is one (the assertion that consumes it is dropped from the graph anyway).
"""
import contextlib

import torch
from onnxscript import ir
from onnxscript import opset18 as op

_torch_linspace, _torch_tensor, _torch_as_tensor = torch.linspace, torch.tensor, torch.as_tensor


def _linspace_from_arange(start, end, steps, *, dtype=None, device=None, layout=torch.strided, requires_grad=False):
    """torch.linspace's values, computed as torch does (from both ends towards the middle)."""
    dtype = dtype or torch.get_default_dtype()
    index = torch.arange(steps, dtype=dtype, device=device)  # [steps]
    step = (end - start) / torch.sym_max(steps - 1, 1)
    from_end = (steps - 1) - index
    values = torch.where(index < steps // 2, index * step + start, end - from_end * step)
    return values.requires_grad_(requires_grad)


def _linspace(start, end, steps, *args, **kwargs):
    if isinstance(steps, torch.SymInt) and not args and "out" not in kwargs:
        return _linspace_from_arange(start, end, steps, **kwargs)
    return _torch_linspace(start, end, steps, *args, **kwargs)


def _symbolic(data):
    """Whether a (nested) list or tuple holds a symbolic size."""
    if isinstance(data, (list, tuple)):
        return any(_symbolic(item) for item in data)
    return isinstance(data, (torch.SymInt, torch.SymFloat))


def _all_ints(data):
    if isinstance(data, (list, tuple)):
        return all(_all_ints(item) for item in data)
    return isinstance(data, (int, torch.SymInt)) and not isinstance(data, bool)


def _stacked(data, dtype, device):
    if isinstance(data, (list, tuple)):
        return torch.stack([_stacked(item, dtype, device) for item in data])
    return torch.scalar_tensor(data, dtype=dtype, device=device)


def _tensor_of_sizes(original):
    def tensor(data, *args, dtype=None, device=None, **kwargs):
        if args or kwargs or not isinstance(data, (list, tuple)) or not _symbolic(data):
            return original(data, *args, dtype=dtype, device=device, **kwargs)
        dtype = dtype or (torch.int64 if _all_ints(data) else torch.get_default_dtype())
        return _stacked(data, dtype, device)

    return tensor


@contextlib.contextmanager
def symbolic_sizes_kept():
    """torch.linspace, torch.tensor and torch.as_tensor keep symbolic sizes symbolic in the block."""
    torch.linspace, torch.tensor = _linspace, _tensor_of_sizes(_torch_tensor)
    torch.as_tensor = _tensor_of_sizes(_torch_as_tensor)
    try:
        yield
    finally:
        torch.linspace, torch.tensor, torch.as_tensor = _torch_linspace, _torch_tensor, _torch_as_tensor


def is_all_true_onnx(condition):
    """aten._is_all_true(bool tensor) -> bool scalar: whether every element is true."""
    as_int = op.Cast(condition, to=ir.DataType.INT32)
    return op.Cast(op.ReduceMin(as_int, keepdims=0), to=ir.DataType.BOOL)
