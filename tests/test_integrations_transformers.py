"""detrx.integrations.transformers: HF models patched vs HF's own path, on tiny random-weight models."""
import copy
import importlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

transformers = pytest.importorskip("transformers")

from detrx.integrations import transformers as detrx_hf  # noqa: E402
from helpers import shared_unless_mutating  # noqa: E402

IMAGE_SIZE = (128, 128)  # (H, W): four levels of 16x16 .. 2x2 with the tiny backbones below


class CountOpCalls(TorchDispatchMode):
    """Counts the calls of detrx's MSDA forward op that reach the dispatcher."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.detrx.ms_deform_attn.default:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def tiny_resnet(out_features):
    return transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                     layer_type="basic", out_features=out_features)


def detection_labels():
    return [{"class_labels": torch.tensor([1, 2]),
             "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.55, 0.3, 0.25]], dtype=torch.float64)}]


def build_deformable_detr():
    config = transformers.DeformableDetrConfig(
        backbone_config=tiny_resnet(["stage2", "stage3", "stage4"]), d_model=32, encoder_layers=1,
        decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, num_queries=10, two_stage=True, with_box_refine=True,
        two_stage_num_proposals=10, num_labels=3, dropout=0.0)
    return transformers.DeformableDetrForObjectDetection(config), {}, {"labels": detection_labels()}


def rt_detr_config_kwargs():
    return dict(backbone_config=tiny_resnet(["stage2", "stage3", "stage4"]), encoder_hidden_dim=32,
                encoder_in_channels=[16, 24, 32], encoder_ffn_dim=32, encoder_attention_heads=2, d_model=32,
                num_queries=10, decoder_in_channels=[32, 32, 32], decoder_ffn_dim=32, decoder_layers=2,
                decoder_attention_heads=2, num_denoising=4, num_labels=3)


def build_rt_detr():
    config = transformers.RTDetrConfig(**rt_detr_config_kwargs())
    return transformers.RTDetrForObjectDetection(config), {}, {"labels": detection_labels()}


def build_rt_detr_v2():
    config = transformers.RTDetrV2Config(**rt_detr_config_kwargs())
    return transformers.RTDetrV2ForObjectDetection(config), {}, {"labels": detection_labels()}


def build_d_fine():
    # Unequal point counts per level: the patched path pads levels to the largest count.
    config = transformers.DFineConfig(**rt_detr_config_kwargs(), decoder_n_points=[3, 6, 3], hidden_expansion=0.5,
                                      lqe_hidden_dim=8, depth_mult=0.34)
    # HF's D-FINE loss fails in float64 (a float32 buffer inside it): the gradient test uses a
    # random projection of the outputs instead (labels None).
    return transformers.DFineForObjectDetection(config), {}, None


def build_mask2former():
    config = transformers.Mask2FormerConfig(
        backbone_config=tiny_resnet(["stage1", "stage2", "stage3", "stage4"]), feature_size=32,
        mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32, encoder_layers=1, decoder_layers=2,
        num_attention_heads=2, dim_feedforward=32, num_queries=10, num_labels=3)
    # HF's Mask2Former loss samples points in float32 whatever the model's dtype: the float64
    # gradient test uses a random projection of the outputs instead (labels None).
    return transformers.Mask2FormerForUniversalSegmentation(config), {}, None


def build_grounding_dino():
    # Token ids need no tokenizer: a random-weight text encoder takes any ids below its vocabulary.
    text = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=64)
    config = transformers.GroundingDinoConfig(
        backbone_config=tiny_resnet(["stage2", "stage3", "stage4"]), text_config=text, d_model=32,
        encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, num_queries=10, max_text_len=16)
    inputs = {"input_ids": torch.tensor([[101, 5, 1012, 7, 1012, 102]]) % 100}
    return transformers.GroundingDinoForObjectDetection(config), inputs, None


def build_lw_detr():
    vit = transformers.LwDetrViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=1,
                                       image_size=IMAGE_SIZE[0], pretrain_image_size=64, patch_size=16,
                                       window_block_indices=[0], out_indices=[1, 2], num_windows=4)
    config = transformers.LwDetrConfig(backbone_config=vit, projector_scale_factors=[1.0], d_model=32,
                                       decoder_ffn_dim=32, decoder_layers=2, decoder_self_attention_heads=2,
                                       decoder_cross_attention_heads=2, num_queries=10, group_detr=2, num_labels=3)
    return transformers.LwDetrForObjectDetection(config), {}, {"labels": detection_labels()}


FAMILIES = {
    "deformable_detr": build_deformable_detr,
    "rt_detr": build_rt_detr,
    "rt_detr_v2": build_rt_detr_v2,
    "d_fine": build_d_fine,
    "mask2former": build_mask2former,
    "grounding_dino": build_grounding_dino,
    "lw_detr": build_lw_detr,
}


def perturb_sampling_offsets(model, generator):
    """Trained-like sampling offsets: HF's initialisation puts encoder sampling points exactly on pixel
    centres, where bilinear sampling has a one-sided location derivative and rounding of the pixel
    coordinate picks the side (grid_sample and detrx may pick differently there). Random offsets keep
    every point off those creases, so the gradients compare the same derivative."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("sampling_offsets") and isinstance(module, torch.nn.Linear):
                module.weight.add_(0.05 * torch.randn(module.weight.shape, generator=generator, dtype=module.weight.dtype))
                module.bias.add_(0.37 * torch.randn(module.bias.shape, generator=generator, dtype=module.bias.dtype))


