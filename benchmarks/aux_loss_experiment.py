"""Experiment: does adding ITC / ITM auxiliary losses help radm-tiny on the synthetic set?

Trains radm-tiny on the embedded synthetic set with both tasks — ``sentiment`` (additive in the
two modalities) and ``match`` (does the caption's shape word name the drawn shape? needs
cross-modal interaction) — under four auxiliary-loss settings (none, ITC, ITM, ITC+ITM, each
weight 0.1) and several seeds, and reports dev macro-F1 per task as
mean ± sample standard deviation over seeds. Every run uses the same data, schedule and seed
set; only the auxiliary losses differ.

    python benchmarks/aux_loss_experiment.py                      # 4 settings × 3 seeds
    python benchmarks/aux_loss_experiment.py --seeds 0 --num-epochs 1 --train-size 240   # smoke run

Prints a Markdown table and writes it to ``benchmarks/results/aux_loss_experiment.md``, with the
settings, per-run metrics and summary in ``benchmarks/results/aux_loss_experiment.json``. CPU runs use one torch thread unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mmfuse import build_model
from mmfuse.data import build_dataset
from mmfuse.train import Trainer, TrainingArguments, seed_everything
from mmfuse.utils.io import atomic_write_text

SETTINGS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "itc": [{"name": "itc", "weight": 0.1}],
    "itm": [{"name": "itm", "weight": 0.1}],
    "itc+itm": [{"name": "itc", "weight": 0.1}, {"name": "itm", "weight": 0.1}],
}
TASKS = ["sentiment", "match"]
RESULTS = Path(__file__).resolve().parent / "results" / "aux_loss_experiment.json"


def run_one(setting: str, seed: int, cli: argparse.Namespace, train, dev) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir, num_epochs=cli.num_epochs, batch_size=cli.batch_size,
            learning_rate=cli.learning_rate, warmup_ratio=0.05, seed=seed, progress_bar=False, tensorboard=False,
            metric_for_best_model="macro_f1", load_best_model_at_end=False,  # report the last epoch, no selection on dev
        )
        seed_everything(seed)
        overrides: dict[str, Any] = {"heads.tasks": {"sentiment": 3, "match": 2}}
        if SETTINGS[setting]:
            overrides["aux_losses"] = SETTINGS[setting]
        model = build_model("radm-tiny", **overrides)
        start = time.perf_counter()
        out = Trainer(model, args, train, dev).train()
    metrics = {k: v for k, v in out.metrics.items() if k != "loss"}
    return {"setting": setting, "seed": seed, "seconds": round(time.perf_counter() - start, 1), "metrics": metrics}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for setting in SETTINGS:
        chosen = [r for r in runs if r["setting"] == setting]
        if not chosen:
            continue
        summary[setting] = {}
        for key in [f"{t}/macro_f1" for t in TASKS] + [f"{t}/accuracy" for t in TASKS] + ["macro_f1"]:
            values = [r["metrics"][key] for r in chosen]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[setting][key] = {"mean": statistics.fmean(values), "std": std, "n": len(values)}
    return summary


def table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    keys = [("sentiment/macro_f1", "sentiment macro-F1"), ("match/macro_f1", "match macro-F1"),
            ("macro_f1", "mean macro-F1")]
    lines = ["| aux losses | " + " | ".join(label for _, label in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for setting, values in summary.items():
        cells = [f"{values[k]['mean']:.3f} ± {values[k]['std']:.3f}" for k, _ in keys]
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train-size", type=int, default=360)
    parser.add_argument("--dev-size", type=int, default=600)
    parser.add_argument("--num-epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--output", type=Path, default=RESULTS)
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)

    train = build_dataset("synthetic", "train", train_size=cli.train_size, tasks=TASKS)
    dev = build_dataset("synthetic", "dev", dev_size=cli.dev_size, tasks=TASKS)
    runs = []
    for seed in cli.seeds:  # seeds outermost: a partial run still compares every setting
        for setting in cli.settings:
            result = run_one(setting, seed, cli, train, dev)
            runs.append(result)
            print(f"{setting:8s} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in result["metrics"].items()
                                                        if k.endswith("macro_f1")) + f" ({result['seconds']} s)",
                  file=sys.stderr, flush=True)
    summary = summarise(runs)
    ceilings = {task: {k: float(v) for k, v in c.as_dict().items()} for task, c in dev.ceilings().items()}
    report = {
        "experiment": "radm-tiny on the synthetic set (sentiment + match) with/without ITC and ITM (weight 0.1)",
        "settings": {k: SETTINGS[k] for k in cli.settings},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cli).items()},
        "bayes_ceilings_accuracy": ceilings,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "device": "cuda" if torch.cuda.is_available() else "cpu"},
        "runs": runs,
        "summary": summary,
    }
    cli.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cli.output, json.dumps(report, indent=2) + "\n")
    heading = (f"radm-tiny, synthetic set (train {cli.train_size} items, {cli.num_epochs} epochs, dev {cli.dev_size}): "
               f"dev macro-F1, mean ± std over seeds {cli.seeds}")
    text = f"{heading}\n\n{table(summary)}\n"
    atomic_write_text(cli.output.with_suffix(".md"), text)
    print(text)
    print(f"written: {cli.output} and {cli.output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
