"""Query specialisation over training, from the per-epoch val predictions of a convergence study.

    python benchmarks/query_specialisation.py [--runs DIR] [--variants detr,dn_detr] [--seeds 0,1]

For each (variant, seed) and epoch: `detrx.engine.query_specialisation.specialisation` of the
confident predictions (score >= 0.3) on a 3x3 grid of image regions, and the first epoch at which
it reaches each of --levels. Writes to --out:
    query_specialisation.json              the curves, the epochs per level, the prediction counts
    query_specialisation_curve.png         specialisation per epoch, every variant and seed
    query_specialisation_scatter.png       every confident prediction's centre on every val image,
                                           coloured by query slot, at --show-epochs (first seed),
                                           with each slot's mean centre numbered
    query_specialisation_slots.png         one panel per slot at the last epoch (first seed): all its
                                           predictions' centres, coloured by box shape as in DETR's paper
"""
import argparse
import json
import os

import numpy as np

from detrx.engine.query_specialisation import confident_predictions, specialisation
from study_predictions import DEFAULT_RUNS, load_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORE_THRESHOLD, GRID = 0.3, 3


def curves(runs_dir, variants, seeds):
    """{variant: {seed: {"epochs" [E] (1-based), "specialisation" [E], "raw" [E], "predictions" [E], "AP50" [E]}}}."""
    result = {}
    for variant in variants:
        result[variant] = {}
        for seed in seeds:
            summary, record = load_run(runs_dir, variant, seed)
            per_epoch = [specialisation(scores, boxes, SCORE_THRESHOLD, GRID)
                         for scores, boxes in zip(record["scores"], record["boxes"])]
            ap50 = {r["epoch"]: r["AP50"] for r in summary["evals"]}
            result[variant][seed] = {"epochs": [int(e) + 1 for e in record["epochs"]],
                                     **{key: [None if m[key] != m[key] else m[key] for m in per_epoch]  # NaN -> null
                                        for key in ("specialisation", "raw", "predictions")},
                                     "AP50": [ap50[int(e)] for e in record["epochs"]]}
    return result


def first_epoch_at(curve, level):
    """The first 1-based epoch whose specialisation reaches level, or None."""
    return next((e for e, v in zip(curve["epochs"], curve["specialisation"]) if v is not None and v >= level), None)


