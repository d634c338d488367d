"""Compare the CPU kernels of detrx builds, or of the CPU levels inside one build.

    python benchmarks/cpu_levels.py --builds . /path/to/native/checkout [--rounds 5] [--dtype float32]
                                    [--threads N] [--quick] [--json PATH]
    python benchmarks/cpu_levels.py --levels          # every level of this build that this CPU runs

--builds: each folder holds a built detrx (e.g. this checkout, whose CPU kernels dispatch on the
CPU level, and a copy built with DETRX_NATIVE=1). Each round runs every build once, in a fresh
process (PYTHONPATH = its folder), in turn, so that a load drift on a shared machine hits all of
them alike; the report gives, per case, the median over rounds of each run's median time, each
build's ratio to the first one's, and the same ratio of the fastest calls (the minimum over all
rounds: on a busy machine the least disturbed figure). --levels: the same cases in one process,
switching the kernels between the levels this CPU supports (alternated within each measurement).

Cases: the encoder and decoder cases of attn.py (attn_inputs.py), realistic locations, in --dtype
(float32 by default), forward and forward+backward of detrx's op only.

--clock cpu (with --threads 1) times the CPU time of the calling thread instead of the wall clock:
on a machine shared with other jobs, time spent waiting for a core then does not count, and what
is left compares the builds' code (caches still suffer from the neighbours).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from attn_inputs import CASES, make_inputs
from common import (DTYPES, add_common_options, apply_common_options, describe_machine, format_table, machine_header,
                    time_interleaved, write_json)

HERE = os.path.dirname(os.path.abspath(__file__))
QUICK_CASES = ("decoder N=2 Lq=300",)


def calls(case, dtype):
    """{mode: fn} for one case: the forward, and forward+backward of sum(output * g)."""
    from detrx.ops import ms_deform_attn
    (value, shapes, starts, locations, weights), grad_output = make_inputs(case, "realistic", dtype, "cpu")
    leaves = [t.requires_grad_() for t in (value, locations, weights)]

    def forward():
        with torch.no_grad():
            return ms_deform_attn(value, shapes, starts, locations, weights)

    def forward_backward():
        output = ms_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2])
        return torch.autograd.grad(output, leaves, grad_output)
    return {"fwd": forward, "fwd+bwd": forward_backward}


def thread_time_samples(functions, min_run_time, min_samples):
    """{name: {"median_s", "times_s"}}: each call's CPU time on this thread, the functions
    called in turn until each has min_samples calls and min_run_time seconds."""
    times = {name: [] for name in functions}
    while any(len(t) < min_samples or sum(t) < min_run_time for t in times.values()):
        for name, (fn, _) in functions.items():
            start = time.thread_time()
            fn()
            times[name].append(time.thread_time() - start)
    return {name: {"median_s": statistics.median(t), "times_s": t} for name, t in times.items()}


def time_cases(levels, min_run_time, clock, dtype, quick):
    """{level: {"case|mode": {"median_s", "min_s"}}}, the levels alternated within each measurement;
    quick: the QUICK_CASES only."""
    from detrx import _C
    results = {level: {} for level in levels}
    for case in CASES:
        if quick and case.name not in QUICK_CASES:
            continue
        for mode, fn in calls(case, dtype).items():
            def at_level(level):
                def run():
                    if hasattr(_C, "_set_cpu_level"):  # builds from before the CPU levels have one kernel
                        _C._set_cpu_level(level)
                    return fn()
                return run
            for level in levels:
                at_level(level)()  # warm-up
            functions = {level: (at_level(level), None) for level in levels}
            if clock == "cpu":
                timings = thread_time_samples(functions, min_run_time, min_samples=5)
            else:
                timings = time_interleaved(functions, min_run_time, min_samples=3)
            for level, timing in timings.items():
                results[level][f"{case.name}|{mode}"] = {"median_s": timing["median_s"], "min_s": min(timing["times_s"])}
    return results


def worker(min_run_time, clock, dtype, quick):
    """One build's timings at its active level, as one JSON line."""
    import detrx
    info = detrx.build_info()
    level = info.get("cpu_level", "single build")
    timings = time_cases([level], min_run_time, clock, dtype, quick)[level]
    print(json.dumps({"cpu_level": level, "cpu_flags": info.get("cpu_flags", "?"), "timings": timings}))


