// Argument checks shared by the CPU and CUDA kernels of ms_deform_attn. They raise ValueError
// (TORCH_CHECK_VALUE) naming the argument and the expected shape, dtype or device.
//
// The level layout (spatial_shapes, level_start_index must tile value's S rows) needs the data of
// the two small int64 tensors. On the CPU it is read here. On CUDA it is not (a copy to the host
// would synchronise every call): the kernels assert it on the device, and a bad layout then
// surfaces as a device-side assertion at the next synchronisation. Callers that know the level
// shapes on the host pass them as spatial_shapes_hw (H_0, W_0, H_1, W_1, ...), which is checked
// here on any device, and on the CPU also against spatial_shapes.
#pragma once

#include <ATen/core/ATen_fwd.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ms_deform_attn/ms_deform_attn_layout.h"
#include "ms_deform_attn/ms_deform_attn_sizes.h"

namespace detrx {

// The host-side level shapes: 2L non-negative sizes whose areas sum to S.
inline void check_spatial_shapes_hw(at::IntArrayRef hw, int64_t levels, int64_t values) {
  TORCH_CHECK_VALUE(static_cast<int64_t>(hw.size()) == 2 * levels, "ms_deform_attn: spatial_shapes_hw must be "
                    "(H_0, W_0, H_1, W_1, ...) for the L = ", levels, " levels of spatial_shapes (", 2 * levels,
                    " sizes), got ", hw);
  int64_t total = 0;
  for (int64_t l = 0; l < levels; ++l) {
    TORCH_CHECK_VALUE(hw[2 * l] >= 0 && hw[2 * l + 1] >= 0,
                      "ms_deform_attn: spatial_shapes_hw must be non-negative, got ", hw);
    total += hw[2 * l] * hw[2 * l + 1];
  }
  TORCH_CHECK_VALUE(total == values, "ms_deform_attn: spatial_shapes_hw areas sum to ", total, " but value has S = ",
                    values, " rows (value must be [N, sum H*W, M, D])");
}

// The level layout from the tensors' data (host tensors only), and its agreement with hw if given.
inline void check_level_tensors(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                                int64_t values, at::OptionalIntArrayRef hw) {
  const int64_t levels = spatial_shapes.size(0);
  const at::Tensor shapes = spatial_shapes.contiguous();
  const at::Tensor starts = level_start_index.contiguous();
  const int64_t* shape = shapes.data_ptr<int64_t>();
  const std::string error = level_layout_error(shape, starts.data_ptr<int64_t>(), levels, values);
  TORCH_CHECK_VALUE(error.empty(), "ms_deform_attn: ", error);
  for (int64_t l = 0; hw && l < levels; ++l) {
    TORCH_CHECK_VALUE(shape[2 * l] == (*hw)[2 * l] && shape[2 * l + 1] == (*hw)[2 * l + 1],
                      "ms_deform_attn: spatial_shapes and spatial_shapes_hw disagree at level ", l, ": (",
                      shape[2 * l], ", ", shape[2 * l + 1], ") vs (", (*hw)[2 * l], ", ", (*hw)[2 * l + 1], ")");
  }
}

inline MSDeformAttnSizes check_ms_deform_attn_inputs(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    at::OptionalIntArrayRef spatial_shapes_hw = std::nullopt) {
  TORCH_CHECK_VALUE(value.dim() == 4, "ms_deform_attn: value must be [N, S, M, D], got shape ", value.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(value.scalar_type()),
                    "ms_deform_attn: value must be a floating-point tensor, got ", value.scalar_type());
  TORCH_CHECK_VALUE(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 && spatial_shapes.size(0) >= 1,
                    "ms_deform_attn: spatial_shapes must be [L, 2] with L >= 1, got shape ", spatial_shapes.sizes());
  const int64_t levels = spatial_shapes.size(0);
  TORCH_CHECK_VALUE(level_start_index.dim() == 1 && level_start_index.size(0) == levels,
                    "ms_deform_attn: level_start_index must be [L] = [", levels, "], got shape ",
                    level_start_index.sizes());
  TORCH_CHECK_VALUE(spatial_shapes.scalar_type() == at::kLong,
                    "ms_deform_attn: spatial_shapes must be int64, got ", spatial_shapes.scalar_type());
  TORCH_CHECK_VALUE(level_start_index.scalar_type() == at::kLong,
                    "ms_deform_attn: level_start_index must be int64, got ", level_start_index.scalar_type());
  MSDeformAttnSizes sz{value.size(0), value.size(1), value.size(2), value.size(3), 0, levels, 0};
  TORCH_CHECK_VALUE(sampling_locations.dim() == 6 && sampling_locations.size(-1) == 2,
                    "ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2], got shape ",
                    sampling_locations.sizes());
  sz.queries = sampling_locations.size(1);
  sz.points = sampling_locations.size(4);
  const std::vector<int64_t> expected{sz.batch, sz.queries, sz.heads, levels, sz.points, 2};
  TORCH_CHECK_VALUE(sampling_locations.sizes() == at::IntArrayRef(expected),
                    "ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2] = ", at::IntArrayRef(expected),
                    " (N, M from value, L from spatial_shapes), got ", sampling_locations.sizes());
  TORCH_CHECK_VALUE(attention_weights.sizes() == at::IntArrayRef(expected).slice(0, 5),
                    "ms_deform_attn: attention_weights must be [N, Lq, M, L, P] = ",
                    at::IntArrayRef(expected).slice(0, 5), ", got ", attention_weights.sizes());
  const std::pair<const char*, const at::Tensor*> others[] = {
      {"spatial_shapes", &spatial_shapes}, {"level_start_index", &level_start_index},
      {"sampling_locations", &sampling_locations}, {"attention_weights", &attention_weights}};
  for (const auto& [name, tensor] : others) {
    TORCH_CHECK_VALUE(tensor->device() == value.device(), "ms_deform_attn: ", name,
                      " must be on value's device ", value.device(), ", got ", tensor->device());
  }
  // Locations and weights share one dtype: value's, or float32 with a float16/bfloat16 value.
  const auto location_dtype = sampling_locations.scalar_type();
  const bool reduced_value = value.scalar_type() == at::kHalf || value.scalar_type() == at::kBFloat16;
  TORCH_CHECK_VALUE(location_dtype == value.scalar_type() || (reduced_value && location_dtype == at::kFloat),
                    "ms_deform_attn: sampling_locations must have value's dtype ", value.scalar_type(),
                    " (or float32 when value is float16/bfloat16), got ", location_dtype);
  TORCH_CHECK_VALUE(attention_weights.scalar_type() == location_dtype, "ms_deform_attn: attention_weights must "
                    "have sampling_locations' dtype ", location_dtype, ", got ", attention_weights.scalar_type());

  // The level layout must tile S exactly, or the kernels would read outside value.
  if (spatial_shapes_hw) check_spatial_shapes_hw(*spatial_shapes_hw, levels, sz.values);
  if (spatial_shapes.device().is_cpu()) {
    check_level_tensors(spatial_shapes, level_start_index, sz.values, spatial_shapes_hw);
  }
  return sz;
}

inline void check_grad_output(const at::Tensor& grad_output, const at::Tensor& value, const MSDeformAttnSizes& sz) {
  const std::vector<int64_t> expected{sz.batch, sz.queries, sz.heads * sz.channels};
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef(expected),
                    "ms_deform_attn_backward: grad_output must be [N, Lq, M * D] = ", at::IntArrayRef(expected),
                    ", got ", grad_output.sizes());
  TORCH_CHECK_VALUE(grad_output.scalar_type() == value.scalar_type() && grad_output.device() == value.device(),
                    "ms_deform_attn_backward: grad_output must match value's dtype and device (",
                    value.scalar_type(), ", ", value.device(), "), got ", grad_output.scalar_type(), ", ",
                    grad_output.device());
}

// The checked arguments of one call, contiguous, as both backends' kernels take them.
struct MSDeformAttnInputs {
  MSDeformAttnSizes sz;
  at::Tensor value, spatial_shapes, level_start_index, sampling_locations, attention_weights;
  at::Tensor grad_output;  // backward only
};

inline MSDeformAttnInputs prepare_ms_deform_attn_inputs(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights, at::OptionalIntArrayRef spatial_shapes_hw,
    const std::optional<at::Tensor>& grad_output = std::nullopt) {
  const auto sz = check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                              attention_weights, spatial_shapes_hw);
  if (grad_output) check_grad_output(*grad_output, value, sz);
  return {sz, value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
          sampling_locations.contiguous(), attention_weights.contiguous(),
          grad_output ? grad_output->contiguous() : at::Tensor()};
}

}  // namespace detrx
