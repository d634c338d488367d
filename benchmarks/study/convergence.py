"""How fast does each variant converge next to its baseline? The pairs of study.config trained with
identical hyperparameters and seeds on the synthetic shapes set (run.py names the study and runs it).

Each (variant, seed) trains in its own process (`jobs` at a time, one thread each) through
`detrx.train.train`; a variant shared by two pairs trains once. A run's full records stay in the
work folder, <work-dir>/<name>/runs/:
    <variant>_seed<seed>.json              per-step losses and per-epoch val mAP
    <variant>_seed<seed>/predictions.npz   every val image's per-query predictions after every epoch
                                           (predictions.py; query_specialisation.py and near_misses.py read them)
The report that results keep holds the config, each pair's summary and each run's losses as
per-epoch means: what the table and the figures (curves.py) need.
The losses compared are the Hungarian (matching-query) terms only: DN-DETR's extra DN terms are
left out so that both models are measured on the same quantity.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common, study
from detrx.engine.config import parse_args  # noqa: E402
from detrx.train import train  # noqa: E402
from study.config import ABLATIONS, PAIR_CONFIG, PAIRS, QUICK, STUDY_CONFIG, VARIANTS  # noqa: E402
from study.predictions import PredictionRecorder  # noqa: E402


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
            cmd = [sys.executable, __file__, variant, str(seed), path, *extra]
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


def study_name(label, pair_names):
    """convergence[_quick|_custom], plus the pairs unless only detr."""
    name = {"quick": "convergence_quick", "custom": "convergence_custom", "default": "convergence"}[label]
    return name + ("" if pair_names == ["detr"] else "_" + "_".join(pair_names))


def run_study(pair_names, seeds, ablation_seeds, extra, quick, jobs, work_dir, reuse=False):
    """Trains the named pairs -> (study name, report, the runs folder holding every run's full records)."""
    if not pair_names or any(p not in PAIRS for p in pair_names):
        raise ValueError(f"the pairs must be a comma list of {sorted(PAIRS)}, got {pair_names!r}")
    pair_configs = {tuple(PAIR_CONFIG.get(p, [])) for p in pair_names}
    if len(pair_configs) > 1:
        raise ValueError(f"pairs {pair_names}: these pairs train on different configs, run them separately")
    config = STUDY_CONFIG + list(pair_configs.pop()) + (QUICK if quick else []) + extra
    # extra options change the config: such a run is labelled "custom", never "default"
    label = "quick" if quick else ("custom" if extra else "default")
    name = study_name(label, pair_names)
    pairs = [PAIRS[p] for p in pair_names]
    pair_seeds = [ablation_seeds if p in ABLATIONS else seeds for p in pair_names]
    start = time.time()
    runs = list(dict.fromkeys((variant, seed) for pair, pseeds in zip(pairs, pair_seeds) for seed in pseeds
                              for variant in pair))
    study_dir = os.path.join(work_dir, name)
    results = launch_all(runs, config, study_dir, jobs, reuse)
    report = {"label": label, "config": config, "seeds": seeds, "ablation_seeds": ablation_seeds,
              "wall_s": time.time() - start, "torch": torch.__version__, "threads_per_run": 1, "pairs": []}
    window = max(5, len(results[(pairs[0][0], seeds[0])]["steps"]["loss_ce"]) // 50)
    for (baseline, variant), pseeds in zip(pairs, pair_seeds):
        report["pairs"].append(summarize_pair(results, baseline, variant, pseeds, window))
    report["runs"] = [{**r, "seed": s, "variant": v, "steps": epoch_means(r)} for (v, s), r in results.items()]
    report["step_losses"] = "per-epoch means"
    return name, report, os.path.join(study_dir, "runs")


if __name__ == "__main__":  # one run, in the subprocess launch_all starts: VARIANT SEED JSON [train options]
    run_one(sys.argv[1], int(sys.argv[2]), sys.argv[4:], sys.argv[3])
