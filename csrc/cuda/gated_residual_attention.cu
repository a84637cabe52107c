// CUDA entry points of mmfuse::gated_residual_attention (forward) and _backward.
//
// Kernels: gra_kernels.cuh; host planning and the backward GEMMs: gra_driver.h. This file
// only adds what is CUDA-specific: device guard, current stream, the shared-memory opt-in
// above 48 KB, launch checks, and the dispatcher registration for the CUDA key.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../gated_residual_attention.h"
#include "gra_driver.h"
#include "gra_kernels.cuh"
#include "gra_tc_kernels.cuh"

namespace mmfuse {
namespace gra {
namespace {

constexpr int64_t kDefaultSmemLimit = 48 * 1024;  // usable without cudaFuncSetAttribute

template <typename Kernel, typename Params>
void launch(Kernel kernel, const Params& p, int64_t grid) {
  const int64_t smem = p.in.layout.smem_bytes;
  if (smem > kDefaultSmemLimit) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  kernel<<<static_cast<unsigned>(grid), kThreads, static_cast<size_t>(smem), at::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

struct CudaBackend {
  static void check_device(const at::Tensor& q) {
    TORCH_CHECK_VALUE(q.is_cuda(), "q: expected a CUDA tensor for the CUDA kernel, got device ", q.device());
  }
  static int64_t max_smem_per_block(const at::Tensor& q) {
    return static_cast<int64_t>(at::cuda::getDeviceProperties(q.get_device())->sharedMemPerBlockOptin);
  }
  static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) { return at::empty(sizes, options); }
  template <typename scalar_t>
  static void launch_forward(const GraForwardParams<scalar_t>& p, int64_t grid) {
    launch(gra_forward_kernel<scalar_t>, p, grid);
  }
  template <typename scalar_t>
  static void launch_backward(const GraBackwardParams<scalar_t>& p, int64_t grid) {
    launch(gra_backward_kernel<scalar_t>, p, grid);
  }
  // float16 / bfloat16: wmma tensor cores with float32 accumulation (sm_70+; bfloat16 sm_80+,
  // the architectures this extension is built for). float32 stays on the exact CUDA-core path.
  static bool use_tensor_cores(at::ScalarType dtype) { return dtype == at::kHalf || dtype == at::kBFloat16; }
  template <typename scalar_t>
  static void launch_forward_tc(const GraForwardParams<scalar_t>& p, int64_t grid) {
    launch(gra_forward_tc_kernel<scalar_t>, p, grid);
  }
  template <typename scalar_t>
  static void launch_backward_tc(const GraBackwardParams<scalar_t>& p, int64_t grid) {
    launch(gra_backward_tc_kernel<scalar_t>, p, grid);
  }
};

}  // namespace
}  // namespace gra

std::tuple<at::Tensor, at::Tensor> gra_forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                     const std::optional<at::Tensor>& prev,
                                                     const std::optional<at::Tensor>& key_mask,
                                                     const std::optional<at::Tensor>& gate_weight,
                                                     const std::optional<at::Tensor>& gate_bias, c10::string_view mode,
                                                     double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  return gra::forward<gra::CudaBackend>(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gra_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& grad_scores, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const std::optional<at::Tensor>& prev, const std::optional<at::Tensor>& key_mask,
    const std::optional<at::Tensor>& gate_weight, const std::optional<at::Tensor>& gate_bias,
    const at::Tensor& scores, c10::string_view mode, double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  return gra::backward<gra::CudaBackend>(grad_out, grad_scores, q, k, v, prev, key_mask, gate_weight, gate_bias, scores,
                                         mode, scale);
}

}  // namespace mmfuse

TORCH_LIBRARY_IMPL(mmfuse, CUDA, m) {
  m.impl("gated_residual_attention", &mmfuse::gra_forward_entry<&mmfuse::gra_forward_cuda>);
  m.impl("gated_residual_attention_backward", &mmfuse::gra_backward_entry<&mmfuse::gra_backward_cuda>);
}
