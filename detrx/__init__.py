"""detrx: fused C++/CUDA operators for DETR-family detectors, and the models built on them."""
from detrx._extension import build_info, is_compiled
from detrx import ops

__all__ = ["build_info", "is_compiled", "ops"]
