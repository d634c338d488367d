"""The detectors of the RF-DETR comparison: detrx models from their checkpoints (or the study's config
with random weights) and RF-DETR (the `rfdetr` package) from a local checkpoint (or random weights),
each behind one predict(image) that takes a uint8 image and returns detections in its pixels.
"""
import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from detrx.data import build_transforms, synthetic_classes
from detrx.engine.checkpoint import build_model_from_checkpoint, load_checkpoint
from detrx.engine.config import parse_args
from detrx.models import build_model
from detrx.predict import predict as detrx_predict

RANDOM_WEIGHTS = "random weights"
RFDETR_VARIANTS = ("nano", "small", "medium")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what RF-DETR normalises with
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Detector:
    """One model of the comparison.

    label_names[i] is the class name of label i (None where the label names no class, e.g. an
    unused COCO id); predict(image uint8 [H, W, 3]) -> {"boxes" [D, 4] xyxy in the image's pixels,
    "scores" [D], "labels" [D]}."""

    name: str
    weights: str
    label_names: list
    input_size: str
    parameters: int
    predict: Callable

    @property
    def random(self):
        return self.weights == RANDOM_WEIGHTS


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def detrx_detector(model_name, checkpoint_path, study_options, num_classes, image_size):
    """A detrx model from a `detrx.train` checkpoint (named after the model it holds), or
    (checkpoint_path None) the study's model_name ("detr", "dn_detr"; study_options: its `detrx.train`
    options) with random weights for num_classes synthetic classes. ValueError, naming the file,
    when the checkpoint cannot be used."""
    if checkpoint_path:
        checkpoint = load_checkpoint(checkpoint_path)
        model, postprocess, classes = build_model_from_checkpoint(checkpoint)
        transforms = build_transforms(False, checkpoint["image"]["sizes"], checkpoint["image"]["max_size"])
        weights = f"checkpoint {os.path.basename(checkpoint_path)}"
        model_name = checkpoint["model_options"]["model"]
        sizes = checkpoint["image"]["sizes"]
    else:
        args = parse_args([*study_options, "--num-classes", str(num_classes)])
        torch.manual_seed(0)
        model, _, postprocess = build_model(args, num_classes=num_classes)
        model.eval()
        classes = synthetic_classes(num_classes)
        transforms = build_transforms(False, args.sizes, args.image_max_size)
        weights = RANDOM_WEIGHTS
        sizes = args.sizes
    input_size = f"{image_size}x{image_size}" if not sizes else f"shorter side {max(sizes)}"
    return Detector(f"detrx {model_name}", weights, list(classes.names), input_size, count_parameters(model),
                    lambda image: detrx_predict(model, postprocess, image, transforms))


def rfdetr_config_class(variant):
    from rfdetr import config as rf_config
    return {"nano": rf_config.RFDETRNanoConfig, "small": rf_config.RFDETRSmallConfig,
            "medium": rf_config.RFDETRMediumConfig}[variant]


def rfdetr_resolution_step(variant):
    """RF-DETR's input side must be a multiple of this (patch size x windows)."""
    fields = rfdetr_config_class(variant).model_fields
    return fields["patch_size"].default * fields["num_windows"].default


@contextlib.contextmanager
def quiet_rfdetr():
    """For the block: rfdetr's log lines that random weights skip DINOv2's, its warning that they are
    less accurate than its checkpoints, and torch.jit's deprecation warning on import: all known here."""
    logger = logging.getLogger("rf-detr")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def check_rfdetr_checkpoint(path):
    """ValueError unless `path` is a file rfdetr reads as a checkpoint with detection weights; -> the
    names of its weights."""
    from rfdetr.utilities.io import _safe_torch_load

    if not os.path.isfile(path):
        raise ValueError(f"RF-DETR checkpoint {path!r} does not exist or is not a file")
    try:
        checkpoint = _safe_torch_load(path)
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"RF-DETR checkpoint {path!r} could not be read ({type(error).__name__}: {first_line})") \
            from error
    if isinstance(checkpoint, dict) and checkpoint.get("format") == "detrx-checkpoint":
        raise ValueError(f"{path!r} is a detrx checkpoint, not an RF-DETR one (give it as --detr-checkpoint or "
                         "--dn-detr-checkpoint)")
    weights = checkpoint.get("model", checkpoint.get("state_dict")) if isinstance(checkpoint, dict) else None
    if not isinstance(weights, dict) or not any(key.endswith("class_embed.bias") for key in weights):
        raise ValueError(f"{path!r} is not an RF-DETR checkpoint: it has no 'model' weights with a class_embed "
                         "(rfdetr writes checkpoint_best_total.pth, checkpoint_best_ema.pth, rf-detr-nano.pth ...)")
    if "model" in checkpoint:
        return set(weights)
    # a Lightning checkpoint keeps them under "state_dict" as "model.<name>" (or "model._orig_mod.<name>")
    return {key[len("model."):].removeprefix("_orig_mod.") for key in weights if key.startswith("model.")}


