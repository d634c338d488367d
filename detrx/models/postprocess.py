"""Turns raw outputs into detections in image pixels: scores, labels, xyxy boxes."""
import torch
from torch import nn

from detrx.util.box_ops import box_cxcywh_to_xyxy


class PostProcess(nn.Module):
    """loss="ce": per query the best non-"no object" class (DETR); loss="focal": the top
    `num_select` (query, class) pairs by sigmoid score (Deformable DETR)."""

    def __init__(self, loss="ce", num_select=100):
        super().__init__()
        if loss not in ("ce", "focal"):
            raise ValueError(f"loss must be 'ce' or 'focal', got {loss!r}")
        self.loss, self.num_select = loss, num_select

    @torch.no_grad()
    def forward(self, outputs, target_sizes):
        """outputs "pred_logits" [B, Q, K], "pred_boxes" [B, Q, 4]; target_sizes [B, 2] (h, w) ->
        list of B dicts "scores" [D], "labels" [D], "boxes" [D, 4] xyxy pixels."""
        scores, labels, boxes = self.batched(outputs, target_sizes)
        return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(scores, labels, boxes)]

    def batched(self, outputs, target_sizes):
        """As forward, as three batched tensors: scores [B, D], labels [B, D], boxes [B, D, 4]."""
        logits, boxes = outputs["pred_logits"].float(), outputs["pred_boxes"].float()
        if target_sizes.shape != (logits.shape[0], 2):
            raise ValueError(f"target_sizes must be [B, 2] = [{logits.shape[0]}, 2], got {tuple(target_sizes.shape)}")
        if self.loss == "ce":
            scores, labels = logits.softmax(-1)[..., :-1].max(-1)  # [B, Q]
        else:
            prob = logits.sigmoid().flatten(1)  # [B, Q * C]
            scores, index = prob.topk(min(self.num_select, prob.shape[1]), dim=1)
            labels = index % logits.shape[2]
            boxes = boxes.gather(1, (index // logits.shape[2])[..., None].expand(-1, -1, 4))
        h, w = target_sizes.unbind(1)
        scale = torch.stack([w, h, w, h], 1).to(boxes)[:, None]  # [B, 1, 4]
        return scores, labels, box_cxcywh_to_xyxy(boxes) * scale


def build_postprocess(args):
    return PostProcess(args.loss)
