// Writes one denoising slot (label, box, gt index, flags), shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>
#include <type_traits>

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

// Calls body(std::bool_constant<pre_drawn>{}, std::bool_constant<dino_style>{}).
template <typename Body>
DETRX_HOST_DEVICE void dn_dispatch_noise_kind(bool pre_drawn, bool dino_style, const Body& body) {
  if (pre_drawn) {
    if (dino_style) body(std::true_type{}, std::true_type{}); else body(std::true_type{}, std::false_type{});
  } else {
    if (dino_style) body(std::false_type{}, std::true_type{}); else body(std::false_type{}, std::false_type{});
  }
}

// A padded slot: "no object", no gt, a zero box.
template <typename scalar_t>
DETRX_HOST_DEVICE void dn_write_padded_slot(const DNNoiseParams& params, const DNSlotTensors<scalar_t>& t,
                                            int64_t slot, bool negative) {
  t.positive[slot] = !negative;
  t.valid[slot] = false;
  t.labels[slot] = params.num_classes;
  t.gt_index[slot] = -1;
  for (int c = 0; c < 4; ++c) t.boxes[4 * slot + c] = scalar_t(0);
}

// A slot holding a noisy copy of gt `gt` (flat index `gt_flat` into gt_labels / gt_boxes), with
// uniforms from the pre-drawn noise tensor (kPreDrawn) or the counter-based generator, and DINO's
// corner noise (kDinoStyle) or DN-DETR's centre / size noise. Branch free, so the CPU loop over the
// gts of an image runs on SIMD lanes.
template <typename scalar_t, typename acc_t, bool kPreDrawn, bool kDinoStyle>
DETRX_HOST_DEVICE void dn_write_valid_slot(const DNNoiseParams& params, const DNSlotTensors<scalar_t>& t,
                                           uint64_t seed, int64_t slot, int64_t gt_flat, int64_t gt, bool negative) {
  float u[kDNUniformsPerSlot];
  const uint64_t first = static_cast<uint64_t>(slot) * kDNUniformsPerSlot;
  for (int c = 0; c < kDNUniformsPerSlot; c += 2) {
    if constexpr (kPreDrawn) {
      u[c] = t.noise[first + c];
      u[c + 1] = t.noise[first + c + 1];
    } else {
      dn_counter_uniform_pair(seed, (first + c) / 2, &u[c], &u[c + 1]);
    }
  }
  t.positive[slot] = !negative;
  t.valid[slot] = true;
  t.gt_index[slot] = gt;
  t.labels[slot] = dn_noisy_label(t.gt_labels[gt_flat], u[0], u[1], params.label_noise_ratio, params.num_classes);
  acc_t box[4], noisy[4];
  float factor[4];
  for (int c = 0; c < 4; ++c) {
    box[c] = static_cast<acc_t>(t.gt_boxes[4 * gt_flat + c]);
    factor[c] = dn_noise_factor(u[2 + c], negative);
  }
  dn_noisy_box<acc_t, kDinoStyle>(box, factor, static_cast<acc_t>(params.box_noise_scale),
                                   static_cast<acc_t>(params.min_box_size), noisy);
  for (int c = 0; c < 4; ++c) t.boxes[4 * slot + c] = static_cast<scalar_t>(noisy[c]);
}

}  // namespace detrx
