"""build_dn_queries: the compiled op against the loop reference, the mask and noise from their
definitions, edge cases, opcheck, and errors for bad input."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import detrx
from detrx.ops import build_dn_queries, build_dn_queries_reference, pad_targets
from detrx.ops.dn_common import MIN_BOX_SIZE
from detrx.ops.dn_queries_reference import dn_counter_noise

requires_extension = pytest.mark.skipif(not detrx.is_compiled(), reason="detrx._C is not built")
requires_cuda = pytest.mark.skipif(not (detrx.is_compiled() and torch.cuda.is_available()), reason="needs a GPU")
TENSOR_FIELDS = ("labels", "boxes", "gt_index", "positive", "valid", "attn_mask", "shared_attn_mask")
INT_FIELDS = ("num_dn", "num_groups", "group_size", "num_classes")


def random_gts(batch, max_count, num_classes, generator, dtype=torch.float32, counts=None):
    """Padded gts [B, G]: labels, boxes well inside the image (cx, cy in [0.3, 0.7], w, h in [0.05, 0.3])."""
    if counts is None:
        counts = torch.randint(0, max_count + 1, (batch,), generator=generator)
    G = int(counts.max()) if batch else 0
    labels = torch.randint(0, num_classes, (batch, G), generator=generator)
    centres = 0.3 + 0.4 * torch.rand(batch, G, 2, generator=generator)
    sizes = 0.05 + 0.25 * torch.rand(batch, G, 2, generator=generator)
    return labels, torch.cat([centres, sizes], -1).to(dtype), counts


def assert_same_queries(actual, expected, atol):
    for name in TENSOR_FIELDS:
        a, e = getattr(actual, name), getattr(expected, name)
        if e is None:
            assert a is None, name
        elif a.is_floating_point():
            torch.testing.assert_close(a, e, atol=atol, rtol=0, msg=name)
        else:
            assert torch.equal(a, e), name
    for name in INT_FIELDS:
        assert getattr(actual, name) == getattr(expected, name), name


def clean_boxes_of_slots(dn, gt_boxes):
    """[B, K, 4] the clean box of every valid slot (read through gt_index)."""
    index = dn.gt_index.clamp(min=0)[..., None].expand(-1, -1, 4)
    return gt_boxes.gather(1, index)


# ---------------------------------------------------------------- compiled op == loop reference

@requires_extension
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31), batch=st.integers(1, 4), max_count=st.integers(0, 7),
       num_classes=st.integers(1, 9), num_queries=st.integers(1, 6), num_groups=st.integers(1, 4),
       dn_number=st.sampled_from([None, 1, 7, 30]), noise_style=st.sampled_from(["dn_detr", "dino"]),
       contrastive=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]),
       per_image_mask=st.booleans(), seeded=st.booleans())
def test_fused_matches_reference(seed, batch, max_count, num_classes, num_queries, num_groups, dn_number,
                                 noise_style, contrastive, dtype, per_image_mask, seeded):
    generator = torch.Generator().manual_seed(seed)
    labels, boxes, counts = random_gts(batch, max_count, num_classes, generator, dtype)
    kwargs = dict(num_classes=num_classes, num_queries=num_queries, num_groups=num_groups, dn_number=dn_number,
                  label_noise_ratio=0.5, box_noise_scale=0.8, noise_style=noise_style, contrastive=contrastive,
                  per_image_mask=per_image_mask)
    if seeded:  # the kernels' own counter-based noise, replayed by dn_counter_noise
        fused = build_dn_queries(labels, boxes, counts, generator=torch.Generator().manual_seed(seed), **kwargs)
        kernel_seed = torch.randint(2 ** 62, (), generator=torch.Generator().manual_seed(seed)).item()
        noise = dn_counter_noise(kernel_seed, batch, fused.num_dn)
    else:
        layout = build_dn_queries(labels, boxes, counts, **kwargs)
        noise = torch.rand(batch, layout.num_dn, 6, generator=generator)
        fused = build_dn_queries(labels, boxes, counts, noise=noise, **kwargs)
    expected = build_dn_queries_reference(labels, boxes, counts, noise=noise, **kwargs)
    assert_same_queries(fused, expected, atol=1e-6 if dtype == torch.float32 else 1e-12)


@requires_extension
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_boxes_match_reference(dtype):
    generator = torch.Generator().manual_seed(1)
    labels, boxes, counts = random_gts(3, 6, 5, generator, dtype)
    kwargs = dict(num_classes=5, num_queries=4, contrastive=True, noise_style="dino")
    noise = torch.rand(3, build_dn_queries(labels, boxes, counts, **kwargs).num_dn, 6, generator=generator)
    fused = build_dn_queries(labels, boxes, counts, noise=noise, **kwargs)
    expected = build_dn_queries_reference(labels, boxes, counts, noise=noise, **kwargs)
    assert_same_queries(fused, expected, atol=torch.finfo(dtype).eps)


# ---------------------------------------------------------------- layout and mask, from the definition

@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
@pytest.mark.parametrize("contrastive", [False, True])
def test_layout_pairs_every_gt_once_per_group(builder, contrastive):
    labels, boxes, counts = random_gts(4, 6, 7, torch.Generator().manual_seed(2), counts=torch.tensor([6, 0, 3, 1]))
    dn = builder(labels, boxes, counts, num_classes=7, num_queries=5, num_groups=3, contrastive=contrastive)
    S = dn.group_size
    assert S == (12 if contrastive else 6) and dn.num_groups == 3 and dn.num_dn == 3 * S
    for b, n in enumerate(counts.tolist()):
        for g in range(dn.num_groups):
            group = slice(g * S, (g + 1) * S)
            for positive in ([True, False] if contrastive else [True]):
                half = dn.valid[b, group] & (dn.positive[b, group] == positive)
                assert sorted(dn.gt_index[b, group][half].tolist()) == list(range(n))
            assert torch.equal(dn.positive[b, group], torch.arange(S) < 6)  # slot r < max_gt is positive
    padded = ~dn.valid
    assert (dn.gt_index[padded] == -1).all() and (dn.labels[padded] == 7).all() and (dn.boxes[padded] == 0).all()
    assert (dn.gt_index[dn.valid] >= 0).all() and (dn.labels[dn.valid] < 7).all()


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
@pytest.mark.parametrize("contrastive", [False, True])
def test_mask_properties(builder, contrastive):
    labels, boxes, counts = random_gts(3, 5, 4, torch.Generator().manual_seed(3), counts=torch.tensor([5, 2, 0]))
    N = 6
    dn = builder(labels, boxes, counts, num_classes=4, num_queries=N, num_groups=4, contrastive=contrastive)
    K, S = dn.num_dn, dn.group_size
    group = torch.arange(K) // S                                      # [K] group of each DN slot
    for mask, valid in [(dn.shared_attn_mask, torch.ones(K, dtype=torch.bool))] + \
                       [(dn.attn_mask[b], dn.valid[b]) for b in range(3)]:
        assert mask.shape == (K + N, K + N)
        assert mask[K:, :K].all(), "matching queries must not see DN queries"
        assert not mask[:, K:].any(), "matching queries are visible to everyone"
        other_group = group[:, None] != group[None, :]
        assert mask[:K, :K][other_group].all(), "no cross-group visibility"
        same_group = ~other_group
        assert torch.equal(mask[:K, :K][same_group], (~valid[None, :].expand(K, K))[same_group]), \
            "within a group, exactly the valid slots are visible"
        assert mask[:, :K][:, ~valid].all(), "padded slots are invisible to every query"
    assert torch.equal(dn.shared_attn_mask, dn.attn_mask[0])          # image 0 has the most gts: no padding


# ---------------------------------------------------------------- noise

def _centre_and_corner_offsets(dn, gt_boxes):
    clean = clean_boxes_of_slots(dn, gt_boxes)                        # [B, K, 4]
    half = clean[..., 2:] / 2
    def corners(box):
        return torch.cat([box[..., :2] - box[..., 2:] / 2, box[..., :2] + box[..., 2:] / 2], -1)
    corner_shift = (corners(dn.boxes) - corners(clean)).abs() / torch.cat([half, half], -1)
    centre_shift = (dn.boxes[..., :2] - clean[..., :2]).abs() / half
    size_change = (dn.boxes[..., 2:] / clean[..., 2:] - 1).abs()
    return corner_shift, centre_shift, size_change


@pytest.mark.parametrize("noise_style", ["dn_detr", "dino"])
def test_noise_ranges_positives_within_lambda_negatives_between_lambda_and_twice(noise_style):
    lam = 0.4
    labels, boxes, counts = random_gts(8, 20, 5, torch.Generator().manual_seed(4), torch.float64)
    dn = build_dn_queries(labels, boxes, counts, num_classes=5, num_queries=3, num_groups=10,
                          box_noise_scale=lam, noise_style=noise_style, contrastive=True,
                          generator=torch.Generator().manual_seed(5))
    corner_shift, centre_shift, size_change = _centre_and_corner_offsets(dn, boxes)
    eps = 1e-9
    positive, negative = dn.valid & dn.positive, dn.valid & ~dn.positive
    if noise_style == "dino":
        shifts = (corner_shift[positive], corner_shift[negative])
    else:
        shifts = (torch.cat([centre_shift, size_change], -1)[positive],
                  torch.cat([centre_shift, size_change], -1)[negative])
    assert (shifts[0] < lam + eps).all()
    assert (shifts[1] >= lam - eps).all() and (shifts[1] < 2 * lam + eps).all()
    assert shifts[0].max() > 0.9 * lam and shifts[1].max() > 1.9 * lam   # the ranges are used, not shrunk


@pytest.mark.parametrize("noise_style", ["dn_detr", "dino"])
def test_boxes_clamped_with_positive_size(noise_style):
    boxes = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.0, 0.3], [0.02, 0.98, 0.9, 0.9]]])
    dn = build_dn_queries(torch.zeros(1, 4, dtype=torch.int64), boxes, torch.tensor([4]), num_classes=2,
                          num_queries=2, num_groups=50, box_noise_scale=1.0, noise_style=noise_style,
                          contrastive=True, generator=torch.Generator().manual_seed(6))
    assert torch.isfinite(dn.boxes).all()
    assert ((dn.boxes >= 0) & (dn.boxes <= 1)).all()
    assert (dn.boxes[..., 2:] >= MIN_BOX_SIZE).all()


def test_label_flip_rate_and_uniform_classes():
    num_classes, ratio = 10, 0.3
    labels = torch.full((16, 50), 3, dtype=torch.int64)
    boxes = torch.full((16, 50, 4), 0.5)
    dn = build_dn_queries(labels, boxes, torch.full((16,), 50), num_classes=num_classes, num_queries=1,
                          num_groups=50, label_noise_ratio=ratio, generator=torch.Generator().manual_seed(7))
    n = dn.labels.numel()  # 40,000 draws
    changed = (dn.labels != 3).float().mean().item()
    expected = ratio * (num_classes - 1) / num_classes                 # a flip may redraw the same class
    assert abs(changed - expected) < 4 * (expected * (1 - expected) / n) ** 0.5
    flipped_counts = torch.bincount(dn.labels[dn.labels != 3], minlength=num_classes).float()
    others = torch.cat([flipped_counts[:3], flipped_counts[4:]])
    assert (others - others.mean()).abs().max() < 5 * others.mean().sqrt()


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
def test_same_generator_same_queries_and_other_seed_differs(builder):
    labels, boxes, counts = random_gts(4, 10, 6, torch.Generator().manual_seed(8))
    kwargs = dict(num_classes=6, num_queries=4, contrastive=True, noise_style="dino")
    torch.manual_seed(1)  # the global seed plays no part
    first = builder(labels, boxes, counts, generator=torch.Generator().manual_seed(9), **kwargs)
    torch.manual_seed(2)
    again = builder(labels, boxes, counts, generator=torch.Generator().manual_seed(9), **kwargs)
    other = builder(labels, boxes, counts, generator=torch.Generator().manual_seed(10), **kwargs)
    assert_same_queries(again, first, atol=0)
    assert not torch.equal(other.boxes, first.boxes)
    torch.manual_seed(11)
    default_first = builder(labels, boxes, counts, **kwargs)
    torch.manual_seed(11)
    assert_same_queries(builder(labels, boxes, counts, **kwargs), default_first, atol=0)


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_result_dtypes(builder, dtype):
    labels, boxes, counts = random_gts(3, 4, 5, torch.Generator().manual_seed(0), dtype)
    dn = builder(labels, boxes, counts, num_classes=5, num_queries=4, contrastive=True)
    assert (dn.labels.dtype, dn.boxes.dtype, dn.gt_index.dtype) == (torch.int64, dtype, torch.int64)
    assert {t.dtype for t in (dn.positive, dn.valid, dn.attn_mask, dn.shared_attn_mask)} == {torch.bool}


def test_counter_noise_is_uniform():
    u = dn_counter_noise(12345, 50, 200)                              # 60,000 uniforms
    assert u.dtype == torch.float32 and u.shape == (50, 200, 6)       # what the kernels draw
    assert ((u >= 0) & (u < 1)).all()
    histogram = torch.histc(u, bins=10, min=0, max=1)
    assert (histogram - 6000).abs().max() < 5 * 6000 ** 0.5
    assert abs(torch.corrcoef(torch.stack([u.flatten()[:-1], u.flatten()[1:]]))[0, 1]) < 0.02


# ---------------------------------------------------------------- groups, edge cases

@pytest.mark.parametrize("contrastive", [False, True])
def test_dn_number_sets_groups_from_the_budget(contrastive):
    labels, boxes, counts = random_gts(2, 7, 3, torch.Generator().manual_seed(13), counts=torch.tensor([7, 2]))
    dn = build_dn_queries(labels, boxes, counts, num_classes=3, num_queries=2, num_groups=5, dn_number=100,
                          contrastive=contrastive)
    group_size = 14 if contrastive else 7
    assert (dn.group_size, dn.num_groups, dn.num_dn) == (group_size, 100 // group_size, 100 // group_size * group_size)
    small = build_dn_queries(labels, boxes, counts, num_classes=3, num_queries=2, dn_number=3, contrastive=contrastive)
    assert small.num_groups == 1


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
@pytest.mark.parametrize("count, num_groups", [(1, 5), (0, 1)], ids=["one gt", "no gt"])
def test_dn_number_with_groups_of_one_or_no_gt(builder, count, num_groups):
    """Groups of one gt: the budget of 5 is 5 groups; without gts one empty group."""
    labels, boxes, _ = random_gts(2, 1, 3, torch.Generator().manual_seed(14), counts=torch.tensor([1, 1]))
    dn = builder(labels[:, :count], boxes[:, :count], torch.tensor([count, 0]), num_classes=3, num_queries=2,
                 num_groups=3, dn_number=5)
    assert (dn.group_size, dn.num_groups, dn.num_dn) == (count, num_groups, count * num_groups)


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
def test_batch_without_gts_blocks_nothing(builder):
    dn = builder(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(2, 0, 4), torch.zeros(2, dtype=torch.int64),
                 num_classes=3, num_queries=5, contrastive=True)
    assert dn.num_dn == 0 and dn.labels.shape == (2, 0) and dn.boxes.shape == (2, 0, 4)
    assert dn.attn_mask.shape == (2, 5, 5) and not dn.attn_mask.any() and not dn.shared_attn_mask.any()


def test_one_image_with_300_gts_and_max_gt_from_caller():
    labels, boxes, counts = random_gts(3, 300, 91, torch.Generator().manual_seed(14),
                                       counts=torch.tensor([0, 300, 4]))
    kwargs = dict(num_classes=91, num_queries=900, dn_number=100, contrastive=True, noise_style="dino")
    dn = build_dn_queries(labels, boxes, counts, max_gt=300, generator=torch.Generator().manual_seed(15), **kwargs)
    assert (dn.num_dn, dn.num_groups, dn.group_size) == (600, 1, 600)
    assert dn.valid.sum(1).tolist() == [0, 600, 8]
    larger = build_dn_queries(labels, boxes, counts, max_gt=310, **kwargs)  # more room than needed is legal
    assert larger.group_size == 620 and larger.valid.sum(1).tolist() == [0, 600, 8]


def test_pad_targets():
    targets = [{"labels": torch.tensor([2, 1]), "boxes": torch.rand(2, 4)},
               {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
               {"labels": torch.tensor([0, 0, 4]), "boxes": torch.rand(3, 4)}]
    labels, boxes, counts = pad_targets(targets)
    assert labels.shape == (3, 3) and boxes.shape == (3, 3, 4) and counts.tolist() == [2, 0, 3]
    assert labels.dtype == torch.int64 and counts.dtype == torch.int64
    for b, target in enumerate(targets):
        n = counts[b]
        assert torch.equal(labels[b, :n], target["labels"]) and torch.equal(boxes[b, :n], target["boxes"])


# ---------------------------------------------------------------- opcheck, CUDA

@requires_extension
@pytest.mark.parametrize("per_image_mask", [False, True])
def test_opcheck(per_image_mask):
    labels, boxes, counts = random_gts(3, 5, 4, torch.Generator().manual_seed(16))
    max_gt = int(counts.max())
    for noise in (None, torch.rand(3, 2 * 2 * max_gt, 6)):
        args = (labels, boxes, counts, torch.tensor(17), noise, 4, 6, max_gt, 2, True, "dino", 0.5, 0.4,
                MIN_BOX_SIZE, per_image_mask)
        torch.library.opcheck(torch.ops.detrx.dn_queries.default, args)


@pytest.mark.full_graph
@requires_extension
def test_torch_compile_full_graph_with_dynamic_shapes():
    labels, boxes, counts = random_gts(3, 4, 5, torch.Generator().manual_seed(20), counts=torch.tensor([4, 1, 0]))

    def build(labels, boxes, counts, seed):  # max_gt = 4, 3 groups: K = 24 without reading data
        return torch.ops.detrx.dn_queries(labels, boxes, counts, seed, None, 5, 6, 4, 3, True, "dino", 0.5, 0.4,
                                          MIN_BOX_SIZE, True)

    compiled = torch.compile(build, fullgraph=True, dynamic=True)
    for actual, expected in zip(compiled(labels, boxes, counts, torch.tensor(21)),
                                build(labels, boxes, counts, torch.tensor(21))):
        assert actual.shape == expected.shape and torch.equal(actual, expected)


@requires_cuda
@pytest.mark.parametrize("contrastive", [False, True])
def test_cuda_matches_cpu_without_sync(contrastive):
    labels, boxes, counts = random_gts(5, 12, 9, torch.Generator().manual_seed(18), counts=torch.tensor([12, 0, 3, 7, 12]))
    kwargs = dict(num_classes=9, num_queries=10, contrastive=contrastive, noise_style="dino", max_gt=12)
    on_cpu = build_dn_queries(labels, boxes, counts, generator=torch.Generator().manual_seed(19), **kwargs)
    cuda = [t.cuda() for t in (labels, boxes, counts)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        on_gpu = build_dn_queries(*cuda, generator=torch.Generator().manual_seed(19), **kwargs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    on_gpu = on_gpu._replace(**{name: getattr(on_gpu, name).cpu() for name in TENSOR_FIELDS})
    assert_same_queries(on_gpu, on_cpu, atol=1e-6)


@requires_cuda
def test_cuda_inputs_give_cuda_results_from_every_entry_point():
    """The reference, pad_targets, and the op with the default generator or an unknown max_gt, all on
    the GPU; the reference with the same noise equals the CPU's."""
    labels, boxes, counts = random_gts(3, 5, 9, torch.Generator().manual_seed(20), counts=torch.tensor([5, 0, 2]))
    noise = torch.rand(3, 2 * 10, 6, generator=torch.Generator().manual_seed(21))
    kwargs = dict(num_classes=9, num_queries=4, num_groups=2, contrastive=True, noise_style="dino")
    on_cpu = build_dn_queries_reference(labels, boxes, counts, noise=noise, **kwargs)
    cuda = [t.cuda() for t in (labels, boxes, counts)]
    on_gpu = build_dn_queries_reference(*cuda, noise=noise.cuda(), **kwargs)
    assert all(getattr(on_gpu, name).is_cuda for name in TENSOR_FIELDS)
    assert_same_queries(on_gpu._replace(**{name: getattr(on_gpu, name).cpu() for name in TENSOR_FIELDS}), on_cpu, 1e-6)
    assert build_dn_queries_reference(*cuda, generator=torch.Generator("cuda").manual_seed(3), **kwargs).boxes.is_cuda
    for max_gt in (None, 5):  # read from the GPU, or checked there without a read
        assert all(getattr(build_dn_queries(*cuda, max_gt=max_gt, **kwargs), name).is_cuda for name in TENSOR_FIELDS)
    bad_labels = cuda[0].clone()
    bad_labels[0, 1] = 9
    with pytest.raises(ValueError, match="gt_labels must be in"):  # without max_gt the gts are read, so checked
        build_dn_queries(bad_labels, *cuda[1:], **kwargs)
    targets = [{"labels": labels[b, :n], "boxes": boxes[b, :n]} for b, n in enumerate(counts.tolist())]
    padded = pad_targets([{key: value.cuda() for key, value in target.items()} for target in targets])
    assert all(t.is_cuda for t in padded) and padded[2].tolist() == [5, 0, 2]


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
def test_no_box_noise_leaves_the_gt_boxes(builder):
    labels, boxes, counts = random_gts(3, 4, 5, torch.Generator().manual_seed(15), counts=torch.tensor([4, 1, 3]))
    dn = builder(labels, boxes, counts, num_classes=5, num_queries=2, num_groups=3, box_noise_scale=0.0)
    gt_boxes = boxes[torch.arange(3)[:, None], dn.gt_index.clamp(min=0)]  # [B, K, 4]
    assert torch.equal(dn.boxes[dn.valid], gt_boxes[dn.valid])
