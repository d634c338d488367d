"""spatial_shapes_list: the level shapes as Python ints, next to the spatial_shapes tensor.

With it the layout is checked on the host from the list (ValueError naming spatial_shapes_list);
on the CPU the tensors are still read and must agree. Results are those of the call without it, for
the op, its backward, the reference, the module, opcheck and torch.compile.
"""
import pytest
import torch

from helpers import SMALL_LEVELS, make_inputs, output_and_grads
from detrx.nn import MSDeformAttn
from detrx.ops import ms_deform_attn, ms_deform_attn_reference

LIST = [(5, 7), (3, 2)]  # SMALL_LEVELS, as make_inputs builds them
FLAT = [5, 7, 3, 2]


def with_list(op, spatial_shapes_list=LIST):
    return lambda *args: op(*args, spatial_shapes_list=spatial_shapes_list)


@pytest.mark.parametrize("op", [ms_deform_attn, ms_deform_attn_reference], ids=["op", "reference"])
def test_same_results_with_and_without_the_list(device, op):
    """Bitwise on the CPU; on CUDA the value gradient is summed with atomic adds (both the op's and
    grid_sample's backward), whose order changes from run to run: there it agrees to rounding."""
    inputs = make_inputs(channels=32, device=device)
    for got, want in zip(output_and_grads(with_list(op), inputs), output_and_grads(op, inputs)):
        if device == "cpu":
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spatial_shapes_list, message", [
    ([(5, 7)], "must be a list of L = 2 \\(H, W\\) pairs"),
    ([(5, 7), (3, 2, 1)], "must be a list of L = 2 \\(H, W\\) pairs"),
    (FLAT, "must be a list of L = 2 \\(H, W\\) pairs"),
    ([(5, 7), (3, 2.0)], "must hold ints"),
    ([(5, 7), (-3, -2)], "must be non-negative"),
    ([(5, 7), (3, 3)], "areas sum to 44 but value has S = 41 rows"),
])
@pytest.mark.parametrize("op", [ms_deform_attn, ms_deform_attn_reference], ids=["op", "reference"])
def test_bad_list_names_the_argument(op, spatial_shapes_list, message):
    with pytest.raises(ValueError, match=f"ms_deform_attn: spatial_shapes_list {message}"):
        op(*make_inputs(), spatial_shapes_list=spatial_shapes_list)


@pytest.mark.parametrize("spatial_shapes_hw, message", [
    ([5, 7], "spatial_shapes_hw must be \\(H_0, W_0, H_1, W_1, ...\\) for the L = 2 levels"),
    ([5, 7, -3, -2], "spatial_shapes_hw must be non-negative"),
    ([5, 7, 3, 3], "spatial_shapes_hw areas sum to 44 but value has S = 41"),
    ([7, 5, 2, 3], "spatial_shapes and spatial_shapes_hw disagree at level 0: \\(5, 7\\) vs \\(7, 5\\)"),
])
def test_the_op_checks_the_flat_list_on_the_host(spatial_shapes_hw, message):
    inputs = make_inputs()
    with pytest.raises(ValueError, match=f"ms_deform_attn: {message}"):
        torch.ops.detrx.ms_deform_attn(*inputs, spatial_shapes_hw)
    grad_output = torch.zeros(2, 6, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match=f"ms_deform_attn: {message}"):
        torch.ops.detrx.ms_deform_attn_backward(grad_output, *inputs, spatial_shapes_hw)


def test_list_disagreeing_with_the_tensor_on_the_cpu():
    value, _, starts, locations, weights = make_inputs()
    transposed = torch.tensor([[7, 5], [2, 3]])  # same areas, other shapes: only the tensor data tells
    with pytest.raises(ValueError, match="disagree at level 0"):
        ms_deform_attn(value, transposed, starts, locations, weights, spatial_shapes_list=LIST)


def test_opcheck_with_the_list(device):
    value, shapes, starts, locations, weights = make_inputs(channels=16, device=device)
    args = (value.requires_grad_(), shapes, starts, locations.requires_grad_(), weights.requires_grad_(), FLAT)
    torch.library.opcheck(torch.ops.detrx.ms_deform_attn.default, args)
    grad_output = torch.randn(2, 6, 2 * 16, dtype=value.dtype, device=device)
    torch.library.opcheck(torch.ops.detrx.ms_deform_attn_backward.default,
                          (grad_output, value.detach(), shapes, starts, locations.detach(), weights.detach(), FLAT))


@pytest.mark.full_graph
def test_compile_fullgraph_with_the_list(device):
    inputs = make_inputs(channels=32, dtype=torch.float32, device=device)

    def layer(value, spatial_shapes, level_start_index, locations, weights):
        return ms_deform_attn(value * 2, spatial_shapes, level_start_index, locations, weights,
                              spatial_shapes_list=LIST).tanh()

    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(*inputs), layer(*inputs))


def test_module_with_the_list(device):
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=3).to(device).double()
    _, shapes, starts, _, _ = make_inputs(device=device)
    S = sum(h * w for h, w in SMALL_LEVELS)
    query = torch.randn(2, 5, 16, dtype=torch.float64, device=device)
    memory = torch.randn(2, S, 16, dtype=torch.float64, device=device)
    reference_points = torch.rand(2, 5, 2, 2, dtype=torch.float64, device=device)
    expected = module(query, reference_points, memory, shapes, starts)
    got = module(query, reference_points, memory, shapes, starts, input_spatial_shapes_list=LIST)
    assert torch.equal(got, expected)
