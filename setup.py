"""Build script for the ``mmfuse._C`` extension (the fused gated residual attention op).

Metadata lives in ``pyproject.toml``; this file only describes the C++/CUDA extension.

The extension needs torch at build time, so install with
``pip install --no-build-isolation -e .`` after torch (the README's make targets do this).

Environment variables:
  MMFUSE_BUILD_CUDA   "1" forces the CUDA kernels (fails without nvcc / CUDA torch),
                      "0" builds the CPU kernels only; unset = auto (CUDA when a CUDA-enabled
                      torch and nvcc are both present).
  MMFUSE_SKIP_EXT     "1" skips the extension entirely (pure-Python install; the op then
                      falls back to the eager reference with a warning).
  TORCH_CUDA_ARCH_LIST  CUDA architectures; default "8.0;9.0" when no GPU is visible.
  MAX_JOBS            parallel compile jobs (ninja).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"  # relative: setuptools rejects absolute source paths
os.chdir(ROOT)


def _log(msg: str) -> None:
    print(f"[mmfuse setup] {msg}", file=sys.stderr)


def _find_cuda_home() -> str | None:
    """Locate the CUDA toolkit before torch.utils.cpp_extension guesses it.

    torch derives CUDA_HOME from ``which nvcc``; when nvcc is a wrapper script in
    /usr/local/bin that guess is /usr/local, which has no CUDA headers.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for cand in candidates:
        if cand and os.path.exists(os.path.join(cand, "bin", "nvcc")) and os.path.isdir(
            os.path.join(cand, "include")
        ):
            return cand
    return None


def _pip_cuda_include_dirs() -> list[str]:
    """Header folders of the NVIDIA pip wheels that CUDA builds of torch depend on.

    A minimal toolkit (nvcc + cudart) lacks e.g. cusparse.h, which ATen's CUDA headers
    include; the ``nvidia-*`` wheels installed with torch ship those headers.
    """
    try:
        import nvidia  # namespace package of the nvidia-* wheels
    except ImportError:
        return []
    dirs: list[str] = []
    for root in getattr(nvidia, "__path__", []):
        dirs.extend(sorted(d for d in glob.glob(os.path.join(root, "*", "include")) if os.path.isdir(d)))
    return dirs


def _want_cuda(torch_mod) -> bool:
    flag = os.environ.get("MMFUSE_BUILD_CUDA", "").strip().lower()
    have_cuda_torch = torch_mod.version.cuda is not None
    have_nvcc = os.environ.get("CUDA_HOME") is not None
    if flag in ("1", "true", "yes", "on"):
        if not (have_cuda_torch and have_nvcc):
            raise RuntimeError(
                "MMFUSE_BUILD_CUDA=1 but "
                + ("torch has no CUDA support" if not have_cuda_torch else "nvcc/CUDA_HOME was not found")
            )
        return True
    if flag in ("0", "false", "no", "off"):
        return False
    return have_cuda_torch and have_nvcc


def _extensions():
    if os.environ.get("MMFUSE_SKIP_EXT", "").strip() in ("1", "true", "yes"):
        _log("MMFUSE_SKIP_EXT set: not building mmfuse._C")
        return [], {}

    cuda_home = _find_cuda_home()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home

    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    cpp_sources = sorted(glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
    use_cuda = _want_cuda(torch) and bool(cuda_sources)

    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    cxx_flags = ["-O3", *openmp]  # the C++ standard flag comes from torch (C++17 or C++20)
    define_macros = []
    if os.environ.get("MMFUSE_NATIVE", "0") == "1":
        cxx_flags.append("-march=native")
    extra_link_args = [*openmp]

    if use_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        define_macros.append(("MMFUSE_WITH_CUDA", None))
        lib_dir = os.path.join(cuda_home, "lib")
        lib64_dir = os.path.join(cuda_home, "lib64")
        extra_link_args += [f"-L{d}" for d in (lib64_dir, lib_dir) if os.path.isdir(d)]
        _log(f"building CPU + CUDA kernels (CUDA_HOME={cuda_home}, arch={os.environ.get('TORCH_CUDA_ARCH_LIST', 'auto')})")
        ext = CUDAExtension(
            name="mmfuse._C",
            sources=cpp_sources + cuda_sources,
            include_dirs=[CSRC, *_pip_cuda_include_dirs()],
            define_macros=define_macros,
            extra_compile_args={
                "cxx": cxx_flags,
                "nvcc": ["-O3", "-lineinfo", "--expt-relaxed-constexpr"],
            },
            extra_link_args=extra_link_args,
        )
    else:
        _log("building CPU kernels only" + ("" if cuda_sources else " (no CUDA sources)"))
        ext = CppExtension(
            name="mmfuse._C",
            sources=cpp_sources,
            include_dirs=[CSRC],
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=extra_link_args,
        )
    return [ext], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
