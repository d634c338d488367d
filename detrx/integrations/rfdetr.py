"""Run rfdetr's multi-scale deformable attention on detrx's op.

rfdetr (RF-DETR, and the LW-DETR it derives from) computes MSDA in one function,
`rfdetr.models.ops.functions.ms_deform_attn_func.ms_deform_attn_core_pytorch`, as a per-level
`grid_sample`. `patch()` rebinds every name that holds that function in the loaded rfdetr modules
(its defining module, the `functions` package, the `MSDeformAttn` module's file, and any other
rfdetr module that imported it) to `ms_deform_attn_core`, which has the same signature and runs
`detrx.ops.ms_deform_attn`; `unpatch()` puts rfdetr's own function back under exactly those names.

    from detrx.integrations import rfdetr as detrx_rfdetr
    detrx_rfdetr.patch()              # or: with detrx_rfdetr.patched(): ...

rfdetr's layouts, converted without copies except the one the op makes of `value`:
    value                 [B, M, D, S]  channel-first (S = sum of H_l * W_l) -> permuted view [B, S, M, D]
    value_spatial_shapes  [L, 2] (H, W) integer tensor -> int64, plus its level start index
    sampling_locations    [B, Lq, M, L, P, 2] (eager) or [B, Lq, M, L * P, 2] (rfdetr's export mode)
    attention_weights     [B, Lq, M, L * P] softmaxed -> view [B, Lq, M, L, P]
    -> output             [B, Lq, M * D]
`value_spatial_shapes_hw` (rfdetr's Python (H, W) pairs) must agree with `value_spatial_shapes`.
Mixed dtypes (autocast: bfloat16 `value` and weights, float32 locations) are computed and returned
in the widest of them, as rfdetr's own path does.

rfdetr's own path is exactly grid_sample(bilinear, zeros, align_corners=False), which is what the op
computes, so outputs agree to rounding. rfdetr imports nothing of detrx and `import detrx` imports
nothing of rfdetr; this module imports rfdetr only when `patch()` runs.
"""
import contextlib
import importlib

import torch

from detrx.integrations._patching import GlobalsPatcher, loaded_modules
from detrx.ops import ms_deform_attn

__all__ = ["ms_deform_attn_core", "patch", "unpatch", "patched", "patched_sites"]

_CORE_MODULE = "rfdetr.models.ops.functions.ms_deform_attn_func"
_CORE_NAME = "ms_deform_attn_core_pytorch"
# Modules that bind the function at import time; imported before the scan so that all are found.
_USER_MODULES = ("rfdetr.models.ops.functions", "rfdetr.models.ops.modules.ms_deform_attn")

_patcher = GlobalsPatcher()
_original = None  # rfdetr's ms_deform_attn_core_pytorch, once patch() has seen it


def _fail(message):
    raise ValueError(f"ms_deform_attn_core: {message}")


def _spatial_shapes_int64(value_spatial_shapes, value_spatial_shapes_hw, device):
    """The op's int64 [L, 2] shapes from rfdetr's tensor (or, if that is not a tensor, the (H, W) pairs)."""
    shapes = value_spatial_shapes
    if not isinstance(shapes, torch.Tensor):
        shapes = torch.as_tensor(value_spatial_shapes_hw if shapes is None else shapes)  # float pairs: refused below
    if shapes.dim() != 2 or shapes.shape[1] != 2 or shapes.dtype.is_floating_point or shapes.is_complex():
        _fail(f"value_spatial_shapes must be an integer [L, 2] tensor of (H, W), got {shapes.dtype} "
              f"{tuple(shapes.shape)}")
    # Compared where reading the tensor is free; on a GPU, and while tracing (torch.export, where the
    # sizes are symbolic), the caller's two forms are trusted.
    if value_spatial_shapes_hw is not None and not torch.compiler.is_compiling():
        pairs = [[int(height), int(width)] for height, width in value_spatial_shapes_hw]
        if len(pairs) != shapes.shape[0] or (shapes.device.type == "cpu" and shapes.tolist() != pairs):
            _fail(f"value_spatial_shapes_hw {pairs} must equal value_spatial_shapes {shapes.tolist()}")
    return shapes.to(device=device, dtype=torch.int64)


