"""RADM training-step benchmark (fused attention op vs eager reference, eager and torch.compile);
see mmfuse/bench/model.py.

    PYTHONPATH=. python benchmarks/model_bench.py --json benchmarks/results/model_bench_cpu.json
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from mmfuse.bench.model import main

    raise SystemExit(main())
