"""ms_deform_attn with a float16/bfloat16 value and float32 locations and weights (what autocast
passes): computed in float32, output in value's dtype, location and weight gradients in float32."""
import pytest
import torch

from helpers import assert_close_to, make_inputs, output_and_grads
from detrx.ops import ms_deform_attn, ms_deform_attn_reference

REDUCED = [torch.float16, torch.bfloat16]
NAMES = ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")


def mixed_inputs(value_dtype, device, channels=32, seed=0):
    """float32 inputs with value cast to value_dtype (the other float tensors stay float32)."""
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        levels=[(6, 10), (3, 5)], queries=20, heads=2, channels=channels, points=4, low=-0.1, high=1.1,
        dtype=torch.float32, device=device, seed=seed)
    return value.to(value_dtype), spatial_shapes, level_start_index, locations, weights


@pytest.mark.parametrize("channels", [5, 32])  # plain and specialised channel paths
@pytest.mark.parametrize("value_dtype", REDUCED, ids=str)
def test_mixed_matches_the_float32_reference(device, value_dtype, channels):
    inputs = mixed_inputs(value_dtype, device, channels)
    value = inputs[0]
    # The same numbers in float32: value is exact there, so this is the float32 truth.
    float32_inputs = (value.float(),) + inputs[1:]
    N, Lq, M = inputs[4].shape[:3]
    generator = torch.Generator().manual_seed(1)
    # The upstream gradient arrives in value's dtype: both sides get the same rounded one.
    grad_output = torch.randn(N, Lq, M * channels, generator=generator).to(value_dtype).float()
    truth = output_and_grads(ms_deform_attn_reference, float32_inputs, grad_output)
    kernel = output_and_grads(ms_deform_attn, inputs, grad_output)
    expected_dtypes = (value_dtype, value_dtype, torch.float32, torch.float32)
    for name, got, want, dtype in zip(NAMES, kernel, truth, expected_dtypes):
        assert got.dtype == dtype, f"{name}: {got.dtype} != {dtype}"
        # Output and grad_value are float32 sums rounded once to value's dtype; the location and
        # weight gradients are float32 sums of the same products, so only float32 summation order
        # separates them.
        tolerance = 2 * torch.finfo(value_dtype).eps if dtype == value_dtype else 1e-5
        assert_close_to(got, want, tolerance, name)


@pytest.mark.parametrize("value_dtype", REDUCED, ids=str)
def test_mixed_reference_computes_in_float32(value_dtype):
    value, *rest = mixed_inputs(value_dtype, "cpu")
    got = ms_deform_attn_reference(value, *rest)
    assert got.dtype == value_dtype
    assert torch.equal(got, ms_deform_attn_reference(value.float(), *rest).to(value_dtype))


@pytest.mark.parametrize("value_dtype", REDUCED, ids=str)
def test_opcheck_mixed(device, value_dtype):
    value, spatial_shapes, level_start_index, locations, weights = mixed_inputs(value_dtype, device)
    torch.library.opcheck(torch.ops.detrx.ms_deform_attn.default,
                          (value.requires_grad_(), spatial_shapes, level_start_index,
                           locations.requires_grad_(), weights.requires_grad_()))
    grad_output = torch.randn(value.shape[0], locations.shape[1], value.shape[2] * value.shape[3],
                              device=device).to(value_dtype)
    torch.library.opcheck(torch.ops.detrx.ms_deform_attn_backward.default,
                          (grad_output, value.detach(), spatial_shapes, level_start_index,
                           locations.detach(), weights.detach()))


@pytest.mark.full_graph
def test_compile_fullgraph_mixed():
    inputs = mixed_inputs(torch.bfloat16, "cpu")
    compiled = torch.compile(ms_deform_attn, fullgraph=True, backend="aot_eager")
    got = compiled(*inputs)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, ms_deform_attn(*inputs))


REFUSED_MIXES = {  # (value, sampling_locations, attention_weights) -> the argument named
    "float32 value, float16 locations": ((torch.float32, torch.float16, torch.float16), "sampling_locations"),
    "float64 value, float32 locations": ((torch.float64, torch.float32, torch.float32), "sampling_locations"),
    "float16 value, bfloat16 locations": ((torch.float16, torch.bfloat16, torch.bfloat16), "sampling_locations"),
    "bfloat16 value, float64 locations": ((torch.bfloat16, torch.float64, torch.float64), "sampling_locations"),
    "float16 value, float32 locations, float16 weights": ((torch.float16, torch.float32, torch.float16),
                                                          "attention_weights"),
    "float16 value and locations, float32 weights": ((torch.float16, torch.float16, torch.float32),
                                                     "attention_weights"),
}


@pytest.mark.parametrize("entry_point", ["python", "op", "reference"])
@pytest.mark.parametrize("case", REFUSED_MIXES)
def test_other_mixes_are_refused(case, entry_point):
    (value_dtype, location_dtype, weight_dtype), name = REFUSED_MIXES[case]
    value, spatial_shapes, level_start_index, locations, weights = make_inputs()
    args = (value.to(value_dtype), spatial_shapes, level_start_index, locations.to(location_dtype),
            weights.to(weight_dtype))
    function = {"python": ms_deform_attn, "op": torch.ops.detrx.ms_deform_attn,
                "reference": ms_deform_attn_reference}[entry_point]
    with pytest.raises(ValueError, match=rf"ms_deform_attn: {name} must have"):
        function(*args)
