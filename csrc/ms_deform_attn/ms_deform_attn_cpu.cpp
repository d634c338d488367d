// CPU kernels of ms_deform_attn (forward and backward).
//
// Forward: threads split the (batch, query) rows; each row gathers, for every head, the
// 4 * L * P bilinear taps into a D-channel accumulator. When D is 16, 32 or 64 the accumulator is a
// compile-time array that the compiler keeps in SIMD registers; other D use the same code with a
// runtime channel count.
//
// Backward: each task owns one (batch, head) slice of grad_value, so the scatter of the value
// gradient needs no atomics and the result does not depend on the thread count or schedule.
// Reduced-precision inputs (float16, bfloat16) are computed in float32.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "ms_deform_attn/bilinear_sampling.h"
#include "ms_deform_attn/ms_deform_attn_checks.h"

namespace detrx {
namespace {

// D channels of accumulator: a fixed-size array (kChannels > 0) or a runtime-sized buffer.
template <typename acc_t, int kChannels>
struct ChannelBuffer {
  acc_t data[kChannels];
  explicit ChannelBuffer(int64_t) {}
  acc_t* get() { return data; }
};

template <typename acc_t>
struct ChannelBuffer<acc_t, 0> {
  std::vector<acc_t> data;
  explicit ChannelBuffer(int64_t channels) : data(channels) {}
  acc_t* get() { return data.data(); }
};

// Calls body.template operator()<kChannels>() with kChannels = D for the specialised sizes, else 0.
template <typename Body>
void dispatch_channels(int64_t channels, const Body& body) {
  switch (channels) {
    case 16: return body(std::integral_constant<int, 16>{});
    case 32: return body(std::integral_constant<int, 32>{});
    case 64: return body(std::integral_constant<int, 64>{});
    default: return body(std::integral_constant<int, 0>{});
  }
}

template <typename scalar_t, int kChannels>
void forward_kernel(const MSDeformAttnSizes& sz, const scalar_t* value, const int64_t* spatial_shapes,
                    const int64_t* level_start, const scalar_t* locations, const scalar_t* weights,
                    scalar_t* output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t D = kChannels > 0 ? kChannels : sz.channels;
  const int64_t M = sz.heads, L = sz.levels, P = sz.points;
  const int64_t row_stride = M * D;  // value elements per spatial position
  const int64_t grain = std::max<int64_t>(1, 2048 / (M * L * P));
  at::parallel_for(0, sz.batch * sz.queries, grain, [&](int64_t begin, int64_t end) {
    ChannelBuffer<acc_t, kChannels> buffer(D);
    acc_t* acc = buffer.get();
    for (int64_t row = begin; row < end; ++row) {  // row = n * Lq + q
      const scalar_t* value_n = value + (row / sz.queries) * sz.values * row_stride;
      for (int64_t m = 0; m < M; ++m) {
        const int64_t sample0 = (row * M + m) * L * P;
        const scalar_t* loc = locations + 2 * sample0;  // [L, P, 2]
        const scalar_t* weight = weights + sample0;     // [L, P]
        for (int64_t d = 0; d < D; ++d) acc[d] = acc_t(0);
        for (int64_t l = 0; l < L; ++l) {
          const int64_t H = spatial_shapes[2 * l], W = spatial_shapes[2 * l + 1];
          const scalar_t* value_level = value_n + level_start[l] * row_stride + m * D;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t s = l * P + p;
            const auto fp = bilinear_footprint<acc_t>(loc[2 * s], loc[2 * s + 1], H, W);
            const acc_t a = static_cast<acc_t>(weight[s]);
            for (int c = 0; c < 4; ++c) {
              if (!fp.inside[c]) continue;
              const acc_t w = a * fp.weight[c];
              const scalar_t* v = value_level + fp.pixel[c] * row_stride;
              for (int64_t d = 0; d < D; ++d) acc[d] += w * static_cast<acc_t>(v[d]);
            }
          }
        }
        scalar_t* out = output + (row * M + m) * D;
        for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(acc[d]);
      }
    }
  });
}

template <typename scalar_t, int kChannels>
void backward_kernel(const MSDeformAttnSizes& sz, const scalar_t* grad_output, const scalar_t* value,
                     const int64_t* spatial_shapes, const int64_t* level_start, const scalar_t* locations,
                     const scalar_t* weights, scalar_t* grad_value, scalar_t* grad_locations,
                     scalar_t* grad_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool kAccumulateInPlace = std::is_same_v<acc_t, scalar_t>;
  const int64_t D = kChannels > 0 ? kChannels : sz.channels;
  const int64_t M = sz.heads, L = sz.levels, P = sz.points, S = sz.values;
  const int64_t row_stride = M * D;
  at::parallel_for(0, sz.batch * M, 1, [&](int64_t begin, int64_t end) {
    ChannelBuffer<acc_t, kChannels> grad_buffer(D);
    acc_t* g = grad_buffer.get();
    // float16/bfloat16: this (batch, head) slice of grad_value is summed in float32 first.
    std::vector<acc_t> slice_buffer(kAccumulateInPlace ? 0 : S * D);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / M, m = task % M;
      const scalar_t* value_nm = value + n * S * row_stride + m * D;
      scalar_t* grad_value_nm = grad_value + n * S * row_stride + m * D;
      acc_t* grad_slice;
      int64_t grad_slice_stride;
      if constexpr (kAccumulateInPlace) {
        grad_slice = grad_value_nm;
        grad_slice_stride = row_stride;
      } else {
        std::fill(slice_buffer.begin(), slice_buffer.end(), acc_t(0));
        grad_slice = slice_buffer.data();
        grad_slice_stride = D;
      }
      for (int64_t q = 0; q < sz.queries; ++q) {
        const int64_t row = n * sz.queries + q;
        const scalar_t* grad_out = grad_output + (row * M + m) * D;
        for (int64_t d = 0; d < D; ++d) g[d] = static_cast<acc_t>(grad_out[d]);
        const int64_t sample0 = (row * M + m) * L * P;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t H = spatial_shapes[2 * l], W = spatial_shapes[2 * l + 1];
          for (int64_t p = 0; p < P; ++p) {
            const int64_t s = sample0 + l * P + p;
            const auto fp = bilinear_footprint<acc_t>(locations[2 * s], locations[2 * s + 1], H, W);
            const acc_t a = static_cast<acc_t>(weights[s]);
            acc_t dot[4] = {0, 0, 0, 0};  // <grad_out, value at corner c>
            for (int c = 0; c < 4; ++c) {
              if (!fp.inside[c]) continue;
              const int64_t position = level_start[l] + fp.pixel[c];
              const scalar_t* v = value_nm + position * row_stride;
              acc_t* gv = grad_slice + position * grad_slice_stride;
              const acc_t w = a * fp.weight[c];
              acc_t sum = 0;
              for (int64_t d = 0; d < D; ++d) {
                sum += g[d] * static_cast<acc_t>(v[d]);
                gv[d] += w * g[d];
              }
              dot[c] = sum;
            }
            acc_t grad_x, grad_y;
            bilinear_location_grad(fp, dot, H, W, &grad_x, &grad_y);
            grad_locations[2 * s] = static_cast<scalar_t>(a * grad_x);
            grad_locations[2 * s + 1] = static_cast<scalar_t>(a * grad_y);
            grad_weights[s] = static_cast<scalar_t>(fp.weight[0] * dot[0] + fp.weight[1] * dot[1] +
                                                    fp.weight[2] * dot[2] + fp.weight[3] * dot[3]);
          }
        }
      }
      if constexpr (!kAccumulateInPlace) {
        for (int64_t i = 0; i < S; ++i)
          for (int64_t d = 0; d < D; ++d)
            grad_value_nm[i * row_stride + d] = static_cast<scalar_t>(slice_buffer[i * D + d]);
      }
    }
  });
}

