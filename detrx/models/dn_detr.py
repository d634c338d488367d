"""DN-DETR (Li et al. 2022) on vanilla DETR: in training, noisy copies of the ground truth enter
the decoder as extra queries, pre-assigned to the box they were noised from (no matching), so every
object gets several stable positives per step. The decoder sees [DN queries, object queries];
the DN mask keeps object queries (and other groups) from seeing a group's noisy ground truth.
DN queries exist only in training: at inference the model is exactly DETR."""
import torch

from detrx.models.denoising import split_layers, wants_dn
from detrx.models.detr import DETR, pack_outputs


class DNDETR(DETR):
    """DETR + `denoising` (a `DenoisingQueries`)."""

    def __init__(self, backbone, transformer, num_classes, num_queries, denoising, loss="ce"):
        super().__init__(backbone, transformer, num_classes, num_queries, loss)
        self.denoising = denoising

    def forward(self, images, mask, targets=None, use_dn=None, generator=None):
        """As DETR.forward; with DN queries (default: in training when targets are given) the
        output also has "dn_outputs", the DN queries' per-layer predictions (same keys as the
        matching queries': "pred_logits" [B, K, classes], "pred_boxes" [B, K, 4], "aux_outputs"), and
        "dn_targets", their loss targets ("labels", "boxes", "box_mask", "valid", "num_groups").
        use_dn=True in eval mode runs them too (used to check the mask for leaks)."""
        if not wants_dn(self.training, targets, use_dn):
            return super().forward(images, mask)
        encoded = self.encode_inputs(images, mask)
        dn, dn_pos, attn_mask, dn_targets = self.denoising(
            targets, self.num_queries, self.transformer.nhead, generator)
        query_pos = torch.cat([dn_pos, self.object_query_pos(images.shape[0])], dim=1)  # [B, K + N, C]
        hs = self.decode(encoded, query_pos, attn_mask)  # [L, B, K + N, C]
        (dn_logits, dn_boxes), matched = split_layers(*self.heads(hs), dn.num_dn)
        outputs = pack_outputs(*matched)
        outputs["dn_outputs"], outputs["dn_targets"] = pack_outputs(dn_logits, dn_boxes), dn_targets
        return outputs


def build_dn_detr(args, backbone, transformer, denoising):
    return DNDETR(backbone, transformer, args.num_classes, args.num_queries, denoising, args.loss)
