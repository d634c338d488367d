// Whether this CPU runs a CPU level's copy of the kernels (cpu_levels.h); free of ATen, so every
// front door (the torch extension, the OpenVINO extension) chooses its level the same way.
// Compiled with the baseline flags, like every file that runs before the choice is made.
#pragma once

#include <string>

namespace detrx {

// Whether this CPU (and its OS, which must save the wider registers) runs the level's instructions.
inline bool cpu_runs(const std::string& level) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (level == "avx2") {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }
  if (level == "avx512") {
    return cpu_runs("avx2") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
#endif
  return level == "default" || level == "native";  // native: built for this machine by its owner
}

}  // namespace detrx
