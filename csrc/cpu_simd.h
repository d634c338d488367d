// Fixed-width SIMD vectors for the per-level CPU kernel copies (cpu_levels.h), built on the
// compiler's vector extensions (GCC; Clang has them too) at the widest width the copy's flags
// allow: 64 bytes with AVX-512, 32 with AVX2, 16 otherwise (SSE2 on x86-64, NEON on ARM).
//
// Header-only and free of ATen and of any library: the kernels' core is written on it, so the same
// compiled code runs behind the torch op and behind the OpenVINO extension.
//
// Vec<T> (T = float or double) is a plain vector type: +, -, * and
// comparisons work lane by lane; a comparison gives a Mask<T> (all ones where true), and
// `mask ? a : b` selects lanes. The functions below add what the operators lack.
#pragma once

#include "cpu_levels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define DETRX_SIMD_AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define DETRX_SIMD_AVX2
#endif

#ifndef DETRX_CPU_LEVEL
#error "cpu_simd.h belongs to the per-level *_cpu.cpp kernels: compile them with -DDETRX_CPU_LEVEL=<level> (setup.py)"
#endif
#define DETRX_CPU_LEVEL_IS_default 0
#define DETRX_CPU_LEVEL_IS_avx2 2
#define DETRX_CPU_LEVEL_IS_avx512 3
#define DETRX_CPU_LEVEL_IS_native 1
#define DETRX_CPU_LEVEL_ID DETRX_PASTE(DETRX_CPU_LEVEL_IS_, DETRX_CPU_LEVEL)
// Each copy must get the vectors of its level: catch a level compiled without its flags.
#if DETRX_CPU_LEVEL_ID == 3 && !defined(DETRX_SIMD_AVX512)
#error "the avx512 copy needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma"
#elif DETRX_CPU_LEVEL_ID == 2 && !defined(DETRX_SIMD_AVX2)
#error "the avx2 copy needs -mavx2 -mfma"
#elif DETRX_CPU_LEVEL_ID == 0 && (defined(DETRX_SIMD_AVX2) || defined(DETRX_SIMD_AVX512))
#error "the default copy must be compiled for the baseline instruction set (no -march, -mavx2 or -mavx512f)"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(DETRX_SIMD_AVX512) || defined(DETRX_SIMD_AVX2)
#include <immintrin.h>
#endif

