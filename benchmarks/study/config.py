"""What the study trains: one config for every model, the variants, and the pairs compared.

STUDY_CONFIG: the synthetic set, a small from-scratch backbone, a small transformer, and a schedule
that fits the CPU budget (48 epochs x 250 steps per run, the learning rate dropped 10x after epoch
40; four runs, two at a time, one thread each: 25 min on 2 cores). The learning rate decides what
the study shows: at 1e-3 vanilla DETR stays on its class-loss plateau (val AP50 0.06 after 28
epochs) while DN-DETR learns; at 3e-4 both learn at the same pace; at 6e-4 both learn (vanilla
AP50 ~0.8) and DN-DETR is ahead (results/convergence_lr_sweep.json, convergence_lr3e-4.*).
"""
STUDY_CONFIG = ["--image-size", "64", "--num-classes", "3", "--min-objects", "1", "--max-objects", "3",
                "--object-min-size", "12", "--object-max-size", "32", "--num-train", "2000", "--num-val", "200",
                "--backbone-widths", "16,32,64,64", "--backbone-blocks", "1,1,1,1", "--detr-stride", "8",
                "--d-model", "64", "--nheads", "4", "--enc-layers", "1", "--dec-layers", "3",
                "--dim-feedforward", "128", "--num-queries", "8", "--dropout", "0", "--num-feature-levels", "3",
                "--batch-size", "8", "--lr", "6e-4", "--epochs", "48", "--lr-drop", "40", "--dn-groups", "5",
                "--no-progress"]
# The dino pairs' config: 150 steps per epoch instead of 250, so that a DINO run needs ~10 min of
# CPU time (a step takes 66 ms on one thread, DN-Deformable-DETR's 52 ms), and DINO's DN budget at
# 30 queries: 5 groups of 3 positives + 3 negatives with the study's at most 3 objects, the same 5
# positive groups as DN-Deformable-DETR's --dn-groups 5 (the paper's 100 DN queries go with 900
# matching ones).
DINO_BUDGET = ["--num-train", "1200"]
QUICK = ["--num-train", "200", "--num-val", "50", "--epochs", "3"]
# variant name -> the training options that make it (on top of the config)
VARIANTS = {"detr": ["--model", "detr"], "dn_detr": ["--model", "dn_detr"],
            "dn_detr_contrastive": ["--model", "dn_detr", "--contrastive"],
            "detr_deformable_cross": ["--model", "detr", "--deformable-cross-layers", "0"],
            "dn_detr_deformable_cross": ["--model", "dn_detr", "--deformable-cross-layers", "0"],
            "deformable_detr": ["--model", "deformable_detr"], "dn_deformable_detr": ["--model", "dn_deformable_detr"],
            "dino": ["--model", "dino", "--dn-number", "30"],
            "dino_no_mixed_selection": ["--model", "dino", "--dn-number", "30", "--no-mixed-selection"],
            "dino_no_look_forward_twice": ["--model", "dino", "--dn-number", "30", "--no-look-forward-twice"]}
# pair name -> (baseline, variant)
PAIRS = {"detr": ("detr", "dn_detr"), "deformable": ("deformable_detr", "dn_deformable_detr"),
         "contrastive": ("dn_detr", "dn_detr_contrastive"), "deformable_cross": ("detr", "detr_deformable_cross"),
         "dn_deformable_cross": ("dn_detr", "dn_detr_deformable_cross"), "dino": ("dn_deformable_detr", "dino"),
         "dino_no_mixed_selection": ("dn_deformable_detr", "dino_no_mixed_selection"),
         "dino_no_look_forward_twice": ("dn_deformable_detr", "dino_no_look_forward_twice")}
ABLATIONS = ("dino_no_mixed_selection", "dino_no_look_forward_twice")  # pairs trained on --ablation-seeds only
PAIR_CONFIG = {name: DINO_BUDGET for name in ("dino", *ABLATIONS)}  # config added to STUDY_CONFIG


def pair_name(baseline, variant):
    """The name in PAIRS of the pair (baseline, variant)."""
    return next(name for name, pair in PAIRS.items() if pair == (baseline, variant))
