"""DETR-family detectors: `build_model(args)` -> (model, criterion, postprocess).

args.model is one of MODELS; the remaining attributes are the `detrx.train` CLI options.
"""
from detrx.models.backbone import build_backbone
from detrx.models.criterion import SetCriterion, build_criterion
from detrx.models.deformable_detr import DeformableDETR, build_deformable_detr
from detrx.models.deformable_transformer import build_deformable_transformer
from detrx.models.denoising import build_denoising
from detrx.models.detr import DETR, build_detr
from detrx.models.dn_deformable_detr import DNDeformableDETR, build_dn_deformable_detr
from detrx.models.dn_detr import DNDETR, build_dn_detr
from detrx.models.matcher import HungarianMatcher, build_matcher
from detrx.models.postprocess import PostProcess, build_postprocess
from detrx.models.transformer import build_transformer

MODELS = ("detr", "dn_detr", "deformable_detr", "dn_deformable_detr")


def build_model(args):
    """-> (model, criterion, postprocess) for args.model."""
    if args.model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {args.model!r}")
    if args.model in ("detr", "dn_detr"):
        backbone = build_backbone(args, (args.detr_stride,))
        transformer = build_transformer(args)
    else:
        backbone = build_backbone(args, (8, 16, 32))
        transformer = build_deformable_transformer(args)
    if args.model == "detr":
        model = build_detr(args, backbone, transformer)
    elif args.model == "deformable_detr":
        model = build_deformable_detr(args, backbone, transformer)
    else:  # the DN models need the DN op (DenoisingQueries raises ImportError without it)
        build = build_dn_detr if args.model == "dn_detr" else build_dn_deformable_detr
        model = build(args, backbone, transformer, build_denoising(args))
    criterion = build_criterion(args, build_matcher(args))
    return model, criterion, build_postprocess(args)


__all__ = ["DETR", "DNDETR", "DNDeformableDETR", "DeformableDETR", "HungarianMatcher", "MODELS", "PostProcess", "SetCriterion", "build_model"]
