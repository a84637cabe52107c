"""JML's span heads: aspect-term extraction (eqs 9–14) and aspect sentiment (eqs 15–21), losses (eq 22).

Both heads work on **word** positions: the model gathers the state of each word's first
sub-token (``word_starts``) from the text encoder, so ``[B, W, d]`` word states ``T`` are the
input and start/end logits are ``[B, W]``. Cross-attention is per query, so attending from the
gathered words is the same as attending from every sub-token and gathering afterwards.

Equation → code:

====  ==============================================  ===============================================
eq    paper                                           here
====  ==============================================  ===============================================
9     ``C_a = T ⊕ ATT_cross(T, O_r)``                 :attr:`AspectExtractionHead.cross_attention`
10    ``H_a = W_a C_a + b_a``                         :attr:`AspectExtractionHead.w_a`
11    ``g_str = W_s H_a + b_s``                       :attr:`AspectExtractionHead.w_s`
12    ``p_str = softmax(g_str)``                      :func:`span_boundary_loss` (log-softmax over words)
13    ``g_end = W_e H_a + b_e``                       :attr:`AspectExtractionHead.w_e`
14    ``p_end = softmax(g_end)``                      :func:`span_boundary_loss`
15    ``m = W_m H_a^[s:e] + b_m``                     :attr:`AspectSentimentHead.w_m`
16    ``α_t = softmax_t(m_t)`` inside the span        :func:`span_attention_pool`
17    ``H_u = Σ_t α_t H_a^(s+t)``                     :func:`span_attention_pool`
18    ``C_s = H_u ⊕ ATT_cross(H_u, O_r)``             :attr:`AspectSentimentHead.cross_attention`
19    ``H_s = W_u C_s + b_u``                         :attr:`AspectSentimentHead.w_u`
20    ``g_p = W_p tanh(W_v H_s)``                     :attr:`AspectSentimentHead.w_v`, :attr:`AspectSentimentHead.w_p`
21    ``p_p = softmax(g_p)``                          :func:`polarity_loss` / ``softmax`` at prediction
22    ``L = −Σ y_s log p_str − Σ y_e log p_end        :func:`span_boundary_loss` (start, end),
      − Σ_t Σ_i y_p log p_p``                         :func:`polarity_loss` (polarity)
====  ==============================================  ===============================================

``ATT_cross`` is plain multi-head attention on the fused op
(:class:`~mmfuse.fusion.residual_attention.ResidualAttention`, mode ``"none"``) with the
element-wise residual ``⊕`` of the paper and **no LayerNorm on the regions**: a LayerNorm
would undo the relation gate (``LN(G·O) = LN(O)`` for any ``G > 0``). A text-only head
(``cross_modal=False``) has no cross-attention at all: ``C = T``.

Eq 22 with multi-hot ``y_s`` / ``y_e`` (a tweet has several aspects): as in Hu et al. (2019),
the boundary loss of a tweet is ``−Σ_i y_i log p_i / Σ_i y_i`` (averaged over the tweets that
have aspects), and the polarity loss the mean cross-entropy over the gold spans.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.core.config import ConfigError
from mmfuse.fusion.residual_attention import ResidualAttention
from mmfuse.ops.attention import Impl

#: value of start / end logits at padded word positions (finite: keeps 0 · log p finite in fp16 too)
MASKED_LOGIT = -1.0e4
#: polarity label that marks a padded span
IGNORE_INDEX = -100


def _check_width(d_model: int, dropout: float) -> None:
    if d_model < 1:
        raise ConfigError(f"d_model: expected a positive int, got {d_model}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout: expected a probability in [0, 1), got {dropout}")


class GatedRegionCrossAttention(nn.Module):
    """``x ⊕ ATT_cross(x, O_r)`` (eqs 9 / 18): queries ``x [B, Lq, d]`` attend to the gated regions
    ``O_r [B, R, d]`` (``region_mask [B, R]`` bool; a sample without valid regions adds nothing)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, impl: Impl) -> None:
        super().__init__()
        self.attention = ResidualAttention(d_model, n_heads, mode="none", dropout=dropout, impl=impl)

    def forward(self, x: Tensor, regions: Tensor, region_mask: Tensor) -> Tensor:
        return x + self.attention(x, regions, key_mask=region_mask)[0]


