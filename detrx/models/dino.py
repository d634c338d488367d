"""DINO (Zhang et al. 2022, "DINO: DETR with Improved DeNoising Anchor Boxes"): Deformable DETR with
4-d anchor boxes as queries and three changes over DN-Deformable-DETR:

1. Contrastive denoising (`ContrastiveDenoising`): dn_number DN queries per batch in groups of
   positive copies (small corner noise, trained to their gt) and negative copies (noise in
   [lambda, 2 lambda), trained to "no object"), built by the compiled DN op.
2. Mixed query selection (`MixedQuerySelection`): the top-K encoder proposals give the initial
   reference boxes (and so the positional queries); the content queries stay learned.
3. Look forward twice (`DINODecoder`): layer i's box is refined from layer i-1's un-detached box.

Every query, DN ones included, is (content, reference box): a DN query's content is its noisy
label's embedding and its reference its noisy box; the positional query comes from the reference
box at every decoder layer. The encoder's proposals get their own class-agnostic matched loss
("enc_outputs"), as in two-stage Deformable DETR. At inference there are no DN queries.
"""
import torch

from detrx.models.deformable_detr import DeformableDETR, with_encoder_outputs
from detrx.models.deformable_transformer import ObjectQueries
from detrx.models.denoising import DenoisingQueries, split_layers, wants_dn
from detrx.models.detr import pack_outputs
from detrx.models.dino_decoder import DINODecoder
from detrx.models.dino_queries import MixedQuerySelection


class ContrastiveDenoising(DenoisingQueries):
    """DINO's contrastive DN queries: dn_number slots split into max(1, dn_number // (2 * max_gt))
    groups of positives and negatives; the query content is the noisy label's embedding (its
    position comes from its noisy box in the decoder, so there is no box projection here)."""

    def __init__(self, num_classes, d_model, dn_number=100, label_noise_ratio=0.5, box_noise_scale=1.0,
                 noise_style="dino"):
        super().__init__(num_classes, d_model, 1, label_noise_ratio, box_noise_scale, contrastive=True,
                         noise_style=noise_style, dn_number=dn_number)
        del self.box_proj

    def embed(self, labels, boxes):
        """labels [B, K] -> content [B, K, C]."""
        return self.label_embed(labels)


class DINO(DeformableDETR):
    """Args: as DeformableDETR (always with per-layer box heads and refinement), plus
        denoising: a ContrastiveDenoising.
        mixed_selection: learned content queries (False: the selected encoder features).
        look_forward_twice: layer i's box trains layer i-1's box head too (False: look forward once).
    """

    def __init__(self, backbone, transformer, num_classes, num_queries, denoising, num_feature_levels=4,
                 loss="focal", mixed_selection=True, look_forward_twice=True):
        super().__init__(backbone, transformer, num_classes, num_queries, num_feature_levels, box_refine=True,
                         loss=loss, two_stage=True)
        heads = self.query_selection  # the two-stage encoder heads, reused by DINO's selection
        self.query_selection = MixedQuerySelection(transformer.d_model, heads.class_head, heads.box_head, loss,
                                                   num_queries, mixed_selection)
        self.query_decoder = DINODecoder(transformer.d_model, look_forward_twice)
        self.denoising = denoising

    def decode(self, encoded, queries, self_attn_mask=None):
        """Decoder + heads over the ObjectQueries -> logits [L, B, Q, K], boxes [L, B, Q, 4]."""
        hs, boxes = self.query_decoder(self.transformer.decoder, encoded, queries.tgt, queries.reference_points,
                                       self.bbox_embed, self_attn_mask)
        logits = torch.stack([head(h) for head, h in zip(self.class_embed, hs)])
        return logits, torch.stack(boxes)

    def forward(self, images, mask, targets=None, use_dn=None, generator=None):
        """As DeformableDETR.forward (with "enc_outputs"), plus "dn_outputs" and "dn_targets" when
        DN queries run (default: in training when targets are given; see DNDETR.forward)."""
        if not wants_dn(self.training, targets, use_dn):
            return super().forward(images, mask)
        encoded = self.encode(images, mask)
        queries = self.object_queries(encoded)
        dn, dn_content, attn_mask, dn_targets = self.denoising(
            targets, self.num_queries, self.transformer.nhead, generator)
        dtype = queries.reference_points.dtype
        with_dn = ObjectQueries(tgt=torch.cat([dn_content.to(queries.tgt.dtype), queries.tgt], dim=1),  # [B, K + N, C]
                                query_pos=None,
                                reference_points=torch.cat([dn.boxes.to(dtype), queries.reference_points], dim=1),
                                encoder_outputs=queries.encoder_outputs)
        logits, boxes = self.decode(encoded, with_dn, attn_mask)
        (dn_logits, dn_boxes), matched = split_layers(logits, boxes, dn.num_dn)
        outputs = with_encoder_outputs(pack_outputs(*matched), queries.encoder_outputs)
        outputs["dn_outputs"], outputs["dn_targets"] = pack_outputs(dn_logits, dn_boxes), dn_targets
        return outputs


def build_contrastive_denoising(args):
    return ContrastiveDenoising(args.num_classes, args.d_model, args.dn_number, args.label_noise_ratio,
                                args.box_noise_scale, args.dn_noise_style)


def build_dino(args, backbone, transformer, denoising):
    return DINO(backbone, transformer, args.num_classes, args.num_queries, denoising, args.num_feature_levels,
                args.loss, args.mixed_selection, args.look_forward_twice)
