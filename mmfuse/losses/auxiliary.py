"""Auxiliary losses (ITC, ITM, ...) attached to any model that implements the fusion protocol.

``attach_aux_losses(model, specs)`` builds each spec as a registered ``loss`` component, stores
them on the model as the submodule ``model.aux_losses`` (so the optimizer, ``state_dict`` and
checkpoints include their parameters) and registers a forward hook. In training mode the hook
reads the batch (the first positional argument of ``forward``, or ``batch=``) and the model's
output, computes every auxiliary loss and returns a copy of the output with

* ``losses[name]`` = the unweighted auxiliary loss (the trainer logs each entry), and
* ``loss`` = the model's loss + Σ weight · auxiliary loss (or that sum alone when the model
  computed no loss, e.g. a batch without labels).

In eval mode the hook returns the output unchanged, so metrics and dev losses are those of the
main task alone. A hook (rather than a wrapper module) keeps the model's class, attributes and
``state_dict`` keys (only ``aux_losses.*`` are added), works with ``DistributedDataParallel``
(the hook runs inside the wrapped module's forward) and with ``torch.compile``; it is a
module-level function that looks the losses up on the module it is called for, so
``copy.deepcopy`` of the model copies working auxiliary losses.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from mmfuse.core.config import ConfigError, check_type, factory_parameters
from mmfuse.core.features import FeatureDims, Features, missing_protocol_methods
from mmfuse.core.build import build_component
from mmfuse.core.registry import UnknownComponentError, get_registry

#: auxiliary-loss factory parameters filled from the model's ``feature_dims``
DIM_PARAMETERS: dict[str, str] = {"text_dim": "text", "image_dim": "image", "fused_dim": "fused"}


@dataclasses.dataclass
class AuxiliaryInputs:
    """What an auxiliary loss sees for one training batch (B = pairs of this rank).

    Attributes:
        batch: the model's batch dict (rows without a real image already removed).
        text / image: unimodal features of the B matched pairs.
        fuse: the model's ``fuse(text, image) -> [B', d_fused]``.
        fused: ``[B, d_fused]`` ``fuse(text, image)`` when the model's forward computed it.
        similarity: ``[B, B]`` text→image similarity logits of this rank's pairs, without
            gradient; set by a loss that provides it (ITC) for the losses that run after it.
    """

    batch: Mapping[str, Any]
    text: Features
    image: Features
    fuse: Callable[[Features, Features], Tensor]
    fused: Tensor | None = None
    similarity: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.text.batch_size


class AuxiliaryLoss(nn.Module, abc.ABC):
    """Base class of losses that can be configured under ``aux_losses``.

    Subclasses implement :meth:`forward` returning a scalar. A loss that fills
    ``inputs.similarity`` sets ``provides_similarity``; one that reads it sets
    ``uses_similarity`` and runs after the providers.
    """

    provides_similarity: ClassVar[bool] = False
    uses_similarity: ClassVar[bool] = False

    @abc.abstractmethod
    def forward(self, inputs: AuxiliaryInputs) -> Tensor:
        """Return the (unweighted) scalar loss for one batch."""

    def check_attachment(self, dims: FeatureDims | None, similarity_provided: bool, where: str) -> None:
        """Raise :class:`ConfigError` (naming ``where``) if this loss cannot work on the model.

        ``dims`` is the model's ``feature_dims`` (None when undeclared);
        ``similarity_provided`` tells whether another attached loss provides similarities.
        """


class AuxiliaryLosses(nn.ModuleDict):
    """The auxiliary losses of one model (``model.aux_losses``), with their weights."""

    def __init__(self, losses: Mapping[str, AuxiliaryLoss], weights: Mapping[str, float]) -> None:
        super().__init__(losses)
        self.weights = {name: float(weights[name]) for name in losses}
        # providers of similarities run before their users; otherwise config order is kept
        self.run_order = sorted(losses, key=lambda name: losses[name].uses_similarity)

    def extra_repr(self) -> str:
        return "weights=" + ", ".join(f"{name}={weight:g}" for name, weight in self.weights.items())

    def forward(self, model: nn.Module, batch: Mapping[str, Any], output: Any) -> Any:
        """Return a copy of ``output`` with the auxiliary losses added (see the module docs)."""
        if not (dataclasses.is_dataclass(output) and hasattr(output, "loss") and hasattr(output, "losses")):
            raise TypeError(
                f"aux_losses: {type(model).__name__}.forward must return an mmfuse ModelOutput "
                f"(a dataclass with `loss` and `losses`), got {type(output).__name__}"
            )
        inputs = self._inputs(model, batch, output)
        values = {name: self[name](inputs) for name in self.run_order}
        clash = sorted(set(values) & set(output.losses))
        if clash:
            raise ValueError(
                f"aux_losses: the model already reports losses named {clash}; rename the model's "
                "loss or do not configure that auxiliary loss"
            )
        weighted = sum(self.weights[name] * values[name] for name in self.run_order)
        loss = weighted if output.loss is None else output.loss + weighted
        return dataclasses.replace(output, loss=loss, losses={**output.losses, **values})

    @staticmethod
    def _inputs(model: nn.Module, batch: Mapping[str, Any], output: Any) -> AuxiliaryInputs:
        text = output.text_features if output.text_features is not None else model.encode_text(batch)
        image = output.image_features if output.image_features is not None else model.encode_image(batch)
        for name, feats in (("encode_text", text), ("encode_image", image)):
            if not isinstance(feats, Features):
                raise TypeError(
                    f"aux_losses: {type(model).__name__}.{name} must return mmfuse.core.features.Features, "
                    f"got {type(feats).__name__}"
                )
        if text.batch_size != image.batch_size:
            raise ValueError(
                f"aux_losses: text features have {text.batch_size} rows but image features have "
                f"{image.batch_size}; they must describe the same pairs"
            )
        fused = getattr(output, "fused", None)
        if fused is not None and (fused.dim() != 2 or fused.shape[0] != text.batch_size):
            raise ValueError(
                f"aux_losses: output.fused must be [B, d_fused] with B={text.batch_size}, got {tuple(fused.shape)}"
            )
        image_mask = batch.get("image_mask")
        if image_mask is not None and not bool(image_mask.all()):
            # pairs whose image is a placeholder (text-only samples) are not image-text pairs
            rows = image_mask.nonzero().squeeze(1).to(text.pooled.device)
            batch = select_rows(batch, rows.to(image_mask.device), text.batch_size)
            text, image = text.select(rows), image.select(rows)
            fused = None if fused is None else fused.index_select(0, rows)
        return AuxiliaryInputs(batch=batch, text=text, image=image, fuse=model.fuse, fused=fused)


def select_rows(batch: Mapping[str, Any], rows: Tensor, batch_size: int) -> dict[str, Any]:
    """Rows ``rows`` of every per-sample entry of ``batch`` (tensors / lists with ``batch_size``
    leading items, nested dicts such as ``labels``); other entries are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch_size:
            out[key] = value.index_select(0, rows.to(value.device))
        elif isinstance(value, Mapping):
            out[key] = select_rows(value, rows, batch_size)
        elif isinstance(value, (list, tuple)) and len(value) == batch_size:
            out[key] = [value[i] for i in rows.tolist()]
        else:
            out[key] = value
    return out


