// Registers the CPU kernels of ms_deform_attn: every call goes to the copy compiled for the CPU
// level in use (cpu_levels.h); the copies are ms_deform_attn_cpu.cpp, compiled once per level.
#include <ATen/core/ATen_fwd.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <tuple>

#include "cpu_levels.h"

namespace detrx {

using MSDeformAttnGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

#define DETRX_FORWARD_ARGS                                                                           \
  const at::Tensor &value, const at::Tensor &spatial_shapes, const at::Tensor &level_start_index,   \
      const at::Tensor &sampling_locations, const at::Tensor &attention_weights,                     \
      at::OptionalIntArrayRef spatial_shapes_hw
#define DETRX_BACKWARD_ARGS const at::Tensor &grad_output, DETRX_FORWARD_ARGS
#define DETRX_DECLARE_LEVEL(level)                                            \
  namespace DETRX_PASTE(cpu_, level) {                                        \
  at::Tensor ms_deform_attn_cpu(DETRX_FORWARD_ARGS);                          \
  MSDeformAttnGrads ms_deform_attn_backward_cpu(DETRX_BACKWARD_ARGS);         \
  }
DETRX_FOR_EACH_CPU_LEVEL(DETRX_DECLARE_LEVEL)
#undef DETRX_DECLARE_LEVEL

namespace {

using Forward = at::Tensor (*)(DETRX_FORWARD_ARGS);
using Backward = MSDeformAttnGrads (*)(DETRX_BACKWARD_ARGS);
#define DETRX_FORWARD(level) &DETRX_PASTE(cpu_, level)::ms_deform_attn_cpu,
#define DETRX_BACKWARD(level) &DETRX_PASTE(cpu_, level)::ms_deform_attn_backward_cpu,
Forward forward_copies[] = {DETRX_FOR_EACH_CPU_LEVEL(DETRX_FORWARD)};
Backward backward_copies[] = {DETRX_FOR_EACH_CPU_LEVEL(DETRX_BACKWARD)};
#undef DETRX_FORWARD
#undef DETRX_BACKWARD

at::Tensor ms_deform_attn_cpu(DETRX_FORWARD_ARGS) {
  return call_cpu_level(forward_copies, value, spatial_shapes, level_start_index, sampling_locations,
                        attention_weights, spatial_shapes_hw);
}

MSDeformAttnGrads ms_deform_attn_backward_cpu(DETRX_BACKWARD_ARGS) {
  return call_cpu_level(backward_copies, grad_output, value, spatial_shapes, level_start_index,
                        sampling_locations, attention_weights, spatial_shapes_hw);
}

}  // namespace

TORCH_LIBRARY_IMPL(detrx, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace detrx
