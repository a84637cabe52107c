// A CPU emulator of the small part of the CUDA execution model that the mmfuse kernels use,
// so that their exact source (gra_kernels.cuh) can be executed and checked without a GPU.
//
// Each block runs as kThreads cooperative fibers (ucontext) on one host thread. A fiber runs
// until it reaches a barrier: __syncthreads() waits for every live thread of the block,
// __shfl_xor_sync() for every thread of its warp (it is a warp barrier, an exchange through a
// per-thread slot, and a second barrier). The scheduler resumes runnable fibers in ascending,
// descending or seeded pseudo-random thread order: a missing barrier makes results depend on
// that order, and a barrier inside divergent code is reported as a deadlock. Dynamic shared
// memory and the workspaces are filled with NaN before use, so a read of anything that was
// never written shows up in the results.
//
// Tensor cores: nvcuda::wmma 16x16x16 fragments (matrix_a / matrix_b with row_major or
// col_major, float accumulators). Each lane holds 8 elements of a fragment in an order of the
// emulator's choosing (here: lane l holds elements 8l .. 8l+7 of the tile in a *shuffled*
// order, so code that reads fragment elements directly cannot pass); mma_sync is a warp
// collective: the lanes publish their elements, wait for the whole warp, each computes its own
// 8 results in float (products of the 16-bit values are exact in float), and wait again.
//
// Not modelled: concurrency between blocks (they run one after another), memory-model
// subtleties beyond barriers, warp-synchronous code without explicit synchronisation,
// performance. Used only by the tests (tests/test_op_cuda_emulated.py); never by the build.
#pragma once

#include <math.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct alignas(16) float4 {
  float x, y, z, w;
};

inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

