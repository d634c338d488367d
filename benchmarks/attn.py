"""Benchmark detrx's compiled multi-scale deformable attention against the grid_sample reference.

    python benchmarks/attn.py [--device cpu|cuda] [--dtype float32|float16|bfloat16|float64] [--threads N]
                              [--quick] [--json PATH]

For each standard Deformable DETR case (attn_inputs.py) and location kind, both implementations
run forward and forward+backward, timed in alternating rounds so that load drifts on a shared
machine hit both alike (the backward of sum(output * g) for a fixed random g, with
respect to value, sampling_locations and attention_weights). Reported: median time and IQR,
speedup over the reference, peak memory above the inputs (memory.py; on the CPU measured first, in
a child process running each call once), and errors against a float64 ground truth. Then the
encoder N=2 forward against this machine's roofline (limits.py).

Ground truth: the compiled op in float64 on the same (rounded) inputs; it is itself checked
against the float64 reference on the decoder cases (truth_check), and the reference's own error
column cross-checks it on every case.
"""
import argparse
import json
import subprocess
import sys
import time

import torch

import detrx
from attn_inputs import CASES, LEVELS, compulsory_bytes, make_inputs
from common import (DTYPES, add_common_options, apply_common_options, describe_machine, format_table, load_average,
                    machine_header, median_iqr_ms, run_conditions, time_interleaved, write_json)
from detrx.ops import ms_deform_attn, ms_deform_attn_reference
from limits import copy_bandwidth, gemm_multiply_adds, roofline
from memory import check_cpu_peak_method, cpu_peak_supported, peak_memory, prepare_cpu_process

IMPLEMENTATIONS = {"reference": ms_deform_attn_reference, "detrx": ms_deform_attn}
# The targets for a 2-core CPU: minimum speedups, and detrx's forward peak memory as a maximum
# fraction of the reference's.
TARGETS = {
    ("encoder N=2", "realistic"): {"fwd": 25.0, "fwd+bwd": 12.0, "memory": 0.10},
    ("decoder N=2 Lq=300", "realistic"): {"fwd": 40.0, "fwd+bwd": 10.0},
}
ROOFLINE_CASE = ("encoder N=2", "realistic")
MiB = 2**20


def plan(quick, device):
    """(case, location kind) pairs to run, and the timing budget per measurement (GPU calls take
    milliseconds, so a third of the CPU's time still gives hundreds of samples)."""
    if quick:
        return [("decoder N=2 Lq=300", "realistic"), ("decoder N=2 Lq=300", "uniform")], \
            {"min_run_time": 0.2, "min_samples": 2}
    runs = [(case.name, "realistic") for case in CASES]
    runs += [("encoder N=1", "uniform"), ("decoder N=2 Lq=300", "uniform")]
    return runs, {"min_run_time": 1.0 if device.type == "cpu" else 0.3, "min_samples": 3}


def forward(op, inputs):
    return lambda: (op(*inputs),)


def forward_backward(op, inputs, grad_output):
    """A call that returns (output, grad_value, grad_sampling_locations, grad_attention_weights)."""
    value, spatial_shapes, level_start_index, locations, weights = inputs
    leaves = [t.detach().requires_grad_() for t in (value, locations, weights)]

    def run():
        output = op(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])  # [N, Lq, M * D]
        return (output.detach(),) + torch.autograd.grad(output, leaves, grad_output)
    return run


def away_from_creases(locations, tolerance=1e-4):
    """[N, Lq, M, L, P, 2] bool: the pixel coordinate (loc * size - 0.5) is not within `tolerance`
    pixels of an integer. On such a crease bilinear sampling has no derivative along that axis:
    a float32 and a float64 computation may round to opposite sides and return the two different
    one-sided gradients, an O(1) difference that says nothing about accuracy."""
    size = torch.tensor(LEVELS, dtype=torch.float64, device=locations.device).flip(-1)  # [L, 2] (W, H)
    pixel = locations.double() * size[:, None, :] - 0.5
    return (pixel - pixel.round()).abs() > tolerance


