// CPU kernel of dn_queries: the noisy DN slots image by image (a SIMD loop over each copy of the
// image's gts), then every mask row in one pass (the per-image masks and the shared one). A mask row is a handful of runs (blocked
// groups before and after its own group, its group's visibility, the visible matching queries), so
// rows are written with memset rather than element by element. Threads split slots and rows only
// when there is enough work for a thread wake-up to pay (the typical batch runs on one thread); each
// output element is written by exactly one task, so results do not depend on the schedule.
// setup.py compiles this file once per CPU level (cpu_levels.h); dn_queries_cpu_dispatch.cpp
// registers the op and calls the copy of the level in use.
//
// No multiply-add of the box arithmetic is fused into an FMA (dn_noise.h), on any level, so the
// boxes are bitwise those of the CUDA kernel and of a float-by-float evaluation.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <cstring>

#include "cpu_levels.h"
#include "dn_queries/dn_layout.h"
#include "dn_queries/dn_queries_checks.h"
#include "dn_queries/dn_queries_tensors.h"
#include "dn_queries/dn_slot_writer.h"

namespace detrx {
namespace DETRX_CPU_NAMESPACE {
namespace {

constexpr int64_t kSlotsPerTask = 8192;                   // about 40 us of slot writes
constexpr int64_t kMaskBytesPerTask = int64_t{1} << 19;  // about 40 us of memset

// Row i of a [K+N, K+N] mask. valid: this image's [K] slot flags, or null for the shared form
// (every slot of the own group visible).
void write_mask_row(const DNLayout& layout, const bool* valid, int64_t i, bool* row) {
  const int64_t K = layout.num_dn, N = layout.total - K;
  std::memset(row + K, 0, N);  // matching queries are visible to everyone
  if (i >= K) {
    std::memset(row, 1, K);
    return;
  }
  const int64_t group_begin = i / layout.group_size * layout.group_size;
  const int64_t group_end = group_begin + layout.group_size;
  std::memset(row, 1, group_begin);
  std::memset(row + group_end, 1, K - group_end);
  if (valid == nullptr) {
    std::memset(row + group_begin, 0, layout.group_size);
  } else {
    for (int64_t j = group_begin; j < group_end; ++j) row[j] = !valid[j];
  }
}

// The slots of image b. Copy c of its gts fills slots [c * max_gt, (c + 1) * max_gt): the n gts,
// then padding. The loop over the gts is branch free, so it runs on SIMD lanes.
template <typename scalar_t, bool kPreDrawn, bool kDinoStyle>
void write_image_slots(const DNLayout& layout, const DNNoiseParams& params, const DNSlotPointers<scalar_t>& pointers,
                       uint64_t seed, int64_t b) {
  const int64_t K = layout.num_dn, max_gt = layout.max_gt;
  const int64_t copies = K / max_gt;
  const int64_t n = dn_usable_gts(layout, pointers.gt_counts[b]);
  const int64_t first_gt = b * layout.padded_gts;
  for (int64_t c = 0; c < copies; ++c) {
    const bool negative = layout.contrastive && c % 2 == 1;
    const int64_t first_slot = b * K + c * max_gt;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      dn_write_valid_slot<scalar_t, at::opmath_type<scalar_t>, kPreDrawn, kDinoStyle>(
          params, pointers, seed, first_slot + j, first_gt + j, j, negative);
    }
    for (int64_t j = n; j < max_gt; ++j) dn_write_padded_slot(params, pointers, first_slot + j, negative);
  }
}

// Threads split the images.
template <typename scalar_t>
void write_slots(const DNLayout& layout, const DNNoiseParams& params, const DNSlotPointers<scalar_t>& pointers,
                 uint64_t seed, int64_t batch) {
  if (layout.num_dn == 0) return;
  const int64_t images_per_task = std::max<int64_t>(1, kSlotsPerTask / layout.num_dn);
  at::parallel_for(0, batch, images_per_task, [&](int64_t begin, int64_t end) {
    dn_dispatch_noise_kind(pointers.noise != nullptr, params.dino_style, [&](auto pre_drawn, auto dino_style) {
      for (int64_t b = begin; b < end; ++b) {
        write_image_slots<scalar_t, pre_drawn.value, dino_style.value>(layout, params, pointers, seed, b);
      }
    });
  });
}

}  // namespace

DNQueriesResult dn_queries_cpu(
    const at::Tensor& gt_labels, const at::Tensor& gt_boxes, const at::Tensor& gt_counts, const at::Tensor& seed,
    const std::optional<at::Tensor>& noise, int64_t num_classes, int64_t num_queries, int64_t max_gt,
    int64_t num_groups, bool contrastive, c10::string_view noise_style, double label_noise_ratio,
    double box_noise_scale, double min_box_size, bool per_image_mask) {
  const auto args = check_dn_queries_inputs(gt_labels, gt_boxes, gt_counts, seed, noise, num_classes, num_queries,
                                            max_gt, num_groups, contrastive, std::string(noise_style),
                                            label_noise_ratio, box_noise_scale, min_box_size);
  const DNQueriesTensors t(args, gt_labels, gt_boxes, gt_counts, seed, noise, per_image_mask);
  const DNLayout& layout = args.layout;
  const int64_t K = layout.num_dn, L = layout.total;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gt_boxes.scalar_type(), "dn_queries_cpu", [&] {
    check_dn_queries_values<scalar_t>(args, t.gt_labels.data_ptr<int64_t>(), t.gt_boxes.data_ptr<scalar_t>(),
                                      t.gt_counts.data_ptr<int64_t>());
    write_slots(layout, args.noise, t.slot_pointers<scalar_t>(), static_cast<uint64_t>(*t.seed.data_ptr<int64_t>()),
                args.batch);
  });

  // Rows [0, B * L) are the per-image masks, rows [B * L, (B + 1) * L) the shared mask.
  const int64_t image_rows = t.attn_mask.size(0) * L;
  bool* image_mask = t.attn_mask.data_ptr<bool>();
  bool* shared_mask = t.shared_attn_mask.data_ptr<bool>();
  const bool* valid_flags = t.valid.data_ptr<bool>();
  const int64_t rows_per_task = std::max<int64_t>(1, kMaskBytesPerTask / L);
  at::parallel_for(0, image_rows + L, rows_per_task, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (r < image_rows) {
        write_mask_row(layout, valid_flags + (r / L) * K, r % L, image_mask + r * L);
      } else {
        write_mask_row(layout, nullptr, r - image_rows, shared_mask + (r - image_rows) * L);
      }
    }
  });
  return t.result();
}

}  // namespace DETRX_CPU_NAMESPACE
}  // namespace detrx
