// CUDA kernels of the fused gated residual attention op (contract: docs/op.md).
//
// Structure (both kernels): one block of kThreads = 4 warps handles one (batch b, head h,
// block of R query rows); warp w owns the RW rows [w*RW, (w+1)*RW) of the block.
//   1. The block's q rows (float, zero-padded) go to shared memory; K streams through a
//      shared tile of kTileKeys keys x kChunk features; each thread accumulates an RW x 2
//      micro-tile of raw scores s = scale * q.k (lanes own keys lane and lane+32 of the tile).
//      The score rows [R, Lk] stay on chip ("rows", float) — in shared memory when they fit,
//      else in a float32 global workspace (same code; only the pointer differs).
//   2. Row pass, one warp per row: cosine gate over the valid keys, combination n,
//      masked softmax statistics (max/sum with warp shuffles), all in float32.
//   3. Forward: out = (e / sum) . V with V streamed through the same tile.
//      Backward: recomputes s and the softmax, computes dA = dOut . V^T the same way as s,
//      then per row dN, the gate gradients and dS, dPrev; it writes A and scale*dS, from
//      which the host gets dQ, dK, dV with three batched GEMMs (deterministic, no atomics).
// Every loop is bounded explicitly: Lk, D and Dv need not be multiples of anything; tiles
// are zero-filled past the ends, score rows are zero-padded to a multiple of kTileKeys.
#pragma once

#include "gra_common.cuh"

