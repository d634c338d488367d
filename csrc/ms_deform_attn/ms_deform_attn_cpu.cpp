// CPU kernels of ms_deform_attn (forward and backward).
//
// Forward: threads split the (batch, query) rows. For each row the bilinear taps of all its
// sampling points are computed with SIMD (cpu_query_taps.h), then each head gathers its taps into a
// D-channel sum: in at::vec registers for float32/float64 with D in {16, 32, 64}, else a plain
// channel loop.
//
// Backward: each task owns one (batch, head) slice of grad_value, so the scatter of the value
// gradient needs no atomics and the result does not depend on the thread count or schedule.
// Reduced-precision inputs (float16, bfloat16) are computed in float32; their sampling locations and
// attention weights may be float16/bfloat16 too or float32 (loc_t), as autocast passes them.
//
// setup.py compiles this file once per CPU level (cpu_levels.h); ms_deform_attn_cpu_dispatch.cpp
// registers the op and calls the copy of the level in use.
#include "cpu_vec.h"  // first: it picks the SIMD width of at::vec

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <type_traits>
#include <vector>

#include "ms_deform_attn/bilinear_sampling.h"  // bilinear_location_grad
#include "ms_deform_attn/cpu_query_taps.h"
#include "ms_deform_attn/ms_deform_attn_checks.h"

namespace detrx {
namespace DETRX_CPU_NAMESPACE {
namespace {

using at::vec::Vectorized;

// Channel counts with a SIMD-register path (scalar_t float32/float64); others take the plain loop.
template <typename scalar_t, int kChannels>
constexpr bool kSimdChannels = std::is_same_v<scalar_t, at::opmath_type<scalar_t>> && kChannels > 0 &&
                               kChannels % Vectorized<scalar_t>::size() == 0 &&
                               kChannels / Vectorized<scalar_t>::size() <= 4;

// Calls body(std::integral_constant<int, kChannels>) with kChannels = D for 16, 32 and 64, else 0.
template <typename Body>
void dispatch_channels(int64_t channels, const Body& body) {
  switch (channels) {
    case 16: return body(std::integral_constant<int, 16>{});
    case 32: return body(std::integral_constant<int, 32>{});
    case 64: return body(std::integral_constant<int, 64>{});
    default: return body(std::integral_constant<int, 0>{});
  }
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

// out[0:D] = sum over the head's points i in [first, first + count) and their corners inside the map
// of attention * bilinear weight * value row (a zero weight still multiplies its value, so NaN and
// inf propagate exactly as in grid_sample). Corner c goes to sum c, so consecutive taps do not
// wait on each other. SIMD registers for float32/float64 with D in {16, 32, 64} ...
template <typename scalar_t, int kChannels>
std::enable_if_t<kSimdChannels<scalar_t, kChannels>> gather_head(
    const scalar_t* value, int64_t row_stride, const QueryTaps<scalar_t>& taps, int64_t first, int64_t count,
    int64_t, scalar_t* out) {
  using Vec = Vectorized<scalar_t>;
  constexpr int kVecs = kChannels / Vec::size();
  Vec acc[4][kVecs];
  for (auto& sum : acc)
    for (auto& v : sum) v = Vec(scalar_t(0));
  for (int64_t i = first; i < first + count; ++i) {
    for (int c = 0; c < 4; ++c) {
      if (!taps.inside(c, i)) continue;
      const Vec w(taps.tap_weight(c, i));
      const scalar_t* row = value + taps.corner_row(c, i) * row_stride;
      for (int k = 0; k < kVecs; ++k) acc[c][k] = at::vec::fmadd(w, Vec::loadu(row + k * Vec::size()), acc[c][k]);
    }
  }
  for (int k = 0; k < kVecs; ++k) ((acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k])).store(out + k * Vec::size());
}

// ... or a plain channel loop (any D; float16/bfloat16 summed in float32).
template <typename scalar_t, int kChannels, typename acc_t>
std::enable_if_t<!kSimdChannels<scalar_t, kChannels>> gather_head(
    const scalar_t* value, int64_t row_stride, const QueryTaps<acc_t>& taps, int64_t first, int64_t count,
    int64_t channels, scalar_t* out) {
  thread_local std::vector<acc_t> acc;
  acc.assign(channels, acc_t(0));
  for (int64_t i = first; i < first + count; ++i) {
    for (int c = 0; c < 4; ++c) {
      if (!taps.inside(c, i)) continue;
      const acc_t w = taps.tap_weight(c, i);
      const scalar_t* row = value + taps.corner_row(c, i) * row_stride;
      for (int64_t d = 0; d < channels; ++d) acc[d] += w * static_cast<acc_t>(row[d]);
    }
  }
  for (int64_t d = 0; d < channels; ++d) out[d] = static_cast<scalar_t>(acc[d]);
}

template <typename scalar_t, int kChannels, typename loc_t>
void forward_kernel(const MSDeformAttnSizes& sz, const scalar_t* value, const int64_t* spatial_shapes,
                    const int64_t* level_start, const loc_t* locations, const loc_t* weights,
                    scalar_t* output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t M = sz.heads, D = sz.channels, LP = sz.levels * sz.points;
  const int64_t row_stride = M * D;  // value elements per spatial position
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, M * LP));  // ~2048 samples a chunk
  at::parallel_for(0, sz.batch * sz.queries, grain, [&](int64_t begin, int64_t end) {
    QueryTaps<acc_t> taps(sz, M, spatial_shapes, level_start);
    for (int64_t row = begin; row < end; ++row) {  // row = n * Lq + q
      const scalar_t* value_n = value + (row / sz.queries) * sz.values * row_stride;
      taps.compute(locations + 2 * row * M * LP, weights + row * M * LP);
      for (int64_t m = 0; m < M; ++m) {
        gather_head<scalar_t, kChannels>(value_n + m * D, row_stride, taps, m * LP, LP, D,
                                         output + (row * M + m) * D);
      }
    }
  });
}

// Backward of one corner tap: grad_value row += w * g, and returns <g, value row>.
// SIMD version for float32/float64 with D = kChannels ...
template <typename scalar_t, int kChannels>
struct TapBackward {
  using Vec = Vectorized<scalar_t>;
  static constexpr int kVecs = kChannels / Vec::size();
  Vec g[kVecs];

