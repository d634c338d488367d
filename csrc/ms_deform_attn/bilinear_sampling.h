// Bilinear sampling math shared by the CPU and CUDA kernels of ms_deform_attn.
//
// It reproduces grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False) on one
// (H, W) level: a normalised location (x, y) in [0, 1] maps to the pixel coordinate
// (x * W - 0.5, y * H - 0.5) (computed as pixel_coordinate() says); each of the four surrounding
// pixels contributes its bilinear weight if it lies inside the map and nothing otherwise, so a
// point whose pixel coordinate is in [-1, W) x [-1, H) touches the map.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "host_device.h"

namespace detrx {

// a * b + c with a single rounding (an FMA instruction on the GPU and on FMA-capable CPUs).
template <typename acc_t>
DETRX_HOST_DEVICE acc_t fused_multiply_add(acc_t a, acc_t b, acc_t c) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<acc_t, float>) {
    return __fmaf_rn(a, b, c);
  } else {
    return __fma_rn(a, b, c);
  }
#else
  return std::fma(a, b, c);
#endif
}

// The pixel coordinate of a normalised location on an axis of `size` pixels, rounded exactly as
// grid_sample rounds it: the grid coordinate g = 2 * loc - 1, then ((g + 1) * size - 1) / 2 with
// the product and the subtraction fused into one rounding, which is what ATen's CPU kernel
// (vectorised, (g + 1) * (size / 2) - 0.5 compiled to an FMA) and its CUDA kernel (nvcc contracts
// ((g + 1) * size - 1) into an FMA) compute. The plain loc * size - 0.5 differs from it in the last
// bit for some locations; at an exact pixel centre (an integer pixel coordinate, where the
// location derivative of bilinear sampling is one-sided) that bit decides which side is taken.
// Every other operation here is exact (2 * loc, the halving) or free of products, so compilers
// that contract a * b + c into FMAs cannot change the result.
template <typename acc_t>
DETRX_HOST_DEVICE acc_t pixel_coordinate(acc_t loc, int64_t size) {
  const acc_t grid = acc_t(2) * loc - acc_t(1);
  return fused_multiply_add(grid + acc_t(1), static_cast<acc_t>(size), acc_t(-1)) * acc_t(0.5);
}

// The four pixels around one sampling point, in the order
// top-left (y0, x0), top-right (y0, x1), bottom-left (y1, x0), bottom-right (y1, x1).
template <typename acc_t>
struct BilinearFootprint {
  int64_t pixel[4];  // y * W + x within the level; only meaningful where weight[c] != 0 or inside[c]
  acc_t weight[4];   // bilinear weight, 0 for pixels outside the map
  bool inside[4];
  acc_t frac_x;      // x - x0, in [0, 1)
  acc_t frac_y;      // y - y0, in [0, 1)
};

template <typename acc_t>
DETRX_HOST_DEVICE BilinearFootprint<acc_t> bilinear_footprint(
    acc_t loc_x, acc_t loc_y, int64_t height, int64_t width) {
  BilinearFootprint<acc_t> fp;
  const acc_t x = pixel_coordinate(loc_x, width);
  const acc_t y = pixel_coordinate(loc_y, height);
  // Some pixel of the map may be touched. At exactly -1 the pixel at 0 is, with weight 0: it
  // carries the one-sided location gradient and a NaN of its value, as in grid_sample. False
  // for NaN, infinities and values too large for int64, which sample nothing.
  // Everything below is branch-free (& and selects), so CPU loops over sampling points vectorise.
  const bool touches_map = (x >= acc_t(-1)) & (x < static_cast<acc_t>(width)) &
                           (y >= acc_t(-1)) & (y < static_cast<acc_t>(height));
  const acc_t x_floor = std::floor(touches_map ? x : acc_t(-2));
  const acc_t y_floor = std::floor(touches_map ? y : acc_t(-2));
  const int64_t x0 = static_cast<int64_t>(x_floor);
  const int64_t y0 = static_cast<int64_t>(y_floor);
  fp.frac_x = touches_map ? x - x_floor : acc_t(0);
  fp.frac_y = touches_map ? y - y_floor : acc_t(0);
  const acc_t hx = acc_t(1) - fp.frac_x, hy = acc_t(1) - fp.frac_y;
  const bool inside_x[2] = {x0 >= 0, x0 + 1 < width};
  const bool inside_y[2] = {y0 >= 0, y0 + 1 < height};
  const acc_t weight_x[2] = {hx, fp.frac_x};
  const acc_t weight_y[2] = {hy, fp.frac_y};
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    fp.inside[c] = touches_map & inside_x[c & 1] & inside_y[c >> 1];
    fp.pixel[c] = (y0 + (c >> 1)) * width + x0 + (c & 1);
    fp.weight[c] = fp.inside[c] ? weight_y[c >> 1] * weight_x[c & 1] : acc_t(0);
  }
  return fp;
}

// Given the fractional position (frac_x, frac_y) of a point inside its pixel cell and
// dot[c] = <upstream gradient, value at corner c> (0 for corners outside the map), returns the
// gradient of the bilinear sample with respect to the normalised location (x, y).
template <typename acc_t>
DETRX_HOST_DEVICE void bilinear_location_grad(
    acc_t frac_x, acc_t frac_y, const acc_t dot[4], int64_t height, int64_t width, acc_t* grad_x, acc_t* grad_y) {
  const acc_t hx = acc_t(1) - frac_x, hy = acc_t(1) - frac_y;
  // d weight / d pixel-x for the four corners is (-hy, hy, -fy, fy); d / d pixel-y is (-hx, -fx, hx, fx).
  const acc_t d_pixel_x = hy * (dot[1] - dot[0]) + frac_y * (dot[3] - dot[2]);
  const acc_t d_pixel_y = hx * (dot[2] - dot[0]) + frac_x * (dot[3] - dot[1]);
  *grad_x = d_pixel_x * static_cast<acc_t>(width);  // d pixel x / d loc_x = W
  *grad_y = d_pixel_y * static_cast<acc_t>(height);
}

}  // namespace detrx
