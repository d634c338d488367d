"""ms_deform_attn as a torch.library op: gradcheck, opcheck and torch.compile."""
import pytest
import torch

from helpers import make_inputs, off_grid_locations, output_and_grads
from detrx.ops import ms_deform_attn

LEVELS = ((4, 5), (2, 3))


def off_grid_inputs(channels, device, seed=0):
    locations = off_grid_locations(LEVELS, batch=2, queries=3, heads=2, points=2, seed=seed)
    return make_inputs(levels=LEVELS, queries=3, channels=channels, points=2, device=device,
                       locations=locations, seed=seed)


@pytest.mark.parametrize("channels", [3, 16])
def test_gradcheck_all_three_inputs(device, channels):
    value, spatial_shapes, level_start_index, locations, weights = off_grid_inputs(channels, device)
    differentiable = [t.requires_grad_() for t in (value, locations, weights)]

    def op(value, locations, weights):
        return ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)

    assert torch.autograd.gradcheck(op, differentiable, eps=1e-6, atol=1e-8, rtol=1e-6)


def opcheck_samples(device):
    """Several argument sets: channel counts on both kernel paths, one and two levels, outside [0, 1]."""
    return [
        make_inputs(channels=32, device=device),
        make_inputs(levels=[(3, 8)], channels=5, heads=1, points=1, queries=2, device=device, seed=1),
        make_inputs(levels=[(2, 3), (1, 2)], batch=1, channels=64, low=-1.0, high=2.0, device=device, seed=2),
        make_inputs(channels=7, dtype=torch.float32, device=device, seed=3),
    ]


@pytest.mark.parametrize("sample", range(4))
def test_opcheck_forward(device, sample):
    value, spatial_shapes, level_start_index, locations, weights = opcheck_samples(device)[sample]
    args = (value.requires_grad_(), spatial_shapes, level_start_index, locations.requires_grad_(),
            weights.requires_grad_())
    torch.library.opcheck(torch.ops.detrx.ms_deform_attn.default, args)


@pytest.mark.parametrize("sample", range(4))
def test_opcheck_backward(device, sample):
    value, spatial_shapes, level_start_index, locations, weights = opcheck_samples(device)[sample]
    N, Lq, M, _, _ = weights.shape
    grad_output = torch.randn(N, Lq, M * value.shape[-1], dtype=value.dtype, device=device)
    args = (grad_output, value, spatial_shapes, level_start_index, locations, weights)
    torch.library.opcheck(torch.ops.detrx.ms_deform_attn_backward.default, args)


@pytest.mark.full_graph
def test_compile_fullgraph_matches_eager(device):
    inputs = make_inputs(channels=32, dtype=torch.float32, device=device)

    def layer(value, spatial_shapes, level_start_index, locations, weights):
        # The op inside ordinary tensor code, so that the compiled graph has something to fuse.
        return ms_deform_attn(value * 2, spatial_shapes, level_start_index, locations, weights.exp()).tanh()

    # aot_eager runs what matters for the op (Dynamo capture, fake-tensor tracing through
    # register_fake, AOTAutograd's joint graph through register_autograd) without Inductor's C++
    # code generation, which takes ~40 s on a 2-core CPU and treats the op as an opaque call anyway.
    compiled = torch.compile(layer, fullgraph=True, dynamic=False, backend="aot_eager")
    for got, want in zip(output_and_grads(compiled, inputs), output_and_grads(layer, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
