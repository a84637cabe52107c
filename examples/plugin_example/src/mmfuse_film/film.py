"""FiLM fusion: the text steers the image features by a per-channel scale and shift.

Feature-wise linear modulation (Perez et al., *FiLM: Visual Reasoning with a General
Conditioning Layer*, AAAI 2018) conditions one network on another through an affine map
per feature channel. Here the conditioning input is the text and the modulated features are
the image tokens, which makes a cheap fusion block: no attention, ``O(B · Li · d)`` work.

The block follows mmfuse's fusion-block protocol (``mmfuse.fusion.protocol``): its factory
takes ``d_model`` from the model, ``forward(text, text_mask, image, image_mask,
return_attentions)`` returns a :class:`mmfuse.fusion.FusionOutput` with both sequences in
their input shapes. So any model that builds its fusion stage from a config (RADM's
``fusion`` / ``self_fusion`` keys) can use it.
"""

from __future__ import annotations

from torch import Tensor, nn

from mmfuse import ConfigError
from mmfuse.fusion import FusionOutput
from mmfuse.fusion.pooling import masked_mean
from mmfuse.fusion.protocol import check_fusion_inputs


class FiLMGenerator(nn.Module):
    """Maps a conditioning vector ``[B, d]`` to a scale ``γ`` and a shift ``β``, each ``[B, 1, d]``.

    A two-layer MLP whose output layer starts at zero, so ``γ = β = 0`` at initialisation and
    the modulation ``(1 + γ) ⊙ x + β`` starts as the identity.
    """

    def __init__(self, d_model: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 2 * d_model))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, condition: Tensor) -> tuple[Tensor, Tensor]:
        gamma, beta = self.dropout(self.mlp(condition)).unsqueeze(1).chunk(2, dim=-1)
        return gamma, beta


class FiLMFusion(nn.Module):
    """FiLM fusion block: text-conditioned per-channel scale and shift of every image token.

    The text is summarised by the mean of its real tokens, ``c = mean_{j: text_mask[j]} text[j]``
    (``[B, d]``); a :class:`FiLMGenerator` turns ``c`` into ``γ, β`` (``[B, 1, d]``), and every
    image token is modulated::

        image'[b, i] = (1 + γ[b]) ⊙ image[b, i] + β[b]          image [B, Li, d] → [B, Li, d]

    The block starts as the identity and learns how strongly the text steers the image. With
    ``bidirectional=True`` the image (mean of its real tokens) modulates the text tokens the same
    way, with a second generator; otherwise the text passes through unchanged. Padded tokens
    never influence real ones: they are left out of the means and the modulation is per token.

    Args:
        d_model: width ``d`` of both sequences (injected by the model, not configurable).
        hidden_dim: hidden width of each γ/β generator (default ``d_model``).
        bidirectional: also modulate the text tokens, conditioned on the image.
        dropout: dropout on ``γ`` and ``β`` during training.

    ``forward(text [B, Lt, d], text_mask [B, Lt] bool, image [B, Li, d], image_mask [B, Li] bool,
    return_attentions=False) -> FusionOutput`` with ``text [B, Lt, d]``, ``image [B, Li, d]``;
    ``attentions`` is ``{}`` when asked for (the block has no attention maps), else None.
    """

    def __init__(self, d_model: int, hidden_dim: int | None = None, bidirectional: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if d_model < 1:
            raise ConfigError(f"d_model: expected a positive int, got {d_model}")
        if hidden_dim is not None and hidden_dim < 1:
            raise ConfigError(f"hidden_dim: expected a positive int or null, got {hidden_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout: expected a probability in [0, 1), got {dropout}")
        self.d_model = d_model
        hidden = hidden_dim or d_model
        self.text_to_image = FiLMGenerator(d_model, hidden, dropout)
        self.image_to_text = FiLMGenerator(d_model, hidden, dropout) if bidirectional else None

    def forward(self, text: Tensor, text_mask: Tensor, image: Tensor, image_mask: Tensor,
                return_attentions: bool = False) -> FusionOutput:
        check_fusion_inputs(text, text_mask, image, image_mask, self.d_model, "film")
        gamma, beta = self.text_to_image(masked_mean(text, text_mask))  # [B, 1, d] each
        new_image = (1 + gamma) * image + beta
        if self.image_to_text is not None:
            gamma, beta = self.image_to_text(masked_mean(image, image_mask))
            text = (1 + gamma) * text + beta
        return FusionOutput(text=text, image=new_image, attentions={} if return_attentions else None)
