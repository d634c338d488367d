// Every detrx operator schema, in one place. Kernels register per backend in csrc/<op>/.
#include <torch/library.h>

TORCH_LIBRARY(detrx, m) {
  // Multi-scale deformable attention (Deformable DETR). Shapes: value [N, S, M, D],
  // spatial_shapes int64 [L, 2] (H, W), level_start_index int64 [L],
  // sampling_locations [N, Lq, M, L, P, 2] normalised (x, y), attention_weights [N, Lq, M, L, P]
  // -> output [N, Lq, M * D]. spatial_shapes_hw: the level shapes on the host, (H_0, W_0, H_1, W_1,
  // ...), if the caller has them: checked on the host, so that CUDA needs no copy of spatial_shapes.
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, SymInt[]? spatial_shapes_hw=None) -> Tensor");
  // -> (grad_value, grad_sampling_locations, grad_attention_weights)
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights, "
      "SymInt[]? spatial_shapes_hw=None) -> (Tensor, Tensor, Tensor)");
  // Denoising queries (DN-DETR, DINO contrastive). Inputs: gt_labels int64 [B, G],
  // gt_boxes [B, G, 4] (cx, cy, w, h), gt_counts int64 [B], seed int64 [] (counter-based noise) or
  // noise float32 [B, K, 6] (pre-drawn uniforms), K = num_groups * group_size, group_size = max_gt
  // (x2 with contrastive). noise_style is "dn_detr" or "dino".
  // -> (labels int64 [B, K], boxes [B, K, 4], gt_index int64 [B, K], positive bool [B, K],
  //     valid bool [B, K], attn_mask bool [B, K+N, K+N] (or [0, K+N, K+N] when not per_image_mask),
  //     shared_attn_mask bool [K+N, K+N]); True = blocked.
  m.def(
      "dn_queries(Tensor gt_labels, Tensor gt_boxes, Tensor gt_counts, Tensor seed, Tensor? noise, "
      "int num_classes, int num_queries, int max_gt, int num_groups, bool contrastive, str noise_style, "
      "float label_noise_ratio, float box_noise_scale, float min_box_size, bool per_image_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
