"""nn.Modules built on detrx's operators."""
from detrx.nn.ms_deform_attn import MSDeformAttn, build_ms_deform_attn

__all__ = ["MSDeformAttn", "build_ms_deform_attn"]
