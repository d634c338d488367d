"""Bad input to the denoising-query op, its reference and helpers raises ValueError naming the argument."""
import pytest
import torch

import detrx
from detrx.ops import build_dn_queries, build_dn_queries_reference, dn_loss_targets, pad_targets, split_dn_outputs
from detrx.ops.dn_common import MIN_BOX_SIZE, assert_dn_values_async, check_dn_values

requires_extension = pytest.mark.skipif(not detrx.is_compiled(), reason="detrx._C is not built")


def good_inputs():
    labels = torch.tensor([[1, 2, 0], [3, 0, 0]])
    boxes = torch.full((2, 3, 4), 0.5)
    counts = torch.tensor([3, 1])
    return labels, boxes, counts


def with_label(value, slot=(0, 1)):
    labels, boxes, counts = good_inputs()
    labels[slot] = value
    return labels, boxes, counts


def with_box(value):
    labels, boxes, counts = good_inputs()
    boxes[1, 0, 2] = value
    return labels, boxes, counts


def with_counts(values):
    labels, boxes, _ = good_inputs()
    return labels, boxes, torch.tensor(values)


BAD_INPUTS = {  # name: (inputs, keyword arguments, words the message must contain)
    "label >= num_classes": (with_label(5), {}, "gt_labels"),
    "negative label": (with_label(-1), {}, "gt_labels"),
    "boxes not [.., 4]": ((good_inputs()[0], torch.full((2, 3, 3), 0.5), good_inputs()[2]), {}, "gt_boxes"),
    "nan box": (with_box(float("nan")), {}, "gt_boxes"),
    "inf box": (with_box(float("inf")), {}, "gt_boxes"),
    "integer boxes": ((good_inputs()[0], torch.ones(2, 3, 4, dtype=torch.int64), good_inputs()[2]), {}, "gt_boxes"),
    "count > G": (with_counts([4, 1]), {}, "gt_counts"),
    "negative count": (with_counts([3, -1]), {}, "gt_counts"),
    "counts batch mismatch": (with_counts([3, 1, 0]), {}, "gt_counts"),
    "boxes batch mismatch": ((good_inputs()[0], torch.full((3, 3, 4), 0.5), good_inputs()[2]), {}, "gt_boxes"),
    "float labels": ((good_inputs()[0].float(), *good_inputs()[1:]), {}, "gt_labels"),
    "int32 counts": ((*good_inputs()[:2], good_inputs()[2].int()), {}, "gt_counts"),
    "num_groups 0": (good_inputs(), {"num_groups": 0}, "num_groups"),
    "num_groups negative": (good_inputs(), {"num_groups": -2}, "num_groups"),
    "dn_number 0": (good_inputs(), {"dn_number": 0}, "dn_number"),
    "negative box noise": (good_inputs(), {"box_noise_scale": -0.1}, "box_noise_scale"),
    "infinite box noise": (good_inputs(), {"box_noise_scale": float("inf")}, "box_noise_scale"),
    "nan box noise": (good_inputs(), {"box_noise_scale": float("nan")}, "box_noise_scale"),
    "negative label noise": (good_inputs(), {"label_noise_ratio": -0.1}, "label_noise_ratio"),
    "label noise above 1": (good_inputs(), {"label_noise_ratio": 1.5}, "label_noise_ratio"),
    "num_classes 0": ((torch.zeros(2, 3, dtype=torch.int64), *good_inputs()[1:]), {"num_classes": 0}, "num_classes"),
    "num_queries 0": (good_inputs(), {"num_queries": 0}, "num_queries"),
    "unknown noise style": (good_inputs(), {"noise_style": "gaussian"}, "noise_style"),
    "max_gt below a count": (good_inputs(), {"max_gt": 2}, "max_gt"),
    "negative max_gt": (good_inputs(), {"max_gt": -1}, "max_gt"),
    "float max_gt": (good_inputs(), {"max_gt": 4.0}, "max_gt must be None or an int"),
    "noise of the wrong shape": (good_inputs(), {"noise": torch.rand(2, 4, 6)}, "noise"),
}


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_value_error(builder, case):
    inputs, kwargs, argument = BAD_INPUTS[case]
    kwargs = {"num_classes": 5, "num_queries": 4, **kwargs}
    with pytest.raises(ValueError, match=rf"dn_queries: {argument}\b"):  # the message starts with the argument
        builder(*inputs, **kwargs)


