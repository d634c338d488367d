"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2020) as a torch.library op.

Each query samples P points on each of L feature levels for each of M heads, bilinearly
(exactly grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)), and returns the
attention-weighted sum of the samples:

    value               [N, S, M, D]         S = sum_l H_l * W_l, levels flattened row-major
    spatial_shapes      int64 [L, 2]         (H_l, W_l)
    level_start_index   int64 [L]            offset of each level in S
    sampling_locations  [N, Lq, M, L, P, 2]  normalised (x, y); outside [0, 1] samples zeros
    attention_weights   [N, Lq, M, L, P]     already softmaxed over (L, P)
    -> output           [N, Lq, M * D]

`ms_deform_attn` runs the compiled CPU/CUDA kernels (the backward is its own op,
`detrx::ms_deform_attn_backward`); `ms_deform_attn_reference` is the grid_sample formulation.
Shape, dtype and device errors raise ValueError naming the argument. A float16/bfloat16 `value` may
come with float32 `sampling_locations` and `attention_weights` (what autocast passes): the op then
computes in float32 and returns the output in value's dtype; the location and weight gradients are
float32.

The level layout (spatial_shapes and level_start_index tile S) depends on tensor data. On the CPU
it is checked when the op runs. On CUDA nothing is copied to the host (no synchronisation, so the
op runs inside CUDA graphs): pass `spatial_shapes_list`, the (H, W) of each level as Python ints
(callers usually have them: the feature maps' sizes), to have the layout checked on the host with a
ValueError; without it the kernels assert the layout on the device, and a bad one surfaces as a
device-side assertion error at the next synchronisation.
"""
import torch
import torch.nn.functional as F

from detrx._extension import is_compiled, warn_if_missing

__all__ = ["ms_deform_attn", "ms_deform_attn_reference"]


def _is_location_dtype_allowed(value_dtype, location_dtype):
    """Locations and weights have value's dtype, or float32 with a float16/bfloat16 value (autocast)."""
    return location_dtype == value_dtype or (
        value_dtype in (torch.float16, torch.bfloat16) and location_dtype == torch.float32)


def _check_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Checks ranks, sizes, dtypes and devices (everything that needs no tensor data)."""
    for name, tensor in (("value", value), ("spatial_shapes", spatial_shapes),
                         ("level_start_index", level_start_index),
                         ("sampling_locations", sampling_locations),
                         ("attention_weights", attention_weights)):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"ms_deform_attn: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be [N, S, M, D], got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise ValueError(f"ms_deform_attn: value must be a floating-point tensor, got {value.dtype}")
    N, S, M, D = value.shape
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2 or spatial_shapes.shape[0] < 1:
        raise ValueError(f"ms_deform_attn: spatial_shapes must be [L, 2] with L >= 1, "
                         f"got shape {tuple(spatial_shapes.shape)}")
    L = spatial_shapes.shape[0]
    if level_start_index.shape != (L,):
        raise ValueError(f"ms_deform_attn: level_start_index must be [L] = [{L}] (one per level of "
                         f"spatial_shapes), got shape {tuple(level_start_index.shape)}")
    for name, tensor in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if tensor.dtype != torch.int64:
            raise ValueError(f"ms_deform_attn: {name} must be int64, got {tensor.dtype}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(f"ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2], "
                         f"got shape {tuple(sampling_locations.shape)}")
    Lq, P = sampling_locations.shape[1], sampling_locations.shape[4]
    expected = (N, Lq, M, L, P, 2)
    if tuple(sampling_locations.shape) != expected:
        raise ValueError(f"ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2] = {expected} "
                         f"(N, M from value, L from spatial_shapes), got {tuple(sampling_locations.shape)}")
    if tuple(attention_weights.shape) != expected[:5]:
        raise ValueError(f"ms_deform_attn: attention_weights must be [N, Lq, M, L, P] = {expected[:5]}, "
                         f"got {tuple(attention_weights.shape)}")
    if not _is_location_dtype_allowed(value.dtype, sampling_locations.dtype):
        raise ValueError(f"ms_deform_attn: sampling_locations must have value's dtype {value.dtype} (or "
                         f"float32 when value is float16/bfloat16), got {sampling_locations.dtype}")
    if attention_weights.dtype != sampling_locations.dtype:
        raise ValueError(f"ms_deform_attn: attention_weights must have sampling_locations' dtype "
                         f"{sampling_locations.dtype}, got {attention_weights.dtype}")
    for name, tensor in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index),
                         ("sampling_locations", sampling_locations), ("attention_weights", attention_weights)):
        if tensor.device != value.device:
            raise ValueError(f"ms_deform_attn: {name} must be on value's device {value.device}, got {tensor.device}")


def _check_levels(spatial_shapes, level_start_index, num_values):
    """Checks the level layout against S (needs the data of the two small int64 tensors)."""
    shapes = spatial_shapes.tolist()
    if any(h < 0 or w < 0 for h, w in shapes):
        raise ValueError(f"ms_deform_attn: spatial_shapes must be non-negative, got {shapes}")
    areas = [h * w for h, w in shapes]
    if sum(areas) != num_values:
        raise ValueError(f"ms_deform_attn: spatial_shapes areas sum to {sum(areas)} but value has "
                         f"S = {num_values} rows (value must be [N, sum H*W, M, D])")
    starts = [sum(areas[:i]) for i in range(len(areas))]
    if level_start_index.tolist() != starts:
        raise ValueError(f"ms_deform_attn: level_start_index must be the running sum of the level "
                         f"areas {starts}, got {level_start_index.tolist()}")
    return shapes


def _check_shapes_list(spatial_shapes_list, num_levels, num_values):
    """Checks the host-side level shapes [(H, W)] * L against L and S; returns them flattened
    (H_0, W_0, H_1, W_1, ...), as the op's schema takes them."""
    if not isinstance(spatial_shapes_list, (list, tuple)) or len(spatial_shapes_list) != num_levels or not all(
            isinstance(hw, (list, tuple, torch.Size)) and len(hw) == 2 for hw in spatial_shapes_list):
        raise ValueError(f"ms_deform_attn: spatial_shapes_list must be a list of L = {num_levels} (H, W) pairs "
                         f"(one per level of spatial_shapes), got {spatial_shapes_list!r}")
    flat = [size for hw in spatial_shapes_list for size in hw]
    if not all(isinstance(size, (int, torch.SymInt)) and not isinstance(size, bool) for size in flat):
        raise ValueError(f"ms_deform_attn: spatial_shapes_list must hold ints, got {spatial_shapes_list!r}")
    if any(size < 0 for size in flat):
        raise ValueError(f"ms_deform_attn: spatial_shapes_list must be non-negative, got {spatial_shapes_list!r}")
    total = sum(h * w for h, w in spatial_shapes_list)
    if total != num_values:
        raise ValueError(f"ms_deform_attn: spatial_shapes_list areas sum to {total} but value has "
                         f"S = {num_values} rows (value must be [N, sum H*W, M, D])")
    return flat


def ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                             spatial_shapes_list=None):
    """The grid_sample formulation of Deformable DETR (per-level grid_sample, weighted sum).
    With spatial_shapes_list the level sizes come from it and no tensor data is read on the host.
    A float16/bfloat16 `value` with float32 locations and weights is computed in float32 and the
    output cast back to value's dtype."""
    _check_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if spatial_shapes_list is None:
        shapes = _check_levels(spatial_shapes, level_start_index, value.shape[1])
    else:
        flat = _check_shapes_list(spatial_shapes_list, spatial_shapes.shape[0], value.shape[1])
        shapes = list(zip(flat[0::2], flat[1::2]))
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    compute_value = value.to(sampling_locations.dtype)  # float32 for a float16/bfloat16 value under autocast
    value_per_level = compute_value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1] coordinates
    samples = []
    for level, (h, w) in enumerate(shapes):
        if h * w == 0:  # an empty map has no pixel to sample (grid_sample refuses it)
            samples.append(compute_value.new_zeros(N * M, D, Lq, P))
            continue
        level_value = value_per_level[level].flatten(2).transpose(1, 2).reshape(N * M, D, h, w)
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [N*M, Lq, P, 2]
        samples.append(F.grid_sample(  # pragma: no mutate (each is the default; set to silence a warning)
            level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False))  # [N*M, D, Lq, P]
    weights = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    output = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1)  # [N*M, D, Lq]
    return output.view(N, M * D, Lq).transpose(1, 2).contiguous().to(value.dtype)


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                   spatial_shapes_list=None):
    """Multi-scale deformable attention with the compiled kernels; see the module docstring.

    spatial_shapes_list: optional [(H_0, W_0), (H_1, W_1), ...] as Python ints, the same levels as
    spatial_shapes; lets the layout be checked on the host without reading the tensor (CUDA).
    """
    _check_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if torch.jit.is_tracing():  # the list's sizes are traced tensors; as ints they would freeze the graph's size
        spatial_shapes_list = None
    flat = None
    if spatial_shapes_list is not None:
        flat = _check_shapes_list(spatial_shapes_list, spatial_shapes.shape[0], value.shape[1])
    if not is_compiled():
        warn_if_missing()
        return ms_deform_attn_reference(value, spatial_shapes, level_start_index,
                                        sampling_locations, attention_weights, spatial_shapes_list)
    return torch.ops.detrx.ms_deform_attn(value, spatial_shapes, level_start_index,
                                          sampling_locations, attention_weights, flat)


if is_compiled():
    @torch.library.register_fake("detrx::ms_deform_attn")
    def _ms_deform_attn_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                             spatial_shapes_hw=None):
        _check_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        N, _, M, D = value.shape
        return value.new_empty((N, sampling_locations.shape[1], M * D))

    @torch.library.register_fake("detrx::ms_deform_attn_backward")
    def _ms_deform_attn_backward_fake(grad_output, value, spatial_shapes, level_start_index,
                                      sampling_locations, attention_weights, spatial_shapes_hw=None):
        return (torch.empty_like(value), torch.empty_like(sampling_locations),
                torch.empty_like(attention_weights))

    def _setup_context(ctx, inputs, output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, spatial_shapes_hw = inputs
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        ctx.spatial_shapes_hw = spatial_shapes_hw

    def _backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = torch.ops.detrx.ms_deform_attn_backward(
            grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            ctx.spatial_shapes_hw)
        return grad_value, None, None, grad_locations, grad_weights, None

    torch.library.register_autograd("detrx::ms_deform_attn", _backward, setup_context=_setup_context)
