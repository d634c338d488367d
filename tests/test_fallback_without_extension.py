"""Without the compiled extension the ops run their pure-PyTorch references with every argument
passed on, and say so once (the module state a missing build leaves, set in this process)."""
import pytest
import torch

from detrx import _extension
from detrx.ops import build_dn_queries, build_dn_queries_reference, ms_deform_attn, ms_deform_attn_reference
from helpers import SMALL_LEVELS, make_inputs
from test_dn_queries import assert_same_queries, random_gts


@pytest.fixture
def without_extension(monkeypatch):
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "_LOAD_ERROR", "the compiled extension detrx._C was not found: it was never built")
    monkeypatch.setattr(_extension, "_warned", False)


DN_SETTINGS = {  # every argument away from its default, in two calls (dn_number overrides num_groups)
    "groups, seeded": lambda: dict(  # 3 groups of 2 x max_gt
        num_groups=3, label_noise_ratio=0.7, box_noise_scale=0.9, noise_style="dino", contrastive=True,
        generator=torch.Generator().manual_seed(5), max_gt=5, per_image_mask=False, min_box_size=0.05),
    "budget, given noise": lambda: dict(  # 12 queries: 3 groups of the largest count, 4
        dn_number=12, label_noise_ratio=0.2, box_noise_scale=0.3,
        noise=torch.rand(3, 12, 6, generator=torch.Generator().manual_seed(6))),
}
NUM_DN = {"groups, seeded": 30, "budget, given noise": 12}


@pytest.mark.parametrize("setting", DN_SETTINGS)
def test_dn_queries_fall_back_to_the_reference(without_extension, setting):
    labels, boxes, counts = random_gts(3, 4, 7, torch.Generator().manual_seed(4), counts=torch.tensor([4, 1, 2]))
    with pytest.warns(RuntimeWarning, match="falling back to the pure-PyTorch references"):
        fallback = build_dn_queries(labels, boxes, counts, 7, 6, **DN_SETTINGS[setting]())
    expected = build_dn_queries_reference(labels, boxes, counts, 7, 6, **DN_SETTINGS[setting]())
    assert_same_queries(fallback, expected, atol=0)
    assert fallback.num_dn == NUM_DN[setting]


@pytest.mark.parametrize("with_shapes_list", [False, True])
def test_ms_deform_attn_falls_back_to_the_reference(without_extension, with_shapes_list):
    inputs = make_inputs()
    shapes_list = list(SMALL_LEVELS) if with_shapes_list else None
    with pytest.warns(RuntimeWarning, match="falling back to the pure-PyTorch references"):
        output = ms_deform_attn(*inputs, spatial_shapes_list=shapes_list)
    torch.testing.assert_close(output, ms_deform_attn_reference(*inputs), rtol=0, atol=0)