def test_labels_of_padding_are_not_checked():
    labels, boxes, counts = with_label(99, slot=(1, 1))                 # image 1 has one gt: slots 1, 2 are padding
    boxes[1, 1:] = float("nan")
    build_dn_queries(labels, boxes, counts, num_classes=5, num_queries=4)
    build_dn_queries_reference(labels, boxes, counts, num_classes=5, num_queries=4)


@requires_extension
@pytest.mark.parametrize("case, argument", [
    ("label", "gt_labels"), ("box", "gt_boxes"), ("count", "gt_counts"), ("max_gt", "max_gt"),
    ("seed", "seed"), ("style", "noise_style"), ("min_box_size", "min_box_size")])
def test_compiled_op_checks_its_arguments(case, argument):
    labels, boxes, counts = good_inputs()
    seed, style, max_gt, min_box_size = torch.tensor(0), "dn_detr", 3, MIN_BOX_SIZE
    if case == "label":
        labels[0, 0] = 7
    elif case == "box":
        boxes[0, 2, 1] = float("-inf")
    elif case == "count":
        counts[1] = 4
        max_gt = 4
    elif case == "max_gt":
        max_gt = 1
    elif case == "seed":
        seed = torch.tensor([0.5])
    elif case == "style":
        style = "detr"
    else:
        min_box_size = 0.0
    with pytest.raises(ValueError, match=argument):
        torch.ops.detrx.dn_queries(labels, boxes, counts, seed, None, 5, 4, max_gt, 2, False, style, 0.5, 0.4,
                                   min_box_size, True)


@pytest.mark.parametrize("targets", [
    [], "not a list", [{"labels": torch.tensor([1])}],
    [{"labels": torch.tensor([1, 2]), "boxes": torch.rand(3, 4)}],
    [{"labels": torch.tensor([1]), "boxes": torch.rand(1, 5)}]])
def test_pad_targets_rejects_bad_targets(targets):
    with pytest.raises(ValueError, match="targets"):
        pad_targets(targets)


@pytest.mark.parametrize("targets, message", [
    ({"labels": torch.tensor([1]), "boxes": torch.zeros(1, 4)},
     "pad_targets: targets must be a non-empty list of dicts, got dict"),
    ([], "pad_targets: targets must be a non-empty list of dicts, got list of length 0"),
    ([{"boxes": torch.zeros(1, 4)}], "pad_targets: targets[0] must be a dict with 'labels' and 'boxes'"),
    ([{"labels": torch.tensor([1])}, {"labels": torch.tensor([1])}],
     "pad_targets: targets[0] must be a dict with 'labels' and 'boxes'"),
    ([{"labels": torch.tensor([1]), "boxes": torch.zeros(1, 4)}, {"labels": torch.tensor([[1], [2]]),
                                                                   "boxes": torch.zeros(2, 4)}],
     "pad_targets: targets[1] must hold labels [n] and boxes [n, 4], got labels (2, 1) and boxes (2, 4)"),
])
def test_pad_targets_names_what_is_wrong(targets, message):
    with pytest.raises(ValueError) as error:
        pad_targets(targets)
    assert str(error.value) == message


def test_dn_loss_targets_names_gts_that_do_not_fit_the_queries():
    labels, boxes, counts = good_inputs()
    dn = build_dn_queries_reference(labels, boxes, counts, num_classes=5, num_queries=4)
    with pytest.raises(ValueError) as error:
        dn_loss_targets(dn, labels, boxes[:, :2])  # the batch fits, the gt count does not
    assert str(error.value) == ("dn_loss_targets: gt_labels must be [B, G] and gt_boxes [B, G, 4] with B = 2, "
                                "got (2, 3) and (2, 2, 4)")
    with pytest.raises(ValueError, match=r"with B = 2, got \(1, 3\) and \(1, 3, 4\)"):
        dn_loss_targets(dn, labels[:1], boxes[:1])


