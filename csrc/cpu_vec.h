// at::vec::Vectorized at the widest width this compilation's -march allows (AVX-512 or AVX2 on
// x86; the portable scalar-array fallback otherwise). Include it before any other ATen header.
// The vectors live in a namespace of detrx's own, so they never mix with libtorch's copies.
#pragma once

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY_AVX2
#endif
#define CPU_CAPABILITY detrx_native

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