def _aux_losses_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
    """Forward hook (``with_kwargs=True``) that adds ``module.aux_losses`` in training mode."""
    if not module.training:
        return None
    batch = args[0] if args else kwargs.get("batch")
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"aux_losses: {type(module).__name__}.forward must receive the batch dict as its first "
            f"argument or as batch=...; got {type(batch).__name__}"
        )
    return module.aux_losses(module, batch, output)


def _feature_dims(model: nn.Module, where: str) -> FeatureDims | None:
    dims = getattr(model, "feature_dims", None)
    if dims is None or isinstance(dims, FeatureDims):
        return dims
    raise ConfigError(
        f"{where}: {type(model).__name__}.feature_dims must be a mmfuse.core.features.FeatureDims, "
        f"got {type(dims).__name__}"
    )


@dataclasses.dataclass(frozen=True)
class AuxLossSpec:
    """One parsed ``aux_losses`` entry."""

    name: str
    options: dict[str, Any]
    weight: float


def _parse_spec(spec: Any, where: str) -> AuxLossSpec:
    """``"itc"`` or ``{"name": "itc", "weight": 0.1, **options}`` → :class:`AuxLossSpec`."""
    if isinstance(spec, str):
        return AuxLossSpec(spec, {}, 1.0)
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a loss name or a mapping with 'name' (and 'weight'), got {type(spec).__name__}")
    if "name" not in spec:
        raise ConfigError(f"{where}.name: missing required key (the auxiliary loss, e.g. 'itc' or 'itm')")
    check_type(spec["name"], str, f"{where}.name")
    weight = spec.get("weight", 1.0)
    check_type(weight, float, f"{where}.weight")
    if not weight >= 0:
        raise ConfigError(f"{where}.weight: expected a non-negative float, got {weight!r}")
    options = {k: v for k, v in spec.items() if k not in ("name", "weight")}
    return AuxLossSpec(spec["name"], options, float(weight))


