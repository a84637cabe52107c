// The vectorised building blocks of the CPU gated residual attention kernels: one matrix
// micro-kernel, the row reductions (dot products, cosine terms) and the masked softmax of a
// score row. Row reductions use vector partial sums: a serial sum is one add per FP-add latency,
// and the compiler may not reorder it without -ffast-math.
//
// Every product of the op — s = q.K^T, out = a.V, dA = dOut.V^T, dQ = dS.K, dK = dS^T.Q,
// dV = A^T.dOut — is a small C[R, N] = A[R, K] . B[K, N] on blocks that are already in cache,
// with A addressed through two strides (so A may be a transposed view) and B row-major. It is
// written as register tiles of kTileRows x kTileCols accumulators updated by broadcast-A /
// vector-B multiply-adds: no horizontal reductions, so the compiler vectorises it without
// -ffast-math. On x86-64 it is compiled twice, for AVX2+FMA and for the baseline ISA, and the
// AVX2 build is used when the CPU supports it (checked once at run time).
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
};

// C = A . B (overwrites C). Defined in gra_cpu_simd.cpp, where it is compiled per ISA.
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

}  // namespace gra_cpu
}  // namespace mmfuse
