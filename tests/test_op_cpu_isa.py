"""Every instruction-set build of the CPU kernels against the float64 reference.

The kernels pick the widest build the CPU has (512-bit matrix products on AVX-512, AVX2 + FMA,
or the baseline ISA) once per process, capped by ``ATEN_CPU_CAPABILITY`` as torch's own CPU
kernels are. The main suite runs the native build; here each narrower one runs
``tests/test_op_cpu.py`` (forward, backward, gradcheck, hypothesis, determinism) and
``tests/test_op_nonfinite.py`` (NaN / inf at valid and masked keys) in a fresh
interpreter with the variable set, after checking that the kernels report that very build.
Budget: ~20 s per build on 2 cores.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, subprocess_env

from mmfuse.ops import cpu_capability, fused_kernel_available

if not fused_kernel_available("cpu"):
    pytest.skip("the CPU kernels of mmfuse._C are not built", allow_module_level=True)

ORDER = ["default", "avx2", "avx512"]


def run_with_capability(capability: str | None, *args: str) -> subprocess.CompletedProcess:
    """``python *args`` in a fresh interpreter with ATEN_CPU_CAPABILITY set (None: unset)."""
    env = subprocess_env([str(REPO_ROOT / "tests")])
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def reported_capability(capability: str | None) -> str:
    got = run_with_capability(capability, "-c", "from mmfuse.ops import cpu_capability; print(cpu_capability())")
    assert got.returncode == 0, got.stderr
    return got.stdout.strip()


@functools.lru_cache(maxsize=1)
def native() -> str:
    """The build the kernels choose on this CPU when nothing caps them."""
    return reported_capability(None)


def test_native_build_is_reported():
    assert native() in ORDER
    assert reported_capability("") == native()  # an empty variable caps nothing
    assert reported_capability("avx512") == native()  # the widest build: caps nothing either
    here = os.environ.get("ATEN_CPU_CAPABILITY") or "avx512"
    expected = ORDER[min(ORDER.index(native()), ORDER.index(here) if here in ORDER else len(ORDER) - 1)]
    assert cpu_capability() == expected  # this process, under whatever cap the suite runs with


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_narrower_build_matches_reference(capability):
    if ORDER.index(capability) >= ORDER.index(native()):
        pytest.skip(f"{capability} is the native build here ({native()}): the main suite runs it")
    assert reported_capability(capability) == capability, "ATEN_CPU_CAPABILITY did not select the build"
    suite = run_with_capability(
        capability, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_op_cpu.py",
        "tests/test_op_nonfinite.py", "-k", "not compile and not opcheck",
    )
    assert suite.returncode == 0, suite.stdout[-3000:] + suite.stderr[-2000:]
    assert " passed" in suite.stdout and " failed" not in suite.stdout