def _cross_attention(cross_modal: bool, d_model: int, n_heads: int, dropout: float,
                     impl: Impl) -> GatedRegionCrossAttention | None:
    return GatedRegionCrossAttention(d_model, n_heads, dropout, impl) if cross_modal else None


def _attend_regions(block: GatedRegionCrossAttention | None, x: Tensor, regions: Tensor | None,
                    region_mask: Tensor | None, where: str) -> Tensor:
    if block is None:
        if regions is not None:
            raise ValueError(f"{where}: this head is text-only (cross_modal=False) but regions were given")
        return x
    if regions is None or region_mask is None:
        raise ValueError(f"{where}: this head is cross-modal and needs regions [B, R, d] and region_mask [B, R]")
    return block(x, regions, region_mask)


class AspectExtractionHead(nn.Module):
    """Start / end logits of aspect spans over the words (eqs 9–14).

    Args:
        d_model: width of the word states and regions (injected by the model).
        cross_modal: attend to the gated regions (eq 9); False for the text-only model (``C_a = T``).
        n_heads: heads of the cross-attention.
        dropout: dropout on ``H_a`` before the boundary classifiers (and in the attention output).
        impl: attention implementation.

    ``forward(words [B, W, d], word_mask [B, W] bool, regions [B, R, d] | None, region_mask [B, R] | None)``
    returns ``(H_a [B, W, d], start_logits [B, W], end_logits [B, W])``; padded words get
    :data:`MASKED_LOGIT`.
    """

    def __init__(self, d_model: int, cross_modal: bool, n_heads: int = 8, dropout: float = 0.1,
                 impl: Impl = "auto") -> None:
        super().__init__()
        _check_width(d_model, dropout)
        self.cross_modal = cross_modal
        self.cross_attention = _cross_attention(cross_modal, d_model, n_heads, dropout, impl)
        self.w_a = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.w_s = nn.Linear(d_model, 1)
        self.w_e = nn.Linear(d_model, 1)

    def forward(self, words: Tensor, word_mask: Tensor, regions: Tensor | None = None,
                region_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        c_a = _attend_regions(self.cross_attention, words, regions, region_mask, "aspect extraction")  # eq 9
        h_a = self.w_a(c_a)  # eq 10
        features = self.dropout(h_a)
        start = self.w_s(features).squeeze(-1).masked_fill(~word_mask, MASKED_LOGIT)  # eq 11
        end = self.w_e(features).squeeze(-1).masked_fill(~word_mask, MASKED_LOGIT)  # eq 13
        return h_a, start, end


def span_attention_pool(states: Tensor, scores: Tensor, spans: Tensor, span_mask: Tensor) -> Tensor:
    """Attention pooling of each span's word states (eqs 16–17).

    Args:
        states: ``H_a`` ``[B, W, d]``.
        scores: ``m`` ``[B, W]``, one attention score per word (eq 15).
        spans: ``[B, S, 2]`` long, ``(start, end)`` word indices, end inclusive.
        span_mask: ``[B, S]`` bool, True for real spans.

    Returns ``H_u`` ``[B, S, d]``: ``Σ_t α_t H_a[s + t]`` with ``α = softmax(m[s..e])``; zeros for padded spans.
    """
    positions = torch.arange(states.shape[1], device=states.device)
    inside = (positions >= spans[..., :1]) & (positions <= spans[..., 1:]) & span_mask[..., None]  # [B, S, W]
    logits = scores[:, None, :].float().masked_fill(~inside, float("-inf"))
    logits = torch.where(inside.any(-1, keepdim=True), logits, torch.zeros_like(logits))  # padded spans: finite
    alpha = logits.softmax(dim=-1) * inside  # eq 16 (exactly 0 outside the span / for padded spans)
    return torch.einsum("bsw,bwd->bsd", alpha.to(states.dtype), states)  # eq 17


class AspectSentimentHead(nn.Module):
    """Polarity logits of given spans (eqs 15–21).

    Args:
        d_model: width of ``H_a`` and the regions (injected by the model).
        cross_modal: fuse the span vectors with the gated regions (eq 18); False: ``C_s = H_u``.
        n_classes: number of polarities ``ε`` (3: negative, neutral, positive).
        n_heads: heads of the cross-attention.
        dropout: dropout before the polarity classifier (and in the attention output).
        impl: attention implementation.

    ``forward(states [B, W, d], spans [B, S, 2], span_mask [B, S], regions [B, R, d] | None,
    region_mask [B, R] | None)`` returns ``g_p`` ``[B, S, n_classes]``.
    """

    def __init__(self, d_model: int, cross_modal: bool, n_classes: int = 3, n_heads: int = 8, dropout: float = 0.1,
                 impl: Impl = "auto") -> None:
        super().__init__()
        _check_width(d_model, dropout)
        if n_classes < 2:
            raise ConfigError(f"n_classes: expected at least 2 polarities, got {n_classes}")
        self.cross_modal = cross_modal
        self.n_classes = n_classes
        self.w_m = nn.Linear(d_model, 1)
        self.cross_attention = _cross_attention(cross_modal, d_model, n_heads, dropout, impl)
        self.w_u = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_p = nn.Linear(d_model, n_classes)

    def forward(self, states: Tensor, spans: Tensor, span_mask: Tensor, regions: Tensor | None = None,
                region_mask: Tensor | None = None) -> Tensor:
        m = self.w_m(states).squeeze(-1)  # eq 15  [B, W]
        h_u = span_attention_pool(states, m, spans, span_mask)  # eqs 16–17  [B, S, d]
        c_s = _attend_regions(self.cross_attention, h_u, regions, region_mask, "aspect sentiment")  # eq 18
        h_s = self.w_u(c_s)  # eq 19
        return self.w_p(torch.tanh(self.w_v(self.dropout(h_s))))  # eq 20 (softmax of eq 21 at use)


def span_boundary_loss(logits: Tensor, labels: Tensor, word_mask: Tensor) -> Tensor:
    """Start or end part of eq 22 for multi-hot labels.

    ``logits`` ``[B, W]``, ``labels`` ``[B, W]`` 0/1 float (several aspects per tweet), ``word_mask``
    ``[B, W]``. Per tweet ``−Σ_i y_i log softmax(logits)_i / Σ_i y_i`` over its real words; the mean
    over tweets with at least one gold boundary (0, still in the graph, when no tweet has one).
    """
    log_p = logits.float().masked_fill(~word_mask, float("-inf")).log_softmax(dim=-1)
    y = labels.float() * word_mask
    count = y.sum(dim=-1)
    per_tweet = -(y * torch.where(word_mask, log_p, torch.zeros_like(log_p))).sum(dim=-1)
    has_gold = count > 0
    # mean over tweets with gold, without a data-dependent branch or shape (compiles into one graph)
    per_gold = torch.where(has_gold, per_tweet / count.clamp(min=1), torch.zeros_like(per_tweet))
    return per_gold.sum() / has_gold.sum().clamp(min=1)


def polarity_loss(logits: Tensor, polarity: Tensor) -> Tensor:
    """Polarity part of eq 22: mean cross-entropy of ``logits [B, S, C]`` vs ``polarity [B, S]``
    (``-100`` = padded span, skipped; 0 in the graph when there are no spans)."""
    if polarity.numel() == 0:
        return logits.sum() * 0.0
    total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), polarity.reshape(-1).long(),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (polarity != IGNORE_INDEX).sum().clamp(min=1)  # 0 when every span is padding
