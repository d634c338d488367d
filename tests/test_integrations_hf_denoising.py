"""detrx's get_contrastive_denoising_training_group against transformers' own: equal without noise,
the same noise distributions (statistical tests that can fail), edge cases, and a real RT-DETR
training step with it in place of HF's."""
import inspect
import math

import pytest
import torch

pytest.importorskip("transformers")
stats = pytest.importorskip("scipy.stats")

from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrResNetConfig  # noqa: E402
from transformers.models.rt_detr import modeling_rt_detr  # noqa: E402

from detrx.integrations.hf_denoising import get_contrastive_denoising_training_group  # noqa: E402
from helpers import shared_unless_mutating  # noqa: E402

HF_BUILDER = modeling_rt_detr.get_contrastive_denoising_training_group
NUM_CLASSES = 5
# Per-test significance level of each distribution test; 9 tests in the noise comparison.
ALPHA = 1e-4


def make_targets(counts, generator, dtype=torch.float32):
    """HF targets: boxes well inside the image (cx, cy in [0.35, 0.65], w, h in [0.05, 0.2]), so that
    even negatives (corners moved by up to w) are never clipped."""
    targets = []
    for n in counts:
        centres = 0.35 + 0.3 * torch.rand(n, 2, generator=generator)
        sizes = 0.05 + 0.15 * torch.rand(n, 2, generator=generator)
        targets.append({"class_labels": torch.randint(0, NUM_CLASSES, (n,), generator=generator),
                        "boxes": torch.cat([centres, sizes], 1).to(dtype)})
    return targets


def label_as_feature(labels):
    """A class_embed that shows the labels: [B, K] -> [B, K, 1]."""
    return labels[..., None].double()


def assert_same_result(actual, expected):
    for a, e in zip(actual[:3], expected[:3]):
        assert a.dtype == e.dtype and a.shape == e.shape
        assert torch.equal(a, e)
    a_meta, e_meta = actual[3], expected[3]
    assert a_meta.keys() == e_meta.keys()
    assert a_meta["dn_num_group"] == e_meta["dn_num_group"]
    assert a_meta["dn_num_split"] == e_meta["dn_num_split"]
    assert len(a_meta["dn_positive_idx"]) == len(e_meta["dn_positive_idx"])
    for a, e in zip(a_meta["dn_positive_idx"], e_meta["dn_positive_idx"]):
        assert torch.equal(a, e)


@pytest.mark.parametrize("counts,num_denoising", [([3, 0, 1], 10), ([4, 4], 100), ([2, 7, 5, 1], 3),
                                                  ([1], 1), ([6, 2], 5)])
@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64])
def test_without_noise_equals_hf_exactly(counts, num_denoising, default_dtype):
    generator = torch.Generator().manual_seed(sum(counts) + num_denoising)
    targets = make_targets(counts, generator, dtype=torch.float64)
    class_embed = torch.nn.Embedding(NUM_CLASSES + 1, 8, padding_idx=NUM_CLASSES)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        args = (targets, NUM_CLASSES, 7, class_embed, num_denoising, 0.0, 0.0)
        assert_same_result(get_contrastive_denoising_training_group(*args), HF_BUILDER(*args))
    finally:
        torch.set_default_dtype(previous)


def test_label_noise_only_keeps_boxes_mask_and_meta_exact():
    targets = make_targets([4, 2], torch.Generator().manual_seed(1))
    args = (targets, NUM_CLASSES, 5, label_as_feature, 20)
    ours = get_contrastive_denoising_training_group(*args, label_noise_ratio=0.5, box_noise_scale=0.0)
    theirs = HF_BUILDER(*args, label_noise_ratio=0.0, box_noise_scale=0.0)
    assert not torch.equal(ours[0], theirs[0])     # labels are noisy
    assert_same_result((theirs[0],) + ours[1:], theirs)


