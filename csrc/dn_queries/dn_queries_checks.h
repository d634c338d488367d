// Argument checks shared by the CPU and CUDA kernels of dn_queries. They raise ValueError
// (TORCH_CHECK_VALUE) naming the argument and what was expected. check_dn_queries_inputs reads no
// tensor data; check_dn_queries_values reads the gts and runs on CPU tensors only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>
#include <string>

#include "dn_queries/dn_layout.h"
#include "dn_queries/dn_noise.h"

namespace detrx {

struct DNQueriesArgs {
  DNLayout layout;
  DNNoiseParams noise;
  int64_t batch;  // B
};

inline DNQueriesArgs check_dn_queries_inputs(
    const at::Tensor& gt_labels, const at::Tensor& gt_boxes, const at::Tensor& gt_counts, const at::Tensor& seed,
    const std::optional<at::Tensor>& noise, int64_t num_classes, int64_t num_queries, int64_t max_gt,
    int64_t num_groups, bool contrastive, const std::string& noise_style, double label_noise_ratio,
    double box_noise_scale, double min_box_size) {
  TORCH_CHECK_VALUE(gt_labels.dim() == 2 && gt_labels.scalar_type() == at::kLong,
                    "dn_queries: gt_labels must be int64 [B, G], got ", gt_labels.scalar_type(), " ", gt_labels.sizes());
  const int64_t B = gt_labels.size(0), G = gt_labels.size(1);
  TORCH_CHECK_VALUE(gt_boxes.dim() == 3 && gt_boxes.size(0) == B && gt_boxes.size(1) == G && gt_boxes.size(2) == 4,
                    "dn_queries: gt_boxes must be [B, G, 4] = [", B, ", ", G, ", 4] (B, G from gt_labels), got ",
                    gt_boxes.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(gt_boxes.scalar_type()),
                    "dn_queries: gt_boxes must be a floating-point tensor, got ", gt_boxes.scalar_type());
  TORCH_CHECK_VALUE(gt_counts.dim() == 1 && gt_counts.size(0) == B && gt_counts.scalar_type() == at::kLong,
                    "dn_queries: gt_counts must be int64 [B] = [", B, "], got ", gt_counts.scalar_type(), " ",
                    gt_counts.sizes());
  TORCH_CHECK_VALUE(seed.numel() == 1 && seed.scalar_type() == at::kLong,
                    "dn_queries: seed must be a one-element int64 tensor, got ", seed.scalar_type(), " ", seed.sizes());
  TORCH_CHECK_VALUE(num_classes >= 1, "dn_queries: num_classes must be >= 1, got ", num_classes);
  TORCH_CHECK_VALUE(num_queries >= 1, "dn_queries: num_queries must be >= 1, got ", num_queries);
  TORCH_CHECK_VALUE(max_gt >= 0, "dn_queries: max_gt must be >= 0, got ", max_gt);
  TORCH_CHECK_VALUE(num_groups >= 1, "dn_queries: num_groups must be >= 1, got ", num_groups);
  TORCH_CHECK_VALUE(noise_style == "dn_detr" || noise_style == "dino",
                    "dn_queries: noise_style must be \"dn_detr\" or \"dino\", got \"", noise_style, "\"");
  TORCH_CHECK_VALUE(label_noise_ratio >= 0 && label_noise_ratio <= 1,
                    "dn_queries: label_noise_ratio must be in [0, 1], got ", label_noise_ratio);
  TORCH_CHECK_VALUE(box_noise_scale >= 0 && std::isfinite(box_noise_scale),
                    "dn_queries: box_noise_scale must be finite and >= 0, got ", box_noise_scale);
  TORCH_CHECK_VALUE(min_box_size > 0 && min_box_size <= 1,
                    "dn_queries: min_box_size must be in (0, 1], got ", min_box_size);
  const int64_t group_size = contrastive ? 2 * max_gt : max_gt;
  const int64_t K = num_groups * group_size;
  if (noise.has_value()) {
    TORCH_CHECK_VALUE(noise->dim() == 3 && noise->size(0) == B && noise->size(1) == K &&
                          noise->size(2) == kDNUniformsPerSlot && noise->scalar_type() == at::kFloat,
                      "dn_queries: noise must be float32 [B, K, 6] = [", B, ", ", K, ", 6], got ",
                      noise->scalar_type(), " ", noise->sizes());
    TORCH_CHECK_VALUE(noise->device() == gt_labels.device(), "dn_queries: noise must be on gt_labels' device ",
                      gt_labels.device(), ", got ", noise->device());
  }
  const std::pair<const char*, const at::Tensor*> others[] = {
      {"gt_boxes", &gt_boxes}, {"gt_counts", &gt_counts}, {"seed", &seed}};
  for (const auto& [name, tensor] : others) {
    TORCH_CHECK_VALUE(tensor->device() == gt_labels.device(), "dn_queries: ", name, " must be on gt_labels' device ",
                      gt_labels.device(), ", got ", tensor->device());
  }
  DNLayout layout{K, K + num_queries, group_size, max_gt, G, contrastive};
  DNNoiseParams params{num_classes, label_noise_ratio, box_noise_scale, min_box_size, noise_style == "dino"};
  return {layout, params, B};
}

// The checks that read gt data: counts in [0, min(G, max_gt)], counted labels in [0, num_classes),
// counted boxes finite. Takes contiguous CPU tensors.
template <typename scalar_t>
void check_dn_queries_values(const DNQueriesArgs& args, const int64_t* gt_labels, const scalar_t* gt_boxes,
                             const int64_t* gt_counts) {
  const int64_t G = args.layout.padded_gts;
  for (int64_t b = 0; b < args.batch; ++b) {
    const int64_t count = gt_counts[b];
    TORCH_CHECK_VALUE(count >= 0 && count <= G, "dn_queries: gt_counts must be in [0, G] = [0, ", G,
                      "], got gt_counts[", b, "] = ", count);
    TORCH_CHECK_VALUE(count <= args.layout.max_gt, "dn_queries: max_gt = ", args.layout.max_gt,
                      " is smaller than gt_counts[", b, "] = ", count, " (max_gt must be >= every count)");
    for (int64_t g = 0; g < count; ++g) {
      const int64_t label = gt_labels[b * G + g];
      TORCH_CHECK_VALUE(label >= 0 && label < args.noise.num_classes, "dn_queries: gt_labels must be in [0, ",
                        "num_classes) = [0, ", args.noise.num_classes, "), got gt_labels[", b, ", ", g, "] = ", label);
      for (int c = 0; c < 4; ++c) {
        const double coordinate = static_cast<double>(gt_boxes[(b * G + g) * 4 + c]);
        TORCH_CHECK_VALUE(std::isfinite(coordinate), "dn_queries: gt_boxes must be finite, got gt_boxes[", b, ", ",
                          g, ", ", c, "] = ", coordinate);
      }
    }
  }
}

}  // namespace detrx
