"""Draw a trained detector's predictions: `python -m detrx.predict --checkpoint run/checkpoint.pth
--images a.png b.png --out-dir preds/` (or `--val 8` for the first val images of the checkpoint's
dataset). Writes one PNG per image with boxes, class names and scores."""
import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image

from detrx.data import build_dataset, build_transforms
from detrx.engine.draw import draw_detections
from detrx.models import build_model


def load_detector(checkpoint_path):
    """-> (model in eval mode, postprocess, training args) from a `detrx.train` checkpoint."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    args = argparse.Namespace(**checkpoint["args"])
    model, _, postprocess = build_model(args)
    model.load_state_dict(checkpoint["model"])
    return model.eval(), postprocess, args


@torch.no_grad()
def predict(model, postprocess, image, transforms):
    """image uint8 [H, W, 3] -> detections in its pixels (see PostProcess)."""
    h, w = image.shape[:2]
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    tensor, _ = transforms(tensor, empty)
    mask = torch.zeros(1, *tensor.shape[-2:], dtype=torch.bool)
    return postprocess(model(tensor[None], mask), torch.tensor([[h, w]]))[0]


def main(argv=None):
    parser = argparse.ArgumentParser("detrx.predict", description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", nargs="*", default=[])
    parser.add_argument("--val", type=int, default=0, help="also draw the first N val images")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--scale", type=int, default=4, help="upscaling of the drawn image")
    opts = parser.parse_args(argv)
    if not opts.images and opts.val < 1:
        raise ValueError("give --images and/or --val N (N >= 1)")
    model, postprocess, args = load_detector(opts.checkpoint)
    transforms = build_transforms(False, args.sizes, args.max_size)
    images = [(os.path.splitext(os.path.basename(p))[0], np.asarray(Image.open(p).convert("RGB")))
              for p in opts.images]
    dataset = build_dataset("val", args)
    dataset.transforms = None  # raw images; predict() applies the eval transforms
    if opts.val:
        for i in range(min(opts.val, len(dataset))):
            image, _ = dataset[i]
            images.append((f"val_{i:04d}", (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)))
    class_names = dataset.class_names
    os.makedirs(opts.out_dir, exist_ok=True)
    for name, image in images:
        detections = predict(model, postprocess, image, transforms)
        path = draw_detections(image, detections, class_names, os.path.join(opts.out_dir, f"{name}.png"),
                               opts.score_threshold, opts.scale)
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
