// CPU kernels of mmfuse::gated_residual_attention (forward) and _backward.
//
// Contract: shared/design/gated_residual_attention.md (docs/op.md); oracle: mmfuse/ops/reference.py.
// Work is split by at::parallel_for into tasks of (batch b, head h, block of kRowBlock query
// rows). A forward task, entirely in cache and in the accumulation type (float for float32 /
// bfloat16, double for float64):
//   s = scale * q_blk . K^T            (micro-kernel gemm, gra_cpu_simd.h)
//   per row: cosine gate over the valid keys, combination n, masked softmax (max / sum)
//   out_blk = a . V                     (gemm); out and scores are written once.
// The backward recomputes s (gated mode, and bfloat16) or reads n from `scores` (float32 /
// float64 without a gate, where n is stored unrounded), redoes the softmax, computes
// dA = dOut . V^T, then per row dN, the gate terms, dS and dPrev, and dQ = scale dS . K. It keeps
// A and scale*dS for dK = (scale dS)^T . Q and dV = A^T . dOut: with enough heads per thread one
// task runs a whole head, its A and scale*dS in per-thread buffers; otherwise they go to float
// workspaces and a second parallel pass over (b, h, block of keys) forms dK and dV. Either way each
// element is summed in the same fixed order by one task — no atomics, the same bits for any
// thread count and either schedule. The gate gradients are summed per head from per-row terms in
// a fixed order as well.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "../gated_residual_attention.h"
#include "gra_cpu_simd.h"

namespace mmfuse {
namespace gra_cpu {
namespace {

constexpr int64_t kRowBlock = 32;  // query rows per task
constexpr int64_t kKeyBlock = 32;  // keys per task of the dK / dV pass
constexpr double kCosineEps = 1e-8;  // as mmfuse/ops/reference.py: COSINE_EPS

// Tasks smaller than this many multiply-adds are grouped, so that small problems run on the
// calling thread instead of paying for waking up the pool (and for a descheduled worker).
constexpr int64_t kMinTaskWork = int64_t(1) << 16;

inline int64_t grain_for(int64_t work_per_task) {
  return std::max<int64_t>(1, kMinTaskWork / std::max<int64_t>(1, work_per_task));
}

enum EffMode : int { kPlain = 0, kResidual = 1, kGated = 2 };

inline bool defined(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

struct Problem {
  int64_t B, H, Lq, Lk, D, Dv;
  int mode;
  bool has_prev, has_mask;
};

Problem prepare(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& prev,
                const std::optional<at::Tensor>& key_mask, const std::optional<at::Tensor>& gate_weight,
                const std::optional<at::Tensor>& gate_bias, c10::string_view mode_str, double scale) {
  const GraMode mode = parse_gra_mode(std::string_view(mode_str.data(), mode_str.size()));
  check_gra_inputs(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale);
  TORCH_CHECK_VALUE(q.device().is_cpu(), "q: expected a CPU tensor for the CPU kernel, got device ", q.device());
  const auto dt = q.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16,
                   "q: the CPU kernel of gated_residual_attention supports float32, float64 and bfloat16, got ", dt);
  Problem pr{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3), kPlain, defined(prev), defined(key_mask)};
  if (pr.has_prev && mode != GraMode::None) pr.mode = mode == GraMode::Residual ? kResidual : kGated;
  return pr;
}

// Contiguous inputs (kept alive for the kernel) and raw pointers to them.
template <typename scalar_t>
struct Inputs {
  using acc_t = acc_type<scalar_t>;
  at::Tensor q_t, k_t, v_t, prev_t, mask_t;
  const scalar_t *q = nullptr, *k = nullptr, *v = nullptr, *prev = nullptr;
  const bool* mask = nullptr;
  std::vector<acc_t> gate_w, gate_b;  // [H], gated mode only
  acc_t scale;