def plot_curves(result, levels, path):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    colours = dict(zip(result, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    for variant, per_seed in result.items():
        for k, (seed, curve) in enumerate(per_seed.items()):
            style = dict(color=colours[variant], alpha=1.0 if k == 0 else 0.5, label=f"{variant} seed {seed}")
            axes[0].plot(curve["epochs"], curve["specialisation"], "-", **style)
            axes[1].plot(curve["epochs"], curve["AP50"], "-", **style)
    for level in levels:
        axes[0].axhline(level, color="gray", ls=":", lw=1)
    axes[0].set_title(f"query specialisation: I(slot; region) / H(region), shuffle baseline removed\n"
                      f"(predictions with score >= {SCORE_THRESHOLD}, {GRID}x{GRID} regions)", fontsize=9)
    axes[1].set_title("val AP50", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scatter(runs_dir, variants, seed, show_epochs, path):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(variants), len(show_epochs), figsize=(3.2 * len(show_epochs), 3.3 * len(variants)),
                             squeeze=False)
    for row, variant in enumerate(variants):
        _, record = load_run(runs_dir, variant, seed)
        index = {int(e) + 1: i for i, e in enumerate(record["epochs"])}
        for col, epoch in enumerate(show_epochs):
            ax = axes[row, col]
            slot, centres = confident_predictions(record["scores"][index[epoch]], record["boxes"][index[epoch]],
                                                  SCORE_THRESHOLD)
            ax.scatter(centres[:, 0], centres[:, 1], c=slot, cmap="tab10", vmin=0, vmax=9, s=4, alpha=0.6)
            for q in np.unique(slot):
                mean = centres[slot == q].mean(0)
                ax.scatter(*mean, color="black", marker="x", s=30)
                ax.annotate(str(q), mean, fontsize=8, xytext=(3, 3), textcoords="offset points")
            ax.set_xlim(0, 1)
            ax.set_ylim(1, 0)
            ax.set_xticks([1 / 3, 2 / 3])
            ax.set_yticks([1 / 3, 2 / 3])
            ax.grid(True, lw=0.5)
            ax.set_title(f"{variant}, epoch {epoch} ({len(slot)} pred.)", fontsize=8)
    fig.suptitle(f"centres of confident predictions (score >= {SCORE_THRESHOLD}) on every val image, "
                 f"coloured by query slot; x: a slot's mean centre (seed {seed})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_slots(runs_dir, variants, seed, path):
    import matplotlib.pyplot as plt

    records = [load_run(runs_dir, variant, seed)[1] for variant in variants]
    slots = records[0]["scores"].shape[-1]
    fig, axes = plt.subplots(len(variants), slots, figsize=(1.9 * slots, 2.1 * len(variants)), squeeze=False)
    for row, (variant, record) in enumerate(zip(variants, records)):
        boxes = record["boxes"][-1]  # [V, Q, 4] at the last epoch
        for q in range(slots):
            w, h = boxes[:, q, 2], boxes[:, q, 3]
            colour = np.where(w * h < 0.04, "tab:green", np.where(w >= h, "tab:red", "tab:blue"))
            ax = axes[row, q]
            ax.scatter(boxes[:, q, 0], boxes[:, q, 1], c=colour, s=3, alpha=0.6)
            ax.set_xlim(0, 1)
            ax.set_ylim(1, 0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{variant} slot {q}", fontsize=6)
    fig.suptitle(f"every val prediction of each slot at epoch {int(records[0]['epochs'][-1]) + 1} (seed {seed}); "
                 "green: small boxes (area < 4% of the image), red: large and wide, blue: large and tall", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="the runs folder of a convergence.py study")
    parser.add_argument("--variants", default="detr,dn_detr", help="comma list of variants (ce models)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--levels", default="0.1,0.2", help="specialisation levels to report the first epoch of")
    parser.add_argument("--show-epochs", default="1,2,4,8,16,48", help="epochs of the scatter figure")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    opts = parser.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    variants, seeds = opts.variants.split(","), [int(s) for s in opts.seeds.split(",")]
    levels = [float(v) for v in opts.levels.split(",")]
    result = curves(opts.runs, variants, seeds)
    reach = {variant: {seed: {str(level): first_epoch_at(curve, level) for level in levels}
                       for seed, curve in per_seed.items()} for variant, per_seed in result.items()}
    os.makedirs(opts.out, exist_ok=True)
    prefix = os.path.join(opts.out, "query_specialisation")
    plot_curves(result, levels, prefix + "_curve.png")
    plot_scatter(opts.runs, variants, seeds[0], [int(e) for e in opts.show_epochs.split(",")], prefix + "_scatter.png")
    plot_slots(opts.runs, variants, seeds[0], prefix + "_slots.png")
    report = {"score_threshold": SCORE_THRESHOLD, "grid": GRID, "levels": levels, "first_epoch_at_level": reach,
              "curves": result}
    with open(prefix + ".json", "w") as f:
        json.dump(report, f, indent=1)
    for variant, per_seed in result.items():
        for seed, curve in per_seed.items():
            values = np.array(curve["specialisation"], dtype=float)  # None -> nan
            final = np.nanmean(values[-5:])
            early = ", ".join(f"{value:.3f}" for value in values[:12:4])
            print(f"{variant} seed {seed}: first epoch at levels {reach[variant][seed]}, "
                  f"mean of the last 5 epochs {final:.3f}, at epochs 1, 5, 9: {early}")


if __name__ == "__main__":
    main()
