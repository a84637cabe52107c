"""The fused gated residual attention operator and its eager reference."""

from mmfuse.ops._extension import ExtensionUnavailableWarning, built_with_cuda, extension_available, load_extension

__all__ = ["ExtensionUnavailableWarning", "built_with_cuda", "extension_available", "load_extension"]