namespace mmfuse {
namespace gra {

constexpr int kWarpSize = 32;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kTileKeys = 64;             // keys per K/V tile (two per lane)
constexpr int kChunk = 64;                // features (columns of q, k, v, dOut) per tile
constexpr int kTileStride = kChunk + 4;   // 68 floats: 16-byte loads of 8 lanes hit distinct banks
constexpr int kFwdRowsPerWarp = 8;        // forward: R = 32 query rows per block
constexpr int kBwdRowsPerWarp = 4;        // backward: R = 16 (three score-row buffers)
constexpr float kCosineEps = 1e-8f;       // as mmfuse/ops/reference.py: COSINE_EPS

// Effective mode: "none" or prev absent -> kPlain (n = s).
enum EffMode : int { kPlain = 0, kResidual = 1, kGated = 2 };

// Shared-memory plan of one block, in floats (all offsets are multiples of 4 floats).
struct GraLayout {
  int rows;            // query rows per block (R)
  int q_stride;        // round_up(D, kChunk)
  int do_stride;       // round_up(Dv, kChunk) (backward: dOut rows), else 0
  int row_stride;      // round_up(Lk, kTileKeys): stride of the score rows
  int num_row_bufs;    // score-row buffers per block: 1 forward, 3 backward
  int q_off, do_off, tile_off, aux_off, rows_off;
  bool rows_in_smem;   // false: rows live in GraInputs::rows_ws
  int64_t smem_bytes;  // dynamic shared memory of the launch
  // tensor-core kernels only (gra_tc_kernels.cuh): 16-bit staging of q / dOut blocks and K / V
  // tiles, the e tile and the float out accumulator; D and Dv rounded up to 16
  int tc_d16, tc_dv16, tc_stage_stride, tc_p_stride, tc_acc_stride;
  int tc_a_off, tc_p_off, tc_acc_off;
  GRA_HOST_DEVICE int64_t row_floats_per_block() const { return int64_t(num_row_bufs) * rows * row_stride; }
};

inline int64_t round_up64(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

inline GraLayout plan_layout(int rows, int64_t D, int64_t Dv_rows, int64_t Lk, int num_row_bufs,
                             bool rows_in_smem) {
  GraLayout L{};
  L.rows = rows;
  L.q_stride = static_cast<int>(round_up64(D, kChunk));
  L.do_stride = static_cast<int>(round_up64(Dv_rows, kChunk));
  L.row_stride = static_cast<int>(round_up64(Lk, kTileKeys));
  L.num_row_bufs = num_row_bufs;
  int64_t off = 0;
  L.q_off = static_cast<int>(off);
  off += int64_t(rows) * L.q_stride;
  L.do_off = static_cast<int>(off);
  off += int64_t(rows) * L.do_stride;
  L.tile_off = static_cast<int>(off);
  off += int64_t(kTileKeys) * kTileStride;
  L.aux_off = static_cast<int>(off);
  off += round_up64(rows > 2 * kWarps ? rows : 2 * kWarps, 4);
  L.rows_off = static_cast<int>(off);
  L.rows_in_smem = rows_in_smem;
  if (rows_in_smem) off += L.row_floats_per_block();
  L.smem_bytes = off * int64_t(sizeof(float));
  return L;
}

// Inputs common to both kernels. Pointers are to contiguous tensors; prev is null unless the
// effective mode reads it; key_mask is null when absent; gate params are float32 [H].
template <typename scalar_t>
struct GraInputs {
  const scalar_t* q;
  const scalar_t* k;
  const scalar_t* v;
  const scalar_t* prev;
  const bool* key_mask;
  const float* gate_weight;
  const float* gate_bias;
  float* rows_ws;  // [grid, num_row_bufs, R, row_stride] when !layout.rows_in_smem
  int H, Lq, Lk, D, Dv;
  int num_row_blocks;
  int mode;  // EffMode
  float scale;
  bool vec_q, vec_k, vec_v;  // 16-byte loads allowed (aligned base, row length a multiple of the vector)
  GraLayout layout;
};

template <typename scalar_t>
struct GraForwardParams {
  GraInputs<scalar_t> in;
  scalar_t* out;     // [B, H, Lq, Dv]
  scalar_t* scores;  // [B, H, Lq, Lk]
};

template <typename scalar_t>
struct GraBackwardParams {
  GraInputs<scalar_t> in;
  const scalar_t* grad_out;     // [B, H, Lq, Dv]
  const scalar_t* grad_scores;  // [B, H, Lq, Lk]
  bool vec_do;
  scalar_t* attn;         // out: A [B, H, Lq, Lk]
  scalar_t* grad_logits;  // out: scale * dS [B, H, Lq, Lk]
  scalar_t* grad_prev;    // out: dPrev [B, H, Lq, Lk], null when prev is absent
  float* gate_partial;    // out: [2, grid] per-block sums of dw, db (gated mode only)
};

// ---------------------------------------------------------------------------------------
// Small helpers

template <typename scalar_t>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / int(sizeof(scalar_t));
  scalar_t v[kSize];
};

GRA_DEVICE float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }

GRA_DEVICE float dot4(const float4 a, const float4 b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

// Butterfly reductions: every lane ends with the same (bit-identical) value.
GRA_DEVICE float warp_sum(float x) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

GRA_DEVICE double warp_sum(double x) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

GRA_DEVICE float warp_max(float x) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

GRA_DEVICE int lane_id() { return static_cast<int>(threadIdx.x) % kWarpSize; }
GRA_DEVICE int warp_id() { return static_cast<int>(threadIdx.x) / kWarpSize; }

// Copies rows [row0, row0 + NROWS) x columns [col0, col0 + kChunk) of the row-major matrix
// src [nrows, ncols] into dst (float, row stride dst_stride), zero-filling rows >= nrows and
// columns >= ncols, and rows whose row_mask entry is false (row_mask [nrows] or null: masked keys'
// values are selected away, so an inf / NaN there never reaches a product).
// vec_ok: 16-byte loads (src 16-byte aligned and ncols % vector == 0).
template <int NROWS, typename scalar_t>
GRA_DEVICE void load_chunk(float* __restrict__ dst, int dst_stride, const scalar_t* __restrict__ src, int nrows,
                           int ncols, int row0, int col0, bool vec_ok, const bool* __restrict__ row_mask = nullptr) {
  const int tid = static_cast<int>(threadIdx.x);
  if (vec_ok) {
    constexpr int VEC = Vec16<scalar_t>::kSize;
    constexpr int kPerRow = kChunk / VEC;
    static_assert((NROWS * kPerRow) % kThreads == 0, "tile must split evenly over the block");
    constexpr int kIters = NROWS * kPerRow / kThreads;
    float4 vals[kIters][VEC / 4];  // all loads in flight before the first store
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int idx = it * kThreads + tid;
      const int row = row0 + idx / kPerRow, col = col0 + (idx % kPerRow) * VEC;
      if (row < nrows && col < ncols && (row_mask == nullptr || row_mask[row])) {
        const Vec16<scalar_t> raw = *reinterpret_cast<const Vec16<scalar_t>*>(src + int64_t(row) * ncols + col);
#pragma unroll
        for (int t = 0; t < VEC / 4; ++t)
          vals[it][t] = make_float4(static_cast<float>(raw.v[4 * t]), static_cast<float>(raw.v[4 * t + 1]),
                                    static_cast<float>(raw.v[4 * t + 2]), static_cast<float>(raw.v[4 * t + 3]));
      } else {
#pragma unroll
        for (int t = 0; t < VEC / 4; ++t) vals[it][t] = make_float4(0.f, 0.f, 0.f, 0.f);
      }
    }
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int idx = it * kThreads + tid;
      // dst_stride and VEC are multiples of 4 floats: 16-byte shared stores
      float4* d = reinterpret_cast<float4*>(dst + (idx / kPerRow) * dst_stride + (idx % kPerRow) * VEC);
#pragma unroll
      for (int t = 0; t < VEC / 4; ++t) d[t] = vals[it][t];
    }
  } else {
    static_assert((NROWS * kChunk) % kThreads == 0, "tile must split evenly over the block");
    constexpr int kIters = NROWS * kChunk / kThreads;
#pragma unroll 4
    for (int it = 0; it < kIters; ++it) {
      const int idx = it * kThreads + tid;
      const int r = idx / kChunk, c = idx % kChunk;
      const int row = row0 + r, col = col0 + c;
      dst[r * dst_stride + c] = (row < nrows && col < ncols && (row_mask == nullptr || row_mask[row]))
                                    ? static_cast<float>(src[int64_t(row) * ncols + col])
                                    : 0.f;
    }
  }
}

