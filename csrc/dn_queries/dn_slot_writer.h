// Writes one denoising slot (label, box, gt index, flags), shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

#include "dn_queries/dn_layout.h"
#include "dn_queries/dn_noise.h"

namespace detrx {

struct DNNoiseParams {
  int64_t num_classes;
  double label_noise_ratio;
  double box_noise_scale;
  double min_box_size;
  bool dino_style;
};

template <typename scalar_t>
struct DNSlotTensors {
  const int64_t* gt_labels;   // [B, G]
  const scalar_t* gt_boxes;   // [B, G, 4]
  const int64_t* gt_counts;   // [B]
  const int64_t* seed;        // [1], read when noise is null
  const float* noise;         // [B, K, 6] or null
  int64_t* labels;            // [B, K]
  scalar_t* boxes;            // [B, K, 4]
  int64_t* gt_index;          // [B, K]
  bool* positive;             // [B, K]
  bool* valid;                // [B, K]
};

// Slot `slot` = b * K + k of the batch.
template <typename scalar_t, typename acc_t>
DETRX_HOST_DEVICE void dn_write_slot(const DNLayout& layout, const DNNoiseParams& params,
                                     const DNSlotTensors<scalar_t>& t, int64_t slot) {
  const int64_t b = slot / layout.num_dn;
  const DNSlot s = dn_slot(layout, slot % layout.num_dn);
  const bool valid = s.gt < dn_usable_gts(layout, t.gt_counts[b]);
  t.positive[slot] = !s.negative;
  t.valid[slot] = valid;
  scalar_t* box_out = t.boxes + 4 * slot;
  if (!valid) {
    t.labels[slot] = params.num_classes;
    t.gt_index[slot] = -1;
    for (int c = 0; c < 4; ++c) box_out[c] = scalar_t(0);
    return;
  }
  float u[kDNUniformsPerSlot];
  const uint64_t first = static_cast<uint64_t>(slot) * kDNUniformsPerSlot;
  for (int c = 0; c < kDNUniformsPerSlot; ++c) {
    u[c] = t.noise != nullptr ? t.noise[first + c] : dn_counter_uniform(static_cast<uint64_t>(*t.seed), first + c);
  }
  const int64_t gt = b * layout.padded_gts + s.gt;
  t.gt_index[slot] = s.gt;
  t.labels[slot] = dn_noisy_label(t.gt_labels[gt], u[0], u[1], params.label_noise_ratio, params.num_classes);
  acc_t box[4], noisy[4];
  float factor[4];
  for (int c = 0; c < 4; ++c) {
    box[c] = static_cast<acc_t>(t.gt_boxes[4 * gt + c]);
    factor[c] = dn_noise_factor(u[2 + c], s.negative);
  }
  dn_noisy_box<acc_t>(box, factor, static_cast<acc_t>(params.box_noise_scale), params.dino_style,
                      static_cast<acc_t>(params.min_box_size), noisy);
  for (int c = 0; c < 4; ++c) box_out[c] = static_cast<scalar_t>(noisy[c]);
}

}  // namespace detrx
