// The bilinear taps of one query's sampling points on the CPU, computed with SIMD.
//
// For each sampling point i of a query (over `heads` heads, L levels, P points) and each corner c
// (top-left, top-right, bottom-left, bottom-right) it gives whether the pixel lies inside its map,
// its bilinear weight (0 outside), that weight times the point's attention weight, and the row of
// value (index into S) that the corner reads. It is the math of bilinear_footprint()
// (bilinear_sampling.h, used by the CUDA kernels) written with cpu_simd.h, 4 to 16 points at a
// time, with the same rounding of the pixel coordinate (pixel_coordinate()) and the same test of
// whether a point touches its map; the CPU-vs-grid_sample tests check it.
#pragma once

#include "cpu_simd.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ms_deform_attn/ms_deform_attn_sizes.h"

namespace detrx {

template <typename acc_t>
class QueryTaps {
  using Vec = simd::Vec<acc_t>;
  using Mask = simd::Mask<acc_t>;
  using index_t = std::remove_reference_t<decltype(Mask{}[0])>;  // int32 for float (callers check S < 2^31)
  static constexpr int kLanes = simd::kLanes<acc_t>;

 public:
  QueryTaps(const MSDeformAttnSizes& sz, int64_t heads, const int64_t* spatial_shapes, const int64_t* level_start)
      : samples_(heads * sz.levels * sz.points),
        padded_((samples_ + kLanes - 1) / kLanes * kLanes),
        width_(padded_, acc_t(0)), height_(padded_, acc_t(0)),  // padding: a 0 x 0 map, never touched
        width_i_(padded_, 0), start_(padded_, 0),
        attention_(padded_), frac_x_(padded_), frac_y_(padded_) {
    for (int c = 0; c < 4; ++c) {
      inside_[c].resize(padded_);
      weight_[c].resize(padded_);
      tap_weight_[c].resize(padded_);
      row_[c].resize(padded_);
    }
    for (int64_t i = 0; i < samples_; ++i) {  // sample i = (head * L + l) * P + p
      const int64_t l = (i / sz.points) % sz.levels;
      height_[i] = static_cast<acc_t>(spatial_shapes[2 * l]);
      width_[i] = static_cast<acc_t>(spatial_shapes[2 * l + 1]);
      width_i_[i] = static_cast<index_t>(spatial_shapes[2 * l + 1]);
      start_[i] = static_cast<index_t>(level_start[l]);
    }
  }

  // loc: [samples, 2] normalised (x, y); attention: [samples].
  template <typename loc_t>
  void compute(const loc_t* loc, const loc_t* attention) {
    const Vec zero = simd::broadcast(acc_t(0)), one = simd::broadcast(acc_t(1));
    const Vec minus_one = simd::broadcast(acc_t(-1)), outside = simd::broadcast(acc_t(-2));
    for (int64_t i = 0; i < padded_; i += kLanes) {
      const int64_t n = std::min<int64_t>(kLanes, samples_ - i);
      Vec loc_x, loc_y;
      load_locations(loc + 2 * i, n, &loc_x, &loc_y);
      const Vec a = load(attention + i, n);
      simd::store(&attention_[i], a);
      const Vec width = simd::load<Vec>(&width_[i]), height = simd::load<Vec>(&height_[i]);
      Vec x = pixel_coordinates(loc_x, width);  // align_corners=False
      Vec y = pixel_coordinates(loc_y, height);
      // Touches the map from -1 on (there the pixel at 0 has weight 0); false for NaN and infinities.
      const Mask touches = (x >= minus_one) & (x < width) & (y >= minus_one) & (y < height);
      x = touches ? x : outside;  // now in [-2, size): floor_small is exact
      y = touches ? y : outside;
      const Vec x0 = simd::floor_small(x), y0 = simd::floor_small(y);
      const Vec fx = x - x0, fy = y - y0;
      simd::store(&frac_x_[i], fx);
      simd::store(&frac_y_[i], fy);
      const Vec hx = one - fx, hy = one - fy;
      const Mask in_x0 = x0 >= zero, in_x1 = (x0 + one) < width;
      const Mask in_y0 = y0 >= zero, in_y1 = (y0 + one) < height;
      const Mask inside[4] = {touches & in_x0 & in_y0, touches & in_x1 & in_y0,
                              touches & in_x0 & in_y1, touches & in_x1 & in_y1};
      const Vec weight[4] = {hy * hx, hy * fx, fy * hx, fy * fx};
      const Mask width_i = simd::load<Mask>(&width_i_[i]);
      const Mask top_left = simd::load<Mask>(&start_[i]) + simd::truncate_to_int(y0) * width_i +
                            simd::truncate_to_int(x0);
      const Mask row[4] = {top_left, top_left + 1, top_left + width_i, top_left + width_i + 1};
      for (int c = 0; c < 4; ++c) {
        simd::store(&inside_[c][i], simd::keep(one, inside[c]));
        simd::store(&weight_[c][i], simd::keep(weight[c], inside[c]));
        simd::store(&tap_weight_[c][i], simd::keep(a * weight[c], inside[c]));
        simd::store(&row_[c][i], row[c]);
      }
    }
  }

