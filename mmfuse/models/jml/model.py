"""JML: joint multimodal aspect-term extraction and aspect sentiment (architecture ``jml``).

Ju et al., "Joint Multi-modal Aspect-Sentiment Analysis with Auxiliary Cross-modal Relation
Detection" (EMNLP 2021), sections 3.1–3.4. Pipeline (each part a module given to the constructor;
the registered ``jml`` model factory, :func:`mmfuse.models.jml.builder.build_jml`, builds them from a config)::

    input_ids ─► text_encoder (hf-text) ─► Linear → d ─► gather first sub-token of each word ─► T [B, W, d]
    pixel_values ─► image_encoder (timm-regions) ─► Linear → d ─► O [B, R, d]
    (input_ids, pixel_values) ─► relation (jml-relation, own encoders) ─► p_r [B] ─► gate G_r (soft | hard)
    O_r = G_r · O
    T, O_r ─► extraction head (eqs 9–14) ─► H_a [B, W, d], start / end logits [B, W]
    H_a, spans, O_r ─► sentiment head (eqs 15–21) ─► polarity logits [B, S, 3]
    loss (eq 22) = start + end + polarity (+ relation, eq 6, when the batch has relation_labels)

Equation → code (the heads' modules document their equations in detail):

=====  ======================================================  =================================================
eqs    what                                                    code
=====  ======================================================  =================================================
1–5    relation detection ``p_r``                              :class:`mmfuse.heads.relation.RelationHead` inside
                                                               :class:`mmfuse.models.jml.relation.JMLRelation`
6      relation loss                                           :func:`mmfuse.heads.relation.relation_loss`
7      gate ``G_r = RelDet(X, I)``                             :func:`mmfuse.heads.relation.relation_gate`
8      ``O_r = G_r · O``                                       :func:`mmfuse.heads.relation.gate_regions`
9–14   aspect extraction (start / end)                         :class:`mmfuse.heads.span.AspectExtractionHead`
15–17  span attention pooling                                  :func:`mmfuse.heads.span.span_attention_pool`
18–21  cross-modal span fusion, polarity ``Wp tanh(Wv Hs)``    :class:`mmfuse.heads.span.AspectSentimentHead`
22     joint loss                                              :meth:`JML.forward` with
                                                               :func:`mmfuse.heads.span.span_boundary_loss`,
                                                               :func:`mmfuse.heads.span.polarity_loss`
=====  ======================================================  =================================================

Training uses the gold spans of the batch for the sentiment head; :meth:`JML.predict` decodes
spans from the start / end logits (Hu et al. 2019 multi-span decoding, :func:`decode_spans`)
and classifies those. Batches come from :class:`mmfuse.data.collators.jmasa.JMASACollator`
(keys documented in :func:`check_span_batch`). Presets are in :mod:`mmfuse.models.jml.presets`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from torch import Tensor, nn

from mmfuse.core.batch import _INT_DTYPES, BatchError, check_batch_sizes, checking_values, get_tensor
from mmfuse.core.config import ConfigError
from mmfuse.core.features import FeatureDims, Features
from mmfuse.fusion.pooling import masked_mean
from mmfuse.fusion.residual_attention import set_attention_impl
from mmfuse.ops.attention import Impl
from mmfuse.heads.relation import gate_regions, relation_gate, relation_loss, relation_probability
from mmfuse.heads.span import IGNORE_INDEX, polarity_loss, span_boundary_loss
from mmfuse.models.encoding import ProjectedEncoders, ProjectedEncodersMixin, require_module
from mmfuse.models.jml.outputs import AspectPrediction, JMLOutput
from mmfuse.models.jml.relation import JMLRelation
from mmfuse.models.pretrained import PretrainedMixin

NAME = "jml"
Gate = Literal["soft", "hard", "none"]
#: polarity names by class index (Twitter-2015/2017: label = txt polarity + 1)
POLARITIES: tuple[str, ...] = ("negative", "neutral", "positive")
LOSS_NAMES: tuple[str, ...] = ("start", "end", "polarity", "relation")
#: batch keys that carry labels (dropped by :meth:`JML.predict`)
LABEL_KEYS: tuple[str, ...] = ("spans", "span_mask", "start_labels", "end_labels", "span_polarity", "relation_labels")


@dataclass
class SpanBatch:
    """The checked span part of a batch (see :func:`check_span_batch`)."""

    word_starts: Tensor
    word_mask: Tensor
    spans: Tensor | None = None
    span_mask: Tensor | None = None
    start_labels: Tensor | None = None
    end_labels: Tensor | None = None
    span_polarity: Tensor | None = None


def _int_tensor(batch: Mapping[str, Any], key: str, expected: str) -> Tensor:
    value = get_tensor(batch, key, expected)
    if value.dtype not in _INT_DTYPES:
        raise TypeError(f"{key}: expected an integer tensor ({expected}), got {value.dtype}")
    return value


def _bool_tensor(batch: Mapping[str, Any], key: str, expected: str) -> Tensor:
    value = get_tensor(batch, key, expected)
    if value.dtype != torch.bool:
        raise TypeError(f"{key}: expected a bool tensor ({expected}), got {value.dtype}")
    return value


def _shape(value: Tensor, key: str, shape: tuple[int, ...], names: str) -> None:
    if tuple(value.shape) != shape:
        raise BatchError(f"{key}: expected shape {names} = {list(shape)}, got {list(value.shape)}")


def check_span_batch(batch: Mapping[str, Any], attention_mask: Tensor, n_polarities: int,
                     require_labels: bool = False) -> SpanBatch:
    """Validate the span keys of a JML batch.

    * ``word_starts`` ``[B, W]`` long: index of each word's first sub-token in ``input_ids``;
      ``word_mask`` ``[B, W]`` bool (True = real word). A real word must start at a real token.
    * training labels (all or none): ``start_labels`` / ``end_labels`` ``[B, W]`` 0/1 float
      (multi-hot over words), ``spans`` ``[B, S, 2]`` long (start word, end word, inclusive),
      ``span_mask`` ``[B, S]`` bool, ``span_polarity`` ``[B, S]`` long (``-100`` on padded spans).
    * ``spans`` + ``span_mask`` alone (no labels) ask for the polarity of those spans.
    """
    b, length = attention_mask.shape
    word_starts = _int_tensor(batch, "word_starts", "LongTensor [B, W], first sub-token index of each word")
    word_mask = _bool_tensor(batch, "word_mask", "BoolTensor [B, W], True for real words")
    if word_starts.dim() != 2 or word_starts.shape[0] != b:
        raise BatchError(f"word_starts: expected shape [B={b}, W], got {list(word_starts.shape)}")
    n_words = word_starts.shape[1]
    _shape(word_mask, "word_mask", (b, n_words), "[B, W]")
    values = checking_values()  # value checks: eager only (see mmfuse.core.batch)
    if values and bool(((word_starts < 0) | (word_starts >= length))[word_mask].any()):
        raise BatchError(f"word_starts: indices of real words must be in [0, {length}) (the input_ids length)")
    starts = word_starts.clamp(0, length - 1).long()
    if values and bool((~attention_mask.bool().gather(1, starts))[word_mask].any()):
        raise BatchError("word_starts: a real word (word_mask True) starts at a padding token (attention_mask 0)")
    out = SpanBatch(word_starts=starts, word_mask=word_mask)

    label_keys = ("start_labels", "end_labels", "span_polarity")
    present = [k for k in label_keys if batch.get(k) is not None]
    if present and len(present) != len(label_keys):
        missing = [k for k in label_keys if k not in present]
        raise BatchError(f"batch: training labels must come together; has {present} but lacks {missing}")
    if require_labels and not present:
        raise BatchError(f"batch: training needs {list(label_keys)} together with spans and span_mask")
    if batch.get("spans") is None:
        if present:
            raise BatchError("batch: labels were given without 'spans' ([B, S, 2] gold spans) and 'span_mask'")
        return out
    spans = _int_tensor(batch, "spans", "LongTensor [B, S, 2], (start word, end word) inclusive")
    span_mask = _bool_tensor(batch, "span_mask", "BoolTensor [B, S], True for real spans")
    if spans.dim() != 3 or spans.shape[0] != b or spans.shape[2] != 2:
        raise BatchError(f"spans: expected shape [B={b}, S, 2], got {list(spans.shape)}")
    _shape(span_mask, "span_mask", tuple(spans.shape[:2]), "[B, S]")
    real = spans[span_mask] if values else None
    if real is not None and real.numel():
        n_real_words = word_mask.sum(dim=1, keepdim=True).expand(-1, spans.shape[1])[span_mask]
        bad = (real[:, 0] < 0) | (real[:, 1] < real[:, 0]) | (real[:, 1] >= n_real_words)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise BatchError(f"spans: real span {real[i].tolist()} is not 0 <= start <= end < number of words "
                             f"({int(n_real_words[i])})")
    out.spans, out.span_mask = spans.long(), span_mask
    if not present:
        return out
    for key in ("start_labels", "end_labels"):
        value = get_tensor(batch, key, "float [B, W] multi-hot over words")
        _shape(value, key, (b, n_words), "[B, W]")
        if values and bool(((value != 0) & (value != 1)).any()):
            raise BatchError(f"{key}: expected 0/1 values (multi-hot over words)")
        setattr(out, key, value.float())
    polarity = _int_tensor(batch, "span_polarity", "LongTensor [B, S], class index or -100 for padding")
    _shape(polarity, "span_polarity", tuple(spans.shape[:2]), "[B, S]")
    bad = span_mask & ((polarity < 0) | (polarity >= n_polarities))
    if values and bool(bad.any()):
        raise BatchError(f"span_polarity: real spans need a class index in [0, {n_polarities - 1}], "
                         f"got {int(polarity[bad][0])}")
    out.span_polarity = polarity.long().masked_fill(~span_mask, IGNORE_INDEX)
    return out


def _same_vocabulary(a: Any, b: Any) -> bool:
    get_a, get_b = getattr(a, "get_vocab", None), getattr(b, "get_vocab", None)
    return callable(get_a) and callable(get_b) and get_a() == get_b()


@dataclass
class GatedRegions:
    """Image side of one forward pass: ungated features ``O``, gated regions ``O_r`` ``[B, R, d]``,
    ``p_r`` / ``G_r`` ``[B]`` and the relation logits ``[B, 2]`` (None where not applicable)."""

    image: Features | None = None
    regions: Tensor | None = None
    probability: Tensor | None = None
    gate: Tensor | None = None
    relation_logits: Tensor | None = None


class JML(ProjectedEncodersMixin, PretrainedMixin, nn.Module):
    """The JML joint aspect-term extraction + aspect sentiment model, composed of the modules it is given.

    Args:
        text_encoder: text encoder module (``hf-text``: BERT family).
        image_encoder: region encoder module (``timm-regions``), or None for the text-only model
            (no image modules at all; ``gate`` must be ``"none"``).
        relation: the relation module (a :class:`~mmfuse.models.jml.relation.JMLRelation`, e.g. one
            trained on TRC and loaded with ``load_pretrained``), or None with ``gate="none"``. It must
            tokenise like ``text_encoder`` and take the same images.
        extraction_head: aspect extraction head (eqs 9–14, ``jml-aspect-extraction``) over ``d_model``.
        sentiment_head: aspect sentiment head (eqs 15–21, ``jml-aspect-sentiment``) over ``d_model``
            with ``n_polarities`` classes. Both heads must attend to regions exactly when there is an
            image branch (their ``cross_modal``).
        gate: ``"soft"`` (``O_r = p_r · O``), ``"hard"`` (``O_r = 1[p_r ≥ 0.5] · O``,
            straight-through gradient) or ``"none"`` (no relation module, ``O_r = O``).
        freeze_relation: keep the relation module fixed (no gradients, eval mode) — the paper
            pre-trains it; a trainable module also learns from ``relation_labels`` when given.
        d_model: common width (paper: 768).
        n_polarities: sentiment classes ``ε`` (3).
        dropout: dropout on the projected tokens.
        loss_weights: weights of the named losses (``start``, ``end``, ``polarity``, ``relation``);
            default 1 each (eq 22 sums them unweighted).
        decode_top_k, decode_max_span_len, decode_threshold, decode_max_spans, decode_length_penalty:
            default options of the multi-span decoding (:func:`mmfuse.models.jml.decoding.decode_spans`);
            ``decode_length_penalty=1`` is Hu et al.'s heuristic ranking (start + end − length), which keeps
            a span over two adjacent aspects from swallowing both.
    """

    def __init__(
        self,
        text_encoder: nn.Module,
        image_encoder: nn.Module | None,
        relation: JMLRelation | None,
        extraction_head: nn.Module,
        sentiment_head: nn.Module,
        gate: Gate = "soft",
        freeze_relation: bool = False,
        d_model: int = 768,
        n_polarities: int = 3,
        dropout: float = 0.1,
        loss_weights: dict[str, float] | None = None,
        decode_top_k: int = 20,
        decode_max_span_len: int = 10,
        decode_threshold: float | None = None,
        decode_max_spans: int = 8,
        decode_length_penalty: float = 1.0,
    ) -> None:
        super().__init__()
        has_image = image_encoder is not None
        if gate not in ("soft", "hard", "none"):
            raise ConfigError(f"gate: expected 'soft', 'hard' or 'none', got {gate!r}")
        if not has_image and gate != "none":
            raise ConfigError(f"gate: a text-only JML (image_encoder None) has no regions to gate; use gate 'none', "
                              f"got {gate!r}")
        if gate == "none" and relation is not None:
            raise ConfigError("relation: gate 'none' uses no relation module; remove relation / relation_checkpoint "
                              "or choose gate 'soft' or 'hard'")
        if gate != "none" and relation is None:
            raise ConfigError(f"relation: gate {gate!r} needs a relation module (a jml-relation model: the "
                              "`relation` config or a `relation_checkpoint` folder)")
        if relation is not None and not isinstance(relation, JMLRelation):
            raise TypeError(f"relation: expected a JMLRelation (the jml-relation model), got {type(relation).__name__}")
        if n_polarities < 2:
            raise ConfigError(f"n_polarities: expected at least 2, got {n_polarities}")
        weights = dict(loss_weights or {})
        unknown = sorted(set(weights) - set(LOSS_NAMES))
        if unknown:
            raise ConfigError(f"loss_weights: unknown losses {unknown}; known: {list(LOSS_NAMES)}")
        for key, value, low in (("decode_top_k", decode_top_k, 1), ("decode_max_span_len", decode_max_span_len, 1),
                                ("decode_max_spans", decode_max_spans, 1)):
            if value < low:
                raise ConfigError(f"{key}: expected an int >= {low}, got {value}")
        self.d_model, self.n_polarities, self.gate = d_model, n_polarities, gate
        self.loss_weights: dict[str, float] = {name: float(weights.get(name, 1.0)) for name in LOSS_NAMES}
        self.decode_options: dict[str, Any] = {"top_k": decode_top_k, "max_span_len": decode_max_span_len,
                                               "threshold": decode_threshold, "max_spans": decode_max_spans,
                                               "length_penalty": decode_length_penalty}
        self.polarity_names: tuple[str, ...] = POLARITIES if n_polarities == 3 else tuple(map(str, range(n_polarities)))

        self.encoders = ProjectedEncoders(text_encoder, image_encoder, d_model, dropout, model=NAME)
        self.relation: JMLRelation | None = relation
        if self.relation is not None:
            self._check_relation_inputs()
        self.freeze_relation = freeze_relation and self.relation is not None
        if self.freeze_relation:
            self.relation.requires_grad_(False)
            self.relation.eval()
        self.extraction_head = require_module(extraction_head, (), "extraction_head", NAME)
        self.sentiment_head = require_module(sentiment_head, (), "sentiment_head", NAME)
        for where, head in (("extraction_head", self.extraction_head), ("sentiment_head", self.sentiment_head)):
            if getattr(head, "cross_modal", has_image) != has_image:
                raise ConfigError(f"{where}: cross_modal={head.cross_modal}, but the model "
                                  f"{'has' if has_image else 'has no'} image branch")
        if getattr(self.sentiment_head, "n_classes", n_polarities) != n_polarities:
            raise ConfigError(f"sentiment_head.n_classes: {self.sentiment_head.n_classes} differs from "
                              f"n_polarities={n_polarities}")
        self.feature_dims = FeatureDims(text=d_model, image=d_model, fused=d_model) if has_image else None

    def portable_options(self, options: dict[str, Any], folder: Path, prefix: str) -> dict[str, Any]:
        """Options with the relation module's config (``relation``) instead of ``relation_checkpoint``:
        its weights are part of this model's ``model.safetensors``."""
        if options.get("relation_checkpoint") is None or self.relation is None:
            return options
        loaded = dict(getattr(self.relation, "mmfuse_config", None) or {})
        relation = {k: v for k, v in loaded.items() if k not in ("model", "aux_losses")}
        return {**{k: v for k, v in options.items() if k != "relation_checkpoint"}, "relation": relation}

    def _check_relation_inputs(self) -> None:
        assert self.relation is not None
        main, rel = self.encoders.text_encoder, self.relation.text_encoder
        if main.vocab_size != rel.vocab_size or not _same_vocabulary(main.tokenizer, rel.tokenizer):
            raise ConfigError("relation: its text encoder must use the same tokenizer as text_encoder (the relation "
                              "module reads the batch's input_ids)")
        image = self.encoders.image_encoder
        if image is not None and tuple(image.image_size) != tuple(self.relation.image_encoder.image_size):
            raise ConfigError(f"relation: its images are {tuple(self.relation.image_encoder.image_size)}, but "
                              f"image_encoder takes {tuple(image.image_size)}; both read the batch's pixel_values")
        if self.relation.encoders.text_encoder.max_length < main.max_length:
            raise ConfigError("relation: its text encoder's max_length is shorter than text_encoder's")

    # -- bookkeeping ----------------------------------------------------------------------------
    @property
    def has_image(self) -> bool:
        return self.encoders.has_image

    def train(self, mode: bool = True) -> "JML":
        super().train(mode)
        if self.freeze_relation and self.relation is not None:
            self.relation.eval()
        return self

    @property
    def tokenizer(self) -> Any:
        return self.encoders.text_encoder.tokenizer

    def set_attention_impl(self, impl: Impl) -> int:
        return set_attention_impl(self, impl)

    # -- SupportsFusion ----------------------------------------------------------------------------
    def encode_text(self, batch: Mapping[str, Any]) -> Features:
        """Projected sub-token states ``T`` ``[B, L, d_model]``, mask and masked-mean pooled vector."""
        return self.encoders.encode_text(*self.encoders.text_inputs(batch))

    def encode_image(self, batch: Mapping[str, Any]) -> Features:
        """Projected (ungated) regions ``O`` ``[B, R, d_model]``, mask and pooled vector.

        Auxiliary losses pair texts with other tweets' images, for which the relation gate of the
        pair is unknown, so the protocol works on ungated regions.
        """
        if not self.has_image:
            raise TypeError("jml: this model is text-only (image_encoder None); it has no image features "
                            "(ITC / ITM need an image branch)")
        return self.encoders.encode_image(*self.encoders.image_inputs(batch))

    def fuse(self, text: Features, image: Features) -> Tensor:
        """``[B, d_model]``: masked mean over the text of eq 9's ``T ⊕ ATT_cross(T, O)`` for row-aligned pairs."""
        if not self.has_image:
            raise TypeError("jml: this model is text-only (image_encoder None); it cannot fuse images")
        fused = self.extraction_head.cross_attention(text.tokens, image.tokens, image.mask)
        return masked_mean(fused, text.mask)

    # -- forward ---------------------------------------------------------------------------------
    def _gated_regions(self, batch: Mapping[str, Any], batch_size: int) -> GatedRegions:
        """Eqs 5, 7, 8 on the batch's images (an empty :class:`GatedRegions` without an image branch)."""
        if not self.has_image:
            return GatedRegions()
        pixels, image_mask = self.encoders.image_inputs(batch)
        check_batch_sizes({"input_ids": batch_size, "pixel_values": pixels.shape[0]})
        image = self.encoders.encode_image(pixels, image_mask)
        if self.relation is None:
            return GatedRegions(image=image, regions=image.tokens)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_relation):
            relation_logits = self.relation.relation_logits(batch)[0]
        probability = relation_probability(relation_logits)  # eq 5 → eq 7
        gate = relation_gate(probability, self.gate)  # eq 7 (soft / hard)
        if image_mask is not None:
            gate = gate * image_mask.to(gate.dtype)  # a placeholder image adds nothing
        return GatedRegions(image, gate_regions(image.tokens, gate), probability, gate, relation_logits)  # eq 8

    def forward(self, batch: Mapping[str, Any], decode: bool | None = None) -> JMLOutput:
        """Start / end logits of every word and, when the batch has ``spans``, their polarity logits.

        With the training labels (``start_labels``, ``end_labels``, ``span_polarity``) the output
        has ``losses`` ``start``, ``end``, ``polarity`` (and ``relation`` when ``relation_labels``
        ``[B]`` is given) and ``loss`` = their weighted sum (eq 22). With ``decode`` (default: in
        eval mode) ``output.predictions`` holds the decoded aspects and their polarities
        (:meth:`predict_from`, with the model's ``decode_*`` options).
        """
        ids, mask, types = self.encoders.text_inputs(batch)
        span_batch = check_span_batch(batch, mask, self.n_polarities)
        text = self.encoders.encode_text(ids, mask, types)
        index = span_batch.word_starts[..., None].expand(-1, -1, text.tokens.shape[-1])
        words = text.tokens.gather(1, index)  # T at the words' first sub-tokens  [B, W, d]
        gated = self._gated_regions(batch, ids.shape[0])
        regions = gated.regions
        region_mask = gated.image.mask if gated.image is not None else None
        states, start, end = self.extraction_head(words, span_batch.word_mask, regions, region_mask)  # eqs 9–14
        polarity_logits = None
        if span_batch.spans is not None:
            polarity_logits = self.sentiment_head(states, span_batch.spans, span_batch.span_mask, regions,
                                                  region_mask)  # eqs 15–21
        output = JMLOutput(
            start_logits=start, end_logits=end, word_mask=span_batch.word_mask, polarity_logits=polarity_logits,
            relation_prob=gated.probability, relation_gate=gated.gate, word_states=states, regions=regions,
            region_mask=region_mask, text_features=text, image_features=gated.image,
        )
        losses: dict[str, Tensor] = {}
        if span_batch.start_labels is not None:
            assert polarity_logits is not None and span_batch.span_polarity is not None
            losses["start"] = span_boundary_loss(start, span_batch.start_labels, span_batch.word_mask)
            losses["end"] = span_boundary_loss(end, span_batch.end_labels, span_batch.word_mask)
            losses["polarity"] = polarity_loss(polarity_logits, span_batch.span_polarity)
        relation_labels = batch.get("relation_labels")
        if relation_labels is not None:
            losses["relation"] = self._relation_loss(relation_labels, gated.relation_logits, ids.shape[0])
        if losses:
            output.losses = losses
            output.loss = sum(self.loss_weights[name] * value for name, value in losses.items())
        if (not self.training) if decode is None else decode:
            output.predictions = self.predict_from(output, batch.get("words"))
        return output

    def _relation_loss(self, labels: Any, logits: Tensor | None, batch_size: int) -> Tensor:
        if self.relation is None or logits is None:
            raise BatchError("relation_labels: this model has no relation module (gate 'none'); remove the key")
        if not isinstance(labels, Tensor) or labels.dtype not in _INT_DTYPES:
            raise TypeError(f"relation_labels: expected a LongTensor [B] of 0/1 (-100 = unknown), got "
                            f"{labels.dtype if isinstance(labels, Tensor) else type(labels).__name__}")
        if tuple(labels.shape) != (batch_size,):
            raise BatchError(f"relation_labels: expected shape [{batch_size}], got {list(labels.shape)}")
        if checking_values() and bool(((labels != -100) & ((labels < 0) | (labels > 1))).any()):
            raise BatchError("relation_labels: expected 0 (image does not add), 1 (image adds) or -100")
        return relation_loss(logits, labels)

    # -- prediction ------------------------------------------------------------------------------
    def set_decoding(self, **decode_options: Any) -> None:
        """Change the default decoding options (``top_k``, ``max_span_len``, ``threshold``,
        ``max_spans``, ``length_penalty``) and record them in ``mmfuse_config`` as ``decode_*``, so
        that :func:`~mmfuse.models.checkpoint.save_pretrained` keeps them (the ``jmasa`` task stores the
        decoding it chose on dev this way)."""
        unknown = sorted(set(decode_options) - set(self.decode_options))
        if unknown:
            raise TypeError(f"set_decoding: unknown decoding options {unknown}; known: {sorted(self.decode_options)}")
        for key in ("top_k", "max_span_len", "max_spans"):
            value = decode_options.get(key, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"decode_{key}: expected an int >= 1, got {value!r}")
        for key in ("threshold", "length_penalty"):
            value = decode_options.get(key, 0.0)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ConfigError(f"decode_{key}: expected a finite number{' or None' if key == 'threshold' else ''}, "
                                  f"got {value!r}")
        if decode_options.get("length_penalty", 0.0) is None:
            raise ConfigError("decode_length_penalty: expected a finite number, got None")
        self.decode_options.update(decode_options)
        config = getattr(self, "mmfuse_config", None)
        if isinstance(config, dict):
            config.update({f"decode_{key}": value for key, value in decode_options.items()})

    def predict_from(self, output: JMLOutput, words: list[list[str]] | None = None,
                     **decode_options: Any) -> list[list[AspectPrediction]]:
        """Decode spans from ``output``'s start / end logits (Hu et al. 2019, options as the model's
        ``decode_*``, overridable: ``top_k``, ``max_span_len``, ``threshold``, ``max_spans``,
        ``length_penalty``) and
        classify them with the sentiment head on ``output``'s word states and gated regions."""
        unknown = sorted(set(decode_options) - set(self.decode_options))
        if unknown:
            raise TypeError(f"predict: unknown decoding options {unknown}; known: {sorted(self.decode_options)}")
        decoded = output.decode(**{**self.decode_options, **decode_options})
        spans, span_mask = pad_spans(decoded, output.start_logits.device)
        with torch.no_grad():
            logits = self.sentiment_head(output.word_states, spans, span_mask, output.regions, output.region_mask)
        probabilities = logits.float().softmax(dim=-1)
        results: list[list[AspectPrediction]] = []
        for i, tweet in enumerate(decoded):
            found = []
            for j, (start, end, score) in enumerate(tweet):
                p, label = probabilities[i, j].max(dim=-1)
                term = " ".join(words[i][start:end + 1]) if words is not None else None
                found.append(AspectPrediction(start=int(start), end=int(end), polarity=int(label),
                                              polarity_name=self.polarity_names[int(label)], score=float(score),
                                              probability=float(p), term=term))
            results.append(found)
        return results

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any], **decode_options: Any) -> list[list[AspectPrediction]]:
        """Extract aspects and their polarities for every tweet of ``batch`` (labels are ignored);
        decoding options as in :meth:`predict_from`. ``batch["words"]`` (optional) fills ``term``."""
        was_training = self.training
        self.eval()
        try:
            unlabelled = {k: v for k, v in batch.items() if k not in LABEL_KEYS}
            output = self(unlabelled, decode=False)
            return self.predict_from(output, batch.get("words"), **decode_options)
        finally:
            self.train(was_training)


