"""``mmfuse list``: every registry entry (components, models, presets, data sets, tasks), its kind and plugin."""

from __future__ import annotations

import argparse
import json

from mmfuse.core.registry import KINDS, get_registry


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list registered entries (encoders, fusion blocks, heads, losses, models, presets, data sets, tasks)",
        description="List every registered entry (component, model, preset, data set, task) with its kind and "
                    "the plugin that supplied it.",
    )
    p.add_argument("--kind", choices=KINDS, help="only components of this kind")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    entries = get_registry().entries(args.kind)
    rows = [{"kind": e.kind, "name": e.name, "plugin": e.plugin, "summary": e.summary} for e in entries]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    from mmfuse.utils.console import console

    table = Table(title="mmfuse components", show_lines=False)
    for col in ("kind", "name", "plugin"):  # identifiers stay whole; the summary wraps to the terminal
        table.add_column(col, no_wrap=True)
    table.add_column("summary", overflow="fold", ratio=1)
    for row in rows:
        table.add_row(row["kind"], row["name"], row["plugin"], row["summary"])
    console(highlight=False).print(table)
    if not rows:
        print("(no components registered)")
    return 0
