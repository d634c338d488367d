"""benchmarks/deploy.py --quick: every column runs (three ONNX files, two runtimes, both eager paths)
and every runtime agrees with eager detrx; the timings themselves are not judged here."""
import json
import math
import os
import sys

import pytest

for module in ("onnx", "onnxscript", "onnxruntime", "openvino"):
    pytest.importorskip(module)

import detrx  # noqa: E402

if not detrx.is_compiled():
    pytest.skip("the benchmark times the compiled op", allow_module_level=True)

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def test_quick_run_fills_every_column(tmp_path):
    sys.path.insert(0, BENCHMARKS)
    import deploy
    from deploy_runtimes import openvino_extension_built

    if not openvino_extension_built():
        pytest.skip("detrx's OpenVINO extension is not built: the last column needs it")

    path = tmp_path / "deploy.json"
    deploy.main(["--quick", "--threads", "1", "--cases", "op_decoder,detrx_deformable_detr", "--json", str(path)])
    rows = json.loads(path.read_text())["rows"]
    assert [row["case"] for row in rows] == ["MSDA op, decoder N=2 Lq=300", "detrx Deformable DETR (study) 128x160"]
    for row in rows:
        assert all(math.isfinite(row[f"{column}_ms"]) and row[f"{column}_ms"] > 0 for column in deploy.COLUMNS)
        assert set(row["max_abs_difference"]) == set(deploy.COLUMNS)
        assert max(row["max_abs_difference"].values()) <= 1e-4, row["max_abs_difference"]
        assert row["OV op / eager detrx"] == row["ov_detrx_op_ms"] / row["eager_detrx_ms"]
