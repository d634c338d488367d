"""A small forward + backward of every detrx op on CUDA, for compute-sanitizer and ncu.

    python benchmarks/device_smoke.py [--standard]

Small shapes by default (sanitizers slow kernels down 10-100x); --standard runs the MSDA encoder
shape once (for the ncu profile of the forward and backward kernels).
"""
import argparse

import torch

import detrx.ops as ops
from attn_inputs import CASES, make_inputs


def msda_small(device):
    torch.manual_seed(0)
    shapes = torch.tensor([[6, 5], [3, 4]], device=device)
    starts = torch.tensor([0, 30], device=device)
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        for channels in (32, 30):  # vectorised and one-channel-per-thread paths
            value = torch.randn(2, 42, 4, channels, device=device, dtype=dtype, requires_grad=True)
            locations = (torch.rand(2, 7, 4, 2, 3, 2, device=device, dtype=dtype) * 1.4 - 0.2).requires_grad_()
            weights = torch.rand(2, 7, 4, 2, 3, device=device, dtype=dtype, requires_grad=True)
            out = ops.ms_deform_attn(value, shapes, starts, locations, weights)
            out.square().sum().backward()


def msda_standard(device):
    case = next(case for case in CASES if case.name == "encoder N=2")
    (value, shapes, starts, locations, weights), grad_output = make_inputs(case, "realistic", torch.float32, device)
    leaves = [t.requires_grad_() for t in (value, locations, weights)]
    out = ops.ms_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2])
    out.backward(grad_output)


def dn_small(device):
    generator = torch.Generator(device=device).manual_seed(0)
    labels = torch.randint(0, 5, (3, 4), device=device)
    boxes = torch.rand(3, 4, 4, device=device) * 0.5 + 0.25
    counts = torch.tensor([4, 0, 2], device=device)
    for contrastive in (False, True):
        ops.build_dn_queries(labels, boxes, counts, num_classes=5, num_queries=10, num_groups=3,
                             contrastive=contrastive, generator=generator, max_gt=4)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standard", action="store_true", help="one MSDA encoder-sized forward/backward")
    args = parser.parse_args()
    if args.standard:
        msda_standard("cuda")
    else:
        msda_small("cuda")
        dn_small("cuda")
    torch.cuda.synchronize()
    print("device smoke: ok")
