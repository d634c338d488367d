"""The one table of detectors: each `--model` name with its family, its builder and a description.

The training CLI takes its `--model` choices and help from `MODELS`, `build_model` its builders,
and the checkpoint the options in `MODEL_OPTIONS` (everything `build_model` reads).
"""
from dataclasses import dataclass
from typing import Callable

from detrx.models.deformable_detr import build_deformable_detr
from detrx.models.deformable_transformer import build_deformable_transformer
from detrx.models.denoising import build_denoising
from detrx.models.detr import build_detr
from detrx.models.dino import build_contrastive_denoising, build_dino
from detrx.models.dn_deformable_detr import build_dn_deformable_detr
from detrx.models.dn_detr import build_dn_detr
from detrx.models.transformer import build_transformer


@dataclass(frozen=True)
class Family:
    """What the detectors of one family share: the backbone strides and the transformer."""

    name: str
    feature_strides: Callable  # args -> tuple of backbone strides
    build_transformer: Callable  # args -> transformer


@dataclass(frozen=True)
class ModelSpec:
    """One `--model` name: its family, whether it trains with denoising queries, its builder
    (args, backbone, transformer[, denoising]) -> model, a one-line description, and the builder of
    its denoising queries (args -> module)."""

    family: Family
    denoising: bool
    build: Callable
    description: str
    build_denoising: Callable = build_denoising


DETR_FAMILY = Family("detr", lambda args: (args.detr_stride,), build_transformer)
DEFORMABLE_FAMILY = Family("deformable", lambda args: (8, 16, 32), build_deformable_transformer)

MODELS = {
    "detr": ModelSpec(DETR_FAMILY, False, build_detr,
                      "DETR: single-scale transformer, Hungarian matching"),
    "dn_detr": ModelSpec(DETR_FAMILY, True, build_dn_detr,
                         "DN-DETR: DETR plus denoising queries"),
    "deformable_detr": ModelSpec(DEFORMABLE_FAMILY, False, build_deformable_detr,
                                 "Deformable DETR: multi-scale deformable attention, box refinement"),
    "dn_deformable_detr": ModelSpec(DEFORMABLE_FAMILY, True, build_dn_deformable_detr,
                                    "DN-Deformable-DETR: Deformable DETR plus denoising queries"),
    "dino": ModelSpec(DEFORMABLE_FAMILY, True, build_dino,
                      "DINO: DN-Deformable-DETR with contrastive denoising, mixed query selection and "
                      "look forward twice", build_contrastive_denoising),
}

# The options `build_model` reads (besides the class count): what a checkpoint must carry to
# rebuild its detector and its training objective.
MODEL_OPTIONS = (
    "model", "backbone", "backbone_widths", "backbone_blocks", "detr_stride",
    "d_model", "nheads", "enc_layers", "dec_layers", "dim_feedforward", "dropout", "num_queries",
    "num_feature_levels", "n_points", "box_refine", "two_stage", "deformable_cross_layers",
    "dn_groups", "label_noise_ratio", "box_noise_scale", "dn_noise_style", "contrastive", "dn_loss_coef",
    "dn_number", "mixed_selection", "look_forward_twice",
    "loss", "eos_coef", "ce_loss_coef", "bbox_loss_coef", "giou_loss_coef",
    "set_cost_class", "set_cost_bbox", "set_cost_giou",
)

# Options added to MODEL_OPTIONS after checkpoints were first written, with the value that rebuilds
# the model those older checkpoints hold.
ADDED_MODEL_OPTIONS = {"deformable_cross_layers": [], "dn_number": 100, "mixed_selection": True,
                       "look_forward_twice": True}


def model_spec(name):
    """The ModelSpec of `name`; ValueError naming the known models otherwise."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {tuple(MODELS)}, got {name!r}")
    return MODELS[name]


def models_help():
    """'name: description' for each model, one per line (the CLI's --model help)."""
    return "; ".join(f"{name}: {spec.description}" for name, spec in MODELS.items())