def run_build(folder, args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.abspath(folder), HERE]))
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--min-run-time", str(args.min_run_time),
               "--clock", args.clock, "--threads", str(torch.get_num_threads()), "--dtype", args.dtype]
    command += ["--quick"] if args.quick else []
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=HERE)
    if result.returncode != 0:
        raise SystemExit(f"the run of the build in {folder} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(summary, names):
    """Rows of case, mode, each name's median ms, and each name's median and min ratio to the first."""
    rows, first = [], names[0]
    for key in summary[first]:
        case, mode = key.split("|")
        row = {"case": case, "mode": mode}
        for name in names:
            row[f"{name} ms"] = summary[name][key]["median_s"] * 1e3
            for stat in ("median", "min"):
                row[f"{name} / {first} {stat}"] = summary[name][key][f"{stat}_s"] / summary[first][key][f"{stat}_s"]
        rows.append(row)
    columns = [("case", "case", ""), ("mode", "mode", "")]
    columns += [(f"{name} ms", f"{name} ms", ".2f") for name in names]
    columns += [(f"{name} / {first} ({stat})", f"{name} / {first} {stat}", ".3f")
                for name in names[1:] for stat in ("median", "min")]
    return rows, format_table(rows, columns)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", nargs="+", metavar="FOLDER", help="folders of built detrx copies to compare")
    parser.add_argument("--levels", action="store_true", help="compare the CPU levels of this build")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of --builds (default 5)")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per measurement (default 0.5)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time (default), or the calling thread's CPU time (needs --threads 1)")
    add_common_options(parser, quick=f"the {', '.join(QUICK_CASES)} case only", devices=("cpu",),
                       dtypes=tuple(DTYPES), narrowed_because="it times the CPU kernels' levels")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _, dtype = apply_common_options(parser, args)
    if args.clock == "cpu" and torch.get_num_threads() != 1:
        parser.error("--clock cpu counts the calling thread only: add --threads 1")
    if args.worker:
        return worker(args.min_run_time, args.clock, dtype, args.quick)
    if bool(args.builds) == args.levels:
        parser.error("give either --builds FOLDER... or --levels")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    machine = describe_machine("cpu")
    print(machine_header(machine), flush=True)
    machine["dtype"] = args.dtype
    if args.levels:
        from detrx import _C
        names = list(_C.supported_cpu_levels())
        summary = time_cases(names, args.min_run_time, args.clock, dtype, args.quick)
        print(f"detrx CPU levels in one process ({machine['cpu_model']}, {machine['torch_threads']} threads, "
              f"{args.clock} clock), {args.dtype}, realistic locations; median ms, levels alternated")
        payload = {"machine": machine, "levels": names, "summary": summary}
    else:
        names = [f"build {i + 1}" for i in range(len(args.builds))]
        runs = {name: [] for name in names}
        for round_index in range(args.rounds):
            for name, folder in zip(names, args.builds):
                runs[name].append(run_build(folder, args))
            print(f"round {round_index + 1} of {args.rounds} done", file=sys.stderr)
        summary = {name: {key: {"median_s": statistics.median(run["timings"][key]["median_s"] for run in runs[name]),
                                "min_s": min(run["timings"][key]["min_s"] for run in runs[name])}
                          for key in runs[name][0]["timings"]} for name in names}
        print(f"detrx builds in alternating processes ({machine['cpu_model']}, {machine['torch_threads']} threads, "
              f"{args.clock} clock, {args.rounds} rounds), {args.dtype}, realistic locations; median over rounds of each run's median ms")
        for name, folder in zip(names, args.builds):
            first = runs[name][0]
            print(f"  {name}: {os.path.abspath(folder)}, CPU level {first['cpu_level']} ({first['cpu_flags']})")
        payload = {"machine": machine, "builds": dict(zip(names, args.builds)), "runs": runs, "summary": summary}
    rows, text = table(summary, names)
    print(text)
    if args.json:
        write_json(args.json, dict(payload, rows=rows))


if __name__ == "__main__":
    main()