namespace gra_emu {

enum class Wait { kRunnable, kBlockBarrier, kWarpBarrier, kDone };

// Thread order in which the scheduler resumes fibers.
enum Schedule : int { kAscending = 0, kDescending = 1, kShuffled = 2 };

constexpr unsigned kEmuWarpSize = 32;
constexpr size_t kStackBytes = 256 * 1024;

struct Block {
  unsigned index = 0, grid = 0, threads = 0;
  unsigned current = 0;  // thread index of the running fiber
  ucontext_t scheduler{};
  std::vector<ucontext_t> contexts;
  std::vector<Wait> wait;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<double> exchange;  // shuffle slots, one per thread (float and double values)
  std::vector<float> mma_exchange;  // per warp: the A, B, C tiles of an mma_sync (3 x 256)
  std::vector<float4> smem;     // 16-byte aligned dynamic shared memory
  const std::function<void()>* body = nullptr;
};

inline Block*& active() {
  static Block* block = nullptr;
  return block;
}

inline void fiber_entry() {
  Block* b = active();
  (*b->body)();
  b->wait[b->current] = Wait::kDone;  // returning resumes uc_link (the scheduler)
}

inline void wait_at(Wait w) {
  Block* b = active();
  const unsigned t = b->current;
  b->wait[t] = w;
  swapcontext(&b->contexts[t], &b->scheduler);
}

template <typename T>
inline T shfl_xor(T v, int lane_mask) {
  Block* b = active();
  const unsigned t = b->current;
  b->exchange[t] = v;
  wait_at(Wait::kWarpBarrier);
  const unsigned src = (t & ~(kEmuWarpSize - 1)) | ((t & (kEmuWarpSize - 1)) ^ static_cast<unsigned>(lane_mask));
  const T r = static_cast<T>(b->exchange[src]);
  wait_at(Wait::kWarpBarrier);
  return r;
}

// Releases the waiting fibers of one barrier; false when none can be released.
inline bool release_barrier(Block& b) {
  bool released = false;
  for (unsigned w0 = 0; w0 < b.threads; w0 += kEmuWarpSize) {
    unsigned live = 0, at_warp = 0;
    for (unsigned t = w0; t < w0 + kEmuWarpSize && t < b.threads; ++t) {
      live += b.wait[t] != Wait::kDone;
      at_warp += b.wait[t] == Wait::kWarpBarrier;
    }
    if (live > 0 && at_warp == live) {
      for (unsigned t = w0; t < w0 + kEmuWarpSize && t < b.threads; ++t)
        if (b.wait[t] == Wait::kWarpBarrier) b.wait[t] = Wait::kRunnable;
      released = true;
    }
  }
  if (released) return true;
  unsigned live = 0, at_block = 0;
  for (unsigned t = 0; t < b.threads; ++t) {
    live += b.wait[t] != Wait::kDone;
    at_block += b.wait[t] == Wait::kBlockBarrier;
  }
  if (live == 0 || at_block != live) return false;
  for (unsigned t = 0; t < b.threads; ++t)
    if (b.wait[t] == Wait::kBlockBarrier) b.wait[t] = Wait::kRunnable;
  return true;
}

inline void run_block(Block& b, Schedule schedule, std::mt19937& rng) {
  std::vector<unsigned> order(b.threads);
  for (unsigned t = 0; t < b.threads; ++t) {
    order[t] = schedule == kDescending ? b.threads - 1 - t : t;
    ucontext_t& c = b.contexts[t];
    getcontext(&c);
    c.uc_stack.ss_sp = b.stacks[t].get();
    c.uc_stack.ss_size = kStackBytes;
    c.uc_link = &b.scheduler;
    makecontext(&c, fiber_entry, 0);
    b.wait[t] = Wait::kRunnable;
  }
  for (;;) {
    if (schedule == kShuffled) std::shuffle(order.begin(), order.end(), rng);
    for (const unsigned t : order) {
      if (b.wait[t] != Wait::kRunnable) continue;
      b.current = t;
      swapcontext(&b.scheduler, &b.contexts[t]);
    }
    bool all_done = true;
    for (unsigned t = 0; t < b.threads; ++t) all_done = all_done && b.wait[t] == Wait::kDone;
    if (all_done) return;
    if (!release_barrier(b))
      throw std::runtime_error("CUDA emulator: deadlock in block " + std::to_string(b.index) +
                               ": threads wait at different barriers (a barrier in divergent code)");
  }
}

// Runs body() as a 1-D grid of `grid` blocks of `threads` threads with `smem_bytes` of
// NaN-filled dynamic shared memory per block.
inline void launch(unsigned grid, unsigned threads, size_t smem_bytes, const std::function<void()>& body,
                   Schedule schedule, unsigned seed = 0) {
  if (threads % kEmuWarpSize != 0) throw std::invalid_argument("CUDA emulator: threads must be whole warps");
  Block b;
  b.grid = grid;
  b.threads = threads;
  b.body = &body;
  b.contexts.resize(threads);
  b.wait.assign(threads, Wait::kDone);
  b.exchange.assign(threads, 0.0);
  b.mma_exchange.assign(threads / kEmuWarpSize * 3 * 256, 0.f);
  for (unsigned t = 0; t < threads; ++t) b.stacks.emplace_back(new char[kStackBytes]);
  b.smem.resize((smem_bytes + sizeof(float4) - 1) / sizeof(float4));
  std::mt19937 rng(seed);
  struct Activate {
    explicit Activate(Block* b) { active() = b; }
    ~Activate() { active() = nullptr; }
  } activate(&b);
  for (unsigned blk = 0; blk < grid; ++blk) {
    b.index = blk;
    std::memset(static_cast<void*>(b.smem.data()), 0xff, b.smem.size() * sizeof(float4));  // NaN
    run_block(b, schedule, rng);
  }
}

inline dim3 thread_idx() { return dim3{active()->current, 0, 0}; }
inline dim3 block_idx() { return dim3{active()->index, 0, 0}; }
inline dim3 grid_dim() { return dim3{active()->grid, 1, 1}; }
inline dim3 block_dim() { return dim3{active()->threads, 1, 1}; }

template <typename T>
T* dynamic_smem() {
  return reinterpret_cast<T*>(active()->smem.data());
}

}  // namespace gra_emu

// The CUDA names the kernels use.
#define threadIdx (::gra_emu::thread_idx())
#define blockIdx (::gra_emu::block_idx())
#define gridDim (::gra_emu::grid_dim())
#define blockDim (::gra_emu::block_dim())

