// Label and box noise of one denoising slot, shared by the CPU and CUDA kernels of dn_queries.
//
// Every slot uses six uniforms in [0, 1): u[0] decides the label flip, u[1] picks the new class,
// u[2..5] jitter the four box coordinates. They come from a pre-drawn noise tensor or from a
// counter-based generator: the 64-bit SplitMix64 hash of the seed and a counter gives two uniforms
// (its top 24 bits and the 24 below them), so a kernel gives the same result for the same seed
// whatever its thread layout, on CPU and CUDA alike.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "dn_queries/dn_layout.h"

namespace detrx {

constexpr int kDNUniformsPerSlot = 6;

// The noise settings of one call: labels flip with probability label_noise_ratio to one of
// num_classes classes; boxes move by up to box_noise_scale (DN-DETR's lambda), DINO's corner
// style when dino_style, and keep w, h >= min_box_size.
struct DNNoiseParams {
  int64_t num_classes;
  double label_noise_ratio;
  double box_noise_scale;
  double min_box_size;
  bool dino_style;
};

// Uniforms 2 * index and 2 * index + 1 of the stream `seed`, with 24 random bits each (exact in float32).
DETRX_HOST_DEVICE void dn_counter_uniform_pair(uint64_t seed, uint64_t index, float* first, float* second) {
  uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  constexpr float kTwoToMinus24 = 5.9604644775390625e-08f;
  *first = static_cast<float>(static_cast<int32_t>(z >> 40)) * kTwoToMinus24;
  *second = static_cast<float>(static_cast<int32_t>((z >> 16) & 0xFFFFFF)) * kTwoToMinus24;
}

// Maps u in [0, 1) to a signed noise factor: |f| in [0, 1) for positives and [1, 2) for
// negatives (DINO contrastive), the sign and the magnitude each uniform. Written with arithmetic
// instead of branches: on the CPU a branch on a random uniform is mispredicted half the time.
DETRX_HOST_DEVICE float dn_noise_factor(float u, bool negative) {
  const float upper = floorf(2.f * u);  // 1 for the upper half of [0, 1), else 0
  const float magnitude = 2.f * u - upper;  // in [0, 1)
  return (2.f * upper - 1.f) * (magnitude + static_cast<float>(negative));
}

// Flips the label with probability ratio to a class drawn uniformly from [0, num_classes).
DETRX_HOST_DEVICE int64_t dn_noisy_label(int64_t label, float u_flip, float u_class, double ratio,
                                         int64_t num_classes) {
  const int64_t drawn = static_cast<int64_t>(u_class * static_cast<float>(num_classes));
  const int64_t new_label = drawn < num_classes ? drawn : num_classes - 1;
  return u_flip < static_cast<float>(ratio) ? new_label : label;
}

// Two selects that compile to min/max instructions (no branch) for finite x.
template <typename acc_t>
DETRX_HOST_DEVICE acc_t dn_clamp(acc_t x, acc_t low, acc_t high) {
  const acc_t above_low = x > low ? x : low;
  return above_low < high ? above_low : high;
}

// a * b and a + b, each rounded on its own. nvcc fuses a multiply and an add into an FMA by default
// (one rounding instead of two); the _rn intrinsics are never fused. The CPU file turns contraction
// off, so the boxes are bitwise the same on CPU and CUDA.
template <typename acc_t>
DETRX_HOST_DEVICE acc_t dn_mul(acc_t a, acc_t b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<acc_t, double>) return __dmul_rn(a, b); else return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

template <typename acc_t>
DETRX_HOST_DEVICE acc_t dn_add(acc_t a, acc_t b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<acc_t, double>) return __dadd_rn(a, b); else return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// Jitters a (cx, cy, w, h) box by factor[c] * scale: DN-DETR style moves the centre by up to
// scale * (w/2, h/2) and scales the size by 1 +- scale; DINO style moves each corner by up to
// scale * (w/2, h/2). The result is clamped to [0, 1] with w, h >= min_size.
template <typename acc_t, bool kDinoStyle>
DETRX_HOST_DEVICE void dn_noisy_box(const acc_t box[4], const float factor[4], acc_t scale, acc_t min_size,
                                    acc_t out[4]) {
  const acc_t half_w = box[2] / acc_t(2), half_h = box[3] / acc_t(2);
  acc_t cx, cy, w, h;
  // jitter c = factor[c] * size * scale, added to the coordinate without fusing.
  const auto jitter = [&](int c, acc_t size) { return dn_mul(dn_mul(acc_t(factor[c]), size), scale); };
  if constexpr (kDinoStyle) {
    const acc_t x0 = dn_clamp(dn_add(box[0] - half_w, jitter(0, half_w)), acc_t(0), acc_t(1));
    const acc_t y0 = dn_clamp(dn_add(box[1] - half_h, jitter(1, half_h)), acc_t(0), acc_t(1));
    const acc_t x1 = dn_clamp(dn_add(box[0] + half_w, jitter(2, half_w)), acc_t(0), acc_t(1));
    const acc_t y1 = dn_clamp(dn_add(box[1] + half_h, jitter(3, half_h)), acc_t(0), acc_t(1));
    cx = (x0 + x1) / acc_t(2);
    cy = (y0 + y1) / acc_t(2);
    w = x1 - x0;
    h = y1 - y0;
  } else {
    cx = dn_add(box[0], jitter(0, half_w));
    cy = dn_add(box[1], jitter(1, half_h));
    w = dn_add(box[2], jitter(2, box[2]));
    h = dn_add(box[3], jitter(3, box[3]));
  }
  out[0] = dn_clamp(cx, acc_t(0), acc_t(1));
  out[1] = dn_clamp(cy, acc_t(0), acc_t(1));
  out[2] = dn_clamp(w, min_size, acc_t(1));
  out[3] = dn_clamp(h, min_size, acc_t(1));
}

}  // namespace detrx