  TapBackward(const scalar_t* grad_out, int64_t) {
    for (int k = 0; k < kVecs; ++k) g[k] = Vec::loadu(grad_out + k * Vec::size());
  }

  scalar_t operator()(const scalar_t* v, scalar_t* gv, scalar_t w) const {
    const Vec wv(w);
    Vec dot(scalar_t(0));
    for (int k = 0; k < kVecs; ++k) {
      dot = at::vec::fmadd(g[k], Vec::loadu(v + k * Vec::size()), dot);
      at::vec::fmadd(wv, g[k], Vec::loadu(gv + k * Vec::size())).store(gv + k * Vec::size());
    }
    return at::vec::vec_reduce_all<scalar_t>([](Vec& x, Vec& y) { return x + y; }, dot);
  }
};

// ... and the plain loop for other D and for float16/bfloat16 (g and the grad_value slice in float32).
template <typename scalar_t, typename acc_t>
struct PlainTapBackward {
  std::vector<acc_t> g;

  PlainTapBackward(const scalar_t* grad_out, int64_t channels) : g(grad_out, grad_out + channels) {}

  acc_t operator()(const scalar_t* v, acc_t* gv, acc_t w) const {
    acc_t dot = 0;
    for (size_t d = 0; d < g.size(); ++d) {
      dot += g[d] * static_cast<acc_t>(v[d]);
      gv[d] += w * g[d];
    }
    return dot;
  }
};

template <typename scalar_t, int kChannels, typename loc_t>
void backward_kernel(const MSDeformAttnSizes& sz, const scalar_t* grad_output, const scalar_t* value,
                     const int64_t* spatial_shapes, const int64_t* level_start, const loc_t* locations,
                     const loc_t* weights, scalar_t* grad_value, loc_t* grad_locations,
                     loc_t* grad_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool kAccumulateInPlace = std::is_same_v<acc_t, scalar_t>;
  using Tap = std::conditional_t<kSimdChannels<scalar_t, kChannels>, TapBackward<scalar_t, kChannels>,
                                 PlainTapBackward<scalar_t, acc_t>>;
  const int64_t M = sz.heads, D = sz.channels, P = sz.points, LP = sz.levels * P, S = sz.values;
  const int64_t row_stride = M * D;
  at::parallel_for(0, sz.batch * M, 1, [&](int64_t begin, int64_t end) {
    QueryTaps<acc_t> taps(sz, 1, spatial_shapes, level_start);
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
        const int64_t head_row = (n * sz.queries + q) * M + m;
        const int64_t sample0 = head_row * LP;
        taps.compute(locations + 2 * sample0, weights + sample0);
        const Tap tap(grad_output + head_row * D, D);
        for (int64_t i = 0; i < LP; ++i) {
          const acc_t a = taps.attention(i);
          acc_t dot[4] = {0, 0, 0, 0};  // <grad_out, value at corner c>
          for (int c = 0; c < 4; ++c) {
            if (!taps.inside(c, i)) continue;
            const int64_t r = taps.corner_row(c, i);
            dot[c] = tap(value_nm + r * row_stride, grad_slice + r * grad_slice_stride, a * taps.weight(c, i));
          }
          const int64_t l = i / P;
          acc_t grad_x, grad_y;
          bilinear_location_grad(taps.frac_x(i), taps.frac_y(i), dot, spatial_shapes[2 * l],
                                 spatial_shapes[2 * l + 1], &grad_x, &grad_y);
          grad_locations[2 * (sample0 + i)] = static_cast<loc_t>(a * grad_x);
          grad_locations[2 * (sample0 + i) + 1] = static_cast<loc_t>(a * grad_y);
          grad_weights[sample0 + i] = static_cast<loc_t>(taps.weight(0, i) * dot[0] + taps.weight(1, i) * dot[1] +
                                                            taps.weight(2, i) * dot[2] + taps.weight(3, i) * dot[3]);
        }
      }
      if constexpr (!kAccumulateInPlace) {
        for (int64_t s = 0; s < S; ++s)
          for (int64_t d = 0; d < D; ++d)
            grad_value_nm[s * row_stride + d] = static_cast<scalar_t>(slice_buffer[s * D + d]);
      }
    }
  });
}