@pytest.fixture(scope=shared_unless_mutating)
def models():
    """family -> (float64 model, extra inputs, labels), built while patched (D-FINE's layers keep the
    function they are built with) and with trained-like sampling offsets."""
    built = {}
    with detrx_hf.patched():
        for family, build in FAMILIES.items():
            torch.manual_seed(0)
            model, inputs, labels = build()
            perturb_sampling_offsets(model, torch.Generator().manual_seed(1))
            built[family] = (model.double().eval(), inputs, labels)
    assert detrx_hf.patched_sites() == []
    return built


def pixel_values(dtype=torch.float64, batch=1):
    return torch.randn(batch, 3, *IMAGE_SIZE, generator=torch.Generator().manual_seed(2), dtype=dtype)


def float_outputs(output):
    """Every floating-point tensor of a model output, flattened in a fixed order."""
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, dict):
        return [t for value in output.values() for t in float_outputs(value)]
    if isinstance(output, (list, tuple)):
        return [t for value in output for t in float_outputs(value)]
    return []


def eval_outputs(model, inputs, dtype):
    with torch.no_grad():
        return float_outputs(model(pixel_values=pixel_values(dtype), **inputs))


def max_relative_error(actual, expected):
    """max over tensors of max |a - e| / max |e| over the finite entries; non-finite ones (masked
    logits are -inf) must agree exactly."""
    errors = []
    for a, e in zip(actual, expected):
        finite = e.isfinite()
        assert torch.equal(a[~finite], e[~finite])
        errors.append(((a - e)[finite].abs().max() / e[finite].abs().max().clamp_min(1e-30)).item())
    return max(errors)


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_outputs_match_hf_and_unpatch_restores_them(models, family):
    model, inputs, _ = models[family]
    for dtype, tolerance in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        model.to(dtype)
        with CountOpCalls() as before:
            hf = eval_outputs(model, inputs, dtype)
        with detrx_hf.patched(), CountOpCalls() as counter:
            ours = eval_outputs(model, inputs, dtype)
        with CountOpCalls() as after:
            restored = eval_outputs(model, inputs, dtype)
        assert before.calls == 0 and after.calls == 0, "detrx's op ran while unpatched"
        assert counter.calls > 0, "the patched model did not call detrx's op"
        assert len(ours) == len(hf) > 0
        assert max_relative_error(ours, hf) <= tolerance, f"{dtype}"
        assert all(torch.equal(a, b) for a, b in zip(restored, hf)), "unpatch() did not give HF's outputs back"
    model.double()


