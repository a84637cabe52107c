"""The compiled extension: present, and with CUDA kernels whenever the build could compile them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO_ROOT, subprocess_env

from mmfuse.ops import built_with_cuda, extension_available


def test_extension_is_built_and_registers_the_op():
    assert extension_available(), "mmfuse._C did not load: run `pip install --no-build-isolation -e .`"
    assert hasattr(torch.ops.mmfuse, "gated_residual_attention")
    assert hasattr(torch.ops.mmfuse, "gated_residual_attention_backward")


@pytest.mark.skipif(os.environ.get("MMFUSE_BUILD_CUDA", "") == "0", reason="CUDA build disabled by MMFUSE_BUILD_CUDA=0")
def test_cuda_sources_compiled_when_nvcc_present():
    """The CI step that proves the .cu sources compile: with nvcc and a CUDA torch, the
    default build must contain the CUDA kernels (even on a machine without a GPU)."""
    if shutil.which("nvcc") is None or torch.version.cuda is None:
        pytest.skip("needs nvcc and a CUDA-enabled torch")
    if not list((REPO_ROOT / "csrc" / "cuda").glob("*.cu")):
        pytest.skip("no CUDA sources in csrc/cuda")
    assert built_with_cuda(), "nvcc is present but the extension was built without its CUDA kernels"


def test_import_without_extension_warns_once():
    code = textwrap.dedent(
        """
        import sys, warnings
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "mmfuse._C":
                    raise ImportError("simulated missing extension")
        sys.meta_path.insert(0, Block())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import mmfuse, mmfuse.ops
            assert mmfuse.ops.load_extension() is None
            assert mmfuse.ops.load_extension() is None
            assert not mmfuse.ops.extension_available()
        msgs = [str(w.message) for w in caught if "mmfuse._C" in str(w.message)]
        assert len(msgs) == 1, msgs
        assert "falling back to the eager PyTorch reference" in msgs[0]
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
