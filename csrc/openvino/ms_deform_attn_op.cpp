// detrx.MultiScaleDeformableAttention (ms_deform_attn_op.h): shape inference, the checks of the
// torch op (messages name the argument), and evaluate() on the kernel copy of the CPU's level.
#include "openvino/ms_deform_attn_op.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "cpu_features.h"
#include "ms_deform_attn/ms_deform_attn_layout.h"
#include "openvino/ms_deform_attn_ov_kernels.h"

namespace detrx {
namespace {

using ForwardCopy = void (*)(const OvMSDeformAttnCall&);
#define DETRX_OV_FORWARD(level) {#level, &DETRX_PASTE(cpu_, level)::ms_deform_attn_ov_forward},
const std::pair<const char*, ForwardCopy> kForwardCopies[] = {DETRX_FOR_EACH_CPU_LEVEL(DETRX_OV_FORWARD)};
#undef DETRX_OV_FORWARD

// The copy of the best level this CPU runs, or of the one DETRX_CPU_CAPABILITY names.
ForwardCopy forward_copy() {
  static const ForwardCopy chosen = [] {
    const char* requested = std::getenv("DETRX_CPU_CAPABILITY");
    ForwardCopy best = nullptr;
    for (const auto& [level, copy] : kForwardCopies) {
      if (requested != nullptr && *requested != '\0') {
        if (std::string(requested) == level && cpu_runs(level)) return copy;
      } else if (cpu_runs(level)) {
        best = copy;
      }
    }
    OPENVINO_ASSERT(best != nullptr, "detrx.MultiScaleDeformableAttention: DETRX_CPU_CAPABILITY='", requested,
                    "' is not a CPU level of this build that this CPU runs");
    return best;
  }();
  return chosen;
}

OvElement element_of(const ov::element::Type& type, const char* argument) {
  if (type == ov::element::f32) return OvElement::f32;
  if (type == ov::element::f16) return OvElement::f16;
  if (type == ov::element::bf16) return OvElement::bf16;
  OPENVINO_THROW("detrx.MultiScaleDeformableAttention: ", argument, " must be f32, f16 or bf16, got ", type);
}

// An i64 copy of a small integer input (i32 or i64).
std::vector<int64_t> to_int64(const ov::Tensor& tensor, const char* argument) {
  const size_t count = tensor.get_size();
  std::vector<int64_t> values(count);
  if (tensor.get_element_type() == ov::element::i64) {
    const int64_t* data = tensor.data<const int64_t>();
    values.assign(data, data + count);
  } else if (tensor.get_element_type() == ov::element::i32) {
    const int32_t* data = tensor.data<const int32_t>();
    values.assign(data, data + count);
  } else {
    OPENVINO_THROW("detrx.MultiScaleDeformableAttention: ", argument, " must be i64 (or i32), got ",
                   tensor.get_element_type());
  }
  return values;
}

}  // namespace

MultiScaleDeformableAttention::MultiScaleDeformableAttention(const ov::OutputVector& inputs) : Op(inputs) {
  constructor_validate_and_infer_types();
}

void MultiScaleDeformableAttention::validate_and_infer_types() {
  NODE_VALIDATION_CHECK(this, get_input_size() == 5, "detrx.MultiScaleDeformableAttention takes 5 inputs (value, "
                        "spatial_shapes, level_start_index, sampling_locations, attention_weights), got ",
                        get_input_size());
  const auto& value = get_input_partial_shape(0);
  const auto& locations = get_input_partial_shape(3);
  NODE_VALIDATION_CHECK(this, value.rank().compatible(4), "value must be [N, S, M, D], got ", value);
  NODE_VALIDATION_CHECK(this, get_input_partial_shape(1).rank().compatible(2), "spatial_shapes must be [L, 2], got ",
                        get_input_partial_shape(1));
  NODE_VALIDATION_CHECK(this, get_input_partial_shape(2).rank().compatible(1), "level_start_index must be [L], got ",
                        get_input_partial_shape(2));
  NODE_VALIDATION_CHECK(this, locations.rank().compatible(6),
                        "sampling_locations must be [N, Lq, M, L, P, 2], got ", locations);
  NODE_VALIDATION_CHECK(this, get_input_partial_shape(4).rank().compatible(5),
                        "attention_weights must be [N, Lq, M, L, P], got ", get_input_partial_shape(4));
  ov::Dimension batch = ov::Dimension::dynamic(), queries = ov::Dimension::dynamic();
  ov::Dimension channels = ov::Dimension::dynamic();
  if (locations.rank().is_static()) {
    batch = locations[0];
    queries = locations[1];
  }
  if (value.rank().is_static()) {
    if (batch.is_dynamic()) batch = value[0];
    if (value[2].is_static() && value[3].is_static()) channels = value[2] * value[3];
  }
  set_output_type(0, get_input_element_type(0), ov::PartialShape{batch, queries, channels});
}

std::shared_ptr<ov::Node> MultiScaleDeformableAttention::clone_with_new_inputs(const ov::OutputVector& inputs) const {
  return std::make_shared<MultiScaleDeformableAttention>(inputs);
}

bool MultiScaleDeformableAttention::has_evaluate() const {
  const auto value = get_input_element_type(0);
  return value == ov::element::f32 || value == ov::element::f16 || value == ov::element::bf16;
}

bool MultiScaleDeformableAttention::evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const {
  const ov::Tensor &value = inputs[0], &locations = inputs[3], &weights = inputs[4];
  const ov::Shape& v = value.get_shape();
  const ov::Shape& loc = locations.get_shape();
  OPENVINO_ASSERT(v.size() == 4, "detrx.MultiScaleDeformableAttention: value must be [N, S, M, D], got ", v);
  const std::vector<int64_t> shapes = to_int64(inputs[1], "spatial_shapes");
  const std::vector<int64_t> starts = to_int64(inputs[2], "level_start_index");
  const int64_t levels = static_cast<int64_t>(starts.size());
  const ov::Shape expected_shapes{static_cast<size_t>(levels), 2};
  OPENVINO_ASSERT(inputs[1].get_shape() == expected_shapes,
                  "detrx.MultiScaleDeformableAttention: spatial_shapes must be [L, 2] for the L = ", levels,
                  " levels of level_start_index, got ", inputs[1].get_shape());
  MSDeformAttnSizes sz{static_cast<int64_t>(v[0]), static_cast<int64_t>(v[1]), static_cast<int64_t>(v[2]),
                       static_cast<int64_t>(v[3]), 0, levels, 0};
  OPENVINO_ASSERT(loc.size() == 6 && loc[5] == 2,
                  "detrx.MultiScaleDeformableAttention: sampling_locations must be [N, Lq, M, L, P, 2], got ", loc);
  sz.queries = static_cast<int64_t>(loc[1]);
  sz.points = static_cast<int64_t>(loc[4]);
  const ov::Shape expected{v[0], loc[1], v[2], static_cast<size_t>(levels), loc[4], 2};
  OPENVINO_ASSERT(loc == expected, "detrx.MultiScaleDeformableAttention: sampling_locations must be [N, Lq, M, L, P, 2] = ",
                  expected, " (N, M from value, L from spatial_shapes), got ", loc);
  const ov::Shape expected_weights(expected.begin(), expected.end() - 1);
  OPENVINO_ASSERT(weights.get_shape() == expected_weights, "detrx.MultiScaleDeformableAttention: attention_weights "
                  "must be [N, Lq, M, L, P] = ", expected_weights, ", got ", weights.get_shape());
  const std::string layout = level_layout_error(shapes.data(), starts.data(), levels, sz.values);
  OPENVINO_ASSERT(layout.empty(), "detrx.MultiScaleDeformableAttention: ", layout);
  OPENVINO_ASSERT(sz.values < kMaxCpuValueRows, "detrx.MultiScaleDeformableAttention: value must have S < 2^31 rows, "
                  "got S = ", sz.values);
  const OvElement value_type = element_of(value.get_element_type(), "value");
  const OvElement location_type = element_of(locations.get_element_type(), "sampling_locations");
  OPENVINO_ASSERT(location_type == value_type || (value_type != OvElement::f32 && location_type == OvElement::f32),
                  "detrx.MultiScaleDeformableAttention: sampling_locations must have value's type ",
                  value.get_element_type(), " (or f32 with a 16-bit value), got ", locations.get_element_type());
  OPENVINO_ASSERT(weights.get_element_type() == locations.get_element_type(), "detrx.MultiScaleDeformableAttention: "
                  "attention_weights must have sampling_locations' type ", locations.get_element_type(), ", got ",
                  weights.get_element_type());

  ov::Tensor& output = outputs[0];
  output.set_shape(ov::Shape{v[0], loc[1], v[2] * v[3]});
  if (output.get_size() == 0) return true;
  forward_copy()({sz, value_type, location_type, value.data(), shapes.data(), starts.data(), locations.data(),
                  weights.data(), output.data()});
  return true;
}

}  // namespace detrx
