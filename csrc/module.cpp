// The Python module `detrx._C`: importing it loads this library, which registers the operators
// (see detrx.cpp). It carries no functions, only a description of how it was built.
#include <Python.h>

#ifndef DETRX_TORCH_VERSION
#define DETRX_TORCH_VERSION "unknown"
#endif
#ifndef DETRX_CUDA_ARCHS
#define DETRX_CUDA_ARCHS ""
#endif
#ifndef DETRX_CPU_FLAGS
#define DETRX_CPU_FLAGS ""
#endif

#ifdef DETRX_WITH_CUDA
static constexpr int kWithCuda = 1;
#else
static constexpr int kWithCuda = 0;
#endif

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "detrx compiled operators", -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  if (PyModule_AddStringConstant(module, "TORCH_VERSION", DETRX_TORCH_VERSION) < 0 ||
      PyModule_AddStringConstant(module, "CUDA_ARCHS", DETRX_CUDA_ARCHS) < 0 ||
      PyModule_AddStringConstant(module, "CPU_FLAGS", DETRX_CPU_FLAGS) < 0 ||
      PyModule_AddIntConstant(module, "WITH_CUDA", kWithCuda) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
