"""DETR-family detectors: `build_model(args, num_classes)` -> (model, criterion, postprocess).

args.model is one of MODELS (the registry in `detrx.models.registry`); the remaining attributes are
the `detrx.train` CLI options listed in MODEL_OPTIONS.
"""
import argparse

from detrx.models.backbone import build_backbone
from detrx.models.criterion import SetCriterion, build_criterion
from detrx.models.deformable_detr import DeformableDETR
from detrx.models.detr import DETR
from detrx.models.dn_deformable_detr import DNDeformableDETR
from detrx.models.dino import DINO
from detrx.models.dn_detr import DNDETR
from detrx.models.matcher import HungarianMatcher, build_matcher
from detrx.models.postprocess import PostProcess, build_postprocess
from detrx.models.registry import MODEL_OPTIONS, MODELS, ModelSpec, model_spec


def build_model(args, num_classes=None):
    """-> (model, criterion, postprocess) for args.model with `num_classes` object classes.

    num_classes is the dataset's class count (`detrx.train` passes it); when omitted, args.num_classes
    is used (the synthetic set's `--num-classes`), and it must then be set.
    """
    spec = model_spec(args.model)
    num_classes = args.num_classes if num_classes is None else num_classes
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (the dataset's class count), got {num_classes!r}")
    options = argparse.Namespace(**{**vars(args), "num_classes": num_classes})
    backbone = build_backbone(options, spec.family.feature_strides(options))
    transformer = spec.family.build_transformer(options)
    if spec.denoising:
        model = spec.build(options, backbone, transformer, spec.build_denoising(options))
    else:
        model = spec.build(options, backbone, transformer)
    criterion = build_criterion(options, build_matcher(options))
    return model, criterion, build_postprocess(options)


__all__ = ["DETR", "DINO", "DNDETR", "DNDeformableDETR", "DeformableDETR", "HungarianMatcher", "MODELS", "MODEL_OPTIONS",
           "ModelSpec", "PostProcess", "SetCriterion", "build_model", "model_spec"]
