"""``mmfuse predict``: predictions of a trained model as JSON lines."""

from __future__ import annotations

import argparse
import sys

from mmfuse.cli.common import add_dataset_arguments, check_output_option, checked_device, dataset_from_info

DESCRIPTION = """\
Predict with a trained model and write one JSON object per input line. Inputs are either
--inputs FILE.jsonl, one {"text": "...", "image": "path/to/image.jpg"} per line (optional "id";
image paths relative to the file), or a data-set split (--dataset/--split; the training data set
from task.json when only --split is given). For classification each line is
  {"id": ..., "prediction": {task: class}, "probabilities": {task: {class: p}}}
plus "label": {task: class} for labelled data-set items. CHECKPOINT is as for `mmfuse eval`.
"""

EPILOG = """\
examples:
  python -m mmfuse predict runs/demo --inputs tweets.jsonl --output predictions.jsonl
  python -m mmfuse predict runs/demo --split test | head -3
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict with a trained model (JSON lines)", description=DESCRIPTION,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="training output dir, model folder or training checkpoint folder")
    p.add_argument("--inputs", metavar="FILE", help='JSON-lines file of {"text": ..., "image": ...} objects')
    p.add_argument("--on-bad-image", choices=["error", "skip"], default="error",
                   help="missing/corrupt image in --inputs: stop with an error naming it, or skip the line "
                        "with a warning (default: error)")
    add_dataset_arguments(p, split_default=None, split_help="data-set split to predict (instead of --inputs)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="batch size (default: 64)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--no-progress-bar", action="store_true", help="no progress bar on stderr")
    p.add_argument("--output", metavar="FILE", help="write the JSON lines to FILE instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from mmfuse.core.config import ConfigError
    from mmfuse.data import build_dataset
    from mmfuse.train import Trainer, TrainingArguments
    from mmfuse.train.inference import JsonlInputs, load_trained
    from mmfuse.utils.io import atomic_write_text, json_dumps

    from_dataset = bool(args.dataset or args.split or args.data_dir or args.data_opt)
    if bool(args.inputs) == from_dataset:
        raise ConfigError("predict: give either --inputs FILE or a data set (--dataset / --split), not both or neither")
    check_output_option(args.output)  # before any work
    device = checked_device(args.device, "predict")  # fail before loading anything
    trained = load_trained(args.checkpoint)
    if args.inputs:
        dataset = JsonlInputs(args.inputs, on_bad_image=args.on_bad_image)
    else:
        name, data_dir, options = dataset_from_info(trained.info, args, "predict")
        dataset = build_dataset(name, args.split or "test", data_dir, **options)
    with tempfile.TemporaryDirectory() as scratch:
        settings = TrainingArguments(output_dir=scratch, eval_batch_size=args.batch_size, device=device,
                                     progress_bar=not args.no_progress_bar, tensorboard=False)
        trainer = Trainer(trained.model, settings, task=trained.task, label_schema=trained.label_schema)
        if trainer.ctx.distributed:
            raise ConfigError("predict: runs in one process; start it without torchrun")
        rows = trainer.predict(dataset)
    text = "".join(json_dumps(row) + "\n" for row in rows)
    if args.output:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