inline void __syncthreads() { ::gra_emu::wait_at(::gra_emu::Wait::kBlockBarrier); }

inline float __shfl_xor_sync(unsigned /*mask: full warps only*/, float v, int lane_mask, int /*width*/ = 32) {
  return ::gra_emu::shfl_xor(v, lane_mask);
}
inline double __shfl_xor_sync(unsigned /*mask: full warps only*/, double v, int lane_mask, int /*width*/ = 32) {
  return ::gra_emu::shfl_xor(v, lane_mask);
}

// ------------------------------------------------------------------------------------------
// nvcuda::wmma, warp-collective 16x16x16 fragments

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
constexpr int kTile = 16, kPerLane = 8;
inline unsigned lane() { return ::gra_emu::active()->current % ::gra_emu::kEmuWarpSize; }
inline unsigned warp() { return ::gra_emu::active()->current / ::gra_emu::kEmuWarpSize; }
// The tile position (row, col) of element e of this lane's fragment: a fixed permutation of
// the 256 positions that is not the natural order.
inline void position(unsigned lane, int e, int& row, int& col) {
  const int linear = static_cast<int>((lane * kPerLane + static_cast<unsigned>(e)) * 37u % 256u);
  row = linear / kTile;
  col = linear % kTile;
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator models 16x16x16 fragments only");
  static constexpr int num_elements = detail::kPerLane;
  T x[num_elements];
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const T& value) {
  for (auto& e : f.x) e = value;
}
template <typename Use, int M, int N, int K, typename T, typename Layout, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const V& value) {
  for (auto& e : f.x) e = static_cast<T>(value);
}

// matrix_a / matrix_b: the layout is part of the fragment type.
template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* ptr, unsigned ldm) {
  static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>, "matrix fragments only");
  const unsigned lane = detail::lane();
  for (int e = 0; e < detail::kPerLane; ++e) {
    int r, c;
    detail::position(lane, e, r, c);
    f.x[e] = std::is_same_v<Layout, row_major> ? ptr[r * ldm + c] : ptr[c * ldm + r];
  }
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* ptr, unsigned ldm,
                             layout_t layout) {
  const unsigned lane = detail::lane();
  for (int e = 0; e < detail::kPerLane; ++e) {
    int r, c;
    detail::position(lane, e, r, c);
    f.x[e] = layout == mem_row_major ? ptr[r * ldm + c] : ptr[c * ldm + r];
  }
}

inline void store_matrix_sync(float* ptr, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
  const unsigned lane = detail::lane();
  for (int e = 0; e < detail::kPerLane; ++e) {
    int r, c;
    detail::position(lane, e, r, c);
    (layout == mem_row_major ? ptr[r * ldm + c] : ptr[c * ldm + r]) = f.x[e];
  }
}

// d = a . b + c, a warp collective (every lane of the warp must call it).
template <typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  ::gra_emu::Block* blk = ::gra_emu::active();
  const unsigned lane = detail::lane();
  float* ex = blk->mma_exchange.data() + detail::warp() * 3 * 256;
  float *A = ex, *Bm = ex + 256, *C = ex + 512;
  for (int e = 0; e < detail::kPerLane; ++e) {
    int r, col;
    detail::position(lane, e, r, col);
    A[r * 16 + col] = static_cast<float>(a.x[e]);
    Bm[r * 16 + col] = static_cast<float>(b.x[e]);
    C[r * 16 + col] = c.x[e];
  }
  ::gra_emu::wait_at(::gra_emu::Wait::kWarpBarrier);
  float result[detail::kPerLane];
  for (int e = 0; e < detail::kPerLane; ++e) {
    int r, col;
    detail::position(lane, e, r, col);
    float acc = C[r * 16 + col];
    for (int k = 0; k < 16; ++k) acc += A[r * 16 + k] * Bm[k * 16 + col];
    result[e] = acc;
  }
  ::gra_emu::wait_at(::gra_emu::Wait::kWarpBarrier);  // all lanes have read the tiles
  for (int e = 0; e < detail::kPerLane; ++e) d.x[e] = result[e];
}

}  // namespace wmma
}  // namespace nvcuda