at::Tensor ms_deform_attn_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                              const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights) {
  const auto sz = check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                              attention_weights);
  auto output = at::empty({sz.batch, sz.queries, sz.heads * sz.channels}, value.options());
  if (output.numel() == 0) return output;
  const auto value_c = value.contiguous(), shapes_c = spatial_shapes.contiguous();
  const auto starts_c = level_start_index.contiguous(), locations_c = sampling_locations.contiguous();
  const auto weights_c = attention_weights.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu", [&] {
    dispatch_channels(sz.channels, [&](auto channels) {
      forward_kernel<scalar_t, decltype(channels)::value>(
          sz, value_c.data_ptr<scalar_t>(), shapes_c.data_ptr<int64_t>(), starts_c.data_ptr<int64_t>(),
          locations_c.data_ptr<scalar_t>(), weights_c.data_ptr<scalar_t>(), output.data_ptr<scalar_t>());
    });
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const auto sz = check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                              attention_weights);
  check_grad_output(grad_output, value, sz);
  auto grad_value = at::zeros(value.sizes(), value.options());
  auto grad_locations = at::empty(sampling_locations.sizes(), value.options());
  auto grad_weights = at::empty(attention_weights.sizes(), value.options());
  if (grad_weights.numel() == 0) {
    grad_locations.zero_();
    return {grad_value, grad_locations, grad_weights};
  }
  const auto grad_output_c = grad_output.contiguous(), value_c = value.contiguous();
  const auto shapes_c = spatial_shapes.contiguous(), starts_c = level_start_index.contiguous();
  const auto locations_c = sampling_locations.contiguous(), weights_c = attention_weights.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    dispatch_channels(sz.channels, [&](auto channels) {
      backward_kernel<scalar_t, decltype(channels)::value>(
          sz, grad_output_c.data_ptr<scalar_t>(), value_c.data_ptr<scalar_t>(), shapes_c.data_ptr<int64_t>(),
          starts_c.data_ptr<int64_t>(), locations_c.data_ptr<scalar_t>(), weights_c.data_ptr<scalar_t>(),
          grad_value.data_ptr<scalar_t>(), grad_locations.data_ptr<scalar_t>(), grad_weights.data_ptr<scalar_t>());
    });
  });
  return {grad_value, grad_locations, grad_weights};
}

}  // namespace

TORCH_LIBRARY_IMPL(detrx, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace detrx
