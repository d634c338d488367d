"""The runtimes of benchmarks/deploy.py: export a module three ways, open each file in onnxruntime and
OpenVINO at a thread count, and time every column of one row alternately."""
import os
import time

import numpy as np
import torch

from common import time_interleaved

LABELS = {"eager_grid_sample": "eager grid_sample", "eager_detrx": "eager detrx", "ort_gridsample": "ort GridSample",
          "ort_detrx": "ort detrx", "ov_gridsample": "ov GridSample", "ov_detrx_op": "ov detrx op"}
EXTENSION_MISSING = "n/a (extension not built)"


def openvino_extension():
    """(library path, status): detrx's OpenVINO extension where detrx.openvino has it built."""
    try:
        import detrx.openvino
        path = detrx.openvino.library_path()
    except (ImportError, OSError, RuntimeError) as error:
        return None, f"{EXTENSION_MISSING}: {error}"
    return path, f"loaded from {path}"


class Runtimes:
    def __init__(self, work_dir, threads, runs):
        self.work_dir, self.threads, self.runs, self.count = work_dir, threads, runs, 0
        self.extension, self.extension_status = openvino_extension()

    @staticmethod
    def versions():
        import onnxruntime
        import openvino
        return f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}"

    def _path(self, tag):
        self.count += 1
        return os.path.join(self.work_dir, f"{self.count}_{tag}.onnx")

    def export_detrx(self, module, inputs):
        """{"ort_detrx": standard-op file, "ov_detrx_op": runtime-op file} via detrx.onnx.export."""
        import detrx.onnx

        files = {"ort_detrx": self._path("detrx"), "ov_detrx_op": self._path("runtime_op")}
        detrx.onnx.export(module, inputs, files["ort_detrx"], verbose=False)
        detrx.onnx.export(module, inputs, files["ov_detrx_op"], runtime_op=True, verbose=False)
        return files

    def export_plain(self, module, inputs):
        """The usual export (torch.onnx, dynamo): grid_sample becomes GridSample."""
        path = self._path("gridsample")
        torch.onnx.export(module, inputs, path, dynamo=True, verbose=False)
        return path

    def _ort(self, path, threads):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(None, dict(zip([i.name for i in session.get_inputs()], feeds)))

    def _openvino(self, path, threads, extension=False):
        import openvino

        core = openvino.Core()
        if extension:
            core.add_extension(self.extension)
        compiled = core.compile_model(core.read_model(path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        return lambda feeds: [request.infer(feeds)[output] for output in compiled.outputs]

    def _runners(self, files, threads):
        runners = {"ort_gridsample": lambda: self._ort(files["gridsample"], threads),
                   "ort_detrx": lambda: self._ort(files["ort_detrx"], threads),
                   "ov_gridsample": lambda: self._openvino(files["gridsample"], threads)}
        if self.extension is not None:
            runners["ov_detrx_op"] = lambda: self._openvino(files["ov_detrx_op"], threads, extension=True)
        opened, notes = {}, {}
        for key, open_runner in runners.items():
            try:
                opened[key] = open_runner()
            except Exception as error:  # a runtime that cannot load a file is a result, not a crash
                notes[key] = f"failed: {str(error).splitlines()[0][:200]}"
        return opened, notes

    def row(self, model, size, eager_grid_sample, eager_detrx, files, inputs):
        """One table row per thread count: every column timed in alternating rounds, median ms."""
        feeds = [tensor.numpy() for tensor in inputs]
        rows = []
        for threads in self.threads:
            torch.set_num_threads(threads)
            opened, notes = self._runners(files, threads)
            expected = [t.numpy() for t in torch.utils._pytree.tree_leaves(eager_detrx()) if isinstance(t, torch.Tensor)]
            functions, differences = {}, {}
            for key, fn in [("eager_grid_sample", eager_grid_sample), ("eager_detrx", eager_detrx)] + \
                    [(key, (lambda run: lambda: run(feeds))(run)) for key, run in opened.items()]:
                begin = time.perf_counter()
                try:
                    result = fn()
                except Exception as error:
                    notes[key] = f"failed: {str(error).splitlines()[0][:200]}"
                    continue
                functions[key] = (fn, time.perf_counter() - begin)
                if key not in ("eager_grid_sample", "eager_detrx"):
                    differences[key] = max(float(np.abs(np.asarray(got) - want).max()) for got, want in zip(result, expected))
            timings = time_interleaved(functions, min_run_time=0.2 * self.runs, min_samples=self.runs)
            row = {"model": model, "size": size, "threads": threads, "timings": timings, "notes": notes,
                   "max_abs_difference_vs_eager_detrx": differences}
            for key in LABELS:
                if key in timings:
                    row[f"{key}_ms"] = 1e3 * timings[key]["median_s"]
                    row[f"{key}_cell"] = f"{row[f'{key}_ms']:.1f}"
                else:
                    row[f"{key}_cell"] = EXTENSION_MISSING if key == "ov_detrx_op" and self.extension is None \
                        else notes.get(key, "-")[:40]
            if "ort_detrx_ms" in row and "ort_gridsample_ms" in row:
                row["ort_ratio"] = row["ort_detrx_ms"] / row["ort_gridsample_ms"]
            if "ov_detrx_op_ms" in row:
                row["ov_ratio"] = row["ov_detrx_op_ms"] / row["eager_detrx_ms"]
            rows.append(row)
        return rows
