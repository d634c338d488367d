"""Box conversions and (generalised) IoU.

Formats: `cxcywh` (centre, width, height; what DETR predicts, normalised to [0, 1]), `xyxy`
(corners) and COCO's `xywh` (top-left corner, width, height). IoU functions broadcast over the
leading dimensions like any elementwise op: pass `a[:, None]` and `b[None]` for the pairwise matrix.
"""
import torch


def _check_boxes(name, boxes):
    if not isinstance(boxes, torch.Tensor) or boxes.shape[-1:] != (4,):
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"{name} must be a tensor of boxes [..., 4], got {shape}")


def box_cxcywh_to_xyxy(boxes):
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x0, y0, x1, y1)."""
    _check_boxes("boxes", boxes)
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes):
    """[..., 4] (x0, y0, x1, y1) -> [..., 4] (cx, cy, w, h)."""
    _check_boxes("boxes", boxes)
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_xywh_to_xyxy(boxes):
    """COCO [..., 4] (x, y, w, h) -> [..., 4] (x0, y0, x1, y1)."""
    _check_boxes("boxes", boxes)
    x, y, w, h = boxes.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def box_xyxy_to_xywh(boxes):
    """[..., 4] (x0, y0, x1, y1) -> COCO [..., 4] (x, y, w, h)."""
    _check_boxes("boxes", boxes)
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes):
    """[..., 4] xyxy -> [...] area (zero for degenerate boxes)."""
    _check_boxes("boxes", boxes)
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(boxes1, boxes2):
    """IoU and union of xyxy boxes, broadcast over leading dims: [..., 4], [..., 4] -> ([...], [...])."""
    _check_boxes("boxes1", boxes1)
    _check_boxes("boxes2", boxes2)
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter / union, union


def generalized_box_iou(boxes1, boxes2):
    """GIoU (Rezatofighi et al. 2019) of xyxy boxes, broadcast: [..., 4], [..., 4] -> [...] in [-1, 1].

    GIoU = IoU - (|C| - |A u B|) / |C| with C the smallest box enclosing both.
    Raises ValueError for inverted boxes (x1 < x0 or y1 < y0), which give meaningless values.
    """
    _check_boxes("boxes1", boxes1)
    _check_boxes("boxes2", boxes2)
    for name, boxes in (("boxes1", boxes1), ("boxes2", boxes2)):
        if not (boxes[..., 2:] >= boxes[..., :2]).all():
            raise ValueError(f"{name} has inverted boxes (x1 < x0 or y1 < y0); expected xyxy")
    iou, union = box_iou(boxes1, boxes2)
    top_left = torch.minimum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing
