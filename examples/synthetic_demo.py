"""Train radm-tiny on the embedded synthetic set and compare it with the unimodal Bayes ceilings.

The synthetic labels depend on both modalities (see docs/data.md): no text-only or image-only
classifier can exceed the ceilings printed below, while a model that fuses both can. This is
what ``make demo`` runs; the same run from the command line is::

    python -m mmfuse train radm-tiny --dataset synthetic --output-dir runs/demo \
        --num-epochs 3 --batch-size 32 --learning-rate 1e-3 --warmup-ratio 0.05

Usage: ``python examples/synthetic_demo.py [--output-dir runs/demo] [--num-epochs N] ...``
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from mmfuse import build_model
from mmfuse.data import build_dataset
from mmfuse.train import Trainer, TrainingArguments, seed_everything

#: the demo's training settings (tuned to finish in a few minutes on 2 CPU cores)
DEMO_SETTINGS = {"num_epochs": 3, "batch_size": 32, "learning_rate": 1e-3, "warmup_ratio": 0.05, "seed": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="runs/demo")
    parser.add_argument("--num-epochs", type=int, default=DEMO_SETTINGS["num_epochs"])
    parser.add_argument("--learning-rate", type=float, default=DEMO_SETTINGS["learning_rate"])
    parser.add_argument("--batch-size", type=int, default=DEMO_SETTINGS["batch_size"])
    parser.add_argument("--train-size", type=int, default=2400)
    parser.add_argument("--eval-size", type=int, default=600, help="items of the dev and test splits")
    parser.add_argument("--seed", type=int, default=DEMO_SETTINGS["seed"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model override")
    parser.add_argument("--no-progress-bar", action="store_true")
    cli = parser.parse_args()

    from mmfuse.core.config import parse_set_overrides

    start = time.perf_counter()
    sizes = {"train_size": cli.train_size, "dev_size": cli.eval_size, "test_size": cli.eval_size}
    train = build_dataset("synthetic", "train", **sizes)  # its options are recorded for `mmfuse eval`
    dev = build_dataset("synthetic", "dev", **sizes)
    args = TrainingArguments(
        output_dir=cli.output_dir, num_epochs=cli.num_epochs, batch_size=cli.batch_size,
        learning_rate=cli.learning_rate, warmup_ratio=DEMO_SETTINGS["warmup_ratio"], seed=cli.seed,
        progress_bar=not cli.no_progress_bar,
    )
    seed_everything(args.seed)
    model = build_model("radm-tiny", **parse_set_overrides(cli.set))
    out = Trainer(model, args, train, dev).train()
    minutes = (time.perf_counter() - start) / 60

    ceilings = dev.ceilings()["sentiment"]
    rows = [
        ("radm-tiny (text + image), trained", out.metrics["accuracy"], f"{out.metrics['macro_f1']:.3f}"),
        ("Bayes ceiling, text only", float(ceilings.text), "-"),
        ("Bayes ceiling, image only", float(ceilings.image), "-"),
        ("Bayes ceiling, text + image", float(ceilings.fused), "-"),
    ]
    print(f"\nsynthetic dev set ({len(dev)} items, task 'sentiment'), trained in {minutes:.1f} min:")
    print(f"{'':36s} {'accuracy':>9s} {'macro-F1':>9s}")
    for name, accuracy, f1 in rows:
        print(f"{name:36s} {accuracy:9.3f} {f1:>9s}")
    margin = out.metrics["accuracy"] - max(float(ceilings.text), float(ceilings.image))
    verdict = "beats" if margin > 0 else "does NOT beat"
    print(f"\nThe fused model {verdict} the best unimodal ceiling by {margin:+.3f} accuracy.")
    print(f"\nModel, logs and checkpoints: {cli.output_dir}/. Next steps (with this Python):")
    for command in follow_up_commands(cli.output_dir):
        print(f"  {command}")


def follow_up_commands(output_dir: str) -> list[str]:
    """Shell commands that use the trained run, with the interpreter that ran the demo (the venv's
    ``.venv/bin/python`` under ``make demo``), so they work as printed without activating anything."""
    python = sys.executable
    try:
        relative = os.path.relpath(python)
        if not relative.startswith(".."):
            python = relative if os.sep in relative else f".{os.sep}{relative}"
    except ValueError:  # another drive (Windows)
        pass
    mmfuse = f"{shlex.quote(python)} -m mmfuse"
    run = shlex.quote(output_dir)
    return [
        f"{mmfuse} eval {run}",
        f"{mmfuse} predict {run} --split test | head -3",
    ]


if __name__ == "__main__":
    main()
