"""Loading of the compiled extension ``mmfuse._C``.

Importing ``mmfuse._C`` registers the ``torch.ops.mmfuse.*`` operators (TORCH_LIBRARY).
When the extension is missing or broken, mmfuse still imports: the ops fall back to the
eager PyTorch reference and a single warning says why.
"""

from __future__ import annotations

import functools
import os
import warnings
from types import ModuleType


class ExtensionUnavailableWarning(RuntimeWarning):
    """The compiled kernels could not be loaded; the eager reference is used instead."""


@functools.lru_cache(maxsize=1)
def load_extension() -> ModuleType | None:
    """Return the ``mmfuse._C`` module, or ``None`` (after one warning) if it is unavailable.

    Set ``MMFUSE_DISABLE_EXTENSION=1`` to force the fallback (useful for comparisons).
    """
    if os.environ.get("MMFUSE_DISABLE_EXTENSION", "").strip() in ("1", "true", "yes"):
        return None
    try:
        import torch  # noqa: F401  (libtorch must be loaded before the extension)

        from mmfuse import _C
    except ImportError as exc:
        warnings.warn(
            "mmfuse: the compiled extension mmfuse._C is not available "
            f"({exc}); falling back to the eager PyTorch reference (slower). "
            "Rebuild with `pip install --no-build-isolation -e .` to get the fused kernels.",
            ExtensionUnavailableWarning,
            stacklevel=2,
        )
        return None
    return _C


def extension_available() -> bool:
    """True when the fused kernels are loaded."""
    return load_extension() is not None


def built_with_cuda() -> bool:
    """True when the loaded extension contains the CUDA kernels."""
    ext = load_extension()
    return bool(ext is not None and ext.built_with_cuda())


def cpu_capability() -> str | None:
    """The instruction set of the CPU kernels: ``"avx512"`` (512-bit matrix products, float32
    softmax and cosine sums; the other row functions on 256-bit vectors), ``"avx2"`` or
    ``"default"`` (the baseline ISA); ``None`` without the extension.

    The widest the CPU supports, capped by the ``ATEN_CPU_CAPABILITY`` environment variable
    (``default``, ``avx2``, ``avx512``), read once, as torch's own CPU kernels do.
    """
    ext = load_extension()
    return None if ext is None else str(ext.cpu_capability())
