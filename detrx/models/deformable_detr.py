"""Deformable DETR (Zhu et al. 2020): multi-scale features (strides 8/16/32, plus a stride-64 level
made by a strided conv when num_feature_levels = 4), MSDA in encoder and decoder, reference points
from the query positions, sigmoid focal loss, iterative box refinement (per-layer heads, each
layer refining the previous layer's box), and optionally two-stage queries (`two_stage.py`)."""
import copy
import math

import torch
from torch import nn

from detrx.models.deformable_transformer import ObjectQueries, refine_boxes
from detrx.models.detr import MLP, pack_outputs
from detrx.models.position_encoding import PositionEmbeddingSine
from detrx.models.two_stage import TwoStageQueries


def _group_norm(channels):
    return nn.GroupNorm(math.gcd(32, channels), channels)


class DeformableDETR(nn.Module):
    """Args:
        backbone: returns the stride-8/16/32 levels.
        transformer: `DeformableTransformer` with num_feature_levels levels.
        num_classes, num_queries: as in DETR.
        box_refine: per-layer box heads and iterative refinement (else one shared head).
        loss: "focal" (the paper's; logits [.., num_classes]) or "ce" ([.., num_classes + 1]).
        two_stage: queries selected from the encoder's proposals (else learned); the outputs then
            include "enc_outputs", the encoder's per-token predictions, for their own loss.
    """

    def __init__(self, backbone, transformer, num_classes, num_queries, num_feature_levels=4,
                 box_refine=True, loss="focal", two_stage=False):
        super().__init__()
        d_model, levels = transformer.d_model, len(backbone.num_channels)
        if not levels <= num_feature_levels <= levels + 1:
            raise ValueError(f"num_feature_levels must be {levels} or {levels + 1} for a backbone with "
                             f"{levels} levels, got {num_feature_levels}")
        self.backbone, self.transformer = backbone, transformer
        self.num_classes, self.num_queries = num_classes, num_queries
        self.position = PositionEmbeddingSine(d_model // 2)
        proj = [nn.Sequential(nn.Conv2d(c, d_model, 1), _group_norm(d_model)) for c in backbone.num_channels]
        if num_feature_levels > levels:  # extra coarsest level from the last backbone map
            proj.append(nn.Sequential(nn.Conv2d(backbone.num_channels[-1], d_model, 3, 2, 1), _group_norm(d_model)))
        self.input_proj = nn.ModuleList(proj)
        class_embed = nn.Linear(d_model, num_classes + (1 if loss == "ce" else 0))
        if loss == "focal":  # prior probability 0.01 for every class, as in RetinaNet
            nn.init.constant_(class_embed.bias, -math.log((1 - 0.01) / 0.01))
        bbox_embed = MLP(d_model, d_model, 4, 3)
        nn.init.zeros_(bbox_embed.layers[-1].weight)
        nn.init.zeros_(bbox_embed.layers[-1].bias)
        self.two_stage = two_stage
        if two_stage:
            self.query_selection = TwoStageQueries(d_model, copy.deepcopy(class_embed), copy.deepcopy(bbox_embed), loss)
        else:
            self.query_embed = nn.Embedding(num_queries, 2 * d_model)  # (query position, content)
            self.reference_points = nn.Linear(d_model, 2)
        n = len(transformer.decoder)
        share = (lambda m: nn.ModuleList([copy.deepcopy(m) for _ in range(n)])) if box_refine \
            else (lambda m: nn.ModuleList([m] * n))
        self.class_embed, self.bbox_embed = share(class_embed), share(bbox_embed)
        self.box_refine = box_refine

    def multiscale_inputs(self, images, mask):
        """-> per level: projected features [B, C, h, w], masks [B, h, w], sine positions [B, C, h, w]."""
        features = self.backbone(images, mask)
        srcs = [proj(f) for proj, (f, _) in zip(self.input_proj, features)]
        masks = [m for _, m in features]
        if len(self.input_proj) > len(features):
            srcs.append(self.input_proj[-1](features[-1][0]))
            masks.append(nn.functional.interpolate(mask[:, None].float(), size=srcs[-1].shape[-2:]).bool()[:, 0])
        return srcs, masks, [self.position(m) for m in masks]

    def encode(self, images, mask):
        """images [B, 3, H, W], mask [B, H, W] -> EncodedImages (the multi-scale encoder's memory)."""
        return self.transformer.encode(*self.multiscale_inputs(images, mask))

    def object_queries(self, encoded):
        """encoded: EncodedImages -> ObjectQueries: learned (2-d reference points, no encoder
        outputs), or with two-stage selected from the encoder (4-d reference boxes)."""
        if self.two_stage:
            return self.query_selection(encoded, self.num_queries)
        batch_size = encoded.memory.shape[0]
        query_pos, tgt = self.query_embed.weight.chunk(2, dim=1)  # [N, C] each
        query_pos = query_pos[None].expand(batch_size, -1, -1)  # [B, N, C]
        return ObjectQueries(tgt[None].expand(batch_size, -1, -1), query_pos,
                             self.reference_points(query_pos).sigmoid(), encoder_outputs=None)

    def decode(self, encoded, queries, self_attn_mask=None):
        """Decoder + heads over the ObjectQueries -> logits [L, B, Q, K], boxes [L, B, Q, 4]."""
        hs, references = self.transformer.decode(encoded, queries.tgt, queries.query_pos, queries.reference_points,
                                                 self_attn_mask, self.bbox_embed if self.box_refine else None)
        logits = torch.stack([head(h) for head, h in zip(self.class_embed, hs)])
        boxes = torch.stack([refine_boxes(head(h), ref) for head, h, ref in zip(self.bbox_embed, hs, references)])
        return logits, boxes

    def forward(self, images, mask, targets=None):
        """images [B, 3, H, W], mask [B, H, W] -> "pred_logits" [B, N, K], "pred_boxes" [B, N, 4],
        "aux_outputs" (and "enc_outputs" with two-stage)."""
        encoded = self.encode(images, mask)
        queries = self.object_queries(encoded)
        return with_encoder_outputs(pack_outputs(*self.decode(encoded, queries)), queries.encoder_outputs)


def with_encoder_outputs(outputs, encoder_outputs):
    """Adds the two-stage encoder outputs (if any) to the criterion's dict."""
    if encoder_outputs is not None:
        outputs["enc_outputs"] = encoder_outputs
    return outputs


def build_deformable_detr(args, backbone, transformer):
    return DeformableDETR(backbone, transformer, args.num_classes, args.num_queries,
                          args.num_feature_levels, args.box_refine, args.loss, args.two_stage)
