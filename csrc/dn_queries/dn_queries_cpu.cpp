// CPU kernel of dn_queries: the noisy DN slots in one pass over B * K slots, then every mask row in
// one pass (the per-image masks and the shared one). A mask row is a handful of runs (blocked
// groups before and after its own group, its group's visibility, the visible matching queries), so
// rows are written with memset rather than element by element. Threads split slots and rows only
// when there is enough work for a thread wake-up to pay (the typical batch runs on one thread); each
// output element is written by exactly one task, so results do not depend on the schedule.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstring>
#include <tuple>

#include "dn_queries/dn_layout.h"
#include "dn_queries/dn_queries_checks.h"
#include "dn_queries/dn_slot_writer.h"

namespace detrx {
namespace {

constexpr int64_t kSlotsPerTask = 16384;           // about 0.2 ms of slot writes
constexpr int64_t kMaskBytesPerTask = int64_t{1} << 20;  // about 0.1 ms of memset

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
void write_image_slots(const DNLayout& layout, const DNNoiseParams& params, const DNSlotTensors<scalar_t>& tensors,
                       uint64_t seed, int64_t b) {
  const int64_t K = layout.num_dn, max_gt = layout.max_gt;
  const int64_t copies = K / max_gt;
  const int64_t n = dn_usable_gts(layout, tensors.gt_counts[b]);
  const int64_t first_gt = b * layout.padded_gts;
  for (int64_t c = 0; c < copies; ++c) {
    const bool negative = layout.contrastive && c % 2 == 1;
    const int64_t first_slot = b * K + c * max_gt;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      dn_write_valid_slot<scalar_t, at::opmath_type<scalar_t>, kPreDrawn, kDinoStyle>(
          params, tensors, seed, first_slot + j, first_gt + j, j, negative);
    }
    for (int64_t j = n; j < max_gt; ++j) dn_write_padded_slot(params, tensors, first_slot + j, negative);
  }
}

// Threads split the images.
template <typename scalar_t>
void write_slots(const DNLayout& layout, const DNNoiseParams& params, const DNSlotTensors<scalar_t>& tensors,
                 uint64_t seed, int64_t batch) {
  if (layout.num_dn == 0) return;
  const int64_t images_per_task = std::max<int64_t>(1, kSlotsPerTask / layout.num_dn);
  at::parallel_for(0, batch, images_per_task, [&](int64_t begin, int64_t end) {
    dn_dispatch_noise_kind(tensors.noise != nullptr, params.dino_style, [&](auto pre_drawn, auto dino_style) {
      for (int64_t b = begin; b < end; ++b) {
        write_image_slots<scalar_t, pre_drawn.value, dino_style.value>(layout, params, tensors, seed, b);
      }
    });
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> dn_queries_cpu(
    const at::Tensor& gt_labels, const at::Tensor& gt_boxes, const at::Tensor& gt_counts, const at::Tensor& seed,
    const std::optional<at::Tensor>& noise, int64_t num_classes, int64_t num_queries, int64_t max_gt,
    int64_t num_groups, bool contrastive, c10::string_view noise_style, double label_noise_ratio,
    double box_noise_scale, double min_box_size, bool per_image_mask) {
  const auto args = check_dn_queries_inputs(gt_labels, gt_boxes, gt_counts, seed, noise, num_classes, num_queries,
                                            max_gt, num_groups, contrastive, std::string(noise_style),
                                            label_noise_ratio, box_noise_scale, min_box_size);
  const DNLayout& layout = args.layout;
  const int64_t B = args.batch, K = layout.num_dn, L = layout.total;
  const auto long_options = gt_labels.options();
  const auto bool_options = gt_labels.options().dtype(at::kBool);
  auto labels = at::empty({B, K}, long_options);
  auto boxes = at::empty({B, K, 4}, gt_boxes.options());
  auto gt_index = at::empty({B, K}, long_options);
  auto positive = at::empty({B, K}, bool_options);
  auto valid = at::empty({B, K}, bool_options);
  auto attn_mask = at::empty({per_image_mask ? B : 0, L, L}, bool_options);
  auto shared_attn_mask = at::empty({L, L}, bool_options);

  const auto labels_in = gt_labels.contiguous(), boxes_in = gt_boxes.contiguous(), counts_in = gt_counts.contiguous();
  const auto seed_in = seed.contiguous();
  const auto noise_in = noise.has_value() ? noise->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gt_boxes.scalar_type(), "dn_queries_cpu", [&] {
    check_dn_queries_values<scalar_t>(args, labels_in.data_ptr<int64_t>(), boxes_in.data_ptr<scalar_t>(),
                                      counts_in.data_ptr<int64_t>());
    const DNSlotTensors<scalar_t> tensors{
        labels_in.data_ptr<int64_t>(), boxes_in.data_ptr<scalar_t>(), counts_in.data_ptr<int64_t>(),
        seed_in.data_ptr<int64_t>(), noise_in.defined() ? noise_in.data_ptr<float>() : nullptr,
        labels.data_ptr<int64_t>(), boxes.data_ptr<scalar_t>(), gt_index.data_ptr<int64_t>(),
        positive.data_ptr<bool>(), valid.data_ptr<bool>()};
    write_slots(layout, args.noise, tensors, static_cast<uint64_t>(*seed_in.data_ptr<int64_t>()), B);
  });

  // Rows [0, B * L) are the per-image masks, rows [B * L, (B + 1) * L) the shared mask.
  const int64_t image_rows = attn_mask.size(0) * L;
  bool* image_mask = attn_mask.data_ptr<bool>();
  bool* shared_mask = shared_attn_mask.data_ptr<bool>();
  const bool* valid_flags = valid.data_ptr<bool>();
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
  return {labels, boxes, gt_index, positive, valid, attn_mask, shared_attn_mask};
}

}  // namespace

TORCH_LIBRARY_IMPL(detrx, CPU, m) {
  m.impl("dn_queries", &dn_queries_cpu);
}

}  // namespace detrx
