// Host side of the CUDA kernels: argument checks, layouts, launch planning and the GEMMs of the
// backward. Written once against a Backend policy, so that the same code runs with the real
// CUDA launches (gated_residual_attention.cu) and with the CPU emulator of the tests
// (emulation/gra_emulated.cpp). A Backend provides:
//   static void check_device(const at::Tensor& q);
//   static int64_t max_smem_per_block(const at::Tensor& q);   // opt-in limit of one block
//   static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options);
//   template <typename T> static void launch_forward(const GraForwardParams<T>&, int64_t grid);
//   template <typename T> static void launch_backward(const GraBackwardParams<T>&, int64_t grid);
//   static bool use_tensor_cores(at::ScalarType dtype);       // float16 / bfloat16 on tensor cores
//   template <typename T> static void launch_forward_tc(const GraForwardParams<T>&, int64_t grid);
//   template <typename T> static void launch_backward_tc(const GraBackwardParams<T>&, int64_t grid);
// float16 / bfloat16 run the tensor-core kernels (gra_tc_kernels.cuh); float32 the CUDA-core
// kernels (gra_kernels.cuh) in exact float32 (no TF32).
#pragma once

#include <ATen/ATen.h>

#include <climits>
#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>

#include "../gated_residual_attention.h"
#include "gra_kernels.cuh"
#include "gra_tc_kernels.cuh"

