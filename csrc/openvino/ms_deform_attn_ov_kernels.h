// The OpenVINO extension's entry points into the per-level copies of the ms_deform_attn CPU
// kernel (ms_deform_attn_ov_cpu.cpp, compiled once per CPU level like the torch op's copies).
#pragma once

#include <cstdint>

#include "cpu_levels.h"
#include "ms_deform_attn/ms_deform_attn_sizes.h"

namespace detrx {

enum class OvElement { f32, f16, bf16 };

// One forward call: contiguous inputs in the op's layouts (ms_deform_attn_cpu_kernel.h), value and
// output of value_type, locations and weights of location_type (value_type, or f32 with a 16-bit value).
struct OvMSDeformAttnCall {
  MSDeformAttnSizes sz;
  OvElement value_type, location_type;
  const void* value;
  const int64_t* spatial_shapes;
  const int64_t* level_start;
  const void* locations;
  const void* weights;
  void* output;
};

#define DETRX_DECLARE_OV_LEVEL(level) \
  namespace DETRX_PASTE(cpu_, level) { void ms_deform_attn_ov_forward(const OvMSDeformAttnCall& call); }
DETRX_FOR_EACH_CPU_LEVEL(DETRX_DECLARE_OV_LEVEL)
#undef DETRX_DECLARE_OV_LEVEL

}  // namespace detrx
