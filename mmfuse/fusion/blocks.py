"""Pre-norm residual sub-layers shared by RADM's interaction layers and its self-fusion encoder.

Pre-norm (``x + f(LayerNorm(x))``) rather than BERT's post-norm: the residual path from the
first to the last layer stays an identity, which keeps gradients well scaled through a stack
that starts from random weights on top of pretrained encoders, and trains without a learning
rate warm-up; the stacks end with a final LayerNorm.
"""

from __future__ import annotations

from torch import Tensor, nn

from mmfuse.core.config import ConfigError
from mmfuse.fusion.residual_attention import ResidualAttention
from mmfuse.ops.attention import Impl
from mmfuse.ops.validation import Mode


def check_stack_options(n_layers: int, dropout: float) -> None:
    """Config checks shared by the layer stacks (interaction network, self-fusion encoder)."""
    if n_layers < 1:
        raise ConfigError(f"n_layers: expected an int >= 1, got {n_layers}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout: expected a probability in [0, 1), got {dropout}")


def layer_modes(mode: Mode, n_layers: int) -> list[Mode]:
    """Attention mode of each layer of a stack: the first layer has no previous scores, so its
    attentions are plain (``"none"``, without gate parameters); the others use ``mode``."""
    return ["none"] + [mode] * (n_layers - 1)


class AttentionSublayer(nn.Module):
    """``x + ResidualAttention(LN(x), LN'(context))``, returning the new ``x`` and the scores.

    Self-attention when ``context`` is None (one LayerNorm); cross-attention otherwise (the
    context gets its own LayerNorm).

    Shapes: ``x [B, Lq, d]``, ``context [B, Lk, d]``, ``key_mask [B, Lk]`` bool,
    ``prev`` / scores ``[B, H, Lq, Lk]``.
    """

    def __init__(self, d_model: int, n_heads: int, mode: Mode, dropout: float, impl: Impl, cross: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.context_norm = nn.LayerNorm(d_model) if cross else None
        self.attention = ResidualAttention(d_model, n_heads, mode=mode, dropout=dropout, impl=impl)

    def forward(self, x: Tensor, key_mask: Tensor, prev: Tensor | None = None,
                context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        query = self.norm(x)
        if self.context_norm is None:
            keys = query
        else:
            if context is None:
                raise ValueError("context: a cross-attention sub-layer needs the other modality's states")
            keys = self.context_norm(context)
        out, scores = self.attention(query, keys, key_mask=key_mask, prev=prev)
        return x + out, scores


class FeedForwardSublayer(nn.Module):
    """``x + Dropout(W2 · Dropout(GELU(W1 · LN(x))))`` on ``[B, L, d]``."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.net = nn.Sequential(
            nn.Linear(d_model, ffn_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(self.norm(x))
