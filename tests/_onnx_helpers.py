"""Helpers shared by the ONNX export tests: run a file in onnxruntime, list its operators."""
import numpy as np
import onnx
import onnxruntime


def session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(sess, *inputs):
    """Runs the session on torch tensors (in graph-input order) -> list of numpy outputs."""
    feeds = {meta.name: tensor.numpy() for meta, tensor in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feeds)


def max_difference(got, expected):
    return float(np.abs(got - expected.detach().numpy()).max()) if got.size else 0.0


def operator_types(path):
    """{(domain, op_type)} of every node in the graph (and its functions)."""
    model = onnx.load(str(path))
    nodes = list(model.graph.node) + [node for function in model.functions for node in function.node]
    return {(node.domain, node.op_type) for node in nodes}
