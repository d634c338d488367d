"""Hand mutants of the C++/CUDA kernels: plant each realistic one-line bug, rebuild, run the op tests.

    python tests/mutation/kernel_mutants.py [--device cpu|cuda] [--only NAME,...] [--json PATH]

Python mutation tools do not reach csrc/, so the kernels' bugs are written here by hand: an index, a
bound, a weight, a sign, a missing reset, in both ops' CPU kernels, the headers they share with the
CUDA kernels, and the CUDA kernels. For each mutant the script replaces `before` by `after` in its
file (the text must occur exactly once), rebuilds in place (`setup.py build_ext --inplace`, only the
changed objects), runs the op tests with `-x`, and restores the file, also on error or Ctrl-C.

A mutant is "killed" when a test fails, "survived" when they all pass, "no build" when it does not
compile (a mistake in the mutant, not a kill). `--device cuda` runs the CUDA mutants with the CUDA op
tests (it needs a GPU and a CUDA build); `--device cpu` the others (a CPU-only build is enough:
DETRX_OPENVINO=0 DETRX_NATIVE=1 keep the rebuilds short). Run it in a scratch clone: it rewrites
csrc/ while it runs and leaves a rebuilt extension of the unmodified tree behind.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MSDA_TESTS = ["tests/test_ms_deform_attn_reference_match.py", "tests/test_ms_deform_attn_autograd.py",
              "tests/test_ms_deform_attn_property.py", "tests/test_ms_deform_attn_creases.py",
              "tests/test_ms_deform_attn_layouts.py", "tests/test_ms_deform_attn_mixed_dtype.py",
              "tests/test_ms_deform_attn_host_shapes.py", "tests/test_ms_deform_attn_module.py"]
DN_TESTS = ["tests/test_dn_queries.py", "tests/test_dn_queries_exact.py", "tests/test_dn_min_box_size.py",
            "tests/test_dn_targets.py"]
CUDA_MSDA_TESTS = MSDA_TESTS + ["tests/test_ms_deform_attn_cuda_vs_cpu.py", "tests/test_ms_deform_attn_cuda_sync.py"]

TAPS = "csrc/ms_deform_attn/cpu_query_taps.h"
KERNEL = "csrc/ms_deform_attn/ms_deform_attn_cpu_kernel.h"
BILINEAR = "csrc/ms_deform_attn/bilinear_sampling.h"
NOISE = "csrc/dn_queries/dn_noise.h"
MSDA_CUDA = "csrc/ms_deform_attn/ms_deform_attn_cuda.cu"


@dataclass
class Mutant:
    name: str
    device: str  # "cpu": reached by the CPU kernels (shared headers included); "cuda": only by the CUDA kernels
    path: str
    before: str
    after: str
    bug: str  # what a person would have got wrong


MUTANTS = [
    Mutant("taps_right_bound", "cpu", TAPS, "in_x1 = (x0 + one) < width", "in_x1 = (x0 + one) <= width",
           "off-by-one bound: the right corner column is read one pixel past the map's edge"),
    Mutant("taps_corner_order", "cpu", TAPS, "{top_left, top_left + 1, top_left + width_i, top_left + width_i + 1}",
           "{top_left, top_left + width_i, top_left + 1, top_left + width_i + 1}",
           "top-right and bottom-left rows swapped"),
    Mutant("taps_level_index", "cpu", TAPS, "const int64_t l = (i / sz.points) % sz.levels;",
           "const int64_t l = (i / sz.levels) % sz.points;", "points and levels axes confused"),
    Mutant("taps_corner_weight", "cpu", TAPS, "{hy * hx, hy * fx, fy * hx, fy * fx}",
           "{hy * hx, fy * hx, hy * fx, fy * fx}", "top-right and bottom-left weights swapped"),
    Mutant("taps_half_pixel", "cpu", TAPS, "grid + one, size, simd::broadcast(acc_t(-1))",
           "grid + one, size, simd::broadcast(acc_t(0))", "align_corners mix-up: no half-pixel shift"),
    Mutant("taps_touches_edge", "cpu", TAPS, "(x >= minus_one) & (x < width)", "(x >= zero) & (x < width)",
           "points within a pixel left of the map sample nothing"),
    Mutant("kernel_batch_index", "cpu", KERNEL, "value + (row / sz.queries) * sz.values * row_stride",
           "value + (row % sz.queries) * sz.values * row_stride", "batch index taken from the query index"),
    Mutant("kernel_corner_sum", "cpu", KERNEL, "(acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k])",
           "(acc[0][k] + acc[1][k]) + (acc[2][k] + acc[2][k])", "one corner's partial sum counted twice"),
    Mutant("kernel_grad_y_copy", "cpu", KERNEL, "static_cast<loc_t>(a * grad_y)", "static_cast<loc_t>(a * grad_x)",
           "copy-paste: the y location gradient gets the x one"),
    Mutant("kernel_backward_level", "cpu", KERNEL, "const int64_t l = i / P;", "const int64_t l = i % P;",
           "level of a point from the wrong division"),
    Mutant("kernel_slice_reset", "cpu", KERNEL, "std::fill(slice_buffer.begin(), slice_buffer.end(), acc_t(0));", "",
           "float16 backward: the per-task grad_value buffer is not zeroed between tasks"),
    Mutant("bilinear_grad_mixed_frac", "cpu", BILINEAR, "frac_y * (dot[3] - dot[2])", "frac_x * (dot[3] - dot[2])",
           "x gradient weighted by the x fraction instead of the y fraction"),
    Mutant("bilinear_grad_scale", "cpu", BILINEAR, "d_pixel_x * static_cast<acc_t>(width)",
           "d_pixel_x * static_cast<acc_t>(height)", "x gradient scaled by the height"),
    Mutant("dn_noise_sign", "cpu", NOISE, "(2.f * upper - 1.f) * (magnitude", "(1.f - 2.f * upper) * (magnitude",
           "noise sign flipped (the distribution is symmetric, the draws are not)"),
    Mutant("dn_label_flip", "cpu", NOISE, "u_flip < static_cast<float>(ratio)", "u_flip > static_cast<float>(ratio)",
           "labels flipped with probability 1 - ratio"),
    Mutant("dn_min_size", "cpu", NOISE, "out[3] = dn_clamp(h, min_size, acc_t(1));",
           "out[3] = dn_clamp(h, acc_t(0), acc_t(1));", "the height ignores the minimum box size"),
    Mutant("cuda_batch_index", "cuda", MSDA_CUDA, "hc.n = hc.head_row / (sz.heads * sz.queries);",
           "hc.n = hc.head_row / sz.queries;", "batch index without the heads factor"),
    Mutant("cuda_footprint_pixel", "cuda", BILINEAR, "fp.pixel[c] = (y0 + (c >> 1)) * width + x0 + (c & 1);",
           "fp.pixel[c] = (y0 + (c & 1)) * width + x0 + (c >> 1);", "corner row and column bits swapped"),
    Mutant("cuda_footprint_bound", "cuda", BILINEAR, "(x < static_cast<acc_t>(width))",
           "(x <= static_cast<acc_t>(width))", "off-by-one: points on the right edge touch the map"),
    Mutant("cuda_attention_weight", "cuda", MSDA_CUDA, "const acc_t w = a * fp.weight[c];\n          const auto v",
           "const acc_t w = fp.weight[c];\n          const auto v", "forward: the attention weight is not applied"),
    Mutant("cuda_group_sum", "cuda", MSDA_CUDA, "offset > 0; offset /= 2", "offset > 1; offset /= 2",
           "warp reduction stops one step early"),
    Mutant("cuda_alignment", "cuda", MSDA_CUDA, "wide = wide && is_aligned(p, 16);", "",
           "16-byte vector loads without the alignment check"),
]


def run(command, log, timeout=None, env=None):
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        return subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, env=env).returncode


def build(log):
    return run([sys.executable, "setup.py", "build_ext", "--inplace"], log) == 0


def try_mutant(mutant, tests, log, test_timeout):
    path = os.path.join(ROOT, mutant.path)
    with open(path) as f:
        original = f.read()
    if original.count(mutant.before) != 1:
        raise ValueError(f"mutant {mutant.name}: its text occurs {original.count(mutant.before)} times in {mutant.path}")
    start = time.time()
    try:
        with open(path, "w") as f:
            f.write(original.replace(mutant.before, mutant.after))
        if not build(log):
            return {"result": "no build", "seconds": time.time() - start}
        try:
            rc = run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], log, test_timeout)
            result = "survived" if rc == 0 else "killed"
        except subprocess.TimeoutExpired:
            result = "killed (timeout)"
        return {"result": result, "seconds": time.time() - start}
    finally:
        with open(path, "w") as f:
            f.write(original)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--only", default="", help="comma list of mutant names (default: all of --device)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--log", default="kernel_mutants.log", help="build and test output")
    parser.add_argument("--test-timeout", type=float, default=900.0, help="seconds for one mutant's tests")
    opts = parser.parse_args(argv)
    names = [n for n in opts.only.split(",") if n]
    known = {m.name for m in MUTANTS}
    if set(names) - known:
        parser.error(f"--only: unknown mutants {sorted(set(names) - known)}; known: {sorted(known)}")
    chosen = [m for m in MUTANTS if (m.name in names if names else m.device == opts.device)]
    tests = {"cpu": MSDA_TESTS + DN_TESTS, "cuda": CUDA_MSDA_TESTS}[opts.device]
    if opts.device == "cuda":
        tests = tests + ["-k", "cuda"]
    results = []
    try:
        for mutant in chosen:
            outcome = try_mutant(mutant, tests, opts.log, opts.test_timeout)
            results.append({**asdict(mutant), **outcome})
            if opts.json:  # after every mutant: a run cut short keeps what it found
                with open(opts.json, "w") as f:
                    json.dump(results, f, indent=1)
            print(f"{mutant.name:28s} {outcome['result']:16s} {outcome['seconds']:6.0f} s  {mutant.bug}", flush=True)
    finally:
        build(opts.log)  # the unmodified tree again
    killed = sum(r["result"].startswith("killed") for r in results)
    built = sum(r["result"] != "no build" for r in results)
    print(f"killed {killed} of {built} mutants that compiled ({len(results)} tried)")


if __name__ == "__main__":
    main()
