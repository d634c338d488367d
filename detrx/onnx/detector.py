"""A detrx detector as an export graph: images in, tensors out.

The exported graph takes `images` [B, 3, H, W] (one batch, one size, no padding: the model sees an
all-False padding mask) and returns the last decoder layer's `logits` [B, Q, K] and `boxes`
[B, Q, 4] (normalised cx, cy, w, h); with `postprocess` it returns the detections instead:
`scores` [B, D], `labels` [B, D] and `boxes` [B, D, 4] (x0, y0, x1, y1 in input pixels), as
`detrx.models.PostProcess` gives them.
"""
import torch
from torch import nn


class ExportableDetector(nn.Module):
    """Wraps a detrx detector (in eval mode) for export; see the module docstring."""

    def __init__(self, detector, postprocess=None):
        super().__init__()
        self.detector, self.postprocess = detector, postprocess

    @property
    def output_names(self):
        return ["scores", "labels", "boxes"] if self.postprocess is not None else ["logits", "boxes"]

    def forward(self, images):
        """images [B, 3, H, W] -> (logits [B, Q, K], boxes [B, Q, 4]) or (scores, labels, boxes)."""
        mask = torch.zeros_like(images[:, 0], dtype=torch.bool)  # [B, H, W] nothing is padding
        outputs = self.detector(images, mask)
        if self.postprocess is None:
            return outputs["pred_logits"], outputs["pred_boxes"]
        sizes = torch.tensor(images.shape[-2:], device=images.device)[None].expand(images.shape[0], 2)  # [B, 2]
        return self.postprocess.batched(outputs, sizes)


class HFExportableDetector(nn.Module):
    """A Hugging Face object detector (DeformableDetrForObjectDetection, RTDetrForObjectDetection,
    DFineForObjectDetection, ...) as an export graph: `pixel_values` [B, 3, H, W] in, its `logits`
    [B, Q, K] and `pred_boxes` [B, Q, 4] out."""

    output_names = ["logits", "boxes"]

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        output = self.model(pixel_values=pixel_values)
        return output.logits, output.pred_boxes

