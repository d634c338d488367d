"""Query specialisation over training, from the per-epoch val predictions of a convergence study.

    python benchmarks/study/query_specialisation.py [--runs DIR] [--variants detr,dn_detr] [--seeds 0,1]

For each (variant, seed) and epoch: `detrx.engine.query_specialisation.specialisation` on a 3x3
grid of image regions, over the hits (confident predictions, score >= 0.3, that find a ground-truth
box at IoU >= 0.5: `detrx.engine.error_types`), and the first epoch at which it reaches each of
--levels. Early in training every slot predicts one fixed box whatever the image: that scores as
"specialised" (each slot keeps to one place) although no slot follows the objects yet, over all
confident predictions and over the few early hits alike. So an epoch counts towards a level only
once the model finds at least half of the val boxes (recall >= MIN_RECALL at IoU 0.5), and the level
is judged on the mean over WINDOW epochs. The measure over all confident predictions is recorded
too. Writes to --out:
    query_specialisation.json              the curves, the epochs per level, the prediction counts
    query_specialisation_curve.png         both measures and val AP50 per epoch, every variant and seed
    query_specialisation_scatter.png       every confident prediction's centre on every val image,
                                           coloured by query slot (hits solid, the others faint), at
                                           --show-epochs (first seed), each slot's mean centre numbered
    query_specialisation_slots.png         one panel per slot at the last epoch (first seed): all its
                                           predictions' centres, coloured by box shape as in DETR's paper
"""
import json
import os
import sys

import numpy as np

from detrx.engine.error_types import prediction_types
from detrx.engine.query_specialisation import specialisation

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: study
from study.predictions import load_run, parse_study_args, save_figure, study_parser  # noqa: E402

SCORE_THRESHOLD, GRID = 0.3, 3
MIN_RECALL, WINDOW = 0.5, 3


def confident_predictions(record, epoch_index):
    """-> slot [D], centres [D, 2], is_hit [D] of the confident predictions on every val image at one epoch."""
    scores, boxes = record["scores"][epoch_index], record["boxes"][epoch_index]  # [V, Q], [V, Q, 4]
    slots, centres, hits = [], [], []
    for image_scores, image_boxes, gt_boxes, gt_labels in zip(scores, boxes, record["gt_boxes"], record["gt_labels"]):
        types, _ = prediction_types(image_scores, image_boxes, gt_boxes[gt_labels >= 0], SCORE_THRESHOLD)
        for q, kind in enumerate(types):
            if kind is not None:
                slots.append(q)
                centres.append(image_boxes[q, :2])
                hits.append(kind == "hit")
    return np.array(slots, dtype=int), np.array(centres).reshape(-1, 2), np.array(hits, dtype=bool)


def curves(runs_dir, variants, seeds):
    """{variant: {seed: {"epochs" [E] (1-based), "specialisation" [E] (hits), "specialisation_confident" [E],
    "hits" [E], "confident" [E], "AP50" [E]}}}; null where a measure is undefined."""
    result = {}
    for variant in variants:
        result[variant] = {}
        for seed in seeds:
            summary, record = load_run(runs_dir, variant, seed)
            curve = {"epochs": [], "specialisation": [], "specialisation_confident": [], "hits": [], "confident": []}
            for i, epoch in enumerate(record["epochs"]):
                slot, centres, hit = confident_predictions(record, i)
                on_hits, on_all = specialisation(slot[hit], centres[hit], GRID), specialisation(slot, centres, GRID)
                curve["epochs"].append(int(epoch) + 1)
                curve["specialisation"].append(_finite_or_none(on_hits["specialisation"]))
                curve["specialisation_confident"].append(_finite_or_none(on_all["specialisation"]))
                curve["hits"].append(on_hits["predictions"])
                curve["confident"].append(on_all["predictions"])
            ap50 = {r["epoch"]: r["AP50"] for r in summary["evals"]}
            curve["AP50"] = [ap50[int(e)] for e in record["epochs"]]
            curve["boxes"] = int((record["gt_labels"] >= 0).sum())
            result[variant][seed] = curve
    return result


def _finite_or_none(value):
    return None if value != value else value  # NaN -> null in the JSON


def first_epoch_at(curve, level):
    """The first 1-based epoch at which the model has found at least MIN_RECALL of the val boxes for
    WINDOW epochs and the mean specialisation of those epochs reaches level; None if never."""
    for end in range(WINDOW, len(curve["epochs"]) + 1):
        window = range(end - WINDOW, end)
        if all(curve["hits"][i] >= MIN_RECALL * curve["boxes"] for i in window) \
                and np.mean([curve["specialisation"][i] for i in window]) >= level:
            return curve["epochs"][end - 1]
    return None


def first_epoch_with_recall(curve):
    """The first 1-based epoch at which the model finds MIN_RECALL of the val boxes, or None."""
    return next((e for e, hits in zip(curve["epochs"], curve["hits"]) if hits >= MIN_RECALL * curve["boxes"]), None)


