// The OpenVINO extension library of detrx (core.add_extension(detrx.openvino.library_path())):
// the operation detrx.MultiScaleDeformableAttention, and the conversions that map detrx's MSDA onto it
// when OpenVINO reads a model:
// - ONNX: a node MultiScaleDeformableAttention of domain "detrx" (python -m detrx.export --runtime-op);
// - PyTorch (openvino.convert_model of a module that calls torch.ops.detrx.ms_deform_attn): the op as
//   TorchScript names it (detrx::ms_deform_attn) and as torch.export names it
//   (detrx.ms_deform_attn.default); its optional host level sizes are not needed here.
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/frontend/extension/conversion.hpp>
#include <openvino/frontend/node_context.hpp>
#include <openvino/frontend/onnx/extension/conversion.hpp>
#include <openvino/frontend/pytorch/extension/conversion.hpp>

#include "openvino/ms_deform_attn_op.h"

namespace {

// The first five inputs (value, spatial_shapes, level_start_index, sampling_locations,
// attention_weights) become the operation's.
ov::OutputVector convert_ms_deform_attn(const ov::frontend::NodeContext& node) {
  ov::OutputVector inputs;
  for (int i = 0; i < 5; ++i) inputs.push_back(node.get_input(i));
  return {std::make_shared<detrx::MultiScaleDeformableAttention>(inputs)->output(0)};
}

}  // namespace

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<detrx::MultiScaleDeformableAttention>>(),
    std::make_shared<ov::frontend::onnx::ConversionExtension>("MultiScaleDeformableAttention", "detrx",
                                                              convert_ms_deform_attn),
    std::make_shared<ov::frontend::pytorch::ConversionExtension>("detrx::ms_deform_attn", convert_ms_deform_attn),
    std::make_shared<ov::frontend::pytorch::ConversionExtension>("detrx.ms_deform_attn.default",
                                                                 convert_ms_deform_attn),
}));
