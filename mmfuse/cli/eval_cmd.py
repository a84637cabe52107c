"""``mmfuse eval``: metrics of a trained model on a data-set split, as JSON."""

from __future__ import annotations

import argparse

from mmfuse.cli.common import (
    add_dataset_arguments,
    check_output_option,
    checked_device,
    dataset_from_info,
    print_json,
    write_json,
)

DESCRIPTION = """\
Evaluate a trained model on a split of a data set and print the task's metrics as JSON (for
classification: accuracy, macro_f1, weighted_f1 per task as "<task>/<metric>", their means
over tasks, and the mean loss). CHECKPOINT is a training --output-dir (its model/ folder is
used), a model/ folder or a checkpoints/checkpoint-<step> folder. Without --dataset, the data
set the model was trained on (recorded in its task.json) is used.
"""

EPILOG = """\
examples:
  python -m mmfuse eval runs/demo                        # test split of the training data set
  python -m mmfuse eval runs/demo --split dev --output runs/demo/dev_metrics.json
  python -m mmfuse eval runs/mvsa/model --dataset mvsa-json --data-dir data/MVSA-single/10-flod-1
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a trained model on a data set (metrics JSON)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="training output dir, model folder or training checkpoint folder")
    add_dataset_arguments(p, split_default="test", split_help="split to evaluate (default: test)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="evaluation batch size (default: 64)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--no-progress-bar", action="store_true", help="no progress bar on stderr")
    p.add_argument("--num-workers", type=int, default=0, metavar="N", help="DataLoader workers (default: 0)")
    p.add_argument("--output", metavar="FILE", help="also write the metrics JSON to FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from mmfuse.data import build_dataset
    from mmfuse.train import Trainer, TrainingArguments
    from mmfuse.train.inference import load_trained

    check_output_option(args.output)  # before any work
    device = checked_device(args.device, "eval")  # fail before loading anything
    trained = load_trained(args.checkpoint)
    name, data_dir, options = dataset_from_info(trained.info, args, "eval")
    dataset = build_dataset(name, args.split, data_dir, **options)
    with tempfile.TemporaryDirectory() as scratch:  # evaluation writes nothing; the trainer wants a folder
        settings = TrainingArguments(output_dir=scratch, eval_batch_size=args.batch_size, device=device,
                                     num_workers=args.num_workers, progress_bar=not args.no_progress_bar, tensorboard=False)
        trainer = Trainer(trained.model, settings, eval_dataset=dataset, task=trained.task,
                          label_schema=trained.label_schema)
        metrics = trainer.evaluate()
    result = {"checkpoint": str(trained.path), "dataset": name, "split": args.split, "num_samples": len(dataset),
              "metrics": metrics}
    if trainer.ctx.is_main:
        if args.output:
            write_json(result, args.output)
        print_json(result)
    return 0