def parse_aux_loss_specs(specs: Any, where: str = "aux_losses") -> list[AuxLossSpec]:
    """Check the shape of an ``aux_losses`` list (names registered, weights, no repeats)."""

    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence):
        raise ConfigError(f"{where}: expected a list of auxiliary losses, got {type(specs).__name__}")
    parsed = [_parse_spec(spec, f"{where}[{i}]") for i, spec in enumerate(specs)]
    names = [spec.name for spec in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: each auxiliary loss may appear once; repeated: {duplicates}")
    for i, spec in enumerate(parsed):  # unknown names fail here, before any model is built
        try:
            get_registry().get("loss", spec.name)
        except UnknownComponentError as err:
            raise UnknownComponentError(f"{where}[{i}].name: {err}") from None
    return parsed


def attach_aux_losses(model: nn.Module, specs: Sequence[Any], where: str = "aux_losses") -> AuxiliaryLosses | None:
    """Build the auxiliary losses ``specs`` and attach them to ``model`` (see the module docs).

    Each spec is a registered ``loss`` name or ``{"name": ..., "weight": w (default 1.0), **options}``.
    Widths (``text_dim``, ``image_dim``, ``fused_dim``) are filled from ``model.feature_dims``
    when the model declares it, else they must be given in the spec. Returns the attached
    :class:`AuxiliaryLosses` (None for an empty list). Raises :class:`ConfigError` for a model
    without the protocol, a bad spec, or a loss that is not an :class:`AuxiliaryLoss`.
    """

    parsed = parse_aux_loss_specs(specs, where)
    if not parsed:
        return None
    missing = missing_protocol_methods(model)
    if missing:
        raise ConfigError(
            f"{where}: {type(model).__name__} cannot use auxiliary losses {[s.name for s in parsed]}: it does "
            "not implement the fusion protocol (mmfuse.core.features.SupportsFusion); missing methods: "
            f"{', '.join(missing)}"
        )
    if hasattr(model, "aux_losses"):
        raise ConfigError(f"{where}: {type(model).__name__} already has an `aux_losses` attribute")

    dims = _feature_dims(model, where)
    losses: dict[str, AuxiliaryLoss] = {}
    for i, spec in enumerate(parsed):
        here, name, options = f"{where}[{i}]", spec.name, spec.options
        params, _, _ = factory_parameters(get_registry().get("loss", name).factory)
        injected = {p: getattr(dims, field) for p, field in DIM_PARAMETERS.items() if p in params and dims}
        for p in DIM_PARAMETERS:
            if p in params and dims is None and p not in options and params[p].default is params[p].empty:
                raise ConfigError(
                    f"{here}.{p}: missing required key; {type(model).__name__} declares no `feature_dims` "
                    f"(mmfuse.core.features.FeatureDims), so give the width in the {name!r} spec"
                )
        loss = build_component("loss", {"name": name, **options}, where=here, **injected)
        if not isinstance(loss, AuxiliaryLoss):
            raise ConfigError(
                f"{here}: loss {name!r} is not an auxiliary loss (expected a subclass of "
                f"mmfuse.losses.auxiliary.AuxiliaryLoss, got {type(loss).__name__})"
            )
        losses[name] = loss
    provided = any(loss.provides_similarity for loss in losses.values())
    for i, spec in enumerate(parsed):
        losses[spec.name].check_attachment(dims, provided, f"{where}[{i}]")

    aux = AuxiliaryLosses(losses, {spec.name: spec.weight for spec in parsed})
    device = next(iter(model.parameters()), torch.empty(0)).device
    model.add_module("aux_losses", aux.to(device))
    model.register_forward_hook(_aux_losses_hook, with_kwargs=True)
    return aux