def errors(results, truth, truth_locations):
    """Max abs error of the output; for the gradients, the largest of each one's max error relative
    to its largest magnitude, sampling-location gradients on pixel creases left out (and counted)."""
    report = {"output_max_abs_error": (results[0].double() - truth[0]).abs().max().item()}
    if len(results) > 1:
        keep = away_from_creases(truth_locations)
        relative = []
        for index, (got, want) in enumerate(zip(results[1:], truth[1:])):
            difference = (got.double() - want).abs()
            if index == 1:  # grad_sampling_locations
                difference = difference * keep
            relative.append((difference.max() / want.abs().max()).item())
        report["grad_max_rel_error"] = max(relative)
        report["grad_rel_errors_value_locations_weights"] = relative
        report["location_grads_on_creases"] = int((~keep).sum())
    return report


def ground_truth(case, inputs, grad_output):
    """float64 output and gradients from the compiled op; on small cases also checked against the
    float64 reference (the largest relative difference, which should be ~1e-15)."""
    inputs64 = [t.double() if t.is_floating_point() else t for t in inputs]
    truth = forward_backward(ms_deform_attn, inputs64, grad_output.double())()
    check = None
    if case.role == "decoder":
        reference = forward_backward(ms_deform_attn_reference, inputs64, grad_output.double())()
        check = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(truth, reference))
    return truth, check


def calls(case, kind, dtype, device):
    """(inputs, grad_output, {(impl, mode): fn}) of one (case, location kind)."""
    inputs, grad_output = make_inputs(case, kind, dtype, device)
    fns = {}
    for mode in ("fwd", "fwd+bwd"):
        for name, op in IMPLEMENTATIONS.items():
            fns[name, mode] = forward(op, inputs) if mode == "fwd" else forward_backward(op, inputs, grad_output)
    return inputs, grad_output, fns


def cpu_peaks_in_child(args):
    """{"case|kind|impl|mode": peak bytes} from a child process (`--peak-memory-child`), or {} where
    the resident-memory peak cannot be read (not Linux)."""
    if not cpu_peak_supported():
        print("peak memory: not measured (needs Linux's /proc/self/clear_refs)", file=sys.stderr)
        return {}
    command = [sys.executable, __file__, "--device", "cpu", "--dtype", args.dtype,
               "--threads", str(torch.get_num_threads()), "--peak-memory-child"]
    child = subprocess.run(command + (["--quick"] if args.quick else []), stdout=subprocess.PIPE, text=True)
    if child.returncode != 0:
        raise SystemExit("the peak-memory child process failed (its error is above)")
    return json.loads(child.stdout.strip().splitlines()[-1])


def peak_memory_child(runs, dtype):
    """The child process: each call of the plan once, its resident-memory peak; one JSON line."""
    prepare_cpu_process()
    check_cpu_peak_method()
    cases = {case.name: case for case in CASES}
    peaks, warmed_up = {}, False
    for case_name, kind in runs:
        print(f"  {case_name:>20} {kind:>9} peak memory", file=sys.stderr, flush=True)
        _, _, fns = calls(cases[case_name], kind, dtype, "cpu")
        if not warmed_up:  # one-time allocations (thread pools, lazy initialisation) out of the figures
            for fn in fns.values():
                fn()
            warmed_up = True
        for (name, mode), fn in fns.items():
            _, peaks[f"{case_name}|{kind}|{name}|{mode}"] = peak_memory(fn, "cpu")
    print(json.dumps(peaks))