def ms_deform_attn_core(value, value_spatial_shapes, sampling_locations, attention_weights,
                        value_spatial_shapes_hw=None):
    """rfdetr's `ms_deform_attn_core_pytorch` (same arguments, same result) on `detrx.ops.ms_deform_attn`.

    value [B, M, D, S], value_spatial_shapes [L, 2] (H, W), sampling_locations [B, Lq, M, L, P, 2] or
    [B, Lq, M, L * P, 2] normalised (x, y), attention_weights [B, Lq, M, L * P] -> [B, Lq, M * D].
    """
    if not isinstance(value, torch.Tensor) or value.dim() != 4:
        _fail(f"value must be a [B, M, D, S] tensor (rfdetr's channel-first layout), got "
              f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
    for name, tensor in (("sampling_locations", sampling_locations), ("attention_weights", attention_weights)):
        if not isinstance(tensor, torch.Tensor):
            _fail(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    spatial_shapes = _spatial_shapes_int64(value_spatial_shapes, value_spatial_shapes_hw, value.device)
    num_levels = spatial_shapes.shape[0]
    batch, heads = value.shape[:2]
    if sampling_locations.dim() == 5:   # rfdetr's export layout: (levels, points) merged
        merged = sampling_locations.shape[3]
        if merged % num_levels:
            _fail(f"sampling_locations [B, Lq, M, L * P, 2] needs a point axis divisible by L = {num_levels}, "
                  f"got {tuple(sampling_locations.shape)}")
        sampling_locations = sampling_locations.unflatten(3, (num_levels, merged // num_levels))
    elif sampling_locations.dim() != 6:
        _fail(f"sampling_locations must be [B, Lq, M, L, P, 2] or [B, Lq, M, L * P, 2], "
              f"got {tuple(sampling_locations.shape)}")
    num_points = sampling_locations.shape[4]
    expected = (batch, sampling_locations.shape[1], heads, num_levels * num_points)
    if tuple(attention_weights.shape) != expected:
        _fail(f"attention_weights must be [B, Lq, M, L * P] = {expected}, got {tuple(attention_weights.shape)}")

    level_sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]                                   # [L]
    level_start_index = torch.cat([level_sizes.new_zeros(1), level_sizes.cumsum(0)[:-1]])      # [L]
    # Under autocast rfdetr mixes dtypes (bfloat16 value and weights, float32 locations): its
    # grid_sample path then computes and returns the widest of them, and so does this.
    compute_dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype),
                                        attention_weights.dtype)
    return ms_deform_attn(
        value.permute(0, 3, 1, 2).to(compute_dtype),                           # [B, S, M, D] view
        spatial_shapes, level_start_index,
        sampling_locations.to(compute_dtype),                                  # [B, Lq, M, L, P, 2]
        attention_weights.unflatten(3, (num_levels, num_points)).to(compute_dtype))  # [B, Lq, M, L, P]


def _import_rfdetr():
    try:
        core = importlib.import_module(_CORE_MODULE)
        for name in _USER_MODULES:
            importlib.import_module(name)
    except ImportError as error:
        raise ImportError("detrx.integrations.rfdetr needs rfdetr: pip install 'detrx[rfdetr]'") from error
    return core


def patch():
    """Rebinds rfdetr's MSDA function, wherever a loaded rfdetr module holds it, to detrx's op.

    Harmless to repeat (a later call also covers rfdetr modules imported since). Returns the
    replaced names (`patched_sites()`).
    """
    global _original
    core = _import_rfdetr()
    if _original is None:
        _original = getattr(core, _CORE_NAME)
    _patcher.replace(loaded_modules("rfdetr"), _original, ms_deform_attn_core)
    return patched_sites()


def unpatch():
    """Puts rfdetr's own function back under every name `patch()` replaced (and under any name that
    an rfdetr module imported while patched); returns the restored names."""
    restored = _patcher.restore()
    if _original is not None:
        restored += GlobalsPatcher().replace(loaded_modules("rfdetr"), ms_deform_attn_core, _original)
    return restored


def patched_sites():
    """The names (`module.name`) that currently hold detrx's function instead of rfdetr's."""
    return _patcher.sites()


@contextlib.contextmanager
def patched():
    """`patch()` for the duration of a `with` block; unpatches on exit unless it was patched before."""
    was_patched = bool(_patcher)
    sites = patch()
    try:
        yield sites
    finally:
        if not was_patched:
            unpatch()