  Inputs(const Problem& pr, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
         const std::optional<at::Tensor>& prev_in, const std::optional<at::Tensor>& mask_in,
         const std::optional<at::Tensor>& gw, const std::optional<at::Tensor>& gb, double scale_in)
      : q_t(q_in.contiguous()), k_t(k_in.contiguous()), v_t(v_in.contiguous()), scale(static_cast<acc_t>(scale_in)) {
    q = q_t.data_ptr<scalar_t>();
    k = k_t.data_ptr<scalar_t>();
    v = v_t.data_ptr<scalar_t>();
    if (pr.mode != kPlain) {
      prev_t = prev_in->contiguous();
      prev = prev_t.data_ptr<scalar_t>();
    }
    if (pr.has_mask) {
      mask_t = mask_in->contiguous();
      mask = mask_t.data_ptr<bool>();
    }
    if (pr.mode == kGated) {  // gate parameters may have another float dtype (autocast)
      const at::Tensor w = gw->to(at::kDouble).contiguous(), b = gb->to(at::kDouble).contiguous();
      for (int64_t h = 0; h < pr.H; ++h) {
        gate_w.push_back(static_cast<acc_t>(w.data_ptr<double>()[h]));
        gate_b.push_back(static_cast<acc_t>(b.data_ptr<double>()[h]));
      }
    }
  }
};

// rows x cols of `src` into dst, converted, optionally transposed (dst [cols, rows]).
template <typename acc_t, typename scalar_t>
void load_block(const scalar_t* src, int64_t rows, int64_t cols, acc_t* dst, bool transposed) {
  if (transposed) {
    if constexpr (std::is_same_v<acc_t, scalar_t>) {
      transpose(src, rows, cols, dst);
    } else {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = static_cast<acc_t>(src[r * cols + c]);
    }
  } else {
    for (int64_t i = 0; i < rows * cols; ++i) dst[i] = static_cast<acc_t>(src[i]);
  }
}

// A contiguous [rows, cols] block in the accumulation type: the input itself when it already
// has that type, else a converted copy in `buf`.
template <typename acc_t, typename scalar_t>
const acc_t* as_acc(const scalar_t* src, int64_t rows, int64_t cols, std::vector<acc_t>& buf) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    return src;
  } else {
    buf.resize(static_cast<size_t>(rows * cols));
    load_block(src, rows, cols, buf.data(), false);
    return buf.data();
  }
}

// Where a result block of the accumulation type goes: straight into the output when that has the
// accumulation type, else into `buf`, to be converted by store_result.
template <typename acc_t, typename scalar_t>
acc_t* result_buffer(scalar_t* out, std::vector<acc_t>& buf, int64_t count) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    return out;
  } else {
    buf.resize(static_cast<size_t>(count));
    return buf.data();
  }
}

template <typename acc_t, typename scalar_t>
void store_result(const acc_t* block, scalar_t* out, int64_t count) {
  if constexpr (!std::is_same_v<acc_t, scalar_t>)
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<scalar_t>(block[i]);
}

template <typename T>
void run_gemm(const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb, T* c, int64_t ldc, int64_t R,
              int64_t K, int64_t N, T alpha = T(1)) {
  gemm(GemmArgs<T>{a, a_row, a_col, b, ldb, c, ldc, R, K, N, alpha});
}

// Per-row quantities of the cosine gate (gated mode only). The norms stay apart (never their
// product of squares), so that the backward terms below stay in range for |s|, |p| ~ 1e18.
template <typename acc_t>
struct GateRow {
  acc_t c = 0, g = 1;
  acc_t inv_ns = 0, inv_np = 0;  // 1 / |s_V|, 1 / |p_V| (0 when clamped)
  bool clamped = true;
};