def measure(case, kind, dtype, device, budget, cpu_peaks):
    """All figures of one (case, location kind): one row per implementation. cpu_peaks: the child
    process's figures (CPU); on CUDA the peak is measured here, on the warm-up call."""
    inputs, grad_output, fns = calls(case, kind, dtype, device)
    truth, truth_check = ground_truth(case, inputs, grad_output)
    rows = {name: {"case": case.name, "locations": kind, "impl": name, "truth_check": truth_check}
            for name in IMPLEMENTATIONS}
    for mode in ("fwd", "fwd+bwd"):
        functions = {}
        for name in IMPLEMENTATIONS:
            print(f"  {case.name:>20} {kind:>9} {name:>9} {mode:>7}", file=sys.stderr, flush=True)
            fn = fns[name, mode]
            start = time.perf_counter()
            if device.type == "cuda":
                results, rows[name][f"{mode}_peak_bytes"] = peak_memory(fn, device)  # also the warm-up call
            else:
                results = fn()  # the warm-up call
                rows[name][f"{mode}_peak_bytes"] = cpu_peaks.get(f"{case.name}|{kind}|{name}|{mode}")
            functions[name] = (fn, time.perf_counter() - start)
            rows[name].update({f"{mode}_{key}": value for key, value in errors(results, truth, inputs[3]).items()})
            del results
        for name, timing in time_interleaved(functions, **budget).items():
            rows[name].update({f"{mode}_{key}": value for key, value in timing.items()})
    return list(rows.values())


def memory_ratio(ours, reference):
    return None if ours is None or reference is None else ours / max(reference, 1)


def ratios(rows):
    """Speedups and memory ratios of detrx over the reference, one row per (case, locations)."""
    by_key = {(row["case"], row["locations"], row["impl"]): row for row in rows}
    summary = []
    for case, kind, impl in by_key:
        if impl != "detrx":
            continue
        ours, reference = by_key[case, kind, "detrx"], by_key[case, kind, "reference"]
        target = TARGETS.get((case, kind), {})
        summary.append({
            "case": case, "locations": kind,
            "fwd_speedup": reference["fwd_median_s"] / ours["fwd_median_s"],
            "fwd_target": target.get("fwd"),
            "fwd+bwd_speedup": reference["fwd+bwd_median_s"] / ours["fwd+bwd_median_s"],
            "fwd+bwd_target": target.get("fwd+bwd"),
            "fwd_memory_ratio": memory_ratio(ours["fwd_peak_bytes"], reference["fwd_peak_bytes"]),
            "fwd+bwd_memory_ratio": memory_ratio(ours["fwd+bwd_peak_bytes"], reference["fwd+bwd_peak_bytes"]),
            "memory_target": target.get("memory"),
        })
    return summary


def print_report(rows, summary, limits, machine):
    rows = [dict(row) for row in rows]  # display columns added to copies, not to the JSON rows
    for row in rows:
        for mode in ("fwd", "fwd+bwd"):
            row[f"{mode}_ms"] = median_iqr_ms(row, mode, 2)
            peak = row[f"{mode}_peak_bytes"]
            row[f"{mode}_peak_mib"] = None if peak is None else peak / MiB
    print(f"\nms_deform_attn on {machine['device']} ({machine.get('gpu_name', machine['cpu_model'])}, "
          f"{machine['torch_threads']} threads), {machine['dtype']}; levels (100,167),(50,84),(25,42),(13,21), "
          "M=8 D=32 P=4\ntimes: median (IQR) in ms; peak memory above the inputs in MiB; errors against float64\n"
          f"{run_conditions(machine)}\n")
    print(format_table(rows, [
        ("case", "case", ""), ("locations", "locations", ""), ("impl", "impl", ""),
        ("fwd ms (IQR)", "fwd_ms", ""), ("fwd+bwd ms (IQR)", "fwd+bwd_ms", ""),
        ("fwd MiB", "fwd_peak_mib", ".1f"), ("fwd+bwd MiB", "fwd+bwd_peak_mib", ".1f"),
        ("out abs err", "fwd_output_max_abs_error", ".1e"), ("grad rel err*", "fwd+bwd_grad_max_rel_error", ".1e"),
    ]))
    creases = max(row.get("fwd+bwd_location_grads_on_creases", 0) for row in rows)
    print("* the largest over the three gradients of max |error| / max |gradient|; sampling-location "
          f"gradients within 1e-4 px of a pixel crease (up to {creases} per case) are left out: there "
          "the derivative is one-sided and float32 may take the other side")
    checks = [row["truth_check"] for row in rows if row["truth_check"] is not None]
    if checks:
        print(f"float64 truth = the compiled op in float64; on the decoder cases it agrees with the float64 "
              f"reference to {max(checks):.1e} (max relative difference)")
    print("\ndetrx vs reference (targets for a 2-core CPU: speedups are minima, memory ratio a maximum)\n")
    print(format_table(summary, [
        ("case", "case", ""), ("locations", "locations", ""),
        ("fwd x", "fwd_speedup", ".1f"), ("target", "fwd_target", ".0f"),
        ("fwd+bwd x", "fwd+bwd_speedup", ".1f"), ("target", "fwd+bwd_target", ".0f"),
        ("fwd mem", "fwd_memory_ratio", ".1%"), ("target", "memory_target", ".0%"),
        ("fwd+bwd mem", "fwd+bwd_memory_ratio", ".1%"),
    ]))
    if limits.get("roofline"):
        print(f"\nroofline, {ROOFLINE_CASE[0]} forward, {ROOFLINE_CASE[1]} locations: copy bandwidth "
              f"{limits['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, float32 GEMM "
              f"{2 * limits['gemm_multiply_adds_per_s'] / 1e9:.0f} GFLOP/s")
        for impl, line in limits["roofline"].items():
            print(f"  {impl:>9}: {line['measured_s'] * 1e3:8.1f} ms; bandwidth bound "
                  f"{line['bandwidth_bound_s'] * 1e3:.1f} ms ({line['compulsory_bytes'] / 1e6:.0f} MB) -> "
                  f"{line['fraction_of_bandwidth_bound']:.1%}; compute bound {line['compute_bound_s'] * 1e3:.1f} ms "
                  f"({line['multiply_adds'] / 1e9:.2f} G multiply-adds) -> {line['fraction_of_compute_bound']:.1%}")


