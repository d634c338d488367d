"""Build detrx's compiled operators.

The CPU kernels are always built. The CUDA kernels are built when torch is a CUDA build, a CUDA
toolkit is found and a GPU is visible, or unconditionally with FORCE_CUDA=1 (TORCH_CUDA_ARCH_LIST
then picks the architectures).

CPU levels. The CPU kernel files (csrc/<op>/<op>_cpu.cpp) are compiled once per instruction-set
level: on x86-64 for the baseline ("default"), for AVX2 + FMA ("avx2") and for AVX-512
("avx512"); on other architectures once, with no -m flags. Each copy gets -DDETRX_CPU_LEVEL=<level>
and puts its entry points in the namespace detrx::cpu_<level>; csrc/cpu_levels.cpp picks the best
level the running CPU supports at import (DETRX_CPU_CAPABILITY=default|avx2|avx512 forces one),
and csrc/<op>/<op>_cpu_dispatch.cpp registers the op and calls that copy. Everything outside the
copies is compiled for the baseline, so the library loads and chooses on any x86-64 CPU.
DETRX_NATIVE=1 builds one copy, and everything else, with -march=native instead (the fastest
kernels for the building machine, which may not run on another).

OpenVINO. When the openvino package is importable at build time (it is a build requirement, so it is
in pip's build environment) and DETRX_OPENVINO is not 0, a second library is built:
detrx/openvino/libdetrx_openvino.so, OpenVINO's extension with the operation
detrx.MultiScaleDeformableAttention (csrc/openvino/). It compiles the same kernel header as the torch
op, in its own per-level copies, and links OpenVINO's runtime and TBB only, never torch: a deployed
model loads it in a process without PyTorch.

How the per-level flags are applied: setuptools compiles all sources of an Extension with the same
flags, so the copies are not in `sources`. BuildExtensionWithCpuLevels.build_extension compiles
them first through the same compiler object (torch's ninja wrapper, with all of torch's flags),
once per level into its own folder under build_temp with the level's extra flags, and adds the
objects to the link as extra_objects.

Why the copies cannot collide: inline functions and template instantiations (from ATen, the
standard library or detrx's own headers) are normally weak symbols that the linker merges across
objects, so a copy compiled with AVX-512 instructions could end up called from the baseline code.
The copies are compiled with -fno-weak, which makes GCC emit them as local symbols of their
object instead; after compiling, every copy is checked with `nm`: it may define no global symbol
outside detrx::cpu_<level> and must have no static initialiser (code that would run at load time,
before the level is chosen). The build stops if a check fails.
"""
import glob
import os
import platform
import shutil
import subprocess
import warnings

import torch
from setuptools import Extension, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# Extra compiler flags of each CPU level's copy of the kernels (cpu_levels.h lists the same levels).
X86_LEVEL_FLAGS = {
    "default": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
}
NATIVE_FLAGS = ["-march=native"] if IS_X86_64 else ["-mcpu=native"]


