"""nn.Modules built on detrx's operators."""
from detrx.nn.ms_deform_attn import MSDeformAttn

__all__ = ["MSDeformAttn"]
