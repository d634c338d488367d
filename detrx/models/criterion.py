"""DETR's set criterion: Hungarian-matched class + box losses on every decoder layer, plus the
denoising (DN) terms, whose queries come pre-assigned to their ground truth.

Losses per layer (keys; `_<i>` for auxiliary layer i, `_dn` for the denoising part, `_enc` for the
two-stage encoder's proposals, matched class-agnostically):
    loss_ce    cross-entropy with a down-weighted "no object" class, or sigmoid focal loss
    loss_bbox  L1 on normalised (cx, cy, w, h)
    loss_giou  1 - GIoU
Box terms and the focal loss are normalised by the number of ground-truth boxes in the batch,
averaged over processes under DDP (times the number of DN groups for the DN terms).
"""
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from detrx.models.two_stage import class_agnostic
from detrx.util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Elementwise focal loss (Lin et al. 2017): logits, targets [...] -> [...]."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss


class SetCriterion(nn.Module):
    """Args:
        num_classes: object classes (the "no object" class is index num_classes).
        matcher: a HungarianMatcher.
        weight_dict: loss key -> weight (see `build_weight_dict`).
        eos_coef: weight of the "no object" class in cross-entropy.
        loss: "ce" (logits [.., num_classes + 1]) or "focal" (logits [.., num_classes]).
    """

    def __init__(self, num_classes, matcher, weight_dict, eos_coef=0.1, loss="ce", focal_alpha=0.25):
        super().__init__()
        if loss not in ("ce", "focal"):
            raise ValueError(f"loss must be 'ce' or 'focal', got {loss!r}")
        self.num_classes, self.matcher, self.weight_dict = num_classes, matcher, weight_dict
        self.loss, self.focal_alpha = loss, focal_alpha
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def class_loss(self, logits, target_classes, valid, num_boxes):
        """logits [B, Q, K]; target_classes [B, Q] (num_classes = no object); valid [B, Q] bool."""
        logits, target_classes = logits[valid], target_classes[valid]  # [V, K], [V]
        if target_classes.numel() == 0:
            return logits.sum() * 0
        if self.loss == "ce":
            return F.cross_entropy(logits.float(), target_classes, weight=self.empty_weight)
        onehot = F.one_hot(target_classes, self.num_classes + 1)[:, :-1].to(logits.dtype)  # [V, C]
        return sigmoid_focal_loss(logits.float(), onehot.float(), self.focal_alpha).sum() / num_boxes

    @staticmethod
    def box_losses(pred_boxes, target_boxes, num_boxes):
        """pred_boxes, target_boxes [M, 4] cxcywh (already paired) -> (L1, GIoU) sums / num_boxes."""
        l1 = F.l1_loss(pred_boxes, target_boxes, reduction="sum") / num_boxes
        giou = generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(target_boxes))
        return l1, (1 - giou).sum() / num_boxes

    def matched_losses(self, outputs, targets, num_boxes):
        """Hungarian part of one decoder layer -> dict of the three losses."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]  # [B, Q, K], [B, Q, 4]
        indices = self.matcher(outputs, targets)
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)]).to(boxes.device)
        query_idx = torch.cat([src for src, _ in indices]).to(boxes.device)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        target_classes[batch_idx, query_idx] = torch.cat(
            [t["labels"][tgt] for t, (_, tgt) in zip(targets, indices)]).to(logits.device)
        target_boxes = torch.cat([t["boxes"][tgt] for t, (_, tgt) in zip(targets, indices)]).to(boxes.device)
        valid = torch.ones_like(target_classes, dtype=torch.bool)
        l1, giou = self.box_losses(boxes[batch_idx, query_idx].float(), target_boxes.float(), num_boxes)
        return {"loss_ce": self.class_loss(logits, target_classes, valid, num_boxes), "loss_bbox": l1, "loss_giou": giou}

    def dn_losses(self, dn_outputs, dn_targets, num_boxes):
        """DN part of one decoder layer: no matching, each DN query's target is given.

        dn_outputs: "pred_logits" [B, K, .], "pred_boxes" [B, K, 4]; dn_targets: "labels" [B, K],
        "boxes" [B, K, 4], "box_mask" [B, K] (valid positives: the slots with a box loss), "valid"
        [B, K] (the slots with a class loss, negatives included), "num_groups". Each gt has
        num_groups positives, so the terms are normalised by num_boxes * num_groups.
        """
        num_dn_boxes = num_boxes * dn_targets["num_groups"]
        mask = dn_targets["box_mask"]  # [B, K]
        l1, giou = self.box_losses(dn_outputs["pred_boxes"][mask].float(), dn_targets["boxes"][mask].float(),
                                   num_dn_boxes)
        ce = self.class_loss(dn_outputs["pred_logits"], dn_targets["labels"], dn_targets["valid"], num_dn_boxes)
        return {"loss_ce_dn": ce, "loss_bbox_dn": l1, "loss_giou_dn": giou}

    def forward(self, outputs, targets):
        """outputs: "pred_logits", "pred_boxes", "aux_outputs" (list per earlier layer); when the
        model ran DN queries, "dn_outputs" (the same keys, for the DN queries) and "dn_targets"
        (see dn_losses); with two-stage queries "enc_outputs". targets: list of {"labels",
        "boxes"} -> dict of all losses (unweighted)."""
        device = outputs["pred_boxes"].device
        num_boxes = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_boxes)
            num_boxes = num_boxes / dist.get_world_size()
        num_boxes = num_boxes.clamp(min=1).item()
        losses = self.matched_losses(outputs, targets, num_boxes)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update({f"{k}_{i}": v for k, v in self.matched_losses(aux, targets, num_boxes).items()})
        if "enc_outputs" in outputs:
            enc = self.matched_losses(outputs["enc_outputs"], class_agnostic(targets), num_boxes)
            losses.update({f"{k}_enc": v for k, v in enc.items()})
        if "dn_outputs" in outputs:
            dn_outputs, dn_targets = outputs["dn_outputs"], outputs["dn_targets"]
            losses.update(self.dn_losses(dn_outputs, dn_targets, num_boxes))
            for i, aux in enumerate(dn_outputs["aux_outputs"]):
                losses.update({f"{k}_{i}": v for k, v in self.dn_losses(aux, dn_targets, num_boxes).items()})
        return losses

    def total(self, losses):
        """Weighted sum of the losses that have a weight."""
        return sum(losses[k] * self.weight_dict[k] for k in losses if k in self.weight_dict)


def build_weight_dict(args):
    """Weights for the final layer, every auxiliary layer, the DN terms of each, and the two-stage
    encoder's terms."""
    base = {"loss_ce": args.ce_loss_coef, "loss_bbox": args.bbox_loss_coef, "loss_giou": args.giou_loss_coef}
    weights = dict(base)
    weights.update({f"{k}_enc": w for k, w in base.items()})
    weights.update({f"{k}_dn": w * args.dn_loss_coef for k, w in base.items()})
    for i in range(args.dec_layers - 1):
        weights.update({f"{k}_{i}": w for k, w in base.items()})
        weights.update({f"{k}_dn_{i}": w * args.dn_loss_coef for k, w in base.items()})
    return weights


def build_criterion(args, matcher):
    return SetCriterion(args.num_classes, matcher, build_weight_dict(args), args.eos_coef, args.loss)
