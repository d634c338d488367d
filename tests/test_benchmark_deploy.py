"""benchmarks/deploy.py --quick: every column of the deployment table is filled (or says why not), and
every runtime's file agrees with eager detrx. A smoke run: it checks the table, not the speed."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("transformers")

import detrx  # noqa: E402

if not detrx.is_compiled():
    pytest.skip("the benchmark times the compiled op", allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMED = ("eager_grid_sample", "eager_detrx", "ort_gridsample", "ort_detrx", "ov_gridsample")


def test_quick_run_fills_the_table(tmp_path):
    out = tmp_path / "deploy.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "deploy.py"), "--quick", "--json",
                             str(out)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ov detrx op" in result.stdout and "| MSDA op |" in result.stdout
    payload = json.loads(out.read_text())
    assert payload["quick"] and payload["threads"] == [1]
    assert [row["model"] for row in payload["rows"]] == ["MSDA op", "HF deformable_detr"]
    for row in payload["rows"]:
        assert all(row[f"{key}_ms"] > 0 for key in TIMED), row["notes"]
        assert all(len(row["timings"][key]["times_s"]) >= 3 for key in TIMED)
        assert row["ort_ratio"] == pytest.approx(row["ort_detrx_ms"] / row["ort_gridsample_ms"])
        if payload["openvino_extension"].startswith("n/a"):
            assert row["ov_detrx_op_cell"] == "n/a (extension not built)"
        else:
            assert row["ov_detrx_op_ms"] > 0
        assert max(row["max_abs_difference_vs_eager_detrx"].values()) <= 1e-4, row["max_abs_difference_vs_eager_detrx"]
