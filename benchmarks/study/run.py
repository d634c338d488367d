"""Runs a named study: trains its pairs of models (a baseline and a variant, identical
hyperparameters and seeds, the synthetic shapes set), writes the summary table and the figures,
then measures query specialisation and error types from the runs' recorded predictions.

    python benchmarks/study/run.py --pairs detr,contrastive,deformable_cross
    python benchmarks/study/run.py --quick          # a few minutes; a smoke run, not a result
    python benchmarks/study/run.py --epochs 12      # any extra train option: a "custom" run

The pairs (--pairs, comma list):
    detr              DETR vs DN-DETR (the default)
    deformable        Deformable DETR vs DN-Deformable-DETR
    contrastive       DN-DETR vs DN-DETR with DINO's contrastive (negative) DN queries
    deformable_cross  DETR vs DETR whose first decoder layer's cross-attention is deformable
    dn_deformable_cross  the same swap in DN-DETR
    dino              DN-Deformable-DETR vs DINO
    dino_no_mixed_selection, dino_no_look_forward_twice
                      DN-Deformable-DETR vs DINO without one of its changes (ablations: --ablation-seeds only)
The dino pairs train on fewer images per epoch (study.config.DINO_BUDGET; same epochs and lr drop)
so that a DINO run fits the CPU budget; the pairs of one invocation must share their config.

Writes to --out (name: convergence[_quick|_custom] plus the pairs unless only detr):
    <name>.json / .md                   config, per-pair summary, each run's per-epoch losses and val mAP
    <name>_<pair>_losses.png / _map.png the figures (curves.py redraws them from <name>.json)
    <name>/query_specialisation.*, <name>/near_misses.*   the analyses, over the variants run with every seed
Per-step logs, checkpoints and per-prediction records stay in --work-dir/<name>/runs.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: common, study
from study import near_misses, query_specialisation  # noqa: E402
from study.config import ABLATIONS, PAIRS  # noqa: E402
from study.convergence import markdown_table, run_study  # noqa: E402
from study.curves import plot_report  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def analyse(runs_dir, variants, seeds, out):
    """Query specialisation and error types of the given runs, into out."""
    common = ["--runs", runs_dir, "--variants", ",".join(variants), "--seeds", ",".join(map(str, seeds)), "--out", out]
    query_specialisation.main(common)
    near_misses.main(common)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="detr", help=f"comma list of pairs to train, of {sorted(PAIRS)}")
    parser.add_argument("--quick", action="store_true", help="a few minutes: smaller data and schedule")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--ablation-seeds", default="0", help=f"seeds of the ablation pairs {ABLATIONS}")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--out", default=RESULTS, help="report, table, figures and analyses")
    parser.add_argument("--work-dir", default="/tmp/detrx_convergence",
                        help="per-run logs, checkpoints and prediction records")
    parser.add_argument("--reuse", action="store_true",
                        help="read the runs already finished in --work-dir (same config) instead of training them")
    parser.add_argument("--no-analyses", action="store_true", help="train and summarise only")
    opts, extra = parser.parse_known_args(argv)
    pair_names = opts.pairs.split(",")
    if any(p not in PAIRS for p in pair_names):
        parser.error(f"--pairs must be a comma list of {sorted(PAIRS)}, got {opts.pairs!r}")
    seeds = [int(s) for s in opts.seeds.split(",")]
    name, report, runs_dir = run_study(pair_names, seeds, [int(s) for s in opts.ablation_seeds.split(",")],
                                       extra, opts.quick, opts.jobs, opts.work_dir, opts.reuse)
    os.makedirs(opts.out, exist_ok=True)
    prefix = os.path.join(opts.out, name)
    with open(prefix + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(prefix + ".md", "w") as f:
        f.write(markdown_table(report))
    plot_report(report, prefix)
    print(json.dumps({k: report[k] for k in ("label", "wall_s")}, indent=1))
    print(json.dumps(report["pairs"], indent=1))
    if not opts.no_analyses:
        variants = list(dict.fromkeys(v for p in pair_names if p not in ABLATIONS for v in PAIRS[p]))
        if variants:
            analyse(runs_dir, variants, seeds, prefix)


if __name__ == "__main__":
    main()
