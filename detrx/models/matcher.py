"""Hungarian matching of predictions to ground truth (DETR): a one-to-one assignment minimising
cost_class * C_class + cost_bbox * L1 + cost_giou * (-GIoU), solved per image with scipy."""
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from detrx.util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou


class HungarianMatcher(nn.Module):
    """Args:
        cost_class, cost_bbox, cost_giou: weights of the three costs (not all zero).
        focal: use the focal-loss class cost (sigmoid logits, Deformable DETR) instead of
            -softmax probability (DETR).
    """

    def __init__(self, cost_class=1.0, cost_bbox=5.0, cost_giou=2.0, focal=False, alpha=0.25, gamma=2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("cost_class, cost_bbox and cost_giou can't all be 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.focal, self.alpha, self.gamma = focal, alpha, gamma

    def cost_matrix(self, logits, boxes, tgt_labels, tgt_boxes):
        """logits [Q, K], boxes [Q, 4], tgt_labels [n], tgt_boxes [n, 4] -> cost [Q, n]."""
        if self.focal:
            prob = logits.sigmoid()[:, tgt_labels]  # [Q, n]
            neg = (1 - self.alpha) * prob ** self.gamma * -(1 - prob + 1e-8).log()
            pos = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
            class_cost = pos - neg
        else:
            class_cost = -logits.softmax(-1)[:, tgt_labels]  # [Q, n]
        bbox_cost = torch.cdist(boxes, tgt_boxes, p=1)  # [Q, n]
        giou_cost = -generalized_box_iou(box_cxcywh_to_xyxy(boxes)[:, None], box_cxcywh_to_xyxy(tgt_boxes)[None])
        return self.cost_bbox * bbox_cost + self.cost_class * class_cost + self.cost_giou * giou_cost

    @torch.no_grad()
    def forward(self, outputs, targets):
        """outputs: "pred_logits" [B, Q, K], "pred_boxes" [B, Q, 4]; targets: list of B dicts with
        "labels" [n_i], "boxes" [n_i, 4].

        Returns B pairs (query indices [m_i], target indices [m_i]) int64, m_i = min(Q, n_i).
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"targets has {len(targets)} entries but outputs a batch of {logits.shape[0]}")
        indices = []
        for b, target in enumerate(targets):
            if len(target["labels"]) == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(logits[b].float(), boxes[b].float(), target["labels"], target["boxes"].float())
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices


def build_matcher(args):
    return HungarianMatcher(args.set_cost_class, args.set_cost_bbox, args.set_cost_giou,
                            focal=args.loss == "focal")
