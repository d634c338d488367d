// The OpenVINO extension's per-level copy of the ms_deform_attn CPU kernel: the same kernel code
// as the torch op (ms_deform_attn_cpu_kernel.h), run on OpenVINO's threads (its TBB arena, so
// the plugin's thread settings hold). setup.py compiles this file once per CPU level.
#include "ms_deform_attn/ms_deform_attn_cpu_kernel.h"  // first: cpu_simd.h checks the level's flags

#define OV_THREAD OV_THREAD_TBB
#include <openvino/core/parallel.hpp>
#include <openvino/core/type/bfloat16.hpp>
#include <openvino/core/type/float16.hpp>

#include "openvino/ms_deform_attn_ov_kernels.h"

namespace detrx {
namespace DETRX_CPU_NAMESPACE {
namespace {

void parallel_for_openvino(int64_t count, int64_t grain, const RangeBody& body) {
  if (count < 2 * grain) return body(0, count);
  ov::parallel_nt(0, [&](int thread, int threads) {
    int64_t begin = 0, end = 0;
    ov::splitter(count, static_cast<int64_t>(threads), static_cast<int64_t>(thread), begin, end);
    if (begin < end) body(begin, end);
  });
}

template <typename scalar_t, typename loc_t>
void forward(const OvMSDeformAttnCall& call) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  ms_deform_attn_forward_cpu_kernel<scalar_t, acc_t, loc_t>(
      call.sz, static_cast<const scalar_t*>(call.value), call.spatial_shapes, call.level_start,
      static_cast<const loc_t*>(call.locations), static_cast<const loc_t*>(call.weights),
      static_cast<scalar_t*>(call.output), &parallel_for_openvino);
}

template <typename scalar_t>
void forward_16bit(const OvMSDeformAttnCall& call) {
  if (call.location_type == OvElement::f32) return forward<scalar_t, float>(call);
  return forward<scalar_t, scalar_t>(call);
}

}  // namespace

void ms_deform_attn_ov_forward(const OvMSDeformAttnCall& call) {
  switch (call.value_type) {
    case OvElement::f32: return forward<float, float>(call);
    case OvElement::f16: return forward_16bit<ov::float16>(call);
    case OvElement::bf16: return forward_16bit<ov::bfloat16>(call);
  }
}

}  // namespace DETRX_CPU_NAMESPACE
}  // namespace detrx
