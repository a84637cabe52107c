"""RADM's cross-modal deep interaction network (``radm-interaction``).

Each :class:`RADMInteractionLayer` refines both modalities with four multi-head residual
attentions and two GELU feed-forward networks (pre-norm, see :mod:`mmfuse.fusion.blocks`)::

    text  ── self-attention (tt) ──┬── text→image cross-attention (ti) ── FFN ──► text
                                   ╳   (dual path: both read the states after self-attention)
    image ── self-attention (ii) ──┴── image→text cross-attention (it) ── FFN ──► image

Every attention threads its own score stream: layer ``l`` passes the ``[B, H, Lq, Lk]`` scores
of ``tt``, ``ii``, ``ti`` and ``it`` from layer ``l−1`` to the op as ``prev`` (gated / residual
modes), so the gate can keep or forget earlier alignments. With ``cross_modal=False`` (the
``rm_c`` ablation) the two cross-attention sub-layers — and the ``ti`` / ``it`` streams — do
not exist.
"""

from __future__ import annotations

from torch import Tensor, nn

from mmfuse.fusion.blocks import AttentionSublayer, FeedForwardSublayer, check_stack_options, layer_modes
from mmfuse.fusion.protocol import FusionOutput, check_fusion_inputs
from mmfuse.ops.attention import Impl
from mmfuse.ops.validation import Mode

#: score streams: text→text, image→image, text→image (text queries), image→text
STREAMS: tuple[str, ...] = ("tt", "ii", "ti", "it")


class RADMInteractionLayer(nn.Module):
    """One interaction layer; see the module docstring.

    ``forward(text [B, Lt, d], text_mask [B, Lt], image [B, Li, d], image_mask [B, Li],
    prev: {stream: [B, H, Lq, Lk]} | None)`` returns ``(text, image, scores)`` where ``scores``
    maps each stream of this layer (``tt``, ``ii``, and with cross-modal attention ``ti``
    ``[B, H, Lt, Li]`` and ``it`` ``[B, H, Li, Lt]``) to its combined scores.
    """

    def __init__(self, d_model: int, n_heads: int, mode: Mode, ffn_dim: int, dropout: float, impl: Impl,
                 cross_modal: bool = True) -> None:
        super().__init__()
        self.text_self = AttentionSublayer(d_model, n_heads, mode, dropout, impl, cross=False)
        self.image_self = AttentionSublayer(d_model, n_heads, mode, dropout, impl, cross=False)
        self.cross_modal = cross_modal
        if cross_modal:
            self.text_cross = AttentionSublayer(d_model, n_heads, mode, dropout, impl, cross=True)
            self.image_cross = AttentionSublayer(d_model, n_heads, mode, dropout, impl, cross=True)
        self.text_ffn = FeedForwardSublayer(d_model, ffn_dim, dropout)
        self.image_ffn = FeedForwardSublayer(d_model, ffn_dim, dropout)

    @property
    def streams(self) -> tuple[str, ...]:
        return STREAMS if self.cross_modal else STREAMS[:2]

    def forward(
        self, text: Tensor, text_mask: Tensor, image: Tensor, image_mask: Tensor,
        prev: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        prev = prev or {}
        scores: dict[str, Tensor] = {}
        text, scores["tt"] = self.text_self(text, text_mask, prev.get("tt"))
        image, scores["ii"] = self.image_self(image, image_mask, prev.get("ii"))
        if self.cross_modal:
            # dual path: both directions read the post-self-attention states of the other modality
            new_text, scores["ti"] = self.text_cross(text, image_mask, prev.get("ti"), context=image)
            image, scores["it"] = self.image_cross(image, text_mask, prev.get("it"), context=text)
            text = new_text
        return self.text_ffn(text), self.image_ffn(image), scores


class RADMInteraction(nn.Module):
    """A stack of RADM interaction layers (fusion component ``radm-interaction``).

    Args:
        d_model: width of both sequences (injected by the model).
        n_layers: number of interaction layers.
        n_heads: attention heads per attention.
        mode: residual attention mode of the attentions of layers 2..n: ``"gated"`` (RADM),
            ``"residual"`` (RealFormer) or ``"none"`` (the ``rm_rg`` ablation). The first layer
            has no previous scores, so its attentions are always plain.
        cross_modal: False removes the cross-modal attentions (the ``rm_c`` ablation).
        ffn_dim: hidden width of the feed-forward networks (default ``4 · d_model``).
        dropout: dropout of the attention outputs and feed-forward networks (paper: 0.2).
        impl: implementation of the attention op (``"auto"``, ``"fused"``, ``"reference"``).

    ``forward(text [B, Lt, d], text_mask [B, Lt] bool, image [B, Li, d], image_mask [B, Li] bool,
    return_attentions=False) -> FusionOutput``; with ``return_attentions`` the attentions are
    ``{stream: [scores of layer 1, ..., layer n_layers]}``.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int = 2,
        n_heads: int = 8,
        mode: Mode = "gated",
        cross_modal: bool = True,
        ffn_dim: int | None = None,
        dropout: float = 0.2,
        impl: Impl = "auto",
    ) -> None:
        super().__init__()
        check_stack_options(n_layers, dropout)
        self.d_model = d_model
        self.layers = nn.ModuleList(
            RADMInteractionLayer(d_model, n_heads, layer_mode, ffn_dim or 4 * d_model, dropout, impl, cross_modal)
            for layer_mode in layer_modes(mode, n_layers)
        )
        self.text_norm = nn.LayerNorm(d_model)
        self.image_norm = nn.LayerNorm(d_model)

    def forward(self, text: Tensor, text_mask: Tensor, image: Tensor, image_mask: Tensor,
                return_attentions: bool = False) -> FusionOutput:
        check_fusion_inputs(text, text_mask, image, image_mask, self.d_model, "radm-interaction")
        prev: dict[str, Tensor] | None = None
        history: dict[str, list[Tensor]] = {}
        for layer in self.layers:
            text, image, prev = layer(text, text_mask, image, image_mask, prev)
            if return_attentions:
                for stream, scores in prev.items():
                    history.setdefault(stream, []).append(scores)
        return FusionOutput(self.text_norm(text), self.image_norm(image), history if return_attentions else None)
