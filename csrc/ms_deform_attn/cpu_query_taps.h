// The bilinear taps of one query's sampling points on the CPU, computed with SIMD.
//
// For each sampling point i of a query (over `heads` heads, L levels, P points) and each corner c
// (top-left, top-right, bottom-left, bottom-right) it gives whether the pixel lies inside its map,
// its bilinear weight (0 outside), that weight times the point's attention weight, and the row of
// value (index into S) that the corner reads. It is the
// math of bilinear_footprint() (bilinear_sampling.h, used by the CUDA kernels) written with at::vec,
// 8 or 16 points at a time, with the same rounding of the pixel coordinate (pixel_coordinate())
// and the same test of whether a point touches its map; the CPU-vs-grid_sample tests check it.
#pragma once

#include "cpu_vec.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ms_deform_attn/ms_deform_attn_checks.h"

namespace detrx {

template <typename acc_t>
class QueryTaps {
  using Vec = at::vec::Vectorized<acc_t>;
  using index_t = at::vec::int_same_size_t<acc_t>;  // int32 for float (callers check S < 2^31)
  using IndexVec = at::vec::Vectorized<index_t>;

 public:
  QueryTaps(const MSDeformAttnSizes& sz, int64_t heads, const int64_t* spatial_shapes, const int64_t* level_start)
      : samples_(heads * sz.levels * sz.points),
        padded_((samples_ + Vec::size() - 1) / Vec::size() * Vec::size()),
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
  template <typename scalar_t>
  void compute(const scalar_t* loc, const scalar_t* attention) {
    const Vec zero(acc_t(0)), one(acc_t(1)), minus_one(acc_t(-1)), outside(acc_t(-2));
    for (int64_t i = 0; i < padded_; i += Vec::size()) {
      const int64_t n = std::min<int64_t>(Vec::size(), samples_ - i);
      Vec loc_x, loc_y;
      load_locations(loc + 2 * i, n, &loc_x, &loc_y);
      const Vec a = load(attention + i, n);
      a.store(&attention_[i]);
      const Vec width = Vec::loadu(&width_[i]), height = Vec::loadu(&height_[i]);
      Vec x = pixel_coordinates(loc_x, width);  // align_corners=False
      Vec y = pixel_coordinates(loc_y, height);
      // Touches the map from -1 on (there the pixel at 0 has weight 0); false for NaN and infinities.
      const Vec touches = (x >= minus_one) & (x < width) & (y >= minus_one) & (y < height);
      x = Vec::blendv(outside, x, touches);
      y = Vec::blendv(outside, y, touches);
      const Vec x0 = x.floor(), y0 = y.floor();
      const Vec fx = x - x0, fy = y - y0;
      fx.store(&frac_x_[i]);
      fy.store(&frac_y_[i]);
      const Vec hx = one - fx, hy = one - fy;
      const Vec in_x0 = x0 >= zero, in_x1 = (x0 + one) < width;
      const Vec in_y0 = y0 >= zero, in_y1 = (y0 + one) < height;
      const Vec inside[4] = {touches & in_x0 & in_y0, touches & in_x1 & in_y0,
                             touches & in_x0 & in_y1, touches & in_x1 & in_y1};
      const Vec weight[4] = {hy * hx, hy * fx, fy * hx, fy * fx};
      for (int c = 0; c < 4; ++c) {
        (inside[c] & one).store(&inside_[c][i]);
        (weight[c] & inside[c]).store(&weight_[c][i]);
      }
      const IndexVec width_i = IndexVec::loadu(&width_i_[i]);
      const IndexVec top_left = IndexVec::loadu(&start_[i]) + at::vec::convert_to_int_of_same_size(y0) * width_i +
                                at::vec::convert_to_int_of_same_size(x0);
      const IndexVec one_i(index_t(1));
      const IndexVec row[4] = {top_left, top_left + one_i, top_left + width_i, top_left + width_i + one_i};
      for (int c = 0; c < 4; ++c) {
        (a * weight[c] & inside[c]).store(&tap_weight_[c][i]);
        row[c].store(&row_[c][i]);
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
  // a * b + c with one rounding: an FMA instruction where at::vec has one (AVX2, AVX-512), else
  // std::fma on each lane (at::vec's generic fmadd is a * b + c, rounded twice).
  static Vec fused_multiply_add(const Vec& a, const Vec& b, const Vec& c) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
    return at::vec::fmadd(a, b, c);
#else
    acc_t la[Vec::size()], lb[Vec::size()], lc[Vec::size()];
    a.store(la);
    b.store(lb);
    c.store(lc);
    for (int k = 0; k < Vec::size(); ++k) la[k] = std::fma(la[k], lb[k], lc[k]);
    return Vec::loadu(la);
#endif
  }

  // pixel_coordinate() of bilinear_sampling.h for a vector of locations on axes of the given sizes.
  static Vec pixel_coordinates(const Vec& loc, const Vec& size) {
    const Vec one(acc_t(1));
    const Vec grid = Vec(acc_t(2)) * loc - one;
    return fused_multiply_add(grid + one, size, Vec(acc_t(-1))) * Vec(acc_t(0.5));
  }

  template <typename scalar_t>
  static Vec load(const scalar_t* p, int64_t n) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      return n == Vec::size() ? Vec::loadu(p) : Vec::loadu(p, n);
    } else {  // float16 / bfloat16 -> float32
      acc_t buffer[Vec::size()] = {};
      for (int64_t k = 0; k < n; ++k) buffer[k] = static_cast<acc_t>(p[k]);
      return Vec::loadu(buffer);
    }
  }

  template <typename scalar_t>
  static void load_locations(const scalar_t* loc, int64_t n, Vec* x, Vec* y) {
    const Vec first = load(loc, std::min<int64_t>(2 * n, Vec::size()));
    const Vec second = load(loc + Vec::size(), std::max<int64_t>(0, 2 * n - Vec::size()));
    std::tie(*x, *y) = at::vec::deinterleave2(first, second);
  }

  int64_t samples_, padded_;
  std::vector<acc_t> width_, height_;       // per point: its level's size
  std::vector<index_t> width_i_, start_;    // per point: its level's width and first row
  std::vector<acc_t> attention_, frac_x_, frac_y_;
  std::vector<acc_t> inside_[4], weight_[4], tap_weight_[4];
  std::vector<index_t> row_[4];
};

}  // namespace detrx
