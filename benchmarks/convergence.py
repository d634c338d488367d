"""Convergence study: pairs of models (a baseline and a variant) trained with identical
hyperparameters and seeds on the synthetic shapes set. The pairs (--pairs, comma list):
    detr              DETR vs DN-DETR (the default)
    deformable        Deformable DETR vs DN-Deformable-DETR
    contrastive       DN-DETR vs DN-DETR with DINO's contrastive (negative) DN queries
    deformable_cross  DETR vs DETR whose first decoder layer's cross-attention is deformable
    dn_deformable_cross  the same swap in DN-DETR
    dino              DN-Deformable-DETR vs DINO
    dino_no_mixed_selection, dino_no_look_forward_twice
                      DN-Deformable-DETR vs DINO without one of its changes (ablations: --ablation-seeds only)
The dino pairs train on DINO_BUDGET (fewer training images per epoch, same epochs and lr drop) so
that a DINO run fits the CPU budget; the pairs of one invocation must share their config.

    python benchmarks/convergence.py            # default run (sized for <= 30 min per pair on 2 CPU cores)
    python benchmarks/convergence.py --quick    # a few minutes; a smoke run, not a result
    python benchmarks/convergence.py --epochs 12   # any extra train option: a "custom" run

Each (variant, seed) trains in its own process (--jobs at a time, one thread each) through
`detrx.train.train`; a variant shared by two pairs trains once. Writes to --out:
    <name>.json / .md          config, per-step losses, per-epoch val mAP, summary (name: convergence[_quick|_custom]
                               plus the pairs unless only detr)
    <name>_<baseline>[_vs_<variant>]_losses.png   total / class / L1 / GIoU training losses, log y
    <name>_<baseline>[_vs_<variant>]_map.png      val AP and AP50 per epoch
and to --work-dir/<name>/runs/<variant>_seed<seed>/predictions.npz every val image's per-query
predictions after every epoch (`study_predictions.py`), which query_specialisation.py and
near_misses.py read.
The losses compared are the Hungarian (matching-query) terms only: DN-DETR's extra DN terms are
left out so that both models are measured on the same quantity. (train_step.py times a training
step of the study's Deformable DETR with the compiled MSDA op and with the reference.)
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

from detrx.engine.config import parse_args
from detrx.train import train
from study_predictions import PredictionRecorder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One config for every model of the study: the synthetic set, a small from-scratch backbone, a
# small transformer, and a schedule that fits the CPU budget (48 epochs x 250 steps per run, the
# learning rate dropped 10x after epoch 40; four runs, two at a time, one thread each: 25 min on 2
# cores). The learning rate decides what the study shows: at 1e-3 vanilla DETR stays on its
# class-loss plateau (val AP50 0.06 after 28 epochs) while DN-DETR learns; at 3e-4 both learn at
# the same pace; at 6e-4 both learn (vanilla AP50 ~0.8) and DN-DETR is ahead
# (benchmarks/results/convergence_lr_sweep.json, convergence_lr3e-4.*).
DEFAULT = ["--image-size", "64", "--num-classes", "3", "--min-objects", "1", "--max-objects", "3",
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
PAIRS = {"detr": ("detr", "dn_detr"), "deformable": ("deformable_detr", "dn_deformable_detr"),
         "contrastive": ("dn_detr", "dn_detr_contrastive"), "deformable_cross": ("detr", "detr_deformable_cross"),
         "dn_deformable_cross": ("dn_detr", "dn_detr_deformable_cross"), "dino": ("dn_deformable_detr", "dino"),
         "dino_no_mixed_selection": ("dn_deformable_detr", "dino_no_mixed_selection"),
         "dino_no_look_forward_twice": ("dn_deformable_detr", "dino_no_look_forward_twice")}
ABLATIONS = ("dino_no_mixed_selection", "dino_no_look_forward_twice")  # pairs trained on --ablation-seeds only
PAIR_CONFIG = {name: DINO_BUDGET for name in ("dino", *ABLATIONS)}  # config added to DEFAULT


def run_one(variant, seed, extra, out_json):
    """Trains one (variant, seed); writes its steps and evals to out_json and its per-epoch val
    predictions to predictions.npz in its run folder."""
    torch.set_num_threads(1)
    run_dir = out_json[:-len(".json")]
    args = parse_args([*VARIANTS[variant], "--seed", str(seed), "--output-dir", run_dir, *extra])
    if os.path.exists(os.path.join(run_dir, "log.jsonl")):
        os.remove(os.path.join(run_dir, "log.jsonl"))
    recorder = PredictionRecorder(args)
    start = time.time()
    evals = train(args, lambda epoch, model, record: recorder(epoch, model))
    recorder.save(os.path.join(run_dir, "predictions.npz"))
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    keys = ("loss_ce", "loss_bbox", "loss_giou", "matched_total")
    steps = {k: [r[k] for r in log if r["type"] == "train"] for k in keys}
    result = {"variant": variant, "seed": seed, "wall_s": time.time() - start, "steps": steps,
              "steps_per_epoch": len(steps["loss_ce"]) // args.epochs, "evals": evals}
    with open(out_json, "w") as f:
        json.dump(result, f)


def launch_all(runs, extra, out_dir, jobs, reuse=False):
    """Runs every (variant, seed) as a subprocess of this script, `jobs` at a time; with reuse, a
    run whose result file exists in out_dir is read instead (an interrupted study continues)."""
    pending, active, paths = list(runs), [], {}
    if reuse:
        for variant, seed in runs:
            path = os.path.join(out_dir, "runs", f"{variant}_seed{seed}.json")
            if os.path.exists(path):
                pending.remove((variant, seed))
                paths[(variant, seed)] = path
    env = dict(os.environ, OMP_NUM_THREADS="1")
    while pending or active:
        while pending and len(active) < jobs:
            variant, seed = pending.pop(0)
            path = os.path.join(out_dir, "runs", f"{variant}_seed{seed}.json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            cmd = [sys.executable, __file__, "--run-one", variant, str(seed), path, "--", *extra]
            active.append((subprocess.Popen(cmd, env=env), variant, seed))
            paths[(variant, seed)] = path
        time.sleep(2)
        for entry in list(active):
            if entry[0].poll() is not None:
                active.remove(entry)
                if entry[0].returncode:
                    raise RuntimeError(f"run {entry[1]} seed {entry[2]} failed with code {entry[0].returncode}")
                print(f"done: {entry[1]} seed {entry[2]}", flush=True)
    results = {}
    for key, path in paths.items():
        with open(path) as f:
            results[key] = json.load(f)
    return results


def smooth(values, window):
    """Trailing moving average over up to `window` steps (same length as values)."""
    cumsum = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=float))])
    end = np.arange(1, len(cumsum))
    begin = np.maximum(end - window, 0)
    return (cumsum[end] - cumsum[begin]) / (end - begin)


def first_epoch_reaching(evals, key, level):
    """1-based epoch count at which evals[key] first reaches level, or None."""
    return next((r["epoch"] + 1 for r in evals if r[key] >= level), None)


def summarize_pair(results, baseline, variant, seeds, window):
    """Final mAPs (mean and spread over seeds), epochs for the variant to reach baseline's final mAP, and the
    step where the variant's class loss first reaches baseline's final class-loss floor."""
    summary = {"baseline": baseline, "variant": variant, "per_seed": []}
    for seed in seeds:
        v, d = results[(baseline, seed)], results[(variant, seed)]
        entry = {"seed": seed, "epochs": len(v["evals"])}
        for key in ("AP", "AP50"):
            entry[f"{baseline}_final_{key}"] = v["evals"][-1][key]
            entry[f"{variant}_final_{key}"] = d["evals"][-1][key]
            reach = first_epoch_reaching(d["evals"], key, v["evals"][-1][key])
            entry[f"{variant}_epochs_to_baseline_final_{key}"] = reach
            entry[f"epoch_ratio_{key}"] = None if reach is None else reach / len(v["evals"])
        v_ce, d_ce = smooth(v["steps"]["loss_ce"], window), smooth(d["steps"]["loss_ce"], window)
        floor = float(np.mean(v_ce[-max(1, len(v_ce) // 20):]))  # the last 5% of baseline's steps
        crossing = np.nonzero(d_ce <= floor)[0]
        entry["baseline_class_loss_floor"] = floor
        entry["variant_class_loss_crossing_step"] = int(crossing[0]) if len(crossing) else None
        entry["total_steps"] = len(v_ce)
        summary["per_seed"].append(entry)
    for key in [k for k in summary["per_seed"][0] if k.startswith(("epoch_ratio", f"{baseline}_final", f"{variant}_final"))]:
        values = [e[key] for e in summary["per_seed"] if e[key] is not None]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "min": float(np.min(values)),
                            "max": float(np.max(values)), "n": len(values)}
    return summary


def plot_pair(results, baseline, variant, seeds, summary, prefix, window):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {baseline: "tab:blue", variant: "tab:orange"}
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    panels = [("matched_total", "total (matching terms, all layers)"), ("loss_ce", "class (CE)"),
              ("loss_bbox", "L1"), ("loss_giou", "GIoU")]
    for ax, (key, title) in zip(axes, panels):
        for name in (baseline, variant):
            for k, seed in enumerate(seeds):
                ax.plot(smooth(results[(name, seed)]["steps"][key], window), color=colours[name], lw=1.2,
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
    fig.suptitle(f"{baseline} vs {variant}: training losses (moving average over {window} steps), log y")
    fig.tight_layout()
    fig.savefig(f"{prefix}_losses.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("AP", "AP50")):
        for name in (baseline, variant):
            for k, seed in enumerate(seeds):
                evals = results[(name, seed)]["evals"]
                ax.plot([r["epoch"] + 1 for r in evals], [r[key] for r in evals], "o-", color=colours[name],
                        alpha=1.0 if k == 0 else 0.5, label=f"{name} seed {seed}")
        ax.set_title(f"val {key}")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{prefix}_map.png", dpi=110)
    plt.close(fig)


def epoch_means(run):
    """A run's per-step training losses as per-epoch means."""
    per_epoch = run["steps_per_epoch"]
    return {key: np.asarray(values[:len(values) // per_epoch * per_epoch], dtype=float).reshape(-1, per_epoch)
            .mean(1).tolist() for key, values in run["steps"].items()}


def markdown_table(report):
    """The measured summary as a markdown table (one row per model, mean [min, max] over seeds)."""
    def spread(stat):
        return "n/a" if stat is None else f"{stat['mean']:.3f} [{stat['min']:.3f}, {stat['max']:.3f}]"

    lines = [f"{report['label']} run: seeds {report['seeds']}, {report['pairs'][0]['per_seed'][0]['epochs']} epochs "
             f"of {report['pairs'][0]['per_seed'][0]['total_steps'] // report['pairs'][0]['per_seed'][0]['epochs']} steps",
             "", "| Model | final val AP | final val AP50 | epochs to baseline's final AP (ratio) | "
             "epochs to baseline's final AP50 (ratio) | step where class loss reaches baseline's final floor |",
             "|---|---|---|---|---|---|"]
    for pair in report["pairs"]:
        baseline, variant = pair["baseline"], pair["variant"]
        lines.append(f"| {baseline} | {spread(pair.get(f'{baseline}_final_AP'))} | "
                     f"{spread(pair.get(f'{baseline}_final_AP50'))} | (reference) | (reference) | (floor) |")
        reach = {key: ", ".join(str(e[f"{variant}_epochs_to_baseline_final_{key}"]) for e in pair["per_seed"])
                 for key in ("AP", "AP50")}
        cross = ", ".join(str(e["variant_class_loss_crossing_step"]) for e in pair["per_seed"])
        lines.append(f"| {variant} | {spread(pair.get(f'{variant}_final_AP'))} | {spread(pair.get(f'{variant}_final_AP50'))} | "
                     f"{reach['AP']} per seed ({spread(pair.get('epoch_ratio_AP'))}) | "
                     f"{reach['AP50']} per seed ({spread(pair.get('epoch_ratio_AP50'))}) | {cross} per seed |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few minutes: smaller data and schedule")
    parser.add_argument("--pairs", default="detr", help=f"comma list of pairs to train, of {sorted(PAIRS)}")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--ablation-seeds", default="0", help=f"seeds of the ablation pairs {ABLATIONS}")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"), help="JSON and PNGs")
    parser.add_argument("--work-dir", default="/tmp/detrx_convergence", help="per-run logs and checkpoints")
    parser.add_argument("--epoch-losses", action="store_true",
                        help="the report keeps each run's training losses as per-epoch means (the figures "
                             "still use every step): a file of a few hundred KB instead of several MB")
    parser.add_argument("--reuse", action="store_true",
                        help="read the runs already finished in --work-dir (same config) instead of training them")
    parser.add_argument("--run-one", nargs=3, metavar=("VARIANT", "SEED", "JSON"), help=argparse.SUPPRESS)
    opts, extra = parser.parse_known_args(argv)
    if opts.run_one:
        run_one(opts.run_one[0], int(opts.run_one[1]), [a for a in extra if a != "--"], opts.run_one[2])
        return
    seeds = [int(s) for s in opts.seeds.split(",")]
    pair_names = opts.pairs.split(",")
    if not pair_names or any(p not in PAIRS for p in pair_names):
        raise ValueError(f"--pairs must be a comma list of {sorted(PAIRS)}, got {opts.pairs!r}")
    pair_configs = {tuple(PAIR_CONFIG.get(p, [])) for p in pair_names}
    if len(pair_configs) > 1:
        raise ValueError(f"--pairs {opts.pairs}: these pairs train on different configs, run them separately")
    config = DEFAULT + list(pair_configs.pop()) + (QUICK if opts.quick else []) + extra
    # extra options change the config: such a run is labelled "custom", never "default"
    label = "quick" if opts.quick else ("custom" if extra else "default")
    name = {"quick": "convergence_quick", "custom": "convergence_custom", "default": "convergence"}[label]
    name += "" if pair_names == ["detr"] else "_" + "_".join(pair_names)
    out_dir = os.path.join(opts.work_dir, name)
    os.makedirs(opts.out, exist_ok=True)
    pairs = [PAIRS[p] for p in pair_names]
    ablation_seeds = [int(s) for s in opts.ablation_seeds.split(",")]
    pair_seeds = [ablation_seeds if p in ABLATIONS else seeds for p in pair_names]
    start = time.time()
    runs = list(dict.fromkeys((variant, seed) for pair, pseeds in zip(pairs, pair_seeds) for seed in pseeds
                              for variant in pair))
    results = launch_all(runs, config, out_dir, opts.jobs, opts.reuse)
    report = {"label": label, "config": config, "seeds": seeds, "ablation_seeds": ablation_seeds,
              "wall_s": time.time() - start, "torch": torch.__version__, "threads_per_run": 1, "pairs": []}
    window = max(5, len(results[(pairs[0][0], seeds[0])]["steps"]["loss_ce"]) // 50)
    for pair_name, (baseline, variant), pseeds in zip(pair_names, pairs, pair_seeds):
        summary = summarize_pair(results, baseline, variant, pseeds, window)
        plot_pair(results, baseline, variant, pseeds, summary, os.path.join(opts.out, f"{name}_{pair_name}"), window)
        report["pairs"].append(summary)
    report["runs"] = [{**r, "seed": s, "variant": v, **({"steps": epoch_means(r)} if opts.epoch_losses else {})}
                      for (v, s), r in results.items()]
    report["step_losses"] = "per-epoch means" if opts.epoch_losses else "every step"
    with open(os.path.join(opts.out, f"{name}.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(opts.out, f"{name}.md"), "w") as f:
        f.write(markdown_table(report))
    print(json.dumps({k: report[k] for k in ("label", "wall_s")}, indent=1))
    print(json.dumps(report["pairs"], indent=1))


if __name__ == "__main__":
    main()
