// The Python module deeplab_fast._C. It holds no Python functions: importing it loads the shared
// library, whose static initializers register the ops (TORCH_LIBRARY) with the dispatcher. Keeping
// pybind11 out of the build saves minutes of compile time.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "deeplab_fast compiled kernels", -1,
                                          nullptr};
  return PyModule_Create(&module_def);
}
}
