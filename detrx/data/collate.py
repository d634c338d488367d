"""Batching images of different sizes: zero-pad to the largest and keep a padding mask."""
import torch


def pad_images(images):
    """list of [3, H_i, W_i] -> (images [B, 3, H, W] zero-padded, mask [B, H, W] bool True = padding)."""
    if not images:
        raise ValueError("images must be a non-empty list of [C, H, W] tensors")
    channels = {image.shape[0] for image in images}
    if len(channels) != 1 or any(image.dim() != 3 for image in images):
        raise ValueError(f"images must all be [C, H, W] with the same C, got {[tuple(i.shape) for i in images]}")
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    batch = images[0].new_zeros(len(images), channels.pop(), height, width)
    mask = torch.ones(len(images), height, width, dtype=torch.bool)
    for i, image in enumerate(images):
        batch[i, :, :image.shape[1], :image.shape[2]] = image
        mask[i, :image.shape[1], :image.shape[2]] = False
    return batch, mask


def collate_fn(batch):
    """DataLoader collate: [(image, target), ...] -> (images [B, 3, H, W], mask [B, H, W], [target, ...])."""
    images, targets = zip(*batch)
    images, mask = pad_images(list(images))
    return images, mask, list(targets)
