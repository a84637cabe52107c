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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 2000 else text[:1997] + "..."


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training (e.g. while a data set is read): exit 143 without a traceback."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated("terminated (SIGTERM)")


def _add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="count", default=default,
                       help="more log output (debug messages); logs go to stderr")
    group.add_argument("-q", "--quiet", action="count", default=default,
                       help="less log output: -q warnings and errors only, -qq errors only")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code.

    Exit status: 0 success; 2 one-line error about an option, a config, a data set, a file that
    cannot be read or a location that cannot be written; 1 training failed (a non-finite loss);
    130 / 143 interrupted by SIGINT / SIGTERM. ``MMFUSE_DEBUG=1`` shows the traceback instead.
    """
    import os
    import signal
    import threading

    from mmfuse.core.registry import RegistryError
    from mmfuse.train.guards import NonFiniteLossError
    from mmfuse.utils.console import set_verbosity, verbosity_from_flags

    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    set_verbosity(verbosity_from_flags(getattr(args, "verbose", 0) or 0, getattr(args, "quiet", 0) or 0))
    debug = os.environ.get("MMFUSE_DEBUG", "") not in ("", "0")
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        result = args.func(args)
    except NonFiniteLossError as exc:
        if debug:
            raise
        print(f"mmfuse {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except (ValueError, OSError, RegistryError) as exc:
        if debug:
            raise
        print(f"mmfuse {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if debug:
            raise
        terminated = isinstance(exc, Terminated)
        print(f"mmfuse {args.command}: {'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(result or 0)
