// The tensors around the dn_queries kernels, shared by the CPU and CUDA entry points: contiguous
// inputs, freshly allocated outputs, and the raw pointers the slot writer works on.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <optional>
#include <tuple>

#include "dn_queries/dn_queries_checks.h"
#include "dn_queries/dn_slot_writer.h"

namespace detrx {

using DNQueriesResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The at::Tensors of one call; slot_pointers() gives the slot writer its DNSlotPointers into them.
struct DNQueriesTensors {
  // Inputs, contiguous.
  at::Tensor gt_labels, gt_boxes, gt_counts, seed, noise;  // noise undefined when not given
  // Outputs: [B, K] labels, [B, K, 4] boxes, [B, K] gt_index / positive / valid,
  // [B or 0, K+N, K+N] attn_mask, [K+N, K+N] shared_attn_mask.
  at::Tensor labels, boxes, gt_index, positive, valid, attn_mask, shared_attn_mask;

  DNQueriesTensors(const DNQueriesArgs& args, const at::Tensor& labels_in, const at::Tensor& boxes_in,
                   const at::Tensor& counts_in, const at::Tensor& seed_in, const std::optional<at::Tensor>& noise_in,
                   bool per_image_mask)
      : gt_labels(labels_in.contiguous()), gt_boxes(boxes_in.contiguous()), gt_counts(counts_in.contiguous()),
        seed(seed_in.contiguous()), noise(noise_in.has_value() ? noise_in->contiguous() : at::Tensor()) {
    const int64_t B = args.batch, K = args.layout.num_dn, L = args.layout.total;
    const auto bool_options = gt_labels.options().dtype(at::kBool);
    labels = at::empty({B, K}, gt_labels.options());
    boxes = at::empty({B, K, 4}, gt_boxes.options());
    gt_index = at::empty({B, K}, gt_labels.options());
    positive = at::empty({B, K}, bool_options);
    valid = at::empty({B, K}, bool_options);
    attn_mask = at::empty({per_image_mask ? B : 0, L, L}, bool_options);
    shared_attn_mask = at::empty({L, L}, bool_options);
  }

  template <typename scalar_t>
  DNSlotPointers<scalar_t> slot_pointers() const {
    return {gt_labels.data_ptr<int64_t>(), gt_boxes.data_ptr<scalar_t>(), gt_counts.data_ptr<int64_t>(),
            seed.data_ptr<int64_t>(),      noise.defined() ? noise.data_ptr<float>() : nullptr,
            labels.data_ptr<int64_t>(),    boxes.data_ptr<scalar_t>(),   gt_index.data_ptr<int64_t>(),
            positive.data_ptr<bool>(),     valid.data_ptr<bool>()};
  }

  DNQueriesResult result() const { return {labels, boxes, gt_index, positive, valid, attn_mask, shared_attn_mask}; }
};

}  // namespace detrx