// The CPU kernels index value rows with int32 for float32 inputs (cpu_query_taps.h).
void check_cpu_limits(const MSDeformAttnSizes& sz) {
  TORCH_CHECK_VALUE(sz.values < (int64_t(1) << 31), "ms_deform_attn (CPU): value must have S < 2^31 rows, got S = ",
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
      dispatch_channels(in.sz.channels, [&](auto channels) {
        forward_kernel<scalar_t, decltype(channels)::value, loc_t>(
            in.sz, in.value.data_ptr<scalar_t>(), in.spatial_shapes.data_ptr<int64_t>(),
            in.level_start_index.data_ptr<int64_t>(), in.sampling_locations.data_ptr<loc_t>(),
            in.attention_weights.data_ptr<loc_t>(), output.data_ptr<scalar_t>());
      });
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
      dispatch_channels(in.sz.channels, [&](auto channels) {
        backward_kernel<scalar_t, decltype(channels)::value, loc_t>(
            in.sz, in.grad_output.data_ptr<scalar_t>(), in.value.data_ptr<scalar_t>(),
            in.spatial_shapes.data_ptr<int64_t>(), in.level_start_index.data_ptr<int64_t>(),
            in.sampling_locations.data_ptr<loc_t>(), in.attention_weights.data_ptr<loc_t>(),
            grad_value.data_ptr<scalar_t>(), grad_locations.data_ptr<loc_t>(), grad_weights.data_ptr<loc_t>());
      });
    });
  });
  return {grad_value, grad_locations, grad_weights};
}

}  // namespace DETRX_CPU_NAMESPACE
}  // namespace detrx