namespace detrx {
namespace simd {

#if defined(DETRX_SIMD_AVX512)
constexpr int kBytes = 64;
#elif defined(DETRX_SIMD_AVX2)
constexpr int kBytes = 32;
#else
constexpr int kBytes = 16;
#endif

template <typename T>
struct VectorTypes;
template <>
struct VectorTypes<float> {
  typedef float vec __attribute__((vector_size(kBytes)));
  typedef int32_t mask __attribute__((vector_size(kBytes)));
};
template <>
struct VectorTypes<double> {
  typedef double vec __attribute__((vector_size(kBytes)));
  typedef int64_t mask __attribute__((vector_size(kBytes)));
};

template <typename T>
using Vec = typename VectorTypes<T>::vec;
template <typename T>
using Mask = typename VectorTypes<T>::mask;  // also the integer vector of T's lane width
template <typename T>
constexpr int kLanes = kBytes / static_cast<int>(sizeof(T));
// The lane type of a vector type V.
template <typename V>
using LaneOf = std::remove_cv_t<std::remove_reference_t<decltype(std::declval<V>()[0])>>;

template <typename V>
inline V load(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

// The first n lanes from p, the rest zero.
template <typename V>
inline V load_partial(const void* p, int64_t n, size_t lane_bytes) {
  V v = {};
  std::memcpy(&v, p, static_cast<size_t>(n) * lane_bytes);
  return v;
}

template <typename V>
inline void store(void* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

template <typename T, int... kLane>
inline Vec<T> broadcast_lanes(T x, std::integer_sequence<int, kLane...>) {
  return Vec<T>{((void)kLane, x)...};  // every lane x: one broadcast instruction
}

template <typename T>
inline Vec<T> broadcast(T x) {
  return broadcast_lanes(x, std::make_integer_sequence<int, kLanes<T>>{});
}

// Lanes of a where the mask is set, else zero (bits: also right for NaN and infinities).
template <typename V>
inline V keep(const V& a, const Mask<LaneOf<V>>& mask) {
  return (V)((Mask<LaneOf<V>>)a & mask);
}

// a * b + c with one rounding: an FMA instruction where the level has one, else std::fma per lane.
template <typename V>
inline V fused_multiply_add(const V& a, const V& b, const V& c) {
  constexpr bool kFloat = std::is_same_v<LaneOf<V>, float>;
#if defined(DETRX_SIMD_AVX512)
  if constexpr (kFloat) return _mm512_fmadd_ps(a, b, c); else return _mm512_fmadd_pd(a, b, c);
#elif defined(DETRX_SIMD_AVX2)
  if constexpr (kFloat) return _mm256_fmadd_ps(a, b, c); else return _mm256_fmadd_pd(a, b, c);
#else
  V r;
  for (int k = 0; k < kLanes<LaneOf<V>>; ++k) r[k] = std::fma(a[k], b[k], c[k]);
  return r;
#endif
}

// a * b + c for sums whose rounding is free: one FMA instruction where the level has one, else a
// multiply and an add (a per-lane std::fma would be a library call per lane).
template <typename V>
inline V multiply_add(const V& a, const V& b, const V& c) {
#if defined(DETRX_SIMD_AVX512) || defined(DETRX_SIMD_AVX2)
  return fused_multiply_add(a, b, c);
#else
  return a * b + c;
#endif
}

// The integer lanes of v rounded towards zero; v's lanes must fit the integer type.
template <typename V>
inline Mask<LaneOf<V>> truncate_to_int(const V& v) {
  return __builtin_convertvector(v, Mask<LaneOf<V>>);
}

// floor of each lane, for lanes of magnitude below 2^31 (float) or 2^63 (double): exact there.
template <typename V>
inline V floor_small(const V& v) {
  const V truncated = __builtin_convertvector(truncate_to_int(v), V);
  return truncated - keep(broadcast(LaneOf<V>(1)), truncated > v);  // negative non-integers went up by one
}

template <typename V, int... kLane>
inline void deinterleave_lanes(const V& first, const V& second, V* x, V* y, std::integer_sequence<int, kLane...>) {
  *x = __builtin_shuffle(first, second, Mask<LaneOf<V>>{(2 * kLane)...});
  *y = __builtin_shuffle(first, second, Mask<LaneOf<V>>{(2 * kLane + 1)...});
}

// (x, y) pairs in first and second (2 * kLanes values) split into the x lanes and the y lanes.
template <typename V>
inline void deinterleave(const V& first, const V& second, V* x, V* y) {
  deinterleave_lanes(first, second, x, y, std::make_integer_sequence<int, kLanes<LaneOf<V>>>{});
}

// v with its lanes rotated down by kShift (lane k takes lane k + kShift, wrapping around).
template <int kShift, typename V, int... kLane>
inline V rotate_lanes(const V& v, std::integer_sequence<int, kLane...>) {
  return __builtin_shuffle(v, Mask<LaneOf<V>>{((kLane + kShift) % static_cast<int>(sizeof...(kLane)))...});
}

// Sum of the lanes, in registers: each step adds the vector rotated by half the remaining width.
template <int kWidth = 0, typename V>
inline LaneOf<V> reduce_add(const V& v) {
  constexpr int kCount = kLanes<LaneOf<V>>;
  constexpr int kShift = kWidth == 0 ? kCount / 2 : kWidth;
  const V sum = v + rotate_lanes<kShift>(v, std::make_integer_sequence<int, kCount>{});
  if constexpr (kShift == 1) {
    return sum[0];
  } else {
    return reduce_add<kShift / 2>(sum);
  }
}

}  // namespace simd
}  // namespace detrx
