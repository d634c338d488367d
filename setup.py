"""Build detrx's compiled operators.

The CPU kernels are always built. The CUDA kernels are built when torch is a CUDA build, a CUDA
toolkit is found and a GPU is visible, or unconditionally with FORCE_CUDA=1 (TORCH_CUDA_ARCH_LIST
then picks the architectures). The CPU kernels are tuned for the building machine
(-march=native) unless DETRX_PORTABLE=1.
"""
import glob
import os
import platform

import torch
from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


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


def _cxx_flags():
    flags = ["-O3", "-fopenmp"]
    portable = _env_flag("DETRX_PORTABLE")
    if not portable and platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    elif not portable:
        flags.append("-mcpu=native")
    return flags


def _extension():
    sources = ["csrc/detrx.cpp", "csrc/module.cpp"] + sorted(glob.glob("csrc/*/*_cpu.cpp"))
    define_macros = []
    extra = {"cxx": _cxx_flags()}
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
    define_macros += [
        ("DETRX_TORCH_VERSION", f'"{torch.__version__}"'),
        ("DETRX_CUDA_ARCHS", f'"{arch_list}"'),
        ("DETRX_CPU_FLAGS", f'"{" ".join(extra["cxx"])}"'),
    ]
    return build("detrx._C", sources, define_macros=define_macros, extra_compile_args=extra, **kwargs)


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
