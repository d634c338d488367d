"""build_dn_queries' min_box_size: the floor of noisy widths and heights, the same in op and reference."""
import pytest
import torch

import detrx
from detrx.ops import build_dn_queries, build_dn_queries_reference
from detrx.ops.dn_common import MIN_BOX_SIZE

requires_extension = pytest.mark.skipif(not detrx.is_compiled(), reason="detrx._C is not built")


def _thin_boxes():
    """Boxes whose DINO negatives often cross corners (w, h -> 0 after noise)."""
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.1], [0.3, 0.6, 0.05, 0.4], [0.7, 0.2, 0.3, 0.3]]])
    return torch.tensor([[0, 1, 2]]), boxes, torch.tensor([3])


@requires_extension
@pytest.mark.parametrize("min_box_size", [MIN_BOX_SIZE, 1e-30])
def test_op_and_reference_floor_sizes_at_min_box_size(min_box_size):
    labels, boxes, counts = _thin_boxes()
    noise = torch.rand(1, 3 * 2 * 40, 6, generator=torch.Generator().manual_seed(3))
    kwargs = dict(num_classes=3, num_queries=2, num_groups=40, box_noise_scale=1.0, noise_style="dino",
                  contrastive=True, noise=noise, min_box_size=min_box_size)
    fused = build_dn_queries(labels, boxes, counts, **kwargs)
    loop = build_dn_queries_reference(labels, boxes, counts, **kwargs)
    torch.testing.assert_close(fused.boxes, loop.boxes, atol=1e-6, rtol=0)
    sizes = fused.boxes[..., 2:]
    assert (sizes >= min_box_size).all()
    assert (sizes == min_box_size).any()   # crossed corners reach the floor


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
@pytest.mark.parametrize("min_box_size", [0.0, -1e-3, 1.5])
def test_bad_min_box_size_is_refused(builder, min_box_size):
    labels, boxes, counts = _thin_boxes()
    with pytest.raises(ValueError, match=rf"^build_dn_queries: min_box_size must be in \(0, 1\], got {min_box_size}$"):
        builder(labels, boxes, counts, num_classes=3, num_queries=2, min_box_size=min_box_size)


@pytest.mark.parametrize("builder", [build_dn_queries, build_dn_queries_reference])
def test_min_box_size_of_one_makes_every_box_the_whole_side(builder):
    labels, boxes, counts = _thin_boxes()
    dn = builder(labels, boxes, counts, num_classes=3, num_queries=2, min_box_size=1.0)
    assert (dn.boxes[dn.valid][:, 2:] == 1).all()
