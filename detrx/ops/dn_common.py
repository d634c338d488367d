"""What the denoising-query op and its loop reference share: the result type, the argument
checks and the group layout (see `detrx.ops.dn_queries` for the op itself).

Layout: K = num_groups * group_size DN slots come first, then the N matching queries. Inside a
group, slot r < max_gt is the positive copy of gt r; with contrastive groups (group_size =
2 * max_gt) slot max_gt + r is the negative copy of gt r.
"""
import math
from typing import NamedTuple, Optional

import torch

__all__ = ["DNQueries", "NOISE_STYLES", "MIN_BOX_SIZE", "check_dn_args", "check_dn_values", "assert_dn_values_async",
           "dn_group_layout"]

NOISE_STYLES = ("dn_detr", "dino")
MIN_BOX_SIZE = 1e-3  # noisy boxes keep w, h >= this, so inverse_sigmoid(box) stays finite


class DNQueries(NamedTuple):
    """Denoising queries of a batch; True in the masks means blocked."""
    labels: torch.Tensor                        # [B, K] int64 noisy classes, num_classes at padded slots
    boxes: torch.Tensor                         # [B, K, 4] noisy cx, cy, w, h in [0, 1], zeros at padded slots
    gt_index: torch.Tensor                      # [B, K] int64 clean gt within its image, -1 at padded slots
    positive: torch.Tensor                      # [B, K] bool, False for contrastive negatives
    valid: torch.Tensor                         # [B, K] bool, False at padded slots
    attn_mask: Optional[torch.Tensor]           # [B, K+N, K+N] bool, padded slots masked (None if not asked)
    shared_attn_mask: torch.Tensor              # [K+N, K+N] bool, the DN-DETR form (no padding masking)
    num_dn: int                                 # K
    num_groups: int
    group_size: int                             # max_gt, x2 with contrastive groups
    num_classes: int                            # the "no object" label of negatives and padding


def _fail(message):
    raise ValueError(f"build_dn_queries: {message}")


def check_dn_args(gt_labels, gt_boxes, gt_counts, num_classes, num_queries, num_groups, dn_number,
                  label_noise_ratio, box_noise_scale, noise_style, max_gt, min_box_size=MIN_BOX_SIZE):
    """Checks everything that needs no tensor data: shapes, dtypes, devices and parameters."""
    for name, tensor in (("gt_labels", gt_labels), ("gt_boxes", gt_boxes), ("gt_counts", gt_counts)):
        if not isinstance(tensor, torch.Tensor):
            _fail(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if gt_labels.dim() != 2 or gt_labels.dtype != torch.int64 or gt_labels.shape[0] < 1:
        _fail(f"gt_labels must be int64 [B, G] with B >= 1, got {gt_labels.dtype} {tuple(gt_labels.shape)}")
    B, G = gt_labels.shape
    if gt_boxes.shape != (B, G, 4):
        _fail(f"gt_boxes must be [B, G, 4] = {(B, G, 4)} (B, G from gt_labels), got {tuple(gt_boxes.shape)}")
    if not gt_boxes.is_floating_point():
        _fail(f"gt_boxes must be a floating-point tensor, got {gt_boxes.dtype}")
    if gt_counts.shape != (B,) or gt_counts.dtype != torch.int64:
        _fail(f"gt_counts must be int64 [B] = [{B}], got {gt_counts.dtype} {tuple(gt_counts.shape)}")
    for name, tensor in (("gt_boxes", gt_boxes), ("gt_counts", gt_counts)):
        if tensor.device != gt_labels.device:
            _fail(f"{name} must be on gt_labels' device {gt_labels.device}, got {tensor.device}")
    for name, value, low in (("num_classes", num_classes, 1), ("num_queries", num_queries, 1),
                             ("num_groups", num_groups, 1)):
        if not isinstance(value, int) or value < low:
            _fail(f"{name} must be an int >= {low}, got {value!r}")
    if dn_number is not None and (not isinstance(dn_number, int) or dn_number < 1):
        _fail(f"dn_number must be None or an int >= 1, got {dn_number!r}")
    if max_gt is not None and (not isinstance(max_gt, int) or max_gt < 0):
        _fail(f"max_gt must be None or an int >= 0, got {max_gt!r}")
    if not 0 <= label_noise_ratio <= 1:
        _fail(f"label_noise_ratio must be in [0, 1], got {label_noise_ratio!r}")
    if not (math.isfinite(box_noise_scale) and box_noise_scale >= 0):
        _fail(f"box_noise_scale must be finite and >= 0, got {box_noise_scale!r}")
    if noise_style not in NOISE_STYLES:
        _fail(f"noise_style must be one of {NOISE_STYLES}, got {noise_style!r}")
    if not 0 < min_box_size <= 1:
        _fail(f"min_box_size must be in (0, 1], got {min_box_size!r}")


def _gt_problems(gt_labels, gt_boxes, gt_counts, num_classes):
    """[B, G] masks of the counted gts whose label is outside [0, num_classes) or whose box is not finite."""
    counted = torch.arange(gt_labels.shape[1], device=gt_labels.device) < gt_counts[:, None]  # [B, G]
    bad_label = counted & ((gt_labels < 0) | (gt_labels >= num_classes))
    bad_box = counted & ~torch.isfinite(gt_boxes).all(-1)
    return bad_label, bad_box


def check_dn_values(gt_labels, gt_boxes, gt_counts, num_classes, max_gt=None):
    """Checks the gt data with one read from the device; returns max_gt (the largest count if not given)."""
    G = gt_labels.shape[1]
    bad_label, bad_box = _gt_problems(gt_labels, gt_boxes, gt_counts, num_classes)
    largest, smallest, any_bad_label, any_bad_box = torch.stack(
        [gt_counts.max(), gt_counts.min(), bad_label.any(), bad_box.any()]).tolist()
    if smallest < 0 or largest > G:
        _fail(f"gt_counts must be in [0, G] = [0, {G}], got {gt_counts.tolist()}")
    if max_gt is not None and largest > max_gt:
        _fail(f"max_gt = {max_gt} is smaller than the largest gt count {largest} (max_gt must be >= every count)")
    if any_bad_label:
        b, g = bad_label.nonzero()[0].tolist()
        _fail(f"gt_labels must be in [0, num_classes) = [0, {num_classes}), got gt_labels[{b}, {g}] = "
              f"{gt_labels[b, g].item()}")
    if any_bad_box:
        b, g = bad_box.nonzero()[0].tolist()
        _fail(f"gt_boxes must be finite, got gt_boxes[{b}, {g}] = {gt_boxes[b, g].tolist()}")
    return largest if max_gt is None else max_gt


def assert_dn_values_async(gt_labels, gt_boxes, gt_counts, num_classes, max_gt):
    """The checks of check_dn_values as a device-side assert: no host sync, fails at the next sync."""
    bad_label, bad_box = _gt_problems(gt_labels, gt_boxes, gt_counts, num_classes)
    ok = ((gt_counts >= 0) & (gt_counts <= min(gt_labels.shape[1], max_gt))).all() & ~bad_label.any() & ~bad_box.any()
    torch._assert_async(ok, "build_dn_queries: bad gts (a count outside [0, min(G, max_gt)], a label outside "
                            "[0, num_classes) or a non-finite box)")


def dn_group_layout(max_gt, contrastive, num_groups, dn_number):
    """(num_groups, group_size): dn_number is DINO's query budget, split into groups of group_size."""
    group_size = 2 * max_gt if contrastive else max_gt
    if dn_number is not None:
        num_groups = max(1, dn_number // group_size) if group_size > 0 else 1
    return num_groups, group_size
