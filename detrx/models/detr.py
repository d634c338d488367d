"""Vanilla DETR (Carion et al. 2020): CNN backbone -> transformer encoder over the last feature map
with sine positions -> decoder over N learned object queries -> class and box heads on every
decoder layer (the earlier layers feed the auxiliary losses)."""
import torch
import torch.nn.functional as F
from torch import nn

from detrx.models.position_encoding import PositionEmbeddingSine


class MLP(nn.Module):
    """Plain multi-layer perceptron with ReLU between layers (the box head)."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


def pack_outputs(logits, boxes):
    """Per-layer predictions logits [L, B, Q, K], boxes [L, B, Q, 4] -> the criterion's dict:
    the last layer as "pred_logits"/"pred_boxes", the others as "aux_outputs"."""
    aux = [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(logits[:-1], boxes[:-1])]
    return {"pred_logits": logits[-1], "pred_boxes": boxes[-1], "aux_outputs": aux}


class DETR(nn.Module):
    """Args:
        backbone: returns one feature level (DETR uses a single stride, 32 in the paper).
        transformer: `detrx.models.transformer.Transformer`.
        num_classes: object classes; the class head has num_classes + 1 outputs with
            cross-entropy (last = no object) and num_classes with focal loss.
        num_queries: N, the most objects one image can yield.
    """

    def __init__(self, backbone, transformer, num_classes, num_queries, loss="ce"):
        super().__init__()
        d_model = transformer.d_model
        self.backbone, self.transformer = backbone, transformer
        self.num_classes, self.num_queries = num_classes, num_queries
        self.position = PositionEmbeddingSine(d_model // 2)
        self.input_proj = nn.Conv2d(backbone.num_channels[-1], d_model, kernel_size=1)
        self.query_embed = nn.Embedding(num_queries, d_model)  # learned query positions
        self.class_embed = nn.Linear(d_model, num_classes + (1 if loss == "ce" else 0))
        self.bbox_embed = MLP(d_model, d_model, 4, 3)

    def encode_inputs(self, images, mask):
        """images [B, 3, H, W], mask [B, H, W] -> src, pos [B, S, C], padding mask [B, S], and the
        feature map's (h, w) with S = h*w."""
        features, feature_mask = self.backbone(images, mask)[-1]
        pos = self.position(feature_mask).flatten(2).transpose(1, 2)  # [B, S, C]
        src = self.input_proj(features).flatten(2).transpose(1, 2)  # [B, S, C]
        return src, pos, feature_mask.flatten(1), tuple(features.shape[-2:])

    def heads(self, hs):
        """hs [L, B, Q, C] -> logits [L, B, Q, K], boxes [L, B, Q, 4] (sigmoid cxcywh)."""
        return self.class_embed(hs), self.bbox_embed(hs).sigmoid()

    def decode(self, encoded, query_pos, self_attn_mask=None):
        """Runs the transformer on encode_inputs' output with a zero content stream;
        query_pos [B, Q, C] -> hs [L, B, Q, C]."""
        src, pos, padding_mask, memory_shape = encoded
        tgt = torch.zeros_like(query_pos)
        hs, _ = self.transformer(src, pos, padding_mask, memory_shape, tgt, query_pos, self_attn_mask)
        return hs

    def object_query_pos(self, batch_size):
        return self.query_embed.weight[None].expand(batch_size, -1, -1)  # [B, N, C]

    def forward(self, images, mask, targets=None):
        """images [B, 3, H, W], mask [B, H, W] -> dict with "pred_logits" [B, N, K],
        "pred_boxes" [B, N, 4] and "aux_outputs". `targets` is unused (DN models need it)."""
        hs = self.decode(self.encode_inputs(images, mask), self.object_query_pos(images.shape[0]))
        return pack_outputs(*self.heads(hs))


def build_detr(args, backbone, transformer):
    return DETR(backbone, transformer, args.num_classes, args.num_queries, args.loss)
