"""DINO's decoder loop (Zhang et al. 2022, Sec. 3.4 and 3.5) over the deformable transformer's layers.

Every layer gets its query positions from the current reference box (DAB-DETR): an MLP over the
box's sine encoding, recomputed at each layer, so position and reference always agree. Each layer
refines the box it was given; the refined box, detached, is the next layer's reference.

Look forward twice: layer i's predicted box is its delta added to the *un-detached* refined box of
layer i-1, so layer i's box loss also trains layer i-1's box head (and the layers below it through
that head's input). Deformable DETR looks forward once: the box is the delta added to the detached
reference, so each box head learns from its own layer's loss only. Both give the same box values;
only the gradients differ. The reference entering the next layer is detached either way.
"""
from torch import nn

from detrx.models.deformable_transformer import refine_boxes
from detrx.models.detr import MLP
from detrx.models.position_encoding import sine_encoding


class DINODecoder(nn.Module):
    """Args:
        d_model: the transformer width (the box sine encoding has 2 * d_model channels).
        look_forward_twice: layer i's box from layer i-1's un-detached box (else the detached one).
    """

    def __init__(self, d_model, look_forward_twice=True):
        super().__init__()
        self.query_pos_head = MLP(2 * d_model, d_model, d_model, 2)
        self.look_forward_twice = look_forward_twice

    def query_pos(self, reference):
        """reference [B, Q, 4] (cx, cy, w, h) -> query positions [B, Q, C]."""
        return self.query_pos_head(sine_encoding(reference, self.query_pos_head.layers[-1].out_features // 2))

    def forward(self, layers, encoded, tgt, reference, bbox_embed, self_attn_mask=None):
        """layers: the DeformableDecoderLayers; encoded: EncodedImages; tgt [B, Q, C] content;
        reference [B, Q, 4] initial boxes (detached by the caller); bbox_embed: one box head per layer ->
        (hs [L, B, Q, C], boxes [L, B, Q, 4])."""
        memory, mask, shapes, level_start, valid_ratios, level_shapes = encoded
        scale = valid_ratios.repeat(1, 1, 2)[:, None]  # [B, 1, L, 4] (w, h, w, h)
        previous = reference  # the previous layer's refined box, with its graph
        hs, boxes, out = [], [], tgt
        for layer, head in zip(layers, bbox_embed):
            out = layer(out, self.query_pos(reference), reference[:, :, None] * scale, memory, shapes,
                        level_start, mask, self_attn_mask, level_shapes)  # [B, Q, C]
            delta = head(out)  # [B, Q, 4] logit space
            refined = refine_boxes(delta, reference)  # [B, Q, 4]
            boxes.append(refine_boxes(delta, previous) if self.look_forward_twice else refined)
            hs.append(out)
            previous, reference = refined, refined.detach()
        return hs, boxes
