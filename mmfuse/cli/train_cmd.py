"""``mmfuse train``: train a model (preset or config file) on a registered data set."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from mmfuse.cli.common import add_dataclass_arguments, add_dataset_arguments, parse_key_values, print_json
from mmfuse.core.config import ConfigError, load_config, save_config
from mmfuse.train.arguments import TrainingArguments
from mmfuse.tasks import list_tasks
from mmfuse.train.trainer import TrainerCallback
from mmfuse.utils.io import json_dumps

RUN_CONFIG_NAME = "run.yaml"
RUN_KEYS = ("model", "set", "dataset", "task", "eval_split", "training")

DESCRIPTION = """\
Train MODEL (a preset name such as radm-tiny, or a model config .json/.yaml) on a registered
data set. Writes to --output-dir: checkpoints/ (resumable training checkpoints), logs/train.jsonl
and logs/tensorboard/, model/ (the best model: weights, config.json, task.json, eval_results.json)
and run.yaml (the run's full configuration). Prints the final dev metrics as JSON.

Settings can also come from a run file (--config) with the keys
  model: <preset | path | mapping>   set: {key.path: value}   task: classification
  dataset: {name: ..., data_dir: ..., options: {...}}   eval_split: dev   training: {<training options>}
and command-line options override it. Multi-process: torchrun --nproc_per_node N -m mmfuse train ...
"""

EPILOG = """\
examples:
  python -m mmfuse train radm-tiny --dataset synthetic --output-dir runs/demo --num-epochs 6 --learning-rate 1e-3
  python -m mmfuse train radm-tiny --dataset mvsa-single --data-dir data/MVSA_Single --data-opt on_bad_image=skip \\
      --set fusion.mode=none --output-dir runs/mvsa
  python -m mmfuse train --resume --output-dir runs/demo      # continue the interrupted run exactly
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a data set", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="preset name (see `mmfuse list --kind preset`) or model config file")
    p.add_argument("--config", metavar="FILE", help="run file (.yaml/.json) with model, set, dataset, task, training")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=None,
                   help="override a model config entry, repeatable (dotted keys, e.g. fusion.mode=none)")
    p.add_argument("--task", help=f"training task: {', '.join(list_tasks())} (default: classification; "
                                  "plugins add more through the mmfuse_tasks hook, see docs/plugins.md)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="continue from the latest checkpoint in --output-dir (or from CHECKPOINT); settings "
                        "missing on the command line come from the run's run.yaml")
    add_dataset_arguments(p, split_default=None, split_help="evaluation split used during training "
                          "(default: dev; 'none' to train without evaluation)")
    group = p.add_argument_group("training options (TrainingArguments)")
    add_dataclass_arguments(group, TrainingArguments)
    p.set_defaults(func=run)


def _training_values(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(args, f.name) for f in fields(TrainingArguments) if hasattr(args, f.name)}


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
    """Layers, lowest first: run.yaml of the run being resumed, --config, command-line options."""
    base: dict[str, Any] = {}
    training_cli = _training_values(args)
    recorded = _recorded_run(args.resume, training_cli.get("output_dir"))
    if recorded is not None:
        base = load_config(recorded)
        base["training"] = {k: v for k, v in (base.get("training") or {}).items() if k != "overwrite_output_dir"}
    if args.config:
        loaded = load_config(args.config)
        unknown = sorted(set(loaded) - set(RUN_KEYS))
        if unknown:
            raise ConfigError(f"--config {args.config}: unknown keys {unknown}; expected some of {list(RUN_KEYS)}")
        base = {**base, **loaded}
    config = dict(base)
    if args.model:
        config["model"] = args.model
    config["set"] = {**(config.get("set") or {}), **parse_key_values(args.set, "--set")}
    dataset = dict(config.get("dataset") or {})
    if args.dataset:
        if args.dataset != dataset.get("name"):
            dataset = {}
        dataset["name"] = args.dataset
    if args.data_dir is not None:
        dataset["data_dir"] = args.data_dir
    dataset["options"] = {**(dataset.get("options") or {}), **parse_key_values(args.data_opt, "--data-opt")}
    config["dataset"] = dataset
    if args.task:
        config["task"] = args.task
    if args.split:
        config["eval_split"] = args.split
    config["training"] = {**(config.get("training") or {}), **training_cli}
    if "model" not in config:
        raise ConfigError("train: MODEL: required (a preset name or a model config file), or give it in --config")
    if not dataset.get("name"):
        raise ConfigError("train: --dataset: required (a registered data set name), or give it in --config")
    return config


