"""DN-Deformable-DETR: Deformable DETR + denoising queries. A DN query's position vector is built
as in DN-DETR (`DenoisingQueries`), its content stream is zero, and its reference point is the
centre of its noisy box (the whole box when the matching queries have 4-d references, as with
two-stage queries), so MSDA samples around the noisy box and the first layer refines from it.
Only the decoder self-attention takes the DN mask (MSDA cross-attention is per query)."""
import torch

from detrx.models.deformable_detr import DeformableDETR, with_encoder_outputs
from detrx.models.deformable_transformer import ObjectQueries
from detrx.models.denoising import split_layers, wants_dn
from detrx.models.detr import pack_outputs


class DNDeformableDETR(DeformableDETR):
    """DeformableDETR + `denoising` (a `DenoisingQueries`)."""

    def __init__(self, backbone, transformer, num_classes, num_queries, denoising, num_feature_levels=4,
                 box_refine=True, loss="focal", two_stage=False):
        super().__init__(backbone, transformer, num_classes, num_queries, num_feature_levels, box_refine, loss,
                         two_stage)
        self.denoising = denoising

    def forward(self, images, mask, targets=None, use_dn=None, generator=None):
        """As DeformableDETR.forward, plus "dn_outputs" and "dn_targets" when DN queries run (see
        DNDETR.forward)."""
        if not wants_dn(self.training, targets, use_dn):
            return super().forward(images, mask)
        encoded = self.encode(images, mask)
        queries = self.object_queries(encoded)
        dn, dn_pos, attn_mask, dn_targets = self.denoising(
            targets, self.num_queries, self.transformer.nhead, generator)
        # The DN slots' reference points: their noisy boxes' centres [B, K, 2], or the whole boxes
        # [B, K, 4] when the matching queries have 4-d references (two-stage).
        reference_dims = queries.reference_points.shape[-1]
        dn_reference = dn.boxes[..., :reference_dims].to(queries.reference_points.dtype)
        with_dn = ObjectQueries(tgt=torch.cat([torch.zeros_like(dn_pos), queries.tgt], dim=1),  # [B, K + N, C]
                                query_pos=torch.cat([dn_pos, queries.query_pos], dim=1),
                                reference_points=torch.cat([dn_reference, queries.reference_points], dim=1),
                                encoder_outputs=queries.encoder_outputs)
        logits, boxes = self.decode(encoded, with_dn, attn_mask)
        (dn_logits, dn_boxes), matched = split_layers(logits, boxes, dn.num_dn)
        outputs = with_encoder_outputs(pack_outputs(*matched), queries.encoder_outputs)
        outputs["dn_outputs"], outputs["dn_targets"] = pack_outputs(dn_logits, dn_boxes), dn_targets
        return outputs


def build_dn_deformable_detr(args, backbone, transformer, denoising):
    return DNDeformableDETR(backbone, transformer, args.num_classes, args.num_queries, denoising,
                            args.num_feature_levels, args.box_refine, args.loss, args.two_stage)
