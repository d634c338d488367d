// Which of the compiled CPU levels (cpu_levels.h) the kernels use: the best this CPU runs, or the
// one DETRX_CPU_CAPABILITY asks for. Compiled with the baseline flags, like every file that runs
// before the choice is made.
#include "cpu_levels.h"

#include "cpu_features.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>

namespace detrx {
namespace {

#define DETRX_LEVEL_NAME(level) #level,
const std::vector<std::string> kCompiledLevels = {DETRX_FOR_EACH_CPU_LEVEL(DETRX_LEVEL_NAME)};
#undef DETRX_LEVEL_NAME

std::string join(const std::vector<std::string>& names) {
  std::string joined;
  for (const auto& name : names) joined += (joined.empty() ? "" : ", ") + name;
  return joined;
}

int level_index(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  const auto found = std::find(kCompiledLevels.begin(), kCompiledLevels.end(), name);
  TORCH_CHECK_VALUE(found != kCompiledLevels.end(), "DETRX_CPU_CAPABILITY: detrx was built with the CPU levels [",
                    join(kCompiledLevels), "], got '", name, "'",
                    kCompiledLevels.size() == 1 && kCompiledLevels[0] == "native"
                        ? " (a DETRX_NATIVE=1 build has the building machine's level only)"
                        : "");
  TORCH_CHECK_VALUE(cpu_runs(name), "DETRX_CPU_CAPABILITY: this CPU cannot run the '", name,
                    "' kernels; it supports [", join(supported_cpu_levels()), "]");
  return static_cast<int>(found - kCompiledLevels.begin());
}

int default_level() {
  const char* requested = std::getenv("DETRX_CPU_CAPABILITY");
  if (requested != nullptr && *requested != '\0') return level_index(requested);
  int best = 0;
  for (size_t i = 0; i < kCompiledLevels.size(); ++i) {
    if (cpu_runs(kCompiledLevels[i])) best = static_cast<int>(i);
  }
  return best;
}

std::atomic<int> chosen_level{-1};

}  // namespace

const std::vector<std::string>& compiled_cpu_levels() { return kCompiledLevels; }

std::vector<std::string> supported_cpu_levels() {
  std::vector<std::string> supported;
  for (const auto& level : kCompiledLevels) {
    if (cpu_runs(level)) supported.push_back(level);
  }
  return supported;
}

int active_cpu_level() {
  int level = chosen_level.load(std::memory_order_relaxed);
  if (level < 0) {
    level = default_level();
    chosen_level.store(level, std::memory_order_relaxed);
  }
  return level;
}

void set_cpu_level(const std::string& name) { chosen_level.store(level_index(name), std::memory_order_relaxed); }

}  // namespace detrx
