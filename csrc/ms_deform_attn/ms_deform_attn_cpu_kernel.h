// The CPU kernels of ms_deform_attn (forward and backward) on raw pointers: no ATen, no library.
// Front doors (the torch op, ms_deform_attn_cpu.cpp; the OpenVINO extension,
// csrc/openvino/ms_deform_attn_ov_cpu.cpp) check and allocate, then call these with their own
// parallel-for. Both doors' files are compiled once per CPU level (cpu_levels.h).
//
// Forward: the (batch, query) rows are split among threads. For each row the bilinear taps of all
// its sampling points are computed with SIMD (cpu_query_taps.h), then each head gathers its taps
// into a D-channel sum: in SIMD registers for float32/float64 with D in {16, 32, 64}, else a plain
// channel loop.
//
// Backward: each task owns one (batch, head) slice of grad_value, so the scatter of the value
// gradient needs no atomics and the result does not depend on the thread count or schedule.
//
// scalar_t is value's element type; acc_t the type the sums are computed in (scalar_t for
// float32/float64, float for float16/bfloat16, which only need a conversion to acc_t); loc_t the
// type of the sampling locations and attention weights (scalar_t, or float with a 16-bit value).
#pragma once

#include "cpu_simd.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <vector>

#include "ms_deform_attn/bilinear_sampling.h"  // bilinear_location_grad
#include "ms_deform_attn/cpu_query_taps.h"
#include "ms_deform_attn/ms_deform_attn_sizes.h"

