"""Class lists: labels follow category ids in sorted order whatever order the JSON lists them in, and
the train/val union keeps every id once."""
import pytest

from detrx.data.classes import ClassList, merge_categories

# listed neither in id order nor in name order
CATEGORIES = [{"id": 7, "name": "truck"}, {"id": 2, "name": "zebra"}, {"id": 11, "name": "apple"}]


def test_labels_follow_sorted_category_ids_not_the_listing_order():
    classes = ClassList.from_categories(CATEGORIES)
    assert classes.category_ids == (2, 7, 11)
    assert classes.names == ("zebra", "truck", "apple")
    assert classes.label_of() == {2: 0, 7: 1, 11: 2}
    assert len(classes) == 3


def test_dict_round_trip_keeps_the_label_order():
    classes = ClassList.from_categories(CATEGORIES)
    stored = classes.to_dict()
    assert stored == {"names": ["zebra", "truck", "apple"], "category_ids": [2, 7, 11]}
    assert ClassList.from_dict(stored) == classes
    # a checkpoint's order is kept as stored (it is the model's label order), ids read as ints
    assert ClassList.from_dict({"names": ["b", "a"], "category_ids": ["9", "3"]}).label_of() == {9: 0, 3: 1}


def test_union_of_splits_matches_by_id():
    train = [{"id": 5, "name": "dog"}, {"id": 1, "name": "cat"}]
    val = [{"id": 3, "name": "bird"}, {"id": 5, "name": "dog"}]  # bird only in val; dog in both
    classes, problems = merge_categories(train, val)
    assert classes.category_ids == (1, 3, 5) and classes.names == ("cat", "bird", "dog")
    assert problems == []


def test_union_reports_an_id_named_differently_and_keeps_the_first_name():
    classes, problems = merge_categories([{"id": 4, "name": "car"}], [{"id": 4, "name": "auto"}, {"id": 2, "name": "bus"}])
    assert classes.names == ("bus", "car") and classes.category_ids == (2, 4)
    assert problems == ["category id 4 is named 'car' in one split and 'auto' in another"]


def test_bad_class_lists_are_refused():
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        ClassList(("a", "b"), (1,))
    with pytest.raises(ValueError, match=r"category_ids must be unique, got \[1, 1\]"):
        ClassList(("a", "b"), (1, 1))
