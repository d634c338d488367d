"""Run Hugging Face transformers' multi-scale deformable attention on detrx's compiled op.

    from detrx.integrations import transformers as detrx_hf
    detrx_hf.patch()          # every MSDA site of the installed transformers now calls detrx
    ...
    detrx_hf.unpatch()        # HF's exact objects are back
    with detrx_hf.patched():  # or for a block
        ...

`patch()` scans the modeling modules of the installed transformers (every
`transformers/models/*/modeling_*.py` that mentions a site, imported here; one that fails to
import is skipped) for three kinds of site and replaces them with versions that call
`detrx.ops.ms_deform_attn`:

- `MultiScaleDeformableAttention`, the module class of Deformable DETR, RT-DETR, Grounding DINO,
  LW-DETR, RF-DETR, OmDet-Turbo, ...: its `forward` is replaced;
- `multi_scale_deformable_attention(value, shapes, locations, weights)` (Mask2Former, OneFormer);
- `multi_scale_deformable_attention_v2(value, shapes, locations, weights, num_points_list, method)`
  (RT-DETRv2, D-FINE, DEIMv2): per-level point counts, possibly unequal; `method="discrete"`
  (nearest-pixel sampling) stays HF's own code.

A function is replaced under every module global of the scanned modules that holds it. D-FINE
and DEIMv2 layers also keep the function in an attribute when they are built (`self.ms_deformable_attn_core
= multi_scale_deformable_attention_v2`): the `forward` of such a layer class is wrapped so that, while
patched, a layer holding HF's function runs detrx's for the call, so models built before `patch()`
use detrx too; models built while patched hold detrx's function, which runs HF's code again after
`unpatch()`. HF's denoising builder `get_contrastive_denoising_training_group` (RT-DETR, RT-DETRv2,
D-FINE, DEIMv2, PP-DocLayout) is replaced the same way, by `detrx.integrations.hf_denoising`.

Under autocast HF passes a float16/bfloat16 `value` with float32 locations and weights; the op
computes that in float32 and returns value's dtype.
"""
import contextlib
import functools
import importlib
import inspect
import pathlib
import pkgutil
import re

import torch

from detrx.integrations._patching import GlobalsPatcher
from detrx.integrations.hf_denoising import get_contrastive_denoising_training_group
from detrx.ops import ms_deform_attn

__all__ = ["patch", "unpatch", "patched", "patched_sites"]

MODULE_CLASS = "MultiScaleDeformableAttention"
FUNCTION_V1 = "multi_scale_deformable_attention"
FUNCTION_V2 = "multi_scale_deformable_attention_v2"
DENOISING_FUNCTION = "get_contrastive_denoising_training_group"
SITE_NAMES = (MODULE_CLASS, FUNCTION_V1, FUNCTION_V2, DENOISING_FUNCTION)

# `self.<attribute> = multi_scale_deformable_attention_v2` in a layer's __init__
STORED_FUNCTION_V2 = re.compile(rf"self\.(\w+)\s*=\s*{FUNCTION_V2}\b")

_patcher = GlobalsPatcher()
# Replacement functions stay in the attributes of layers built while patched; they run HF's
# original again once this is False.
_state = {"active": False}


def _level_layout(spatial_shapes, device):
    """int64 spatial_shapes [L, 2] and level_start_index [L] from HF's shapes (tensor or list of (H, W))."""
    if isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = spatial_shapes.to(device=device, dtype=torch.int64)
    elif any(isinstance(size, torch.SymInt) for hw in spatial_shapes for size in hw):
        # sizes under torch.export stay symbolic (torch.tensor or int() would make them constants)
        spatial_shapes = torch.stack([torch.stack([torch.scalar_tensor(size, dtype=torch.int64, device=device)
                                                   for size in hw]) for hw in spatial_shapes])  # [L, 2]
    else:
        spatial_shapes = torch.tensor([[int(h), int(w)] for h, w in spatial_shapes], device=device)  # int64
    areas = spatial_shapes.prod(1)  # [L]
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    return spatial_shapes, level_start_index


def _op_dtypes(value, sampling_locations, attention_weights):
    """Autocast gives a float16/bfloat16 value with float32 (or reduced) locations and weights: the op
    takes those in float32. Any other combination goes to the op unchanged (it names a bad one)."""
    if value.dtype in (torch.float16, torch.bfloat16):
        if sampling_locations.is_floating_point():
            sampling_locations = sampling_locations.float()
        if attention_weights.is_floating_point():
            attention_weights = attention_weights.float()
    return sampling_locations, attention_weights


