"""The loop reference of `build_dn_queries`, written the way DN-DETR and DINO build their
denoising queries: a list of per-image targets, the gts of the batch concatenated and repeated once
per group (twice with contrastive groups), noise on the concatenation, a scatter into the padded
[B, K] layout, the shared mask filled group by group, and for the per-image mask one more loop
over images and groups that blocks the padded slots.

It consumes the same six uniforms per DN slot as the compiled op (see csrc/dn_queries/dn_noise.h):
from `noise` [B, K, 6] when given, else drawn with torch.rand from `generator`.
`dn_counter_noise` reproduces the compiled op's counter-based uniforms for a seed.
"""
import numpy as np
import torch

from detrx.ops.dn_common import MIN_BOX_SIZE, DNQueries, check_dn_args, check_dn_values, dn_group_layout

__all__ = ["build_dn_queries_reference", "dn_counter_noise"]

UNIFORMS_PER_SLOT = 6
_HASHES_PER_SLOT = UNIFORMS_PER_SLOT // 2  # each 64-bit hash gives two 24-bit uniforms
_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def dn_counter_noise(seed, batch, num_dn):
    """The uniforms [B, K, 6] the compiled op draws for int64 `seed`: the SplitMix64 hash of the seed
    and counter i gives uniforms 2i (its top 24 bits) and 2i + 1 (the 24 bits below)."""
    index = np.arange(batch * num_dn * _HASHES_PER_SLOT, dtype=np.uint64)
    z = np.int64(seed).view(np.uint64) + (index + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    bits = np.stack([z >> np.uint64(40), (z >> np.uint64(16)) & np.uint64(0xFFFFFF)], axis=1)
    uniforms = bits.astype(np.float32) * np.float32(2.0 ** -24)
    return torch.from_numpy(uniforms.reshape(batch, num_dn, UNIFORMS_PER_SLOT))


def _noise_factor(u, negative):
    """u [n, 4] -> signed factors: |f| in [0, 1) for positives, [1, 2) for negatives."""
    low = u < 0.5
    magnitude = torch.where(low, 2 * u, 2 * u - 1)
    sign = torch.where(low, -1.0, 1.0)
    return sign * (magnitude + negative[:, None])


def _noisy_boxes(boxes, factor, scale, noise_style, min_box_size):
    """boxes [n, 4] cx, cy, w, h; DN-DETR jitters centre and size, DINO the corners."""
    half = boxes[:, 2:] / 2  # [n, 2]
    if noise_style == "dino":
        top_left = (boxes[:, :2] - half + factor[:, :2] * half * scale).clamp(0, 1)
        bottom_right = (boxes[:, :2] + half + factor[:, 2:] * half * scale).clamp(0, 1)
        centre, size = (top_left + bottom_right) / 2, bottom_right - top_left
    else:
        centre = boxes[:, :2] + factor[:, :2] * half * scale
        size = boxes[:, 2:] + factor[:, 2:] * boxes[:, 2:] * scale
    return torch.cat([centre.clamp(0, 1), size.clamp(min_box_size, 1)], dim=1)


def build_dn_queries_reference(gt_labels, gt_boxes, gt_counts, num_classes, num_queries, num_groups=5,
                               dn_number=None, label_noise_ratio=0.5, box_noise_scale=0.4,
                               noise_style="dn_detr", contrastive=False, generator=None, max_gt=None,
                               noise=None, per_image_mask=True, min_box_size=MIN_BOX_SIZE):
    """Same arguments and result as `detrx.ops.build_dn_queries`."""
    check_dn_args(gt_labels, gt_boxes, gt_counts, num_classes, num_queries, num_groups, dn_number,
                  label_noise_ratio, box_noise_scale, noise_style, max_gt, min_box_size)
    max_gt = check_dn_values(gt_labels, gt_boxes, gt_counts, num_classes, max_gt)
    num_groups, group_size = dn_group_layout(max_gt, contrastive, num_groups, dn_number)
    B, K, device = gt_labels.shape[0], num_groups * group_size, gt_labels.device
    if noise is not None and noise.shape != (B, K, UNIFORMS_PER_SLOT):
        raise ValueError(f"build_dn_queries: noise must be [B, K, 6] = {(B, K, 6)}, got {tuple(noise.shape)}")

    # The targets as DN-DETR receives them: one (labels, boxes) pair per image.
    counts = gt_counts.tolist()
    targets = [(gt_labels[b, :n], gt_boxes[b, :n]) for b, n in enumerate(counts)]
    labels = torch.cat([t_labels for t_labels, _ in targets])                                  # [T]
    boxes = torch.cat([t_boxes for _, t_boxes in targets])                                     # [T, 4]
    image = torch.cat([torch.full((n,), b, device=device) for b, n in enumerate(counts)])      # [T]
    gt_in_image = torch.cat([torch.arange(n, device=device) for n in counts])                  # [T]

    # Copy c of the gts fills slots [c * max_gt, (c + 1) * max_gt) of its image; with contrastive
    # groups the odd copies are the negatives.
    copies = 2 * num_groups if contrastive else num_groups
    total = labels.numel()
    copy = torch.arange(copies, device=device).repeat_interleave(total)                        # [C*T]
    negative = (copy % 2 == 1) & contrastive                                                  # [C*T]
    known_labels, known_boxes = labels.repeat(copies), boxes.repeat(copies, 1)
    known_image, known_gt = image.repeat(copies), gt_in_image.repeat(copies)
    known_slot = copy * max_gt + known_gt
    if noise is None:
        u = torch.rand((copies * total, UNIFORMS_PER_SLOT), generator=generator, device=device)
    else:
        u = noise[known_image, known_slot]                                                     # [C*T, 6]

    flip = u[:, 0] < label_noise_ratio
    drawn = (u[:, 1] * num_classes).long().clamp(max=num_classes - 1)
    noisy_labels = torch.where(flip, drawn, known_labels)
    compute_dtype = torch.float32 if gt_boxes.dtype in (torch.float16, torch.bfloat16) else gt_boxes.dtype
    factor = _noise_factor(u[:, 2:], negative)  # float32, exact in compute_dtype
    noisy_boxes = _noisy_boxes(known_boxes.to(compute_dtype), factor, box_noise_scale, noise_style, min_box_size)

    out_labels = torch.full((B, K), num_classes, device=device)  # int64, as an int fills it
    out_boxes = torch.zeros((B, K, 4), dtype=gt_boxes.dtype, device=device)
    gt_index = torch.full((B, K), -1, device=device)  # int64
    valid = torch.zeros((B, K), dtype=torch.bool, device=device)
    out_labels[known_image, known_slot] = noisy_labels
    out_boxes[known_image, known_slot] = noisy_boxes.to(gt_boxes.dtype)
    gt_index[known_image, known_slot] = known_gt
    valid[known_image, known_slot] = True
    slot_in_group = torch.arange(K, device=device) % max(group_size, 1)
    positive = (slot_in_group < max_gt).expand(B, K).clone()

    # DN-DETR's mask: matching queries never see DN queries, a group never sees another group.
    size = K + num_queries
    shared = torch.zeros((size, size), dtype=torch.bool, device=device)
    shared[K:, :K] = True
    for g in range(num_groups):
        start, end = g * group_size, (g + 1) * group_size
        shared[start:end, :start] = True
        shared[start:end, end:K] = True
    attn_mask = None
    if per_image_mask:
        attn_mask = shared.repeat(B, 1, 1)
        for b, n in enumerate(counts):
            for c in range(copies):
                attn_mask[b, :, c * max_gt + n:(c + 1) * max_gt] = True
    return DNQueries(out_labels, out_boxes, gt_index, positive, valid, attn_mask, shared,
                     K, num_groups, group_size, num_classes)