def training_gradients(model, inputs, labels):
    """Every parameter's gradient of a training loss (HF's own loss where the model has one)."""
    model.zero_grad()
    torch.manual_seed(3)  # denoising queries and point sampling draw from the global generator
    output = model(pixel_values=pixel_values(), **inputs, **(labels or {}))
    if labels is not None:
        loss = output.loss
    else:  # a fixed random projection of every output
        generator = torch.Generator().manual_seed(4)
        loss = sum((t * torch.randn(t.shape, generator=generator, dtype=t.dtype)).sum() for t in float_outputs(output))
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", FAMILIES)
def test_training_gradients_match_hf_in_float64(models, family):
    model, inputs, labels = models[family]
    model = copy.deepcopy(model).train()  # batch-norm statistics change in training mode
    # No denoising queries: patch() may also swap HF's denoising builder for detrx's DN op, whose
    # random noise differs draw for draw; without them the comparison isolates MSDA.
    if hasattr(model.config, "num_denoising"):
        model.config.num_denoising = 0
    hf = training_gradients(model, inputs, labels)
    with detrx_hf.patched():
        ours = training_gradients(model, inputs, labels)
    assert ours.keys() == hf.keys() and len(hf) > 0
    sampling_offsets = [name for name in hf if "sampling_offsets" in name]
    assert sampling_offsets and any(hf[name].abs().max() > 0 for name in sampling_offsets)
    # Relative to each parameter's largest gradient; gradients that vanish in exact arithmetic (a
    # bias followed by a normalisation) are float64 noise, compared against 1e-6 of the largest one.
    floor = 1e-6 * max(g.abs().max().item() for g in hf.values())
    for name, expected in hf.items():
        scale = max(expected.abs().max().item(), floor)
        assert (ours[name] - expected).abs().max().item() <= 1e-8 * scale, name


