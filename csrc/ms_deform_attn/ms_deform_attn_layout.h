// The level layout check of ms_deform_attn, free of ATen: every front door (the torch op, the
// OpenVINO extension) runs it on host copies of spatial_shapes and level_start_index before a CPU
// kernel reads value through them.
#pragma once

#include <cstdint>
#include <string>

namespace detrx {

// "" when the L levels (H_l, W_l) = shapes[2l], shapes[2l + 1] start at starts[l] = the running sum
// of the areas and tile value's S rows exactly; otherwise what is wrong, naming the argument.
inline std::string level_layout_error(const int64_t* shapes, const int64_t* starts, int64_t levels, int64_t values) {
  int64_t total = 0;
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
    if (height < 0 || width < 0) {
      return "spatial_shapes must be non-negative, got (" + std::to_string(height) + ", " + std::to_string(width) +
             ") at level " + std::to_string(l);
    }
    if (starts[l] != total) {
      return "level_start_index must be the running sum of the level areas; level " + std::to_string(l) +
             " should start at " + std::to_string(total) + ", got " + std::to_string(starts[l]);
    }
    total += height * width;
  }
  if (total != values) {
    return "spatial_shapes areas sum to " + std::to_string(total) + " but value has S = " + std::to_string(values) +
           " rows (value must be [N, sum H*W, M, D])";
  }
  return "";
}

}  // namespace detrx
