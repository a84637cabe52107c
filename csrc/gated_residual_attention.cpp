// Operator schema of mmfuse::gated_residual_attention and the Python module mmfuse._C.
//
// Kernels register per backend with TORCH_LIBRARY_IMPL in cpu/ and cuda/; the fake (meta)
// implementation and autograd formula are registered from Python (mmfuse/ops/attention.py).
#include <Python.h>
#include <torch/library.h>

#include <cmath>
#include <sstream>

#include "gated_residual_attention.h"

namespace mmfuse {

GraMode parse_gra_mode(std::string_view mode) {
  if (mode == "none") return GraMode::None;
  if (mode == "residual") return GraMode::Residual;
  if (mode == "gated") return GraMode::Gated;
  TORCH_CHECK_VALUE(false, "mode: expected one of 'none', 'residual', 'gated', got '", std::string(mode), "'");
}

namespace {

std::string shape_str(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

void check_same_device(const at::Tensor& t, const at::Tensor& q, const char* name) {
  TORCH_CHECK_VALUE(t.device() == q.device(), name, ": expected device ", q.device(), " (the device of q), got ",
                    t.device());
}

}  // namespace

void check_gra_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const std::optional<at::Tensor>& prev, const std::optional<at::Tensor>& key_mask,
                      const std::optional<at::Tensor>& gate_weight,
                      const std::optional<at::Tensor>& gate_bias, GraMode mode, double scale) {
  TORCH_CHECK_VALUE(q.dim() == 4, "q: expected a 4-D tensor [B, H, Lq, D], got shape ", shape_str(q));
  TORCH_CHECK_VALUE(at::isFloatingType(q.scalar_type()), "q: expected a floating-point tensor, got ",
                    q.scalar_type());
  const auto B = q.size(0), H = q.size(1), D = q.size(3);
  TORCH_CHECK_VALUE(k.dim() == 4 && k.size(0) == B && k.size(1) == H && k.size(3) == D,
                    "k: expected shape [B=", B, ", H=", H, ", Lk, D=", D, "] to match q, got ", shape_str(k));
  const auto Lq = q.size(2), Lk = k.size(2);
  TORCH_CHECK_VALUE(v.dim() == 4 && v.size(0) == B && v.size(1) == H && v.size(2) == Lk,
                    "v: expected shape [B=", B, ", H=", H, ", Lk=", Lk, ", Dv], got ", shape_str(v));
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{k, "k"}, {v, "v"}}) {
    TORCH_CHECK_VALUE(t.scalar_type() == q.scalar_type(), name, ": expected dtype ", q.scalar_type(),
                      " (the dtype of q), got ", t.scalar_type());
    check_same_device(t, q, name);
  }
  if (prev.has_value() && prev->defined()) {
    const auto& p = *prev;
    TORCH_CHECK_VALUE(p.dim() == 4 && p.size(0) == B && p.size(1) == H && p.size(2) == Lq && p.size(3) == Lk,
                      "prev: expected shape [", B, ", ", H, ", ", Lq, ", ", Lk, "] ([B, H, Lq, Lk]), got ",
                      shape_str(p));
    TORCH_CHECK_VALUE(p.scalar_type() == q.scalar_type(), "prev: expected dtype ", q.scalar_type(),
                      " (the dtype of q), got ", p.scalar_type());
    check_same_device(p, q, "prev");
  }
  if (key_mask.has_value() && key_mask->defined()) {
    const auto& m = *key_mask;
    TORCH_CHECK_VALUE(m.scalar_type() == at::kBool, "key_mask: expected a bool tensor (True = key takes part), got ",
                      m.scalar_type());
    TORCH_CHECK_VALUE(m.dim() == 2 && m.size(0) == B && m.size(1) == Lk, "key_mask: expected shape [B=", B,
                      ", Lk=", Lk, "], got ", shape_str(m));
    check_same_device(m, q, "key_mask");
  }
  if (mode == GraMode::Gated) {
    for (const auto& [t, name] :
         {std::pair<const std::optional<at::Tensor>&, const char*>{gate_weight, "gate_weight"}, {gate_bias, "gate_bias"}}) {
      TORCH_CHECK_VALUE(t.has_value() && t->defined(), name, ": required for mode='gated' (a [H] tensor), got None");
      TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == H, name, ": expected shape [H=", H, "], got ",
                        shape_str(*t));
      TORCH_CHECK_VALUE(at::isFloatingType(t->scalar_type()), name, ": expected a floating-point tensor, got ",
                        t->scalar_type());
      check_same_device(*t, q, name);
    }
  }
  TORCH_CHECK_VALUE(std::isfinite(scale), "scale: expected a finite number, got ", scale);
}

}  // namespace mmfuse

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
