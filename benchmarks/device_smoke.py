"""A small forward + backward of every detrx op on CUDA, for compute-sanitizer and ncu.

    python benchmarks/device_smoke.py [--standard]

Small shapes by default (sanitizers slow kernels down 10-100x), covering every kernel variant: MSDA
in each dtype on both channel paths (16-byte vectors, one channel per thread), with and without
spatial_shapes_list, with value and grad_output one element off 16-byte alignment in float16 and
bfloat16; the DN op in each noise style, with counter-based and pre-drawn noise, with and without
the per-image mask, float16 boxes, and K = 0. Every output is read back (summed), so that initcheck
sees any element a kernel left unwritten. --standard runs the MSDA encoder shape once (for the ncu
profile of the forward and backward kernels).
"""
import argparse
import itertools

import torch

import detrx.ops as ops
from attn_inputs import CASES, make_inputs

MSDA_LEVELS = [(6, 5), (3, 4)]


def misaligned(tensor):
    """The same values one element into a larger buffer."""
    buffer = torch.empty(tensor.numel() + 1, dtype=tensor.dtype, device=tensor.device)
    return buffer[1:].view(tensor.shape).copy_(tensor)


def msda_small(device):
    torch.manual_seed(0)
    shapes = torch.tensor(MSDA_LEVELS, device=device)
    starts = torch.tensor([0, 30], device=device)
    checksum = torch.zeros((), device=device, dtype=torch.float64)
    dtypes = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    for dtype, channels, with_list, misalign in itertools.product(dtypes, (32, 30), (True, False), (False, True)):
        if misalign and dtype not in (torch.float16, torch.bfloat16):
            continue
        value = torch.randn(2, 42, 4, channels, device=device, dtype=dtype)
        value = (misaligned(value) if misalign else value).requires_grad_()
        locations = (torch.rand(2, 7, 4, 2, 3, 2, device=device, dtype=dtype) * 1.4 - 0.2).requires_grad_()
        weights = torch.rand(2, 7, 4, 2, 3, device=device, dtype=dtype, requires_grad=True)
        out = ops.ms_deform_attn(value, shapes, starts, locations, weights,
                                 spatial_shapes_list=MSDA_LEVELS if with_list else None)
        grad_output = torch.randn_like(out)
        out.backward(misaligned(grad_output) if misalign else grad_output)
        for tensor in (out, value.grad, locations.grad, weights.grad):
            checksum += tensor.double().sum()
    return checksum


def dn_small(device):
    generator = torch.Generator(device="cpu").manual_seed(0)
    checksum = torch.zeros((), device=device, dtype=torch.float64)
    labels = torch.randint(0, 5, (3, 4), device=device)
    counts = torch.tensor([4, 0, 2], device=device)
    for style, pre_drawn, per_image_mask, dtype in itertools.product(
            ("dn_detr", "dino"), (False, True), (True, False), (torch.float32, torch.float16)):
        boxes = (torch.rand(3, 4, 4, device=device) * 0.5 + 0.25).to(dtype)
        contrastive = style == "dino"
        noise = torch.rand(3, 3 * (2 if contrastive else 1) * 4, 6, device=device) if pre_drawn else None
        dn = ops.build_dn_queries(labels, boxes, counts, num_classes=5, num_queries=10, num_groups=3,
                                  contrastive=contrastive, noise_style=style, generator=generator, max_gt=4,
                                  noise=noise, per_image_mask=per_image_mask)
        checksum += sum(t.double().sum() for t in dn[:7] if t is not None)
    empty = ops.build_dn_queries(labels[:, :0], torch.rand(3, 0, 4, device=device), torch.zeros_like(counts),
                                 num_classes=5, num_queries=10, generator=generator, max_gt=0)  # K = 0
    return checksum + sum(t.double().sum() for t in empty[:7] if t is not None)


def msda_standard(device):
    case = next(case for case in CASES if case.name == "encoder N=2")
    (value, shapes, starts, locations, weights), grad_output = make_inputs(case, "realistic", torch.float32, device)
    leaves = [t.requires_grad_() for t in (value, locations, weights)]
    out = ops.ms_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2])
    out.backward(grad_output)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standard", action="store_true", help="one MSDA encoder-sized forward/backward")
    args = parser.parse_args()
    if args.standard:
        msda_standard("cuda")
    else:
        total = msda_small("cuda") + dn_small("cuda")
        if not torch.isfinite(total):
            raise SystemExit(f"device smoke: non-finite checksum {total.item()}")
    torch.cuda.synchronize()
    print("device smoke: ok")