// The row pass shared by forward and backward: from the raw scores s (scaled), prev p (in the
// accumulation type; unused in plain mode) and the 0/1 key weights `valid`, computes the gate and
// writes the combined scores n. The cosine sums are taken in double over the valid keys only
// (selected, not multiplied by the mask); the clamp compares the true norm product with 1e-8.
// NaN / inf at a valid key make c, g and the row NaN.
template <typename acc_t>
GateRow<acc_t> combine_row(int mode, const acc_t* s, const acc_t* p, acc_t w, acc_t b, const acc_t* valid, int64_t Lk,
                           acc_t* n) {
  GateRow<acc_t> st;
  if (mode == kPlain) {
    std::copy(s, s + Lk, n);
    return st;
  }
  if (mode == kResidual) {
    for (int64_t j = 0; j < Lk; ++j) n[j] = s[j] + p[j];
    return st;
  }
  const CosineSums<double> sums = cosine_sums(s, p, valid, Lk);
  const double ns = std::sqrt(sums.ss), np = std::sqrt(sums.pp), norm = ns * np;
  // clamped also covers a row without valid keys (dot = 0 -> c = 0); NaN compares false
  st.clamped = norm < kCosineEps;
  const double c = st.clamped ? sums.sp / kCosineEps : sums.sp / ns / np;
  st.c = static_cast<acc_t>(c);
  st.inv_ns = st.clamped ? acc_t(0) : static_cast<acc_t>(1.0 / ns);
  st.inv_np = st.clamped ? acc_t(0) : static_cast<acc_t>(1.0 / np);
  st.g = acc_t(1) / (acc_t(1) + std::exp(-(w * st.c + b)));
  for (int64_t j = 0; j < Lk; ++j) n[j] = (st.g * s[j] + p[j]) / acc_t(2);
  return st;
}

// Per-thread buffers of one (b, h); K^T / V are reused across the row blocks of the same (b, h)
// that a thread processes in a row.
template <typename acc_t>
struct HeadCache {
  int64_t bh = -1;
  std::vector<acc_t> valid;         // [Lk] 1 / 0 per key of this batch (masked_softmax's format)
  std::vector<acc_t> kt, vt, k, v;  // K^T [D, Lk]; V^T [Dv, Lk]; K [Lk, D]; V [Lk, Dv] (if converted)
  const acc_t* k_rows = nullptr;
  const acc_t* v_rows = nullptr;

  bool any_valid = true;            // at least one valid key

  void load_valid(const bool* mask, int64_t Lk) {  // mask: [Lk] of the batch or nullptr
    valid.assign(Lk, acc_t(1));
    any_valid = Lk > 0;
    if (mask != nullptr) {
      any_valid = false;
      for (int64_t j = 0; j < Lk; ++j) {
        valid[j] = mask[j] ? acc_t(1) : acc_t(0);
        any_valid = any_valid || mask[j];
      }
    }
  }
};

// V [Lk, Dv] of one head in the accumulation type with the rows of masked keys set to 0 (selected,
// so that an inf or NaN in a masked key's value cannot reach out = a . V or dA = dOut . V^T);
// the input itself when it needs neither conversion nor masking.
template <typename acc_t, typename scalar_t>
const acc_t* masked_values(const scalar_t* v, int64_t Lk, int64_t Dv, const bool* mask, std::vector<acc_t>& buf) {
  if (mask == nullptr) return as_acc(v, Lk, Dv, buf);
  buf.resize(static_cast<size_t>(Lk * Dv));
  for (int64_t j = 0; j < Lk; ++j) {
    acc_t* dst = buf.data() + j * Dv;
    if (mask[j]) {
      for (int64_t c = 0; c < Dv; ++c) dst[c] = static_cast<acc_t>(v[j * Dv + c]);
    } else {
      std::fill(dst, dst + Dv, acc_t(0));
    }
  }
  return buf.data();
}

