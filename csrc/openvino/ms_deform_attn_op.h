// detrx.MultiScaleDeformableAttention: ms_deform_attn as an OpenVINO operation, evaluated on the
// CPU by the same kernel code as the torch op (ms_deform_attn_ov_cpu.cpp).
//
// Inputs, as the torch op takes them: value [N, S, M, D] (f32, f16 or bf16), spatial_shapes [L, 2]
// and level_start_index [L] (i64, or i32 as OpenVINO's CPU plugin may narrow them),
// sampling_locations [N, Lq, M, L, P, 2] and attention_weights [N, Lq, M, L, P] (value's type,
// or f32 with a 16-bit value). Output [N, Lq, M * D] of value's type. Every size may be dynamic.
#pragma once

#include <openvino/op/op.hpp>

namespace detrx {

class MultiScaleDeformableAttention : public ov::op::Op {
 public:
  OPENVINO_OP("MultiScaleDeformableAttention", "detrx");

  MultiScaleDeformableAttention() = default;
  explicit MultiScaleDeformableAttention(const ov::OutputVector& inputs);

  void validate_and_infer_types() override;
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& inputs) const override;
  bool visit_attributes(ov::AttributeVisitor&) override { return true; }
  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override;
  bool has_evaluate() const override;
};

}  // namespace detrx
