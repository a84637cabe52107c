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
    _add_verbosity(parser, argparse.SUPPRESS)
    parser.set_defaults(verbose=0, quiet=0)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"mmfuse.cli.{name}_cmd").add_parser(sub)
    for command in sub.choices.values():  # accepted before or after the command name
        _add_verbosity(command, argparse.SUPPRESS)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="count", default=default,
                       help="more log output (debug messages); logs go to stderr")
    group.add_argument("-q", "--quiet", action="count", default=default,
                       help="less log output: -q warnings and errors only, -qq errors only")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    from mmfuse.config import ConfigError
    from mmfuse.registry import RegistryError
    from mmfuse.utils.console import set_verbosity, verbosity_from_flags

    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    set_verbosity(verbosity_from_flags(getattr(args, "verbose", 0) or 0, getattr(args, "quiet", 0) or 0))
    try:
        result = args.func(args)
    except (ConfigError, RegistryError, FileNotFoundError) as exc:
        print(f"mmfuse {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)
