"""detrx.build_info() describes the build; without the compiled extension the ops fall back once, loudly."""
import json
import os
import subprocess
import sys

import pytest
import torch

import detrx
from helpers import make_inputs
from detrx.ops import ms_deform_attn, ms_deform_attn_reference

OPS = ("detrx::ms_deform_attn", "detrx::ms_deform_attn_backward")


def test_build_info_of_this_build():
    info = detrx.build_info()
    assert info["compiled"] is True and detrx.is_compiled()
    assert info["torch_built_against"] == torch.__version__ == info["torch_runtime"]
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA") == info["cuda"]
    assert bool(info["cuda_archs"]) == info["cuda"]
    assert "-O3" in info["cpu_flags"]  # the flags the kernels were compiled with


def test_build_info_and_warning_without_the_extension(monkeypatch):
    """The same module state a missing build leaves (`_C` None, the reason kept), read in this process."""
    from detrx import _extension
    reason = "the compiled extension detrx._C was not found: it was never built"
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "_LOAD_ERROR", reason)
    monkeypatch.setattr(_extension, "_warned", False)

    assert not detrx.is_compiled()
    assert detrx.build_info() == {
        "compiled": False, "torch_runtime": torch.__version__, "cuda": False, "cuda_archs": "",
        "cpu_flags": "", "cpu_levels": (), "cpu_levels_supported": (), "cpu_level": None,
        "torch_built_against": None, "load_error": reason,
        "fix": "rebuild with `pip install -e . --no-build-isolation` (from the detrx checkout)"}
    with pytest.warns(RuntimeWarning) as caught:
        _extension.warn_if_missing()
        _extension.warn_if_missing()
    [warning] = caught  # once per process
    assert str(warning.message) == (
        f"detrx: {reason}; falling back to the pure-PyTorch references, which are much slower. "
        "To fix it, rebuild with `pip install -e . --no-build-isolation` (from the detrx checkout).")


def test_no_warning_with_the_extension(recwarn):
    from detrx import _extension
    _extension.warn_if_missing()
    assert not [w for w in recwarn if "detrx" in str(w.message)]


# Runs in a fresh interpreter: argv = inputs file, outputs file. Prints build_info and the warnings.
WITHOUT_EXTENSION = """
import json, sys, warnings
sys.modules["detrx._C"] = None  # `from detrx import _C` now raises ImportError, like a missing build
import torch
import detrx
from detrx.ops import ms_deform_attn
inputs = torch.load(sys.argv[1])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    outputs = [ms_deform_attn(*inputs) for _ in range(2)]
torch.save(outputs, sys.argv[2])
print(json.dumps({"build_info": detrx.build_info(),
                  "warnings": [[w.category.__name__, str(w.message), w.filename] for w in caught]}))
"""


@pytest.mark.copied_package
def test_fallback_without_the_extension(tmp_path):
    inputs = make_inputs(channels=32)
    torch.save(inputs, tmp_path / "inputs.pt")
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(detrx.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTENSION, str(tmp_path / "inputs.pt"), str(tmp_path / "outputs.pt")],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["build_info"]["compiled"] is False and report["build_info"]["cuda"] is False
    assert "pip install -e ." in report["build_info"]["fix"]
    [(category, message, filename)] = report["warnings"]  # exactly one, over two calls
    assert category == "RuntimeWarning" and "pip install -e . --no-build-isolation" in message
    assert filename == "<string>"  # points at the caller's line, not inside detrx
    reference = ms_deform_attn_reference(*inputs)
    for output in torch.load(tmp_path / "outputs.pt"):
        assert torch.equal(output, reference)
    torch.testing.assert_close(ms_deform_attn(*inputs), reference, rtol=0, atol=1e-12)
