import json

import numpy as np
import pytest
import torch

from detrx.data import CocoDetection, SyntheticShapes, build_transforms, collate_fn, export_coco, pad_images
from detrx.data.transforms import Normalize, RandomHorizontalFlip, RandomResize
from detrx.util.box_ops import box_cxcywh_to_xyxy


def test_synthetic_is_deterministic_per_seed_and_split():
    a, b = SyntheticShapes(5, seed=1), SyntheticShapes(5, seed=1)
    for i in range(5):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert torch.equal(ia, ib) and torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
    assert not torch.equal(SyntheticShapes(5, seed=2)[0][0], a[0][0])
    assert not torch.equal(SyntheticShapes(5, seed=1, split="val")[0][0], a[0][0])


def test_synthetic_contents():
    dataset = SyntheticShapes(60, image_size=96, num_classes=5, min_objects=1, max_objects=10, min_size=3, seed=0)
    counts, sizes, labels = [], [], set()
    for i in range(len(dataset)):
        image, target = dataset[i]
        assert image.shape == (3, 96, 96) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        boxes = target["boxes"]
        assert ((boxes >= 0) & (boxes <= 96)).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        counts.append(len(boxes))
        sizes += (boxes[:, 2:] - boxes[:, :2]).max(1).values.tolist()
        labels |= set(target["labels"].tolist())
    assert min(counts) >= 1 and max(counts) <= 10 and max(counts) >= 7
    assert labels == set(range(5))
    assert min(sizes) <= 6  # small objects of a few pixels
    assert max(sizes) >= 30


def test_synthetic_boxes_are_tight_around_drawn_shapes():
    dataset = SyntheticShapes(3, image_size=64, max_objects=1, min_size=10, seed=4)
    image, boxes, _ = dataset.render(0)
    x0, y0, x1, y1 = boxes[0].int().tolist()
    background = np.median(image.reshape(-1, 3), axis=0)  # the single object covers < 1/4 of the image
    inside = np.abs(image[y0:y1, x0:x1].astype(float) - background).sum(-1) > 150  # shape colour: >= 3 * 70 off
    assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_export_coco_round_trips_through_the_coco_loader(tmp_path):
    dataset = SyntheticShapes(4, image_size=48, max_objects=3, min_size=5, seed=7)
    image_dir, ann_file = export_coco(dataset, str(tmp_path))
    coco = json.load(open(ann_file))
    assert len(coco["images"]) == 4 and len(coco["categories"]) == 3
    loaded = CocoDetection(image_dir, ann_file)
    assert len(loaded) == 4 and loaded.label_to_category_id == dataset.label_to_category_id
    for i in range(4):
        (image, target), (ref_image, ref_target) = loaded[i], dataset[i]
        assert torch.allclose(image, ref_image, atol=1 / 255 + 1e-6)
        assert torch.allclose(target["boxes"], ref_target["boxes"])
        assert torch.equal(target["labels"], ref_target["labels"])


def test_coco_loader_rejects_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="(?s)nope: not a folder.*a.json: unreadable annotation file"):
        CocoDetection(str(tmp_path / "nope"), str(tmp_path / "a.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not COCO format"):
        CocoDetection(str(tmp_path), str(bad))


def test_transforms_flip_resize_normalise():
    image = torch.rand(3, 20, 40)
    target = {"boxes": torch.tensor([[4.0, 2.0, 10.0, 8.0]]), "labels": torch.tensor([1]), "size": torch.tensor([20, 40])}
    flipped, t = RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(flipped, image.flip(-1))
    assert torch.equal(t["boxes"], torch.tensor([[30.0, 2.0, 36.0, 8.0]]))
    resized, t = RandomResize([10])(image, target)
    assert resized.shape == (3, 10, 20)
    assert torch.allclose(t["boxes"], torch.tensor([[2.0, 1.0, 5.0, 4.0]]))
    assert t["size"].tolist() == [10, 20]
    capped, _ = RandomResize([30], max_size=50)(image, target)
    assert capped.shape[-1] == 50
    normed, t = Normalize()(image, target)
    assert torch.allclose(box_cxcywh_to_xyxy(t["boxes"]), torch.tensor([[0.1, 0.1, 0.25, 0.4]]))
    with pytest.raises(ValueError, match="p must be"):
        RandomHorizontalFlip(p=2)
    with pytest.raises(ValueError, match="sizes"):
        RandomResize([0])


def test_collate_pads_and_masks():
    dataset = SyntheticShapes(2, image_size=32, seed=0, transforms=build_transforms(False))
    small = (torch.rand(3, 20, 24), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
    images, mask, targets = collate_fn([dataset[0], small])
    assert images.shape == (2, 3, 32, 32) and mask.shape == (2, 32, 32)
    assert not mask[0].any()
    assert not mask[1, :20, :24].any() and mask[1, 20:].all() and mask[1, :, 24:].all()
    assert (images[1, :, 20:] == 0).all()
    assert len(targets) == 2
    with pytest.raises(ValueError, match="images"):
        pad_images([])


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticShapes(4, num_classes=9)
    with pytest.raises(ValueError, match="min_objects"):
        SyntheticShapes(4, min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes(4, split="test")
