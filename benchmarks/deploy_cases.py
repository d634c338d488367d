"""The cases of benchmarks/deploy.py: a module, its inputs at one size, and the two context managers
under which it runs grid_sample (as its own code does) or detrx's op."""
import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from attn_inputs import CASES as OP_SHAPES, make_inputs  # noqa: E402
from common import use_reference  # noqa: E402

from detrx.ops import ms_deform_attn, ms_deform_attn_reference  # noqa: E402


@dataclass
class Case:
    name: str                   # unique per module and size (file names)
    label: str                  # the table's case column
    module: torch.nn.Module
    inputs: tuple
    grid_sample_path: Callable  # () -> context manager
    detrx_path: Callable
    paths: Optional[dict] = None  # the exported files, once written
    export_s: Optional[dict] = None


class MSDA(torch.nn.Module):
    """The op alone; `reference` switches it to the grid_sample formulation, which takes the level
    sizes as Python ints (a model knows them from its feature maps; grid_sample needs them)."""

    def __init__(self, levels):
        super().__init__()
        self.levels, self.reference = [tuple(level) for level in levels], False

    def forward(self, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        if self.reference:
            return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations,
                                            attention_weights, spatial_shapes_list=self.levels)
        return ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


@contextlib.contextmanager
def attribute(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def reference_path(model, flag):
    use_reference(model, flag)
    try:
        yield
    finally:
        use_reference(model, False)


def op_cases(role, quick):
    shape_name = {"encoder": "encoder N=1", "decoder": "decoder N=2 Lq=300"}[role]
    shapes = next(shape for shape in OP_SHAPES if shape.name == shape_name)
    inputs = tuple(make_inputs(shapes, "realistic", torch.float32, "cpu")[0][:5])
    module = MSDA(inputs[1].tolist()).eval()
    return [Case(f"op_{role}", f"MSDA op, {shape_name}", module, inputs,
                 lambda: attribute(module, "reference", True), lambda: attribute(module, "reference", False))]


def hf_cases(family, quick):
    import transformers

    from detrx.integrations import transformers as detrx_hf

    torch.manual_seed(0)
    if family == "hf_deformable_detr":
        config = (transformers.DeformableDetrConfig(use_pretrained_backbone=False) if not quick else
                  transformers.DeformableDetrConfig(backbone_config=_tiny_resnet(transformers), d_model=32,
                                                    encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32,
                                                    decoder_ffn_dim=32, num_queries=10, num_labels=3))
        model, sizes, label = transformers.DeformableDetrForObjectDetection(config), [(800, 1333), (512, 683)], \
            "HF Deformable DETR R50"
    else:
        config = (transformers.RTDetrConfig() if not quick else
                  transformers.RTDetrConfig(backbone_config=_tiny_resnet(transformers), encoder_hidden_dim=32,
                                            encoder_in_channels=[16, 24, 32], encoder_ffn_dim=32, d_model=32,
                                            num_queries=10, decoder_in_channels=[32, 32, 32], decoder_ffn_dim=32,
                                            decoder_layers=2, num_labels=3))
        model, sizes, label = transformers.RTDetrForObjectDetection(config), [(640, 640)], "RT-DETR R50"
    if quick:
        sizes, label = [(128, 160)], label.split(" R50")[0] + " (tiny)"
    from detrx.onnx.detector import HFExportableDetector

    module = HFExportableDetector(model.eval()).eval()
    return [Case(f"{family}_{h}x{w}", f"{label} {h}x{w}", module, (torch.rand(1, 3, h, w),),
                 contextlib.nullcontext, detrx_hf.patched) for h, w in sizes]


def _tiny_resnet(transformers):
    return transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                     layer_type="basic", out_features=["stage2", "stage3", "stage4"])


def detrx_cases(quick):
    from export import MODELS, build

    from detrx.onnx.detector import ExportableDetector

    model = build(MODELS["study" if quick else "d256"])
    module = ExportableDetector(model).eval()
    h, w = (128, 160) if quick else (800, 1333)
    label = "detrx Deformable DETR " + ("(study)" if quick else "d256")
    return [Case(f"detrx_{h}x{w}", f"{label} {h}x{w}", module, (torch.rand(1, 3, h, w),),
                 lambda: reference_path(model, True), lambda: reference_path(model, False))]


CASES = {
    "op_encoder": lambda quick: op_cases("encoder", quick),
    "op_decoder": lambda quick: op_cases("decoder", quick),
    "hf_deformable_detr": lambda quick: hf_cases("hf_deformable_detr", quick),
    "rt_detr": lambda quick: hf_cases("rt_detr", quick),
    "detrx_deformable_detr": lambda quick: detrx_cases(quick),
}


def build_case(name, quick):
    """The cases (one per input size) of one --cases name."""
    return CASES[name](quick)
