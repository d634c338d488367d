"""The DN op's box arithmetic is never fused into FMAs: on the CPU the boxes are bitwise those of
the float-by-float loop reference (on every compiled CPU level), and on CUDA bitwise the CPU's, in
every mode (DN-DETR and DINO noise, counter-based and pre-drawn noise, with and without the
per-image mask, every box dtype, K = 0), without a host synchronisation."""
import itertools

import pytest
import torch

import detrx
from detrx.ops import build_dn_queries, build_dn_queries_reference
from detrx.ops.dn_common import MIN_BOX_SIZE
from test_dn_queries import TENSOR_FIELDS, assert_same_queries, random_gts

pytestmark = pytest.mark.skipif(not detrx.is_compiled(), reason="detrx._C is not built")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
STYLES = ("dn_detr", "dino")


def inputs(dtype, counts=(9, 0, 4, 1, 7, 9), seed=1):
    labels, boxes, counts = random_gts(len(counts), max(counts), 5, torch.Generator().manual_seed(seed), dtype,
                                       counts=torch.tensor(counts))
    return labels, boxes, counts


def noise_for(counts, num_groups=3, contrastive=True, seed=2):
    """Pre-drawn uniforms [B, K, 6]."""
    K = num_groups * (2 if contrastive else 1) * int(counts.max())
    return torch.rand(len(counts), K, 6, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("noise_style", STYLES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_boxes_are_the_float_by_float_evaluation(noise_style, dtype):
    labels, boxes, counts = inputs(dtype)
    kwargs = dict(num_classes=5, num_queries=4, num_groups=3, contrastive=True, noise_style=noise_style,
                  box_noise_scale=0.7, noise=noise_for(counts))
    levels = detrx._C.supported_cpu_levels()
    before = detrx._C.cpu_level()
    try:
        for level in levels:  # with FMA hardware (avx2, avx512) and without (default)
            detrx._C._set_cpu_level(level)
            fused = build_dn_queries(labels, boxes, counts, **kwargs)
            expected = build_dn_queries_reference(labels, boxes, counts, **kwargs)  # torch ops: no FMA
            assert torch.equal(fused.boxes, expected.boxes), f"level {level}"
    finally:
        detrx._C._set_cpu_level(before)


CUDA_MODES = list(itertools.product(STYLES, ("seed", "pre-drawn"), (True, False), DTYPES))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("noise_style, noise_kind, per_image_mask, dtype", CUDA_MODES)
@pytest.mark.parametrize("counts", [(9, 0, 4, 1, 7, 9), (0, 0)], ids=["gts", "K=0"])
def test_cuda_dn_queries_bitwise_the_cpu(noise_style, noise_kind, per_image_mask, dtype, counts):
    labels, boxes, counts = inputs(dtype, counts)
    kwargs = dict(num_classes=5, num_queries=4, num_groups=3, contrastive=noise_style == "dino",
                  noise_style=noise_style, per_image_mask=per_image_mask, max_gt=int(counts.max()))
    noise = noise_for(counts, contrastive=kwargs["contrastive"]) if noise_kind == "pre-drawn" else None
    on_cpu = build_dn_queries(labels, boxes, counts, noise=noise, generator=torch.Generator().manual_seed(19),
                              **kwargs)
    cuda_args = [t.cuda() for t in (labels, boxes, counts)]
    cuda_noise = None if noise is None else noise.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        on_gpu = build_dn_queries(*cuda_args, noise=cuda_noise, generator=torch.Generator().manual_seed(19),
                                  **kwargs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    on_gpu = on_gpu._replace(**{name: getattr(on_gpu, name).cpu() for name in TENSOR_FIELDS
                                if getattr(on_gpu, name) is not None})
    assert on_cpu.num_dn == 3 * (2 if kwargs["contrastive"] else 1) * kwargs["max_gt"]  # K = 0 without gts
    assert_same_queries(on_gpu, on_cpu, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("batch, max_gt, num_groups, per_image_mask", [
    (2048, 100, 100, False),  # 20.5 M DN slots: the slot kernel's 65535 x 256 threads go round twice
    (64, 100, 8, True),       # 64 x 1100 per-image mask rows: more than the mask kernel's 65535 row blocks
], ids=["slot loop", "mask row loop"])
def test_cuda_dn_grid_stride_loops_run_more_than_once(batch, max_gt, num_groups, per_image_mask):
    labels, boxes, counts = random_gts(batch, max_gt, 80, torch.Generator().manual_seed(4),
                                       counts=torch.full((batch,), max_gt))
    kwargs = dict(num_classes=80, num_queries=300, num_groups=num_groups, contrastive=False,
                  per_image_mask=per_image_mask, max_gt=max_gt)
    on_cpu = build_dn_queries(labels, boxes, counts, generator=torch.Generator().manual_seed(5), **kwargs)
    on_gpu = build_dn_queries(*(t.cuda() for t in (labels, boxes, counts)),
                              generator=torch.Generator().manual_seed(5), **kwargs)
    assert batch * on_cpu.num_dn > 65535 * 256 or batch * (on_cpu.num_dn + 300) > 65535
    on_gpu = on_gpu._replace(**{name: getattr(on_gpu, name).cpu() for name in TENSOR_FIELDS
                                if getattr(on_gpu, name) is not None})
    assert_same_queries(on_gpu, on_cpu, atol=0)


EDGE_BOXES = torch.tensor([[[0.5, 0.5, 1.0, 1.0],       # the whole image
                            [0.05, 0.95, 0.1, 0.1],     # touching the left and bottom edges
                            [0.9, 0.2, 0.2, 0.4],       # touching the right edge
                            [0.5, 0.001, 0.3, 0.002]]])  # thin, on the top edge


@pytest.mark.parametrize("noise_style", STYLES)
@pytest.mark.parametrize("box_noise_scale", [1.0, 2.5])
def test_boxes_at_the_image_edges_are_clamped_like_the_reference(noise_style, box_noise_scale):
    """Noise that pushes boxes out of the image (edge boxes, negatives, scale above 1) is clamped to
    it the same way by the op and the reference, and the labels are the same, with uniforms at the
    switches: 0 and 0.5 (the box noise's sign), the flip ratio itself, and 1 for the class drawn."""
    noise = torch.rand(1, 20 * 2 * 4, 6, generator=torch.Generator().manual_seed(3))
    noise[0, :8, 2:] = 0.5
    noise[0, 8:16, 2:] = 0.0
    noise[0, 16:24, 0] = 0.5  # equal to the ratio: kept
    noise[0, 24:32, :2] = torch.tensor([0.0, 1.0])  # flipped, to the last class
    kwargs = dict(num_classes=5, num_queries=4, num_groups=20, contrastive=True, noise_style=noise_style,
                  box_noise_scale=box_noise_scale, label_noise_ratio=0.5, noise=noise)
    gts = torch.tensor([[0, 1, 2, 3]]), EDGE_BOXES, torch.tensor([4])
    fused, expected = build_dn_queries(*gts, **kwargs), build_dn_queries_reference(*gts, **kwargs)
    assert torch.equal(fused.boxes, expected.boxes) and torch.equal(fused.labels, expected.labels)
    assert expected.labels[0, 16:24].tolist() == [0, 1, 2, 3] * 2 and (expected.labels[0, 24:32] == 4).all()
    boxes = expected.boxes[expected.valid]  # [K, 4]
    assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2:] >= MIN_BOX_SIZE).all()
    if box_noise_scale > 1:  # the clamps were reached
        assert (boxes[:, :2] == 0).any() and (boxes[:, 2:] == 1).any()