@pytest.mark.parametrize("counts", [[0], [0, 0, 0]])
def test_batch_without_boxes_gives_nothing_like_hf(counts):
    targets = make_targets(counts, torch.Generator().manual_seed(0))
    args = (targets, NUM_CLASSES, 5, label_as_feature, 100, 0.5, 1.0)
    assert get_contrastive_denoising_training_group(*args) == HF_BUILDER(*args) == (None, None, None, None)


def test_no_denoising_queries_gives_nothing():
    targets = make_targets([2], torch.Generator().manual_seed(0))
    assert get_contrastive_denoising_training_group(targets, NUM_CLASSES, 5, label_as_feature, 0) == (None,) * 4


def test_image_without_boxes_gets_padded_slots_only():
    targets = make_targets([3, 0], torch.Generator().manual_seed(2))
    labels, boxes, mask, meta = get_contrastive_denoising_training_group(targets, NUM_CLASSES, 4, label_as_feature,
                                                                         9, 0.5, 1.0)
    assert (labels[1] == NUM_CLASSES).all()                                    # "no object" everywhere
    assert torch.equal(boxes[1], torch.full_like(boxes[1], math.log(1e-5)))   # zero boxes as logits
    assert meta["dn_positive_idx"][1].numel() == 0
    assert torch.isfinite(boxes).all() and mask.shape == (18 + 4, 18 + 4)