def _env_flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def _cuda_toolkit_home():
    """The CUDA toolkit torch will compile with, or None if it has no cuda_runtime.h."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or cpp_extension.CUDA_HOME
    if home and os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
        return home
    return None


def _build_cuda():
    if torch.version.cuda is None:
        if _env_flag("FORCE_CUDA"):
            raise RuntimeError("FORCE_CUDA=1 but this torch is a CPU-only build; install a CUDA build of torch")
        return False
    home = _cuda_toolkit_home()
    if home is None:
        if _env_flag("FORCE_CUDA"):
            raise RuntimeError(
                "FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the toolkit root "
                "(the folder whose include/ holds cuda_runtime.h, e.g. /usr/local/cuda)")
        return False
    cpp_extension.CUDA_HOME = home  # the toolkit we checked, not torch's guess from `which nvcc`
    return _env_flag("FORCE_CUDA") or torch.cuda.is_available()


def _cpu_levels():
    """{level: extra flags} of the kernel copies, and the macro telling cpu_levels.h which they are."""
    if "DETRX_PORTABLE" in os.environ:
        warnings.warn("DETRX_PORTABLE is no longer used: the default build runs on any CPU of its "
                      "architecture (DETRX_NATIVE=1 builds for this machine only)")
    if _env_flag("DETRX_NATIVE"):
        return {"native": NATIVE_FLAGS}, "DETRX_CPU_LEVELS_NATIVE"
    if IS_X86_64:
        return dict(X86_LEVEL_FLAGS), "DETRX_CPU_LEVELS_X86"
    return {"default": []}, "DETRX_CPU_LEVELS_PLAIN"


def _static_initialisers(objdump, path):
    """{function: [mnemonics]} of the static initialisers (_GLOBAL__sub_I_*) of an object file."""
    listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", path], check=True, capture_output=True, text=True)
    functions, current = {}, None
    for line in listing.stdout.splitlines():
        if line.endswith(">:"):
            name = line.split("<", 1)[1][:-2]
            current = name if name.startswith("_GLOBAL__sub_I") else None
            if current:
                functions[current] = []
        elif current and "\t" in line:
            functions[current].append(line.split("\t")[1].split()[0])
    return functions


def _check_level_objects(objects, level):
    """Checks that a copy's code runs only through its entry points (see the module docstring)."""
    nm, objdump = shutil.which("nm"), shutil.which("objdump")
    if nm is None or objdump is None:
        warnings.warn("nm or objdump not found: the CPU-level copies of the kernels were not checked")
        return
    prefix = f"_ZN5detrx{len(level) + 4}cpu_{level}"  # the mangled namespace detrx::cpu_<level>
    for path in objects:
        listing = subprocess.run([nm, "-P", "--defined-only", path], check=True, capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            name, kind = line.split()[:2]
            if kind in "TWi" and not name.startswith(prefix):  # global code outside detrx::cpu_<level>
                raise RuntimeError(
                    f"{path} (the '{level}' copy of the CPU kernels) defines the global function {name}: code "
                    f"built with this level's flags could run outside its dispatch. Build with GCC (the copies "
                    f"rely on -fno-weak), or set DETRX_NATIVE=1.")
        # Static initialisers run at load time, before the level is chosen. The headers' ones
        # (e.g. <iostream>'s) are a call or two; with this file's flags every instruction beyond the
        # baseline is VEX/EVEX-encoded (its mnemonic starts with "v") or uses mask registers ("k").
        for function, mnemonics in _static_initialisers(objdump, path).items():
            wide = sorted({m for m in mnemonics if m.startswith(("v", "k"))})
            if wide:
                raise RuntimeError(f"{path}: the static initialiser {function} uses {wide}, which would run "
                                   f"before the CPU level is chosen")


def _isolation_flags(level):
    """-fno-weak keeps each copy's inline functions to itself (not needed for the one native copy).
    GCC then warns ("sorry: ... you'll wind up with multiple copies") about every inline variable of
    the headers, thousands of harmless duplicated constants, and no flag but -w silences that; the
    kernels' own warnings show in a DETRX_NATIVE=1 build."""
    return [] if level == "native" else ["-fno-weak", "-w"]


class BuildExtensionWithCpuLevels(cpp_extension.BuildExtension):
    """torch's BuildExtension, plus one compiled copy of the CPU kernel files per CPU level, and the
    OpenVINO library named as OpenVINO's extensions are (lib*.so), not as a Python module."""

    def get_ext_filename(self, ext_name):
        if ext_name.split(".")[-1] == OPENVINO_LIBRARY.split(".")[-1]:  # setuptools asks by full and by short name
            return os.path.join(*ext_name.split(".")) + ".so"
        return super().get_ext_filename(ext_name)

    def build_extension(self, ext):
        objects = []
        for level, flags in ext.cpu_levels.items():
            level_objects = self.compiler.compile(
                ext.cpu_level_sources,
                output_dir=os.path.join(self.build_temp, f"cpu_{level}"),
                macros=ext.define_macros + [("DETRX_CPU_LEVEL", level)],
                include_dirs=ext.include_dirs,
                extra_postargs={"cxx": ext.extra_compile_args["cxx"] + flags + _isolation_flags(level)})
            if level != "native":
                _check_level_objects(level_objects, level)
            objects += level_objects
        ext.extra_objects = ext.base_extra_objects + objects
        super().build_extension(ext)


OPENVINO_LIBRARY = "detrx.openvino.libdetrx_openvino"


def _openvino_extension(level_flags, levels_macro):
    """OpenVINO's extension library, when openvino (with its C++ headers) is importable; else None."""
    if os.environ.get("DETRX_OPENVINO", "1").lower() in ("0", "false", "no"):
        return None
    try:
        import openvino
    except ImportError:
        return None
    root = os.path.dirname(openvino.__file__)
    include, libs = os.path.join(root, "include"), os.path.join(root, "libs")
    runtime = sorted(glob.glob(os.path.join(libs, "libopenvino.so.*")))
    tbb = sorted(glob.glob(os.path.join(libs, "libtbb.so.*")))
    if not os.path.exists(os.path.join(include, "openvino", "openvino.hpp")) or not runtime or not tbb:
        warnings.warn(f"openvino at {root} has no C++ headers or libraries: its extension is not built")
        return None
    extension = Extension(
        OPENVINO_LIBRARY, ["csrc/openvino/extension.cpp", "csrc/openvino/ms_deform_attn_op.cpp"],
        include_dirs=[os.path.join(ROOT, "csrc"), include], define_macros=[(levels_macro, None)],
        extra_compile_args={"cxx": ["-O3", "-std=c++17"]}, language="c++",
        extra_link_args=[f"-L{libs}", f"-l:{os.path.basename(runtime[0])}", f"-l:{os.path.basename(tbb[0])}",
                         f"-Wl,-rpath,{libs}"])
    extension.cpu_levels = level_flags
    extension.cpu_level_sources = ["csrc/openvino/ms_deform_attn_ov_cpu.cpp"]
    extension.base_extra_objects = []
    return extension


def _extension():
    level_flags, levels_macro = _cpu_levels()
    sources = ["csrc/detrx.cpp", "csrc/module.cpp", "csrc/cpu_levels.cpp"] + sorted(glob.glob("csrc/*/*_cpu_dispatch.cpp"))
    define_macros = [(levels_macro, None)]
    cxx_flags = ["-O3", "-fopenmp"] + (NATIVE_FLAGS if "native" in level_flags else [])
    extra = {"cxx": cxx_flags}
    kwargs = dict(extra_link_args=["-fopenmp"], include_dirs=[os.path.join(ROOT, "csrc")])
    if _build_cuda():
        sources += sorted(glob.glob("csrc/*/*_cuda.cu"))
        define_macros.append(("DETRX_WITH_CUDA", None))
        extra["nvcc"] = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        build = cpp_extension.CUDAExtension  # kernels include c10/cuda headers only: no cusparse.h needed
    else:
        build = cpp_extension.CppExtension
    arch_list = ""
    if build is cpp_extension.CUDAExtension:
        arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST") or "torch default (visible GPUs)"
    level_description = "; ".join(f"{level}: {' '.join(flags) or 'baseline'}" for level, flags in level_flags.items())
    define_macros += [
        ("DETRX_TORCH_VERSION", f'"{torch.__version__}"'),
        ("DETRX_CUDA_ARCHS", f'"{arch_list}"'),
        ("DETRX_CPU_FLAGS", f'"{" ".join(cxx_flags)} ({level_description})"'),
    ]
    extension = build("detrx._C", sources, define_macros=define_macros, extra_compile_args=extra, **kwargs)
    extension.cpu_levels = level_flags
    extension.cpu_level_sources = sorted(path for path in glob.glob("csrc/*/*_cpu.cpp") if "openvino" not in path)
    extension.base_extra_objects = list(extension.extra_objects)
    return extension


def _extensions():
    torch_extension = _extension()
    openvino_extension = _openvino_extension(*_cpu_levels())
    return [torch_extension] + ([openvino_extension] if openvino_extension else [])


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtensionWithCpuLevels.with_options(use_ninja=True)},
)