namespace mmfuse {
namespace gra {

inline bool defined(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

inline int effective_mode(GraMode mode, bool has_prev) {
  if (!has_prev || mode == GraMode::None) return kPlain;
  return mode == GraMode::Residual ? kResidual : kGated;
}

// 16-byte vector loads need an aligned base and rows whose length is a multiple of the vector.
inline bool vec_loads_ok(const at::Tensor& t, int64_t row_len) {
  const int64_t vec = 16 / static_cast<int64_t>(t.element_size());
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && row_len % vec == 0;
}

// Score rows in shared memory when they fit the device's per-block limit, else in a float32
// global workspace; errors (naming the sizes) when even the rest does not fit.
inline GraLayout choose_layout(int rows, int64_t D, int64_t Dv_rows, int64_t Lk, int num_row_bufs, int64_t smem_limit) {
  const GraLayout on_chip = plan_layout(rows, D, Dv_rows, Lk, num_row_bufs, /*rows_in_smem=*/true);
  if (on_chip.smem_bytes <= smem_limit) return on_chip;
  const GraLayout spilled = plan_layout(rows, D, Dv_rows, Lk, num_row_bufs, /*rows_in_smem=*/false);
  TORCH_CHECK(spilled.smem_bytes <= smem_limit, "gated_residual_attention (CUDA): head dims D=", D,
              (Dv_rows > 0 ? ", Dv=" : ""), (Dv_rows > 0 ? std::to_string(Dv_rows) : std::string()), " need ",
              spilled.smem_bytes, " bytes of shared memory per block, this GPU allows ", smem_limit,
              "; use impl='reference' for such head dims");
  return spilled;
}

// The tensor-core kernels' layout: score rows on chip when they fit, else in the workspace.
inline GraLayout choose_tc_layout(int64_t D, int64_t Dv, int64_t Lk, int num_row_bufs, bool forward,
                                  int64_t smem_limit) {
  const GraLayout on_chip = plan_tc_layout(D, Dv, Lk, num_row_bufs, forward, /*rows_in_smem=*/true);
  if (on_chip.smem_bytes <= smem_limit) return on_chip;
  const GraLayout spilled = plan_tc_layout(D, Dv, Lk, num_row_bufs, forward, /*rows_in_smem=*/false);
  TORCH_CHECK(spilled.smem_bytes <= smem_limit, "gated_residual_attention (CUDA): head dims D=", D, ", Dv=", Dv,
              " need ", spilled.smem_bytes, " bytes of shared memory per block, this GPU allows ", smem_limit,
              "; use impl='reference' for such head dims");
  return spilled;
}

template <typename scalar_t>
constexpr bool is_16bit() {
  return std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>;
}

struct Problem {
  int64_t B, H, Lq, Lk, D, Dv;
  int mode;
  bool has_prev, has_mask;
  int64_t row_blocks(int rows) const { return (Lq + rows - 1) / rows; }
};

template <class Backend>
Problem prepare(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& prev,
                const std::optional<at::Tensor>& key_mask, const std::optional<at::Tensor>& gate_weight,
                const std::optional<at::Tensor>& gate_bias, c10::string_view mode_str, double scale) {
  const GraMode mode = parse_gra_mode(std::string_view(mode_str.data(), mode_str.size()));
  check_gra_inputs(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale);
  Backend::check_device(q);
  const auto dt = q.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16,
                   "q: the CUDA kernel of gated_residual_attention supports float16, bfloat16 and float32, got ", dt);
  Problem pr{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3), 0, defined(prev), defined(key_mask)};
  pr.mode = effective_mode(mode, pr.has_prev);
  for (const auto& [n, name] : {std::pair<int64_t, const char*>{pr.Lq, "Lq"}, {pr.Lk, "Lk"}, {pr.D, "D"}, {pr.Dv, "Dv"}})
    TORCH_CHECK_VALUE(n <= INT_MAX - kTileKeys, "gated_residual_attention (CUDA): ", name, "=", n, " is too large");
  TORCH_CHECK_VALUE(pr.B * pr.H <= INT_MAX, "gated_residual_attention (CUDA): B*H=", pr.B * pr.H, " is too large");
  return pr;
}

// Contiguous inputs (kept alive for the launch) and the kernel's view of them.
template <typename scalar_t>
struct PreparedInputs {
  at::Tensor q, k, v, prev, mask, gw, gb, rows_ws;
  GraInputs<scalar_t> in{};
};

template <class Backend, typename scalar_t>
PreparedInputs<scalar_t> make_inputs(const Problem& pr, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const std::optional<at::Tensor>& prev, const std::optional<at::Tensor>& key_mask,
                                     const std::optional<at::Tensor>& gate_weight,
                                     const std::optional<at::Tensor>& gate_bias, double scale,
                                     const GraLayout& layout) {
  PreparedInputs<scalar_t> t;
  t.q = q.contiguous();
  t.k = k.contiguous();
  t.v = v.contiguous();
  if (pr.mode != kPlain) t.prev = prev->contiguous();
  if (pr.has_mask) t.mask = key_mask->contiguous();
  if (pr.mode == kGated) {  // autocast may hand float32 gate params with bf16 q: read as float
    t.gw = gate_weight->to(at::kFloat).contiguous();
    t.gb = gate_bias->to(at::kFloat).contiguous();
  }
  const int64_t grid = pr.B * pr.H * pr.row_blocks(layout.rows);
  if (!layout.rows_in_smem)
    t.rows_ws = Backend::empty({grid * layout.row_floats_per_block()}, q.options().dtype(at::kFloat));
  GraInputs<scalar_t>& in = t.in;
  in.q = t.q.template data_ptr<scalar_t>();
  in.k = t.k.template data_ptr<scalar_t>();
  in.v = t.v.template data_ptr<scalar_t>();
  in.prev = t.prev.defined() ? t.prev.template data_ptr<scalar_t>() : nullptr;
  in.key_mask = t.mask.defined() ? t.mask.template data_ptr<bool>() : nullptr;
  in.gate_weight = t.gw.defined() ? t.gw.template data_ptr<float>() : nullptr;
  in.gate_bias = t.gb.defined() ? t.gb.template data_ptr<float>() : nullptr;
  in.rows_ws = t.rows_ws.defined() ? t.rows_ws.template data_ptr<float>() : nullptr;
  in.H = static_cast<int>(pr.H);
  in.Lq = static_cast<int>(pr.Lq);
  in.Lk = static_cast<int>(pr.Lk);
  in.D = static_cast<int>(pr.D);
  in.Dv = static_cast<int>(pr.Dv);
  in.num_row_blocks = static_cast<int>(pr.row_blocks(layout.rows));
  in.mode = pr.mode;
  in.scale = static_cast<float>(scale);
  in.vec_q = vec_loads_ok(t.q, pr.D);
  in.vec_k = vec_loads_ok(t.k, pr.D);
  in.vec_v = vec_loads_ok(t.v, pr.Dv);
  in.layout = layout;
  return t;
}

// Calls f(scalar_t{}) for the kernel's dtypes (checked in prepare).
template <typename F>
void dispatch_dtype(at::ScalarType dtype, F&& f) {
  switch (dtype) {
    case at::kFloat: f(float{}); break;
    case at::kHalf: f(c10::Half{}); break;
    case at::kBFloat16: f(c10::BFloat16{}); break;
    default: TORCH_CHECK(false, "gated_residual_attention (CUDA): unsupported dtype ", dtype);
  }
}

inline int64_t checked_grid(const Problem& pr, int rows) {
  const int64_t grid = pr.B * pr.H * pr.row_blocks(rows);
  TORCH_CHECK(grid <= INT_MAX, "gated_residual_attention (CUDA): too many blocks (", grid, ")");
  return grid;
}

template <class Backend>
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const std::optional<at::Tensor>& prev,
                                           const std::optional<at::Tensor>& key_mask,
                                           const std::optional<at::Tensor>& gate_weight,
                                           const std::optional<at::Tensor>& gate_bias, c10::string_view mode,
                                           double scale) {
  const Problem pr = prepare<Backend>(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale);
  at::Tensor out = Backend::empty({pr.B, pr.H, pr.Lq, pr.Dv}, q.options());
  at::Tensor scores = Backend::empty({pr.B, pr.H, pr.Lq, pr.Lk}, q.options());
  if (pr.B * pr.H * pr.Lq == 0) return {out, scores};

  const bool tc = Backend::use_tensor_cores(q.scalar_type());
  const int R = tc ? kTcRows : kWarps * kFwdRowsPerWarp;
  const GraLayout layout = tc ? choose_tc_layout(pr.D, pr.Dv, pr.Lk, 1, /*forward=*/true, Backend::max_smem_per_block(q))
                              : choose_layout(R, pr.D, 0, pr.Lk, 1, Backend::max_smem_per_block(q));
  const int64_t grid = checked_grid(pr, R);
  dispatch_dtype(q.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    auto t = make_inputs<Backend, scalar_t>(pr, q, k, v, prev, key_mask, gate_weight, gate_bias, scale, layout);
    const GraForwardParams<scalar_t> p{t.in, out.data_ptr<scalar_t>(), scores.data_ptr<scalar_t>()};
    if constexpr (is_16bit<scalar_t>()) {
      if (tc) return Backend::launch_forward_tc(p, grid);
    }
    Backend::launch_forward(p, grid);
  });
  return {out, scores};
}

