"""runtime_op=True / --runtime-op: MSDA as one detrx::MultiScaleDeformableAttention node (the contract
detrx's OpenVINO extension reads), checked by running the file in onnx's reference evaluator with the
node implemented by detrx's op; onnxruntime's refusal is a clear error."""
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
import onnx  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from onnx.reference.op_run import OpRun  # noqa: E402

import detrx  # noqa: E402
from _onnx_helpers import max_difference  # noqa: E402
from detrx.ops import ms_deform_attn  # noqa: E402

if not detrx.is_compiled():
    pytest.skip("the compiled op is what gets exported", allow_module_level=True)
import detrx.onnx  # noqa: E402
from detrx.export import main  # noqa: E402
from detrx.onnx.detector import ExportableDetector  # noqa: E402
from detrx.onnx.verify import onnxruntime_session  # noqa: E402
from test_onnx_export_cli import write_checkpoint  # noqa: E402
from test_onnx_models import random_detector  # noqa: E402
from test_onnx_ms_deform_attn import EXPORT_LEVELS, OpModule, op_inputs  # noqa: E402
from _models_config import tiny_args  # noqa: E402


class MultiScaleDeformableAttention(OpRun):
    """The node for onnx's reference evaluator, computed by detrx's op on the node's inputs in order."""
    op_domain = "detrx"

    def _run(self, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        output = ms_deform_attn(*(torch.from_numpy(array.copy()) for array in (
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights)))
        return (output.numpy(),)


def msda_nodes(path):
    model = onnx.load(str(path))
    return [node for node in model.graph.node if node.domain == detrx.onnx.RUNTIME_OP_DOMAIN]


def export_op_file(path):
    dims = {name: torch.export.Dim(name) for name in ("batch", "values", "queries")}
    batched = {0: dims["batch"], 1: dims["queries"]}
    detrx.onnx.export(OpModule().eval(), op_inputs(EXPORT_LEVELS, 2, 5), path, runtime_op=True,
                      input_names=["value", "spatial_shapes", "level_start_index", "sampling_locations",
                                   "attention_weights"],
                      dynamic_shapes=({0: dims["batch"], 1: dims["values"]}, None, None, batched, batched))
    return path


def test_op_is_one_node_with_the_op_inputs_in_order(tmp_path):
    path = export_op_file(tmp_path / "op.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert ("detrx", 1) in {(entry.domain, entry.version) for entry in model.opset_import}
    (node,) = msda_nodes(path)
    assert node.op_type == detrx.onnx.RUNTIME_OP and not node.attribute
    assert [node for node in model.graph.node if node.domain != "detrx"] == []  # nothing around it
    assert list(node.input) == [graph_input.name for graph_input in model.graph.input]
    input_types = [graph_input.type.tensor_type.elem_type for graph_input in model.graph.input]
    assert input_types == [onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.INT64,
                           onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT]
    (output,) = model.graph.output
    assert output.name == node.output[0]
    dims = [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim]
    assert len(dims) == 3 and dims[2] == 2 * 4  # [N, Lq, M * D]

    for levels, batch, queries in ((EXPORT_LEVELS, 2, 5), (((9, 5), (4, 7), (1, 1)), 3, 11)):
        inputs = op_inputs(levels, batch, queries, seed=queries)
        (got,) = ReferenceEvaluator(model, new_ops=[MultiScaleDeformableAttention]).run(
            None, {graph_input.name: tensor.numpy() for graph_input, tensor in zip(model.graph.input, inputs)})
        assert max_difference(got, ms_deform_attn(*inputs)) == 0.0


def test_detector_file_runs_detrx_nodes_where_msda_was(tmp_path):
    model = random_detector("deformable_detr", "--num-feature-levels", "3")
    module = ExportableDetector(model).eval()
    path = tmp_path / "detector.onnx"
    dynamic = torch.export.Dim.DYNAMIC
    detrx.onnx.export(module, (torch.rand(2, 3, 128, 96),), path, runtime_op=True, input_names=["images"],
                      dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},))
    layers = len(model.transformer.encoder) + len(model.transformer.decoder)
    assert len(msda_nodes(path)) == layers
    assert "GridSample" not in {node.op_type for node in onnx.load(str(path)).graph.node}
    images = torch.rand(1, 3, 80, 112)
    evaluator = ReferenceEvaluator(str(path), new_ops=[MultiScaleDeformableAttention])
    logits, boxes = evaluator.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = module(images)
    assert max(max_difference(logits, expected[0]), max_difference(boxes, expected[1])) <= 1e-4


def test_onnxruntime_refusal_names_the_extension(tmp_path):
    path = export_op_file(tmp_path / "op.onnx")
    with pytest.raises(ValueError, match="OpenVINO with detrx's extension"):
        onnxruntime_session(path)
    with pytest.raises(ValueError, match="check_inputs.*standard-operator graph"):
        detrx.onnx.export(OpModule().eval(), op_inputs(EXPORT_LEVELS, 2, 5), tmp_path / "x.onnx", runtime_op=True,
                          check_inputs=[op_inputs(EXPORT_LEVELS, 1, 3)])


def test_cli_runtime_op_skips_onnxruntime_and_says_so(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = write_checkpoint(tmp_path / "checkpoint.pth", tiny_args("deformable_detr"))
    out = tmp_path / "model.onnx"
    main(["--checkpoint", str(checkpoint), "--out", str(out), "--runtime-op"])
    assert "onnxruntime check skipped" in capsys.readouterr().out
    assert msda_nodes(out) and all(node.op_type == detrx.onnx.RUNTIME_OP for node in msda_nodes(out))
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(checkpoint), "--out", str(out), "--runtime-op", "--trt-plugin"])