template <typename scalar_t>
void forward_kernel(const Problem& pr, const Inputs<scalar_t>& in, scalar_t* out, scalar_t* scores) {
  using acc_t = acc_type<scalar_t>;
  const int64_t Lq = pr.Lq, Lk = pr.Lk, D = pr.D, Dv = pr.Dv;
  const int64_t nrb = (Lq + kRowBlock - 1) / kRowBlock;
  const int64_t grain = grain_for(kRowBlock * Lk * (D + Dv + 4));
  at::parallel_for(0, pr.B * pr.H * nrb, grain, [&](int64_t begin, int64_t end) {
    HeadCache<acc_t> hc;
    std::vector<acc_t> qb, s(kRowBlock * Lk), n, o, p_acc;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bh = t / nrb, i0 = (t % nrb) * kRowBlock, rn = std::min(kRowBlock, Lq - i0);
      const int64_t b = bh / pr.H, h = bh % pr.H;
      if (hc.bh != bh) {
        hc.bh = bh;
        hc.load_valid(in.mask ? in.mask + b * Lk : nullptr, Lk);
        hc.kt.resize(D * Lk);
        load_block(in.k + bh * Lk * D, Lk, D, hc.kt.data(), true);
        hc.v_rows = masked_values(in.v + bh * Lk * Dv, Lk, Dv, in.mask ? in.mask + b * Lk : nullptr, hc.v);
      }
      // s = scale (q . K^T) of the block (the scale applied to the finished products, so that
      // scale * q cannot overflow or underflow where s does not); without a gate or prev it is n
      // itself, so a float32 / float64 product lands in `scores` directly
      const acc_t* q_blk = as_acc(in.q + (bh * Lq + i0) * D, rn, D, qb);
      scalar_t* scores_blk = scores + (bh * Lq + i0) * Lk;
      acc_t* s_blk = s.data();
      if constexpr (std::is_same_v<scalar_t, acc_t>) {
        if (pr.mode == kPlain) s_blk = scores_blk;
      }
      run_gemm(q_blk, D, 1, hc.kt.data(), Lk, s_blk, Lk, rn, D, Lk, in.scale);
      const acc_t w = pr.mode == kGated ? in.gate_w[h] : acc_t(0), gb = pr.mode == kGated ? in.gate_b[h] : acc_t(0);
      for (int64_t r = 0; r < rn; ++r) {
        const int64_t row = bh * Lq + i0 + r;
        acc_t* a = s.data() + r * Lk;  // s of the row, then its weights a
        const acc_t* n_row = s_blk + r * Lk;
        if (s_blk == s.data()) {  // n from s (and prev), written to scores
          scalar_t* sc = scores_blk + r * Lk;
          acc_t* n_dst = result_buffer(sc, n, Lk);
          const acc_t* p = pr.mode != kPlain ? as_acc(in.prev + row * Lk, int64_t(1), Lk, p_acc) : nullptr;
          combine_row(pr.mode, a, p, w, gb, hc.valid.data(), Lk, n_dst);
          store_result(n_dst, sc, Lk);
          n_row = n_dst;
        }
        masked_softmax(n_row, hc.valid.data(), Lk, hc.any_valid, a);
      }
      scalar_t* dst = out + (bh * Lq + i0) * Dv;
      acc_t* ob = result_buffer(dst, o, rn * Dv);
      run_gemm(s.data(), Lk, 1, hc.v_rows, Dv, ob, Dv, rn, Lk, Dv);
      store_result(ob, dst, rn * Dv);
    }
  });
}

template <typename scalar_t>
struct BackwardOutputs {
  scalar_t *grad_q, *grad_k, *grad_v, *grad_prev;
};

// Per-thread buffers of the backward's row-block step.
template <typename acc_t>
struct RowScratch {
  HeadCache<acc_t> hc;
  std::vector<acc_t> qb, dob, s, da, n, dq, p_acc, gs_acc, dp_acc;
  RowScratch(int64_t D, int64_t Dv, int64_t Lk)
      : s(kRowBlock * Lk), da(kRowBlock * Lk), n(Lk) {}
};

// Per-head schedule of the backward (below) when every thread has at least this many heads and a
// head's A and dS ([Lq, Lk] each, per thread) hold at most this many elements.
constexpr int64_t kHeadsPerThread = 2;
constexpr int64_t kPerHeadMaxScores = int64_t(512) * 512;