def _host_shapes(shapes):
    """HF's level sizes when it has them as Python ints ([(H, W)] * L), else None."""
    # `and` -> `or` cannot be seen: a tensor's elements are tensors, so the int test fails for it too
    if isinstance(shapes, (list, tuple)) and all(isinstance(n, int) for hw in shapes for n in hw):  # pragma: no mutate
        return [tuple(hw) for hw in shapes]
    return None


def _msda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, host_shapes=None):
    """detrx's op on HF's arguments: value [N, S, M, D], locations [N, Lq, M, L, P, 2] -> [N, Lq, M * D].
    host_shapes, the level sizes as ints, spare the op a host copy of spatial_shapes on CUDA."""
    sampling_locations, attention_weights = _op_dtypes(value, sampling_locations, attention_weights)
    return ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                          spatial_shapes_list=host_shapes)


def multi_scale_deformable_attention_module_forward(self, value, value_spatial_shapes, value_spatial_shapes_list,
                                                    level_start_index, sampling_locations, attention_weights,
                                                    im2col_step=None):
    """`MultiScaleDeformableAttention.forward` on detrx's op (im2col_step is a CUDA-kernel detail: unused)."""
    shapes = value_spatial_shapes if isinstance(value_spatial_shapes, torch.Tensor) else value_spatial_shapes_list
    spatial_shapes, computed_start = _level_layout(shapes, value.device)
    if isinstance(level_start_index, torch.Tensor):
        level_start_index = level_start_index.to(device=value.device, dtype=torch.int64)
    else:
        level_start_index = computed_start
    return _msda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                 _host_shapes(value_spatial_shapes_list))


def _make_function_v1(original):
    """detrx version of `multi_scale_deformable_attention(value, value_spatial_shapes, locations, weights)`."""
    def multi_scale_deformable_attention(value, value_spatial_shapes, sampling_locations, attention_weights):
        if not _state["active"]:
            return original(value, value_spatial_shapes, sampling_locations, attention_weights)
        spatial_shapes, level_start_index = _level_layout(value_spatial_shapes, value.device)
        return _msda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                     _host_shapes(value_spatial_shapes))

    multi_scale_deformable_attention.__wrapped__ = original
    return multi_scale_deformable_attention


def _points_per_level(sampling_locations, attention_weights, num_points_list):
    """HF v2's flattened points -> the op's layout, padding every level to the largest point count.

    sampling_locations [N, Lq, M, sum(P_l), 2] and attention_weights [N, Lq, M, sum(P_l)], points
    ordered by level, become [N, Lq, M, L, P, 2] and [N, Lq, M, L, P] with P = max(P_l). Padded
    points lie outside every map (location -1) with weight 0: they sample nothing and add nothing.
    """
    num_points_list = [int(p) for p in num_points_list]
    N, Lq, M, total, _ = sampling_locations.shape
    if total != sum(num_points_list):
        raise ValueError(f"multi_scale_deformable_attention_v2: sampling_locations has {total} points a head "
                         f"but num_points_list {num_points_list} sums to {sum(num_points_list)}")
    levels, points = len(num_points_list), max(num_points_list)
    if all(p == points for p in num_points_list):  # pragma: no mutate (the loop below gives the same; a shortcut)
        return (sampling_locations.reshape(N, Lq, M, levels, points, 2),
                attention_weights.reshape(N, Lq, M, levels, points))
    padded_locations, padded_weights = [], []
    for level_locations, level_weights in zip(sampling_locations.split(num_points_list, dim=3),
                                              attention_weights.split(num_points_list, dim=3)):
        missing = points - level_locations.shape[3]
        off_map = level_locations.new_full((N, Lq, M, missing, 2), -1.0)  # pragma: no mutate (weight 0 anywhere)
        padded_locations.append(torch.cat([level_locations, off_map], 3))
        padded_weights.append(torch.cat([level_weights, level_weights.new_zeros(N, Lq, M, missing)], 3))
    return torch.stack(padded_locations, 3), torch.stack(padded_weights, 3)  # [N, Lq, M, L, P, 2], [N, Lq, M, L, P]


def _make_function_v2(original):
    """detrx version of `multi_scale_deformable_attention_v2(...)`; method="discrete" stays HF's."""
    def multi_scale_deformable_attention_v2(value, value_spatial_shapes, sampling_locations, attention_weights,
                                            num_points_list, method="default"):
        if not _state["active"] or method != "default":
            return original(value, value_spatial_shapes, sampling_locations, attention_weights, num_points_list,
                            method)
        spatial_shapes, level_start_index = _level_layout(value_spatial_shapes, value.device)
        if len(num_points_list) != spatial_shapes.shape[0]:
            raise ValueError(f"multi_scale_deformable_attention_v2: num_points_list must have one entry per level "
                             f"({spatial_shapes.shape[0]}), got {list(num_points_list)}")
        locations, weights = _points_per_level(sampling_locations, attention_weights, num_points_list)
        return _msda(value, spatial_shapes, level_start_index, locations, weights, _host_shapes(value_spatial_shapes))

    multi_scale_deformable_attention_v2.__wrapped__ = original
    return multi_scale_deformable_attention_v2


