"""Bad ms_deform_attn arguments raise ValueError naming the argument, from Python and from C++.

Every case runs through the public wrapper (Python checks), the reference, and
torch.ops.detrx.ms_deform_attn directly, which reaches the C++ checks that the kernels share.
"""
import pytest
import torch

from helpers import make_inputs
from detrx.ops import ms_deform_attn, ms_deform_attn_reference

ENTRY_POINTS = {
    "wrapper": ms_deform_attn,
    "reference": ms_deform_attn_reference,
    "torch.ops": lambda *args: torch.ops.detrx.ms_deform_attn(*args),
}
ARGUMENTS = ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")


def replace(name, make):
    """A case that swaps one argument for make(old argument); the error must name that argument."""
    index = ARGUMENTS.index(name)

    def corrupt(inputs):
        inputs = list(inputs)
        inputs[index] = make(inputs[index])
        return inputs
    return corrupt, name


# Valid inputs: levels (5, 7), (3, 2) -> S = 41; N = 2, Lq = 6, M = 2, D = 8, L = 2, P = 3.
BAD_INPUTS = {
    "value rank 3": replace("value", lambda t: t[..., 0]),
    "value rank 5": replace("value", lambda t: t[..., None]),
    "value int64": replace("value", lambda t: t.long()),
    "spatial_shapes rank 1": replace("spatial_shapes", lambda t: t.flatten()),
    "spatial_shapes [L, 3]": replace("spatial_shapes", lambda t: torch.cat([t, t[:, :1]], 1)),
    "spatial_shapes int32": replace("spatial_shapes", lambda t: t.int()),
    "spatial_shapes float": replace("spatial_shapes", lambda t: t.double()),
    "spatial_shapes area sum != S": replace("spatial_shapes", lambda t: torch.tensor([[5, 7], [3, 3]])),
    "spatial_shapes negative": replace("spatial_shapes", lambda t: -t),
    "level_start_index rank 2": replace("level_start_index", lambda t: t[None]),
    "level_start_index length != L": replace("level_start_index", lambda t: t[:1]),
    "level_start_index int32": replace("level_start_index", lambda t: t.int()),
    "level_start_index not the running sum": replace("level_start_index", lambda t: torch.tensor([0, 34])),
    "level_start_index not starting at 0": replace("level_start_index", lambda t: t + 1),
    "sampling_locations rank 5": replace("sampling_locations", lambda t: t[..., 0]),
    "sampling_locations 3 coordinates": replace("sampling_locations", lambda t: torch.cat([t, t[..., :1]], -1)),
    "sampling_locations N mismatch": replace("sampling_locations", lambda t: t[:1]),
    "sampling_locations M mismatch": replace("sampling_locations", lambda t: t[:, :, :1]),
    "sampling_locations L mismatch": replace("sampling_locations", lambda t: torch.cat([t, t[:, :, :, :1]], 3)),
    "sampling_locations float32": replace("sampling_locations", lambda t: t.float()),
    "attention_weights rank 4": replace("attention_weights", lambda t: t[..., 0]),
    "attention_weights Lq mismatch": replace("attention_weights", lambda t: t[:, :-1]),
    "attention_weights P mismatch": replace("attention_weights", lambda t: t[..., :-1]),
    "attention_weights L mismatch": replace("attention_weights", lambda t: t[:, :, :, :1]),
    "attention_weights float32": replace("attention_weights", lambda t: t.float()),
    "attention_weights float16": replace("attention_weights", lambda t: t.half()),
}


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_the_argument(entry_point, case):
    corrupt, name = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=rf"ms_deform_attn: {name}\b"):
        ENTRY_POINTS[entry_point](*corrupt(make_inputs()))


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("shapes", [[[5, 7], [-3, 2]], [[5, 7], [3, -2]]], ids=["H<0", "W<0"])
def test_one_negative_side_is_named_as_negative(entry_point, shapes):
    """Its area is negative too (so the areas miss S): the message names the sign, the cause."""
    corrupt, _ = replace("spatial_shapes", lambda t: torch.tensor(shapes))
    with pytest.raises(ValueError, match="ms_deform_attn: spatial_shapes must be non-negative"):
        ENTRY_POINTS[entry_point](*corrupt(make_inputs()))


def test_not_a_tensor_names_the_argument():
    inputs = list(make_inputs())
    inputs[1] = [[5, 7], [3, 2]]
    with pytest.raises(ValueError, match="spatial_shapes must be a torch.Tensor"):
        ms_deform_attn(*inputs)


def test_python_check_names_a_tensor_on_another_device():
    # "meta" stands in for a second device on machines without a GPU.
    corrupt, _ = replace("attention_weights", lambda t: t.to("meta"))
    with pytest.raises(ValueError, match="attention_weights must be on value's device"):
        ms_deform_attn(*corrupt(make_inputs()))


def test_cuda_check_names_a_tensor_on_another_device(device):
    if device == "cpu":
        pytest.skip("needs a second device")
    value, *others = make_inputs(device=device)
    with pytest.raises(ValueError, match="value's device"):
        torch.ops.detrx.ms_deform_attn(value.cpu(), *others)


@pytest.mark.parametrize("grad_output_case, make", [
    ("D mismatch", lambda g: g[..., :-1]),
    ("rank 2", lambda g: g.flatten(0, 1)),
    ("float32", lambda g: g.float()),
])
def test_backward_op_names_a_bad_grad_output(grad_output_case, make):
    value, *others = make_inputs()
    grad_output = torch.zeros(2, 6, 2 * 8, dtype=value.dtype)  # [N, Lq, M * D]
    with pytest.raises(ValueError, match="ms_deform_attn_backward: grad_output must"):
        torch.ops.detrx.ms_deform_attn_backward(make(grad_output), value, *others)


def test_backward_op_checks_the_forward_arguments_too():
    corrupt, _ = BAD_INPUTS["level_start_index not the running sum"]
    grad_output = torch.zeros(2, 6, 2 * 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="level_start_index must be the running sum"):
        torch.ops.detrx.ms_deform_attn_backward(grad_output, *corrupt(make_inputs()))