template <typename scalar_t>
void backward_kernel(const Problem& pr, const Inputs<scalar_t>& in, const scalar_t* scores, const scalar_t* grad_out,
                     const scalar_t* grad_scores, const BackwardOutputs<scalar_t>& g, acc_type<scalar_t>* gate_ws) {
  using acc_t = acc_type<scalar_t>;
  const int64_t Lq = pr.Lq, Lk = pr.Lk, D = pr.D, Dv = pr.Dv, BH = pr.B * pr.H;
  const int64_t nrb = (Lq + kRowBlock - 1) / kRowBlock;

  // n is recomputed from q, k, prev exactly as the forward did; where it was stored without
  // rounding (float32 / float64) and s itself is not needed (no gate), `scores` is read instead.
  const bool recompute_n = pr.mode == kGated || !std::is_same_v<scalar_t, acc_t>;

  // The row-block step: for rows i0 .. i0+rn of head bh, writes A and scale*dS ([rn, Lk], row
  // stride Lk) to a_rows / ds_rows, and dQ, dPrev and the gate terms of those rows to their outputs.
  auto row_block = [&](RowScratch<acc_t>& sc, int64_t bh, int64_t i0, int64_t rn, acc_t* a_rows, acc_t* ds_rows) {
    HeadCache<acc_t>& hc = sc.hc;
    const int64_t b = bh / pr.H, h = bh % pr.H;
    if (hc.bh != bh) {
      hc.bh = bh;
      hc.load_valid(in.mask ? in.mask + b * Lk : nullptr, Lk);
      hc.kt.resize(D * Lk);
      hc.vt.resize(Dv * Lk);
      load_block(in.k + bh * Lk * D, Lk, D, hc.kt.data(), true);
      load_block(masked_values(in.v + bh * Lk * Dv, Lk, Dv, in.mask ? in.mask + b * Lk : nullptr, hc.v), Lk, Dv,
                 hc.vt.data(), true);
      hc.k_rows = as_acc(in.k + bh * Lk * D, Lk, D, hc.k);
    }
    std::vector<acc_t>&s = sc.s, &da = sc.da, &n = sc.n, &p_acc = sc.p_acc;
    const int64_t row0 = bh * Lq + i0;
    const acc_t* dob = as_acc(grad_out + row0 * Dv, rn, Dv, sc.dob);
    if (recompute_n)  // s, as the forward formed it
      run_gemm(as_acc(in.q + row0 * D, rn, D, sc.qb), D, 1, hc.kt.data(), Lk, s.data(), Lk, rn, D, Lk, in.scale);
    run_gemm(dob, Dv, 1, hc.vt.data(), Lk, da.data(), Lk, rn, Dv, Lk);  // dA = dOut . V^T
    const acc_t w = pr.mode == kGated ? in.gate_w[h] : acc_t(0), gb = pr.mode == kGated ? in.gate_b[h] : acc_t(0);
    for (int64_t r = 0; r < rn; ++r) {
      const int64_t row = row0 + r;
      acc_t* sr = s.data() + r * Lk;
      acc_t* dn = da.data() + r * Lk;  // dA, then dN in place
      acc_t* a = a_rows + r * Lk;
      acc_t* ds = ds_rows + r * Lk;
      const acc_t* p = pr.mode != kPlain ? as_acc(in.prev + row * Lk, int64_t(1), Lk, p_acc) : nullptr;
      GateRow<acc_t> st;
      if (recompute_n) {
        st = combine_row(pr.mode, sr, p, w, gb, hc.valid.data(), Lk, n.data());
        masked_softmax(n.data(), hc.valid.data(), Lk, hc.any_valid, a);
      } else {
        masked_softmax(reinterpret_cast<const acc_t*>(scores + row * Lk), hc.valid.data(), Lk, hc.any_valid, a);
      }
      softmax_backward(a, hc.valid.data(), as_acc(grad_scores + row * Lk, int64_t(1), Lk, sc.gs_acc), Lk, dn);

      // dPrev is written straight into grad_prev when it has the accumulation type
      scalar_t* dp_out = pr.has_prev ? g.grad_prev + row * Lk : nullptr;
      acc_t* dp = dp_out != nullptr ? result_buffer(dp_out, sc.dp_acc, Lk) : nullptr;
      if (pr.mode == kGated) {
        const acc_t dg = dot(dn, sr, Lk) / acc_t(2);
        const acc_t dz = dg * st.g * (acc_t(1) - st.g);
        gate_ws[2 * row] = dz * st.c;
        gate_ws[2 * row + 1] = dz;
        const acc_t dc = dz * w;
        const GateBackward<acc_t> gk{in.scale, st.g / acc_t(2), st.c, dc * st.inv_ns, dc * st.inv_np,
                                     st.inv_ns, st.inv_np, st.clamped};
        gate_backward(gk, dn, sr, p, hc.valid.data(), Lk, ds, dp);
      } else {
        for (int64_t j = 0; j < Lk; ++j) ds[j] = in.scale * dn[j];
        if (dp != nullptr) {
          if (pr.mode == kResidual) {
            std::copy(dn, dn + Lk, dp);
          } else {
            std::fill(dp, dp + Lk, acc_t(0));
          }
        }
      }
      if (dp_out != nullptr) store_result(dp, dp_out, Lk);
    }
    scalar_t* dst = g.grad_q + row0 * D;
    acc_t* dq = result_buffer(dst, sc.dq, rn * D);
    run_gemm(ds_rows, Lk, 1, hc.k_rows, D, dq, D, rn, Lk, D);  // dQ = scale dS . K
    store_result(dq, dst, rn * D);
  };

  // dK = (scale dS)^T . Q and dV = A^T . dOut for keys j0 .. j0+kn of head bh, from A and scale*dS
  // of all Lq rows (row stride Lk, starting at key j0). Each element is summed over the rows in
  // order, by one task: the same bits whichever schedule below ran.
  auto key_block = [&](int64_t bh, int64_t j0, int64_t kn, const acc_t* a_cols, const acc_t* ds_cols,
                       const acc_t* q_rows, const acc_t* do_rows, std::vector<acc_t>& dk_buf,
                       std::vector<acc_t>& dv_buf) {
    scalar_t* gk = g.grad_k + (bh * Lk + j0) * D;
    scalar_t* gv = g.grad_v + (bh * Lk + j0) * Dv;
    acc_t* dk = result_buffer(gk, dk_buf, kn * D);
    acc_t* dv = result_buffer(gv, dv_buf, kn * Dv);
    run_gemm(ds_cols, int64_t(1), Lk, q_rows, D, dk, D, kn, Lq, D);
    run_gemm(a_cols, int64_t(1), Lk, do_rows, Dv, dv, Dv, kn, Lq, Dv);
    store_result(dk, gk, kn * D);
    store_result(dv, gv, kn * Dv);
  };

  const int64_t threads = at::get_num_threads();
  if (BH >= kHeadsPerThread * threads && Lq * Lk <= kPerHeadMaxScores) {
    // Per head: one task runs every row block of its head, keeping A and scale*dS in per-thread
    // buffers (in cache at these sizes), then forms dK and dV of all keys. No [B, H, Lq, Lk]
    // workspace is written to memory and read back.
    at::parallel_for(0, BH, 1, [&](int64_t begin, int64_t end) {
      RowScratch<acc_t> sc(D, Dv, Lk);
      std::vector<acc_t> a_head(Lq * Lk), ds_head(Lq * Lk), dk, dv, qbuf, dobuf;
      for (int64_t bh = begin; bh < end; ++bh) {
        for (int64_t i0 = 0; i0 < Lq; i0 += kRowBlock)
          row_block(sc, bh, i0, std::min(kRowBlock, Lq - i0), a_head.data() + i0 * Lk, ds_head.data() + i0 * Lk);
        key_block(bh, 0, Lk, a_head.data(), ds_head.data(), as_acc(in.q + bh * Lq * D, Lq, D, qbuf),
                  as_acc(grad_out + bh * Lq * Dv, Lq, Dv, dobuf), dk, dv);
      }
    });
    return;
  }

  // Few heads or long rows: two passes through [B, H, Lq, Lk] workspaces, so that both the query
  // rows and the keys are split across the threads.
  const auto acc_opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value);
  const at::Tensor attn_t = at::empty({BH, Lq, Lk}, acc_opts), dscore_t = at::empty({BH, Lq, Lk}, acc_opts);
  acc_t* attn_ws = attn_t.data_ptr<acc_t>();
  acc_t* dscore_ws = dscore_t.data_ptr<acc_t>();
  // Pass 1 over (b, h, query-row block): A, scale*dS into the workspaces; dQ, dPrev, gate terms.
  at::parallel_for(0, BH * nrb, grain_for(kRowBlock * Lk * (D + 2 * Dv + 8)), [&](int64_t begin, int64_t end) {
    RowScratch<acc_t> sc(D, Dv, Lk);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bh = t / nrb, i0 = (t % nrb) * kRowBlock;
      const int64_t offset = (bh * Lq + i0) * Lk;
      row_block(sc, bh, i0, std::min(kRowBlock, Lq - i0), attn_ws + offset, dscore_ws + offset);
    }
  });

  // Pass 2 over (b, h, key block): dK, dV.
  const int64_t nkb = (Lk + kKeyBlock - 1) / kKeyBlock;
  at::parallel_for(0, BH * nkb, grain_for(kKeyBlock * Lq * (D + Dv)), [&](int64_t begin, int64_t end) {
    int64_t cached = -1;
    std::vector<acc_t> qbuf, dobuf, dk, dv;
    const acc_t *q_rows = nullptr, *do_rows = nullptr;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bh = t / nkb, j0 = (t % nkb) * kKeyBlock;
      if (cached != bh) {
        cached = bh;
        q_rows = as_acc(in.q + bh * Lq * D, Lq, D, qbuf);
        do_rows = as_acc(grad_out + bh * Lq * Dv, Lq, Dv, dobuf);
      }
      const int64_t base = bh * Lq * Lk + j0;
      key_block(bh, j0, std::min(kKeyBlock, Lk - j0), attn_ws + base, dscore_ws + base, q_rows, do_rows, dk, dv);
    }
  });
}

