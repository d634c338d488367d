"""The class list of a detection dataset: contiguous labels 0..C-1 <-> dataset category ids, names.

Training on COCO-format data takes the union of the train and val category lists, matched by id,
so a category that only one split has still gets its own label in both.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class ClassList:
    """names[i] and category_ids[i] belong to label i; category ids are unique and sorted."""

    names: tuple
    category_ids: tuple

    def __post_init__(self):
        if len(self.names) != len(self.category_ids):
            raise ValueError(f"names and category_ids must have the same length, got {len(self.names)} "
                             f"and {len(self.category_ids)}")
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"category_ids must be unique, got {list(self.category_ids)}")

    def __len__(self):
        return len(self.names)

    def label_of(self):
        """{category id: label}."""
        return {cid: label for label, cid in enumerate(self.category_ids)}

    def to_dict(self):
        """{"names": [...], "category_ids": [...]} (how a checkpoint stores it)."""
        return {"names": list(self.names), "category_ids": list(self.category_ids)}

    @classmethod
    def from_dict(cls, data):
        return cls(tuple(data["names"]), tuple(int(c) for c in data["category_ids"]))

    @classmethod
    def from_categories(cls, categories):
        """A COCO "categories" list ({"id", "name"} dicts with unique ids) -> ClassList sorted by id."""
        ordered = sorted(categories, key=lambda c: c["id"])
        return cls(tuple(str(c["name"]) for c in ordered), tuple(int(c["id"]) for c in ordered))


def merge_categories(*category_lists):
    """Union of COCO category lists matched by id -> (ClassList, problems).

    problems lists, as strings, ids named differently in two lists (the first name is kept).
    """
    by_id, problems = {}, []
    for categories in category_lists:
        for category in categories:
            cid, name = int(category["id"]), str(category["name"])
            if cid in by_id and by_id[cid] != name:
                problems.append(f"category id {cid} is named {by_id[cid]!r} in one split and {name!r} in another")
                continue
            by_id.setdefault(cid, name)
    return ClassList.from_categories([{"id": cid, "name": name} for cid, name in by_id.items()]), problems
