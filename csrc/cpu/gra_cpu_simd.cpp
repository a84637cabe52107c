// The vectorised building blocks of the CPU kernels (see gra_cpu_simd.h), compiled per ISA.
#include "gra_cpu_simd.h"

#include "../gated_residual_attention.h"

#include <ATen/Parallel.h>

#include <dlfcn.h>
#ifdef __x86_64__
#include <immintrin.h>
#endif

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string_view>
#include <type_traits>

#if defined(__GNUC__) && !defined(__clang__)
// 256-bit vector values only travel between always-inlined helpers of one ISA build
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12's AVX-512 intrinsics self-initialise an undefined vector (GCC bug 105593)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define MMFUSE_X86_DISPATCH 1
#endif
#define MMFUSE_ALWAYS_INLINE inline __attribute__((always_inline))

namespace mmfuse {
namespace gra_cpu {
namespace {

constexpr int kTileRows = 6;
typedef double double_vec __attribute__((vector_size(32)));  // 4 doubles
typedef long long long_vec __attribute__((vector_size(32)));  // lane masks of double_vec

// T vectors of VB bytes (GCC vector extension). Through a class template: GCC ignores
// vector_size on a dependent type in a plain alias inside a function template.
template <typename T, int VB>
struct VecOf {
  typedef T type __attribute__((vector_size(VB)));
};

// C tile [RT, NV * lanes] = alpha (A[RT, K] . B[K, NV * lanes]) with compile-time sizes: the
// RT x NV accumulators are VB-byte GCC vectors held in registers (256-bit ones are two 128-bit
// halves on the baseline ISA); per k, NV vector loads of B, RT broadcasts of A and RT x NV
// multiply-adds; alpha multiplies each finished accumulator as it is stored.
template <typename T, int VB, int RT, int NV>
MMFUSE_ALWAYS_INLINE void gemm_tile_fixed(const GemmArgs<T>& g, int64_t r0, int64_t n0) {
  using vec_t = typename VecOf<T, VB>::type;
  constexpr int lanes = VB / static_cast<int>(sizeof(T));
  vec_t acc[RT][NV];
  for (int r = 0; r < RT; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = vec_t{};
  const T* a = g.a + r0 * g.a_row;
  const T* b = g.b + n0;
  for (int64_t k = 0; k < g.K; ++k) {
    const T* bk = b + k * g.ldb;
    vec_t bv[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&bv[v], bk + v * lanes, sizeof(vec_t));
    for (int r = 0; r < RT; ++r) {
      const T ar = a[r * g.a_row + k * g.a_col];
      for (int v = 0; v < NV; ++v) acc[r][v] += ar * bv[v];
    }
  }
  for (int r = 0; r < RT; ++r) {
    T* c = g.c + (r0 + r) * g.ldc + n0;
    for (int v = 0; v < NV; ++v) {
      const vec_t out = acc[r][v] * g.alpha;
      std::memcpy(c + v * lanes, &out, sizeof(vec_t));
    }
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
    for (int64_t n = 0; n < nn; ++n) c[n] = acc[r][n] * g.alpha;
  }
}

// The rn (<= kTileRows) rows from r0 of an NV-vector-wide column strip, with the register tile
// of exactly that size (so the last, partial row tile of a block is as fast as the others).
template <typename T, int VB, int NV>
MMFUSE_ALWAYS_INLINE void gemm_rows(const GemmArgs<T>& g, int64_t r0, int64_t rn, int64_t n0) {
  switch (rn) {
    case 6: return gemm_tile_fixed<T, VB, 6, NV>(g, r0, n0);
    case 5: return gemm_tile_fixed<T, VB, 5, NV>(g, r0, n0);
    case 4: return gemm_tile_fixed<T, VB, 4, NV>(g, r0, n0);
    case 3: return gemm_tile_fixed<T, VB, 3, NV>(g, r0, n0);
    case 2: return gemm_tile_fixed<T, VB, 2, NV>(g, r0, n0);
    default: return gemm_tile_fixed<T, VB, 1, NV>(g, r0, n0);
  }
}

// 256-bit vectors: column strips of two vectors (6 x 2 accumulators, 12 of the 16 AVX registers),
// then one vector, then the scalar edge.
template <typename T>
MMFUSE_ALWAYS_INLINE void gemm_impl(const GemmArgs<T>& g) {
  static_assert(kTileRows == 6, "gemm_rows handles up to 6 rows");
  constexpr int lanes = 32 / static_cast<int>(sizeof(T));
  for (int64_t r0 = 0; r0 < g.R; r0 += kTileRows) {
    const int64_t rn = std::min<int64_t>(kTileRows, g.R - r0);
    int64_t n0 = 0;
    for (; n0 + 2 * lanes <= g.N; n0 += 2 * lanes) gemm_rows<T, 32, 2>(g, r0, rn, n0);
    if (n0 + lanes <= g.N) {
      gemm_rows<T, 32, 1>(g, r0, rn, n0);
      n0 += lanes;
    }
    if (n0 < g.N) gemm_tile_edge<T, lanes>(g, r0, rn, n0, g.N - n0);
  }
}

// 512-bit vectors (AVX-512's 32 registers): strips of four vectors (6 x 4 accumulators), then two,
// then one, then the 256-bit strip and the scalar edge. Each element of C is still one chain of
// multiply-adds over k in order, as in the 256-bit build.
template <typename T>
MMFUSE_ALWAYS_INLINE void gemm_impl_512(const GemmArgs<T>& g) {
  constexpr int lanes = 64 / static_cast<int>(sizeof(T)), lanes256 = lanes / 2;
  for (int64_t r0 = 0; r0 < g.R; r0 += kTileRows) {
    const int64_t rn = std::min<int64_t>(kTileRows, g.R - r0);
    int64_t n0 = 0;
    for (; n0 + 4 * lanes <= g.N; n0 += 4 * lanes) gemm_rows<T, 64, 4>(g, r0, rn, n0);
    if (n0 + 2 * lanes <= g.N) {
      gemm_rows<T, 64, 2>(g, r0, rn, n0);
      n0 += 2 * lanes;
    }
    if (n0 + lanes <= g.N) {
      gemm_rows<T, 64, 1>(g, r0, rn, n0);
      n0 += lanes;
    }
    if (n0 + lanes256 <= g.N) {
      gemm_rows<T, 32, 1>(g, r0, rn, n0);
      n0 += lanes256;
    }
    if (n0 < g.N) gemm_tile_edge<T, lanes256>(g, r0, rn, n0, g.N - n0);
  }
}

// exp(x) for x <= 0 on a float vector (Cephes expf: x = k ln2 + r, degree-6 polynomial in r,
// 2^k built in the exponent bits); relative error ~1e-7. Inputs below -87.3 give ~1e-38.
template <typename vf>
MMFUSE_ALWAYS_INLINE vf exp_nonpositive(vf x) {
  typedef int vi __attribute__((vector_size(sizeof(vf))));
  x = x < vf{} - 87.3f ? vf{} - 87.3f : x;
  const vf y = x * 1.44269504088896341f + 0.5f;
  vf k = __builtin_convertvector(__builtin_convertvector(y, vi), vf);  // trunc, then floor:
  k = k + __builtin_convertvector(k > y, vf);                          // (true = -1)
  const vf r = x - k * 0.693359375f + k * 2.12194440e-4f;
  vf p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vi bits = (__builtin_convertvector(k, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// Loads lanes of T from x[j : j + count] into a vector, zero-padded (count <= lanes).
template <typename V, typename T>
MMFUSE_ALWAYS_INLINE V load_partial(const T* x, int64_t count) {
  V v{};
  if (count * static_cast<int64_t>(sizeof(T)) == static_cast<int64_t>(sizeof(V))) {
    std::memcpy(&v, x, sizeof(V));  // a constant size: one vector load (a variable one calls libc memcpy)
  } else {
    std::memcpy(&v, x, sizeof(T) * static_cast<size_t>(count));
  }
  return v;
}

// Stores the first count (<= lanes) lanes of v to x[0 : count] (a full vector: one store).
template <typename V, typename T>
MMFUSE_ALWAYS_INLINE void store_partial(T* x, const V& v, int64_t count) {
  if (count * static_cast<int64_t>(sizeof(T)) == static_cast<int64_t>(sizeof(V))) {
    std::memcpy(x, &v, sizeof(V));
  } else {
    std::memcpy(x, &v, sizeof(T) * static_cast<size_t>(count));
  }
}

template <typename V>
MMFUSE_ALWAYS_INLINE auto lane_sum(V v) {
  constexpr int lanes = sizeof(V) / sizeof(v[0]);
  auto sum = v[0];
  for (int i = 1; i < lanes; ++i) sum += v[i];
  return sum;
}

template <typename T>
MMFUSE_ALWAYS_INLINE T dot_impl(const T* x, const T* y, int64_t len) {
  typedef T vec_t __attribute__((vector_size(32)));
  constexpr int64_t lanes = 32 / sizeof(T);
  vec_t acc[4] = {};
  int64_t j = 0;
  for (; j + 4 * lanes <= len; j += 4 * lanes)
    for (int u = 0; u < 4; ++u) acc[u] += load_partial<vec_t>(x + j + u * lanes, lanes) *
                                          load_partial<vec_t>(y + j + u * lanes, lanes);
  for (; j < len; j += lanes) {
    const int64_t count = std::min(lanes, len - j);
    acc[0] += load_partial<vec_t>(x + j, count) * load_partial<vec_t>(y + j, count);
  }
  return lane_sum((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

// Adds the cosine terms of s[j : j + count], p[j : j + count] (count <= 4) to sp, ss, pp in
// double: 4 lanes of T widened to 4 doubles; masked lanes (and the zero padding) selected to 0.
template <typename T>
MMFUSE_ALWAYS_INLINE void cosine_step(const T* s, const T* p, const T* valid, int64_t j, int64_t count,
                                      double_vec& sp, double_vec& ss, double_vec& pp) {
  typedef T vec4_t __attribute__((vector_size(4 * sizeof(T))));
  const vec4_t v = load_partial<vec4_t>(valid + j, count);
  const double_vec sv = __builtin_convertvector(load_partial<vec4_t>(s + j, count), double_vec);
  const double_vec pv = __builtin_convertvector(load_partial<vec4_t>(p + j, count), double_vec);
  const auto keep = __builtin_convertvector(v != vec4_t{}, long_vec);
  const double_vec zero{};
  const double_vec sk = keep ? sv : zero, pk = keep ? pv : zero;
  sp += sk * pk;
  ss += sk * sk;
  pp += pk * pk;
}

template <typename T>
MMFUSE_ALWAYS_INLINE CosineSums<double> cosine_sums_impl(const T* s, const T* p, const T* valid, int64_t len) {
  constexpr int64_t lanes = 4;
  double_vec sp[2] = {}, ss[2] = {}, pp[2] = {};
  int64_t j = 0;
  for (; j + 2 * lanes <= len; j += 2 * lanes) {
    cosine_step(s, p, valid, j, lanes, sp[0], ss[0], pp[0]);
    cosine_step(s, p, valid, j + lanes, lanes, sp[1], ss[1], pp[1]);
  }
  for (; j < len; j += lanes) cosine_step(s, p, valid, j, std::min(lanes, len - j), sp[0], ss[0], pp[0]);
  return {lane_sum(sp[0] + sp[1]), lane_sum(ss[0] + ss[1]), lane_sum(pp[0] + pp[1])};
}

// The largest n[j] over valid keys, -inf when there is none. Four independent running maxima:
// one compare-and-blend chain would cost its latency per vector.
template <typename T>
MMFUSE_ALWAYS_INLINE T masked_max(const T* n, const T* valid, int64_t len) {
  typedef T vec_t __attribute__((vector_size(32)));
  constexpr int64_t lanes = 32 / sizeof(T);
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  vec_t mx[4] = {vec_t{} + kNegInf, vec_t{} + kNegInf, vec_t{} + kNegInf, vec_t{} + kNegInf};
  int64_t j = 0;
  for (; j + 4 * lanes <= len; j += 4 * lanes)
    for (int u = 0; u < 4; ++u) {
      const vec_t x = load_partial<vec_t>(n + j + u * lanes, lanes);
      const vec_t v = load_partial<vec_t>(valid + j + u * lanes, lanes);
      mx[u] = (v != vec_t{}) & (x > mx[u]) ? x : mx[u];
    }
  for (; j < len; j += lanes) {
    const int64_t count = std::min(lanes, len - j);
    const vec_t x = load_partial<vec_t>(n + j, count);
    const vec_t v = load_partial<vec_t>(valid + j, count);  // zero-padded: the padding is not valid
    mx[0] = (v != vec_t{}) & (x > mx[0]) ? x : mx[0];
  }
  T best = kNegInf;
  for (int u = 0; u < 4; ++u)
    for (int i = 0; i < lanes; ++i) best = mx[u][i] > best ? mx[u][i] : best;
  return best;
}

template <typename T>
MMFUSE_ALWAYS_INLINE void masked_softmax_impl(const T* n, const T* valid, int64_t len, bool any_valid, T* a) {
  if (!any_valid) {  // no valid key: all-zero weights
    std::fill(a, a + len, T(0));
    return;
  }
  // the max over valid keys; -inf when all of them are -inf (then exp(-inf - -inf) = NaN below,
  // as IEEE softmax gives). NaN at a valid key is skipped here but reaches the sum below.
  const T mx = masked_max(n, valid, len);
  T sum = 0;
  int64_t j = 0;
  if constexpr (std::is_same_v<T, float>) {
    typedef float vf __attribute__((vector_size(32)));
    constexpr int64_t lanes = 8;
    vf vsum{};
    for (; j < len; j += lanes) {  // the tail through the same vector code (zero-padded, masked)
      const int64_t count = std::min(lanes, len - j);
      vf x = load_partial<vf>(n + j, count);
      const vf v = load_partial<vf>(valid + j, count);
      x = x - mx;
      x = x > vf{} ? vf{} : x;  // masked keys may exceed the max: keep exp finite, then select 0
      const vf e = v != vf{} ? exp_nonpositive(x) : vf{};
      store_partial(a + j, e, count);
      vsum += e;
    }
    for (int i = 0; i < lanes; ++i) sum += vsum[i];
  } else {
    for (; j < len; ++j) {
      a[j] = valid[j] != T(0) ? std::exp(n[j] - mx) : T(0);
      sum += a[j];
    }
  }
  const T inv = T(1) / sum;
  // 0 at masked keys even if sum is NaN; a vector select (the scalar loop compiled to a branch per key)
  typedef T vec_t __attribute__((vector_size(32)));
  constexpr int64_t vlanes = 32 / sizeof(T);
  for (j = 0; j < len; j += vlanes) {
    const int64_t count = std::min(vlanes, len - j);
    const vec_t x = load_partial<vec_t>(a + j, count), v = load_partial<vec_t>(valid + j, count);
    const vec_t r = v != vec_t{} ? x * inv : vec_t{};
    store_partial(a + j, r, count);
  }
}

// dst[c * rows + r] = src[r * cols + c], in 8 x 8 tiles (AVX2 shuffles) where the build has
// them: a scalar transpose is one strided store per element.
// Rows [r0, r1) x columns [c0, c1) of that transpose, one element at a time.
template <typename T>
MMFUSE_ALWAYS_INLINE void transpose_part(const T* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                                         int64_t c1, T* dst) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
}

template <typename T>
MMFUSE_ALWAYS_INLINE void transpose_impl(const T* src, int64_t rows, int64_t cols, T* dst) {
  transpose_part(src, rows, cols, 0, rows, 0, cols, dst);
}

#ifdef MMFUSE_X86_DISPATCH
__attribute__((target("avx2,fma"))) void transpose_avx2(const float* src, int64_t rows, int64_t cols, float* dst) {
  const int64_t r8 = (rows / 8) * 8, c8 = (cols / 8) * 8;
  for (int64_t r = 0; r < r8; r += 8)
    for (int64_t c = 0; c < c8; c += 8) {
      __m256 x[8], t[8];
      for (int i = 0; i < 8; ++i) x[i] = _mm256_loadu_ps(src + (r + i) * cols + c);
      for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(x[i], x[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(x[i], x[i + 1]);
      }
      for (int i = 0; i < 8; i += 4) {
        x[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        x[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        x[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        x[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
      }
      // x[i] (i < 4): column c+i of rows r..r+3 in its low half, column c+i+4 in its high half;
      // x[i + 4] the same for rows r+4..r+7
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(dst + (c + i) * rows + r, _mm256_permute2f128_ps(x[i], x[i + 4], 0x20));
        _mm256_storeu_ps(dst + (c + i + 4) * rows + r, _mm256_permute2f128_ps(x[i], x[i + 4], 0x31));
      }
    }
  // the columns beyond c8 of the first r8 rows, then the rows beyond r8
  transpose_part(src, rows, cols, 0, r8, c8, cols, dst);
  transpose_part(src, rows, cols, r8, rows, 0, cols, dst);
}
#endif

// dN of one softmax row, in place: d holds dA on entry.
template <typename T>
MMFUSE_ALWAYS_INLINE void softmax_backward_impl(const T* a, const T* valid, const T* grad_n, int64_t len, T* d) {
  typedef T vec_t __attribute__((vector_size(32)));
  constexpr int64_t lanes = 32 / sizeof(T);
  const T rowdot = dot_impl(a, d, len);
  for (int64_t j = 0; j < len; j += lanes) {
    const int64_t count = std::min(lanes, len - j);
    const vec_t av = load_partial<vec_t>(a + j, count), dv = load_partial<vec_t>(d + j, count);
    const vec_t v = load_partial<vec_t>(valid + j, count), gv = load_partial<vec_t>(grad_n + j, count);
    const vec_t soft = av * (dv - rowdot);
    store_partial(d + j, (v != vec_t{} ? soft : vec_t{}) + gv, count);
  }
}

// ds and dp of one gated row: every key computed, then the cosine terms selected (masked keys may
// hold inf / NaN in s or p).
template <typename T>
MMFUSE_ALWAYS_INLINE void gate_backward_impl(const GateBackward<T>& k, const T* dn, const T* s, const T* p,
                                             const T* valid, int64_t len, T* ds, T* dp) {
  typedef T vec_t __attribute__((vector_size(32)));
  constexpr int64_t lanes = 32 / sizeof(T);
  for (int64_t j = 0; j < len; j += lanes) {
    const int64_t count = std::min(lanes, len - j);
    const vec_t dnv = load_partial<vec_t>(dn + j, count);
    vec_t ds_v = k.scale * (k.half_g * dnv), dp_v = dnv / T(2);
    if (!k.clamped) {
      const vec_t us = load_partial<vec_t>(s + j, count) * k.inv_ns, up = load_partial<vec_t>(p + j, count) * k.inv_np;
      const vec_t cos_s = k.ks * (up - k.c * us), cos_p = k.kp * (us - k.c * up);
      const auto keep = load_partial<vec_t>(valid + j, count) != vec_t{};
      ds_v = k.scale * (k.half_g * dnv + (keep ? cos_s : vec_t{}));
      dp_v = dp_v + (keep ? cos_p : vec_t{});
    }
    store_partial(ds + j, ds_v, count);
    store_partial(dp + j, dp_v, count);
  }
}

// The instruction set the kernels use, chosen once: the widest the CPU supports, capped by
// ATEN_CPU_CAPABILITY (default, avx2, avx512) as torch's own CPU kernels are, so that one
// variable selects the code path of both (tests run every path on one machine this way).
enum class Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

Isa active_isa() {
  static const Isa isa = [] {
    Isa best = Isa::kBaseline;
#ifdef MMFUSE_X86_DISPATCH
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
    if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
      best = Isa::kAvx512;
#endif
    const char* env = std::getenv("ATEN_CPU_CAPABILITY");
    if (env == nullptr) return best;
    const std::string_view want(env);
    Isa cap = best;
    if (want == "default") cap = Isa::kBaseline;
    if (want == "avx2") cap = Isa::kAvx2;
    return std::min(cap, best);
  }();
  return isa;
}

#ifdef MMFUSE_X86_DISPATCH
// The matrix product compiled for AVX2 + FMA and for AVX-512 (512-bit vectors); the widest the
// CPU has is chosen at run time.
__attribute__((target("avx2,fma"))) void gemm_avx2(const GemmArgs<float>& g) { gemm_impl(g); }
__attribute__((target("avx2,fma"))) void gemm_avx2(const GemmArgs<double>& g) { gemm_impl(g); }
#define MMFUSE_AVX512 "avx512f,avx512vl,avx2,fma"
__attribute__((target(MMFUSE_AVX512))) void gemm_avx512(const GemmArgs<float>& g) { gemm_impl_512(g); }
__attribute__((target(MMFUSE_AVX512))) void gemm_avx512(const GemmArgs<double>& g) { gemm_impl_512(g); }
#undef MMFUSE_AVX512

// A row function NAME_impl compiled for AVX2 + FMA as well, and NAME_dispatch, which calls that
// build when the CPU has it. These stay on 256-bit vectors even with AVX-512 (GCC turns 512-bit
// vector-extension selects into scalar code); the float32 softmax and cosine sums have 512-bit
// intrinsic versions below.
#define MMFUSE_ROW_FUNCTION(NAME)                                                                   \
  template <typename... Args>                                                                       \
  __attribute__((target("avx2,fma"))) auto NAME##_avx2(Args... args) { return NAME##_impl(args...); } \
  template <typename... Args>                                                                       \
  auto NAME##_dispatch(Args... args) {                                                              \
    if (active_isa() >= Isa::kAvx2) return NAME##_avx2(args...);                                    \
    return NAME##_impl(args...);                                                                    \
  }
#else
#define MMFUSE_ROW_FUNCTION(NAME)                                                                   \
  template <typename... Args>                                                                       \
  auto NAME##_dispatch(Args... args) {                                                              \
    return NAME##_impl(args...);                                                                    \
  }
#endif
MMFUSE_ROW_FUNCTION(masked_softmax)
MMFUSE_ROW_FUNCTION(dot)
MMFUSE_ROW_FUNCTION(cosine_sums)
MMFUSE_ROW_FUNCTION(softmax_backward)
MMFUSE_ROW_FUNCTION(gate_backward)
#undef MMFUSE_ROW_FUNCTION

#ifdef MMFUSE_X86_DISPATCH
// float32 row functions on 512-bit vectors, written with intrinsics: AVX-512's mask registers
// give the masked selects, the zero-padded tails (masked loads and stores) and the masked sums
// directly (GCC's vector extensions would turn the 512-bit selects into scalar code). Same rules
// as the 256-bit builds: NaN at a valid key propagates, masked keys are selected away.
#define MMFUSE_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))

MMFUSE_AVX512 MMFUSE_ALWAYS_INLINE __mmask16 tail16(int64_t count) {
  return static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << count) - 1);
}

// The valid keys among the first `count` (<= 16) from `valid`, as a mask.
MMFUSE_AVX512 MMFUSE_ALWAYS_INLINE __mmask16 valid16(const float* valid, __mmask16 t) {
  return _mm512_mask_cmp_ps_mask(t, _mm512_maskz_loadu_ps(t, valid), _mm512_setzero_ps(), _CMP_NEQ_UQ);
}

// exp_nonpositive on 16 lanes: the same Cephes steps (floor by rounding toward -inf).
MMFUSE_AVX512 MMFUSE_ALWAYS_INLINE __m512 exp_nonpositive_512(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-87.3f), x);  // (-87.3 > x) ? -87.3 : x, so NaN stays NaN
  const __m512 y = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f));
  const __m512 k = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512 r =
      _mm512_fmadd_ps(k, _mm512_set1_ps(2.12194440e-4f), _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x));
  __m512 p = _mm512_fmadd_ps(r, _mm512_set1_ps(1.9875691500e-4f), _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(k), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

MMFUSE_AVX512 void masked_softmax_avx512(const float* n, const float* valid, int64_t len, bool any_valid, float* a) {
  if (!any_valid) {
    std::fill(a, a + len, 0.0f);
    return;
  }
  const __m512 zero = _mm512_setzero_ps();
  // max over valid keys (NaN skipped: max(x, m) keeps m when x is NaN), four running maxima
  __m512 mx[4];
  for (__m512& m : mx) m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 64 <= len; j += 64)
    for (int u = 0; u < 4; ++u) {
      const __mmask16 kv = valid16(valid + j + 16 * u, 0xFFFF);
      mx[u] = _mm512_mask_max_ps(mx[u], kv, _mm512_loadu_ps(n + j + 16 * u), mx[u]);
    }
  for (; j < len; j += 16) {
    const __mmask16 t = tail16(len - j);
    mx[0] = _mm512_mask_max_ps(mx[0], valid16(valid + j, t), _mm512_maskz_loadu_ps(t, n + j), mx[0]);
  }
  const __m512 mx4 = _mm512_max_ps(_mm512_max_ps(mx[0], mx[1]), _mm512_max_ps(mx[2], mx[3]));
  float best = mx4[0];  // lane by lane (GCC 12's _mm512_reduce_* warn spuriously)
  for (int i = 1; i < 16; ++i) best = mx4[i] > best ? mx4[i] : best;
  const __m512 vmax = _mm512_set1_ps(best);
  __m512 vsum = zero;
  for (j = 0; j < len; j += 16) {
    const __mmask16 t = tail16(len - j);
    // (0 < x) ? 0 : x: masked keys may exceed the max (keep exp finite), NaN stays NaN
    const __m512 x = _mm512_min_ps(zero, _mm512_sub_ps(_mm512_maskz_loadu_ps(t, n + j), vmax));
    const __m512 e = _mm512_maskz_mov_ps(valid16(valid + j, t), exp_nonpositive_512(x));
    _mm512_mask_storeu_ps(a + j, t, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / lane_sum(vsum));
  for (j = 0; j < len; j += 16) {  // 0 at masked keys even if the sum is NaN
    const __mmask16 t = tail16(len - j);
    _mm512_mask_storeu_ps(a + j, t, _mm512_maskz_mul_ps(valid16(valid + j, t), _mm512_maskz_loadu_ps(t, a + j), inv));
  }
}

// Eight floats widened to eight doubles per step; masked keys are zeroed by the masked convert.
MMFUSE_AVX512 CosineSums<double> cosine_sums_avx512(const float* s, const float* p, const float* valid, int64_t len) {
  __m512d sp[2] = {_mm512_setzero_pd(), _mm512_setzero_pd()}, ss[2] = {sp[0], sp[0]}, pp[2] = {sp[0], sp[0]};
  for (int64_t j = 0; j < len; j += 8) {
    const int u = static_cast<int>((j / 8) & 1);
    const __mmask8 t = static_cast<__mmask8>(len - j >= 8 ? 0xFF : (1u << (len - j)) - 1);
    const __mmask8 kv = _mm256_mask_cmp_ps_mask(t, _mm256_maskz_loadu_ps(t, valid + j), _mm256_setzero_ps(),
                                                _CMP_NEQ_UQ);
    const __m512d sv = _mm512_maskz_cvtps_pd(kv, _mm256_maskz_loadu_ps(t, s + j));
    const __m512d pv = _mm512_maskz_cvtps_pd(kv, _mm256_maskz_loadu_ps(t, p + j));
    sp[u] = _mm512_fmadd_pd(sv, pv, sp[u]);
    ss[u] = _mm512_fmadd_pd(sv, sv, ss[u]);
    pp[u] = _mm512_fmadd_pd(pv, pv, pp[u]);
  }
  return {lane_sum(_mm512_add_pd(sp[0], sp[1])), lane_sum(_mm512_add_pd(ss[0], ss[1])),
          lane_sum(_mm512_add_pd(pp[0], pp[1]))};
}
#undef MMFUSE_AVX512
#endif

// Opt-in (MMFUSE_CPU_BLAS=1): the per-block products through the BLAS that torch ships (MKL's
// Fortran sgemm_ / dgemm_ in the official x86-64 wheels), looked up at run time in the already
// loaded library: nothing to link, and the micro-kernel remains when a build has none. MKL runs
// each call on the calling thread (MKL_Set_Num_Threads_Local(1)), so the result of a block never
// depends on the thread count. Off by default: on the development machine (AVX-512 Xeon, 2
// cores) the 32-row blocks ran no faster through MKL than through the micro-kernel (fwd + bwd
// 8x8x128x64 float32, one thread: 39.9 vs 38.8 ms thread time over four interleaved runs at
// load 12); docs/op.md, "Kernel design: CPU".
template <typename T>
using fortran_gemm_t = void (*)(const char*, const char*, const int*, const int*, const int*, const T*, const T*,
                                const int*, const T*, const int*, const T*, T*, const int*);
struct Blas {
  fortran_gemm_t<float> sgemm = nullptr;
  fortran_gemm_t<double> dgemm = nullptr;
  int (*set_threads_local)(int) = nullptr;
};

const Blas& blas() {
  static const Blas b = [] {
    Blas r;
    const char* env = std::getenv("MMFUSE_CPU_BLAS");
    if (env == nullptr || std::string_view(env) != "1") return r;  // default: the micro-kernel
    // Python loads torch's libraries with RTLD_LOCAL: find the one that holds ATen (and MKL) by
    // the address of one of its functions, and look the symbols up in that very library.
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&at::get_num_threads), &info) == 0 || info.dli_fname == nullptr) return r;
    void* lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (lib == nullptr) return r;
    r.set_threads_local = reinterpret_cast<int (*)(int)>(dlsym(lib, "MKL_Set_Num_Threads_Local"));
    if (r.set_threads_local == nullptr) return r;  // only MKL's single-thread call is known to be deterministic
    r.sgemm = reinterpret_cast<fortran_gemm_t<float>>(dlsym(lib, "sgemm_"));
    r.dgemm = reinterpret_cast<fortran_gemm_t<double>>(dlsym(lib, "dgemm_"));
    return r;  // the handle stays open: torch is never unloaded
  }();
  return b;
}

// Blocks below this many multiply-adds stay on the micro-kernel (a BLAS call has a fixed cost).
constexpr int64_t kBlasMinWork = 16 * 1024;

// C = A . B through BLAS when it is available and A is row-major or a transposed view; false
// when the caller must use the micro-kernel. Row-major C [R, N] is column-major C^T [N, R], so
// BLAS computes C^T = B^T . A^T with B as its first operand.
template <typename T>
bool gemm_blas(const GemmArgs<T>& g) {
  const Blas& b = blas();
  fortran_gemm_t<T> f;
  if constexpr (std::is_same_v<T, float>) f = b.sgemm; else f = b.dgemm;
  if (f == nullptr || g.K == 0 || g.R * g.K * g.N < kBlasMinWork) return false;
  const bool a_rows = g.a_col == 1, a_cols = g.a_row == 1 && !a_rows;
  if (!(a_rows || a_cols)) return false;
  const int64_t lda = a_rows ? g.a_row : g.a_col;
  for (const int64_t x : {g.R, g.K, g.N, lda, g.ldb, g.ldc})
    if (x > INT_MAX) return false;
  // leading dimensions as BLAS requires them (a stride is irrelevant along a dimension of size 1)
  const int64_t need_a = a_rows ? g.K : g.R;
  if ((lda < need_a && (a_rows ? g.R : g.K) > 1) || (g.ldb < g.N && g.K > 1) || (g.ldc < g.N && g.R > 1)) return false;
  const int m = static_cast<int>(g.N), n = static_cast<int>(g.R), k = static_cast<int>(g.K);
  const int ld_b = static_cast<int>(std::max(g.ldb, g.N)), ld_a = static_cast<int>(std::max(lda, need_a));
  const int ld_c = static_cast<int>(std::max(g.ldc, g.N));
  const T zero = 0;
  const char no = 'N', tr = 'T';
  const int previous = b.set_threads_local(1);
  f(&no, a_rows ? &no : &tr, &m, &n, &k, &g.alpha, g.b, &ld_b, g.a, &ld_a, &zero, g.c, &ld_c);
  b.set_threads_local(previous);
  return true;
}

template <typename T>
void gemm_dispatch(const GemmArgs<T>& g) {
  if (gemm_blas(g)) return;
#ifdef MMFUSE_X86_DISPATCH
  if (active_isa() == Isa::kAvx512) return gemm_avx512(g);
  if (active_isa() == Isa::kAvx2) return gemm_avx2(g);
#endif
  gemm_impl(g);
}

}  // namespace

}  // namespace gra_cpu

const char* gra_cpu_capability() {
  switch (gra_cpu::active_isa()) {
    case gra_cpu::Isa::kAvx512: return "avx512";
    case gra_cpu::Isa::kAvx2: return "avx2";
    default: return "default";
  }
}

namespace gra_cpu {

float dot(const float* x, const float* y, int64_t len) { return dot_dispatch(x, y, len); }
double dot(const double* x, const double* y, int64_t len) { return dot_dispatch(x, y, len); }
CosineSums<double> cosine_sums(const float* s, const float* p, const float* valid, int64_t len) {
#ifdef MMFUSE_X86_DISPATCH
  if (active_isa() == Isa::kAvx512) return cosine_sums_avx512(s, p, valid, len);
#endif
  return cosine_sums_dispatch(s, p, valid, len);
}
CosineSums<double> cosine_sums(const double* s, const double* p, const double* valid, int64_t len) {
  return cosine_sums_dispatch(s, p, valid, len);
}

void gemm(const GemmArgs<float>& g) { gemm_dispatch(g); }
void gemm(const GemmArgs<double>& g) { gemm_dispatch(g); }
void masked_softmax(const float* n, const float* valid, int64_t len, bool any_valid, float* a) {
#ifdef MMFUSE_X86_DISPATCH
  if (active_isa() == Isa::kAvx512) return masked_softmax_avx512(n, valid, len, any_valid, a);
#endif
  masked_softmax_dispatch(n, valid, len, any_valid, a);
}
void masked_softmax(const double* n, const double* valid, int64_t len, bool any_valid, double* a) {
  masked_softmax_dispatch(n, valid, len, any_valid, a);
}
void transpose(const float* src, int64_t rows, int64_t cols, float* dst) {
#ifdef MMFUSE_X86_DISPATCH
  if (active_isa() >= Isa::kAvx2) return transpose_avx2(src, rows, cols, dst);
#endif
  transpose_impl(src, rows, cols, dst);
}
void transpose(const double* src, int64_t rows, int64_t cols, double* dst) { transpose_impl(src, rows, cols, dst); }
void softmax_backward(const float* a, const float* valid, const float* grad_n, int64_t len, float* d) {
  softmax_backward_dispatch(a, valid, grad_n, len, d);
}
void softmax_backward(const double* a, const double* valid, const double* grad_n, int64_t len, double* d) {
  softmax_backward_dispatch(a, valid, grad_n, len, d);
}
void gate_backward(const GateBackward<float>& k, const float* dn, const float* s, const float* p, const float* valid,
                   int64_t len, float* ds, float* dp) {
  gate_backward_dispatch(k, dn, s, p, valid, len, ds, dp);
}
void gate_backward(const GateBackward<double>& k, const double* dn, const double* s, const double* p,
                   const double* valid, int64_t len, double* ds, double* dp) {
  gate_backward_dispatch(k, dn, s, p, valid, len, ds, dp);
}

}  // namespace gra_cpu
}  // namespace mmfuse
