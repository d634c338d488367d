"""detrx operators: one file per op, each with its compiled entry point and its PyTorch reference."""
from detrx.ops.ms_deform_attn import ms_deform_attn, ms_deform_attn_reference
from detrx.ops.dn_common import DNQueries
from detrx.ops.dn_queries import build_dn_queries
from detrx.ops.dn_queries_reference import build_dn_queries_reference
from detrx.ops.dn_targets import dn_loss_targets, pad_targets, split_dn_outputs

__all__ = ["ms_deform_attn", "ms_deform_attn_reference", "DNQueries", "build_dn_queries",
           "build_dn_queries_reference", "pad_targets", "split_dn_outputs", "dn_loss_targets"]
