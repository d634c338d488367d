// The sizes of one ms_deform_attn call, shared by every front door of the kernels (torch op on
// CPU and CUDA, OpenVINO extension); free of ATen.
#pragma once

#include <cstdint>

namespace detrx {

struct MSDeformAttnSizes {
  int64_t batch;     // N
  int64_t values;    // S = sum of H_l * W_l
  int64_t heads;     // M
  int64_t channels;  // D
  int64_t queries;   // Lq
  int64_t levels;    // L
  int64_t points;    // P
};

// The CPU kernels index value rows with int32 for float32 inputs (cpu_query_taps.h): S must be below.
constexpr int64_t kMaxCpuValueRows = int64_t(1) << 31;

}  // namespace detrx
