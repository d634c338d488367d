"""Command-line options of `python -m detrx.train` (also read by the benchmarks).

Defaults are DETR's paper settings where they apply (d_model 256, 6+6 layers, 100 queries,
AdamW 1e-4, weight decay 1e-4, grad clip 0.1, loss weights 1/5/2, no-object weight 0.1) on a small
from-scratch backbone; the synthetic-data options describe `SyntheticShapes`. Every number is
checked when parsed, files and folders before anything is built, and option combinations in
`finalize_args`: all of them through `parser.error` (a one-line usage error, exit code 2).
With `--resume`, options not given on the command line come from the checkpoint
(see `detrx.engine.resume`).
"""
import argparse
import os

import torch

from detrx.data.synthetic import CLASS_NAMES, add_synthetic_arguments
from detrx.engine.resume import merge_checkpoint_options
from detrx.models.registry import MODELS, models_help
from detrx.util.arg_types import (dropout_rate, non_negative_float, non_negative_int, non_negative_ints,
                                  positive_float, positive_int, positive_ints, probability)


def get_args_parser():
    p = argparse.ArgumentParser("detrx.train", usage="python -m detrx.train [options] (all of them: --help)",
                                description="Train and evaluate DETR-family detectors.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="detr", choices=list(MODELS), help=models_help())
    m = p.add_argument_group("backbone")
    m.add_argument("--backbone", default="tiny", help="'tiny' (from scratch) or a torchvision resnet name")
    m.add_argument("--backbone-weights", default="", help="local state_dict for a torchvision backbone")
    m.add_argument("--backbone-widths", type=positive_ints, default=[64, 128, 256, 512],
                   help="tiny backbone: channels of its 4 stages")
    m.add_argument("--backbone-blocks", type=positive_ints, default=[2, 2, 2, 2],
                   help="tiny backbone: residual blocks in each of its 4 stages")
    m.add_argument("--detr-stride", type=int, default=32, choices=[8, 16, 32], help="DETR's feature stride")
    t = p.add_argument_group("transformer")
    t.add_argument("--d-model", type=positive_int, default=256, help="transformer width")
    t.add_argument("--nheads", type=positive_int, default=8, help="attention heads (divide --d-model)")
    t.add_argument("--enc-layers", type=positive_int, default=6, help="encoder layers")
    t.add_argument("--dec-layers", type=positive_int, default=6, help="decoder layers")
    t.add_argument("--dim-feedforward", type=positive_int, default=2048, help="feed-forward width")
    t.add_argument("--dropout", type=dropout_rate, default=0.1, help="dropout rate")
    t.add_argument("--num-queries", type=positive_int, default=None, help="object queries (default 100; dino 900)")
    t.add_argument("--num-feature-levels", type=positive_int, default=4, help="deformable models: feature levels")
    t.add_argument("--n-points", type=positive_int, default=4,
                   help="deformable attention: sampling points per head and level")
    t.add_argument("--deformable-cross-layers", type=non_negative_ints, default=[],
                   help="detr, dn_detr: decoder layers (e.g. 0,2) whose cross-attention is deformable "
                        "attention over the single-scale memory, with --n-points points")
    t.add_argument("--no-box-refine", dest="box_refine", action="store_false",
                   help="deformable models: no iterative box refinement")
    t.add_argument("--two-stage", action="store_true", help="deformable models: queries from encoder proposals")
    t.add_argument("--no-mixed-selection", dest="mixed_selection", action="store_false",
                   help="dino: content queries from the selected encoder features instead of learned ones")
    t.add_argument("--no-look-forward-twice", dest="look_forward_twice", action="store_false",
                   help="dino: each layer's box trains its own box head only (Deformable DETR's refinement)")
    d = p.add_argument_group("denoising (dn_ models and dino)")
    d.add_argument("--dn-groups", type=positive_int, default=5, help="dn_ models: denoising groups")
    d.add_argument("--dn-number", type=positive_int, default=100,
                   help="dino: DN queries per batch, in max(1, this // (2 * largest gt count)) groups of "
                        "positives and negatives")
    d.add_argument("--label-noise-ratio", type=probability, default=0.5, help="probability of a flipped label")
    d.add_argument("--box-noise-scale", type=non_negative_float, default=None,
                   help="box jitter scale (lambda; default 0.4, dino 1.0)")
    d.add_argument("--dn-noise-style", default=None, choices=["dn_detr", "dino"],
                   help="centre/size or corner noise (default dn_detr; dino: dino)")
    d.add_argument("--contrastive", action="store_true",
                   help="DINO negative DN queries (-> no object); dino always has them")
    d.add_argument("--dn-loss-coef", type=non_negative_float, default=1.0, help="weight of the DN losses")
    o = p.add_argument_group("loss and matcher")
    o.add_argument("--loss", default=None, choices=["ce", "focal"],
                   help="class loss (default: ce for DETR models, focal for deformable ones)")
    o.add_argument("--eos-coef", type=non_negative_float, default=0.1, help="ce: weight of the no-object class")
    o.add_argument("--ce-loss-coef", type=non_negative_float, default=None, help="default 1 (ce) or 2 (focal)")
    o.add_argument("--bbox-loss-coef", type=non_negative_float, default=5.0, help="L1 box loss weight")
    o.add_argument("--giou-loss-coef", type=non_negative_float, default=2.0, help="GIoU loss weight")
    o.add_argument("--set-cost-class", type=non_negative_float, default=None, help="default 1 (ce) or 2 (focal)")
    o.add_argument("--set-cost-bbox", type=non_negative_float, default=5.0, help="matching cost: L1")
    o.add_argument("--set-cost-giou", type=non_negative_float, default=2.0, help="matching cost: GIoU")
    a = p.add_argument_group("data")
    a.add_argument("--dataset", default="synthetic", choices=["synthetic", "coco"],
                   help="generated shapes, or COCO-format files of your own")
    a.add_argument("--train-images", default="", help="coco: training images folder")
    a.add_argument("--train-ann", default="", help="coco: training annotations JSON")
    a.add_argument("--val-images", default="", help="coco: validation images folder")
    a.add_argument("--val-ann", default="", help="coco: validation annotations JSON")
    a.add_argument("--sizes", type=positive_ints, default=None,
                   help="coco: shorter-side sizes for the random training resize (eval: the largest)")
    a.add_argument("--image-max-size", type=positive_int, default=1333, help="coco: cap on the longer image side")
    add_synthetic_arguments(a, help_prefix="synthetic: ")
    a.add_argument("--no-flip", dest="flip", action="store_false", help="no random horizontal flip in training")
    a.add_argument("--check-data", action="store_true", help="only check the dataset and report its problems")
    s = p.add_argument_group("optimisation")
    s.add_argument("--epochs", type=positive_int, default=50, help="training epochs")
    s.add_argument("--batch-size", type=positive_int, default=8, help="images per step (per process)")
    s.add_argument("--lr", type=positive_float, default=1e-4, help="AdamW learning rate")
    s.add_argument("--lr-backbone", type=non_negative_float, default=None,
                   help="backbone learning rate (default: --lr; the tiny backbone trains from scratch)")
    s.add_argument("--weight-decay", type=non_negative_float, default=1e-4, help="AdamW weight decay")
    s.add_argument("--lr-drop", type=positive_int, default=None,
                   help="drop the learning rates 10x every this many epochs (default: never)")
    s.add_argument("--clip-max-norm", type=non_negative_float, default=0.1, help="gradient clipping (0: none)")
    s.add_argument("--max-steps-per-epoch", type=positive_int, default=None, help="cut epochs short (default: no cut)")
    r = p.add_argument_group("run")
    r.add_argument("--seed", type=non_negative_int, default=42, help="seed of weights, data order and noise")
    r.add_argument("--device", default=None, help="'cpu', 'cuda' or 'cuda:N' (default: cuda when available)")
    r.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    r.add_argument("--num-workers", type=non_negative_int, default=0, help="data loader processes")
    r.add_argument("--output-dir", default="runs/detrx", help="log.jsonl and checkpoint.pth go here")
    r.add_argument("--resume", default="", help="checkpoint to continue (or to evaluate with --eval); options "
                   "not given come from it, model options that contradict it are refused")
    r.add_argument("--eval", action="store_true", help="only evaluate --resume on the val split")
    r.add_argument("--allow-random", action="store_true", help="let --eval run without a checkpoint (random weights)")
    r.add_argument("--eval-every", type=positive_int, default=1,
                   help="evaluate every this many epochs (and after the last)")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def given_options(argv):
    """The dest names of the options that `argv` sets explicitly."""
    parser = get_args_parser()
    unset = object()
    parser.set_defaults(**dict.fromkeys(vars(parser.parse_args([])), unset))
    return {name for name, value in vars(parser.parse_args(argv)).items() if value is not unset}


def is_deformable(args):
    return MODELS[args.model].family.name == "deformable"


def fill_model_defaults(args):
    """The defaults that depend on the model: the class loss and its weights, and DINO's query
    count and denoising (always contrastive, corner noise with lambda 1.0, as in the paper)."""
    dino = args.model == "dino"
    args.num_queries = args.num_queries or (900 if dino else 100)
    args.box_noise_scale = args.box_noise_scale if args.box_noise_scale is not None else (1.0 if dino else 0.4)
    args.dn_noise_style = args.dn_noise_style or ("dino" if dino else "dn_detr")
    args.contrastive = args.contrastive or dino
    args.loss = args.loss or ("focal" if is_deformable(args) else "ce")
    focal = args.loss == "focal"
    args.ce_loss_coef = args.ce_loss_coef if args.ce_loss_coef is not None else (2.0 if focal else 1.0)
    args.set_cost_class = args.set_cost_class if args.set_cost_class is not None else (2.0 if focal else 1.0)
    return args


def check_combinations(args, error):
    """Option combinations that cannot work; error(message) is called for the first one."""
    if args.two_stage and not is_deformable(args):
        error(f"--two-stage applies to the deformable models only, not to --model {args.model}")
    if args.model != "dino":
        for flag, on in (("--no-mixed-selection", args.mixed_selection),
                         ("--no-look-forward-twice", args.look_forward_twice)):
            if not on:
                error(f"{flag} applies to --model dino only, not to --model {args.model}")
    elif args.two_stage or not args.box_refine:
        error("--model dino always selects its queries from the encoder and refines its boxes: "
              "leave out --two-stage and --no-box-refine")
    if args.deformable_cross_layers:
        if is_deformable(args):
            error(f"--deformable-cross-layers applies to detr and dn_detr, not to --model {args.model} "
                  "(its cross-attention is deformable already)")
        if max(args.deformable_cross_layers) >= args.dec_layers:
            error(f"--deformable-cross-layers must name decoder layers in [0, {args.dec_layers}) "
                  f"(--dec-layers {args.dec_layers}), got {args.deformable_cross_layers}")
    if args.d_model % args.nheads:
        error(f"--d-model ({args.d_model}) must be divisible by --nheads ({args.nheads})")
    if args.backbone == "tiny" and (len(args.backbone_widths) != 4 or len(args.backbone_blocks) != 4):
        error(f"--backbone-widths and --backbone-blocks need 4 values each, got {args.backbone_widths} "
              f"and {args.backbone_blocks}")
    if args.backbone != "tiny" and not args.backbone_weights:
        error(f"--backbone {args.backbone} needs --backbone-weights (a local state_dict file)")
    if args.min_objects > args.max_objects:
        error(f"--min-objects ({args.min_objects}) must be <= --max-objects ({args.max_objects})")
    if args.dataset == "synthetic":
        if args.num_classes > len(CLASS_NAMES):
            error(f"--num-classes must be in [1, {len(CLASS_NAMES)}] for the synthetic set, got {args.num_classes}")
        largest = args.object_max_size or args.image_size // 2
        if not 2 <= args.object_min_size <= largest <= args.image_size:
            error(f"need 2 <= --object-min-size <= --object-max-size <= --image-size, got {args.object_min_size}, "
                  f"{largest}, {args.image_size}")
    if args.eval and not args.resume and not args.allow_random:
        error("--eval needs a checkpoint (--resume PATH), or --allow-random to evaluate random weights")
    check_device(args, error)


def check_device(args, error):
    """--device names a device this machine has; --amp needs CUDA."""
    try:
        device = torch.device(args.device) if args.device else None
    except RuntimeError:
        error(f"--device must be like 'cpu', 'cuda' or 'cuda:1', got {args.device!r}")
    if device is not None and device.type == "cuda":
        if not torch.cuda.is_available():
            error(f"--device {args.device}: no CUDA device is available (torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            error(f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s)")
    if args.amp and (device.type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")) != "cuda":
        error("--amp needs a CUDA device")


def check_paths(args, error):
    """Files and folders exist (and the output folder can be created) before anything is built."""
    if args.dataset == "coco":
        splits = [("val", args.val_images, args.val_ann)]
        if not args.eval:
            splits.insert(0, ("train", args.train_images, args.train_ann))
        for split, images, ann in splits:
            if not images or not ann:
                error(f"--dataset coco needs --{split}-images and --{split}-ann")
            if not os.path.isdir(images):
                error(f"--{split}-images {images!r} is not a folder")
            if not os.path.isfile(ann):
                error(f"--{split}-ann {ann!r} is not a file")
    if args.backbone_weights and not os.path.isfile(args.backbone_weights):
        error(f"--backbone-weights {args.backbone_weights!r} is not a file")
    if args.resume and not os.path.isfile(args.resume):
        error(f"--resume {args.resume!r} is not a file")
    check_output_dir(args.output_dir, error)


def check_output_dir(path, error):
    """`path` is a folder, or can be created as one."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            error(f"--output-dir {path!r} exists and is not a folder")
        if not os.access(path, os.W_OK):
            error(f"--output-dir {path!r} is not writable")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        error(f"--output-dir {path!r} cannot be created: {parent!r} is not a writable folder")


def finalize_args(args, error=None):
    """Fills the model-dependent defaults and checks option combinations and paths; returns args.

    error(message) reports a problem (default: raise ValueError; the CLI passes parser.error).
    """
    error = error or _raise_value_error
    fill_model_defaults(args)
    check_combinations(args, error)
    if not args.check_data:
        check_paths(args, error)
    return args


def _raise_value_error(message):
    raise ValueError(message)


def parse_args(argv=None):
    """Parses and validates `detrx.train` options; with --resume, merges the checkpoint's options."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.resume and not args.check_data:
        if not os.path.isfile(args.resume):
            parser.error(f"--resume {args.resume!r} is not a file")
        args = merge_checkpoint_options(args, given_options(argv), parser.error)
    return finalize_args(args, parser.error)
