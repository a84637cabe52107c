"""The ``jmasa`` training task: joint aspect-term extraction + aspect sentiment (JML) in the trainer / CLI.

``mmfuse train jml-tiny-text --task jmasa --dataset twitter2015 --data-dir DIR`` trains a span
model on the joint form of a Twitter data set; ``mmfuse eval`` reports joint P/R/F1, MATE P/R/F1
and MASC accuracy; ``mmfuse predict`` writes, per tweet, the text with its aspects bracketed and
tagged (``[Chuck Bass](positive) is everything``) and the aspects as a list.

The hooks (see :class:`mmfuse.tasks.classification.TrainTask`):

* ``label_schema``: ``{"polarities": [...]}`` from the data set's ``tasks["polarity"]``;
* ``build_collator``: :class:`~mmfuse.data.collators.jmasa.JMASACollator` with the model's tokenizer
  and, for models with an image branch, its image transform (samples must then have images);
  input lines with only a ``"text"`` (``predict --inputs``) are split on spaces into words, and
  the samples' complete gold aspects travel along (``gold_aspects``), so that aspects cut by
  truncation count as missed in evaluation;
* ``build_evaluator``: :class:`JMASAEvaluator` — the counts of :mod:`mmfuse.metrics.span`
  from ``output.predictions`` (the model decodes in eval mode) against the batch's gold spans;
* ``configure_model``: sets ``n_polarities`` of a ``jml`` config to the data's polarity count;
* ``build_selector``: :class:`DecodingSelector` — at every evaluation during training, the
  decoding (span-score threshold × length penalty, :data:`DEFAULT_THRESHOLDS` ×
  :data:`DEFAULT_LENGTH_PENALTIES`) with the best dev joint F1 is chosen and set on the model
  (``JML.set_decoding``), so the checkpoint's ``config.json`` (``decode_threshold``,
  ``decode_length_penalty``) carries it and ``mmfuse eval`` / ``predict`` decode with it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmfuse.core.config import ConfigError
from mmfuse.data.collators.jmasa import JMASACollator
from mmfuse.metrics.base import CountingMetric
from mmfuse.metrics.span import SpanCounts, count_spans
from mmfuse.models.jml.model import render_aspects
from mmfuse.tasks.base import TrainTask

COUNT_NAMES: tuple[str, ...] = ("n_pred", "n_gold", "n_span_correct", "n_joint_correct")
#: span-score thresholds (start + end logit) tried on dev; None: no threshold (up to max_spans spans)
DEFAULT_THRESHOLDS: tuple[float | None, ...] = (None, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
#: length penalties tried on dev (ranking = start + end − penalty · length; 1 = Hu et al.'s heuristic)
DEFAULT_LENGTH_PENALTIES: tuple[float, ...] = (0.0, 0.5, 1.0)


def _polarities(schema: Mapping[str, Any]) -> list[str]:
    names = schema.get("polarities") if isinstance(schema, Mapping) else None
    if not isinstance(names, Sequence) or isinstance(names, str) or len(names) < 2:
        raise ConfigError(f"label schema: expected {{'polarities': [names...]}}, got {schema!r}")
    return list(names)


def jmasa_schema(dataset: Any) -> dict[str, Any]:
    """``{"polarities": [...]}`` of a jmasa-form data set (``tasks == {"polarity": names}``)."""
    tasks = getattr(dataset, "tasks", None)
    if not isinstance(tasks, Mapping) or "polarity" not in tasks:
        raise TypeError(f"jmasa: expected a jmasa-form span data set (e.g. twitter2015 with form 'jmasa'), whose "
                        f"tasks are {{'polarity': names}}; got {type(dataset).__name__} with tasks {tasks!r}")
    return {"polarities": list(tasks["polarity"])}


def gold_aspects(batch: Mapping[str, Any]) -> list[list[tuple[int, int, int]]]:
    """Per row, the ``(start, end, polarity)`` gold aspects of a labelled batch (``gold_aspects`` when
    the collator recorded them, else the batch's spans)."""
    if batch.get("gold_aspects") is not None:
        return [list(row) for row in batch["gold_aspects"]]
    for key in ("spans", "span_mask", "span_polarity"):
        if key not in batch:
            raise KeyError(f"evaluation batch has no {key!r}; evaluate on a labelled split")
    spans, mask, polarity = batch["spans"].tolist(), batch["span_mask"].tolist(), batch["span_polarity"].tolist()
    return [[(s, e, p) for (s, e), real, p in zip(row, row_mask, row_polarity) if real]
            for row, row_mask, row_polarity in zip(spans, mask, polarity)]


def _predictions(output: Any) -> list[list[Any]]:
    predictions = getattr(output, "predictions", None)
    if predictions is None:
        raise TypeError(f"jmasa: the model output ({type(output).__name__}) has no `predictions`; a span model "
                        "must decode its aspects in eval mode (JML does)")
    return predictions


class JMASAEvaluator(CountingMetric):
    """Joint / MATE P, R, F1 and MASC accuracy (:mod:`mmfuse.metrics.span`), summable across ranks."""

    def __init__(self, schema: Mapping[str, Any] | None = None) -> None:
        super().__init__({name: torch.zeros((), dtype=torch.long) for name in COUNT_NAMES})

    def update(self, batch: Mapping[str, Any], output: Any) -> None:
        counts = count_spans(_predictions(output), gold_aspects(batch))
        for name in COUNT_NAMES:
            self.counts[name] += getattr(counts, name)

    def compute(self) -> dict[str, float]:
        return SpanCounts(**{name: int(self.counts[name]) for name in COUNT_NAMES}).compute()


class DecodingSelector(CountingMetric):
    """Scores every decoding setting of a grid on the eval set and sets the best one on the model.

    ``update`` decodes each batch once per setting (``model.predict_from(output, threshold=...,
    length_penalty=...)``) and counts against the gold aspects; ``sync`` sums the counts of all
    settings over the DDP ranks; ``compute`` picks the setting with the highest joint F1 (the
    first of the grid on ties: length penalties outer, thresholds inner), calls
    ``model.set_decoding(threshold=..., length_penalty=...)`` and returns that setting's metrics
    plus ``decode_threshold`` (None: no threshold) and ``decode_length_penalty``.
    """

    def __init__(self, schema: Mapping[str, Any] | None, model: Any,
                 thresholds: Sequence[float | None] = DEFAULT_THRESHOLDS,
                 length_penalties: Sequence[float] = DEFAULT_LENGTH_PENALTIES) -> None:
        for method in ("predict_from", "set_decoding"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"jmasa: choosing the decoding on dev needs a span model with {method}() (JML has "
                                f"it), got {type(model).__name__}")
        for value in thresholds:
            if value is not None and (isinstance(value, bool) or not math.isfinite(float(value))):
                raise ValueError(f"thresholds: expected finite numbers or None, got {value!r}")
        for value in length_penalties:
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError(f"length_penalties: expected finite numbers, got {value!r}")
        self.model = model
        self.settings: list[tuple[float | None, float]] = [
            (None if t is None else float(t), float(p)) for p in length_penalties for t in thresholds]
        if not self.settings:
            raise ValueError("jmasa: the decoding grid is empty (give at least one threshold and one length penalty)")
        super().__init__({"counts": torch.zeros(len(self.settings), len(COUNT_NAMES), dtype=torch.long)})

    def update(self, batch: Mapping[str, Any], output: Any) -> None:
        gold = gold_aspects(batch)
        for i, (threshold, penalty) in enumerate(self.settings):
            found = self.model.predict_from(output, None, threshold=threshold, length_penalty=penalty)
            counts = count_spans(found, gold)
            self.counts["counts"][i] += torch.tensor([getattr(counts, name) for name in COUNT_NAMES])

    def results(self) -> list[tuple[tuple[float | None, float], dict[str, float]]]:
        """``[((threshold, length penalty), metrics), ...]`` for every setting of the grid."""
        return [(setting, SpanCounts(**dict(zip(COUNT_NAMES, map(int, row)))).compute())
                for setting, row in zip(self.settings, self.counts["counts"])]

    def compute(self) -> dict[str, Any]:
        (threshold, penalty), metrics = max(self.results(), key=lambda item: item[1]["joint_f1"])
        self.model.set_decoding(threshold=threshold, length_penalty=penalty)
        return {**metrics, "decode_threshold": threshold, "decode_length_penalty": penalty}


def jmasa_selector(schema: Mapping[str, Any], model: Any) -> DecodingSelector:
    """The ``jmasa`` task's :class:`DecodingSelector` over the default grid."""
    return DecodingSelector(schema, model)


class JMASACollate:
    """The :class:`JMASACollator`, plus two things the task needs.

    * Samples with only a ``text`` (``predict --inputs``) get ``words = text.split()``.
    * ``batch["gold_aspects"]``: every sample's aspects as given, including those the collator
      dropped because truncation cut their words, so that evaluation counts them as missed.
    """

    def __init__(self, collator: JMASACollator) -> None:
        self.collator = collator

    def __call__(self, samples: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
        ready = [s if s is None or "words" in s else {**s, "words": str(s.get("text", "")).split()} for s in samples]
        batch = self.collator(ready)
        kept = [s for s in ready if s is not None]
        if batch is not None and kept and all("aspects" in s for s in kept):
            batch["gold_aspects"] = [[tuple(a) for a in s["aspects"]] for s in kept]
        return batch


def jmasa_collator(processor: Any, schema: Mapping[str, Any], return_ids: bool) -> JMASACollate:
    """A :class:`JMASACollator` for the model's ``processor`` (tokenizer, image transform, max length)."""
    return JMASACollate(JMASACollator(
        processor.tokenizer, getattr(processor, "image_transform", None), max_length=processor.max_length,
        num_polarities=len(_polarities(schema)), return_ids=return_ids,
    ))


def format_jmasa(batch: Mapping[str, Any], output: Any, schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per tweet: ``{"id", "text" (aspects bracketed and tagged), "aspects": [...]}`` (+ ``"gold"``)."""
    predictions = _predictions(output)
    words = batch.get("words") or [[] for _ in predictions]
    ids = batch.get("ids") or [None] * len(predictions)
    names = _polarities(schema)
    gold = gold_aspects(batch) if "spans" in batch else None
    rows = []
    for i, aspects in enumerate(predictions):
        row: dict[str, Any] = {"id": ids[i], "text": render_aspects(words[i], aspects),
                               "aspects": [a.as_dict() for a in aspects]}
        if gold is not None:
            row["gold"] = [{"start": s, "end": e, "term": " ".join(words[i][s:e + 1]), "polarity": names[p]}
                           for s, e, p in gold[i]]
        rows.append(row)
    return rows


def configure_jmasa_model(config: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``n_polarities`` of a ``jml`` config = the data's number of polarities."""
    wanted = len(_polarities(schema))
    if config.get("model") != "jml" or config.get("n_polarities", 3) == wanted:
        return config
    config = copy.deepcopy(config)
    config["n_polarities"] = wanted
    return config


JMASA = TrainTask(
    name="jmasa",
    description="joint multimodal aspect-term extraction + aspect sentiment (JML; joint/MATE F1, MASC accuracy)",
    label_schema=jmasa_schema,
    build_collator=jmasa_collator,
    build_evaluator=JMASAEvaluator,
    format_predictions=format_jmasa,
    configure_model=configure_jmasa_model,
    default_metric="joint_f1",
    build_selector=jmasa_selector,
)
