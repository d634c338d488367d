"""Convergence study: vanilla DETR vs DN-DETR (and Deformable DETR vs DN-Deformable-DETR with
--pairs detr,deformable), identical hyperparameters and seeds, on the synthetic shapes set.

    python benchmarks/convergence.py            # default run (sized for <= 30 min on 2 CPU cores)
    python benchmarks/convergence.py --quick    # a few minutes; a smoke run, not a result
    python benchmarks/convergence.py --epochs 12   # any extra train option: a "custom" run

Each (model, seed) trains in its own process (--jobs at a time, one thread each) through
`detrx.train.train`. Writes to --out:
    convergence[_quick|_custom].json         config, per-step losses, per-epoch val mAP, query centres, summary
    convergence[_quick|_custom]_<model>_losses.png   total / class / L1 / GIoU training losses, log y, side by side
    convergence[_quick|_custom]_<model>_map.png      val AP and AP50 per epoch
    convergence[_quick|_custom]_<model>_queries.png  mean predicted (cx, cy) of every query over the val set,
                                     early vs late epoch, vanilla vs DN
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

from detrx.data import build_dataset, collate_fn
from detrx.engine.config import parse_args
from detrx.train import train

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
QUICK = ["--num-train", "200", "--num-val", "50", "--epochs", "3"]
PAIRS = {"detr": ("detr", "dn_detr"), "deformable": ("deformable_detr", "dn_deformable_detr")}
QUERY_SAMPLES = 64  # val images averaged for the query-centre scatter


def query_centres(model, args):
    """Mean predicted (cx, cy) of each matching query over the first QUERY_SAMPLES val images."""
    dataset = build_dataset("val", args)
    images, mask, _ = collate_fn([dataset[i] for i in range(min(QUERY_SAMPLES, len(dataset)))])
    model.eval()
    with torch.no_grad():
        boxes = model(images, mask)["pred_boxes"]  # [B, N, 4]
    return boxes[..., :2].mean(0).tolist()  # [N, 2]


def run_one(model_name, seed, extra, out_json):
    """Trains one (model, seed) and writes its steps, evals and query centres to out_json."""
    torch.set_num_threads(1)
    run_dir = out_json[:-len(".json")]
    args = parse_args(["--model", model_name, "--seed", str(seed), "--output-dir", run_dir, *extra])
    if os.path.exists(os.path.join(run_dir, "log.jsonl")):
        os.remove(os.path.join(run_dir, "log.jsonl"))
    centres = {}
    start = time.time()
    evals = train(args, lambda epoch, model, record: centres.__setitem__(epoch, query_centres(model, args)))
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    keys = ("loss_ce", "loss_bbox", "loss_giou", "matched_total")
    steps = {k: [r[k] for r in log if r["type"] == "train"] for k in keys}
    result = {"model": model_name, "seed": seed, "wall_s": time.time() - start, "steps": steps,
              "steps_per_epoch": len(steps["loss_ce"]) // args.epochs, "evals": evals, "query_centres": centres}
    with open(out_json, "w") as f:
        json.dump(result, f)


def launch_all(runs, extra, out_dir, jobs):
    """Runs every (model, seed) as a subprocess of this script, `jobs` at a time."""
    pending, active, paths = list(runs), [], {}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    while pending or active:
        while pending and len(active) < jobs:
            model_name, seed = pending.pop(0)
            path = os.path.join(out_dir, "runs", f"{model_name}_seed{seed}.json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            cmd = [sys.executable, __file__, "--run-one", model_name, str(seed), path, "--", *extra]
            active.append((subprocess.Popen(cmd, env=env), model_name, seed))
            paths[(model_name, seed)] = path
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


def summarize_pair(results, vanilla, dn, seeds, window):
    """Final mAPs (mean and spread over seeds), epochs for DN to reach vanilla's final mAP, and the
    step where DN's class loss first reaches vanilla's final class-loss floor."""
    summary = {"vanilla": vanilla, "dn": dn, "per_seed": []}
    for seed in seeds:
        v, d = results[(vanilla, seed)], results[(dn, seed)]
        entry = {"seed": seed, "epochs": len(v["evals"])}
        for key in ("AP", "AP50"):
            entry[f"{vanilla}_final_{key}"] = v["evals"][-1][key]
            entry[f"{dn}_final_{key}"] = d["evals"][-1][key]
            reach = first_epoch_reaching(d["evals"], key, v["evals"][-1][key])
            entry[f"{dn}_epochs_to_vanilla_final_{key}"] = reach
            entry[f"epoch_ratio_{key}"] = None if reach is None else reach / len(v["evals"])
        v_ce, d_ce = smooth(v["steps"]["loss_ce"], window), smooth(d["steps"]["loss_ce"], window)
        floor = float(np.mean(v_ce[-max(1, len(v_ce) // 20):]))  # the last 5% of vanilla's steps
        crossing = np.nonzero(d_ce <= floor)[0]
        entry["vanilla_class_loss_floor"] = floor
        entry["dn_class_loss_crossing_step"] = int(crossing[0]) if len(crossing) else None
        entry["total_steps"] = len(v_ce)
        summary["per_seed"].append(entry)
    for key in [k for k in summary["per_seed"][0] if k.startswith(("epoch_ratio", f"{vanilla}_final", f"{dn}_final"))]:
        values = [e[key] for e in summary["per_seed"] if e[key] is not None]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "min": float(np.min(values)),
                            "max": float(np.max(values)), "n": len(values)}
    return summary


def plot_pair(results, vanilla, dn, seeds, summary, prefix, window):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {vanilla: "tab:blue", dn: "tab:orange"}
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    panels = [("matched_total", "total (matching terms, all layers)"), ("loss_ce", "class (CE)"),
              ("loss_bbox", "L1"), ("loss_giou", "GIoU")]
    for ax, (key, title) in zip(axes, panels):
        for name in (vanilla, dn):
            for k, seed in enumerate(seeds):
                ax.plot(smooth(results[(name, seed)]["steps"][key], window), color=colours[name], lw=1.2,
                        alpha=1.0 if k == 0 else 0.5, label=f"{name} seed {seed}")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
    first = summary["per_seed"][0]
    axes[1].axhline(first["vanilla_class_loss_floor"], color="gray", ls=":", label=f"{vanilla} final floor")
    if first["dn_class_loss_crossing_step"] is not None:
        axes[1].axvline(first["dn_class_loss_crossing_step"], color="tab:red", ls="--",
                        label=f"{dn} reaches it: step {first['dn_class_loss_crossing_step']}")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{vanilla} vs {dn}: training losses (moving average over {window} steps), log y")
    fig.tight_layout()
    fig.savefig(f"{prefix}_losses.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("AP", "AP50")):
        for name in (vanilla, dn):
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

    seed = seeds[0]
    epochs = sorted(int(e) for e in results[(vanilla, seed)]["query_centres"])
    early, late = epochs[0], epochs[-1]
    fig, axes = plt.subplots(2, 2, figsize=(8, 8))
    for row, name in enumerate((vanilla, dn)):
        for col, epoch in enumerate((early, late)):
            centres = np.asarray(results[(name, seed)]["query_centres"][str(epoch)])
            ax = axes[row, col]
            ax.scatter(centres[:, 0], centres[:, 1], c=np.arange(len(centres)), cmap="tab10", s=60)
            for q, (x, y) in enumerate(centres):
                ax.annotate(str(q), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlim(0, 1)
            ax.set_ylim(1, 0)
            ax.set_title(f"{name}, epoch {epoch + 1}")
    fig.suptitle(f"mean predicted (cx, cy) per query over {QUERY_SAMPLES} val images (seed {seed})")
    fig.tight_layout()
    fig.savefig(f"{prefix}_queries.png", dpi=110)
    plt.close(fig)


def markdown_table(report):
    """The measured summary as a markdown table (one row per model, mean [min, max] over seeds)."""
    def spread(stat):
        return "n/a" if stat is None else f"{stat['mean']:.3f} [{stat['min']:.3f}, {stat['max']:.3f}]"

    lines = [f"{report['label']} run: seeds {report['seeds']}, {report['pairs'][0]['per_seed'][0]['epochs']} epochs "
             f"of {report['pairs'][0]['per_seed'][0]['total_steps'] // report['pairs'][0]['per_seed'][0]['epochs']} steps",
             "", "| Model | final val AP | final val AP50 | epochs to vanilla's final AP (ratio) | "
             "epochs to vanilla's final AP50 (ratio) | step where class loss reaches vanilla's final floor |",
             "|---|---|---|---|---|---|"]
    for pair in report["pairs"]:
        vanilla, dn = pair["vanilla"], pair["dn"]
        lines.append(f"| {vanilla} | {spread(pair.get(f'{vanilla}_final_AP'))} | "
                     f"{spread(pair.get(f'{vanilla}_final_AP50'))} | (reference) | (reference) | (floor) |")
        reach = {key: ", ".join(str(e[f"{dn}_epochs_to_vanilla_final_{key}"]) for e in pair["per_seed"])
                 for key in ("AP", "AP50")}
        cross = ", ".join(str(e["dn_class_loss_crossing_step"]) for e in pair["per_seed"])
        lines.append(f"| {dn} | {spread(pair.get(f'{dn}_final_AP'))} | {spread(pair.get(f'{dn}_final_AP50'))} | "
                     f"{reach['AP']} per seed ({spread(pair.get('epoch_ratio_AP'))}) | "
                     f"{reach['AP50']} per seed ({spread(pair.get('epoch_ratio_AP50'))}) | {cross} per seed |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few minutes: smaller data and schedule")
    parser.add_argument("--pairs", default="detr", help="comma list of pairs to train: detr (DETR vs DN-DETR), "
                        "deformable (Deformable DETR vs DN-Deformable-DETR)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"), help="JSON and PNGs")
    parser.add_argument("--work-dir", default="/tmp/detrx_convergence", help="per-run logs and checkpoints")
    parser.add_argument("--run-one", nargs=3, metavar=("MODEL", "SEED", "JSON"), help=argparse.SUPPRESS)
    opts, extra = parser.parse_known_args(argv)
    if opts.run_one:
        run_one(opts.run_one[0], int(opts.run_one[1]), [a for a in extra if a != "--"], opts.run_one[2])
        return
    seeds = [int(s) for s in opts.seeds.split(",")]
    config = DEFAULT + (QUICK if opts.quick else []) + extra
    # extra options change the config: such a run is labelled "custom", never "default"
    label = "quick" if opts.quick else ("custom" if extra else "default")
    pair_names = opts.pairs.split(",")
    if not pair_names or any(p not in PAIRS for p in pair_names):
        raise ValueError(f"--pairs must be a comma list of {sorted(PAIRS)}, got {opts.pairs!r}")
    name = {"quick": "convergence_quick", "custom": "convergence_custom", "default": "convergence"}[label]
    name += "" if pair_names == ["detr"] else "_" + "_".join(pair_names)
    out_dir = os.path.join(opts.work_dir, name)
    os.makedirs(opts.out, exist_ok=True)
    pairs = [PAIRS[p] for p in pair_names]
    start = time.time()
    results = launch_all([(m, s) for s in seeds for pair in pairs for m in pair], config, out_dir, opts.jobs)
    report = {"label": label, "config": config, "seeds": seeds,
              "wall_s": time.time() - start, "torch": torch.__version__, "threads_per_run": 1, "pairs": []}
    window = max(5, len(results[(pairs[0][0], seeds[0])]["steps"]["loss_ce"]) // 50)
    for vanilla, dn in pairs:
        summary = summarize_pair(results, vanilla, dn, seeds, window)
        plot_pair(results, vanilla, dn, seeds, summary, os.path.join(opts.out, f"{name}_{vanilla}"), window)
        report["pairs"].append(summary)
    report["runs"] = [{**r, "seed": s, "model": m} for (m, s), r in results.items()]
    with open(os.path.join(opts.out, f"{name}.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(opts.out, f"{name}.md"), "w") as f:
        f.write(markdown_table(report))
    print(json.dumps({k: report[k] for k in ("label", "wall_s")}, indent=1))
    print(json.dumps(report["pairs"], indent=1))


if __name__ == "__main__":
    main()
