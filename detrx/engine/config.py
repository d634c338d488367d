"""Command-line options shared by `python -m detrx.train` and the benchmarks.

Defaults are DETR's paper settings where they apply (d_model 256, 6+6 layers, 100 queries,
AdamW 1e-4, weight decay 1e-4, grad clip 0.1, loss weights 1/5/2, no-object weight 0.1) on a small
from-scratch backbone; the synthetic-data options describe `SyntheticShapes`.
"""
import argparse


def _ints(text):
    return [int(v) for v in text.split(",")]


def get_args_parser():
    p = argparse.ArgumentParser("detrx", description="Train and evaluate DETR-family detectors.")
    p.add_argument("--model", default="detr", choices=["detr", "dn_detr", "deformable_detr", "dn_deformable_detr"])
    # backbone
    p.add_argument("--backbone", default="tiny", help="'tiny' (from scratch) or a torchvision resnet name")
    p.add_argument("--backbone-weights", default="", help="local state_dict for a torchvision backbone")
    p.add_argument("--backbone-widths", type=_ints, default=[64, 128, 256, 512])
    p.add_argument("--backbone-blocks", type=_ints, default=[2, 2, 2, 2])
    p.add_argument("--detr-stride", type=int, default=32, choices=[8, 16, 32], help="DETR's feature stride")
    # transformer
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--nheads", type=int, default=8)
    p.add_argument("--enc-layers", type=int, default=6)
    p.add_argument("--dec-layers", type=int, default=6)
    p.add_argument("--dim-feedforward", type=int, default=2048)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--num-queries", type=int, default=100)
    p.add_argument("--num-feature-levels", type=int, default=4)
    p.add_argument("--n-points", type=int, default=4)
    p.add_argument("--no-box-refine", dest="box_refine", action="store_false")
    p.add_argument("--two-stage", action="store_true", help="deformable models: queries from encoder proposals")
    # denoising
    p.add_argument("--dn-groups", type=int, default=5)
    p.add_argument("--label-noise-ratio", type=float, default=0.5)
    p.add_argument("--box-noise-scale", type=float, default=0.4)
    p.add_argument("--dn-noise-style", default="dn_detr", choices=["dn_detr", "dino"])
    p.add_argument("--contrastive", action="store_true", help="DINO negative DN queries (-> no object)")
    p.add_argument("--dn-loss-coef", type=float, default=1.0)
    # loss and matcher
    p.add_argument("--loss", default=None, choices=["ce", "focal"],
                   help="class loss (default: ce for DETR models, focal for deformable ones)")
    p.add_argument("--eos-coef", type=float, default=0.1)
    p.add_argument("--ce-loss-coef", type=float, default=None, help="default 1 (ce) or 2 (focal)")
    p.add_argument("--bbox-loss-coef", type=float, default=5.0)
    p.add_argument("--giou-loss-coef", type=float, default=2.0)
    p.add_argument("--set-cost-class", type=float, default=None, help="default 1 (ce) or 2 (focal)")
    p.add_argument("--set-cost-bbox", type=float, default=5.0)
    p.add_argument("--set-cost-giou", type=float, default=2.0)
    # data
    p.add_argument("--dataset", default="synthetic", choices=["synthetic", "coco"])
    p.add_argument("--train-images", default="", help="coco: training images folder")
    p.add_argument("--train-ann", default="", help="coco: training annotations JSON")
    p.add_argument("--val-images", default="")
    p.add_argument("--val-ann", default="")
    p.add_argument("--sizes", type=_ints, default=None, help="coco: shorter-side sizes for random resize")
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--num-train", type=int, default=1000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--num-classes", type=int, default=3, help="synthetic only; coco reads it from the JSON")
    p.add_argument("--min-objects", type=int, default=1)
    p.add_argument("--max-objects", type=int, default=10)
    p.add_argument("--min-size", type=int, default=4)
    p.add_argument("--max-size-objects", dest="max_size_objects", type=int, default=None)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--no-flip", dest="flip", action="store_false")
    # optimisation
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-backbone", type=float, default=None, help="default: --lr (backbone trains from scratch)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--lr-drop", type=int, default=None, help="epoch of the 10x LR drop (default: none)")
    p.add_argument("--clip-max-norm", type=float, default=0.1)
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    # run
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--output-dir", default="runs/detrx")
    p.add_argument("--resume", default="", help="checkpoint to resume from (or to evaluate with --eval)")
    p.add_argument("--eval", action="store_true", help="only evaluate --resume on the val split")
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def finalize_args(args):
    """Fills the model-dependent defaults and checks option combinations; returns args."""
    deformable = args.model in ("deformable_detr", "dn_deformable_detr")
    if args.two_stage and not deformable:
        raise ValueError(f"--two-stage applies to the deformable models only, not to --model {args.model}")
    args.loss = args.loss or ("focal" if deformable else "ce")
    focal = args.loss == "focal"
    args.ce_loss_coef = args.ce_loss_coef if args.ce_loss_coef is not None else (2.0 if focal else 1.0)
    args.set_cost_class = args.set_cost_class if args.set_cost_class is not None else (2.0 if focal else 1.0)
    args.lr_backbone = args.lr_backbone if args.lr_backbone is not None else args.lr
    args.max_size = args.max_size if args.dataset == "coco" else None
    if args.dataset == "coco" and not (args.train_ann or args.val_ann):
        raise ValueError("--dataset coco needs --train-images/--train-ann and/or --val-images/--val-ann")
    for name in ("epochs", "batch_size", "num_queries", "d_model", "dec_layers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def parse_args(argv=None):
    return finalize_args(get_args_parser().parse_args(argv))
