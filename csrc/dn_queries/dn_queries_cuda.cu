// CUDA kernel of dn_queries: one thread per DN slot writes the noisy query, then one pass writes
// every mask element from the closed form (per-image masks and the shared one in one launch).
// Nothing is read back to the host: the seed and the gt counts are read on the device, and the
// checks that need gt data are left to the Python wrapper (which folds them into its one read of
// max_gt, or asserts them on the device when the caller gives max_gt).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "dn_queries/dn_layout.h"
#include "dn_queries/dn_queries_checks.h"
#include "dn_queries/dn_queries_tensors.h"
#include "dn_queries/dn_slot_writer.h"

namespace detrx {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

template <typename scalar_t>
__global__ void dn_slots_kernel(DNLayout layout, DNNoiseParams params, DNSlotPointers<scalar_t> pointers,
                                int64_t num_slots) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t slot = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; slot < num_slots;
       slot += stride) {
    const int64_t b = slot / layout.num_dn;
    const DNSlot place = dn_slot(layout, slot % layout.num_dn);
    if (place.gt < dn_usable_gts(layout, pointers.gt_counts[b])) {
      const uint64_t seed = static_cast<uint64_t>(*pointers.seed);
      const int64_t gt_flat = b * layout.padded_gts + place.gt;
      dn_dispatch_noise_kind(pointers.noise != nullptr, params.dino_style, [&](auto pre_drawn, auto dino_style) {
        dn_write_valid_slot<scalar_t, at::opmath_type<scalar_t>, pre_drawn.value, dino_style.value>(
            params, pointers, seed, slot, gt_flat, place.gt, place.negative);
      });
    } else {
      dn_write_padded_slot(params, pointers, slot, place.negative);
    }
  }
}

// Rows [0, image_rows) belong to the per-image masks [B, L, L], rows [image_rows, image_rows + L) to
// the shared mask [L, L]. blockIdx.x tiles the columns, blockIdx.y strides over the rows.
__global__ void dn_mask_kernel(DNLayout layout, const int64_t* gt_counts, int64_t image_rows, bool* image_mask,
                               bool* shared_mask) {
  const int64_t L = layout.total;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= L) return;
  const bool j_is_dn = j < layout.num_dn;
  const int64_t j_gt = j_is_dn ? dn_slot(layout, j).gt : 0;
  for (int64_t r = blockIdx.y; r < image_rows + L; r += gridDim.y) {
    if (r < image_rows) {
      const bool j_valid = j_is_dn && j_gt < dn_usable_gts(layout, gt_counts[r / L]);
      image_mask[r * L + j] = dn_mask_blocked(layout, r % L, j, j_valid);
    } else {
      shared_mask[(r - image_rows) * L + j] = dn_mask_blocked(layout, r - image_rows, j, true);
    }
  }
}

DNQueriesResult dn_queries_cuda(
    const at::Tensor& gt_labels, const at::Tensor& gt_boxes, const at::Tensor& gt_counts, const at::Tensor& seed,
    const std::optional<at::Tensor>& noise, int64_t num_classes, int64_t num_queries, int64_t max_gt,
    int64_t num_groups, bool contrastive, c10::string_view noise_style, double label_noise_ratio,
    double box_noise_scale, double min_box_size, bool per_image_mask) {
  const auto args = check_dn_queries_inputs(gt_labels, gt_boxes, gt_counts, seed, noise, num_classes, num_queries,
                                            max_gt, num_groups, contrastive, std::string(noise_style),
                                            label_noise_ratio, box_noise_scale, min_box_size);
  const c10::cuda::CUDAGuard device_guard(gt_labels.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const DNQueriesTensors t(args, gt_labels, gt_boxes, gt_counts, seed, noise, per_image_mask);
  const DNLayout& layout = args.layout;
  const int64_t num_slots = args.batch * layout.num_dn, L = layout.total;
  if (num_slots > 0) {
    const auto blocks = static_cast<unsigned>(std::min<int64_t>((num_slots + kThreads - 1) / kThreads, kMaxBlocks));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gt_boxes.scalar_type(), "dn_queries_cuda", [&] {
      dn_slots_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(layout, args.noise, t.slot_pointers<scalar_t>(),
                                                                  num_slots);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const int64_t image_rows = t.attn_mask.size(0) * L;
  const dim3 mask_blocks(static_cast<unsigned>((L + kThreads - 1) / kThreads),
                         static_cast<unsigned>(std::min<int64_t>(image_rows + L, kMaxBlocks)));
  dn_mask_kernel<<<mask_blocks, kThreads, 0, stream>>>(layout, t.gt_counts.data_ptr<int64_t>(), image_rows,
                                                       t.attn_mask.data_ptr<bool>(),
                                                       t.shared_attn_mask.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return t.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(detrx, CUDA, m) {
  m.impl("dn_queries", &dn_queries_cuda);
}

}  // namespace detrx
