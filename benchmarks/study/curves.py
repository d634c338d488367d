"""The study's figures, drawn from the kept report alone: for each pair, the training losses and the
val AP / AP50 per epoch of both models and every seed.

    python benchmarks/study/curves.py benchmarks/study/results/convergence_detr_contrastive_deformable_cross.json

Writes <report>_<pair>_losses.png (total / class / L1 / GIoU matching losses, per-epoch means, log y,
with the baseline's final class-loss floor and the step where the variant reaches it) and
<report>_<pair>_map.png next to the report, or into --out.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: study
from study.config import pair_name  # noqa: E402

LOSS_PANELS = [("matched_total", "total (matching terms, all layers)"), ("loss_ce", "class (CE)"),
               ("loss_bbox", "L1"), ("loss_giou", "GIoU")]


def plot_pair(runs, summary, prefix):
    """The two figures of one pair; runs: {(variant, seed): the report's run entry}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baseline, variant = summary["baseline"], summary["variant"]
    seeds = [entry["seed"] for entry in summary["per_seed"]]
    colours = {baseline: "tab:blue", variant: "tab:orange"}
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for ax, (key, title) in zip(axes, LOSS_PANELS):
        for name in (baseline, variant):
            for k, seed in enumerate(seeds):
                run = runs[(name, seed)]
                steps = [(epoch + 1) * run["steps_per_epoch"] for epoch in range(len(run["steps"][key]))]
                ax.plot(steps, run["steps"][key], color=colours[name], lw=1.2,
                        alpha=1.0 if k == 0 else 0.5, label=f"{name} seed {seed}")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
    first = summary["per_seed"][0]
    axes[1].axhline(first["baseline_class_loss_floor"], color="gray", ls=":", label=f"{baseline} final floor")
    if first["variant_class_loss_crossing_step"] is not None:
        axes[1].axvline(first["variant_class_loss_crossing_step"], color="tab:red", ls="--",
                        label=f"{variant} reaches it: step {first['variant_class_loss_crossing_step']}")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{baseline} vs {variant}: training losses (mean of each epoch's steps), log y")
    fig.tight_layout()
    fig.savefig(f"{prefix}_losses.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("AP", "AP50")):
        for name in (baseline, variant):
            for k, seed in enumerate(seeds):
                evals = runs[(name, seed)]["evals"]
                ax.plot([r["epoch"] + 1 for r in evals], [r[key] for r in evals], "o-", color=colours[name],
                        alpha=1.0 if k == 0 else 0.5, label=f"{name} seed {seed}")
        ax.set_title(f"val {key}")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{prefix}_map.png", dpi=110)
    plt.close(fig)


def plot_report(report, prefix):
    """Every pair's figures of a report, as <prefix>_<pair>_losses.png and _map.png."""
    runs = {(run["variant"], run["seed"]): run for run in report["runs"]}
    for summary in report["pairs"]:
        plot_pair(runs, summary, f"{prefix}_{pair_name(summary['baseline'], summary['variant'])}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="a study report (<name>.json in the study's results)")
    parser.add_argument("--out", default=None, help="folder of the figures (default: the report's)")
    opts = parser.parse_args(argv)
    with open(opts.report) as f:
        report = json.load(f)
    out = opts.out or os.path.dirname(os.path.abspath(opts.report))
    os.makedirs(out, exist_ok=True)
    plot_report(report, os.path.join(out, os.path.splitext(os.path.basename(opts.report))[0]))


if __name__ == "__main__":
    main()
