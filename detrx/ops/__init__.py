"""detrx operators: one file per op, each with its compiled entry point and its PyTorch reference."""
from detrx.ops.ms_deform_attn import ms_deform_attn, ms_deform_attn_reference

__all__ = ["ms_deform_attn", "ms_deform_attn_reference"]
