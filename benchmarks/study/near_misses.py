"""Does DINO's contrastive denoising make DN-DETR better at rejecting near-misses? Error types of the
confident predictions over training, from the per-epoch val predictions of a convergence study.

    python benchmarks/study/near_misses.py [--runs DIR] [--variants dn_detr,dn_detr_contrastive] [--seeds 0,1]

Per (variant, seed) and epoch: the mean count per val image of each error type of
`detrx.engine.error_types` (confident = score >= --score-threshold: hits, duplicates on an
already-covered box at IoU >= 0.5, near-misses with best IoU in [0.1, 0.5), background, missed
boxes) next to the epoch's val AP, AP50 and AP75. Writes to --out:
    near_misses.json / near_misses.md   the curves, and a table at --table-epochs (mean [min, max] over seeds)
    near_misses.png                     each quantity over epochs, every variant and seed
"""
import json
import os
import sys

import numpy as np

from detrx.engine.error_types import ERROR_TYPES, error_types_per_image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: study
from study.predictions import load_run, parse_study_args, save_figure, study_parser  # noqa: E402

AP_KEYS = ("AP", "AP50", "AP75")


def curves(runs_dir, variants, seeds, score_threshold):
    """{variant: {seed: {"epochs" [E] (1-based), error type or AP key: [E]}}}."""
    result = {}
    for variant in variants:
        result[variant] = {}
        for seed in seeds:
            summary, record = load_run(runs_dir, variant, seed)
            per_epoch = [error_types_per_image(scores, boxes, record["gt_boxes"], record["gt_labels"], score_threshold)
                         for scores, boxes in zip(record["scores"], record["boxes"])]
            evals = {r["epoch"]: r for r in summary["evals"]}
            epochs = [int(e) for e in record["epochs"]]
            result[variant][seed] = {"epochs": [e + 1 for e in epochs],
                                     **{key: [m[key] for m in per_epoch] for key in ERROR_TYPES},
                                     **{key: [evals[e][key] for e in epochs] for key in AP_KEYS}}
    return result


def spread(values):
    return f"{np.mean(values):.3f} [{np.min(values):.3f}, {np.max(values):.3f}]"


def markdown_table(result, table_epochs, score_threshold):
    keys = ("near_miss", "duplicate", "background", "hit", "missed") + AP_KEYS
    lines = [f"Per val image, confident predictions (score >= {score_threshold}); mean [min, max] over seeds", "",
             "| variant | epoch | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for epoch in table_epochs:
        for variant, per_seed in result.items():
            row = [spread([curve[key][curve["epochs"].index(epoch)] for curve in per_seed.values()]) for key in keys]
            lines.append(f"| {variant} | {epoch} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(result, path):
    import matplotlib.pyplot as plt

    panels = ("near_miss", "duplicate", "background", "hit", "missed", "AP", "AP50", "AP75")
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5))
    colours = dict(zip(result, ("tab:orange", "tab:purple", "tab:blue", "tab:green")))
    for ax, key in zip(axes.flat, panels):
        for variant, per_seed in result.items():
            for k, (seed, curve) in enumerate(per_seed.items()):
                ax.plot(curve["epochs"], curve[key], color=colours[variant], alpha=1.0 if k == 0 else 0.5,
                        label=f"{variant} seed {seed}")
        ax.set_title(key if key in ("AP", "AP50", "AP75") else f"{key} per image", fontsize=9)
        ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=7)
    save_figure(fig, path)


def main(argv=None):
    parser = study_parser(__doc__, "dn_detr,dn_detr_contrastive")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--table-epochs", default="4,12,24,40,48", help="epochs of the markdown table")
    opts = parse_study_args(parser, argv)
    variants, seeds = opts.variants, opts.seeds
    result = curves(opts.runs, variants, seeds, opts.score_threshold)
    last = min(curve["epochs"][-1] for per_seed in result.values() for curve in per_seed.values())
    table_epochs = [e for e in (int(e) for e in opts.table_epochs.split(",")) if e <= last]
    prefix = os.path.join(opts.out, "near_misses")
    plot(result, prefix + ".png")
    table = markdown_table(result, table_epochs, opts.score_threshold)
    with open(prefix + ".json", "w") as f:
        json.dump({"score_threshold": opts.score_threshold, "curves": result}, f, indent=1)
    with open(prefix + ".md", "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