namespace detrx {

// Runs body(begin, end) over chunks covering [0, count) (chunks of about `grain` or more), on as
// many threads as the front door's runtime allows.
using RangeBody = std::function<void(int64_t begin, int64_t end)>;
using ParallelFor = void (*)(int64_t count, int64_t grain, const RangeBody& body);

namespace ms_deform_attn_cpu_detail {

// Channel counts with a SIMD-register path (float32/float64 values); others take the plain loop.
template <typename scalar_t, typename acc_t, int kChannels>
constexpr bool kSimdChannels = std::is_same_v<scalar_t, acc_t> && kChannels > 0 &&
                               kChannels % simd::kLanes<acc_t> == 0 && kChannels / simd::kLanes<acc_t> <= 4;

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

// out[0:D] = sum over the head's points i in [first, first + count) and their corners inside the map
// of attention * bilinear weight * value row (a zero weight still multiplies its value, so NaN and
// inf propagate exactly as in grid_sample). Corner c goes to sum c, so consecutive taps do not
// wait on each other. SIMD registers for float32/float64 with D in {16, 32, 64} ...
template <typename scalar_t, typename acc_t, int kChannels>
std::enable_if_t<kSimdChannels<scalar_t, acc_t, kChannels>> gather_head(
    const scalar_t* value, int64_t row_stride, const QueryTaps<acc_t>& taps, int64_t first, int64_t count,
    int64_t, scalar_t* out) {
  using Vec = simd::Vec<acc_t>;
  constexpr int kLanes = simd::kLanes<acc_t>, kVecs = kChannels / kLanes;
  Vec acc[4][kVecs];
  for (auto& sum : acc)
    for (auto& v : sum) v = simd::broadcast(acc_t(0));
  for (int64_t i = first; i < first + count; ++i) {
    for (int c = 0; c < 4; ++c) {
      if (!taps.inside(c, i)) continue;
      const Vec w = simd::broadcast(taps.tap_weight(c, i));
      const scalar_t* row = value + taps.corner_row(c, i) * row_stride;
      for (int k = 0; k < kVecs; ++k) acc[c][k] = simd::multiply_add(w, simd::load<Vec>(row + k * kLanes), acc[c][k]);
    }
  }
  for (int k = 0; k < kVecs; ++k) simd::store(out + k * kLanes, (acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k]));
}

// ... or a plain channel loop (any D; float16/bfloat16 summed in float32).
template <typename scalar_t, typename acc_t, int kChannels>
std::enable_if_t<!kSimdChannels<scalar_t, acc_t, kChannels>> gather_head(
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

// Backward of one corner tap: grad_value row += w * g, and returns <g, value row>.
// SIMD version for float32/float64 with D = kChannels ...
template <typename acc_t, int kChannels>
struct TapBackward {
  using Vec = simd::Vec<acc_t>;
  static constexpr int kLanes = simd::kLanes<acc_t>, kVecs = kChannels / kLanes;
  Vec g[kVecs];

  TapBackward(const acc_t* grad_out, int64_t) {
    for (int k = 0; k < kVecs; ++k) g[k] = simd::load<Vec>(grad_out + k * kLanes);
  }

  acc_t operator()(const acc_t* v, acc_t* gv, acc_t w) const {
    const Vec wv = simd::broadcast(w);
    Vec dot = simd::broadcast(acc_t(0));
    for (int k = 0; k < kVecs; ++k) {
      dot = simd::multiply_add(g[k], simd::load<Vec>(v + k * kLanes), dot);
      simd::store(gv + k * kLanes, simd::multiply_add(wv, g[k], simd::load<Vec>(gv + k * kLanes)));
    }
    return simd::reduce_add(dot);
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

template <typename scalar_t, typename acc_t, int kChannels, typename loc_t>
void forward(const MSDeformAttnSizes& sz, const scalar_t* value, const int64_t* spatial_shapes,
             const int64_t* level_start, const loc_t* locations, const loc_t* weights, scalar_t* output,
             ParallelFor parallel_for) {
  const int64_t M = sz.heads, D = sz.channels, LP = sz.levels * sz.points;
  const int64_t row_stride = M * D;  // value elements per spatial position
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, M * LP));  // ~2048 samples a chunk
  parallel_for(sz.batch * sz.queries, grain, [&](int64_t begin, int64_t end) {
    QueryTaps<acc_t> taps(sz, M, spatial_shapes, level_start);
    for (int64_t row = begin; row < end; ++row) {  // row = n * Lq + q
      const scalar_t* value_n = value + (row / sz.queries) * sz.values * row_stride;
      taps.compute(locations + 2 * row * M * LP, weights + row * M * LP);
      for (int64_t m = 0; m < M; ++m) {
        gather_head<scalar_t, acc_t, kChannels>(value_n + m * D, row_stride, taps, m * LP, LP, D,
                                                output + (row * M + m) * D);
      }
    }
  });
}

template <typename scalar_t, typename acc_t, int kChannels, typename loc_t>
void backward(const MSDeformAttnSizes& sz, const scalar_t* grad_output, const scalar_t* value,
              const int64_t* spatial_shapes, const int64_t* level_start, const loc_t* locations,
              const loc_t* weights, scalar_t* grad_value, loc_t* grad_locations, loc_t* grad_weights,
              ParallelFor parallel_for) {
  constexpr bool kAccumulateInPlace = std::is_same_v<acc_t, scalar_t>;
  using Tap = std::conditional_t<kSimdChannels<scalar_t, acc_t, kChannels>, TapBackward<acc_t, kChannels>,
                                 PlainTapBackward<scalar_t, acc_t>>;
  const int64_t M = sz.heads, D = sz.channels, P = sz.points, LP = sz.levels * P, S = sz.values;
  const int64_t row_stride = M * D;
  parallel_for(sz.batch * M, 1, [&](int64_t begin, int64_t end) {
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

}  // namespace ms_deform_attn_cpu_detail

// output [N, Lq, M * D] from value [N, S, M, D], spatial_shapes [L, 2], level_start [L],
// locations [N, Lq, M, L, P, 2] and weights [N, Lq, M, L, P], all contiguous. The caller has
// checked the sizes, the level layout (it tiles S) and S < kMaxCpuValueRows.
template <typename scalar_t, typename acc_t, typename loc_t>
void ms_deform_attn_forward_cpu_kernel(const MSDeformAttnSizes& sz, const scalar_t* value,
                                       const int64_t* spatial_shapes, const int64_t* level_start,
                                       const loc_t* locations, const loc_t* weights, scalar_t* output,
                                       ParallelFor parallel_for) {
  ms_deform_attn_cpu_detail::dispatch_channels(sz.channels, [&](auto channels) {
    ms_deform_attn_cpu_detail::forward<scalar_t, acc_t, decltype(channels)::value>(
        sz, value, spatial_shapes, level_start, locations, weights, output, parallel_for);
  });
}

// The gradients of sum(output * grad_output): grad_value (zero-filled by the caller), and
// grad_locations and grad_weights (every element written), with the forward's layouts.
template <typename scalar_t, typename acc_t, typename loc_t>
void ms_deform_attn_backward_cpu_kernel(const MSDeformAttnSizes& sz, const scalar_t* grad_output,
                                        const scalar_t* value, const int64_t* spatial_shapes,
                                        const int64_t* level_start, const loc_t* locations, const loc_t* weights,
                                        scalar_t* grad_value, loc_t* grad_locations, loc_t* grad_weights,
                                        ParallelFor parallel_for) {
  ms_deform_attn_cpu_detail::dispatch_channels(sz.channels, [&](auto channels) {
    ms_deform_attn_cpu_detail::backward<scalar_t, acc_t, decltype(channels)::value>(
        sz, grad_output, value, spatial_shapes, level_start, locations, weights, grad_value, grad_locations,
        grad_weights, parallel_for);
  });
}

}  // namespace detrx
