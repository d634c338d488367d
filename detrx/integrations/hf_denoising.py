"""Hugging Face's contrastive denoising builder on detrx's DN op.

`get_contrastive_denoising_training_group` has the signature and the return values of the function
of that name in transformers' RT-DETR family (rt_detr, rt_detr_v2, d_fine, deimv2, pp_doclayout_*),
which builds the queries with per-image and per-group Python loops and tensor tiling. Here one call
of `detrx.ops.build_dn_queries` builds them, with HF's definitions:

- groups: max(1, num_denoising_queries // max_gt), each of 2 * max_gt slots (max_gt positive copies
  of the image's gts, then max_gt negative copies; padded slots where an image has fewer gts);
- labels: each copy's class is redrawn uniformly from [0, num_classes) with probability
  label_noise_ratio * 0.5 (positives and negatives alike; padded slots keep num_classes);
- boxes: DINO corner noise, every corner moved by f * box_noise_scale * (w/2, h/2) with |f| in [0, 1)
  for positives and [1, 2) for negatives, corners clipped to [0, 1]; the result as logits
  (inverse sigmoid, eps 1e-5; crossed corners give width 0, as in HF). Without box noise the clean
  boxes come back as they are (not as logits), exactly as HF returns them;
- mask: float32 [K+N, K+N], 0 = visible, -inf = blocked: matching queries never see DN queries, a
  group never sees another group (one mask for the batch, padded slots not masked, as in HF).

Randomness comes from the default generator of the gts' device (a seed drawn from it), so
`torch.manual_seed` makes a training run reproducible; the random stream differs from HF's.
"""
import torch

from detrx.ops import build_dn_queries

__all__ = ["get_contrastive_denoising_training_group"]

INVERSE_SIGMOID_EPS = 1e-5
# Noisy w, h floor: below HF's inverse-sigmoid eps, so w = 0 (crossed corners) and this give the same logit.
_MIN_BOX_SIZE = torch.finfo(torch.float32).tiny


def _fail(message):
    raise ValueError(f"get_contrastive_denoising_training_group: {message}")


def _inverse_sigmoid(x, eps=INVERSE_SIGMOID_EPS):
    """HF's inverse sigmoid of x in [0, 1] (noisy boxes are clipped there): x and 1 - x clamped to >= eps."""
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _pad_hf_targets(targets, counts, max_gt, device):
    """HF targets -> gt_labels int64 [B, G], gt_boxes [B, G, 4] (default dtype), gt_counts int64 [B]."""
    batch = len(targets)
    gt_labels = torch.zeros((batch, max_gt), dtype=torch.int64, device=device)
    gt_boxes = torch.zeros((batch, max_gt, 4), device=device)
    for i, (target, count) in enumerate(zip(targets, counts)):
        boxes = target["boxes"]
        if boxes.shape != (count, 4):
            _fail(f"targets[{i}]['boxes'] must be [n, 4] with n = len(class_labels) = {count}, "
                  f"got {tuple(boxes.shape)}")
        gt_labels[i, :count] = target["class_labels"]
        gt_boxes[i, :count] = boxes
    return gt_labels, gt_boxes, torch.tensor(counts, device=device)


def _check_targets(targets):
    if not isinstance(targets, (list, tuple)) or len(targets) == 0:
        _fail(f"targets must be a non-empty list of dicts (one per image), got {targets!r}")
    for i, target in enumerate(targets):
        if not isinstance(target, dict) or "class_labels" not in target or "boxes" not in target:
            _fail(f"targets[{i}] must be a dict with 'class_labels' [n] and 'boxes' [n, 4]")
        if target["class_labels"].dim() != 1:
            _fail(f"targets[{i}]['class_labels'] must be [n], got {tuple(target['class_labels'].shape)}")


def get_contrastive_denoising_training_group(targets, num_classes, num_queries, class_embed,
                                             num_denoising_queries=100, label_noise_ratio=0.5,
                                             box_noise_scale=1.0):
    """Denoising queries of a batch, as transformers' function of the same name returns them.

    targets: [{"class_labels": [n], "boxes": [n, 4] cx, cy, w, h in [0, 1]}, ...] (one per image).
    Returns (input_query_class [B, K, C] = class_embed(labels), input_query_bbox [B, K, 4] (logits,
    or the clean boxes when box_noise_scale <= 0), attn_mask float32 [K+N, K+N] (-inf = blocked),
    {"dn_positive_idx": per-image positive slot indices, "dn_num_group": groups,
    "dn_num_split": [K, N]}), or four Nones when num_denoising_queries <= 0 or no image has a gt.
    """
    if num_denoising_queries <= 0:
        return None, None, None, None
    _check_targets(targets)
    counts = [len(target["class_labels"]) for target in targets]
    max_gt = max(counts)
    if max_gt == 0:
        return None, None, None, None
    device = targets[0]["class_labels"].device
    num_groups = max(num_denoising_queries // max_gt, 1)
    gt_labels, gt_boxes, gt_counts = _pad_hf_targets(targets, counts, max_gt, device)

    # HF redraws a label where rand < ratio / 2 and moves boxes where the scale is > 0: ratios and
    # scales outside [0, 2] and [0, inf) act as their nearest end.
    spare_work = {"max_gt": max_gt, "per_image_mask": False}  # pragma: no mutate (a host read, an unused mask)
    dn = build_dn_queries(
        gt_labels, gt_boxes, gt_counts, num_classes, num_queries, num_groups=num_groups,
        label_noise_ratio=min(max(label_noise_ratio * 0.5, 0.0), 1.0),
        box_noise_scale=max(float(box_noise_scale), 0.0), noise_style="dino", contrastive=True,
        min_box_size=_MIN_BOX_SIZE, **spare_work)

    if box_noise_scale > 0:
        input_query_bbox = _inverse_sigmoid(dn.boxes)                      # [B, K, 4]
    else:
        input_query_bbox = gt_boxes.repeat(1, 2 * num_groups, 1)           # [B, K, 4] clean, as HF
    input_query_class = class_embed(dn.labels.to(torch.int32))            # [B, K, C]

    size = dn.num_dn + num_queries
    attn_mask = torch.zeros((size, size), dtype=torch.float, device=device)
    attn_mask.masked_fill_(dn.shared_attn_mask, -torch.inf)                # [K+N, K+N]

    positive_slots = torch.nonzero(dn.positive & dn.valid)[:, 1]          # [sum(n) * groups]
    denoising_meta_values = {
        "dn_positive_idx": torch.split(positive_slots, [n * num_groups for n in counts]),
        "dn_num_group": num_groups,
        "dn_num_split": [dn.num_dn, num_queries],
    }
    return input_query_class, input_query_bbox, attn_mask, denoising_meta_values
