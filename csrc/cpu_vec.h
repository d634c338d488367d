// at::vec::Vectorized at the widest width this compilation's flags allow (AVX-512 or AVX2 on
// x86; the portable scalar-array fallback otherwise). Include it before any other ATen header.
// The vectors live in a namespace of detrx's own per CPU level (cpu_levels.h), so the copies
// compiled for different levels never mix with each other or with libtorch's.
#pragma once

#include "cpu_levels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY_AVX2
#endif

#ifndef DETRX_CPU_LEVEL
#error "cpu_vec.h belongs to the per-level *_cpu.cpp kernels: compile them with -DDETRX_CPU_LEVEL=<level> (setup.py)"
#endif
#define DETRX_CPU_LEVEL_IS_default 0
#define DETRX_CPU_LEVEL_IS_avx2 2
#define DETRX_CPU_LEVEL_IS_avx512 3
#define DETRX_CPU_LEVEL_IS_native 1
#define DETRX_CPU_LEVEL_ID DETRX_PASTE(DETRX_CPU_LEVEL_IS_, DETRX_CPU_LEVEL)
// Each copy must get the vectors of its level: catch a level compiled without its flags.
#if DETRX_CPU_LEVEL_ID == 3 && !defined(CPU_CAPABILITY_AVX512)
#error "the avx512 copy needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma"
#elif DETRX_CPU_LEVEL_ID == 2 && !defined(CPU_CAPABILITY_AVX2)
#error "the avx2 copy needs -mavx2 -mfma"
#elif DETRX_CPU_LEVEL_ID == 0 && (defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512))
#error "the default copy must be compiled for the baseline instruction set (no -march, -mavx2 or -mavx512f)"
#endif

#define CPU_CAPABILITY DETRX_PASTE(detrx_, DETRX_CPU_NAMESPACE)

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#if DETRX_CPU_LEVEL_ID == 3
static_assert(at::vec::Vectorized<float>::size() == 16, "the avx512 copy must use 512-bit vectors");
#elif DETRX_CPU_LEVEL_ID == 2
static_assert(at::vec::Vectorized<float>::size() == 8, "the avx2 copy must use 256-bit vectors");
#endif
