// Tensor-core kernels of the fused gated residual attention op for float16 / bfloat16
// (contract: docs/op.md). The matrix products run as warp-level 16x16x16 nvcuda::wmma
// fragments with float32 accumulation; everything else (cosine gate, combination, masked
// softmax, the backward's row terms, the non-finite rules) is the row-pass code of
// gra_kernels.cuh, shared with the float32 CUDA-core kernels.
//
// One block of kThreads = 4 warps per (batch b, head h, block of kTcRows = 32 query rows):
//   forward:  stage q_blk (16-bit, zero-padded to D16 = round_up(D, 16)) in shared memory;
//             for each tile of kTileKeys = 64 keys: stage K_tile, S[:, tile] = q_blk . K_tile^T
//             (2 x 4 fragments over 4 warps, D16 / 16 mma steps each) into the float score rows;
//             row pass (scale, gate, n written once, softmax numerators e);
//             for each key tile: stage V_tile (masked keys' rows selected to 0) and e_tile in
//             16-bit, acc[R, Dv16] += e_tile . V_tile on tensor cores (accumulator in shared
//             memory); out = acc / sum, written once.
//   backward: S = q_blk . K^T and dA = dOut_blk . V^T the same way, then the shared backward
//             row pass writes A, scale * dS and dPrev; the host does dQ, dK, dV as batched
//             cuBLAS GEMMs on A and dS (tensor cores in 16-bit as well).
// Ragged sizes: every staged tile is zero-filled past Lq, Lk, D and Dv, so fragments never
// read outside their tile; only in-range elements are written to global memory.
// The kernel code never touches fragment elements (x[]): it holds for any fragment layout,
// which is what lets the CPU emulator (emulation/cuda_emulator.h) use its own.
#pragma once

#include <algorithm>

#include "gra_kernels.cuh"

