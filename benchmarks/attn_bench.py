"""Gated residual attention op benchmark (fused vs eager vs torch.compile vs SDPA); see mmfuse/bench/attn.py.

    PYTHONPATH=. python benchmarks/attn_bench.py --json benchmarks/results/attn_bench_cpu-2core.json
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from mmfuse.bench.attn import main

    raise SystemExit(main())
