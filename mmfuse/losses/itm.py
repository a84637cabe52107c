"""Image–text matching loss (ITM) with hard negatives drawn from in-batch similarities.

A binary head on the fused representation tells matched pairs from mismatched ones, as in
ALBEF / BLIP. For a batch of B pairs:

* the B matched pairs ``(t_i, v_i)`` are positives;
* for every image ``v_i`` one negative text ``t_j`` is drawn with probability
  ``softmax_j(sim(v_i, t_j))``, and for every text ``t_i`` one negative image ``v_j`` with
  probability ``softmax_j(sim(t_i, v_j))`` — similar, hence hard, negatives;
* a candidate ``j`` gets weight zero when it *is* the pair (``j = i``) or duplicates it: the
  same text or the same image as pair i (``(v_i, t_j)`` is then a true pair of the data). Two
  rows are duplicates when the batch gives them the same ``text_ids`` / ``image_ids`` entry,
  else when their content is identical (``input_ids`` under ``attention_mask``; ``pixel_values``).

That gives B positives and up to 2B negatives; the loss weights the classes equally,
``L = ½ · mean_pos CE + ½ · mean_neg CE``, so the head is not biased towards "no match".
The similarities are the ITC logits when an ITC loss is attached (shared, no extra cost),
otherwise the cosine similarity of the pooled vectors divided by ``temperature``, computed
without gradient. With ``negatives="random"`` candidates are drawn uniformly instead.

A batch with fewer than 2 pairs (or where every candidate is a duplicate) has no negative: the
ITM loss is then 0 (a zero connected to the head's parameters, so DDP still sees gradients
for them) and a warning is issued once per loss module.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.core.config import ConfigError
from mmfuse.losses.auxiliary import AuxiliaryInputs, AuxiliaryLoss
from mmfuse.core.features import FeatureDims


def _groups_of(values: Any) -> Tensor:
    """Group ids ``[B]``: equal ids for equal rows (tensor rows or hashable list items)."""
    if isinstance(values, Tensor):
        return torch.unique(values.reshape(values.shape[0], -1), dim=0, return_inverse=True)[1]
    index: dict[Any, int] = {}
    return torch.tensor([index.setdefault(v, len(index)) for v in values], dtype=torch.long)


def duplicate_mask(batch: Mapping[str, Any], batch_size: int, device: torch.device | str = "cpu") -> Tensor:
    """``[B, B]`` bool: True where pairs i and j share their text or their image.

    Uses ``batch["text_ids"]`` / ``batch["image_ids"]`` when present (tensors or lists of
    hashable ids), else the content: ``input_ids`` (padding under ``attention_mask`` ignored)
    and ``pixel_values``. The diagonal is always True.
    """
    same = torch.eye(batch_size, dtype=torch.bool, device=device)
    text_key = batch.get("text_ids")
    if text_key is None and isinstance(batch.get("input_ids"), Tensor):
        text_key = batch["input_ids"]
        mask = batch.get("attention_mask")
        if isinstance(mask, Tensor) and mask.shape == text_key.shape:
            text_key = text_key.masked_fill(mask == 0, -1)
    image_key = batch.get("image_ids")
    if image_key is None and isinstance(batch.get("pixel_values"), Tensor):
        image_key = batch["pixel_values"]
    for key in (text_key, image_key):
        if key is None:
            continue
        if len(key) != batch_size:
            raise ValueError(f"duplicate_mask: a batch entry has {len(key)} rows, expected {batch_size}")
        groups = _groups_of(key).to(device)
        same |= groups[:, None] == groups[None, :]
    return same


def sample_negatives(similarity: Tensor, allowed: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw one column per row of ``similarity [R, C]`` with probability ``softmax`` over the
    ``allowed [R, C]`` columns (weight zero elsewhere).

    Returns ``(rows, picks)``: the rows that have at least one allowed column and the column
    drawn for each (both ``[K]`` long). Rows without an allowed column are left out.
    """
    if similarity.shape != allowed.shape or similarity.dim() != 2:
        raise ValueError(f"similarity and allowed must be [R, C] of the same shape, got "
                         f"{tuple(similarity.shape)} and {tuple(allowed.shape)}")
    rows = allowed.any(dim=1).nonzero().squeeze(1)
    if rows.numel() == 0:
        return rows, rows.clone()
    logits = similarity.index_select(0, rows).float().masked_fill(~allowed.index_select(0, rows), float("-inf"))
    probs = torch.softmax(logits, dim=1)
    picks = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return rows, picks


@dataclass
class MatchingPairs:
    """The pairs ITM classifies: P = B positives followed by the drawn negatives.

    Attributes:
        text_index / image_index: ``[P]`` rows of the text and of the image of each pair.
        labels: ``[P]`` 1 for the B matched pairs (first), 0 for the negatives.
        weights: ``[P]`` per-pair loss weights; each class sums to 1/2 (balanced classes).
        batch_size: B, the number of matched pairs.
    """

    text_index: Tensor
    image_index: Tensor
    labels: Tensor
    weights: Tensor
    batch_size: int

    @property
    def num_negatives(self) -> int:
        return self.labels.numel() - self.batch_size


