"""Denoising (DN) queries for DN-DETR and DN-Deformable-DETR, on the DN op (`detrx.ops`).

The op makes `num_groups` noisy copies of every ground-truth (class, box) and the attention mask.
Here each noisy (class, box) becomes a query positional vector:

    pos = label_embed(class) + box_proj(sine(cx, cy, w, h))                   # [B, K, C]

`label_embed` has num_classes + 1 rows (the last for padded slots). We sum rather than concatenate:
the sum keeps the full width C for both parts and enters the decoder exactly like the learned
object-query positions (a C-vector added to queries and keys); concatenating would give each part
C/2 channels and need another projection to mix them. The content stream of DN queries is zero,
like that of the object queries.
"""
from torch import nn

from detrx.models.position_encoding import sine_encoding
from detrx import ops


class DenoisingQueries(nn.Module):
    """Args:
        num_classes, d_model: as in the detector (d_model divisible by 8).
        num_groups: noisy copies of each ground truth.
        label_noise_ratio, box_noise_scale: the DN-DETR noise (p and lambda).
        contrastive: also make DINO negatives (larger noise, trained towards "no object").
        noise_style: "dn_detr" (centre/size jitter) or "dino" (corner jitter).
        dn_number: DINO's query budget: when given, it replaces num_groups by
            max(1, dn_number // group_size) groups for each batch (group_size: the batch's largest
            gt count, twice that with contrastive groups).
    """

    def __init__(self, num_classes, d_model, num_groups=5, label_noise_ratio=0.5, box_noise_scale=0.4,
                 contrastive=False, noise_style="dn_detr", dn_number=None):
        super().__init__()
        if d_model % 8:
            raise ValueError(f"d_model must be divisible by 8 for the box sine encoding, got {d_model}")
        self.num_classes, self.num_groups = num_classes, num_groups
        self.label_noise_ratio, self.box_noise_scale = label_noise_ratio, box_noise_scale
        self.contrastive, self.noise_style, self.dn_number = contrastive, noise_style, dn_number
        self.label_embed = nn.Embedding(num_classes + 1, d_model)
        self.box_proj = nn.Linear(d_model, d_model)

    def embed(self, labels, boxes):
        """labels [B, K], boxes [B, K, 4] -> query positions [B, K, C]."""
        box_sine = sine_encoding(boxes, self.box_proj.in_features // 4)  # [B, K, C]
        return self.label_embed(labels) + self.box_proj(box_sine)

    def forward(self, targets, num_queries, nhead, generator=None):
        """targets: list of {"labels", "boxes"} -> (dn, query_pos [B, K, C], attn_mask
        [B * nhead, K + N, K + N] True = blocked, dn_targets: the criterion's DN targets).

        No row of the mask is fully blocked (which would softmax to NaN): every query sees the N
        matching queries, padded DN slots included.
        """
        gt_labels, gt_boxes, gt_counts = ops.pad_targets(targets)
        dn = ops.build_dn_queries(gt_labels, gt_boxes, gt_counts, num_classes=self.num_classes,
                              num_queries=num_queries, num_groups=self.num_groups,
                              dn_number=self.dn_number,
                              label_noise_ratio=self.label_noise_ratio, box_noise_scale=self.box_noise_scale,
                              noise_style=self.noise_style, contrastive=self.contrastive, generator=generator)
        attn_mask = dn.attn_mask.repeat_interleave(nhead, dim=0)  # [B * nhead, K + N, K + N]
        labels, boxes, box_mask = ops.dn_loss_targets(dn, gt_labels, gt_boxes)
        dn_targets = {"labels": labels, "boxes": boxes, "box_mask": box_mask, "valid": dn.valid,
                      "num_groups": dn.num_groups}
        return dn, self.embed(dn.labels, dn.boxes), attn_mask, dn_targets


def wants_dn(training, targets, use_dn):
    """Whether a forward builds DN queries: use_dn if given, else in training when targets are given.
    ValueError when they are asked for without targets (they are built from them)."""
    use_dn = (training and targets is not None) if use_dn is None else use_dn
    if use_dn and targets is None:
        raise ValueError("targets are required when use_dn is True (DN queries are built from them)")
    return use_dn


def split_layers(logits, boxes, num_dn):
    """Per-layer predictions [L, B, K + N, .] -> ((dn_logits, dn_boxes), (logits, boxes))."""
    dn_logits, logits = ops.split_dn_outputs(logits, num_dn, dim=-2)
    dn_boxes, boxes = ops.split_dn_outputs(boxes, num_dn, dim=-2)
    return (dn_logits, dn_boxes), (logits, boxes)


def build_denoising(args):
    return DenoisingQueries(args.num_classes, args.d_model, args.dn_groups, args.label_noise_ratio,
                            args.box_noise_scale, args.contrastive, args.dn_noise_style)