  int64_t samples() const { return samples_; }
  bool inside(int c, int64_t i) const { return inside_[c][i] != acc_t(0); }
  acc_t weight(int c, int64_t i) const { return weight_[c][i]; }  // bilinear weight, 0 outside
  acc_t attention(int64_t i) const { return attention_[i]; }
  acc_t frac_x(int64_t i) const { return frac_x_[i]; }
  acc_t frac_y(int64_t i) const { return frac_y_[i]; }
  acc_t tap_weight(int c, int64_t i) const { return tap_weight_[c][i]; }  // attention * bilinear weight
  // Row of value (index into S) read by corner c of point i; only meaningful where inside(c, i).
  int64_t corner_row(int c, int64_t i) const { return static_cast<int64_t>(row_[c][i]); }

 private:
  // pixel_coordinate() of bilinear_sampling.h for a vector of locations on axes of the given sizes.
  static Vec pixel_coordinates(const Vec& loc, const Vec& size) {
    const Vec one = simd::broadcast(acc_t(1));
    const Vec grid = simd::broadcast(acc_t(2)) * loc - one;
    return simd::fused_multiply_add(grid + one, size, simd::broadcast(acc_t(-1))) * simd::broadcast(acc_t(0.5));
  }

  // n values from p (n <= kLanes), converted to acc_t; the other lanes are zero.
  template <typename loc_t>
  static Vec load(const loc_t* p, int64_t n) {
    if constexpr (std::is_same_v<loc_t, acc_t>) {
      return n == kLanes ? simd::load<Vec>(p) : simd::load_partial<Vec>(p, n, sizeof(acc_t));
    } else {  // float16 / bfloat16 -> float32
      acc_t buffer[kLanes] = {};
      for (int64_t k = 0; k < n; ++k) buffer[k] = static_cast<acc_t>(p[k]);
      return simd::load<Vec>(buffer);
    }
  }

  template <typename loc_t>
  static void load_locations(const loc_t* loc, int64_t n, Vec* x, Vec* y) {
    const Vec first = load(loc, std::min<int64_t>(2 * n, kLanes));
    const Vec second = load(loc + kLanes, std::max<int64_t>(0, 2 * n - kLanes));
    simd::deinterleave(first, second, x, y);
  }

  int64_t samples_, padded_;
  std::vector<acc_t> width_, height_;       // per point: its level's size
  std::vector<index_t> width_i_, start_;    // per point: its level's width and first row
  std::vector<acc_t> attention_, frac_x_, frac_y_;
  std::vector<acc_t> inside_[4], weight_[4], tap_weight_[4];
  std::vector<index_t> row_[4];
};

}  // namespace detrx
