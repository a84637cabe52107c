"""JML's cross-modal relation detection (paper section 3.1, eqs 1–8): does the image add to the tweet?

The relation head reads projected text tokens ``T_rel`` and image regions ``O_rel`` and
returns two logits (``[image does not add, image adds]``); its probability of "adds" is the
**relation gate** ``G_r`` that scales the region features the JML main task sees.

Equation → code:

====  ==========================================  ======================================================
eq    paper                                       here
====  ==========================================  ======================================================
1     ``H_o = ATT_self(O_rel)``                   :attr:`RelationHead.image_self` (+ ``image_ffn``)
2     ``H_x = ATT_self(T_rel)``                   :attr:`RelationHead.text_self` (+ ``text_ffn``)
3     ``H_o→x = ATT_cross(H_o, H_x)``             :attr:`RelationHead.image_to_text` (regions query text)
4     ``H_x→o = ATT_cross(H_x, H_o)``             :attr:`RelationHead.text_to_image` (text queries regions)
5     ``p_r = softmax(W2 tanh(W1 H))``            :attr:`RelationHead.w1`, :attr:`RelationHead.w2`; ``H`` =
                                                  concat of the masked means of the four states ``[B, 4d]``
6     ``L_r = −Σ log p_r(r)``                     :func:`relation_loss` (mean cross-entropy)
7     ``G_r = RelDet(X, I)``                      :func:`relation_gate` (soft: ``p_r``; hard: ``p_r ≥ 0.5``)
8     ``O_r = G_r · O``                           :func:`gate_regions`
====  ==========================================  ======================================================

``ATT_self`` is a pre-norm transformer layer (multi-head attention + feed-forward, residual);
``ATT_cross`` a pre-norm residual cross-attention. Both run on the fused attention op
(:class:`~mmfuse.fusion.residual_attention.ResidualAttention` in plain mode ``"none"``).

The hard gate (paper: "score p_r < 0.5 = 0") is computed with a **straight-through
estimator**: its value is exactly 0 or 1 (``p_r ≥ 0.5``) and its gradient is that of ``p_r``,
so a relation module that is trained jointly still receives a signal. A frozen relation module
(``freeze_relation`` in JML) makes the difference moot.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.core.config import ConfigError
from mmfuse.fusion.blocks import AttentionSublayer, FeedForwardSublayer
from mmfuse.fusion.pooling import masked_mean
from mmfuse.ops.attention import Impl

GateMode = Literal["soft", "hard"]
#: class index of "the image adds to the tweet meaning" (TRC ``image_adds`` = 1)
IMAGE_ADDS = 1
#: hard-gate threshold on p_r (paper section 3.1)
HARD_GATE_THRESHOLD = 0.5


class RelationHead(nn.Module):
    """Text–image relation classifier (eqs 1–5) on projected tokens.

    Args:
        d_model: width of the text tokens and regions (injected by the model).
        n_heads: attention heads (the paper uses 8).
        ffn_dim: hidden width of the self-attention layers' feed-forward (default ``4 · d_model``).
        dropout: dropout in the attention layers and before the classifier.
        impl: attention implementation (``"auto"``, ``"fused"``, ``"reference"``).

    ``forward(text [B, L, d], text_mask [B, L] bool, regions [B, R, d], region_mask [B, R] bool)``
    returns ``(logits [B, 2], H [B, 4 · d])``: the relation logits (index 1 = "image adds") and the
    concatenated pooled states (the fused representation used for auxiliary losses).
    """

    def __init__(self, d_model: int, n_heads: int = 8, ffn_dim: int | None = None, dropout: float = 0.1,
                 impl: Impl = "auto") -> None:
        super().__init__()
        if d_model < 1:
            raise ConfigError(f"d_model: expected a positive int, got {d_model}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout: expected a probability in [0, 1), got {dropout}")
        ffn = ffn_dim or 4 * d_model
        self.d_model = d_model
        self.image_self = AttentionSublayer(d_model, n_heads, "none", dropout, impl, cross=False)
        self.image_ffn = FeedForwardSublayer(d_model, ffn, dropout)
        self.text_self = AttentionSublayer(d_model, n_heads, "none", dropout, impl, cross=False)
        self.text_ffn = FeedForwardSublayer(d_model, ffn, dropout)
        self.image_to_text = AttentionSublayer(d_model, n_heads, "none", dropout, impl, cross=True)
        self.text_to_image = AttentionSublayer(d_model, n_heads, "none", dropout, impl, cross=True)
        self.dropout = nn.Dropout(dropout)
        self.w1 = nn.Linear(4 * d_model, d_model)
        self.w2 = nn.Linear(d_model, 2)

    def forward(self, text: Tensor, text_mask: Tensor, regions: Tensor, region_mask: Tensor) -> tuple[Tensor, Tensor]:
        for name, x in (("text", text), ("regions", regions)):
            if x.dim() != 3 or x.shape[-1] != self.d_model:
                raise ValueError(f"relation head: {name} must be [B, L, d_model={self.d_model}], got {tuple(x.shape)}")
        h_o = self.image_ffn(self.image_self(regions, region_mask)[0])  # eq 1  [B, R, d]
        h_x = self.text_ffn(self.text_self(text, text_mask)[0])  # eq 2  [B, L, d]
        h_ox = self.image_to_text(h_o, text_mask, context=h_x)[0]  # eq 3  [B, R, d]
        h_xo = self.text_to_image(h_x, region_mask, context=h_o)[0]  # eq 4  [B, L, d]
        h = torch.cat([masked_mean(h_o, region_mask), masked_mean(h_x, text_mask),
                       masked_mean(h_ox, region_mask), masked_mean(h_xo, text_mask)], dim=-1)  # [B, 4d]
        logits = self.w2(torch.tanh(self.w1(self.dropout(h))))  # eq 5 (softmax in relation_probability)
        return logits, h


def relation_probability(logits: Tensor) -> Tensor:
    """``p_r`` of eq 5: the softmax probability of "image adds" from ``logits [B, 2]`` → ``[B]``."""
    return logits.float().softmax(dim=-1)[:, IMAGE_ADDS].to(logits.dtype)


def relation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Eq 6: mean cross-entropy of the binary relation (``labels [B]`` in {0, 1}, -100 ignored)."""
    total = F.cross_entropy(logits.float(), labels.long(), ignore_index=-100, reduction="sum")
    return total / (labels != -100).sum().clamp(min=1)  # 0 (in the graph) when every label is -100


def relation_gate(probability: Tensor, mode: GateMode) -> Tensor:
    """Eq 7: the gate ``G_r [B]`` from ``p_r [B]``.

    ``"soft"``: ``G_r = p_r``. ``"hard"``: ``G_r = 1[p_r ≥ 0.5]`` in value, with the gradient of
    ``p_r`` (straight-through estimator; see the module docstring).
    """
    if mode == "soft":
        return probability
    if mode == "hard":
        hard = (probability >= HARD_GATE_THRESHOLD).to(probability.dtype)
        return hard + (probability - probability.detach())  # value: exactly hard; gradient: d p_r
    raise ValueError(f"gate: expected 'soft' or 'hard', got {mode!r}")


def gate_regions(regions: Tensor, gate: Tensor) -> Tensor:
    """Eq 8: ``O_r = G_r · O`` — ``regions [B, R, d]`` scaled per sample by ``gate [B]``."""
    if gate.shape != regions.shape[:1]:
        raise ValueError(f"gate: expected shape [{regions.shape[0]}] (one value per sample), got {tuple(gate.shape)}")
    return regions * gate.to(regions.dtype)[:, None, None]
