// Operator schema of mmfuse::gated_residual_attention and the Python module mmfuse._C.
//
// Kernels register per backend with TORCH_LIBRARY_IMPL in cpu/ and cuda/; the fake (meta)
// implementation and the autograd kernel are registered from Python (mmfuse/ops/attention.py),
// when `import mmfuse` imports mmfuse.ops. check_gra_inputs' messages are repeated word for
// word by mmfuse/ops/validation.py (the fake implementation); tests/test_op_registration.py
// compares the two.
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

// Shapes and dtypes are printed as Python prints them ((2, 3), torch.float32), so that the
// fake implementation (mmfuse/ops/validation.py) raises exactly the same messages.
std::string shape_str(const at::Tensor& t) {
  std::ostringstream os;
  os << "(";
  for (int64_t i = 0; i < t.dim(); ++i) os << (i ? ", " : "") << t.size(i);
  os << (t.dim() == 1 ? ",)" : ")");
  return os.str();
}

std::string dtype_str(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kBool: return "torch.bool";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(t);
  }
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
  TORCH_CHECK_TYPE(at::isFloatingType(q.scalar_type()), "q: expected a floating-point tensor, got ",
                   dtype_str(q.scalar_type()));
  const auto B = q.size(0), H = q.size(1), D = q.size(3);
  TORCH_CHECK_VALUE(k.dim() == 4 && k.size(0) == B && k.size(1) == H && k.size(3) == D,
                    "k: expected shape [B=", B, ", H=", H, ", Lk, D=", D, "] to match q, got ", shape_str(k));
  const auto Lq = q.size(2), Lk = k.size(2);
  TORCH_CHECK_VALUE(v.dim() == 4 && v.size(0) == B && v.size(1) == H && v.size(2) == Lk,
                    "v: expected shape [B=", B, ", H=", H, ", Lk=", Lk, ", Dv], got ", shape_str(v));
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{k, "k"}, {v, "v"}}) {
    TORCH_CHECK_TYPE(t.scalar_type() == q.scalar_type(), name, ": expected dtype ", dtype_str(q.scalar_type()),
                     " (the dtype of q), got ", dtype_str(t.scalar_type()));
    check_same_device(t, q, name);
  }
  if (prev.has_value() && prev->defined()) {
    const auto& p = *prev;
    TORCH_CHECK_VALUE(p.dim() == 4 && p.size(0) == B && p.size(1) == H && p.size(2) == Lq && p.size(3) == Lk,
                      "prev: expected shape [", B, ", ", H, ", ", Lq, ", ", Lk, "] ([B, H, Lq, Lk]), got ",
                      shape_str(p));
    TORCH_CHECK_TYPE(p.scalar_type() == q.scalar_type(), "prev: expected dtype ", dtype_str(q.scalar_type()),
                     " (the dtype of q), got ", dtype_str(p.scalar_type()));
    check_same_device(p, q, "prev");
  }
  if (key_mask.has_value() && key_mask->defined()) {
    const auto& m = *key_mask;
    TORCH_CHECK_TYPE(m.scalar_type() == at::kBool, "key_mask: expected a bool tensor (True = key takes part), got ",
                     dtype_str(m.scalar_type()));
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
      TORCH_CHECK_TYPE(at::isFloatingType(t->scalar_type()), name, ": expected a floating-point tensor, got ",
                       dtype_str(t->scalar_type()));
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

static PyObject* mmfuse_cpu_capability(PyObject*, PyObject*) {
  return PyUnicode_FromString(mmfuse::gra_cpu_capability());
}

static PyMethodDef kMethods[] = {
    {"built_with_cuda", mmfuse_built_with_cuda, METH_NOARGS,
     "True when the CUDA kernels were compiled into this build."},
    {"cpu_capability", mmfuse_cpu_capability, METH_NOARGS,
     "The instruction set of the CPU kernels: 'avx512', 'avx2' or 'default'."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_C",
                                     "mmfuse native kernels (gated residual attention)", -1, kMethods};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&kModule); }

TORCH_LIBRARY(mmfuse, m) {
  // scale=None means 1/sqrt(D); the backends register gra_*_entry (gated_residual_attention.h),
  // which resolve it before calling the kernels.
  m.def(
      "gated_residual_attention(Tensor q, Tensor k, Tensor v, Tensor? prev=None, Tensor? key_mask=None, "
      "Tensor? gate_weight=None, Tensor? gate_bias=None, str mode=\"gated\", float? scale=None) -> (Tensor, Tensor)");
  m.def(
      "gated_residual_attention_backward(Tensor grad_out, Tensor grad_scores, Tensor q, Tensor k, "
      "Tensor v, Tensor? prev, Tensor? key_mask, Tensor? gate_weight, Tensor? gate_bias, "
      "Tensor scores, str mode, float? scale=None) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
