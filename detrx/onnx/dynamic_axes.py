"""Check that a written ONNX graph keeps every axis the caller asked to be dynamic.

torch.onnx.export(..., dynamo=True) retries a failed torch.export in other modes, and one of those
drops the caller's dynamic shapes: a named `torch.export.Dim("h", min=..., max=...)` whose range
torch.export rejects (the model constrains the axis further) silently gives a graph fixed to the
example's size. `check_dynamic_axes` compares the request with the graph's inputs.
"""
import inspect

import torch
import torch.utils._pytree as pytree

_NOT_REQUESTED = (torch.export.Dim.STATIC, torch.export.Dim.AUTO)  # AUTO: dynamic only where it can be


def _requested(axis_spec):
    """True for an axis spec that asks for a dynamic axis (a named Dim or Dim.DYNAMIC)."""
    return axis_spec is not None and not isinstance(axis_spec, int) and all(axis_spec is not hint
                                                                            for hint in _NOT_REQUESTED)


def _axes(spec):
    """A tensor's dynamic-shape spec (dict {axis: Dim} or a per-axis list/tuple) -> {axis: Dim} requested."""
    if isinstance(spec, dict):
        items = spec.items()
    elif isinstance(spec, (list, tuple)):
        items = enumerate(spec)
    else:
        return {}
    return {axis: dim for axis, dim in items if _requested(dim)}


def _per_tensor_specs(model, args, dynamic_shapes):
    """[(tensor, its spec)] in the order of the graph's inputs (the flattened tensor arguments)."""
    if isinstance(dynamic_shapes, dict):  # keyed by the forward's argument names
        forward = model.forward if isinstance(model, torch.nn.Module) else model
        bound = inspect.signature(forward).bind(*args)
        dynamic_shapes = tuple(dynamic_shapes.get(name) for name in bound.arguments)
        args = tuple(bound.arguments.values())
    pairs = []
    for arg, spec in zip(args, dynamic_shapes):
        if isinstance(arg, torch.Tensor):
            pairs.append((arg, spec))
        else:  # a nested structure of tensors with a matching structure of specs (or None for all)
            tensors = [leaf for leaf in pytree.tree_leaves(arg) if isinstance(leaf, torch.Tensor)]
            specs = [None] * len(tensors) if spec is None else pytree.tree_flatten(
                spec, is_leaf=lambda node: isinstance(node, dict) or node is None)[0]
            pairs += list(zip(tensors, specs))
    return pairs


def check_dynamic_axes(onnx_model, model, args, dynamic_shapes, input_names=None):
    """ValueError naming every input axis that dynamic_shapes asks to be dynamic but that the written
    graph (an onnx_ir Model, `ONNXProgram.model`) has fixed to a size."""
    if not dynamic_shapes:
        return
    inputs = list(onnx_model.graph.inputs)
    fixed = []
    for position, (tensor, spec) in enumerate(_per_tensor_specs(model, args, dynamic_shapes)):
        if position >= len(inputs):
            break
        graph_input = inputs[position]
        name = input_names[position] if input_names and position < len(input_names) else graph_input.name
        for axis, dim in sorted(_axes(spec).items()):
            size = graph_input.shape[axis] if graph_input.shape is not None else None
            if isinstance(size, int):
                dim_name = getattr(dim, "__name__", str(dim))
                fixed.append(f"input {name!r} axis {axis} ({dim_name}) was fixed to {size}")
    if fixed:
        raise ValueError("export: dynamic_shapes asked for dynamic axes that the written graph has fixed, "
                         "because torch.export could not keep them dynamic (check each Dim's min/max against "
                         "what the model allows, or use torch.export.Dim.DYNAMIC): " + "; ".join(fixed))
