// Every detrx operator schema, in one place. Kernels register per backend in csrc/<op>/.
#include <torch/library.h>

TORCH_LIBRARY(detrx, m) {
  // Multi-scale deformable attention (Deformable DETR). Shapes: value [N, S, M, D],
  // spatial_shapes int64 [L, 2] (H, W), level_start_index int64 [L],
  // sampling_locations [N, Lq, M, L, P, 2] normalised (x, y), attention_weights [N, Lq, M, L, P]
  // -> output [N, Lq, M * D].
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  // -> (grad_value, grad_sampling_locations, grad_attention_weights)
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
}
