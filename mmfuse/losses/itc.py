"""Image–text contrastive loss (ITC): symmetric InfoNCE between projected pooled features.

For the pairs ``(t_i, v_i)`` of a batch, the pooled text and image vectors are projected to a
shared space and L2-normalised (``z^t_i``, ``z^v_i``); with the learnable logit scale
``s = exp(logit_scale)`` (the inverse temperature, as in CLIP)

    L = 1/2 · [ CE(s · Z^t Z^vᵀ, diag) + CE(s · Z^v Z^tᵀ, diag) ]

i.e. each text must pick its own image among all images of the batch and vice versa.
``logit_scale`` starts at ``log(1 / temperature)`` and is clamped to ``[0, log(max_logit_scale)]``
before every use, as CLIP / open_clip clamp it after each optimizer step.

Under DDP the embeddings of all ranks are gathered (:func:`all_gather_with_grad`) so the
negatives are the whole global batch; each rank scores its own rows against all columns
(labels offset by the rank's first row). The per-rank loss is
``world_size / N · Σ_{own rows} CE`` (the local mean when ranks hold equal batches), so the sum
over ranks is ``world_size ×`` the single-process loss over the concatenated batch: gradients
reaching a rank's local features are ``world_size ×`` the single-process ones, and after DDP
averages parameter gradients over ranks they equal the single-process gradients exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.losses.auxiliary import AuxiliaryInputs, AuxiliaryLoss
from mmfuse.losses.gather import all_gather_with_grad, data_parallel_world


@dataclass
class ContrastiveOutput:
    """Result of :meth:`ITCLoss.contrastive`.

    Attributes:
        loss: scalar ITC loss of this rank (see the module docs for the DDP convention).
        logits_per_text: ``[B, N]`` scaled similarities of this rank's texts to all N images.
        logits_per_image: ``[B, N]`` scaled similarities of this rank's images to all N texts.
        offset: column of this rank's first pair (0 outside DDP); its own pairs are
            columns ``offset .. offset + B``.
    """

    loss: Tensor
    logits_per_text: Tensor
    logits_per_image: Tensor
    offset: int

    def local_similarity(self) -> Tensor:
        """``[B, B]`` text→image logits among this rank's own pairs, without gradient."""
        rows = self.logits_per_text.shape[0]
        return self.logits_per_text[:, self.offset : self.offset + rows].detach()


class ITCLoss(AuxiliaryLoss):
    """Image–text contrastive loss (CLIP-style symmetric InfoNCE) with a learnable temperature.

    Args:
        text_dim: width of the pooled text vector (filled from the model's ``feature_dims``).
        image_dim: width of the pooled image vector (idem).
        embed_dim: width of the shared embedding space.
        temperature: initial temperature; ``logit_scale`` starts at ``log(1 / temperature)``.
        max_logit_scale: upper clamp of ``exp(logit_scale)`` (100 as in CLIP).
        learn_temperature: learn ``logit_scale`` (else it stays a fixed buffer).
        gather_distributed: under DDP, contrast against the gathered global batch.
    """

    provides_similarity = True

    def __init__(
        self,
        text_dim: int,
        image_dim: int,
        embed_dim: int = 256,
        temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        learn_temperature: bool = True,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("text_dim", text_dim), ("image_dim", image_dim), ("embed_dim", embed_dim)):
            if value <= 0:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if not max_logit_scale >= 1.0:
            raise ValueError(f"max_logit_scale: expected a float >= 1, got {max_logit_scale!r}")
        if not (temperature > 0 and 1.0 / temperature <= max_logit_scale):
            raise ValueError(
                f"temperature: expected a float in [1/max_logit_scale, inf) = [{1 / max_logit_scale:g}, inf), "
                f"got {temperature!r}"
            )
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.image_proj = nn.Linear(image_dim, embed_dim)
        init = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)
        self.max_log_scale = math.log(max_logit_scale)
        self.gather_distributed = gather_distributed

    def extra_repr(self) -> str:
        return f"max_logit_scale={math.exp(self.max_log_scale):g}, gather_distributed={self.gather_distributed}"

    def scale(self) -> Tensor:
        """The logit scale ``exp(logit_scale)`` after clamping the stored value into range."""
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, self.max_log_scale)
        return self.logit_scale.exp()

    def embed(self, text_pooled: Tensor, image_pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Projected, L2-normalised embeddings ``([B, embed_dim], [B, embed_dim])`` in float32."""
        text = F.normalize(self.text_proj(text_pooled).float(), dim=-1)
        image = F.normalize(self.image_proj(image_pooled).float(), dim=-1)
        return text, image

    def contrastive(self, text_pooled: Tensor, image_pooled: Tensor) -> ContrastiveOutput:
        """ITC on pooled vectors ``text_pooled [B, text_dim]``, ``image_pooled [B, image_dim]``."""
        if text_pooled.dim() != 2 or image_pooled.dim() != 2 or text_pooled.shape[0] != image_pooled.shape[0]:
            raise ValueError(
                "ITC expects pooled text [B, text_dim] and image [B, image_dim] vectors of the same pairs, "
                f"got {tuple(text_pooled.shape)} and {tuple(image_pooled.shape)}"
            )
        text, image = self.embed(text_pooled, image_pooled)
        rows = text.shape[0]
        world = data_parallel_world()[1] if self.gather_distributed else 1
        if world > 1:
            both, offset = all_gather_with_grad(torch.stack([text, image], dim=1))  # [N, 2, E]
            all_text, all_image = both[:, 0], both[:, 1]
        else:
            all_text, all_image, offset = text, image, 0
        total = all_text.shape[0]
        with torch.autocast(device_type=text.device.type, enabled=False):
            scale = self.scale().float()
            logits_per_text = scale * text @ all_image.T
            logits_per_image = scale * image @ all_text.T
            labels = torch.arange(offset, offset + rows, device=text.device)
            summed = F.cross_entropy(logits_per_text, labels, reduction="sum") + F.cross_entropy(
                logits_per_image, labels, reduction="sum"
            )
            loss = summed * (world / (2 * max(total, 1)))
        return ContrastiveOutput(loss, logits_per_text, logits_per_image, offset)

    def forward(self, inputs: AuxiliaryInputs) -> Tensor:
        out = self.contrastive(inputs.text.pooled, inputs.image.pooled)
        inputs.similarity = out.local_similarity()
        return out.loss
