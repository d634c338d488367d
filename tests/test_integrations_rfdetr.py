"""detrx.integrations.rfdetr: rfdetr's MSDA function replaced by detrx's op, checked against rfdetr's
own outputs and gradients on a small RF-DETR (Nano architecture, random weights, built offline)."""
import copy
import socket
import subprocess
import sys
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

pytest.importorskip("rfdetr")

from rfdetr.config import RFDETRNanoConfig  # noqa: E402
from rfdetr.models.lwdetr import build_model_from_config  # noqa: E402
from rfdetr.models.ops.functions import ms_deform_attn_func  # noqa: E402
from rfdetr.models.ops.modules import ms_deform_attn as rfdetr_msda_module  # noqa: E402

from detrx.integrations import rfdetr as detrx_rfdetr  # noqa: E402
from helpers import shared_unless_mutating  # noqa: E402

RFDETR_CORE = ms_deform_attn_func.ms_deform_attn_core_pytorch
RESOLUTION = 64


class OpCounter(TorchDispatchMode):
    """Counts calls of detrx's MSDA op (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.counts = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name.startswith("detrx."):
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(autouse=True)
def always_unpatched():
    detrx_rfdetr.unpatch()
    yield
    detrx_rfdetr.unpatch()


@pytest.fixture(scope=shared_unless_mutating)
def model(request):
    """RF-DETR Nano's architecture at 64x64 with two feature levels (P3, P5), random weights; any
    network access while building fails the build."""
    monkeypatch = pytest.MonkeyPatch()

    def refuse(*args, **kwargs):
        raise AssertionError("building the model tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    try:
        with warnings.catch_warnings():   # rfdetr warns that random weights are less accurate than its checkpoint
            warnings.simplefilter("ignore")
            config = RFDETRNanoConfig(pretrain_weights=None, resolution=RESOLUTION, num_queries=10, num_select=10,
                                      projector_scale=["P3", "P5"], num_classes=3)
            torch.manual_seed(0)
            built = build_model_from_config(config).eval()
    finally:
        monkeypatch.undo()
    return built


def images(dtype=torch.float32, seed=0):
    return torch.rand(2, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(seed)).to(dtype)


def predictions(model, pixels):
    out = model(pixels)
    return out["pred_logits"], out["pred_boxes"]


def assert_relative_close(actual, expected, tolerance):
    scale = expected.abs().max().clamp(min=torch.finfo(expected.dtype).tiny)
    assert ((actual - expected).abs().max() / scale).item() <= tolerance


# ---------------------------------------------------------------- the function against rfdetr's

def random_core_inputs(dtype, merged, generator, batch=2, heads=2, channels=4, queries=5, points=4,
                       shapes=((6, 5), (3, 3), (1, 2))):
    S = sum(h * w for h, w in shapes)
    value = torch.randn(batch, heads, channels, S, generator=generator, dtype=dtype)
    # Locations in [-0.1, 1.1]: some outside the maps, where grid_sample samples zeros.
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=generator, dtype=dtype) * 1.2 - 0.1
    weights = torch.rand(batch, queries, heads, len(shapes) * points, generator=generator, dtype=dtype).softmax(-1)
    if merged:
        locations = locations.flatten(3, 4)
    return value, torch.tensor(shapes), locations, weights, [tuple(hw) for hw in shapes]


@pytest.mark.parametrize("merged", [False, True], ids=["rank6", "rank5"])
@pytest.mark.parametrize("with_hw", [False, True])
def test_function_matches_rfdetr_in_float64_with_gradients(merged, with_hw):
    generator = torch.Generator().manual_seed(int(merged) * 2 + int(with_hw))
    value, shapes, locations, weights, hw = random_core_inputs(torch.float64, merged, generator)
    hw = hw if with_hw else None
    results = []
    for core in (RFDETR_CORE, detrx_rfdetr.ms_deform_attn_core):
        inputs = [t.clone().requires_grad_() for t in (value, locations, weights)]
        out = core(inputs[0], shapes, inputs[1], inputs[2], value_spatial_shapes_hw=hw)
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(),
                                    inputs)
        results.append((out, *grads))
    for actual, expected in zip(results[1], results[0]):
        assert actual.shape == expected.shape and actual.dtype == expected.dtype
        assert_relative_close(actual, expected, 1e-12)


def test_function_accepts_int32_shapes_like_rfdetr():
    value, shapes, locations, weights, _ = random_core_inputs(torch.float32, False, torch.Generator().manual_seed(5))
    expected = RFDETR_CORE(value, shapes.int(), locations, weights)
    assert_relative_close(detrx_rfdetr.ms_deform_attn_core(value, shapes.int(), locations, weights), expected, 1e-5)


def test_function_takes_shapes_as_pairs_or_only_hw_like_rfdetr():
    value, shapes, locations, weights, hw = random_core_inputs(torch.float32, False, torch.Generator().manual_seed(6))
    expected = RFDETR_CORE(value, shapes, locations, weights)
    for pairs, given_hw in ((shapes.tolist(), None), ([tuple(p) for p in shapes.tolist()], None), (None, hw)):
        assert_relative_close(RFDETR_CORE(value, pairs, locations, weights, value_spatial_shapes_hw=given_hw),
                              expected, 1e-6)
        actual = detrx_rfdetr.ms_deform_attn_core(value, pairs, locations, weights, value_spatial_shapes_hw=given_hw)
        assert_relative_close(actual, expected, 1e-5)


def test_function_computes_in_the_widest_dtype_given():
    """float32 locations with a float64 value and weights: computed (and returned) in float64."""
    value, shapes, locations, weights, _ = random_core_inputs(torch.float64, False, torch.Generator().manual_seed(8))
    actual = detrx_rfdetr.ms_deform_attn_core(value, shapes, locations.float(), weights)
    assert actual.dtype == torch.float64
    assert_relative_close(actual, RFDETR_CORE(value, shapes, locations.float().double(), weights), 1e-12)


def test_function_mixed_dtypes_under_autocast_like_rfdetr():
    """rfdetr under bfloat16 autocast passes a bfloat16 value and weights with float32 locations."""
    value, shapes, locations, weights, hw = random_core_inputs(torch.float32, False, torch.Generator().manual_seed(7))
    value, weights = value.bfloat16(), weights.bfloat16()
    truth = RFDETR_CORE(value.double(), shapes, locations.double(), weights.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = RFDETR_CORE(value, shapes, locations, weights, value_spatial_shapes_hw=hw)
        actual = detrx_rfdetr.ms_deform_attn_core(value, shapes, locations, weights, value_spatial_shapes_hw=hw)
    assert actual.dtype == expected.dtype
    assert (actual.double() - truth).abs().max() <= 2 * (expected.double() - truth).abs().max() + 1e-6


@pytest.mark.parametrize("change,match", [
    (lambda a: {**a, "value": a["value"][0]}, r"value must be a \[B, M, D, S\] .*, got \(2, 4, 41\)"),
    (lambda a: {**a, "value": a["value"].tolist()}, r"value must be a \[B, M, D, S\] .*, got list"),
    (lambda a: {**a, "sampling_locations": a["sampling_locations"].tolist()},
     "sampling_locations must be a torch.Tensor, got list"),
    (lambda a: {**a, "value_spatial_shapes": a["value_spatial_shapes"].flatten()}, r"integer \[L, 2\] tensor"),
    (lambda a: {**a, "value_spatial_shapes": a["value_spatial_shapes"].double().tolist()}, "integer"),
    (lambda a: {**a, "sampling_locations": a["sampling_locations"][..., :8, :]}, "divisible by L"),
    (lambda a: {**a, "sampling_locations": a["sampling_locations"][0]}, "sampling_locations must be"),
    (lambda a: {**a, "attention_weights": a["attention_weights"][..., :-1]}, "attention_weights must be"),
    (lambda a: {**a, "value_spatial_shapes": a["value_spatial_shapes"].double()}, "integer"),
    (lambda a: {**a, "value_spatial_shapes_hw": [(6, 5), (3, 3), (2, 1)]}, "value_spatial_shapes_hw"),
    (lambda a: {**a, "value_spatial_shapes": torch.tensor([[6, 5], [3, 3], [1, 3]])}, "spatial_shapes"),
    (lambda a: {**a, "attention_weights": a["attention_weights"].tolist()}, "attention_weights must be a torch"),
])
def test_bad_input_raises_a_clear_value_error(change, match):
    value, shapes, locations, weights, hw = random_core_inputs(torch.float32, True, torch.Generator().manual_seed(1))
    args = dict(value=value, value_spatial_shapes=shapes, sampling_locations=locations, attention_weights=weights,
                value_spatial_shapes_hw=hw)
    with pytest.raises(ValueError, match=match):
        detrx_rfdetr.ms_deform_attn_core(**change(args))


# ---------------------------------------------------------------- patch / unpatch

def test_patch_replaces_every_reference_and_unpatch_restores_them():
    holders = [ms_deform_attn_func, sys.modules["rfdetr.models.ops.functions"], rfdetr_msda_module]
    sites = detrx_rfdetr.patch()
    assert set(sites) == {f"{module.__name__}.ms_deform_attn_core_pytorch" for module in holders}
    assert all(module.ms_deform_attn_core_pytorch is detrx_rfdetr.ms_deform_attn_core for module in holders)
    assert detrx_rfdetr.patch() == sites                               # patching twice changes nothing
    assert detrx_rfdetr.patched_sites() == sites
    assert set(detrx_rfdetr.unpatch()) == set(sites)
    assert all(module.ms_deform_attn_core_pytorch is RFDETR_CORE for module in holders)
    assert detrx_rfdetr.patched_sites() == [] and detrx_rfdetr.unpatch() == []


def test_unpatch_also_restores_modules_imported_while_patched():
    detrx_rfdetr.patch()
    late = type(sys)("rfdetr._late_user")           # an rfdetr module that imported the patched function
    late.ms_deform_attn_core_pytorch = ms_deform_attn_func.ms_deform_attn_core_pytorch
    sys.modules[late.__name__] = late
    try:
        assert "rfdetr._late_user.ms_deform_attn_core_pytorch" in detrx_rfdetr.unpatch()
        assert late.ms_deform_attn_core_pytorch is RFDETR_CORE
    finally:
        del sys.modules[late.__name__]


def test_patched_context_restores_only_what_it_patched():
    with detrx_rfdetr.patched() as sites:
        assert rfdetr_msda_module.ms_deform_attn_core_pytorch is detrx_rfdetr.ms_deform_attn_core and sites
    assert rfdetr_msda_module.ms_deform_attn_core_pytorch is RFDETR_CORE
    detrx_rfdetr.patch()
    with detrx_rfdetr.patched():
        pass
    assert rfdetr_msda_module.ms_deform_attn_core_pytorch is detrx_rfdetr.ms_deform_attn_core


def test_import_detrx_does_not_import_rfdetr():
    code = "import sys, detrx, detrx.integrations.rfdetr; assert 'rfdetr' not in sys.modules, 'rfdetr imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- the whole model

def test_model_float32_outputs_match_and_use_detrx(model):
    pixels = images()
    with torch.no_grad():
        with OpCounter() as unpatched_counter:
            expected = predictions(model, pixels)
        with detrx_rfdetr.patched(), OpCounter() as counter:
            actual = predictions(model, pixels)
        restored = predictions(model, pixels)
    assert unpatched_counter.counts == {}
    assert counter.counts == {"detrx.ms_deform_attn": len(model.transformer.decoder.layers)}
    for a, e, r in zip(actual, expected, restored):
        assert_relative_close(a, e, 1e-4)
        assert torch.equal(r, e)                                        # unpatch gives rfdetr's bits back


def test_model_float64_outputs_and_parameter_gradients_match(model):
    model64 = copy.deepcopy(model).double()
    # The ViT is frozen to keep the test fast: its gradients would reach it only through the
    # projector's, which are compared (as are all the other parameters').
    model64.backbone[0].encoder.requires_grad_(False)
    pixels = images(torch.float64, seed=1)
    weights = None
    results = []
    for patch in (False, True):
        model64.zero_grad()
        with detrx_rfdetr.patched() if patch else torch.enable_grad(), OpCounter() as counter:
            logits, boxes = predictions(model64, pixels)
            if weights is None:
                generator = torch.Generator().manual_seed(2)
                weights = [torch.randn(t.shape, generator=generator, dtype=torch.float64) for t in (logits, boxes)]
            ((logits * weights[0]).sum() + (boxes * weights[1]).sum()).backward()
        assert ("detrx.ms_deform_attn_backward" in counter.counts) == patch
        grads = {name: p.grad.clone() for name, p in model64.named_parameters() if p.grad is not None}
        results.append((logits.detach(), boxes.detach(), grads))
    (e_logits, e_boxes, e_grads), (a_logits, a_boxes, a_grads) = results
    assert_relative_close(a_logits, e_logits, 1e-9)
    assert_relative_close(a_boxes, e_boxes, 1e-9)
    assert a_grads.keys() == e_grads.keys()
    msda_params = [name for name in e_grads if "cross_attn.sampling_offsets" in name]
    assert msda_params and all(e_grads[name].abs().max() > 0 for name in msda_params)
    for name, expected in e_grads.items():
        assert_relative_close(a_grads[name], expected, 1e-9)


def test_model_under_bfloat16_autocast_matches_rfdetr(model):
    pixels = images(seed=3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = predictions(model, pixels)
        with detrx_rfdetr.patched(), OpCounter() as counter:
            actual = predictions(model, pixels)
    assert counter.counts == {"detrx.ms_deform_attn": len(model.transformer.decoder.layers)}
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype
        # Both paths sample in float32 and round to bfloat16 at the next layer: within a bfloat16 step.
        assert_relative_close(a.float(), e.float(), 1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_function_on_cuda_with_shapes_on_the_host():
    value, shapes, locations, weights, hw = random_core_inputs(torch.float32, False, torch.Generator().manual_seed(9))
    value, locations, weights = value.cuda(), locations.cuda(), weights.cuda()
    expected = RFDETR_CORE(value, shapes.cuda(), locations, weights)
    for host_shapes, given_hw in ((shapes, None), (None, hw), (shapes.tolist(), hw)):
        actual = detrx_rfdetr.ms_deform_attn_core(value, host_shapes, locations, weights,
                                                  value_spatial_shapes_hw=given_hw)
        assert_relative_close(actual, expected, 1e-4)


def test_patch_without_rfdetr_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "rfdetr.models.ops.functions.ms_deform_attn_func", None)  # as if not installed
    with pytest.raises(ImportError, match=r"^detrx.integrations.rfdetr needs rfdetr: pip install 'detrx\[rfdetr\]'$"):
        detrx_rfdetr.patch()
    assert detrx_rfdetr.patched_sites() == []