@pytest.mark.parametrize("family", ["deformable_detr", "rt_detr_v2", "d_fine", "mask2former"])
def test_bfloat16_autocast_runs_patched_and_stays_near_float32(models, family):
    model, inputs, _ = models[family]
    model = copy.deepcopy(model).float()
    with detrx_hf.patched():
        reference = eval_outputs(model, inputs, torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16), CountOpCalls() as counter:
            ours = eval_outputs(model, inputs, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hf = eval_outputs(model, inputs, torch.float32)
    assert counter.calls > 0
    ours_error = max_relative_error(ours, reference)
    hf_error = max_relative_error(hf, reference)
    # bfloat16 keeps 8 significant bits: HF's own autocast path lands a few 1e-2 off float32 here.
    # The patched path (MSDA in float32, the rest as autocast runs it) may be at most twice as far.
    assert ours_error <= max(2 * hf_error, 0.05), f"patched {ours_error:.3g}, HF {hf_error:.3g}"


def test_patch_finds_every_site_kind_and_is_idempotent():
    import transformers.models.d_fine.modeling_d_fine as d_fine
    import transformers.models.deformable_detr.modeling_deformable_detr as deformable
    import transformers.models.mask2former.modeling_mask2former as mask2former
    import transformers.models.rt_detr.modeling_rt_detr as rt_detr
    import transformers.models.rt_detr_v2.modeling_rt_detr_v2 as rt_detr_v2

    from detrx.integrations import hf_denoising

    hf_forward = deformable.MultiScaleDeformableAttention.forward
    hf_v1 = mask2former.multi_scale_deformable_attention
    hf_v2 = rt_detr_v2.multi_scale_deformable_attention_v2
    hf_denoising_builder = rt_detr.get_contrastive_denoising_training_group
    hf_layer_forward = d_fine.DFineMultiscaleDeformableAttention.forward
    try:
        sites = detrx_hf.patch()
        layer_forward = d_fine.DFineMultiscaleDeformableAttention.forward  # runs detrx's v2 in layers built before
        assert layer_forward is not hf_layer_forward and layer_forward.__wrapped__ is hf_layer_forward
        assert rt_detr.get_contrastive_denoising_training_group is hf_denoising.get_contrastive_denoising_training_group
        assert "transformers.models.deformable_detr.modeling_deformable_detr.MultiScaleDeformableAttention.forward" \
            in sites
        assert "transformers.models.mask2former.modeling_mask2former.multi_scale_deformable_attention" in sites
        assert "transformers.models.rt_detr_v2.modeling_rt_detr_v2.multi_scale_deformable_attention_v2" in sites
        patched_v2 = rt_detr_v2.multi_scale_deformable_attention_v2
        assert patched_v2 is not hf_v2 and patched_v2.__wrapped__ is hf_v2
        assert mask2former.multi_scale_deformable_attention.__wrapped__ is hf_v1
        assert detrx_hf.patch() == sites  # twice: nothing new, nothing wrapped twice
        assert rt_detr_v2.multi_scale_deformable_attention_v2 is patched_v2
        assert d_fine.DFineMultiscaleDeformableAttention.forward is layer_forward
        assert detrx_hf.patched_sites() == sites
    finally:
        detrx_hf.unpatch()
    assert deformable.MultiScaleDeformableAttention.forward is hf_forward
    assert mask2former.multi_scale_deformable_attention is hf_v1
    assert rt_detr_v2.multi_scale_deformable_attention_v2 is hf_v2
    assert rt_detr.get_contrastive_denoising_training_group is hf_denoising_builder
    assert d_fine.DFineMultiscaleDeformableAttention.forward is hf_layer_forward
    assert detrx_hf.patched_sites() == []


def test_functions_held_across_unpatch_run_hfs_code_again():
    """Code that took the patched functions while patched (`from ... import multi_scale_deformable_attention`)
    gets HF's results, without detrx's op, once unpatched."""
    import transformers.models.mask2former.modeling_mask2former as mask2former
    import transformers.models.rt_detr_v2.modeling_rt_detr_v2 as rt_detr_v2

    value, levels, locations, weights = random_v2_inputs([2, 2, 2])
    v1_locations = locations.view(*locations.shape[:3], len(levels), 2, 2).clamp(0, 1)  # [N, Lq, M, L, P, 2]
    v1_weights = weights.view(*weights.shape[:3], len(levels), 2)                        # [N, Lq, M, L, P]
    v1_args = (value, levels, v1_locations, v1_weights)
    v2_args = (value, levels, locations, weights, [2, 2, 2])
    expected = (mask2former.multi_scale_deformable_attention(*v1_args),
                rt_detr_v2.multi_scale_deformable_attention_v2(*v2_args))
    with detrx_hf.patched():
        held_v1, held_v2 = mask2former.multi_scale_deformable_attention, rt_detr_v2.multi_scale_deformable_attention_v2
    with CountOpCalls() as counter:
        got = held_v1(*v1_args), held_v2(*v2_args)
    assert counter.calls == 0
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


def random_v2_inputs(num_points_list, levels=((8, 6), (4, 3), (2, 2)), heads=2, channels=4, queries=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    S = sum(h * w for h, w in levels)
    value = torch.randn(2, S, heads, channels, generator=generator, dtype=torch.float64)
    total = sum(num_points_list)
    locations = -0.2 + 1.4 * torch.rand(2, queries, heads, total, 2, generator=generator, dtype=torch.float64)
    weights = torch.rand(2, queries, heads, total, generator=generator, dtype=torch.float64).softmax(-1)
    return value, list(levels), locations, weights


@pytest.mark.parametrize("num_points_list", [[2, 2, 2], [1, 4, 2]])
@pytest.mark.parametrize("method", ["default", "discrete"])
def test_v2_function_unequal_points_and_discrete_method(num_points_list, method):
    import transformers.models.rt_detr_v2.modeling_rt_detr_v2 as rt_detr_v2

    value, levels, locations, weights = random_v2_inputs(num_points_list)
    inputs = [t.requires_grad_() for t in (value, locations, weights)]
    hf_function = rt_detr_v2.multi_scale_deformable_attention_v2
    expected = hf_function(inputs[0], levels, inputs[1], inputs[2], num_points_list, method)
    with detrx_hf.patched(), CountOpCalls() as counter:
        got = rt_detr_v2.multi_scale_deformable_attention_v2(inputs[0], levels, inputs[1], inputs[2],
                                                             num_points_list, method)
    assert counter.calls == (1 if method == "default" else 0)  # "discrete" stays HF's own code
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    if method == "default":
        grad_output = torch.randn(got.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        for a, b in zip(torch.autograd.grad(got, inputs, grad_output), torch.autograd.grad(expected, inputs, grad_output)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def msda_module_inputs(levels=((6, 5), (3, 3)), batch=2, queries=7, heads=2, channels=8, points=3):
    generator = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor(levels, dtype=torch.int64)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    value = torch.randn(batch, int(areas.sum()), heads, channels, generator=generator)
    locations = torch.rand(batch, queries, heads, len(levels), points, 2, generator=generator)
    weights = torch.rand(batch, queries, heads, len(levels), points, generator=generator)
    return value, spatial_shapes, [tuple(level) for level in levels], level_start_index, locations, weights, 64


@pytest.mark.full_graph
def test_compile_fullgraph_of_a_patched_hf_msda_module():
    from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention

    module = MultiScaleDeformableAttention()
    inputs = msda_module_inputs()
    expected = module(*inputs)
    graph_targets = []

    def recording_backend(graph_module, example_inputs):
        graph_targets.extend(node.target for node in graph_module.graph.nodes)
        return graph_module.forward

    with detrx_hf.patched():
        torch._dynamo.reset()
        compiled = torch.compile(module, fullgraph=True, backend=recording_backend)
        got = compiled(*inputs)
    torch._dynamo.reset()
    op_nodes = [t for t in graph_targets if t in (torch.ops.detrx.ms_deform_attn, torch.ops.detrx.ms_deform_attn.default)]
    assert len(op_nodes) == 1  # one graph (fullgraph), and detrx's op in it
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_patched_msda_module_takes_what_hfs_takes():
    """HF's module reads only the host shapes: the patched one also takes int32 or missing level
    starts and a missing shape tensor, and gives HF's result."""
    from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention

    module = MultiScaleDeformableAttention()
    value, spatial_shapes, shapes_list, level_start_index, locations, weights, step = msda_module_inputs()
    expected = module(value, spatial_shapes, shapes_list, level_start_index, locations, weights, step)
    with detrx_hf.patched(), CountOpCalls() as counter:
        for shapes, starts in [(spatial_shapes, level_start_index.int()), (None, None), (spatial_shapes.int(), None)]:
            got = module(value, shapes, shapes_list, starts, locations, weights, step)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert counter.calls == 3


def test_bad_input_through_the_patched_paths_gets_a_clear_error():
    from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention
    import transformers.models.mask2former.modeling_mask2former as mask2former
    import transformers.models.rt_detr_v2.modeling_rt_detr_v2 as rt_detr_v2

    value, spatial_shapes, shapes_list, level_start_index, locations, weights, step = msda_module_inputs()
    with detrx_hf.patched():
        module = MultiScaleDeformableAttention()
        with pytest.raises(ValueError, match="spatial_shapes_list areas sum to"):  # HF's host shapes are checked
            module(value[:, :-1], spatial_shapes, shapes_list, level_start_index, locations, weights, step)
        with pytest.raises(ValueError, match="sampling_locations must be"):
            module(value, spatial_shapes, shapes_list, level_start_index, locations[:, :, :1], weights, step)
        with pytest.raises(ValueError, match="sampling_locations must have value's dtype"):
            module(value, spatial_shapes, shapes_list, level_start_index, locations.double(), weights.double(), step)
        v2_value, levels, v2_locations, v2_weights = random_v2_inputs([2, 2, 2])
        with pytest.raises(ValueError, match="num_points_list"):
            rt_detr_v2.multi_scale_deformable_attention_v2(v2_value, levels, v2_locations, v2_weights, [2, 2, 3])
        with pytest.raises(ValueError, match=r"one entry per level \(3\), got \[3, 3\]"):
            rt_detr_v2.multi_scale_deformable_attention_v2(v2_value, levels, v2_locations, v2_weights, [3, 3])
        # the functions hand HF's host shapes on, which the op checks against value
        with pytest.raises(ValueError, match="spatial_shapes_list areas sum to"):
            rt_detr_v2.multi_scale_deformable_attention_v2(v2_value[:, :-1], levels, v2_locations, v2_weights,
                                                           [2, 2, 2])
        v1_locations = v2_locations.view(*v2_locations.shape[:3], len(levels), 2, 2)  # [N, Lq, M, L, P, 2]
        v1_weights = v2_weights.view(*v2_weights.shape[:3], len(levels), 2)            # [N, Lq, M, L, P]
        with pytest.raises(ValueError, match="spatial_shapes_list areas sum to"):
            mask2former.multi_scale_deformable_attention(v2_value[:, :-1], levels, v1_locations, v1_weights)


def test_d_fine_built_before_patch_runs_detrx_while_patched():
    import transformers.models.d_fine.modeling_d_fine as d_fine

    torch.manual_seed(0)
    model, _, _ = build_d_fine()  # built before patch(): its layers hold HF's function
    perturb_sampling_offsets(model, torch.Generator().manual_seed(1))
    model.eval()
    layers = [m for m in model.modules() if isinstance(m, d_fine.DFineMultiscaleDeformableAttention)]
    assert layers and all(layer.ms_deformable_attn_core is d_fine.multi_scale_deformable_attention_v2
                          for layer in layers)
    hf = eval_outputs(model, {}, torch.float32)
    with detrx_hf.patched() as sites, CountOpCalls() as counter:
        ours = eval_outputs(model, {}, torch.float32)
    assert "transformers.models.d_fine.modeling_d_fine.DFineMultiscaleDeformableAttention.forward" in sites
    assert counter.calls == len(layers)
    assert max_relative_error(ours, hf) <= 1e-4
    # the layers hold HF's function again, and run it
    assert all(layer.ms_deformable_attn_core is d_fine.multi_scale_deformable_attention_v2 for layer in layers)
    with CountOpCalls() as counter:
        eval_outputs(model, {}, torch.float32)
    assert counter.calls == 0


def test_v2_function_keeps_level_sizes_symbolic_under_export():
    """Level sizes taken from a dynamic input stay symbolic through the patched function, so the
    exported program runs at other sizes (a size read as an int would be frozen into it)."""
    import transformers.models.rt_detr_v2.modeling_rt_detr_v2 as rt_detr_v2

    class OneLevel(torch.nn.Module):
        def forward(self, feature_map, locations, weights):  # [N, M * D, H, W], [N, Lq, M, P, 2], [N, Lq, M, P]
            N, _, H, W = feature_map.shape
            value = feature_map.flatten(2).transpose(1, 2).reshape(N, H * W, 2, -1)  # [N, H * W, M, D]
            return rt_detr_v2.multi_scale_deformable_attention_v2(value, [(H, W)], locations, weights, [3])

    generator = torch.Generator().manual_seed(0)
    locations, weights = torch.rand(1, 4, 2, 3, 2, generator=generator), torch.rand(1, 4, 2, 3, generator=generator)
    size = torch.export.Dim.DYNAMIC
    with detrx_hf.patched():
        program = torch.export.export(OneLevel(), (torch.rand(1, 8, 6, 5), locations, weights),
                                      dynamic_shapes=({2: size, 3: size}, None, None))
    for h, w in ((7, 9), (4, 3)):
        feature_map = torch.rand(1, 8, h, w, generator=generator)
        torch.testing.assert_close(program.module()(feature_map, locations, weights),
                                   OneLevel()(feature_map, locations, weights), rtol=1e-5, atol=1e-6)


MODELING_WITH_A_GENERATED_CLASS = '''
import torch

def multi_scale_deformable_attention_v2(*args):
    return "HF"

scope = {}
exec("def __init__(self):\\n    torch.nn.Module.__init__(self)", {"torch": torch}, scope)  # no source file
Generated = type("Generated", (torch.nn.Module,), {"__init__": scope["__init__"], "forward": lambda self: None,
                                                   "__module__": __name__})

class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.core = multi_scale_deformable_attention_v2

    def forward(self):
        return self.core()
'''


def test_layer_scan_reads_past_a_class_without_source(tmp_path, monkeypatch):
    """A modeling module may hold classes whose __init__ has no source (generated ones): the scan for
    layers that store the v2 function skips them and reads on."""
    (tmp_path / "modeling_generated.py").write_text(MODELING_WITH_A_GENERATED_CLASS)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("modeling_generated")
    assert detrx_hf._layers_storing_v2([module]) == [(module.Layer, "core")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_patched_paths_on_cuda_with_shapes_given_on_the_host():
    """HF hands level sizes as Python lists (and level starts on the value's device): the patched
    module and functions put what they build on the value's device."""
    from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention
    import transformers.models.mask2former.modeling_mask2former as mask2former
    import transformers.models.rt_detr_v2.modeling_rt_detr_v2 as rt_detr_v2

    value, spatial_shapes, shapes_list, level_start_index, locations, weights, step = msda_module_inputs()
    module = MultiScaleDeformableAttention()
    v2_value, levels, v2_locations, v2_weights = random_v2_inputs([2, 2, 2])
    v1_locations = v2_locations.view(*v2_locations.shape[:3], len(levels), 2, 2)  # [N, Lq, M, L, P, 2]
    v1_weights = v2_weights.view(*v2_weights.shape[:3], len(levels), 2)            # [N, Lq, M, L, P]
    calls = [lambda: module(value.cuda(), None, shapes_list, level_start_index.cuda(), locations.cuda(),
                            weights.cuda(), step),
             lambda: mask2former.multi_scale_deformable_attention(v2_value.cuda(), levels, v1_locations.cuda(),
                                                                  v1_weights.cuda()),
             lambda: rt_detr_v2.multi_scale_deformable_attention_v2(v2_value.cuda(), levels, v2_locations.cuda(),
                                                                    v2_weights.cuda(), [2, 2, 2])]
    expected = [call() for call in calls]
    with detrx_hf.patched():
        for call, hf in zip(calls, expected):
            torch.testing.assert_close(call(), hf, rtol=1e-4, atol=1e-5)
