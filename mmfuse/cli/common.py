"""Option helpers shared by ``mmfuse train``, ``eval`` and ``predict`` (not a command itself)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

from mmfuse.core.config import ConfigError, parse_set_overrides
from mmfuse.utils.io import atomic_write_text, check_writable_file, json_dumps


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` items (values read as JSON, else YAML) → dict; errors name ``flag``."""
    try:
        return parse_set_overrides(items)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("--set", flag, 1)) from None


def add_dataset_arguments(parser: argparse.ArgumentParser, *, split_default: str | None, split_help: str) -> None:
    from mmfuse.data import list_datasets

    group = parser.add_argument_group("data")
    group.add_argument("--dataset", metavar="NAME",
                       help=f"registered data set: {', '.join(list_datasets())}")
    group.add_argument("--data-dir", metavar="DIR", help="the data set's folder (not for 'synthetic')")
    group.add_argument("--data-opt", metavar="KEY=VALUE", action="append", default=None,
                       help="data-set builder option, repeatable (e.g. train_size=600, on_bad_image=skip, "
                            "tasks='[sentiment, match]'); see docs/data.md")
    group.add_argument("--split", default=split_default, help=split_help)


def _optional_inner(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _nullable(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _yaml_value(text: str) -> Any:
    """A structured option value written as YAML / JSON (``[{match: 'x.*', learning_rate: 1e-4}]``);
    numbers like ``1e-4`` are floats (YAML 1.2), not the strings PyYAML's YAML 1.1 makes of them."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"expected a YAML value, got {text!r} ({exc})") from None


_yaml_value.__name__ = "YAML"


def add_dataclass_arguments(group: argparse._ArgumentGroup, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` option per dataclass field, typed from its annotation, help from its metadata.

    Defaults are ``argparse.SUPPRESS``, so only options given on the command line appear in the
    namespace (they then override a config file); the help shows the dataclass default.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, optional = _optional_inner(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata.get("help", "")
        if "default" not in text:
            text += f" (default: {f.default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if tp is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if typing.get_origin(tp) is Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        elif tp not in (int, float, str):  # lists / mappings (e.g. param_groups): one YAML value
            kwargs["type"] = _yaml_value
            kwargs["metavar"] = "YAML"
        else:
            convert = {int: int, float: float, str: str}[tp]
            kwargs["type"] = _nullable(convert) if optional else convert
            metavar = "DIR" if f.name.endswith("_dir") else {int: "N", float: "X", str: "TEXT"}[tp]
            kwargs["metavar"] = metavar + ("|none" if optional else "")
        group.add_argument(flag, **kwargs)


def print_json(value: Any) -> None:
    """Standard JSON on stdout (non-finite numbers as ``null``)."""
    print(json_dumps(value, indent=2))
    sys.stdout.flush()


def write_json(value: Any, path: str | Path) -> None:
    atomic_write_text(Path(path), json_dumps(value, indent=2) + "\n")


def check_output_option(path: str | None, flag: str = "--output") -> None:
    """Fail before any work when ``path`` cannot be written (a folder, a file as its folder, a
    read-only or missing-and-uncreatable folder); one line naming ``flag``."""
    if path:
        check_writable_file(path, flag)


def checked_device(value: str, command: str) -> str:
    """``value`` of ``--device`` if this machine has it; else a ConfigError naming ``--device``
    (not the ``training.device`` field it is passed on to)."""
    from mmfuse.train.distributed import resolve_device

    try:
        resolve_device(value)
    except ConfigError as exc:
        detail = str(exc).split(": ", 1)[-1]
        raise ConfigError(f"{command}: --device: {detail}") from None
    return value


def dataset_from_info(info: Mapping[str, Any], args: argparse.Namespace, command: str) -> tuple[str, str | None, dict[str, Any]]:
    """(name, data_dir, options) from the command line, falling back to the data set recorded in ``task.json``."""
    recorded = info.get("dataset") or {}
    name = args.dataset or recorded.get("name")
    if not name:
        raise ConfigError(f"{command}: --dataset: required (the checkpoint does not record its data set)")
    same = name == recorded.get("name")
    data_dir = args.data_dir if args.data_dir is not None else (recorded.get("data_dir") if same else None)
    options = {**(recorded.get("options") or {} if same else {}), **parse_key_values(args.data_opt, "--data-opt")}
    return name, data_dir, options