class ITMLoss(AuxiliaryLoss):
    """Image–text matching: a match / no-match head on ``fuse(text, image)`` with hard negatives.

    Args:
        fused_dim: width of the fused representation (filled from the model's ``feature_dims``).
        negatives: ``"hard"`` (drawn by softmax of similarities) or ``"random"`` (uniform).
        temperature: divides the pooled-vector cosine similarity when no ITC loss provides
            similarities (ignored otherwise).
    """

    uses_similarity = True

    def __init__(self, fused_dim: int, negatives: Literal["hard", "random"] = "hard", temperature: float = 0.07) -> None:
        super().__init__()
        if fused_dim <= 0:
            raise ValueError(f"fused_dim: expected a positive int, got {fused_dim!r}")
        if negatives not in ("hard", "random"):
            raise ValueError(f"negatives: expected 'hard' or 'random', got {negatives!r}")
        if not temperature > 0:
            raise ValueError(f"temperature: expected a positive float, got {temperature!r}")
        self.head = nn.Linear(fused_dim, 2)
        self.negatives = negatives
        self.temperature = temperature
        self._warned_no_negatives = False

    def extra_repr(self) -> str:
        return f"negatives={self.negatives!r}"

    def check_attachment(self, dims: FeatureDims | None, similarity_provided: bool, where: str) -> None:
        if self.negatives == "hard" and not similarity_provided and dims is not None and dims.text != dims.image:
            raise ConfigError(self._no_similarity_message(where, dims.text, dims.image))

    @staticmethod
    def _no_similarity_message(where: str, text_dim: int, image_dim: int) -> str:
        return (
            f"{where}: ITM hard negatives need similarities: attach an 'itc' loss, or pooled text and image "
            f"vectors of equal width (the model has text {text_dim}, image {image_dim}), or set negatives='random'"
        )

    def similarity(self, inputs: AuxiliaryInputs) -> Tensor:
        """``[B, B]`` text→image similarities used to draw negatives (no gradient)."""
        batch_size = inputs.batch_size
        if self.negatives == "random":
            return torch.zeros(batch_size, batch_size, device=inputs.text.pooled.device)
        if inputs.similarity is not None:
            return inputs.similarity.detach()
        text, image = inputs.text.pooled.detach(), inputs.image.pooled.detach()
        if text.shape[1] != image.shape[1]:
            raise ValueError(self._no_similarity_message("ITM", text.shape[1], image.shape[1]))
        return F.normalize(text.float(), dim=-1) @ F.normalize(image.float(), dim=-1).T / self.temperature

    def pairs(self, inputs: AuxiliaryInputs) -> MatchingPairs:
        """The B matched pairs, then one negative text per image and one negative image per text."""
        batch_size = inputs.batch_size
        device = inputs.text.pooled.device
        sim = self.similarity(inputs)
        allowed = ~duplicate_mask(inputs.batch, batch_size, device)  # symmetric
        images, texts_for_images = sample_negatives(sim.T, allowed)
        texts, images_for_texts = sample_negatives(sim, allowed)
        own = torch.arange(batch_size, device=device)
        n_neg = images.numel() + texts.numel()
        labels = torch.cat([torch.ones_like(own), torch.zeros(n_neg, dtype=torch.long, device=device)])
        weights = torch.cat([torch.full((batch_size,), 0.5 / batch_size, device=device),
                             torch.full((n_neg,), 0.5 / max(n_neg, 1), device=device)])
        return MatchingPairs(
            text_index=torch.cat([own, texts_for_images, texts]),
            image_index=torch.cat([own, images, images_for_texts]),
            labels=labels,
            weights=weights,
            batch_size=batch_size,
        )

    def _no_negatives(self, batch_size: int) -> Tensor:
        if not self._warned_no_negatives:
            warnings.warn(
                f"ITM: a batch of {batch_size} pair(s) without any non-duplicate negative; the ITM loss is 0 "
                "for such batches (warned once)",
                RuntimeWarning,
                stacklevel=3,
            )
            self._warned_no_negatives = True
        return sum(p.sum() for p in self.head.parameters()) * 0.0

    def forward(self, inputs: AuxiliaryInputs) -> Tensor:
        batch_size = inputs.batch_size
        if batch_size < 2:
            return self._no_negatives(batch_size)
        pairs = self.pairs(inputs)
        if pairs.num_negatives == 0:
            return self._no_negatives(batch_size)
        if inputs.fused is not None:  # the model already fused the matched pairs
            rest = slice(batch_size, None)
            negatives = inputs.fuse(inputs.text.select(pairs.text_index[rest]),
                                    inputs.image.select(pairs.image_index[rest]))
            fused = torch.cat([inputs.fused, negatives.to(inputs.fused.dtype)])
        else:
            fused = inputs.fuse(inputs.text.select(pairs.text_index), inputs.image.select(pairs.image_index))
        logits = self.head(fused).float()
        return (F.cross_entropy(logits, pairs.labels, reduction="none") * pairs.weights).sum()
