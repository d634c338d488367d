"""The deployment paths that benchmarks/deploy.py times: a PyTorch module written to ONNX three ways,
and each file loaded in onnxruntime or OpenVINO at a fixed thread count.

- "gridsample": the module exported as it is by torch.onnx (dynamo), which writes grid_sample as
  ONNX GridSample: what HF's, rfdetr's and RT-DETR's own exports give;
- "standard": detrx.onnx.export, MSDA in standard ONNX operators (no GridSample);
- "runtime_op": detrx.onnx.export(runtime_op=True), MSDA as the `detrx` domain node, for OpenVINO
  with detrx's extension.

Every file is exported at the size it is run at (fixed shapes, as a deployment at one input size
would): the comparison is between runtimes, not between dynamic-shape strategies.
"""
import os
import time

import torch

# float32 throughout: OpenVINO's CPU plugin would otherwise run in bfloat16 on CPUs that have it.
OPENVINO_PRECISION = "f32"


def export(module, args, path, how):
    """Writes module(*args) to path as `how` says (see the module docstring); returns seconds taken."""
    start = time.perf_counter()
    if how == "gridsample":  # optimised as detrx.onnx.export optimises (its docstring says why not more)
        import onnxscript.optimizer

        program = torch.onnx.export(module, args, dynamo=True, optimize=False, verbose=False)
        onnxscript.optimizer.fold_constants(program.model)
        onnxscript.optimizer.remove_unused_nodes(program.model)
        program.save(path)
    else:
        import detrx.onnx

        detrx.onnx.export(module, args, path, runtime_op=how == "runtime_op", verbose=False)
    return time.perf_counter() - start


def operator_types(path):
    import onnx

    return {node.op_type for node in onnx.load(path, load_external_data=False).graph.node}


def onnxruntime_runner(path, threads):
    """inputs (tensors) -> outputs, in an onnxruntime CPU session whose idle threads do not spin
    (spinning would take the CPU from the implementations interleaved with it)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [meta.name for meta in session.get_inputs()]
    return lambda *inputs: session.run(None, {name: t.numpy() for name, t in zip(names, inputs)})


def openvino_runner(path, threads, with_extension):
    """inputs -> outputs, OpenVINO's CPU plugin on `threads` threads, one stream, float32; with
    detrx's extension loaded when the file has its node."""
    import openvino

    core = openvino.Core()
    if with_extension:
        import detrx.openvino

        core.add_extension(detrx.openvino.library_path())
    compiled = core.compile_model(core.read_model(path), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION})
    request = compiled.create_infer_request()
    # share_inputs: OpenVINO reads the numpy buffers in place, as onnxruntime does, instead of copying them
    return lambda *inputs: list(request.infer([t.numpy() for t in inputs], share_inputs=True).values())


def openvino_extension_built():
    try:
        import detrx.openvino

        detrx.openvino.library_path()
        return True
    except (ImportError, FileNotFoundError):
        return False


HOWS = ("gridsample", "standard", "runtime_op")


def export_files(module, args, work_dir, name, grid_sample_path, detrx_path):
    """{how: path} of the module's ONNX files and {how: export seconds}. grid_sample_path() and
    detrx_path() are context managers under which the module runs grid_sample or detrx's op. The
    runtime-op file is left out when detrx's OpenVINO extension is not built."""
    hows = HOWS if openvino_extension_built() else HOWS[:2]
    paths, seconds = {}, {}
    for how in hows:
        paths[how] = os.path.join(work_dir, f"{name}_{how}.onnx")
        with grid_sample_path() if how == "gridsample" else detrx_path():
            seconds[how] = export(module, args, paths[how], how)
    if "GridSample" not in operator_types(paths["gridsample"]) or "GridSample" in operator_types(paths["standard"]):
        raise RuntimeError(f"{name}: the GridSample file must have GridSample and detrx's file must not")
    return paths, seconds


def runtime_columns(paths, threads):
    """{column: fn(*inputs)}: onnxruntime and OpenVINO on each file."""
    columns = {"ort_gridsample": onnxruntime_runner(paths["gridsample"], threads),
               "ort_detrx": onnxruntime_runner(paths["standard"], threads),
               "ov_gridsample": openvino_runner(paths["gridsample"], threads, with_extension=False)}
    if "runtime_op" in paths:
        columns["ov_detrx_op"] = openvino_runner(paths["runtime_op"], threads, with_extension=True)
    return columns