namespace mmfuse {
namespace gra {

namespace wmma = ::nvcuda::wmma;

constexpr int kTcTile = 16;                      // wmma M = N = K
constexpr int kTcRows = 32;                      // query rows per block
constexpr int kTcRowsPerWarp = kTcRows / kWarps;
constexpr int kTcPad = 8;                        // 16-bit elements of padding per staged row (bank spread)

// c10 storage type -> wmma element type (same 16 bits).
template <typename scalar_t>
struct TcType;
#ifdef MMFUSE_CUDA_EMULATION
template <>
struct TcType<c10::Half> {
  using type = c10::Half;
};
template <>
struct TcType<c10::BFloat16> {
  using type = c10::BFloat16;
};
inline c10::Half to_tc(float x, c10::Half*) { return c10::Half(x); }
inline c10::BFloat16 to_tc(float x, c10::BFloat16*) { return c10::BFloat16(x); }
#else
template <>
struct TcType<c10::Half> {
  using type = __half;
};
template <>
struct TcType<c10::BFloat16> {
  using type = __nv_bfloat16;
};
GRA_DEVICE __half to_tc(float x, __half*) { return __float2half_rn(x); }
GRA_DEVICE __nv_bfloat16 to_tc(float x, __nv_bfloat16*) { return __float2bfloat16_rn(x); }
#endif

template <typename T>
GRA_DEVICE T tc_from_float(float x) {
  return to_tc(x, static_cast<T*>(nullptr));
}

inline int64_t round16(int64_t x) { return round_up64(x, kTcTile); }

// Shared-memory plan of a tensor-core block (offsets in floats; every region 32-byte aligned as
// wmma requires). `rows` holds the score rows as in plan_layout.
inline GraLayout plan_tc_layout(int64_t D, int64_t Dv, int64_t Lk, int num_row_bufs, bool forward,
                                bool rows_in_smem) {
  GraLayout L{};
  L.rows = kTcRows;
  L.row_stride = static_cast<int>(round_up64(Lk, kTileKeys));
  L.num_row_bufs = num_row_bufs;
  L.tc_d16 = static_cast<int>(round16(D));
  L.tc_dv16 = static_cast<int>(round16(Dv));
  L.tc_stage_stride = static_cast<int>(std::max(L.tc_d16, L.tc_dv16) + kTcPad);
  L.tc_p_stride = kTileKeys + kTcPad;
  L.tc_acc_stride = L.tc_dv16 + 4;
  const auto halves = [](int64_t n) { return round_up64((n + 1) / 2, 8); };  // 16-bit elements -> floats
  int64_t off = 0;
  L.tc_a_off = 0;  // q_blk / dOut_blk [rows, stage_stride] 16-bit
  off += halves(int64_t(kTcRows) * L.tc_stage_stride);
  L.tile_off = static_cast<int>(off);  // K / V tile [kTileKeys, stage_stride] 16-bit
  off += halves(int64_t(kTileKeys) * L.tc_stage_stride);
  L.tc_p_off = static_cast<int>(off);  // forward: e tile [rows, p_stride] 16-bit
  if (forward) off += halves(int64_t(kTcRows) * L.tc_p_stride);
  L.tc_acc_off = static_cast<int>(off);  // forward: out accumulator [rows, acc_stride] float
  if (forward) off += round_up64(int64_t(kTcRows) * L.tc_acc_stride, 8);
  L.aux_off = static_cast<int>(off);
  off += round_up64(std::max(kTcRows, 2 * kWarps), 8);
  L.rows_off = static_cast<int>(off);
  L.rows_in_smem = rows_in_smem;
  if (rows_in_smem) off += L.row_floats_per_block();
  L.smem_bytes = off * int64_t(sizeof(float));
  return L;
}

// dst[r][c] (16-bit, row stride dst_stride) = src[row0 + r][c] for r < nrows_stage and
// c < ncols_padded; zero past the ends of src and on rows whose row_mask entry is false.
template <typename T, typename scalar_t>
GRA_DEVICE void tc_stage(T* __restrict__ dst, int dst_stride, const scalar_t* __restrict__ src, int nrows, int ncols,
                         int row0, int nrows_stage, int ncols_padded, const bool* __restrict__ row_mask) {
  const T* s = reinterpret_cast<const T*>(src);  // c10::Half / BFloat16 have the wmma type's bits
  const T zero = tc_from_float<T>(0.f);
  const int total = nrows_stage * ncols_padded;
  for (int idx = static_cast<int>(threadIdx.x); idx < total; idx += kThreads) {
    const int r = idx / ncols_padded, c = idx % ncols_padded, row = row0 + r;
    const bool in = row < nrows && c < ncols && (row_mask == nullptr || row_mask[row]);
    dst[r * dst_stride + c] = in ? s[int64_t(row) * ncols + c] : zero;
  }
}

// out[r][j] = <a[r], mat[j]> (float) for the block's kTcRows rows and every j < round_up(Lk, 64):
// a: the staged rows [kTcRows, stride] (16-bit, zero-padded to m16 columns); mat [Lk, Dm] of this
// (b, h), staged per key tile (rows of masked keys zero when row_mask is given); out: [kTcRows,
// out_stride] float. Warps share the 2 x 4 output fragments of a tile.
template <typename T, typename scalar_t>
GRA_DEVICE void tc_rows_dot_mat(const T* __restrict__ a, int stride, int m16, const scalar_t* __restrict__ mat, int Lk,
                                int Dm, const bool* __restrict__ row_mask, float* __restrict__ out, int out_stride,
                                T* __restrict__ tile) {
  constexpr int kRowTiles = kTcRows / kTcTile, kColTiles = kTileKeys / kTcTile;
  for (int j0 = 0; j0 < Lk; j0 += kTileKeys) {
    __syncthreads();  // the previous tile is consumed (and a has been staged)
    tc_stage(tile, stride, mat, Lk, Dm, j0, kTileKeys, m16, row_mask);
    __syncthreads();
    for (int f = warp_id(); f < kRowTiles * kColTiles; f += kWarps) {
      const int rt = f / kColTiles, ct = f % kColTiles;
      wmma::fragment<wmma::accumulator, kTcTile, kTcTile, kTcTile, float> acc;
      wmma::fill_fragment(acc, 0.f);
      for (int k0 = 0; k0 < m16; k0 += kTcTile) {
        wmma::fragment<wmma::matrix_a, kTcTile, kTcTile, kTcTile, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, kTcTile, kTcTile, kTcTile, T, wmma::col_major> fb;  // mat^T
        wmma::load_matrix_sync(fa, a + rt * kTcTile * stride + k0, stride);
        wmma::load_matrix_sync(fb, tile + ct * kTcTile * stride + k0, stride);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(out + int64_t(rt) * kTcTile * out_stride + j0 + ct * kTcTile, acc, out_stride,
                              wmma::mem_row_major);
    }
  }
}

// Multiplies S[0, Lk) of the warp's rows by the scale (raw products -> s).
template <typename scalar_t>
GRA_DEVICE void tc_scale_rows(const GraInputs<scalar_t>& in, float* S, int nrows) {
  const int warp = warp_id(), lane = lane_id();
  for (int r = 0; r < kTcRowsPerWarp; ++r) {
    const int row = warp * kTcRowsPerWarp + r;
    if (row >= nrows) break;
    float* x = S + int64_t(row) * in.layout.row_stride;
    for (int j = lane; j < in.Lk; j += kWarpSize) x[j] *= in.scale;
  }
}

// ---------------------------------------------------------------------------------------
// Forward

template <typename scalar_t>
GRA_GLOBAL void GRA_LAUNCH_BOUNDS(kThreads) gra_forward_tc_kernel(const GRA_GRID_CONSTANT GraForwardParams<scalar_t> p) {
  using T = typename TcType<scalar_t>::type;
  constexpr int RW = kTcRowsPerWarp;
  const GraInputs<scalar_t>& in = p.in;
  const GraLayout& L = in.layout;
  const BlockCoords bc = block_coords(in);
  const int warp = warp_id();
  const int tid = static_cast<int>(threadIdx.x);

  float* smem = gra_dynamic_smem();
  T* a_stage = reinterpret_cast<T*>(smem + L.tc_a_off);
  T* tile = reinterpret_cast<T*>(smem + L.tile_off);
  T* p16 = reinterpret_cast<T*>(smem + L.tc_p_off);
  float* acc_s = smem + L.tc_acc_off;
  float* inv_sum = smem + L.aux_off;
  float* rows = block_rows(in, smem);
  const bool* mask = key_mask_of(in, bc);

  // 1. raw products q . k^T on tensor cores, then s = scale * (q . k)
  tc_stage(a_stage, L.tc_stage_stride, in.q + bc.bh * in.Lq * in.D, in.Lq, in.D, bc.row0, kTcRows, L.tc_d16,
           static_cast<const bool*>(nullptr));
  tc_rows_dot_mat(a_stage, L.tc_stage_stride, L.tc_d16, in.k + bc.bh * in.Lk * in.D, in.Lk, in.D,
                  static_cast<const bool*>(nullptr), rows, L.row_stride, tile);
  __syncthreads();
  tc_scale_rows(in, rows, bc.nrows);

  // 2. per row: gate, combined scores n (written out), softmax numerators (as the float32 kernel)
  forward_rows<RW>(p, bc, rows, inv_sum);
  for (int i = tid; i < kTcRows * L.tc_acc_stride; i += kThreads) acc_s[i] = 0.f;

  // 3. acc = e . V on tensor cores (e rounded to 16 bits, as flash attention does), out = acc / sum
  constexpr int kRowTiles = kTcRows / kTcTile;
  const int col_tiles = L.tc_dv16 / kTcTile;
  const scalar_t* v = in.v + bc.bh * in.Lk * in.Dv;
  for (int j0 = 0; j0 < in.Lk; j0 += kTileKeys) {
    __syncthreads();  // rows / acc ready, previous tiles consumed
    tc_stage(tile, L.tc_stage_stride, v, in.Lk, in.Dv, j0, kTileKeys, L.tc_dv16, mask);
    for (int idx = tid; idx < kTcRows * kTileKeys; idx += kThreads) {
      const int r = idx / kTileKeys, c = idx % kTileKeys;
      // rows past nrows hold raw products, rows past Lk zeros; neither reaches a written output
      const float e = r < bc.nrows ? rows[int64_t(r) * L.row_stride + j0 + c] : 0.f;
      p16[r * L.tc_p_stride + c] = tc_from_float<T>(e);
    }
    __syncthreads();
    for (int f = warp; f < kRowTiles * col_tiles; f += kWarps) {
      const int rt = f / col_tiles, ct = f % col_tiles;
      float* acc_ptr = acc_s + rt * kTcTile * L.tc_acc_stride + ct * kTcTile;
      wmma::fragment<wmma::accumulator, kTcTile, kTcTile, kTcTile, float> acc;
      wmma::load_matrix_sync(acc, acc_ptr, L.tc_acc_stride, wmma::mem_row_major);
      for (int k0 = 0; k0 < kTileKeys; k0 += kTcTile) {
        wmma::fragment<wmma::matrix_a, kTcTile, kTcTile, kTcTile, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, kTcTile, kTcTile, kTcTile, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, p16 + rt * kTcTile * L.tc_p_stride + k0, L.tc_p_stride);
        wmma::load_matrix_sync(fb, tile + k0 * L.tc_stage_stride + ct * kTcTile, L.tc_stage_stride);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(acc_ptr, acc, L.tc_acc_stride, wmma::mem_row_major);
    }
  }
  __syncthreads();
  scalar_t* out = p.out + (bc.bh * in.Lq + bc.row0) * in.Dv;
  for (int idx = tid; idx < bc.nrows * in.Dv; idx += kThreads) {
    const int r = idx / in.Dv, c = idx % in.Dv;
    out[idx] = static_cast<scalar_t>(acc_s[r * L.tc_acc_stride + c] * inv_sum[r]);
  }
}

// ---------------------------------------------------------------------------------------
// Backward

template <typename scalar_t>
GRA_GLOBAL void GRA_LAUNCH_BOUNDS(kThreads) gra_backward_tc_kernel(const GRA_GRID_CONSTANT GraBackwardParams<scalar_t> p) {
  using T = typename TcType<scalar_t>::type;
  constexpr int RW = kTcRowsPerWarp;
  const GraInputs<scalar_t>& in = p.in;
  const GraLayout& L = in.layout;
  const BlockCoords bc = block_coords(in);

  float* smem = gra_dynamic_smem();
  T* a_stage = reinterpret_cast<T*>(smem + L.tc_a_off);
  T* tile = reinterpret_cast<T*>(smem + L.tile_off);
  float* red = smem + L.aux_off;
  float* rows = block_rows(in, smem);
  const int64_t buf = int64_t(kTcRows) * L.row_stride;
  float* S = rows;
  float* X = rows + buf;
  float* Y = rows + 2 * buf;

  // S = q . K^T, then dA = dOut . V^T (masked keys' values selected to 0), both on tensor cores
  tc_stage(a_stage, L.tc_stage_stride, in.q + bc.bh * in.Lq * in.D, in.Lq, in.D, bc.row0, kTcRows, L.tc_d16,
           static_cast<const bool*>(nullptr));
  tc_rows_dot_mat(a_stage, L.tc_stage_stride, L.tc_d16, in.k + bc.bh * in.Lk * in.D, in.Lk, in.D,
                  static_cast<const bool*>(nullptr), S, L.row_stride, tile);
  __syncthreads();  // every warp is done with a_stage
  tc_stage(a_stage, L.tc_stage_stride, p.grad_out + bc.bh * in.Lq * in.Dv, in.Lq, in.Dv, bc.row0, kTcRows, L.tc_dv16,
           static_cast<const bool*>(nullptr));
  tc_rows_dot_mat(a_stage, L.tc_stage_stride, L.tc_dv16, in.v + bc.bh * in.Lk * in.Dv, in.Lk, in.Dv,
                  key_mask_of(in, bc), Y, L.row_stride, tile);
  __syncthreads();
  tc_scale_rows(in, S, bc.nrows);

  backward_rows<RW>(p, bc, S, X, Y, red);
}

}  // namespace gra
}  // namespace mmfuse
