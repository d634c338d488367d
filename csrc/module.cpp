// The Python module `detrx._C`: importing it loads this library, which registers the operators
// (see detrx.cpp). It carries a description of how it was built, and the choice of CPU level
// (cpu_levels.h): made here, at import, so that a bad DETRX_CPU_CAPABILITY fails the import with
// a clear message rather than the first op call.
#include <Python.h>

#include <c10/util/Exception.h>

#include <exception>
#include <string>
#include <vector>

#include "cpu_levels.h"

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

namespace {

// Runs body() and turns a C++ error into a Python ValueError (nullptr returned).
template <typename Body>
PyObject* with_value_error(const Body& body) {
  try {
    return body();
  } catch (const c10::Error& error) {
    PyErr_SetString(PyExc_ValueError, error.what_without_backtrace());
  } catch (const std::exception& error) {
    PyErr_SetString(PyExc_ValueError, error.what());
  }
  return nullptr;
}

PyObject* to_tuple(const std::vector<std::string>& names) {
  PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(names.size()));
  if (tuple == nullptr) return nullptr;
  for (size_t i = 0; i < names.size(); ++i) {
    PyObject* name = PyUnicode_FromString(names[i].c_str());
    if (name == nullptr) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, static_cast<Py_ssize_t>(i), name);
  }
  return tuple;
}

PyObject* cpu_levels(PyObject*, PyObject*) { return to_tuple(detrx::compiled_cpu_levels()); }

PyObject* supported_cpu_levels(PyObject*, PyObject*) { return to_tuple(detrx::supported_cpu_levels()); }

PyObject* cpu_level(PyObject*, PyObject*) {
  return with_value_error([] {
    return PyUnicode_FromString(detrx::compiled_cpu_levels()[detrx::active_cpu_level()].c_str());
  });
}

PyObject* set_cpu_level(PyObject*, PyObject* name) {
  const char* text = PyUnicode_AsUTF8(name);
  if (text == nullptr) return nullptr;
  return with_value_error([text] {
    detrx::set_cpu_level(text);
    Py_RETURN_NONE;
  });
}

PyMethodDef methods[] = {
    {"cpu_levels", cpu_levels, METH_NOARGS, "The CPU levels the kernels were compiled for, lowest first."},
    {"supported_cpu_levels", supported_cpu_levels, METH_NOARGS, "The compiled CPU levels this CPU runs."},
    {"cpu_level", cpu_level, METH_NOARGS, "The CPU level the kernels use."},
    {"_set_cpu_level", set_cpu_level, METH_O, "Switch the CPU kernels to another level (tests, benchmarks)."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "detrx compiled operators", -1, methods};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  if (PyModule_AddStringConstant(module, "TORCH_VERSION", DETRX_TORCH_VERSION) < 0 ||
      PyModule_AddStringConstant(module, "CUDA_ARCHS", DETRX_CUDA_ARCHS) < 0 ||
      PyModule_AddStringConstant(module, "CPU_FLAGS", DETRX_CPU_FLAGS) < 0 ||
      PyModule_AddIntConstant(module, "WITH_CUDA", kWithCuda) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  PyObject* level = cpu_level(nullptr, nullptr);  // choose the level now (DETRX_CPU_CAPABILITY)
  if (level == nullptr) {
    Py_DECREF(module);
    return nullptr;
  }
  Py_DECREF(level);
  return module;
}