def render_aspects(words: list[str], aspects: list[AspectPrediction]) -> str:
    """The tweet with each extracted aspect bracketed and tagged, e.g.
    ``RT @ x : [Chuck Bass](positive) is everything [# MCM](neutral)``."""
    opening = {a.start: a for a in aspects}
    closing = {a.end: a for a in aspects}
    out = []
    for i, word in enumerate(words):
        text = f"[{word}" if i in opening else word
        if i in closing:
            text += f"]({closing[i].polarity_name})"
        out.append(text)
    return " ".join(out)


def pad_spans(decoded: list[list[tuple[int, int, float]]], device: torch.device) -> tuple[Tensor, Tensor]:
    """``spans [B, S, 2]`` and ``span_mask [B, S]`` from per-tweet span lists (S ≥ 1 so shapes stay valid)."""
    n = max(1, max((len(t) for t in decoded), default=0))
    spans = torch.zeros(len(decoded), n, 2, dtype=torch.long, device=device)
    mask = torch.zeros(len(decoded), n, dtype=torch.bool, device=device)
    for i, tweet in enumerate(decoded):
        for j, (start, end, _) in enumerate(tweet):
            spans[i, j, 0], spans[i, j, 1] = start, end
            mask[i, j] = True
    return spans, mask


__all__ = ["JML", "GatedRegions", "check_span_batch", "pad_spans", "render_aspects", "POLARITIES"]
