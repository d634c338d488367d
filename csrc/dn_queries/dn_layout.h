// Where each denoising slot sits, shared by the CPU and CUDA kernels of dn_queries.
//
// The K = num_groups * group_size DN slots come first, then the N matching queries. Inside a group,
// slot r < max_gt is the positive copy of gt r; with contrastive groups (group_size = 2 * max_gt)
// slot max_gt + r is the negative copy of gt r. A slot is valid when its gt exists in its image.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace detrx {

struct DNLayout {
  int64_t num_dn;      // K
  int64_t total;       // K + N
  int64_t group_size;  // S = max_gt, or 2 * max_gt with contrastive groups
  int64_t max_gt;
  int64_t padded_gts;  // G, the width of gt_labels / gt_boxes
  bool contrastive;
};

struct DNSlot {
  int64_t gt;     // index of the clean gt within its image, in [0, max_gt)
  bool negative;  // contrastive copy, trained towards "no object"
};

DETRX_HOST_DEVICE DNSlot dn_slot(const DNLayout& layout, int64_t k) {
  const int64_t r = k % layout.group_size;
  const bool negative = layout.contrastive && r >= layout.max_gt;
  return {negative ? r - layout.max_gt : r, negative};
}

// The image's gt count, limited to what the padded inputs hold (keeps reads in bounds).
DETRX_HOST_DEVICE int64_t dn_usable_gts(const DNLayout& layout, int64_t count) {
  return count < layout.padded_gts ? count : layout.padded_gts;
}

// The mask's closed form (True = blocked): query i never sees DN slot j when i is a matching
// query, i is in another group, or j is a padded slot. Matching keys (j >= K) are always visible.
DETRX_HOST_DEVICE bool dn_mask_blocked(const DNLayout& layout, int64_t i, int64_t j, bool j_valid) {
  if (j >= layout.num_dn) return false;
  return i >= layout.num_dn || i / layout.group_size != j / layout.group_size || !j_valid;
}

}  // namespace detrx