def _layers_storing_v2(modules):
    """[(layer class, attribute)]: the nn.Module classes of `modules` whose __init__ stores the v2 function."""
    found = []
    for module in modules:
        for cls in list(vars(module).values()):
            if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module) and cls.__module__ == module.__name__
                    and "__init__" in vars(cls) and "forward" in vars(cls)):
                continue
            try:
                source = inspect.getsource(vars(cls)["__init__"])
            except (OSError, TypeError):
                continue
            found += [(cls, attribute) for attribute in STORED_FUNCTION_V2.findall(source)]
    return found


def _make_layer_forward(original_forward, attribute, replacements):
    """The layer's forward, run with detrx's v2 function in `attribute` where the layer holds HF's
    (a layer built before patch()); `replacements` maps HF's functions to detrx's."""
    @functools.wraps(original_forward)
    def forward(self, *args, **kwargs):
        stored = vars(self).get(attribute)
        replacement = replacements.get(stored)
        if replacement is None:  # built while patched (detrx's already), or something else entirely
            return original_forward(self, *args, **kwargs)
        vars(self)[attribute] = replacement
        try:
            return original_forward(self, *args, **kwargs)
        finally:
            vars(self)[attribute] = stored

    forward.__wrapped__ = original_forward
    return forward


@functools.lru_cache(maxsize=1)
def _modeling_modules():
    """The importable `transformers.models.*.modeling_*` modules whose source names a site (scanned once)."""
    import transformers.models

    modules = []  # a tuple in the end: the cached list must not change
    for package in pkgutil.iter_modules(transformers.models.__path__):
        if not package.ispkg:
            continue
        folder = pathlib.Path(package.module_finder.path) / package.name
        for path in sorted(folder.glob("modeling_*.py")):
            if not any(name in path.read_text(errors="ignore") for name in SITE_NAMES):
                continue
            try:
                modules.append(importlib.import_module(f"transformers.models.{package.name}.{path.stem}"))
            except Exception:  # a model whose own dependencies are missing: nothing of it can run anyway
                continue
    return tuple(modules)


def _originals(modules, name):
    """The distinct objects that the modules define under `name` (each defined in that module)."""
    found = {}
    for module in modules:
        candidate = vars(module).get(name)
        if getattr(candidate, "__module__", None) == module.__name__:  # absent names give None
            found[id(candidate)] = candidate
    return list(found.values())


def patch():
    """Replaces every MSDA site of the installed transformers with detrx's op; returns patched_sites().

    Calling it again patches what was not patched yet (for example modules imported since) and
    nothing twice.
    """
    modules = _modeling_modules()
    _state["active"] = True
    for cls in _originals(modules, MODULE_CLASS):
        forward = vars(cls).get("forward")
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module) and forward is not None and \
                forward is not multi_scale_deformable_attention_module_forward:
            _patcher.replace([cls], forward, multi_scale_deformable_attention_module_forward)
    replacements = {FUNCTION_V1: _make_function_v1, FUNCTION_V2: _make_function_v2}
    replacements[DENOISING_FUNCTION] = lambda original: get_contrastive_denoising_training_group
    v2_replacements = {}  # HF's v2 function -> detrx's, for the layers that store it
    for name, make_replacement in replacements.items():
        for original in _originals(modules, name):
            replacement = make_replacement(original)
            _patcher.replace(modules, original, replacement)
            if name == FUNCTION_V2:
                v2_replacements[original] = replacement
    if v2_replacements:  # HF's v2 functions found unpatched: this is the first patch() (since unpatch())
        for cls, attribute in _layers_storing_v2(modules):
            forward = vars(cls)["forward"]
            _patcher.replace([cls], forward, _make_layer_forward(forward, attribute, v2_replacements))
    return patched_sites()


def unpatch():
    """Puts HF's exact objects back under every name patch() replaced; returns the restored sites."""
    _state["active"] = False  # pragma: no mutate (None reads the same: only its truth is read)
    return _patcher.restore()


def patched_sites():
    """Names of the sites now running detrx (`module.Class.forward`, `module.function`)."""
    return _patcher.sites()


@contextlib.contextmanager
def patched():
    """patch() for the duration of a `with` block, unpatch() after it (also on an exception)."""
    patch()
    try:
        yield patched_sites()
    finally:
        unpatch()