def check_weights_cover(model, checkpoint_keys, path, variant):
    """ValueError when the checkpoint lacks weights of the model that rfdetr does not re-initialise
    on purpose (head, queries): a checkpoint of another variant would load partially."""
    from rfdetr.models.weights import _filter_intentional_keys

    missing = _filter_intentional_keys([key for key in model.state_dict() if key not in checkpoint_keys
                                        and not key.endswith("_kp_active_mask")])
    if missing:
        raise ValueError(f"RF-DETR checkpoint {path!r} lacks {len(missing)} weights of RF-DETR {variant} (e.g. "
                         f"{missing[0]}): give the variant it was trained as (--rfdetr-model)")


def rfdetr_label_names(checkpoint_names, num_classes):
    """Label -> class name as rfdetr's predict() maps it: COCO-pretrained weights (no names stored, or
    COCO's 80 names over 90 label slots) use COCO's category ids as labels; fine-tuned ones label i
    = name i."""
    from rfdetr.assets.coco_classes import COCO_CLASS_NAMES, COCO_CLASSES

    names = list(checkpoint_names) or list(COCO_CLASS_NAMES)
    if num_classes > len(names) and names == list(COCO_CLASS_NAMES):
        label_names = [None] * (num_classes + 1)
        for coco_id, name in zip(COCO_CLASSES, names):
            label_names[coco_id] = name
        return label_names
    return names


def build_rfdetr(variant, resolution, checkpoint_path=None, num_classes=None):
    """(LWDETR module in eval mode, its ModelConfig, label names). From the local checkpoint, or with
    random weights (seed 0) for num_classes classes, named by the caller. Nothing is downloaded."""
    from rfdetr.models.lwdetr import build_model_from_config
    from rfdetr.models.weights import load_pretrain_weights

    # an absolute path: rfdetr resolves a bare file name to its download cache
    options = {"pretrain_weights": os.path.abspath(checkpoint_path) if checkpoint_path else None, "device": "cpu"}
    if resolution:
        options["resolution"] = resolution
    if checkpoint_path is None:
        options["num_classes"] = num_classes
    checkpoint_keys = check_rfdetr_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    with quiet_rfdetr():
        config = rfdetr_config_class(variant)(**options)
        torch.manual_seed(0)
        model = build_model_from_config(config)
    if checkpoint_path is None:
        return model.eval(), config, []
    check_weights_cover(model, checkpoint_keys, checkpoint_path, variant)
    try:  # rfdetr logs a warning when the checkpoint leaves weights outside the head unloaded
        names = load_pretrain_weights(model, config)
    except RuntimeError as error:  # weights of another shape
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"RF-DETR checkpoint {checkpoint_path!r} does not fit RF-DETR {variant} ({first_line}); "
                         "give the variant it was trained as (--rfdetr-model)") from error
    return model.eval(), config, rfdetr_label_names(names, config.num_classes)


def rfdetr_detector(variant, resolution, checkpoint_path, class_names):
    """RF-DETR behind predict(): the image resized to its input side, detections mapped back to the
    image's pixels. Random weights (checkpoint_path None) are built for class_names."""
    from rfdetr.models.postprocess import PostProcess

    model, config, names = build_rfdetr(variant, resolution, checkpoint_path, len(class_names))
    postprocess = PostProcess(num_select=config.num_select)
    side = config.resolution
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]

    @torch.no_grad()
    def predict(image):
        h, w = image.shape[:2]
        pixels = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255  # [3, H, W]
        pixels = F.interpolate(pixels[None], size=(side, side), mode="bilinear", align_corners=False)  # [1, 3, S, S]
        outputs = model((pixels - mean) / std)
        detections = postprocess(outputs, torch.tensor([[h, w]]))[0]  # boxes scaled to (h, w)
        return {key: detections[key] for key in ("boxes", "scores", "labels")}

    weights = f"checkpoint {os.path.basename(checkpoint_path)}" if checkpoint_path else RANDOM_WEIGHTS
    label_names = names if checkpoint_path else list(class_names)
    return Detector(f"RF-DETR {variant}", weights, label_names, f"{side}x{side}", count_parameters(model), predict)

