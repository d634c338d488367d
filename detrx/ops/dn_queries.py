"""Denoising queries (DN-DETR, Li et al. 2022; DINO contrastive denoising, Zhang et al. 2022) as one
torch.library op.

Each gt of each image is copied into num_groups groups of noisy queries that the decoder must
denoise back to the gt; an attention mask hides them from the N matching queries and from each
other's groups:

    gt_labels  int64 [B, G], gt_boxes [B, G, 4] (cx, cy, w, h in [0, 1]), gt_counts int64 [B]
    -> DNQueries (see detrx.ops.dn_common): labels [B, K], boxes [B, K, 4], gt_index, positive,
       valid [B, K], attn_mask [B, K+N, K+N], shared_attn_mask [K+N, K+N], K, groups, group size

Noise: a label flips with probability label_noise_ratio to a class drawn uniformly from
[0, num_classes). "dn_detr" moves the centre by up to box_noise_scale * (w/2, h/2) and scales w, h by
1 +- box_noise_scale; "dino" moves each corner by up to box_noise_scale * (w/2, h/2). Contrastive
negatives take noise in [1, 2) times that and are trained towards "no object". Boxes are clamped to
[0, 1] with w, h >= min_box_size (default MIN_BOX_SIZE).

Randomness: the compiled kernels draw counter-based uniforms from an int64 seed taken from
`generator` (or the default generator of the gts' device), so the result is reproducible and the
same on CPU and CUDA; `noise` [B, K, 6] overrides it with pre-drawn uniforms in [0, 1).

Host syncs on CUDA: none when max_gt is given (the gt checks then run as a device-side assert),
otherwise one read of max_gt together with the gt checks.
"""
import torch

from detrx._extension import is_compiled, warn_if_missing
from detrx.ops.dn_common import (MIN_BOX_SIZE, DNQueries, assert_dn_values_async, check_dn_args,
                                 check_dn_values, dn_group_layout)
from detrx.ops.dn_queries_reference import build_dn_queries_reference

__all__ = ["build_dn_queries"]

_SEED_RANGE = 2 ** 62


def _draw_seed(generator, device):
    """An int64 seed tensor on `device`, drawn without a host sync."""
    if generator is None:
        return torch.randint(_SEED_RANGE, (), device=device)
    seed = torch.randint(_SEED_RANGE, (), generator=generator, device=generator.device)
    if seed.device == device:
        return seed
    # To a GPU the copy need not wait; to the CPU it must, as the CPU kernel reads the seed at once.
    return seed.to(device, non_blocking=device.type != "cpu")


def _resolve_max_gt(gt_labels, gt_boxes, gt_counts, num_classes, max_gt):
    if gt_labels.device.type == "cpu":  # the CPU kernel checks the gts itself, reading them is free
        return int(gt_counts.max()) if max_gt is None else max_gt
    if max_gt is None:
        return check_dn_values(gt_labels, gt_boxes, gt_counts, num_classes)
    assert_dn_values_async(gt_labels, gt_boxes, gt_counts, num_classes, max_gt)
    return max_gt


def build_dn_queries(gt_labels, gt_boxes, gt_counts, num_classes, num_queries, num_groups=5, dn_number=None,
                     label_noise_ratio=0.5, box_noise_scale=0.4, noise_style="dn_detr", contrastive=False,
                     generator=None, max_gt=None, noise=None, per_image_mask=True, min_box_size=MIN_BOX_SIZE):
    """Builds the denoising queries of a batch with the compiled kernels; see the module docstring.

    num_groups: DN-DETR's fixed group count; dn_number (DINO's query budget) overrides it with
    max(1, dn_number // group_size) groups. max_gt: the largest gt count, if the caller knows it
    (pad_targets' G), which saves the host read on CUDA. per_image_mask=False skips the
    [B, K+N, K+N] mask (attn_mask is then None). min_box_size: the smallest noisy w, h, in (0, 1].
    """
    check_dn_args(gt_labels, gt_boxes, gt_counts, num_classes, num_queries, num_groups, dn_number,
                  label_noise_ratio, box_noise_scale, noise_style, max_gt, min_box_size)
    if not is_compiled():
        warn_if_missing()
        return build_dn_queries_reference(
            gt_labels, gt_boxes, gt_counts, num_classes, num_queries, num_groups, dn_number, label_noise_ratio,
            box_noise_scale, noise_style, contrastive, generator, max_gt, noise, per_image_mask, min_box_size)
    max_gt = _resolve_max_gt(gt_labels, gt_boxes, gt_counts, num_classes, max_gt)
    num_groups, group_size = dn_group_layout(max_gt, contrastive, num_groups, dn_number)
    seed = _draw_seed(generator, gt_labels.device)
    labels, boxes, gt_index, positive, valid, attn_mask, shared_attn_mask = torch.ops.detrx.dn_queries(
        gt_labels, gt_boxes, gt_counts, seed, noise, num_classes, num_queries, max_gt, num_groups, contrastive,
        noise_style, float(label_noise_ratio), float(box_noise_scale), float(min_box_size), per_image_mask)
    return DNQueries(labels, boxes, gt_index, positive, valid, attn_mask if per_image_mask else None,
                     shared_attn_mask, num_groups * group_size, num_groups, group_size, num_classes)


if is_compiled():
    @torch.library.register_fake("detrx::dn_queries")
    def _dn_queries_fake(gt_labels, gt_boxes, gt_counts, seed, noise, num_classes, num_queries, max_gt, num_groups,
                         contrastive, noise_style, label_noise_ratio, box_noise_scale, min_box_size, per_image_mask):
        B = gt_labels.shape[0]
        K = num_groups * (2 * max_gt if contrastive else max_gt)
        size = K + num_queries
        flags = gt_labels.new_empty((B, K), dtype=torch.bool)
        return (gt_labels.new_empty((B, K)), gt_boxes.new_empty((B, K, 4)), gt_labels.new_empty((B, K)),
                flags, torch.empty_like(flags), flags.new_empty((B if per_image_mask else 0, size, size)),
                flags.new_empty((size, size)))