def roofline_lines(rows, device, dtype):
    """The ROOFLINE_CASE forward of each implementation against the measured machine limits."""
    limits = {"copy_bandwidth_bytes_per_s": copy_bandwidth(device),
              "gemm_multiply_adds_per_s": gemm_multiply_adds(device), "roofline": {}}
    case = next(case for case in CASES if case.name == ROOFLINE_CASE[0])
    inputs, _ = make_inputs(case, ROOFLINE_CASE[1], dtype, device)
    for row in rows:
        if (row["case"], row["locations"]) == ROOFLINE_CASE:
            limits["roofline"][row["impl"]] = roofline(
                row["fwd_median_s"], compulsory_bytes(inputs), case.multiply_adds,
                limits["copy_bandwidth_bytes_per_s"], limits["gemm_multiply_adds_per_s"])
    return limits


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser, quick="the decoder Lq=300 case only, short timings", dtypes=tuple(DTYPES),
                       default_device="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device, dtype = apply_common_options(parser, args)
    if device.type == "cuda" and detrx.is_compiled() and not detrx.build_info()["cuda"]:
        parser.error("detrx was built without its CUDA kernels; rebuild on a machine with a GPU or with FORCE_CUDA=1")
    runs, budget = plan(args.quick, device)
    if args.peak_memory_child:
        return peak_memory_child(runs, dtype)
    cpu_peaks = cpu_peaks_in_child(args) if device.type == "cpu" else {}
    if not detrx.is_compiled():
        print("warning: detrx is not compiled; 'detrx' rows time the reference", file=sys.stderr)

    machine = describe_machine(device)
    print(machine_header(machine), flush=True)
    machine.update(dtype=args.dtype, build_info=detrx.build_info())
    start = time.perf_counter()
    cases = {case.name: case for case in CASES}
    rows = []
    for case_name, kind in runs:
        rows += measure(cases[case_name], kind, dtype, device, budget, cpu_peaks)
    summary = ratios(rows)
    limits = roofline_lines(rows, device, dtype) if ROOFLINE_CASE in runs else {}
    machine["load_average_1min_at_end"] = load_average()
    machine["benchmark_seconds"] = time.perf_counter() - start
    print_report(rows, summary, limits, machine)
    if args.json:
        write_json(args.json, {"machine": machine, "budget": budget, "rows": rows, "ratios": summary,
                               "limits": limits})


if __name__ == "__main__":
    main()
