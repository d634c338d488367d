// Registers the CPU kernel of dn_queries: every call goes to the copy compiled for the CPU level in
// use (cpu_levels.h); the copies are dn_queries_cpu.cpp, compiled once per level.
#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cpu_levels.h"

namespace detrx {

// (labels, boxes, gt_index, positive, valid, attn_mask, shared_attn_mask), as in detrx.cpp.
using DNQueriesOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

#define DETRX_DN_QUERIES_ARGS                                                                                    \
  const at::Tensor &gt_labels, const at::Tensor &gt_boxes, const at::Tensor &gt_counts, const at::Tensor &seed, \
      const std::optional<at::Tensor>&noise, int64_t num_classes, int64_t num_queries, int64_t max_gt,          \
      int64_t num_groups, bool contrastive, c10::string_view noise_style, double label_noise_ratio,              \
      double box_noise_scale, double min_box_size, bool per_image_mask
#define DETRX_DECLARE_LEVEL(level) \
  namespace DETRX_PASTE(cpu_, level) { DNQueriesOutputs dn_queries_cpu(DETRX_DN_QUERIES_ARGS); }
DETRX_FOR_EACH_CPU_LEVEL(DETRX_DECLARE_LEVEL)
#undef DETRX_DECLARE_LEVEL

namespace {

using DNQueriesKernel = DNQueriesOutputs (*)(DETRX_DN_QUERIES_ARGS);
#define DETRX_COPY(level) &DETRX_PASTE(cpu_, level)::dn_queries_cpu,
DNQueriesKernel copies[] = {DETRX_FOR_EACH_CPU_LEVEL(DETRX_COPY)};
#undef DETRX_COPY

DNQueriesOutputs dn_queries_cpu(DETRX_DN_QUERIES_ARGS) {
  return call_cpu_level(copies, gt_labels, gt_boxes, gt_counts, seed, noise, num_classes, num_queries, max_gt,
                        num_groups, contrastive, noise_style, label_noise_ratio, box_noise_scale, min_box_size,
                        per_image_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(detrx, CPU, m) {
  m.impl("dn_queries", &dn_queries_cpu);
}

}  // namespace detrx