// The block's NROWS rows [row0, row0 + NROWS) of src [nrows, ncols] -> dst [NROWS, dst_stride]
// (dst_stride = round_up(ncols, kChunk); zero-padded).
template <int NROWS, typename scalar_t>
GRA_DEVICE void load_rows(float* __restrict__ dst, int dst_stride, const scalar_t* __restrict__ src, int nrows, int ncols,
                          int row0, bool vec_ok) {
  for (int c0 = 0; c0 < dst_stride; c0 += kChunk) load_chunk<NROWS>(dst + c0, dst_stride, src, nrows, ncols, row0, c0, vec_ok);
}

// out[r][j] = factor * <rows[r], mat[j]> for the block's R = kWarps * RW rows and every j in
// [0, round_up(Lk, kTileKeys)) (0 past Lk). rows: shared [R, rows_stride], zero-padded to
// rows_stride = round_up(Dm, kChunk); mat: [Lk, Dm] of this (b, h); out: [R, out_stride].
// Each warp writes only its own rows. Starts with a barrier (rows may have just been loaded).
template <int RW, typename scalar_t>
GRA_DEVICE void rows_dot_mat(const float* __restrict__ rows, int rows_stride, const scalar_t* __restrict__ mat, int Lk,
                             int Dm, bool vec_ok, float factor, float* __restrict__ out, int out_stride,
                             float* __restrict__ tile, const bool* __restrict__ row_mask = nullptr) {
  const int lane = lane_id(), warp = warp_id();
  const float* my_rows = rows + warp * RW * rows_stride;
  float* my_out = out + int64_t(warp) * RW * out_stride;
  for (int j0 = 0; j0 < Lk; j0 += kTileKeys) {
    float acc[RW][2];
#pragma unroll
    for (int r = 0; r < RW; ++r) acc[r][0] = acc[r][1] = 0.f;
    for (int d0 = 0; d0 < Dm; d0 += kChunk) {
      __syncthreads();  // the previous tile is consumed
      load_chunk<kTileKeys>(tile, kTileStride, mat, Lk, Dm, j0, d0, vec_ok, row_mask);
      __syncthreads();
      const float* k0 = tile + lane * kTileStride;
      const float* k1 = k0 + kWarpSize * kTileStride;
      const float* x = my_rows + d0;
#pragma unroll 4
      for (int d = 0; d < kChunk; d += 4) {
        const float4 ka = ld4(k0 + d), kb = ld4(k1 + d);
#pragma unroll
        for (int r = 0; r < RW; ++r) {
          const float4 xv = ld4(x + r * rows_stride + d);  // broadcast: one address per warp
          acc[r][0] = dot4(xv, ka, acc[r][0]);
          acc[r][1] = dot4(xv, kb, acc[r][1]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < RW; ++r) {
      float* o = my_out + int64_t(r) * out_stride + j0 + lane;
      o[0] = factor * acc[r][0];
      o[kWarpSize] = factor * acc[r][1];
    }
  }
}

// out[r][c] = row_scale[r] * sum_j buf[r][j] * mat[j][c] for rows r < nrows_valid, c < Dm.
// buf: [R, buf_stride] with zeros in [Lk, buf_stride); mat: [Lk, Dm]; out: [nrows_valid, Dm].
// Each warp reads only its own rows of buf and row_scale.
template <int RW, typename scalar_t>
GRA_DEVICE void rows_times_mat(const float* __restrict__ buf, int buf_stride, const scalar_t* __restrict__ mat, int Lk,
                               int Dm, bool vec_ok, const float* __restrict__ row_scale, scalar_t* __restrict__ out,
                               int nrows_valid, float* __restrict__ tile, const bool* __restrict__ row_mask = nullptr) {
  const int lane = lane_id(), warp = warp_id();
  const float* my_buf = buf + int64_t(warp) * RW * buf_stride;
  for (int c0 = 0; c0 < Dm; c0 += kChunk) {
    float acc[RW][2];
#pragma unroll
    for (int r = 0; r < RW; ++r) acc[r][0] = acc[r][1] = 0.f;
    for (int j0 = 0; j0 < Lk; j0 += kTileKeys) {
      __syncthreads();
      load_chunk<kTileKeys>(tile, kTileStride, mat, Lk, Dm, j0, c0, vec_ok, row_mask);
      __syncthreads();
#pragma unroll 2
      for (int jj = 0; jj < kTileKeys; jj += 4) {
        const float* t = tile + jj * kTileStride + lane;
        float v0[4], v1[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          v0[u] = t[u * kTileStride];
          v1[u] = t[u * kTileStride + kWarpSize];
        }
#pragma unroll
        for (int r = 0; r < RW; ++r) {
          const float4 e = ld4(my_buf + int64_t(r) * buf_stride + j0 + jj);  // broadcast
          acc[r][0] = fmaf(e.x, v0[0], fmaf(e.y, v0[1], fmaf(e.z, v0[2], fmaf(e.w, v0[3], acc[r][0]))));
          acc[r][1] = fmaf(e.x, v1[0], fmaf(e.y, v1[1], fmaf(e.z, v1[2], fmaf(e.w, v1[3], acc[r][1]))));
        }
      }
    }
#pragma unroll
    for (int r = 0; r < RW; ++r) {
      const int row = warp * RW + r;
      if (row >= nrows_valid) continue;
      const float f = row_scale[row];
      scalar_t* o = out + int64_t(row) * Dm;
      if (c0 + lane < Dm) o[c0 + lane] = static_cast<scalar_t>(acc[r][0] * f);
      if (c0 + lane + kWarpSize < Dm) o[c0 + lane + kWarpSize] = static_cast<scalar_t>(acc[r][1] * f);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Row pass helpers (one warp per query row; lanes stride over the keys)

struct BlockCoords {
  int64_t bh;    // b * H + h
  int b, h;
  int row0;      // first query row of the block
  int nrows;     // valid rows in the block (<= R)
};

template <typename scalar_t>
GRA_DEVICE BlockCoords block_coords(const GraInputs<scalar_t>& in) {
  BlockCoords c;
  const int blk = static_cast<int>(blockIdx.x);  // grid <= INT_MAX (checked on the host)
  const int rb = blk % in.num_row_blocks;
  const int bh = blk / in.num_row_blocks;
  c.bh = bh;
  c.b = bh / in.H;
  c.h = bh % in.H;
  c.row0 = rb * in.layout.rows;
  c.nrows = in.Lq - c.row0 < in.layout.rows ? in.Lq - c.row0 : in.layout.rows;
  return c;
}

// The prev row and key mask of one query row.
template <typename scalar_t>
struct RowView {
  const scalar_t* prev;  // [Lk] or null
  const bool* mask;      // [Lk] or null
  int Lk;
  GRA_DEVICE bool valid(int j) const { return mask == nullptr || mask[j]; }
  GRA_DEVICE float p(int j) const { return prev != nullptr ? static_cast<float>(prev[j]) : 0.f; }
};

template <typename scalar_t>
GRA_DEVICE RowView<scalar_t> row_view(const GraInputs<scalar_t>& in, const BlockCoords& c, int qi) {
  RowView<scalar_t> rv;
  rv.prev = in.prev != nullptr ? in.prev + (c.bh * in.Lq + qi) * in.Lk : nullptr;
  rv.mask = in.key_mask != nullptr ? in.key_mask + int64_t(c.b) * in.Lk : nullptr;
  rv.Lk = in.Lk;
  return rv;
}

struct GateStats {
  float c;         // cosine of s and p over the valid keys (dot / 1e-8 when clamped, 0 without keys)
  float g;         // sigmoid(w * c + b)
  float inv_ns;    // 1 / |s_V| (0 when clamped)
  float inv_np;    // 1 / |p_V| (0 when clamped)
  bool clamped;    // |s_V| |p_V| < 1e-8: no gradient through the cosine
};

// The cosine gate of one row. Sums in double over the valid keys only (masked keys are skipped,
// never multiplied by 0), so |s|, |p| up to ~1e77 cannot overflow and an inf / NaN at a masked
// key cannot reach c; NaN / inf at a valid key make c (and the row) NaN.
template <typename scalar_t>
GRA_DEVICE GateStats gate_stats(const float* __restrict__ S, const RowView<scalar_t>& row, float w, float b) {
  double dot = 0.0, ss = 0.0, pp = 0.0;
  for (int j = lane_id(); j < row.Lk; j += kWarpSize) {
    if (!row.valid(j)) continue;
    const double s = S[j], p = row.p(j);
    dot = fma(s, p, dot);
    ss = fma(s, s, ss);
    pp = fma(p, p, pp);
  }
  GateStats st;
  dot = warp_sum(dot);
  const double ns = sqrt(warp_sum(ss)), np = sqrt(warp_sum(pp));
  st.clamped = ns * np < double(kCosineEps);  // also true without valid keys (dot = 0 -> c = 0)
  st.inv_ns = st.clamped ? 0.f : static_cast<float>(1.0 / ns);
  st.inv_np = st.clamped ? 0.f : static_cast<float>(1.0 / np);
  st.c = static_cast<float>(st.clamped ? dot / double(kCosineEps) : dot / ns / np);
  st.g = 1.f / (1.f + expf(-fmaf(w, st.c, b)));
  return st;
}

struct RowMax {
  float max;       // max of n over the valid keys
  bool any_valid;  // the row has at least one valid key
};

GRA_DEVICE float combine(int mode, float s, float p, float g) {
  if (mode == kResidual) return s + p;
  if (mode == kGated) return 0.5f * fmaf(g, s, p);
  return s;
}

// In place over X[0, Lk): n -> unnormalised softmax weights exp(n - max) (0 on masked keys,
// selected); zero-fills X[Lk, row_stride). Returns 1 / sum, 0 for a row without valid keys, NaN
// when a valid n is NaN or +inf (or all are -inf), as IEEE softmax gives.
template <typename scalar_t>
GRA_DEVICE float softmax_numerators(float* __restrict__ X, const RowView<scalar_t>& row, RowMax m, int row_stride) {
  const int lane = lane_id();
  float sum = 0.f;
  for (int j = lane; j < row.Lk; j += kWarpSize) {
    const float e = row.valid(j) ? expf(X[j] - m.max) : 0.f;
    X[j] = e;
    sum += e;
  }
  for (int j = row.Lk + lane; j < row_stride; j += kWarpSize) X[j] = 0.f;
  sum = warp_sum(sum);
  return m.any_valid ? 1.f / sum : 0.f;
}

// Combined scores n of one row from s = S[j] into N[j] (N may alias S) and, when scores_out
// is given, to global memory; returns the max of n over the valid keys (-inf when there is none
// or all are -inf; fmaxf skips NaN, which reaches the softmax sum instead) and whether any key is
// valid.
template <typename scalar_t>
GRA_DEVICE RowMax combined_scores(const float* S, float* N, const RowView<scalar_t>& row, int mode, float g,
                                  scalar_t* __restrict__ scores_out) {
  float m = -INFINITY, any = 0.f;
  for (int j = lane_id(); j < row.Lk; j += kWarpSize) {
    const float n = combine(mode, S[j], mode == kPlain ? 0.f : row.p(j), g);
    N[j] = n;
    if (scores_out != nullptr) scores_out[j] = static_cast<scalar_t>(n);
    if (row.valid(j)) {
      m = fmaxf(m, n);
      any = 1.f;
    }
  }
  return RowMax{warp_max(m), warp_max(any) > 0.f};
}

// The key mask of the block's batch ([Lk]) or null.
template <typename scalar_t>
GRA_DEVICE const bool* key_mask_of(const GraInputs<scalar_t>& in, const BlockCoords& c) {
  return in.key_mask != nullptr ? in.key_mask + int64_t(c.b) * in.Lk : nullptr;
}

// The block's row buffers: in shared memory when they fit, else its slice of the global workspace.
template <typename scalar_t>
GRA_DEVICE float* block_rows(const GraInputs<scalar_t>& in, float* smem) {
  const GraLayout& L = in.layout;
  return L.rows_in_smem ? smem + L.rows_off : in.rows_ws + int64_t(blockIdx.x) * L.row_floats_per_block();
}

// Step 2 of the forward, for the warp's RW rows of the block (rows: s on entry, softmax
// numerators e on exit): gate, combined scores n (written to p.scores), 1/sum into inv_sum[row].
template <int RW, typename scalar_t>
GRA_DEVICE void forward_rows(const GraForwardParams<scalar_t>& p, const BlockCoords& bc, float* rows, float* inv_sum) {
  const GraInputs<scalar_t>& in = p.in;
  const GraLayout& L = in.layout;
  const int lane = lane_id(), warp = warp_id();
  const float w = in.mode == kGated ? in.gate_weight[bc.h] : 0.f;
  const float b = in.mode == kGated ? in.gate_bias[bc.h] : 0.f;
  for (int r = 0; r < RW; ++r) {
    const int row = warp * RW + r;
    if (row >= bc.nrows) break;  // warp-uniform
    const int qi = bc.row0 + row;
    const RowView<scalar_t> rv = row_view(in, bc, qi);
    float* S = rows + int64_t(row) * L.row_stride;
    const float g = in.mode == kGated ? gate_stats(S, rv, w, b).g : 1.f;
    const RowMax m = combined_scores(S, S, rv, in.mode, g, p.scores + (bc.bh * in.Lq + qi) * in.Lk);
    const float inv = softmax_numerators(S, rv, m, L.row_stride);
    if (lane == 0) inv_sum[row] = inv;
  }
}

// ---------------------------------------------------------------------------------------
// Forward

template <typename scalar_t>
GRA_GLOBAL void GRA_LAUNCH_BOUNDS(kThreads) gra_forward_kernel(const GRA_GRID_CONSTANT GraForwardParams<scalar_t> p) {
  constexpr int RW = kFwdRowsPerWarp;
  const GraInputs<scalar_t>& in = p.in;
  const GraLayout& L = in.layout;
  const BlockCoords bc = block_coords(in);

  float* smem = gra_dynamic_smem();
  float* qs = smem + L.q_off;
  float* tile = smem + L.tile_off;
  float* inv_sum = smem + L.aux_off;
  float* rows = block_rows(in, smem);

  // 1. s = scale * q k^T for the block's rows
  load_rows<kWarps * RW>(qs, L.q_stride, in.q + bc.bh * in.Lq * in.D, in.Lq, in.D, bc.row0, in.vec_q);
  rows_dot_mat<RW>(qs, L.q_stride, in.k + bc.bh * in.Lk * in.D, in.Lk, in.D, in.vec_k, in.scale, rows, L.row_stride,
                   tile);
  __syncthreads();

  // 2. per row: gate, combined scores n (written out), softmax numerators
  forward_rows<RW>(p, bc, rows, inv_sum);
  __syncthreads();

  // 3. out = (e / sum) v
  rows_times_mat<RW>(rows, L.row_stride, in.v + bc.bh * in.Lk * in.Dv, in.Lk, in.Dv, in.vec_v, inv_sum,
                     p.out + (bc.bh * in.Lq + bc.row0) * in.Dv, bc.nrows, tile, key_mask_of(in, bc));
}

// ---------------------------------------------------------------------------------------
// Backward

// One row of the backward. S: s, X: scratch (n, e, a), Y: dA = dOut . v_j on entry (then dN).
// Writes A, scale * dS and dPrev of the row; adds the row's dw, db to the warp's accumulators.
template <typename scalar_t>
GRA_DEVICE void backward_row(const GraBackwardParams<scalar_t>& p, const BlockCoords& bc, int qi, float* S, float* X,
                             float* Y, float w, float b, float& dw_acc, float& db_acc) {
  const GraInputs<scalar_t>& in = p.in;
  const int lane = lane_id();
  const int Lk = in.Lk;
  const RowView<scalar_t> rv = row_view(in, bc, qi);
  const int64_t off = (bc.bh * in.Lq + qi) * int64_t(Lk);
  const scalar_t* dscores = p.grad_scores + off;
  scalar_t* attn = p.attn + off;
  scalar_t* dlogits = p.grad_logits + off;
  scalar_t* dprev = p.grad_prev != nullptr ? p.grad_prev + off : nullptr;

  GateStats st{};
  st.g = 1.f;
  if (in.mode == kGated) st = gate_stats(S, rv, w, b);
  const float g = st.g;

  // softmax weights a (recomputed from s and prev in float32, exactly as the forward)
  const RowMax m = combined_scores<scalar_t>(S, X, rv, in.mode, g, nullptr);
  const float inv = softmax_numerators(X, rv, m, in.layout.row_stride);
  float rs = 0.f;  // rowsum(dA * A)
  for (int j = lane; j < Lk; j += kWarpSize) {
    const float a = rv.valid(j) ? X[j] * inv : 0.f;  // exactly 0 at masked keys, even in a NaN row
    X[j] = a;
    attn[j] = static_cast<scalar_t>(a);
    rs = fmaf(a, Y[j], rs);
  }
  rs = warp_sum(rs);

  if (in.mode != kGated) {
    // dS = dN = A (dA - rs) + dScores; residual: dPrev = dN; none with prev: dPrev = 0
    for (int j = lane; j < Lk; j += kWarpSize) {
      const float dn = (rv.valid(j) ? X[j] * (Y[j] - rs) : 0.f) + static_cast<float>(dscores[j]);
      dlogits[j] = static_cast<scalar_t>(in.scale * dn);
      if (dprev != nullptr) dprev[j] = static_cast<scalar_t>(in.mode == kResidual ? dn : 0.f);
    }
    return;
  }

  // gated: n = (g s + p) / 2 with g = sigmoid(w c + b), c = cos(s_V, p_V)
  float dg = 0.f;
  for (int j = lane; j < Lk; j += kWarpSize) {
    const float dn = (rv.valid(j) ? X[j] * (Y[j] - rs) : 0.f) + static_cast<float>(dscores[j]);  // selected
    Y[j] = dn;
    dg = fmaf(dn, S[j], dg);
  }
  dg = 0.5f * warp_sum(dg);
  const float dz = dg * g * (1.f - g);
  dw_acc += dz * st.c;
  db_acc += dz;
  const float dc = dz * w;
  // dc/ds_j = (p_j/|p| - c s_j/|s|) / |s| ; dc/dp_j = (s_j/|s| - c p_j/|p|) / |p| (valid keys,
  // unclamped), from the unit vectors so that nothing overflows for large |s|, |p|
  const float ks = dc * st.inv_ns, kp = dc * st.inv_np;
  for (int j = lane; j < Lk; j += kWarpSize) {
    const float dn = Y[j], s = S[j], pj = rv.p(j);
    float ds = 0.5f * g * dn, dp = 0.5f * dn;
    if (!st.clamped && rv.valid(j)) {
      const float us = s * st.inv_ns, up = pj * st.inv_np;
      ds += ks * (up - st.c * us);
      dp += kp * (us - st.c * up);
    }
    dlogits[j] = static_cast<scalar_t>(in.scale * ds);
    dprev[j] = static_cast<scalar_t>(dp);
  }
}

// backward_row for the warp's RW rows of the block (S, X, Y: the block's row buffers, as in
// backward_row), then, in gated mode, the block's gate-gradient partial sums (the warps' sums
// added in warp order through red[2 * kWarps], so the result does not depend on timing) into
// p.gate_partial[blockIdx.x] (dw) and p.gate_partial[gridDim.x + blockIdx.x] (db).
template <int RW, typename scalar_t>
GRA_DEVICE void backward_rows(const GraBackwardParams<scalar_t>& p, const BlockCoords& bc, float* S, float* X, float* Y,
                              float* red) {
  const GraInputs<scalar_t>& in = p.in;
  const GraLayout& L = in.layout;
  const int lane = lane_id(), warp = warp_id();
  const float w = in.mode == kGated ? in.gate_weight[bc.h] : 0.f;
  const float b = in.mode == kGated ? in.gate_bias[bc.h] : 0.f;
  float dw_acc = 0.f, db_acc = 0.f;
  for (int r = 0; r < RW; ++r) {
    const int row = warp * RW + r;
    if (row >= bc.nrows) break;  // warp-uniform
    const int64_t o = int64_t(row) * L.row_stride;
    backward_row(p, bc, bc.row0 + row, S + o, X + o, Y + o, w, b, dw_acc, db_acc);
  }

  if (in.mode == kGated) {  // uniform over the launch
    if (lane == 0) {
      red[2 * warp] = dw_acc;
      red[2 * warp + 1] = db_acc;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float sw = 0.f, sb = 0.f;
      for (int i = 0; i < kWarps; ++i) {
        sw += red[2 * i];
        sb += red[2 * i + 1];
      }
      p.gate_partial[blockIdx.x] = sw;
      p.gate_partial[gridDim.x + blockIdx.x] = sb;
    }
  }
}

template <typename scalar_t>
GRA_GLOBAL void GRA_LAUNCH_BOUNDS(kThreads) gra_backward_kernel(const GRA_GRID_CONSTANT GraBackwardParams<scalar_t> p) {
  constexpr int RW = kBwdRowsPerWarp;
  constexpr int R = kWarps * RW;
  const GraInputs<scalar_t>& in = p.in;
  const GraLayout& L = in.layout;
  const BlockCoords bc = block_coords(in);

  float* smem = gra_dynamic_smem();
  float* qs = smem + L.q_off;
  float* dos = smem + L.do_off;
  float* tile = smem + L.tile_off;
  float* red = smem + L.aux_off;
  float* rows = block_rows(in, smem);
  const int64_t buf = int64_t(R) * L.row_stride;
  float* S = rows;
  float* X = rows + buf;
  float* Y = rows + 2 * buf;

  load_rows<R>(qs, L.q_stride, in.q + bc.bh * in.Lq * in.D, in.Lq, in.D, bc.row0, in.vec_q);
  load_rows<R>(dos, L.do_stride, p.grad_out + bc.bh * in.Lq * in.Dv, in.Lq, in.Dv, bc.row0, p.vec_do);
  rows_dot_mat<RW>(qs, L.q_stride, in.k + bc.bh * in.Lk * in.D, in.Lk, in.D, in.vec_k, in.scale, S, L.row_stride, tile);
  rows_dot_mat<RW>(dos, L.do_stride, in.v + bc.bh * in.Lk * in.Dv, in.Lk, in.Dv, in.vec_v, 1.f, Y, L.row_stride, tile,
                   key_mask_of(in, bc));
  __syncthreads();

  backward_rows<RW>(p, bc, S, X, Y, red);
}

}  // namespace gra
}  // namespace mmfuse
