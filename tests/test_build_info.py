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
                  "warnings": [[w.category.__name__, str(w.message)] for w in caught]}))
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
    [(category, message)] = report["warnings"]  # exactly one, over two calls
    assert category == "RuntimeWarning" and "pip install -e . --no-build-isolation" in message
    reference = ms_deform_attn_reference(*inputs)
    for output in torch.load(tmp_path / "outputs.pt"):
        assert torch.equal(output, reference)
    torch.testing.assert_close(ms_deform_attn(*inputs), reference, rtol=0, atol=1e-12)
