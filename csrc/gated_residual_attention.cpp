// Operator schema of mmfuse::gated_residual_attention and the Python module mmfuse._C.
//
// Kernels register per backend with TORCH_LIBRARY_IMPL in cpu/ and cuda/; the fake (meta)
// implementation and autograd formula are registered from Python (mmfuse/ops/_registration.py).
#include <Python.h>
#include <torch/library.h>

#include "gated_residual_attention.h"

// A plain CPython module: importing mmfuse._C loads this shared library, which runs the
// TORCH_LIBRARY static initialisers below.
static PyObject* mmfuse_built_with_cuda(PyObject*, PyObject*) {
#ifdef MMFUSE_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

static PyMethodDef kMethods[] = {
    {"built_with_cuda", mmfuse_built_with_cuda, METH_NOARGS,
     "True when the CUDA kernels were compiled into this build."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_C",
                                     "mmfuse native kernels (gated residual attention)", -1, kMethods};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&kModule); }

TORCH_LIBRARY(mmfuse, m) {
  m.def(
      "gated_residual_attention(Tensor q, Tensor k, Tensor v, Tensor? prev, Tensor? key_mask, "
      "Tensor? gate_weight, Tensor? gate_bias, str mode, float scale) -> (Tensor, Tensor)");
  m.def(
      "gated_residual_attention_backward(Tensor grad_out, Tensor grad_scores, Tensor q, Tensor k, "
      "Tensor v, Tensor? prev, Tensor? key_mask, Tensor? gate_weight, Tensor? gate_bias, "
      "Tensor scores, str mode, float scale) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