def _noisy_samples(builder, targets, box_noise_scale, calls, seed):
    """Labels and normalised box offsets of every valid slot over `calls` calls, positives and negatives
    apart; 100 denoising queries, label noise 0.5 and box noise 1.0 (box_noise_scale None) are the defaults."""
    torch.manual_seed(seed)
    counts = [len(t["class_labels"]) for t in targets]
    max_gt = max(counts)
    gt_labels = torch.full((len(targets), max_gt), -1)
    gt_boxes = torch.ones(len(targets), max_gt, 4)
    for i, target in enumerate(targets):
        gt_labels[i, :counts[i]] = target["class_labels"]
        gt_boxes[i, :counts[i]] = target["boxes"]
    labels, positives, negatives = [], [], []
    for _ in range(calls):
        noise = {} if box_noise_scale is None else {"box_noise_scale": box_noise_scale}  # None: the defaults
        query_labels, logits, _, meta = builder(targets, NUM_CLASSES, 5, label_as_feature, **noise)
        copies = 2 * meta["dn_num_group"]
        clean_labels, clean = gt_labels.repeat(1, copies), gt_boxes.repeat(1, copies, 1)       # [B, K], [B, K, 4]
        valid = clean_labels >= 0
        negative = (torch.arange(copies * max_gt) // max_gt % 2 == 1).expand_as(valid)
        boxes = logits.sigmoid()
        offsets = torch.cat([(boxes[..., :2] - clean[..., :2]) / clean[..., 2:], boxes[..., 2:] / clean[..., 2:]], -1)
        labels.append(torch.stack([query_labels[..., 0][valid], clean_labels[valid].double()], 1))
        positives.append(offsets[valid & ~negative])
        negatives.append(offsets[valid & negative])
    return torch.cat(labels), torch.cat(positives), torch.cat(negatives)


def _distribution_p_values(ours, theirs):
    """KS p-values of the 8 offset coordinates (positives, negatives) and the chi-square p-value of
    the classes that changed labels take."""
    p_values = {}
    for kind, a, b in (("positive", ours[1], theirs[1]), ("negative", ours[2], theirs[2])):
        for c, name in enumerate(("dcx/w", "dcy/h", "w'/w", "h'/h")):
            p_values[f"{kind} {name}"] = stats.ks_2samp(a[:, c].numpy(), b[:, c].numpy()).pvalue
    histograms = [torch.bincount(new[new != old].long(), minlength=NUM_CLASSES) for new, old in
                  (ours[0].T, theirs[0].T)]
    p_values["changed classes"] = stats.chi2_contingency(torch.stack(histograms).numpy()).pvalue
    return p_values


@pytest.fixture(scope=shared_unless_mutating)
def noise_samples():
    targets = make_targets([5, 3, 0, 5], torch.Generator().manual_seed(4))
    ours = _noisy_samples(get_contrastive_denoising_training_group, targets, None, calls=60, seed=10)
    theirs = _noisy_samples(HF_BUILDER, targets, None, calls=60, seed=11)
    return targets, ours, theirs


def test_label_flip_rate_matches_hf(noise_samples):
    _, ours, theirs = noise_samples
    # A label is redrawn with probability 0.5 * 0.5 and then changes with probability 1 - 1/C.
    expected = 0.25 * (1 - 1 / NUM_CLASSES)
    rates = [float((labels[:, 0] != labels[:, 1]).double().mean()) for labels in (ours[0], theirs[0])]
    n = ours[0].shape[0]
    assert n == theirs[0].shape[0] > 30_000
    sigma = math.sqrt(expected * (1 - expected) / n)   # binomial standard deviation of one rate
    assert abs(rates[0] - expected) < 5 * sigma, rates
    assert abs(rates[1] - expected) < 5 * sigma, rates
    assert abs(rates[0] - rates[1]) < 5 * math.sqrt(2) * sigma, rates


def test_box_offsets_and_new_classes_match_hf(noise_samples):
    _, ours, theirs = noise_samples
    assert ours[1].shape[0] > 15_000 and ours[2].shape[0] > 15_000
    p_values = _distribution_p_values(ours, theirs)
    assert min(p_values.values()) > ALPHA, p_values


def test_distribution_tests_see_a_smaller_box_noise(noise_samples):
    """The KS tests above have the power to see box noise of 0.9 instead of 1.0."""
    targets, _, theirs = noise_samples
    weaker = _noisy_samples(get_contrastive_denoising_training_group, targets, 0.9, calls=60, seed=12)
    assert min(_distribution_p_values(weaker, theirs).values()) < ALPHA


@pytest.mark.parametrize("targets,match", [
    ([], "non-empty list"),
    ([{"class_labels": torch.tensor([1])}], "'class_labels'"),
    ([{"boxes": torch.rand(1, 4)}], r"targets\[0\] must be a dict with 'class_labels'"),
    ([{"class_labels": torch.tensor([[1], [2]]), "boxes": torch.rand(2, 4)}],
     r"targets\[0\]\['class_labels'\] must be \[n\], got \(2, 1\)"),
    ([{"class_labels": torch.tensor([1, 2]), "boxes": torch.rand(3, 4)}], r"targets\[0\]\['boxes'\]"),
    ([{"class_labels": torch.tensor([NUM_CLASSES]), "boxes": torch.rand(1, 4)}], "gt_labels"),
    ([{"class_labels": torch.tensor([0]), "boxes": torch.full((1, 4), float("nan"))}], "gt_boxes"),
])
def test_bad_targets_raise_a_clear_error(targets, match):
    with pytest.raises(ValueError, match=match):
        get_contrastive_denoising_training_group(targets, NUM_CLASSES, 5, label_as_feature, 10)


def test_defaults_are_hfs():
    ours, theirs = (inspect.signature(f).parameters for f in (get_contrastive_denoising_training_group, HF_BUILDER))
    assert [(n, p.default) for n, p in ours.items()] == [(n, p.default) for n, p in theirs.items()]
    one_box = make_targets([1, 1], torch.Generator().manual_seed(0))  # 100 queries of one gt: 100 groups
    ours, theirs = (f(one_box, NUM_CLASSES, 5, label_as_feature) for f in (get_contrastive_denoising_training_group,
                                                                           HF_BUILDER))
    assert ours[3]["dn_num_group"] == theirs[3]["dn_num_group"] == 100
    assert [t.shape for t in ours[:3]] == [t.shape for t in theirs[:3]]


def test_noise_settings_below_zero_mean_no_noise_like_hf():
    targets = make_targets([3, 1], torch.Generator().manual_seed(5))
    args = (targets, NUM_CLASSES, 5, label_as_feature, 12, -0.5, -1.0)
    assert_same_result(get_contrastive_denoising_training_group(*args), HF_BUILDER(*args))


def test_label_noise_above_two_redraws_every_label_like_hf():
    targets = make_targets([5, 3], torch.Generator().manual_seed(6))
    torch.manual_seed(0)
    labels, _, _, meta = get_contrastive_denoising_training_group(targets, NUM_CLASSES, 5, label_as_feature,
                                                                  400, 3.0, 0.0)
    clean = torch.stack([torch.cat([t["class_labels"], torch.full((5 - len(t["class_labels"]),), -1)])
                         for t in targets]).repeat(1, 2 * meta["dn_num_group"])         # [B, K], -1 = padding
    changed = (labels[..., 0] != clean)[clean >= 0].double().mean()
    assert abs(float(changed) - (1 - 1 / NUM_CLASSES)) < 0.03  # each redrawn: unchanged only by chance


def test_class_embed_sees_the_label_dtype_hf_gives_it():
    seen = {}

    def class_embed(labels):
        seen.setdefault("dtypes", []).append(labels.dtype)
        return labels[..., None].double()

    targets = make_targets([2], torch.Generator().manual_seed(0))
    for builder in (get_contrastive_denoising_training_group, HF_BUILDER):
        builder(targets, NUM_CLASSES, 5, class_embed, 10, 0.5, 1.0)
    assert seen["dtypes"] == [torch.int32, torch.int32]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_everything_stays_on_the_targets_device():
    targets = [{k: v.cuda() for k, v in t.items()} for t in make_targets([3, 0], torch.Generator().manual_seed(0))]
    labels, boxes, mask, meta = get_contrastive_denoising_training_group(targets, NUM_CLASSES, 5, label_as_feature,
                                                                         10, 0.5, 1.0)
    assert {t.device.type for t in (labels, boxes, mask, *meta["dn_positive_idx"])} == {"cuda"}


# ---------------------------------------------------------------- inside a real RT-DETR training step

def tiny_rt_detr(**overrides):
    backbone = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                  layer_type="basic", out_features=["stage2", "stage3", "stage4"])
    config = RTDetrConfig(backbone_config=backbone, encoder_in_channels=[16, 24, 32], encoder_hidden_dim=16,
                          d_model=16, encoder_ffn_dim=16, decoder_ffn_dim=16, encoder_attention_heads=2,
                          decoder_attention_heads=2, decoder_layers=2, decoder_n_points=2,
                          decoder_in_channels=[16, 16, 16], num_queries=6, num_labels=3, **overrides)
    torch.manual_seed(0)
    return RTDetrForObjectDetection(config).train()


