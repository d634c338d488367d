"""Error types of confident predictions: hits, duplicates, near-misses, background, missed boxes."""
import numpy as np
import pytest

from detrx.engine.error_types import classify_image, error_types_per_image, prediction_types

A, B = [0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]


def shifted(box, dx):
    return [box[0] + dx, *box[1:]]


def test_each_error_type_is_counted():
    # in score order: exact hit on A; IoU 0.67 with covered A (duplicate); IoU 0.25 with A
    # (near-miss); nothing nearby (background); below the threshold on B (ignored, so B is missed)
    boxes = [A, shifted(A, 0.04), shifted(A, 0.12), [0.5, 0.9, 0.1, 0.1], B]
    scores = [0.9, 0.8, 0.7, 0.6, 0.2]
    counts = classify_image(np.array(scores), np.array(boxes), np.array([A, B]))
    assert counts == {"hit": 1, "duplicate": 1, "near_miss": 1, "background": 1, "missed": 1}


def test_each_prediction_gets_its_type():
    boxes = [shifted(A, 0.04), A, B]
    types, covered = prediction_types(np.array([0.9, 0.5, 0.1]), np.array(boxes), np.array([A, B]))
    assert types == ["hit", "duplicate", None] and covered.tolist() == [True, False]


def test_the_higher_score_takes_the_box():
    boxes = np.array([shifted(A, 0.04), A])
    low_exact = classify_image(np.array([0.9, 0.5]), boxes, np.array([A]))
    assert low_exact == {"hit": 1, "duplicate": 1, "near_miss": 0, "background": 0, "missed": 0}
    # a threshold above the second score drops it
    assert classify_image(np.array([0.9, 0.5]), boxes, np.array([A]), score_threshold=0.6)["duplicate"] == 0


def test_a_prediction_covering_two_boxes_takes_the_free_one():
    wide = [0.5, 0.5, 0.4, 0.2]
    left, right = [0.45, 0.5, 0.3, 0.2], [0.55, 0.5, 0.3, 0.2]  # IoU 0.75 with wide, each
    counts = classify_image(np.array([0.9, 0.8]), np.array([left, wide]), np.array([left, right]))
    assert counts["hit"] == 2 and counts["duplicate"] == 0 and counts["missed"] == 0


def test_an_image_without_objects_has_only_background():
    counts = classify_image(np.array([0.9, 0.1]), np.array([A, B]), np.zeros((0, 4)))
    assert counts == {"hit": 0, "duplicate": 0, "near_miss": 0, "background": 1, "missed": 0}


def test_split_means_skip_padded_ground_truth():
    scores = np.array([[0.9, 0.1], [0.9, 0.9]])
    boxes = np.array([[A, B], [A, shifted(A, 0.04)]])
    gt_boxes = np.array([[A, B], [A, [0, 0, 0, 0]]])
    gt_labels = np.array([[0, 1], [2, -1]])
    means = error_types_per_image(scores, boxes, gt_boxes, gt_labels)
    assert means == {"hit": 1.0, "duplicate": 0.5, "near_miss": 0.0, "background": 0.0, "missed": 0.5}


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="scores \\[Q\\], boxes \\[Q, 4\\]"):
        classify_image(np.array([0.9]), np.array([A, B]), np.array([A]))
    with pytest.raises(ValueError, match="at least one image"):
        error_types_per_image(np.zeros((0, 2)), np.zeros((0, 2, 4)), np.zeros((0, 1, 4)), np.zeros((0, 1)))
