"""Draw a trained detector's predictions: `python -m detrx.predict --checkpoint run/checkpoint.pth
--images a.png photos/ --out-dir preds/`.

Needs only the checkpoint (model options, weights and class names) and the images. Folders are
searched recursively; files that are not images are skipped with a warning. Each drawing keeps its
image's path relative to the inputs' common folder (photos/a/x.jpg -> preds/a/x.jpg.png), so equal
file names never overwrite each other. Writes one PNG per image (boxes, class names, scores) and
predictions.json (the detections, boxes as xyxy pixels).
"""
import argparse
import json
import os
import sys
import warnings

import torch
from PIL import Image, UnidentifiedImageError

from detrx.data import build_transforms, load_rgb
from detrx.engine.checkpoint import build_model_from_checkpoint, load_checkpoint
from detrx.engine.draw import draw_detections
from detrx.util.arg_types import positive_int, probability


@torch.no_grad()
def predict(model, postprocess, image, transforms):
    """image uint8 [H, W, 3] -> detections in its pixels (see PostProcess)."""
    h, w = image.shape[:2]
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255  # [3, H, W]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    tensor, _ = transforms(tensor, empty)
    device = next(model.parameters()).device
    mask = torch.zeros(1, *tensor.shape[-2:], dtype=torch.bool, device=device)
    detections = postprocess(model(tensor[None].to(device), mask), torch.tensor([[h, w]], device=device))[0]
    return {k: v.cpu() for k, v in detections.items()}


def is_image(path):
    """True when PIL recognises the file as an image (by its content, not its name)."""
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError):
        return False


def find_images(inputs):
    """Files and folders (searched recursively, sorted) -> absolute paths of the image files, each
    once; non-images are skipped with a warning."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            files = sorted(os.path.join(root, name) for root, _, names in os.walk(item) for name in names)
        else:
            files = [item]
        for path in files:
            if is_image(path):
                found.append(os.path.abspath(path))
            else:
                warnings.warn(f"skipping {path!r}: not an image")
    return list(dict.fromkeys(found))


def output_names(paths):
    """Image paths -> drawing paths relative to the output folder: the path relative to the images'
    common folder, '.png' appended unless it already ends so; unique for unique inputs."""
    if not paths:
        return []
    common = os.path.commonpath([os.path.dirname(p) for p in paths])
    names, taken = [], set()
    for path in paths:
        name = os.path.relpath(path, common)
        name = name if name.lower().endswith(".png") else name + ".png"
        while name in taken:  # only "x" next to "x.png" can meet here
            name = name[:-len(".png")] + "_.png"
        taken.add(name)
        names.append(name)
    return names


def parse_args(argv=None):
    parser = argparse.ArgumentParser("detrx.predict", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by detrx.train")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--out-dir", required=True, help="drawings and predictions.json go here")
    parser.add_argument("--score-threshold", type=probability, default=0.5, help="draw detections above this score")
    parser.add_argument("--scale", type=positive_int, default=4, help="upscaling of the drawn image")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    opts = parser.parse_args(argv)
    missing = [p for p in opts.images if not os.path.exists(p)]
    if missing:
        parser.error(f"--images: {missing} do not exist")
    if os.path.exists(opts.out_dir) and not os.path.isdir(opts.out_dir):
        parser.error(f"--out-dir {opts.out_dir!r} exists and is not a folder")
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {opts.device}: no CUDA device is available")
    try:
        opts.checkpoint_dict = load_checkpoint(opts.checkpoint)
    except ValueError as error:
        parser.error(str(error))
    return opts


def main(argv=None):
    opts = parse_args(argv)
    checkpoint = opts.checkpoint_dict
    model, postprocess, classes = build_model_from_checkpoint(checkpoint)
    model.to(opts.device)
    sizes, max_size = checkpoint["image"]["sizes"], checkpoint["image"]["max_size"]
    transforms = build_transforms(False, sizes, max_size)  # pragma: no mutate (False -> None: only its truth is read)
    paths = find_images(opts.images)
    if not paths:
        raise SystemExit(f"detrx.predict: no image files in {opts.images}")
    results = []
    for path, name in zip(paths, output_names(paths)):
        image = load_rgb(path)  # [H, W, 3] uint8
        detections = predict(model, postprocess, image, transforms)
        out_path = os.path.join(opts.out_dir, name)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        draw_detections(image, detections, classes.names, out_path, opts.score_threshold, opts.scale)
        results.append({"image": path, "drawing": out_path,
                        "detections": [{"label": classes.names[label], "category_id": classes.category_ids[label],
                                        "score": score, "box": box}
                                       for box, score, label in zip(detections["boxes"].tolist(),
                                                                    detections["scores"].tolist(),
                                                                    detections["labels"].tolist())
                                       if score >= opts.score_threshold]})
        print(out_path)
    with open(os.path.join(opts.out_dir, "predictions.json"), "w") as f:
        json.dump(results, f, indent=1)  # pragma: no mutate (the indent changes the layout, not the JSON)


if __name__ == "__main__":
    main(sys.argv[1:])
