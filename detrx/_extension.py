"""Loads the compiled operators, or explains why they are missing.

`detrx` must import even when `detrx._C` was never built or no longer loads (for example after a
torch upgrade). The ops then run their pure-PyTorch references, and one warning says how to rebuild.
"""
import importlib.util
import warnings

import torch

REBUILD_HINT = "rebuild with `pip install -e . --no-build-isolation` (from the detrx checkout)"


def _load_extension():
    """-> (the detrx._C module or None, why it is missing: None, or a sentence saying what failed)."""
    if importlib.util.find_spec("detrx._C") is None:
        return None, "the compiled extension detrx._C was not found: it was never built"
    try:
        from detrx import _C as extension
    except (ImportError, OSError) as error:  # built against another torch, a missing library, ...
        return None, f"the compiled extension detrx._C failed to load: {error}"
    return extension, None


_C, _LOAD_ERROR = _load_extension()

_warned = False


def is_compiled() -> bool:
    """True when the compiled operators are registered under torch.ops.detrx."""
    return _C is not None


def warn_if_missing() -> None:
    """Warn once per process that the references are used instead of the compiled ops."""
    global _warned
    if _C is None and not _warned:
        _warned = True
        warnings.warn(
            f"detrx: {_LOAD_ERROR}; falling back to the "
            f"pure-PyTorch references, which are much slower. To fix it, {REBUILD_HINT}.",
            RuntimeWarning, stacklevel=3)


def build_info() -> dict:
    """How the extension was built: compiled or not, CUDA or not, archs, the torch it targets, the
    CPU levels its kernels were compiled for (cpu_levels), those this CPU runs (cpu_levels_supported)
    and the one in use (cpu_level; DETRX_CPU_CAPABILITY chooses another)."""
    info = {"compiled": _C is not None, "torch_runtime": torch.__version__}
    if _C is None:
        info.update(cuda=False, cuda_archs="", cpu_flags="", cpu_levels=(), cpu_levels_supported=(),
                    cpu_level=None, torch_built_against=None, load_error=str(_LOAD_ERROR), fix=REBUILD_HINT)
    else:
        info.update(cuda=bool(_C.WITH_CUDA), cuda_archs=_C.CUDA_ARCHS, cpu_flags=_C.CPU_FLAGS,
                    cpu_levels=_C.cpu_levels(), cpu_levels_supported=_C.supported_cpu_levels(),
                    cpu_level=_C.cpu_level(), torch_built_against=_C.TORCH_VERSION)
    return info
