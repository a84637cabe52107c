// The vectorised building blocks of the CPU gated residual attention kernels: one matrix
// micro-kernel, the row functions (masked softmax and its backward, cosine sums, the gate
// backward, dot products) and a block transpose. Row reductions use vector partial sums: a serial
// sum is one add per FP-add latency, and the compiler may not reorder it without -ffast-math.
//
// Every product of the op — s = q.K^T, out = a.V, dA = dOut.V^T, dQ = dS.K, dK = dS^T.Q,
// dV = A^T.dOut — is a small C[R, N] = A[R, K] . B[K, N] on blocks that are already in cache,
// with A addressed through two strides (so A may be a transposed view) and B row-major. It is
// written as register tiles of up to 6 rows x NV vectors of accumulators updated by broadcast-A /
// vector-B multiply-adds: no horizontal reductions, so the compiler vectorises it without
// -ffast-math. On x86-64 each function is compiled for the baseline ISA, for AVX2 + FMA and (the
// micro-kernel, and the float32 softmax and cosine sums) for AVX-512; the widest build the CPU
// supports is used, capped by ATEN_CPU_CAPABILITY (chosen once per process).
#pragma once

#include <cstdint>

namespace mmfuse {
namespace gra_cpu {

// A[r, k] = a[r * a_row + k * a_col]; B[k, n] = b[k * ldb + n]; C[r, n] = c[r * ldc + n].
template <typename T>
struct GemmArgs {
  const T* a;
  int64_t a_row, a_col;
  const T* b;
  int64_t ldb;
  T* c;
  int64_t ldc;
  int64_t R, K, N;
  T alpha = 1;  // C = alpha (A . B): the product first, then one multiply (as BLAS's alpha)
};

// C = alpha (A . B) (overwrites C). Defined in gra_cpu_simd.cpp, where it is compiled per ISA.
void gemm(const GemmArgs<float>& g);
void gemm(const GemmArgs<double>& g);

// sum_j x[j] * y[j], in vector partial sums (a fixed order: the same result for the same inputs).
float dot(const float* x, const float* y, int64_t len);
double dot(const double* x, const double* y, int64_t len);

// The terms of the cosine gate over the keys with valid[j] == 1 (valid is 0 or 1):
// sp = sum s p, ss = sum s s, pp = sum p p, accumulated in double (vector partial sums, fixed
// order), so that float rows cannot overflow (|s|, |p| up to ~1e77). Masked keys are selected
// away, never multiplied by 0 (an inf or NaN there does not reach the sums).
template <typename T>
struct CosineSums {
  T sp, ss, pp;
};
CosineSums<double> cosine_sums(const float* s, const float* p, const float* valid, int64_t len);
CosineSums<double> cosine_sums(const double* s, const double* p, const double* valid, int64_t len);

// a = softmax of n[0:len] over the keys with valid[j] == 1 (valid is 0 or 1), exactly 0 at the
// others whatever n holds there; all zero when no key is valid (any_valid false). NaN or +inf at
// a valid key makes the row NaN, as IEEE arithmetic does. float uses a vectorised exp (relative
// error ~1e-7).
void masked_softmax(const float* n, const float* valid, int64_t len, bool any_valid, float* a);
void masked_softmax(const double* n, const double* valid, int64_t len, bool any_valid, double* a);

// dst[c * rows + r] = src[r * cols + c]: dst [cols, rows] is src [rows, cols] transposed.
void transpose(const float* src, int64_t rows, int64_t cols, float* dst);
void transpose(const double* src, int64_t rows, int64_t cols, double* dst);

// The backward of a masked softmax row, in place: on entry d holds dA (the gradient of the
// weights a); on return dN_j = a_j (dA_j - sum_k a_k dA_k) + grad_n_j at valid keys and grad_n_j
// at masked ones (grad_n: the gradient reaching n directly, through the `scores` output).
void softmax_backward(const float* a, const float* valid, const float* grad_n, int64_t len, float* d);
void softmax_backward(const double* a, const double* valid, const double* grad_n, int64_t len, double* d);

// The per-row constants of the cosine gate's backward (gra_cpu.cpp computes them from the row).
template <typename T>
struct GateBackward {
  T scale, half_g;   // the score scale; g / 2
  T c, ks, kp;       // the cosine; dL/dc / |s| and dL/dc / |p|
  T inv_ns, inv_np;  // 1 / |s|, 1 / |p|
  bool clamped;      // |s| |p| < eps: the cosine is sp / eps and its terms below are dropped
};

// The gradients of one gated row, from dN (dn), the scaled scores s and prev p:
//   ds_j = scale (g/2 dN_j + [valid_j] ks (p_j/|p| - c s_j/|s|)),
//   dp_j = dN_j / 2 + [valid_j] kp (s_j/|s| - c p_j/|p|),
// the unit vectors formed first so that nothing overflows for |s|, |p| ~ 1e18.
void gate_backward(const GateBackward<float>& k, const float* dn, const float* s, const float* p, const float* valid,
                   int64_t len, float* ds, float* dp);
void gate_backward(const GateBackward<double>& k, const double* dn, const double* s, const double* p,
                   const double* valid, int64_t len, double* ds, double* dp);

}  // namespace gra_cpu
}  // namespace mmfuse
