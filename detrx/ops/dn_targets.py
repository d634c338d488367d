"""Denoising targets in and out: pad a list of per-image targets for `build_dn_queries`, and turn
the decoder's outputs over K + N queries into the DN loss inputs."""
import torch
from torch.nn.utils.rnn import pad_sequence

from detrx.ops.dn_common import DNQueries

__all__ = ["pad_targets", "split_dn_outputs", "dn_loss_targets"]


def pad_targets(targets):
    """[{"labels": int64 [n], "boxes": [n, 4] cx, cy, w, h}, ...] -> gt_labels int64 [B, G],
    gt_boxes [B, G, 4], gt_counts int64 [B], with G = the largest n (padding: label 0, box 0)."""
    if not isinstance(targets, (list, tuple)) or len(targets) == 0:
        raise ValueError(f"pad_targets: targets must be a non-empty list of dicts, got {type(targets).__name__}"
                         f"{'' if not isinstance(targets, (list, tuple)) else ' of length 0'}")
    for i, target in enumerate(targets):
        if not isinstance(target, dict) or "labels" not in target or "boxes" not in target:
            raise ValueError(f"pad_targets: targets[{i}] must be a dict with 'labels' and 'boxes'")
        labels, boxes = target["labels"], target["boxes"]
        if labels.dim() != 1 or boxes.dim() != 2 or boxes.shape != (labels.shape[0], 4):
            raise ValueError(f"pad_targets: targets[{i}] must hold labels [n] and boxes [n, 4], got labels "
                             f"{tuple(labels.shape)} and boxes {tuple(boxes.shape)}")
    gt_labels = pad_sequence([t["labels"].long() for t in targets], batch_first=True)  # [B, G]
    gt_boxes = pad_sequence([t["boxes"] for t in targets], batch_first=True)           # [B, G, 4]
    gt_counts = torch.tensor([len(t["labels"]) for t in targets], device=gt_labels.device)  # int64, as ints
    return gt_labels, gt_boxes, gt_counts


def split_dn_outputs(tensor, num_dn, dim=-2):
    """Splits decoder outputs [..., K + N, ...] along `dim` into the DN part [.., K, ..] and the
    matching part [.., N, ..]."""
    size = tensor.shape[dim]
    if not 0 <= num_dn <= size:
        raise ValueError(f"split_dn_outputs: num_dn must be in [0, {size}] (the size of dim {dim}), got {num_dn}")
    dn_part, match_part = tensor.split([num_dn, size - num_dn], dim=dim)
    return dn_part, match_part


def dn_loss_targets(dn: DNQueries, gt_labels, gt_boxes):
    """The clean targets of the DN slots: tgt_labels [B, K] (the gt class for positives,
    num_classes = "no object" for negatives and padding), tgt_boxes [B, K, 4] (the gt box, zeros
    where there is none) and box_mask [B, K] = valid & positive (the slots with a box loss)."""
    B, K = dn.gt_index.shape
    if gt_labels.shape[0] != B or gt_boxes.shape != (*gt_labels.shape, 4):
        raise ValueError(f"dn_loss_targets: gt_labels must be [B, G] and gt_boxes [B, G, 4] with B = {B}, got "
                         f"{tuple(gt_labels.shape)} and {tuple(gt_boxes.shape)}")
    box_mask = dn.valid & dn.positive                                                   # [B, K]
    if gt_labels.shape[1] == 0:  # no gts at all: nothing to gather
        return (torch.full_like(dn.labels, dn.num_classes), gt_boxes.new_zeros((B, K, 4)), box_mask)
    index = dn.gt_index.clamp(min=0)                                                    # [B, K]
    tgt_labels = torch.where(box_mask, gt_labels.gather(1, index), dn.num_classes)
    clean_boxes = gt_boxes.gather(1, index[..., None].expand(B, K, 4))                  # [B, K, 4]
    tgt_boxes = torch.where(box_mask[..., None], clean_boxes, 0)
    return tgt_labels, tgt_boxes, box_mask