// A gradient of the expected shape, contiguous, in the dtype of q.
inline at::Tensor grad_arg(const at::Tensor& g, const char* name, at::IntArrayRef expected, const at::Tensor& q) {
  TORCH_CHECK_VALUE(g.sizes() == expected, name, ": expected shape ", expected, ", got ", g.sizes());
  TORCH_CHECK_VALUE(g.device() == q.device(), name, ": expected device ", q.device(), " (the device of q), got ",
                    g.device());
  return g.to(q.scalar_type()).contiguous();
}

template <class Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_out, const at::Tensor& grad_scores, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const std::optional<at::Tensor>& prev, const std::optional<at::Tensor>& key_mask,
    const std::optional<at::Tensor>& gate_weight, const std::optional<at::Tensor>& gate_bias,
    const at::Tensor& scores, c10::string_view mode, double scale) {
  const Problem pr = prepare<Backend>(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale);
  const at::Tensor go = grad_arg(grad_out, "grad_out", {pr.B, pr.H, pr.Lq, pr.Dv}, q);
  const at::Tensor gs = grad_arg(grad_scores, "grad_scores", {pr.B, pr.H, pr.Lq, pr.Lk}, q);
  // `scores` is not read: the softmax is recomputed in float32 from s and prev (as in the
  // forward), which is both cheaper than re-reading n and free of its half-precision rounding.
  TORCH_CHECK_VALUE(scores.sizes() == gs.sizes(), "scores: expected shape ", gs.sizes(), ", got ", scores.sizes());

  const bool tc = Backend::use_tensor_cores(q.scalar_type());
  const int R = tc ? kTcRows : kWarps * kBwdRowsPerWarp;
  const int64_t nrb = pr.row_blocks(R);
  const int64_t grid = checked_grid(pr, R);
  const auto opts = q.options();
  at::Tensor attn = Backend::empty({pr.B, pr.H, pr.Lq, pr.Lk}, opts);
  at::Tensor grad_logits = Backend::empty({pr.B, pr.H, pr.Lq, pr.Lk}, opts);
  at::Tensor grad_prev = pr.has_prev ? Backend::empty({pr.B, pr.H, pr.Lq, pr.Lk}, opts) : at::empty({0}, opts);
  const bool gated = pr.mode == kGated;
  at::Tensor gate_partial = gated ? Backend::empty({2, grid}, opts.dtype(at::kFloat)) : at::Tensor();

  if (grid > 0) {
    const GraLayout layout = tc ? choose_tc_layout(pr.D, pr.Dv, pr.Lk, 3, /*forward=*/false,
                                                   Backend::max_smem_per_block(q))
                                : choose_layout(R, pr.D, pr.Dv, pr.Lk, 3, Backend::max_smem_per_block(q));
    const auto launch = [&](auto tag) {
      using scalar_t = decltype(tag);
      auto t = make_inputs<Backend, scalar_t>(pr, q, k, v, prev, key_mask, gate_weight, gate_bias, scale, layout);
      GraBackwardParams<scalar_t> p{};
      p.in = t.in;
      p.grad_out = go.data_ptr<scalar_t>();
      p.grad_scores = gs.data_ptr<scalar_t>();
      p.vec_do = vec_loads_ok(go, pr.Dv);
      p.attn = attn.data_ptr<scalar_t>();
      p.grad_logits = grad_logits.data_ptr<scalar_t>();
      p.grad_prev = pr.has_prev ? grad_prev.data_ptr<scalar_t>() : nullptr;
      p.gate_partial = gated ? gate_partial.data_ptr<float>() : nullptr;
      if constexpr (is_16bit<scalar_t>()) {
        if (tc) return Backend::launch_backward_tc(p, grid);
      }
      Backend::launch_backward(p, grid);
    };
    dispatch_dtype(q.scalar_type(), launch);
  }

  // dQ = scale dS K, dK = scale dS^T Q, dV = A^T dOut (batched GEMMs over B*H, float32 accumulation)
  const at::Tensor qc = q.contiguous(), kc = k.contiguous();
  at::Tensor grad_q = at::matmul(grad_logits, kc);
  at::Tensor grad_k = at::matmul(grad_logits.transpose(-2, -1), qc);
  at::Tensor grad_v = at::matmul(attn.transpose(-2, -1), go);

  at::Tensor grad_w = at::empty({0}, opts), grad_b = at::empty({0}, opts);
  if (gated) {
    const at::Tensor sums = gate_partial.view({2, pr.B, pr.H, nrb}).sum({1, 3});  // [2, H]
    grad_w = sums[0].to(gate_weight->scalar_type());
    grad_b = sums[1].to(gate_bias->scalar_type());
  }
  return {grad_q, grad_k, grad_v, grad_prev, grad_w, grad_b};
}

}  // namespace gra
}  // namespace mmfuse
