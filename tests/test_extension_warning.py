"""The fallback warning says what failed: an extension that was never built, or one that fails to load."""
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys

import pytest

import detrx

PROBE = """
import json, sys, warnings
# An editable install of the checkout (pip install -e .) would hand out the checkout's own _C for the
# copy that lacks one: only the copy's files may count.
sys.meta_path[:] = [finder for finder in sys.meta_path if not getattr(finder, "__module__", "").startswith("__editable__")]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import detrx
    from detrx import _extension
    _extension.warn_if_missing()
print(json.dumps({"load_error": detrx.build_info().get("load_error"), "warnings": [str(w.message) for w in caught]}))
"""


def _copy_without_extension(tmp_path):
    source = os.path.dirname(os.path.abspath(detrx.__file__))
    shutil.copytree(source, tmp_path / "detrx", ignore=shutil.ignore_patterns("_C*.so", "_C*.pyd", "__pycache__"))
    return tmp_path / "detrx"


def _probe(root):
    env = dict(os.environ, PYTHONPATH=str(root))
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.copied_package
@pytest.mark.parametrize("broken", [False, True], ids=["never built", "fails to load"])
def test_fallback_warning_says_what_failed(tmp_path, broken):
    package = _copy_without_extension(tmp_path)
    if broken:
        (package / f"_C{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"not a shared library")
    report = _probe(tmp_path)
    [message] = report["warnings"]
    if broken:
        assert report["load_error"].startswith("the compiled extension detrx._C failed to load: ")
        assert "_C" in report["load_error"].split("failed to load: ")[1]  # the loader's own error, naming the file
    else:
        assert report["load_error"] == "the compiled extension detrx._C was not found: it was never built"
    assert message.startswith(f"detrx: {report['load_error']}; falling back to the pure-PyTorch references")
    assert "circular import" not in message
