// Writes one denoising slot (label, box, gt index, flags), shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>
#include <type_traits>

#include "dn_queries/dn_layout.h"
#include "dn_queries/dn_noise.h"

namespace detrx {

// Raw pointers into the op's contiguous inputs and fresh outputs (the at::Tensors that own them are
// DNQueriesTensors), passed by value to the CUDA kernel.
template <typename scalar_t>
struct DNSlotPointers {
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
DETRX_HOST_DEVICE void dn_write_padded_slot(const DNNoiseParams& params, const DNSlotPointers<scalar_t>& t,
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
DETRX_HOST_DEVICE void dn_write_valid_slot(const DNNoiseParams& params, const DNSlotPointers<scalar_t>& t,
                                           uint64_t seed, int64_t slot, int64_t gt_flat, int64_t gt, bool negative) {
  // Written out without loops: the vectoriser takes the CPU loop over slots only when its body has none.
  float u[kDNUniformsPerSlot];
  const uint64_t first = static_cast<uint64_t>(slot) * kDNUniformsPerSlot;
  if constexpr (kPreDrawn) {
    const float* drawn = t.noise + first;
    u[0] = drawn[0], u[1] = drawn[1], u[2] = drawn[2], u[3] = drawn[3], u[4] = drawn[4], u[5] = drawn[5];
  } else {
    dn_counter_uniform_pair(seed, first / 2, &u[0], &u[1]);
    dn_counter_uniform_pair(seed, first / 2 + 1, &u[2], &u[3]);
    dn_counter_uniform_pair(seed, first / 2 + 2, &u[4], &u[5]);
  }
  t.positive[slot] = !negative;
  t.valid[slot] = true;
  t.gt_index[slot] = gt;
  t.labels[slot] = dn_noisy_label(t.gt_labels[gt_flat], u[0], u[1], params.label_noise_ratio, params.num_classes);
  const scalar_t* gt_box = t.gt_boxes + 4 * gt_flat;
  const acc_t box[4] = {static_cast<acc_t>(gt_box[0]), static_cast<acc_t>(gt_box[1]), static_cast<acc_t>(gt_box[2]),
                        static_cast<acc_t>(gt_box[3])};
  const float factor[4] = {dn_noise_factor(u[2], negative), dn_noise_factor(u[3], negative),
                           dn_noise_factor(u[4], negative), dn_noise_factor(u[5], negative)};
  acc_t noisy[4];
  dn_noisy_box<acc_t, kDinoStyle>(box, factor, static_cast<acc_t>(params.box_noise_scale),
                                   static_cast<acc_t>(params.min_box_size), noisy);
  scalar_t* out_box = t.boxes + 4 * slot;
  out_box[0] = static_cast<scalar_t>(noisy[0]), out_box[1] = static_cast<scalar_t>(noisy[1]);
  out_box[2] = static_cast<scalar_t>(noisy[2]), out_box[3] = static_cast<scalar_t>(noisy[3]);
}

}  // namespace detrx
