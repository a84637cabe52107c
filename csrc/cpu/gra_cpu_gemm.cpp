// The matrix micro-kernel of the CPU kernels (see gra_cpu_gemm.h), compiled per ISA.
#include "gra_cpu_gemm.h"

#include <algorithm>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MMFUSE_CPU_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define MMFUSE_CPU_CLONES
#endif
#define MMFUSE_ALWAYS_INLINE inline __attribute__((always_inline))

namespace mmfuse {
namespace gra_cpu {
namespace {

constexpr int kTileRows = 4;

template <typename T>
constexpr int tile_cols() {
  return 64 / static_cast<int>(sizeof(T));  // two 256-bit vectors per tile row
}

// C tile [RT, NT] = A[RT, K] . B[K, NT] with compile-time tile sizes: the accumulators stay in
// registers and the inner loop becomes RT x (NT / lanes) vector FMAs per k.
template <typename T, int RT, int NT>
MMFUSE_ALWAYS_INLINE void gemm_tile_fixed(const GemmArgs<T>& g, int64_t r0, int64_t n0) {
  T acc[RT][NT] = {};
  const T* a = g.a + r0 * g.a_row;
  const T* b = g.b + n0;
  for (int64_t k = 0; k < g.K; ++k) {
    const T* bk = b + k * g.ldb;
    for (int r = 0; r < RT; ++r) {
      const T ar = a[r * g.a_row + k * g.a_col];
      for (int n = 0; n < NT; ++n) acc[r][n] += ar * bk[n];
    }
  }
  for (int r = 0; r < RT; ++r) {
    T* c = g.c + (r0 + r) * g.ldc + n0;
    for (int n = 0; n < NT; ++n) c[n] = acc[r][n];
  }
}

// Edge tiles (fewer rows or columns than a full tile): same arithmetic, runtime bounds.
template <typename T, int NT>
MMFUSE_ALWAYS_INLINE void gemm_tile_edge(const GemmArgs<T>& g, int64_t r0, int64_t rn, int64_t n0, int64_t nn) {
  T acc[kTileRows][NT] = {};
  const T* a = g.a + r0 * g.a_row;
  const T* b = g.b + n0;
  for (int64_t k = 0; k < g.K; ++k) {
    const T* bk = b + k * g.ldb;
    for (int64_t r = 0; r < rn; ++r) {
      const T ar = a[r * g.a_row + k * g.a_col];
      for (int64_t n = 0; n < nn; ++n) acc[r][n] += ar * bk[n];
    }
  }
  for (int64_t r = 0; r < rn; ++r) {
    T* c = g.c + (r0 + r) * g.ldc + n0;
    for (int64_t n = 0; n < nn; ++n) c[n] = acc[r][n];
  }
}

template <typename T>
MMFUSE_ALWAYS_INLINE void gemm_impl(const GemmArgs<T>& g) {
  constexpr int NT = tile_cols<T>();
  for (int64_t r0 = 0; r0 < g.R; r0 += kTileRows) {
    const int64_t rn = std::min<int64_t>(kTileRows, g.R - r0);
    for (int64_t n0 = 0; n0 < g.N; n0 += NT) {
      const int64_t nn = std::min<int64_t>(NT, g.N - n0);
      if (rn == kTileRows && nn == NT) {
        gemm_tile_fixed<T, kTileRows, NT>(g, r0, n0);
      } else {
        gemm_tile_edge<T, NT>(g, r0, rn, n0, nn);
      }
    }
  }
}


}  // namespace

MMFUSE_CPU_CLONES void gemm(const GemmArgs<float>& g) { gemm_impl(g); }
MMFUSE_CPU_CLONES void gemm(const GemmArgs<double>& g) { gemm_impl(g); }

}  // namespace gra_cpu
}  // namespace mmfuse
