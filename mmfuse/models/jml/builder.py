"""The registered ``jml`` and ``jml-relation`` model factories: a config → the parts → the model.

Their signatures are the config schemas (checked by :func:`mmfuse.core.config.call_with_config`).
Encoders and heads are registered component specs built with
:func:`mmfuse.core.build.build_component`; the relation module is built from its own config
(the keyword arguments of ``jml-relation``) or loaded from a folder written by
``save_pretrained``. The modules are then handed to :class:`~mmfuse.models.jml.model.JML` /
:class:`~mmfuse.models.jml.relation.JMLRelation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmfuse.core.config import ConfigError, factory_parameters
from mmfuse.core.provenance import stamp_component
from mmfuse.core.build import ComponentSpec, build_component
from mmfuse.core.registry import get_registry
from mmfuse.fusion.residual_attention import set_attention_impl
from mmfuse.ops.attention import Impl
from mmfuse.heads.relation import RelationHead
from mmfuse.models.jml.model import JML, Gate
from mmfuse.models.jml.relation import NAME as RELATION_NAME
from mmfuse.models.jml.relation import JMLRelation


def build_jml_relation(
    text_encoder: ComponentSpec,
    image_encoder: ComponentSpec,
    d_model: int = 768,
    n_heads: int = 8,
    ffn_dim: int | None = None,
    dropout: float = 0.1,
    task: str = "image_adds",
    impl: Impl = "auto",
) -> JMLRelation:
    """JML's relation module: does the image add to the tweet's meaning (TRC, binary)?

    Args:
        text_encoder: text encoder spec (``hf-text``).
        image_encoder: region encoder spec (``timm-regions``).
        d_model: common width of text tokens and regions.
        n_heads: attention heads of the relation head.
        ffn_dim: feed-forward width of its self-attention layers (default ``4 · d_model``).
        dropout: dropout on the projected tokens and inside the head.
        task: the label key (``batch["labels"][task]``) and logits key of the output.
        impl: attention implementation of the head.
    """
    text = build_component("encoder", text_encoder, where="text_encoder")
    image = build_component("encoder", image_encoder, where="image_encoder")
    head = RelationHead(d_model, n_heads=n_heads, ffn_dim=ffn_dim, dropout=dropout, impl=impl)
    return JMLRelation(text, image, head, d_model=d_model, dropout=dropout, task=task)


def load_relation(checkpoint: str, where: str = "relation_checkpoint") -> JMLRelation:
    """A trained ``jml-relation`` model from a folder written by ``save_pretrained`` (or its training run folder)."""
    from mmfuse.models.checkpoint import load_config_from, load_pretrained, resolve_model_dir

    folder = Path(checkpoint).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{where}: {checkpoint!r} is not a folder (expected one written by save_pretrained "
                          f"for a {RELATION_NAME} model, or its training run folder)")
    try:
        folder = resolve_model_dir(folder)  # a training run folder means its model/
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    model_name = load_config_from(folder).get("model")
    if model_name != RELATION_NAME:
        raise ConfigError(f"{where}: {checkpoint!r} holds a {model_name!r} model, expected {RELATION_NAME!r}")
    relation = load_pretrained(folder, map_location="cpu")
    stamp_component(relation, "relation")  # its config replaces relation_checkpoint when saved (portable folders)
    return relation


def _head(spec: ComponentSpec, where: str, defaults: dict[str, Any], **injected: Any) -> Any:
    """Build head ``spec`` with the model-level ``defaults`` (``n_heads``, ``dropout``, ``impl``) for
    every option the head takes and the spec leaves unset."""
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.get("name")
    if isinstance(name, str):
        params = factory_parameters(get_registry().get("head", name).factory)[0]
        for key, value in defaults.items():
            if key in params and key not in options:
                options[key] = value
    return build_component("head", options, where=where, **injected)


def build_jml(
    text_encoder: ComponentSpec,
    image_encoder: ComponentSpec | None = None,
    relation: dict[str, Any] | None = None,
    relation_checkpoint: str | None = None,
    gate: Gate = "soft",
    freeze_relation: bool = False,
    d_model: int = 768,
    n_heads: int = 8,
    n_polarities: int = 3,
    dropout: float = 0.1,
    extraction_head: ComponentSpec = "jml-aspect-extraction",
    sentiment_head: ComponentSpec = "jml-aspect-sentiment",
    loss_weights: dict[str, float] | None = None,
    decode_top_k: int = 20,
    decode_max_span_len: int = 10,
    decode_threshold: float | None = None,
    decode_max_spans: int = 8,
    decode_length_penalty: float = 1.0,
    impl: Impl = "auto",
) -> JML:
    """JML: joint aspect-term extraction + aspect sentiment, regions gated by text–image relation.

    Args:
        text_encoder: text encoder spec (``hf-text``: BERT family, local folder or random config).
        image_encoder: region encoder spec (``timm-regions``), or None for the text-only model.
        relation: config of the relation module (the keyword arguments of a ``jml-relation`` model,
            e.g. its own encoders). Give at most one of ``relation`` and ``relation_checkpoint``.
        relation_checkpoint: folder written by ``save_pretrained`` of a trained ``jml-relation``
            model (e.g. on TRC); its architecture and weights are loaded.
        gate, freeze_relation, d_model, n_polarities, loss_weights, decode_*: as in
            :class:`~mmfuse.models.jml.model.JML`.
        n_heads: heads of the heads' cross-attentions (paper: 8), unless a head spec sets its own.
        dropout: dropout on the projected tokens and, unless a head spec sets its own, in the heads.
        extraction_head / sentiment_head: head specs (``d_model``, ``cross_modal`` injected;
            ``n_classes`` of the sentiment head defaults to ``n_polarities``).
        impl: attention implementation of every attention (``"auto"``, ``"fused"``, ``"reference"``).
    """
    has_image = image_encoder is not None
    # configs fail before anything is built
    if not has_image and gate != "none":
        raise ConfigError(f"gate: a text-only JML (image_encoder None) has no regions to gate; use gate 'none', "
                          f"got {gate!r}")
    if gate == "none" and (relation is not None or relation_checkpoint is not None):
        raise ConfigError("relation: gate 'none' uses no relation module; remove relation / relation_checkpoint "
                          "or choose gate 'soft' or 'hard'")
    if gate != "none" and (relation is None) == (relation_checkpoint is None):
        raise ConfigError(f"relation: gate {gate!r} needs exactly one of `relation` (a jml-relation config) and "
                          f"`relation_checkpoint` (a trained jml-relation folder); got "
                          f"{'both' if relation is not None else 'neither'}")
    text = build_component("encoder", text_encoder, where="text_encoder")
    image = build_component("encoder", image_encoder, where="image_encoder") if has_image else None
    relation_module: JMLRelation | None = None
    if relation_checkpoint is not None:
        relation_module = load_relation(relation_checkpoint)
    elif relation is not None:
        if "model" in relation and relation["model"] != RELATION_NAME:
            raise ConfigError(f"relation.model: expected {RELATION_NAME!r} (or leave it out), got {relation['model']!r}")
        options = {k: v for k, v in relation.items() if k != "model"}
        relation_module = build_component("model", {"name": RELATION_NAME, **options}, where="relation")
    defaults = {"n_heads": n_heads, "dropout": dropout, "impl": impl}
    extraction = _head(extraction_head, "extraction_head", defaults, d_model=d_model, cross_modal=has_image)
    sentiment = _head(sentiment_head, "sentiment_head", {**defaults, "n_classes": n_polarities},
                      d_model=d_model, cross_modal=has_image)
    model = JML(text, image, relation_module, extraction, sentiment, gate=gate, freeze_relation=freeze_relation,
                d_model=d_model, n_polarities=n_polarities, dropout=dropout, loss_weights=loss_weights,
                decode_top_k=decode_top_k, decode_max_span_len=decode_max_span_len,
                decode_threshold=decode_threshold, decode_max_spans=decode_max_spans,
                decode_length_penalty=decode_length_penalty)
    if impl != "auto":
        set_attention_impl(model, impl)
    return model
