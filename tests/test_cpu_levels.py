"""The CPU kernels compiled per instruction-set level (default, avx2, avx512; or native): every
level this CPU runs matches the reference, the best one is chosen at import, and
DETRX_CPU_CAPABILITY chooses another or fails the import clearly."""
import json
import os
import subprocess
import sys

import pytest
import torch

import detrx
from helpers import assert_close_to, make_inputs, off_grid_locations, output_and_grads
from detrx.ops import build_dn_queries, ms_deform_attn, ms_deform_attn_reference

_C = pytest.importorskip("detrx._C", reason="detrx was built without its extension")
SUPPORTED = _C.supported_cpu_levels()


@pytest.fixture(params=SUPPORTED)
def cpu_level(request):
    """Runs the test with the CPU kernels of one level, then restores the level in use."""
    before = _C.cpu_level()
    _C._set_cpu_level(request.param)
    yield request.param
    _C._set_cpu_level(before)


def test_build_info_reports_the_levels():
    info = detrx.build_info()
    levels, supported = info["cpu_levels"], info["cpu_levels_supported"]
    assert levels in (("default", "avx2", "avx512"), ("native",), ("default",))
    assert supported[0] == levels[0] and set(supported) <= set(levels)  # the lowest level runs anywhere
    requested = os.environ.get("DETRX_CPU_CAPABILITY")
    assert info["cpu_level"] == (requested or supported[-1])  # the best, unless forced


@pytest.mark.parametrize("dtype, channels, tolerance", [
    (torch.float64, 32, 1e-12),  # SIMD-register channel path
    (torch.float64, 30, 1e-12),  # plain channel loop
    (torch.float32, 16, 1e-5),
    (torch.float32, 64, 1e-5),
    (torch.bfloat16, 32, 1e-2),  # computed in float32, rounded once: within a bfloat16 ulp or two
])
def test_every_level_matches_the_reference(cpu_level, dtype, channels, tolerance):
    assert _C.cpu_level() == cpu_level
    levels = ((6, 9), (3, 5), (2, 2))
    locations = off_grid_locations(levels, batch=2, queries=19, heads=3, points=3)  # no pixel crease nearby
    inputs = make_inputs(levels=levels, queries=19, heads=3, channels=channels, points=3, dtype=dtype,
                         locations=locations)
    names = ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")
    actual = output_and_grads(ms_deform_attn, inputs)
    expected = output_and_grads(ms_deform_attn_reference, [t.double() if t.is_floating_point() else t for t in inputs])
    for name, got, want in zip(names, actual, expected):
        assert got.dtype == dtype
        assert_close_to(got, want, tolerance, name)


@pytest.mark.parametrize("noise_style, box_dtype", [("dn_detr", torch.float32), ("dino", torch.float64)])
def test_dn_queries_are_identical_on_every_level(cpu_level, noise_style, box_dtype):
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 7, (5, 9), generator=generator)
    boxes = (torch.rand(5, 9, 4, generator=generator, dtype=torch.float64) * 0.6 + 0.2).to(box_dtype)
    counts = torch.tensor([9, 0, 4, 1, 7])

    def build():
        return build_dn_queries(labels, boxes, counts, num_classes=7, num_queries=11, num_groups=3,
                                contrastive=True, noise_style=noise_style, generator=torch.Generator().manual_seed(3))

    queries = build()
    _C._set_cpu_level("default")
    baseline = build()
    for name, got, want in zip(queries._fields, queries, baseline):
        same = torch.equal(got, want) if isinstance(got, torch.Tensor) else got == want
        assert same, f"{name} differs between the {cpu_level} and default levels"


def _import_with_capability(value):
    script = "import json, detrx; print(json.dumps(detrx.build_info()['cpu_level']))"
    env = dict(os.environ, DETRX_CPU_CAPABILITY=value)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)


def test_environment_variable_forces_a_level():
    lowest = SUPPORTED[0]
    result = _import_with_capability(lowest.upper())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == lowest


def test_environment_variable_with_an_unknown_level_fails_the_import():
    result = _import_with_capability("avx1024")
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ValueError: DETRX_CPU_CAPABILITY") and "'avx1024'" in last_line
    assert all(level in last_line for level in _C.cpu_levels())


def test_switching_to_an_unknown_level_is_refused_and_keeps_the_level():
    before = _C.cpu_level()
    with pytest.raises(ValueError, match="DETRX_CPU_CAPABILITY: detrx was built with the CPU levels"):
        _C._set_cpu_level("sse9")
    assert _C.cpu_level() == before