def _recorded_run(resume: str | bool | None, output_dir: str | None) -> Path | None:
    """The ``run.yaml`` a resume takes its settings from: ``--output-dir``'s, else the one of the
    run that wrote the checkpoint given to ``--resume`` (``RUN/checkpoints/checkpoint-N`` or ``RUN``)."""
    if resume is None:
        return None
    candidates = [Path(output_dir)] if output_dir else []
    if isinstance(resume, str):
        source = Path(resume)
        candidates += [source, source.parent.parent]
    return next((c / RUN_CONFIG_NAME for c in candidates if (c / RUN_CONFIG_NAME).is_file()), None)


class _WriteRunConfig(TrainerCallback):
    """Writes ``run.yaml`` once the trainer has locked the folder and accepted the resume, so a
    refused run leaves the existing ``run.yaml`` untouched."""

    def __init__(self, record: dict[str, Any], path: Path) -> None:
        self.record, self.path = record, path

    def on_train_begin(self, trainer: Any, state: Any) -> None:
        if trainer.ctx.is_main:
            save_config(json.loads(json_dumps(self.record)), self.path)


def _precheck_output_dir(training: TrainingArguments, resume: object) -> None:
    """Cheap checks before the data is read: the folder is writable, not busy, and not another run."""
    from mmfuse.train.run_dir import OutputDirError, RunDirLock, used_entries

    RunDirLock(training.output_dir).check_available()  # writable and not in use
    used = used_entries(training.output_dir)
    if resume is None and used and not training.overwrite_output_dir:
        raise OutputDirError(
            f"--output-dir: {training.output_dir!r} already holds a run ({', '.join(used)}); resume it "
            "(--resume), choose another --output-dir, or pass --overwrite-output-dir to delete the old run"
        )


def run(args: argparse.Namespace) -> int:
    from mmfuse.models.builder import build_model, resolve_model_config
    from mmfuse.data import build_dataset
    from mmfuse.tasks import get_task
    from mmfuse.train import Trainer, seed_everything
    from mmfuse.train.signals import TrainingInterrupted

    config = _run_config(args)
    training = TrainingArguments.from_dict(config["training"])
    if int(os.environ.get("RANK", "0")) == 0:
        _precheck_output_dir(training, args.resume)
    task = get_task(config.get("task") or "classification")
    dataset = config["dataset"]
    name, data_dir, options = dataset["name"], dataset.get("data_dir"), dataset.get("options") or {}
    eval_split = config.get("eval_split") or "dev"
    train_set = build_dataset(name, "train", data_dir, **options)
    eval_set = None if eval_split == "none" else build_dataset(name, eval_split, data_dir, **options)
    schema = task.label_schema(train_set)
    model_config = task.configure_model(resolve_model_config(config["model"], **config["set"]), schema)
    seed_everything(training.seed)
    model = build_model(model_config)
    run_info = {"dataset": {"name": name, "data_dir": data_dir, "options": options}, "eval_split": eval_split}
    record = {**config, "model": model_config, "set": {}, "task": task.name, "eval_split": eval_split,
              "training": {**training.to_dict(), "overwrite_output_dir": False}}
    writer = _WriteRunConfig(record, Path(training.output_dir) / RUN_CONFIG_NAME)
    trainer = Trainer(model, training, train_set, eval_set, task=task, label_schema=schema, run_info=run_info,
                      callbacks=[writer])
    resume = args.resume
    try:
        out = trainer.train(resume_from_checkpoint=resume if resume is not True else True)
    except KeyboardInterrupt as exc:  # SIGINT / SIGTERM: the trainer saved a checkpoint if it could
        from mmfuse.cli import Terminated
        from mmfuse.train.checkpointing import find_latest_checkpoint

        if isinstance(exc, TrainingInterrupted):
            message, code = str(exc), exc.exit_code
        else:  # outside the training loop (final evaluation / export)
            terminated = isinstance(exc, Terminated)
            message, code = ("terminated (SIGTERM)" if terminated else "interrupted"), (143 if terminated else 130)
        latest = find_latest_checkpoint(Path(training.output_dir) / "checkpoints")
        if trainer.ctx.is_main:
            if latest is not None and not (isinstance(exc, TrainingInterrupted) and exc.checkpoint):
                message += f"; last complete checkpoint: {str(latest)!r}"
            print(f"mmfuse train: {message}", file=sys.stderr)
            if latest is not None:
                print(f"resume with: mmfuse train --resume --output-dir {shlex.quote(str(training.output_dir))}",
                      file=sys.stderr)
        return code
    if trainer.ctx.is_main:
        print_json({"output_dir": str(training.output_dir), "model_dir": str(out.model_dir),
                    "global_step": out.global_step, "best_checkpoint": out.best_checkpoint,
                    "stopped_early": out.stopped_early, "metrics": out.metrics})
    return 0
