"""``make demo``'s script: it trains, and the follow-up commands it prints work exactly as printed."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT, subprocess_env


def test_demo_prints_commands_that_work_as_printed(tmp_path):
    env = subprocess_env()
    demo = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "synthetic_demo.py"), "--num-epochs", "1", "--train-size", "64", "--eval-size", "48",
         "--output-dir", "runs/demo", "--no-progress-bar"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Model, logs and checkpoints"))
    commands = [line.strip() for line in lines[start + 1:] if line.strip()]
    assert len(commands) == 2 and all(" -m mmfuse " in c for c in commands), demo.stdout
    assert commands[0].split()[0] == sys.executable  # the interpreter that ran the demo, not a bare `mmfuse`
    evaluated = subprocess.run(commands[0], shell=True, capture_output=True, text=True, env=env, cwd=tmp_path,
                               timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["dataset"] == "synthetic" and result["split"] == "test" and result["num_samples"] == 48
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    predicted = subprocess.run(commands[1], shell=True, capture_output=True, text=True, env=env, cwd=tmp_path,
                               timeout=600)
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(rows) == 3 and all("prediction" in row for row in rows)
