"""The ``mmfuse`` command line: ``list``, ``--help``, ``python -m mmfuse``."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import make_installed_plugin, subprocess_env

from mmfuse.cli import main

PLUGIN = '''
from torch import nn
from mmfuse.core.registry import hookimpl

class CliLoss(nn.Module):
    """Loss contributed by the CLI test plugin."""

@hookimpl
def mmfuse_losses():
    return {"cli-test-loss": CliLoss}
'''


def test_list_json_in_process(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    assert all(set(r) == {"kind", "name", "plugin", "summary"} for r in rows)


def test_python_m_mmfuse_list_shows_entry_point_plugin(tmp_path):
    root = make_installed_plugin(tmp_path / "site", "mmfuse-cli-test", "mmfuse_cli_test_plugin", PLUGIN, "cli-test")
    env = subprocess_env([str(root)])
    out = subprocess.run(
        [sys.executable, "-m", "mmfuse", "list", "--json"], capture_output=True, text=True, env=env, check=True
    ).stdout
    rows = json.loads(out)
    assert {"kind": "loss", "name": "cli-test-loss", "plugin": "cli-test",
            "summary": "Loss contributed by the CLI test plugin."} in rows
    table = subprocess.run(
        [sys.executable, "-m", "mmfuse", "list", "--kind", "loss"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "cli-test-loss" in table and "cli-test" in table


def test_help_and_version():
    out = subprocess.run([sys.executable, "-m", "mmfuse", "--help"], capture_output=True, text=True,
                         env=subprocess_env(), check=True).stdout
    assert "list" in out
    ver = subprocess.run([sys.executable, "-m", "mmfuse", "--version"], capture_output=True, text=True,
                         env=subprocess_env(), check=True).stdout
    assert ver.strip().startswith("mmfuse ")


def test_unknown_kind_exits_nonzero():
    proc = subprocess.run([sys.executable, "-m", "mmfuse", "list", "--kind", "nope"], capture_output=True,
                          text=True, env=subprocess_env())
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
