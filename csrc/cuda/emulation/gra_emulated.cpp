// The CUDA kernels and host driver of gated_residual_attention, compiled for the CPU emulator
// (cuda_emulator.h) as a Python module for the tests: the kernel source, launch planning,
// shared-memory layouts, fallback path and backward GEMMs are exactly those of the CUDA
// build; only the launch (fibers instead of a GPU) and the tensors' device (CPU) differ.
// Built on demand by tests/test_op_cuda_emulated.py, never by setup.py.
#include <torch/extension.h>

#define MMFUSE_CUDA_EMULATION 1
#include "../gra_driver.h"

// This module does not link csrc/gated_residual_attention.cpp (its TORCH_LIBRARY block belongs
// to mmfuse._C): the tests validate arguments in Python (mmfuse.ops.validation) before calling.
namespace mmfuse {
GraMode parse_gra_mode(std::string_view mode) {
  if (mode == "residual") return GraMode::Residual;
  if (mode == "gated") return GraMode::Gated;
  TORCH_CHECK_VALUE(mode == "none", "mode: unknown '", std::string(mode), "'");
  return GraMode::None;
}
void check_gra_inputs(const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                      const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                      const std::optional<at::Tensor>&, GraMode, double) {}
}  // namespace mmfuse

namespace {

using namespace mmfuse::gra;

struct EmulatorConfig {
  int64_t smem_limit = 227 * 1024;  // an H100's opt-in limit per block
  gra_emu::Schedule schedule = gra_emu::kAscending;
  unsigned seed = 0;
  bool tensor_cores = true;  // float16 / bfloat16 through the tensor-core kernels (as on a GPU)
  int64_t launches = 0;
  bool last_tensor_cores = false;
  bool last_rows_in_smem = true;
};

EmulatorConfig& config() {
  static EmulatorConfig c;
  return c;
}

struct EmulatorBackend {
  static void check_device(const at::Tensor& q) {
    TORCH_CHECK_VALUE(q.is_cpu(), "q: the CUDA emulator runs on CPU tensors, got ", q.device());
  }
  static int64_t max_smem_per_block(const at::Tensor&) { return config().smem_limit; }
  // NaN-poisoned, so that elements the kernels fail to write cannot pass unnoticed.
  static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return at::full(sizes, std::numeric_limits<double>::quiet_NaN(), options);
  }
  template <typename Params, typename Kernel>
  static void run(const Params& p, int64_t grid, Kernel kernel) {
    EmulatorConfig& c = config();
    c.launches += 1;
    c.last_rows_in_smem = p.in.layout.rows_in_smem;
    c.last_tensor_cores = false;
    TORCH_CHECK(p.in.layout.smem_bytes <= c.smem_limit, "emulator: layout exceeds the shared-memory limit");
    gra_emu::launch(static_cast<unsigned>(grid), kThreads, static_cast<size_t>(p.in.layout.smem_bytes),
                    [&] { kernel(p); }, c.schedule, c.seed);
  }
  template <typename scalar_t>
  static void launch_forward(const GraForwardParams<scalar_t>& p, int64_t grid) {
    run(p, grid, gra_forward_kernel<scalar_t>);
  }
  template <typename scalar_t>
  static void launch_backward(const GraBackwardParams<scalar_t>& p, int64_t grid) {
    run(p, grid, gra_backward_kernel<scalar_t>);
  }
  static bool use_tensor_cores(at::ScalarType dtype) {
    return config().tensor_cores && (dtype == at::kHalf || dtype == at::kBFloat16);
  }
  template <typename scalar_t>
  static void launch_forward_tc(const GraForwardParams<scalar_t>& p, int64_t grid) {
    run(p, grid, gra_forward_tc_kernel<scalar_t>);
    config().last_tensor_cores = true;
  }
  template <typename scalar_t>
  static void launch_backward_tc(const GraBackwardParams<scalar_t>& p, int64_t grid) {
    run(p, grid, gra_backward_tc_kernel<scalar_t>);
    config().last_tensor_cores = true;
  }
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmfuse CUDA kernels executed by a CPU emulator (tests only)";
  m.def(
      "configure",
      [](int64_t smem_limit, int schedule, unsigned seed, bool tensor_cores) {
        TORCH_CHECK_VALUE(schedule >= 0 && schedule <= 2, "schedule: 0 ascending, 1 descending, 2 shuffled");
        config().smem_limit = smem_limit;
        config().schedule = static_cast<gra_emu::Schedule>(schedule);
        config().seed = seed;
        config().tensor_cores = tensor_cores;
      },
      py::arg("smem_limit"), py::arg("schedule") = 0, py::arg("seed") = 0, py::arg("tensor_cores") = true);
  m.def("last_tensor_cores", [] { return config().last_tensor_cores; },
        "Whether the last launch ran a tensor-core (wmma) kernel.");
  m.def("last_rows_in_smem", [] { return config().last_rows_in_smem; },
        "Whether the last launch kept the score rows in shared memory (else the global fallback).");
  m.def("launches", [] { return config().launches; });
  m.def("forward", &forward<EmulatorBackend>);
  m.def("backward", &backward<EmulatorBackend>);
}
