// The CPU instruction-set levels the *_cpu.cpp kernels are compiled for, and the one in use.
//
// setup.py compiles every csrc/<op>/<op>_cpu.cpp once per level, each copy with its level's
// compiler flags and -DDETRX_CPU_LEVEL=<level>, and puts the copy's entry points in the namespace
// detrx::cpu_<level>. Everything else (the op registration, the checks of this file) is compiled
// for the baseline of the target architecture, so nothing built for a wider instruction set runs
// before active_cpu_level() has chosen a level this CPU has.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#define DETRX_PASTE_(a, b) a##b
#define DETRX_PASTE(a, b) DETRX_PASTE_(a, b)

// DETRX_FOR_EACH_CPU_LEVEL(X) expands X(level) for every compiled level, lowest first.
#if defined(DETRX_CPU_LEVELS_NATIVE)  // DETRX_NATIVE=1: one copy for the building machine
#define DETRX_FOR_EACH_CPU_LEVEL(X) X(native)
#elif defined(DETRX_CPU_LEVELS_X86)  // x86-64: baseline, AVX2 + FMA, AVX-512
#define DETRX_FOR_EACH_CPU_LEVEL(X) X(default) X(avx2) X(avx512)
#else  // other architectures: the plain build
#define DETRX_FOR_EACH_CPU_LEVEL(X) X(default)
#endif

// Inside a per-level copy: the namespace of its entry points.
#ifdef DETRX_CPU_LEVEL
#define DETRX_CPU_NAMESPACE DETRX_PASTE(cpu_, DETRX_CPU_LEVEL)
#endif

namespace detrx {

// The compiled levels, lowest first ("default", "avx2", "avx512"; or "native").
const std::vector<std::string>& compiled_cpu_levels();

// Index into compiled_cpu_levels() of the level the kernels use. Chosen on first use: the highest
// level this CPU supports, or the one DETRX_CPU_CAPABILITY names (a ValueError if this build
// lacks it or this CPU cannot run it).
int active_cpu_level();

// Switches to the named level (same checks as DETRX_CPU_CAPABILITY); for tests and benchmarks.
void set_cpu_level(const std::string& name);

// Levels of compiled_cpu_levels() this CPU can run.
std::vector<std::string> supported_cpu_levels();

// Calls table[active_cpu_level()], where table lists one copy of a kernel per compiled level.
template <typename Fn, size_t N, typename... Args>
decltype(auto) call_cpu_level(Fn (&table)[N], Args&&... args) {
  return table[active_cpu_level()](std::forward<Args>(args)...);
}

}  // namespace detrx
