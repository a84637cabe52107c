// Shared declarations of the fused gated residual attention operator.
//
// Contract: ../docs/op.md (mirrors shared/design/gated_residual_attention.md).
//   q [B,H,Lq,D], k [B,H,Lk,D], v [B,H,Lk,Dv], prev [B,H,Lq,Lk]?, key_mask [B,Lk] bool?,
//   gate_weight [H]?, gate_bias [H]?, mode in {"none","residual","gated"}, scale (finite; None in
//   the schema means 1/sqrt(D), resolved by the gra_*_entry adapters below).
//   returns out [B,H,Lq,Dv], scores [B,H,Lq,Lk] (dtype of q).
//
// The schema is defined once in gated_residual_attention.cpp (TORCH_LIBRARY); the CPU kernels
// live in cpu/, the CUDA kernels in cuda/ and register through TORCH_LIBRARY_IMPL.
#pragma once

#include <torch/types.h>

#include <cmath>
#include <optional>
#include <string_view>
#include <tuple>

namespace mmfuse {

enum class GraMode : int { None = 0, Residual = 1, Gated = 2 };

// Parses "none" | "residual" | "gated"; throws a c10::Error naming `mode` otherwise.
GraMode parse_gra_mode(std::string_view mode);

// Validates every argument against the contract (ranks, shapes, dtypes, devices, gate
// parameters in gated mode, finite scale). Throws c10::Error with a message naming the
// argument, the expected and the actual value. Shared by the CPU and CUDA entry points.
void check_gra_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const std::optional<at::Tensor>& prev, const std::optional<at::Tensor>& key_mask,
                      const std::optional<at::Tensor>& gate_weight,
                      const std::optional<at::Tensor>& gate_bias, GraMode mode, double scale);

// Forward: returns (out [B,H,Lq,Dv], scores [B,H,Lq,Lk]).
std::tuple<at::Tensor, at::Tensor> gra_forward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& prev,
    const std::optional<at::Tensor>& key_mask, const std::optional<at::Tensor>& gate_weight,
    const std::optional<at::Tensor>& gate_bias, c10::string_view mode, double scale);

// Backward: given grad_out [B,H,Lq,Dv] and grad_scores [B,H,Lq,Lk] (either may be all zeros)
// and the forward's `scores`, returns
//   (grad_q, grad_k, grad_v, grad_prev, grad_gate_weight, grad_gate_bias).
// grad_prev is [B,H,Lq,Lk] when prev was given, else an empty tensor; the gate gradients are
// [H] in gated mode with prev given, else empty tensors.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gra_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& grad_scores, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const std::optional<at::Tensor>& prev, const std::optional<at::Tensor>& key_mask,
    const std::optional<at::Tensor>& gate_weight, const std::optional<at::Tensor>& gate_bias,
    const at::Tensor& scores, c10::string_view mode, double scale);

// The instruction set the CPU kernels run with: "avx512" (512-bit matrix products), "avx2" or
// "default" (the baseline ISA) -- the widest the CPU has, capped by ATEN_CPU_CAPABILITY.
const char* gra_cpu_capability();

#ifdef MMFUSE_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> gra_forward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& prev,
    const std::optional<at::Tensor>& key_mask, const std::optional<at::Tensor>& gate_weight,
    const std::optional<at::Tensor>& gate_bias, c10::string_view mode, double scale);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gra_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& grad_scores, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const std::optional<at::Tensor>& prev, const std::optional<at::Tensor>& key_mask,
    const std::optional<at::Tensor>& gate_weight, const std::optional<at::Tensor>& gate_bias,
    const at::Tensor& scores, c10::string_view mode, double scale);
#endif

// The schema's `float? scale=None` resolved: 1/sqrt(D) when None (1 when D == 0, and for a q
// of the wrong rank, which check_gra_inputs rejects right after).
inline double resolve_gra_scale(const at::Tensor& q, std::optional<double> scale) {
  if (scale.has_value()) return *scale;
  const int64_t D = q.dim() == 4 ? q.size(3) : 0;
  return D > 0 ? 1.0 / std::sqrt(static_cast<double>(D)) : 1.0;
}

// The kernels' entry points take the resolved `double scale`; these adapters are what the
// backends register for the schema (`float? scale`), so the default lives in one place.
using GraForwardFn = std::tuple<at::Tensor, at::Tensor> (*)(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    c10::string_view, double);
using GraBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> (*)(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, const at::Tensor&, c10::string_view, double);

template <GraForwardFn Fn>
std::tuple<at::Tensor, at::Tensor> gra_forward_entry(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                     const std::optional<at::Tensor>& prev,
                                                     const std::optional<at::Tensor>& key_mask,
                                                     const std::optional<at::Tensor>& gate_weight,
                                                     const std::optional<at::Tensor>& gate_bias,
                                                     c10::string_view mode, std::optional<double> scale) {
  return Fn(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, resolve_gra_scale(q, scale));
}

template <GraBackwardFn Fn>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gra_backward_entry(
    const at::Tensor& grad_out, const at::Tensor& grad_scores, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const std::optional<at::Tensor>& prev, const std::optional<at::Tensor>& key_mask,
    const std::optional<at::Tensor>& gate_weight, const std::optional<at::Tensor>& gate_bias,
    const at::Tensor& scores, c10::string_view mode, std::optional<double> scale) {
  return Fn(grad_out, grad_scores, q, k, v, prev, key_mask, gate_weight, gate_bias, scores, mode,
            resolve_gra_scale(q, scale));
}

}  // namespace mmfuse