def training_step(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.rand(2, 3, 64, 64, generator=generator)
    labels = [{"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2]])},
              {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    torch.manual_seed(seed)
    model.zero_grad()
    output = model(pixel_values=pixel_values, labels=labels)
    output.loss.backward()
    return output


def test_rt_detr_training_step_runs_on_it(monkeypatch):
    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs.get("num_denoising_queries"))
        return get_contrastive_denoising_training_group(*args, **kwargs)

    monkeypatch.setattr(modeling_rt_detr, "get_contrastive_denoising_training_group", counted)
    model = tiny_rt_detr(num_denoising=8)
    output = training_step(model)
    assert calls == [8]
    assert torch.isfinite(output.loss)
    assert "loss_vfl_dn_0" in output.loss_dict and torch.isfinite(output.loss_dict["loss_bbox_dn_0"])
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["model.denoising_class_embed.weight"].abs().sum() > 0


def test_rt_detr_training_step_without_noise_equals_hf(monkeypatch):
    model = tiny_rt_detr(num_denoising=8, label_noise_ratio=0.0, box_noise_scale=0.0)
    expected = training_step(model)
    expected_grads = [p.grad.clone() for p in model.parameters()]
    monkeypatch.setattr(modeling_rt_detr, "get_contrastive_denoising_training_group",
                        get_contrastive_denoising_training_group)
    actual = training_step(model)
    assert torch.equal(actual.loss, expected.loss)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), expected_grads))
