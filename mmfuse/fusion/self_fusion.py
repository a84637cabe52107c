"""RADM's self-fusion encoder (``self-fusion``): transformer layers over the joined sequences.

After the interaction network the text and image sequences are concatenated
(``[B, Lt + Li, d]``, masks likewise), tagged with a learned modality embedding and refined by
pre-norm layers of residual self-attention and a GELU feed-forward network; the result is
split back into the two modalities. Its score stream is called ``"joint"``
(``[B, H, Lt + Li, Lt + Li]`` per layer). It follows the fusion-block protocol, so any other
block can take its place.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmfuse.fusion.blocks import AttentionSublayer, FeedForwardSublayer, check_stack_options, layer_modes
from mmfuse.fusion.protocol import FusionOutput, check_fusion_inputs
from mmfuse.ops.attention import Impl
from mmfuse.ops.validation import Mode

STREAM = "joint"


class SelfFusionEncoder(nn.Module):
    """Joint self-attention over the concatenated text and image sequences.

    Args:
        d_model: width of both sequences (injected by the model).
        n_layers: number of layers.
        n_heads: attention heads.
        mode: residual attention mode of layers 2..n (``"gated"``, ``"residual"``, ``"none"``);
            the first layer has no previous scores and is plain attention.
        ffn_dim: feed-forward hidden width (default ``4 · d_model``).
        dropout: dropout of the attention outputs and feed-forward networks.
        impl: implementation of the attention op.
        modality_embeddings: add a learned text / image type embedding before joining.

    ``forward(text [B, Lt, d], text_mask [B, Lt], image [B, Li, d], image_mask [B, Li],
    return_attentions=False) -> FusionOutput`` (attentions: ``{"joint": [per-layer scores]}``).
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int = 1,
        n_heads: int = 8,
        mode: Mode = "gated",
        ffn_dim: int | None = None,
        dropout: float = 0.2,
        impl: Impl = "auto",
        modality_embeddings: bool = True,
    ) -> None:
        super().__init__()
        check_stack_options(n_layers, dropout)
        self.d_model = d_model
        self.modality = nn.Embedding(2, d_model) if modality_embeddings else None
        if self.modality is not None:
            nn.init.normal_(self.modality.weight, std=0.02)
        self.attentions = nn.ModuleList(
            AttentionSublayer(d_model, n_heads, layer_mode, dropout, impl, cross=False)
            for layer_mode in layer_modes(mode, n_layers)
        )
        self.ffns = nn.ModuleList(FeedForwardSublayer(d_model, ffn_dim or 4 * d_model, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, text: Tensor, text_mask: Tensor, image: Tensor, image_mask: Tensor,
                return_attentions: bool = False) -> FusionOutput:
        check_fusion_inputs(text, text_mask, image, image_mask, self.d_model, "self-fusion")
        if self.modality is not None:
            text = text + self.modality.weight[0]
            image = image + self.modality.weight[1]
        x = torch.cat([text, image], dim=1)  # [B, Lt + Li, d]
        mask = torch.cat([text_mask, image_mask], dim=1)
        prev: Tensor | None = None
        history: list[Tensor] = []
        for attention, ffn in zip(self.attentions, self.ffns):
            x, prev = attention(x, mask, prev)
            x = ffn(x)
            if return_attentions:
                history.append(prev)
        x = self.norm(x)
        text_len = text.shape[1]
        return FusionOutput(x[:, :text_len], x[:, text_len:], {STREAM: history} if return_attentions else None)
