// Portability layer of the gated residual attention CUDA kernels.
//
// The kernels in gra_kernels.cuh and gra_tc_kernels.cuh use only: threadIdx/blockIdx/gridDim,
// __syncthreads, __shfl_xor_sync (float, double), float4, dynamic shared memory (through
// gra_dynamic_smem), plain float / double math and the warp-collective nvcuda::wmma fragment
// operations (fill_fragment, load_matrix_sync, mma_sync, store_matrix_sync; 16x16x16, 16-bit
// inputs, float accumulators). Under nvcc these are CUDA's own. With MMFUSE_CUDA_EMULATION defined the very same
// source compiles as host C++ against csrc/cuda/emulation/cuda_emulator.h, which runs every
// thread of a block as a fiber with real barrier semantics — the test that checks the
// kernels' indexing on machines without a GPU (tests/test_op_cuda_emulated.py).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>

#ifdef MMFUSE_CUDA_EMULATION
#include "emulation/cuda_emulator.h"
#define GRA_DEVICE inline
#define GRA_GLOBAL inline
#define GRA_LAUNCH_BOUNDS(n)
#define GRA_GRID_CONSTANT
#define GRA_HOST_DEVICE
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>
#define GRA_DEVICE __device__ __forceinline__
#define GRA_GLOBAL __global__
#define GRA_LAUNCH_BOUNDS(n) __launch_bounds__(n)
#define GRA_GRID_CONSTANT __grid_constant__  // read in place, never copied to local memory
#define GRA_HOST_DEVICE __host__ __device__
#endif

namespace mmfuse {
namespace gra {

#ifdef MMFUSE_CUDA_EMULATION
inline float* gra_dynamic_smem() { return ::gra_emu::dynamic_smem<float>(); }
#else
__device__ __forceinline__ float* gra_dynamic_smem() {
  extern __shared__ __align__(128) float gra_smem[];  // wmma tiles need 32-byte alignment
  return gra_smem;
}
#endif

}  // namespace gra
}  // namespace mmfuse