def plot_curves(result, levels, path):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(19, 4.5))
    colours = dict(zip(result, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    for variant, per_seed in result.items():
        for k, (seed, curve) in enumerate(per_seed.items()):
            style = dict(color=colours[variant], alpha=1.0 if k == 0 else 0.5, label=f"{variant} seed {seed}")
            axes[0].plot(curve["epochs"], np.array(curve["specialisation"], dtype=float), "-", **style)
            axes[1].plot(curve["epochs"], np.array(curve["specialisation_confident"], dtype=float), "-", **style)
            axes[2].plot(curve["epochs"], curve["AP50"], "-", **style)
    for level in levels:
        axes[0].axhline(level, color="gray", ls=":", lw=1)
    for variant, per_seed in result.items():
        for k, curve in enumerate(per_seed.values()):
            epoch = first_epoch_with_recall(curve)
            if epoch is not None:
                axes[0].axvline(epoch, color=colours[variant], ls="--", lw=0.8, alpha=1.0 if k == 0 else 0.5)
    axes[0].set_title(f"query specialisation of the hits: I(slot; region) / H(region), shuffle baseline\n"
                      f"removed (score >= {SCORE_THRESHOLD} and IoU >= 0.5 with a box, {GRID}x{GRID} regions);\n"
                      f"dashed: the epoch each run first finds {MIN_RECALL:.0%} of the val boxes", fontsize=9)
    axes[1].set_title("the same over every confident prediction (score >= 0.3), hits or not", fontsize=9)
    axes[2].set_title("val AP50", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_scatter(runs_dir, variants, seed, show_epochs, path):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(variants), len(show_epochs), figsize=(3.2 * len(show_epochs), 3.3 * len(variants)),
                             squeeze=False)
    for row, variant in enumerate(variants):
        _, record = load_run(runs_dir, variant, seed)
        index = {int(e) + 1: i for i, e in enumerate(record["epochs"])}
        for col, epoch in enumerate(show_epochs):
            ax = axes[row, col]
            slot, centres, hit = confident_predictions(record, index[epoch])
            for chosen, alpha in ((~hit, 0.12), (hit, 0.8)):
                ax.scatter(centres[chosen, 0], centres[chosen, 1], c=slot[chosen], cmap="tab10", vmin=0, vmax=9,
                           s=4, alpha=alpha)
            for q in np.unique(slot):
                mean = centres[slot == q].mean(0)
                ax.scatter(*mean, color="black", marker="x", s=30)
                ax.annotate(str(q), mean, fontsize=8, xytext=(3, 3), textcoords="offset points")
            ax.set_xlim(0, 1)
            ax.set_ylim(1, 0)
            ax.set_xticks([1 / 3, 2 / 3], ["1/3", "2/3"])
            ax.set_yticks([1 / 3, 2 / 3], ["1/3", "2/3"])
            ax.grid(True, lw=0.5)
            ax.set_title(f"{variant}, epoch {epoch} ({hit.sum()} hits of {len(slot)})", fontsize=8)
    fig.suptitle(f"centres of confident predictions (score >= {SCORE_THRESHOLD}) on every val image, coloured by "
                 f"query slot; solid: hits, faint: the others; x: a slot's mean centre (seed {seed})", fontsize=9)
    save_figure(fig, path)


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
    save_figure(fig, path)


def main(argv=None):
    parser = study_parser(__doc__, "detr,dn_detr")
    parser.add_argument("--levels", default="0.25,0.3", help="specialisation levels to report the first epoch of")
    parser.add_argument("--show-epochs", default="1,2,4,8,16,48", help="epochs of the scatter figure")
    opts = parse_study_args(parser, argv)
    variants, seeds = opts.variants, opts.seeds
    levels = [float(v) for v in opts.levels.split(",")]
    result = curves(opts.runs, variants, seeds)
    reach = {variant: {seed: {str(level): first_epoch_at(curve, level) for level in levels}
                       for seed, curve in per_seed.items()} for variant, per_seed in result.items()}
    prefix = os.path.join(opts.out, "query_specialisation")
    plot_curves(result, levels, prefix + "_curve.png")
    last = min(curve["epochs"][-1] for per_seed in result.values() for curve in per_seed.values())
    show_epochs = [e for e in (int(e) for e in opts.show_epochs.split(",")) if e <= last]  # a shorter run shows fewer
    plot_scatter(opts.runs, variants, seeds[0], show_epochs, prefix + "_scatter.png")
    plot_slots(opts.runs, variants, seeds[0], prefix + "_slots.png")
    recall = {variant: {seed: first_epoch_with_recall(curve) for seed, curve in per_seed.items()}
              for variant, per_seed in result.items()}
    report = {"score_threshold": SCORE_THRESHOLD, "grid": GRID, "min_recall": MIN_RECALL, "window": WINDOW,
              "levels": levels, "first_epoch_at_level": reach, "first_epoch_with_min_recall": recall, "curves": result}
    with open(prefix + ".json", "w") as f:
        json.dump(report, f, indent=1)
    for variant, per_seed in result.items():
        for seed, curve in per_seed.items():
            values = np.array(curve["specialisation"], dtype=float)  # None -> nan
            final = np.nanmean(values[-5:])
            early = ", ".join(f"{value:.3f}" for value in values[:12:4])
            print(f"{variant} seed {seed}: recall {MIN_RECALL} from epoch {recall[variant][seed]}, "
                  f"first epoch at levels {reach[variant][seed]}, "
                  f"mean of the last 5 epochs {final:.3f}, at epochs 1, 5, 9: {early}")


if __name__ == "__main__":
    main()