def test_split_dn_outputs_rejects_num_dn_beyond_the_queries():
    with pytest.raises(ValueError, match="num_dn"):
        split_dn_outputs(torch.zeros(2, 10, 4), 11)


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
@pytest.mark.parametrize("index, name", [(0, "gt_labels"), (1, "gt_boxes"), (2, "gt_counts")])
def test_a_bad_gt_tensor_is_named_with_what_was_expected(builder, index, name):
    inputs = list(good_inputs())
    inputs[index] = inputs[index].tolist()
    with pytest.raises(ValueError, match=f"^build_dn_queries: {name} must be a torch.Tensor, got list$"):
        builder(*inputs, num_classes=5, num_queries=4)
    if index == 0:
        return
    inputs = list(good_inputs())
    inputs[index] = inputs[index].to("meta")  # a second device on machines without a GPU
    with pytest.raises(ValueError, match=f"^build_dn_queries: {name} must be on gt_labels' device cpu, got meta$"):
        builder(*inputs, num_classes=5, num_queries=4)


def test_gt_boxes_of_the_wrong_shape_name_the_expected_one():
    labels, boxes, counts = good_inputs()
    with pytest.raises(ValueError) as error:
        build_dn_queries_reference(labels, boxes[..., :3], counts, num_classes=5, num_queries=4)
    assert str(error.value) == ("build_dn_queries: gt_boxes must be [B, G, 4] = (2, 3, 4) (B, G from gt_labels), "
                                "got (2, 3, 3)")


GT_VALUE_CASES = ["label >= num_classes", "negative label", "nan box", "inf box", "count > G", "negative count",
                  "max_gt below a count"]


@pytest.mark.parametrize("case", GT_VALUE_CASES)
def test_device_side_gt_check_refuses_what_the_host_check_refuses(case):
    """The check CUDA runs without a host sync (a device assert) refuses the same gts; on the CPU
    torch's async assert raises at once, so its condition is tested here."""
    (labels, boxes, counts), kwargs, argument = BAD_INPUTS[case]
    max_gt = kwargs.get("max_gt", labels.shape[1])
    with pytest.raises(ValueError, match=argument):
        check_dn_values(labels, boxes, counts, 5, max_gt)
    with pytest.raises(RuntimeError) as error:
        assert_dn_values_async(labels, boxes, counts, 5, max_gt)
    assert str(error.value) == ("build_dn_queries: bad gts (a count outside [0, min(G, max_gt)], a label outside "
                                "[0, num_classes) or a non-finite box)")


def test_device_side_gt_check_passes_gts_at_their_bounds():
    labels = torch.tensor([[4, 0, 3], [0, 99, 99], [99, 99, 99]])  # labels 0 and num_classes - 1; 99 is padding
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0]] * 3, [[1.0, 1.0, 0.0, 0.0], [float("nan")] * 4, [0.5] * 4],
                          [[float("inf")] * 4] * 3])
    counts = torch.tensor([3, 1, 0])  # counts 0 and G (= max_gt)
    assert check_dn_values(labels, boxes, counts, 5, 3) == 3
    assert_dn_values_async(labels, boxes, counts, 5, 3)
    with pytest.raises(RuntimeError, match="bad gts"):  # max_gt below G bounds the counts too
        assert_dn_values_async(labels, boxes, counts, 5, 2)


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
def test_wrong_noise_shape_names_the_expected_one(builder):
    with pytest.raises(ValueError, match=r"noise must be (float32 )?\[B, K, 6\] = .2, 15, 6., got .*2, 4, 6"):
        builder(*good_inputs(), num_classes=5, num_queries=4, noise=torch.rand(2, 4, 6))  # 5 groups of 3 gts


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
def test_max_gt_above_every_count_sets_the_group_size(builder):
    queries = builder(*good_inputs(), num_classes=5, num_queries=4, num_groups=2, max_gt=5)
    assert (queries.group_size, queries.num_dn) == (5, 10)
    assert queries.valid.sum(1).tolist() == [6, 2]  # 3 and 1 gts, twice


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
def test_defaults_are_five_dn_detr_groups_without_negatives(builder):
    queries = builder(*good_inputs(), num_classes=5, num_queries=4)
    assert (queries.num_groups, queries.group_size, queries.num_dn) == (5, 3, 15)
    assert queries.positive.all() and queries.attn_mask is not None


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
def test_max_gt_zero_is_a_batch_without_dn_queries(builder):
    labels, boxes, _ = good_inputs()
    dn = builder(labels, boxes, torch.tensor([0, 0]), num_classes=5, num_queries=4, max_gt=0)
    assert (dn.num_dn, dn.group_size) == (0, 0) and dn.shared_attn_mask.shape == (4, 4)
