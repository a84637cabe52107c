"""``mmfuse bench attn|model``: the attention-op and model benchmarks.

Everything after the benchmark's name is handed to its ``main(argv)`` unchanged, so
``mmfuse bench attn --help`` shows the benchmark's own options. The modules are imported only
when their benchmark runs (they pull in torch, models, ...).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable

#: benchmark name -> (module exposing ``main(argv)``, extra keyword arguments of main, help)
BENCHMARKS: dict[str, tuple[str, dict[str, Any], str]] = {
    "attn": ("mmfuse.bench.attn", {"invoked_as": "mmfuse bench attn"},
             "gated residual attention op: fused kernel vs eager vs torch.compile vs SDPA"),
    "model": ("mmfuse.bench.model", {"invoked_as": "mmfuse bench model"},
              "RADM training step: fused attention vs the eager reference"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks: the attention op (attn) or a model's training step (model)",
        description="Run a benchmark; options after its name are the benchmark's own "
        "(see `mmfuse bench attn --help`, `mmfuse bench model --help`).",
    )
    benches = p.add_subparsers(dest="benchmark", metavar="<benchmark>")
    benches.required = True
    for name, (_, _, help_text) in BENCHMARKS.items():
        b = benches.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
        b.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def load_benchmark(name: str) -> Callable[..., int]:
    """The ``main`` of a benchmark; ImportError naming the missing module when it is absent."""
    module_name, kwargs, _ = BENCHMARKS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # the benchmark exists but one of its own imports is missing
        raise ImportError(
            f"mmfuse bench {name}: the benchmark module {module_name} is not part of this installation "
            f"({module_name.replace('.', '/')}.py is missing)"
        ) from exc
    main = getattr(module, "main", None)
    if not callable(main):
        raise ImportError(f"mmfuse bench {name}: {module_name} has no main(argv) function")
    return lambda argv: main(argv, **kwargs)


def run(args: argparse.Namespace) -> int:
    try:
        main = load_benchmark(args.benchmark)
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(main(list(args.argv)) or 0)
