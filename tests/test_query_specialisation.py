"""The query-specialisation measure: 1 for slots that own a region, about 0 for interchangeable slots."""
import numpy as np
import pytest

from detrx.engine.query_specialisation import entropy, mutual_information, regions, specialisation


def test_mutual_information_of_known_pairs():
    a = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert mutual_information(a, a) == pytest.approx(entropy(a)) == pytest.approx(2.0)
    assert mutual_information(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="one length"):
        mutual_information(a, a[:3])


def test_regions_are_row_major_cells():
    centres = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [1.0, 1.0], [0.5, 0.5]])
    assert regions(centres, grid=3).tolist() == [0, 2, 6, 8, 4]


def _predictions(slot_region, images=400, queries=9, seed=0):
    """Every query of every image predicts a centre in the cell slot_region(query, rng) of a 3x3 grid
    -> (slot [D], centres [D, 2])."""
    rng = np.random.default_rng(seed)
    slot = np.repeat(np.arange(queries), images)
    cell = np.array([slot_region(q, rng) for q in slot])
    centres = np.stack([(cell % 3 + rng.random(len(cell))) / 3, (cell // 3 + rng.random(len(cell))) / 3], 1)
    return slot, centres


def test_slots_that_own_a_region_score_near_one():
    result = specialisation(*_predictions(lambda q, rng: q))
    assert result["raw"] == pytest.approx(1.0)
    assert result["specialisation"] > 0.95


def test_interchangeable_slots_score_near_zero_although_the_raw_estimate_does_not():
    result = specialisation(*_predictions(lambda q, rng: rng.integers(9), images=30))
    assert result["raw"] > 0.05  # the small-sample bias the shuffle baseline removes
    assert abs(result["specialisation"]) < 0.03


def test_too_few_predictions_or_one_region_give_nan():
    assert np.isnan(specialisation(np.array([0]), np.array([[0.5, 0.5]]))["specialisation"])
    assert np.isnan(specialisation(np.array([0, 1]), np.array([[0.5, 0.5], [0.4, 0.4]]))["specialisation"])
    with pytest.raises(ValueError, match="slot \\[D\\] and centres \\[D, 2\\]"):
        specialisation(np.array([0, 1, 2]), np.zeros((2, 2)))