// A gradient of the expected shape, contiguous, in the dtype of q.
at::Tensor grad_arg(const at::Tensor& t, const char* name, at::IntArrayRef expected, const at::Tensor& q) {
  TORCH_CHECK_VALUE(t.sizes() == expected, name, ": expected shape ", expected, ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == q.device(), name, ": expected device ", q.device(), " (the device of q), got ",
                    t.device());
  return t.to(q.scalar_type()).contiguous();
}

}  // namespace
}  // namespace gra_cpu

std::tuple<at::Tensor, at::Tensor> gra_forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const std::optional<at::Tensor>& prev,
                                                    const std::optional<at::Tensor>& key_mask,
                                                    const std::optional<at::Tensor>& gate_weight,
                                                    const std::optional<at::Tensor>& gate_bias, c10::string_view mode,
                                                    double scale) {
  using namespace gra_cpu;
  const Problem pr = prepare(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale);
  at::Tensor out = at::empty({pr.B, pr.H, pr.Lq, pr.Dv}, q.options());
  at::Tensor scores = at::empty({pr.B, pr.H, pr.Lq, pr.Lk}, q.options());
  if (pr.B * pr.H * pr.Lq == 0) return {out, scores};
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "gra_forward_cpu", [&] {
    const Inputs<scalar_t> in(pr, q, k, v, prev, key_mask, gate_weight, gate_bias, scale);
    forward_kernel<scalar_t>(pr, in, out.data_ptr<scalar_t>(), scores.data_ptr<scalar_t>());
  });
  return {out, scores};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gra_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& grad_scores, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const std::optional<at::Tensor>& prev, const std::optional<at::Tensor>& key_mask,
    const std::optional<at::Tensor>& gate_weight, const std::optional<at::Tensor>& gate_bias,
    const at::Tensor& scores, c10::string_view mode, double scale) {
  using namespace gra_cpu;
  const Problem pr = prepare(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale);
  const at::Tensor go = grad_arg(grad_out, "grad_out", {pr.B, pr.H, pr.Lq, pr.Dv}, q);
  const at::Tensor gs = grad_arg(grad_scores, "grad_scores", {pr.B, pr.H, pr.Lq, pr.Lk}, q);
  // `scores` is read only where it holds n unrounded (float32 / float64) and no gate needs s;
  // otherwise s and n are recomputed in the accumulation type (exact for bfloat16 as well).
  TORCH_CHECK_VALUE(scores.sizes() == gs.sizes(), "scores: expected shape ", gs.sizes(), ", got ", scores.sizes());
  TORCH_CHECK_VALUE(scores.scalar_type() == q.scalar_type(), "scores: expected dtype ", q.scalar_type(), ", got ",
                    scores.scalar_type());

  const auto opts = q.options();
  at::Tensor grad_q = at::empty(q.sizes(), opts), grad_k = at::empty(k.sizes(), opts);
  at::Tensor grad_v = at::empty(v.sizes(), opts);
  at::Tensor grad_prev = pr.has_prev ? at::empty({pr.B, pr.H, pr.Lq, pr.Lk}, opts) : at::empty({0}, opts);
  const bool gated = pr.mode == kGated;
  at::Tensor grad_w = at::empty({0}, opts), grad_b = at::empty({0}, opts);
  if (pr.B * pr.H * pr.Lq == 0 || pr.Lk == 0) {  // nothing flows: zero gradients of the right shapes
    grad_q.zero_();
    grad_k.zero_();
    grad_v.zero_();
    grad_prev.zero_();
    if (gated) {
      grad_w = at::zeros_like(*gate_weight);
      grad_b = at::zeros_like(*gate_bias);
    }
    return {grad_q, grad_k, grad_v, grad_prev, grad_w, grad_b};
  }

  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "gra_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const auto acc_opts = opts.dtype(c10::CppTypeToScalarType<acc_t>::value);
    const Inputs<scalar_t> in(pr, q, k, v, prev, key_mask, gate_weight, gate_bias, scale);
    at::Tensor gate_ws = at::empty({gated ? pr.B * pr.H * pr.Lq * 2 : 0}, acc_opts);
    const BackwardOutputs<scalar_t> outs{grad_q.data_ptr<scalar_t>(), grad_k.data_ptr<scalar_t>(),
                                         grad_v.data_ptr<scalar_t>(),
                                         pr.has_prev ? grad_prev.data_ptr<scalar_t>() : nullptr};
    const at::Tensor scores_c = scores.contiguous();
    backward_kernel<scalar_t>(pr, in, scores_c.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(), gs.data_ptr<scalar_t>(), outs,
                              gate_ws.data_ptr<acc_t>());
    if (gated) {  // per head, summed over (b, row) in a fixed order
      const acc_t* terms = gate_ws.data_ptr<acc_t>();
      at::Tensor sums = at::zeros({2, pr.H}, opts.dtype(at::kDouble));
      double* sw = sums.data_ptr<double>();
      for (int64_t b = 0; b < pr.B; ++b)
        for (int64_t h = 0; h < pr.H; ++h)
          for (int64_t i = 0; i < pr.Lq; ++i) {
            const int64_t row = (b * pr.H + h) * pr.Lq + i;
            sw[h] += terms[2 * row];
            sw[pr.H + h] += terms[2 * row + 1];
          }
      grad_w = sums[0].to(gate_weight->scalar_type(), /*non_blocking=*/false, /*copy=*/true);
      grad_b = sums[1].to(gate_bias->scalar_type(), /*non_blocking=*/false, /*copy=*/true);
    }
  });
  return {grad_q, grad_k, grad_v, grad_prev, grad_w, grad_b};
}

}  // namespace mmfuse

TORCH_LIBRARY_IMPL(mmfuse, CPU, m) {
  m.impl("gated_residual_attention", &mmfuse::gra_forward_entry<&mmfuse::gra_forward_cpu>);
  m.impl("gated_residual_attention_backward", &mmfuse::gra_backward_entry<&mmfuse::gra_backward_cpu>);
}
