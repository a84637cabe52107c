"""The fused gated residual attention operator, its eager reference and extension loading.

``gated_residual_attention`` dispatches to ``torch.ops.mmfuse.gated_residual_attention``
(C++/CUDA kernels) when they are built for the input's device and dtype, and otherwise to
``gated_residual_attention_reference`` (warning once if the extension is missing).
"""

from mmfuse.ops._extension import (
    ExtensionUnavailableWarning,
    built_with_cuda,
    cpu_capability,
    extension_available,
    load_extension,
)
from mmfuse.ops.attention import fused_kernel_available, gated_residual_attention
from mmfuse.ops.reference import gated_residual_attention_reference
from mmfuse.ops.validation import MODES

__all__ = [
    "gated_residual_attention",
    "gated_residual_attention_reference",
    "fused_kernel_available",
    "MODES",
    "ExtensionUnavailableWarning",
    "built_with_cuda",
    "cpu_capability",
    "extension_available",
    "load_extension",
]
