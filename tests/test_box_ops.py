import pytest
import torch

from detrx.util.box_ops import (box_area, box_cxcywh_to_xyxy, box_iou, box_xywh_to_xyxy, box_xyxy_to_cxcywh,
                                box_xyxy_to_xywh, generalized_box_iou)


def test_conversions_known_values_and_round_trip():
    cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    xyxy = box_cxcywh_to_xyxy(cxcywh)
    assert torch.allclose(xyxy, torch.tensor([[0.4, 0.3, 0.6, 0.7]]))
    assert torch.allclose(box_xyxy_to_cxcywh(xyxy), cxcywh)
    xywh = torch.tensor([[10.0, 20.0, 5.0, 8.0]])
    assert torch.equal(box_xywh_to_xyxy(xywh), torch.tensor([[10.0, 20.0, 15.0, 28.0]]))
    assert torch.equal(box_xyxy_to_xywh(box_xywh_to_xyxy(xywh)), xywh)
    boxes = torch.rand(3, 5, 4)
    assert torch.allclose(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes)), boxes, atol=1e-6)


@pytest.mark.parametrize("a, b, iou, giou", [
    ([0, 0, 1, 1], [0, 0, 1, 1], 1.0, 1.0),                  # identical
    ([0, 0, 2, 1], [1, 0, 3, 1], 1 / 3, 1 / 3),              # half overlap, enclosing box = union
    ([0, 0, 1, 1], [2, 0, 3, 1], 0.0, -1 / 3),               # disjoint: C = 3, union = 2
    ([0, 0, 1, 1], [2, 2, 3, 3], 0.0, -7 / 9),               # diagonal: C = 9, union = 2
])
def test_iou_and_giou_known_values(a, b, iou, giou):
    a, b = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    assert box_iou(a, b)[0].item() == pytest.approx(iou)
    assert generalized_box_iou(a, b).item() == pytest.approx(giou)


def test_giou_broadcasts_to_pairwise_and_is_symmetric():
    a = box_cxcywh_to_xyxy(torch.rand(4, 4) * 0.5 + 0.1)
    b = box_cxcywh_to_xyxy(torch.rand(3, 4) * 0.5 + 0.1)
    pairwise = generalized_box_iou(a[:, None], b[None])
    assert pairwise.shape == (4, 3)
    assert torch.allclose(pairwise.T, generalized_box_iou(b[:, None], a[None]))
    assert torch.allclose(pairwise[2, 1], generalized_box_iou(a[2], b[1]))
    assert ((pairwise >= -1) & (pairwise <= 1)).all()
    assert torch.allclose(generalized_box_iou(a, a), torch.ones(4))


def test_area():
    assert torch.equal(box_area(torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0]])), torch.tensor([6.0, 0.0]))


def test_bad_input_raises_value_error_naming_the_argument():
    with pytest.raises(ValueError, match="boxes"):
        box_cxcywh_to_xyxy(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="boxes2"):
        generalized_box_iou(torch.zeros(1, 4), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="boxes1 has inverted boxes"):
        generalized_box_iou(torch.tensor([[1.0, 1.0, 0.0, 2.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


CONVERSIONS = [box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, box_xywh_to_xyxy, box_xyxy_to_xywh, box_area]


@pytest.mark.parametrize("function", CONVERSIONS, ids=lambda f: f.__name__)
def test_leading_dimensions_are_kept_and_boxes_are_not_mixed(function):
    boxes = torch.rand(2, 3, 4) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # x1 > x0, y1 > y0
    batched = function(boxes)
    assert batched.shape == (2, 3, 4)[:3 if function is not box_area else 2]
    for i in range(2):
        for j in range(3):
            assert torch.equal(batched[i, j], function(boxes[i, j][None])[0])


@pytest.mark.parametrize("function", CONVERSIONS, ids=lambda f: f.__name__)
def test_every_function_names_its_argument(function):
    with pytest.raises(ValueError, match=r"^boxes must be a tensor of boxes \[\.\.\., 4\], got \(2, 3\)$"):
        function(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"got list"):
        function([[0.0, 0.0, 1.0, 1.0]])


def test_iou_names_each_argument():
    good, bad = torch.zeros(1, 4), torch.zeros(1, 5)
    with pytest.raises(ValueError, match="^boxes1 must"):
        box_iou(bad, good)
    with pytest.raises(ValueError, match="^boxes2 must"):
        box_iou(good, bad)
    with pytest.raises(ValueError, match="^boxes1 must"):
        generalized_box_iou(bad, good)
    with pytest.raises(ValueError, match="^boxes2 must"):
        generalized_box_iou(good, bad)
    with pytest.raises(ValueError, match="boxes2 has inverted boxes"):
        generalized_box_iou(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[0.0, 1.0, 1.0, 0.5]]))


def test_iou_returns_the_union_and_counts_touching_boxes_as_disjoint():
    a = torch.tensor([[0.0, 0.0, 2.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0]], dtype=torch.float64)  # overlap 1x1, areas 2 and 4
    iou, union = box_iou(a, b)
    assert union.item() == 5.0 and iou.item() == pytest.approx(1 / 5)
    assert generalized_box_iou(a, b).item() == pytest.approx(1 / 5 - (6 - 5) / 6)
    edge = torch.tensor([[2.0, 0.0, 4.0, 1.0]], dtype=torch.float64)  # shares a's right edge
    iou, union = box_iou(a, edge)
    assert iou.item() == 0.0 and union.item() == 4.0


def test_giou_accepts_boxes_of_zero_width_or_height():
    """A predicted box can collapse to a line; GIoU must still score it (the enclosing box does)."""
    line = torch.tensor([[0.0, 0.0, 0.0, 1.0]])  # zero width
    flat = torch.tensor([[1.0, 0.5, 2.0, 0.5]])  # zero height
    unit = torch.tensor([[1.0, 0.0, 2.0, 1.0]])
    # IoU 0; enclosing box [0, 0, 2, 1] of area 2, union 1: 0 - (2 - 1) / 2
    torch.testing.assert_close(generalized_box_iou(line, unit), torch.tensor([-0.5]))
    # inside the unit box: IoU 0 / 1, enclosing box = the unit box
    torch.testing.assert_close(generalized_box_iou(flat, unit), torch.tensor([0.0]))
