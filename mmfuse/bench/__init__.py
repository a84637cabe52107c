"""Benchmarks reachable from ``mmfuse bench``: the attention op (``attn``) and the model (``model``).

Each benchmark module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""
