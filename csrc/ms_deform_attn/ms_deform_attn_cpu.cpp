// The torch op's CPU front door of ms_deform_attn: checks the tensors, allocates the outputs and
// runs the kernels of ms_deform_attn_cpu_kernel.h with at::parallel_for. Reduced-precision inputs
// (float16, bfloat16) are computed in float32; their sampling locations and attention weights may
// be float16/bfloat16 too or float32 (loc_t), as autocast passes them.
//
// setup.py compiles this file once per CPU level (cpu_levels.h); ms_deform_attn_cpu_dispatch.cpp
// registers the op and calls the copy of the level in use.
#include "ms_deform_attn/ms_deform_attn_cpu_kernel.h"  // first: cpu_simd.h checks the level's flags

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <type_traits>

#include "ms_deform_attn/ms_deform_attn_checks.h"

namespace detrx {
namespace DETRX_CPU_NAMESPACE {
namespace {

void parallel_for_aten(int64_t count, int64_t grain, const RangeBody& body) {
  at::parallel_for(0, count, grain, body);
}

// Calls body(loc_t{}) with loc_t the dtype of the sampling locations and attention weights: value's
// (scalar_t), or float for a float16/bfloat16 value (the checks allow no other mix).
template <typename scalar_t, typename Body>
void dispatch_location_type(at::ScalarType location_dtype, const Body& body) {
  if constexpr (!std::is_same_v<scalar_t, at::opmath_type<scalar_t>>) {
    if (location_dtype == at::kFloat) return body(float{});
  }
  return body(scalar_t{});
}

void check_cpu_limits(const MSDeformAttnSizes& sz) {
  TORCH_CHECK_VALUE(sz.values < kMaxCpuValueRows, "ms_deform_attn (CPU): value must have S < 2^31 rows, got S = ",
                    sz.values);
}

}  // namespace

at::Tensor ms_deform_attn_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                              const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights, at::OptionalIntArrayRef spatial_shapes_hw) {
  const auto in = prepare_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                                attention_weights, spatial_shapes_hw);
  check_cpu_limits(in.sz);
  auto output = at::empty({in.sz.batch, in.sz.queries, in.sz.heads * in.sz.channels}, value.options());
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu", [&] {
    dispatch_location_type<scalar_t>(sampling_locations.scalar_type(), [&](auto location) {
      using loc_t = decltype(location);
      ms_deform_attn_forward_cpu_kernel<scalar_t, at::opmath_type<scalar_t>, loc_t>(
          in.sz, in.value.data_ptr<scalar_t>(), in.spatial_shapes.data_ptr<int64_t>(),
          in.level_start_index.data_ptr<int64_t>(), in.sampling_locations.data_ptr<loc_t>(),
          in.attention_weights.data_ptr<loc_t>(), output.data_ptr<scalar_t>(), &parallel_for_aten);
    });
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, at::OptionalIntArrayRef spatial_shapes_hw) {
  const auto in = prepare_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                                attention_weights, spatial_shapes_hw, grad_output);
  check_cpu_limits(in.sz);
  auto grad_value = at::zeros(value.sizes(), value.options());
  // Every element is written; in the dtype of the locations and weights.
  auto grad_locations = at::empty(sampling_locations.sizes(), sampling_locations.options());
  auto grad_weights = at::empty(attention_weights.sizes(), attention_weights.options());
  if (grad_weights.numel() == 0) return {grad_value, grad_locations, grad_weights};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    dispatch_location_type<scalar_t>(sampling_locations.scalar_type(), [&](auto location) {
      using loc_t = decltype(location);
      ms_deform_attn_backward_cpu_kernel<scalar_t, at::opmath_type<scalar_t>, loc_t>(
          in.sz, in.grad_output.data_ptr<scalar_t>(), in.value.data_ptr<scalar_t>(),
          in.spatial_shapes.data_ptr<int64_t>(), in.level_start_index.data_ptr<int64_t>(),
          in.sampling_locations.data_ptr<loc_t>(), in.attention_weights.data_ptr<loc_t>(),
          grad_value.data_ptr<scalar_t>(), grad_locations.data_ptr<loc_t>(), grad_weights.data_ptr<loc_t>(),
          &parallel_for_aten);
    });
  });
  return {grad_value, grad_locations, grad_weights};
}

}  // namespace DETRX_CPU_NAMESPACE
}  // namespace detrx
