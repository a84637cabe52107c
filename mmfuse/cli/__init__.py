"""The ``mmfuse`` command line: ``mmfuse <command> [options]``.

Each subcommand lives in its own module of this package and exposes
``add_parser(subparsers)`` (which sets ``func`` on its parser) — add a module name to
:data:`COMMANDS` to add a command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

#: subcommand modules, in the order ``mmfuse --help`` lists them
COMMANDS: tuple[str, ...] = ("list", "train", "eval", "predict", "viz", "bench")


def build_parser() -> argparse.ArgumentParser:
    from mmfuse import __version__

    parser = argparse.ArgumentParser(
        prog="mmfuse",
        description="Multimodal (text + image) fusion models: build, train, evaluate, inspect.",
    )
    parser.add_argument("--version", action="version", version=f"mmfuse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"mmfuse.cli.{name}_cmd").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    from mmfuse.core.config import ConfigError
    from mmfuse.core.registry import RegistryError

    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        result = args.func(args)
    except (ConfigError, RegistryError, FileNotFoundError) as exc:
        print(f"mmfuse {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)
