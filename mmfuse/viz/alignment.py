"""Attention-alignment heatmaps: where in the image does each word of the text look?

RADM's text→image cross-attention (score stream ``"ti"``, ``[B, H, Lt, Li]`` per layer) aligns
text tokens with image patches. :func:`text_image_alignment` runs a model on one text and one
image and turns the scores of a chosen layer (and head, or the mean over heads) into one map
per word over the patch grid; :func:`plot_alignment` draws the maps over the image, one panel
per word, and saves a PNG.

The op returns the combined *scores* ``n`` (pre-softmax); the attention weights are their
softmax over the valid keys (:func:`attention_weights`). Words are groups of WordPiece tokens
(``##`` continuations); a word's map is the mean of its pieces' maps.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

TEXT_TO_IMAGE = "ti"


def attention_weights(scores: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Softmax of ``scores`` ``[B, H, Lq, Lk]`` over the valid keys (``key_mask`` ``[B, Lk]`` bool).

    Masked keys get weight 0; a row without valid keys is all zeros (as in the op).
    """
    scores = scores.float()
    if key_mask is None:
        return torch.softmax(scores, dim=-1)
    valid = key_mask[:, None, None, :].expand_as(scores)
    logits = scores.masked_fill(~valid, float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # rows without valid keys
    return weights * valid


@dataclass
class AlignmentMaps:
    """Per-word attention maps of one text over one image.

    Attributes:
        words: the words of the text (WordPiece groups, without special tokens), in order.
        maps: ``[len(words), rows, cols]`` attention weight of each word on each patch.
        image: the image as the model saw it (after resizing / cropping), RGB.
        layer: the interaction layer the maps come from (0-based, resolved).
        head: the head, or None for the mean over heads.
    """

    words: list[str]
    maps: Tensor
    image: Image.Image
    layer: int
    head: int | None

    def select(self, tokens: Sequence[str | int] | None) -> list[int]:
        """Indices of ``tokens`` (word strings, case-insensitive, or 0-based word indices); all if None."""
        if not tokens:
            return list(range(len(self.words)))
        lowered = [w.lower() for w in self.words]
        chosen = []
        for token in tokens:
            if isinstance(token, int) or (isinstance(token, str) and token.lstrip("-").isdigit()):
                index = int(token)
                if not -len(self.words) <= index < len(self.words):
                    raise ValueError(f"tokens: word index {index} is out of range; the text has "
                                     f"{len(self.words)} words: {self.words}")
                chosen.append(index % len(self.words))
            else:
                matches = [i for i, w in enumerate(lowered) if w == str(token).lower()]
                if not matches:
                    raise ValueError(f"tokens: {token!r} is not a word of the text; its words are {self.words}")
                chosen.extend(matches)
        return chosen


def _words_of(tokenizer: Any, text: str, max_length: int) -> tuple[list[str], list[list[int]]]:
    """Words of ``text`` and the token positions of each (fast tokenizers' word ids)."""
    encoding = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
    try:
        word_ids = encoding.word_ids()
    except (AttributeError, ValueError) as exc:  # slow tokenizers do not track words
        raise TypeError("text_image_alignment needs a fast (tokenizers-backed) tokenizer") from exc
    positions: dict[int, list[int]] = {}
    for position, word in enumerate(word_ids):
        if word is not None:
            positions.setdefault(word, []).append(position)
    words, groups = [], []
    for word in sorted(positions):
        group = positions[word]
        start = encoding["offset_mapping"][group[0]][0]
        end = encoding["offset_mapping"][group[-1]][1]
        words.append(text[start:end])
        groups.append(group)
    return words, groups


def _unnormalise(pixels: Tensor, data_config: dict[str, Any]) -> Image.Image:
    mean = torch.tensor(data_config.get("mean", (0.0, 0.0, 0.0)), dtype=torch.float32)[:, None, None]
    std = torch.tensor(data_config.get("std", (1.0, 1.0, 1.0)), dtype=torch.float32)[:, None, None]
    rgb = (pixels.float().cpu() * std + mean).clamp(0, 1)
    return Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))


@torch.no_grad()
def text_image_alignment(model: nn.Module, text: str, image: Image.Image, layer: int = -1,
                         head: int | None = None) -> AlignmentMaps:
    """Text-token → image-patch attention of ``model`` (RADM-like) for one text and image.

    Args:
        model: a model with ``get_processor()``, ``image_encoder.grid_size`` /
            ``num_prefix_tokens`` / ``data_config`` and a ``"ti"`` attention stream.
        text, image: the input pair.
        layer: which layer's text→image attention (negative counts from the last).
        head: which head, or None for the mean of the heads' attention weights.
    """
    processor = model.get_processor(train=False)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in processor([text], [image]).items()}
    was_training = model.training
    model.eval()
    try:
        output = model(batch, return_attentions=True)
    finally:
        model.train(was_training)
    streams = output.attentions or {}
    if TEXT_TO_IMAGE not in streams:
        raise ValueError(f"the model has no text→image attention stream {TEXT_TO_IMAGE!r} (streams: "
                         f"{sorted(streams)}); was it built without cross-modal attention (rm_c)?")
    layers = streams[TEXT_TO_IMAGE]
    if not -len(layers) <= layer < len(layers):
        raise ValueError(f"layer: expected an index in [{-len(layers)}, {len(layers) - 1}], got {layer}")
    layer = layer % len(layers)
    scores = layers[layer]  # [1, H, Lt, Li]
    n_heads = scores.shape[1]
    if head is not None and not 0 <= head < n_heads:
        raise ValueError(f"head: expected an index in [0, {n_heads - 1}] or None (mean), got {head}")
    weights = attention_weights(scores, output.image_features.mask)[0]  # [H, Lt, Li]
    weights = weights.mean(dim=0) if head is None else weights[head]  # [Lt, Li]
    encoder = model.image_encoder
    rows, cols = encoder.grid_size
    patches = weights[:, encoder.num_prefix_tokens:]
    if patches.shape[1] != rows * cols:
        raise ValueError(f"image tokens: expected {rows}×{cols} patches after {encoder.num_prefix_tokens} prefix "
                         f"token(s), got {patches.shape[1]}")
    grid = patches.reshape(-1, rows, cols).cpu()
    words, groups = _words_of(processor.tokenizer, text, processor.max_length)
    if not words:
        raise ValueError("text: no words left after tokenisation")
    maps = torch.stack([grid[group].mean(dim=0) for group in groups])
    seen = _unnormalise(batch["pixel_values"][0], encoder.data_config)
    return AlignmentMaps(words=words, maps=maps, image=seen, layer=layer, head=head)


def plot_alignment(
    alignment: AlignmentMaps,
    path: str | os.PathLike[str],
    tokens: Sequence[str | int] | None = None,
    columns: int = 4,
    panel_size: float = 2.5,
    dpi: int = 100,
    cmap: str = "viridis",
    alpha: float = 0.6,
    shared_scale: bool = False,
) -> Path:
    """Draw the maps of ``tokens`` (default: every word) over the image and save a PNG
    (the figure of :func:`alignment_figure`, which documents the options)."""
    from mmfuse.utils.io import atomic_path

    figure = alignment_figure(alignment, tokens, columns=columns, panel_size=panel_size, dpi=dpi, cmap=cmap,
                              alpha=alpha, shared_scale=shared_scale)
    out = Path(path)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return out


def alignment_figure(
    alignment: AlignmentMaps,
    tokens: Sequence[str | int] | None = None,
    columns: int = 4,
    panel_size: float = 2.5,
    dpi: int = 100,
    cmap: str = "viridis",
    alpha: float = 0.6,
    shared_scale: bool = False,
) -> Any:
    """A matplotlib ``Figure`` of the maps of ``tokens`` (default: every word) over the image.

    The figure is ``min(n, columns)`` panels wide and ``ceil(n / columns)`` high, each panel
    ``panel_size`` inches square at ``dpi``: e.g. 3 words at the defaults give a 750×250 PNG.
    Each map is scaled to its own maximum, with a colorbar per panel; ``shared_scale=True``
    uses one scale (0 to the largest weight of the shown maps) and one colorbar for all panels,
    so panels compare directly. ``cmap`` is a matplotlib colormap (default the perceptually
    uniform ``viridis``), ``alpha`` the heatmap's opacity over the image.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if columns < 1 or panel_size <= 0 or dpi < 1:
        raise ValueError(f"columns, panel_size, dpi: expected positive values, got {columns}, {panel_size}, {dpi}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected an opacity in [0, 1], got {alpha}")
    if cmap not in colormaps:
        raise ValueError(f"cmap: {cmap!r} is not a matplotlib colormap (e.g. viridis, magma, inferno, cividis)")
    selected = alignment.select(tokens)
    n_cols = min(len(selected), columns)
    n_rows = -(-len(selected) // n_cols)
    # constrained layout leaves room for the colorbars' tick labels and the title at any panel count
    figure = Figure(figsize=(n_cols * panel_size, n_rows * panel_size), dpi=dpi, layout="constrained")
    width, height = alignment.image.size
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    shared_max = max(float(alignment.maps[i].max()) for i in selected)
    image = None
    for ax, index in zip(axes.flat, selected):
        heat = alignment.maps[index]
        peak = float(heat.max())
        top = shared_max if shared_scale else peak
        ax.imshow(alignment.image, extent=(0, width, height, 0))
        image = ax.imshow(heat.numpy(), cmap=cmap, alpha=alpha, extent=(0, width, height, 0),
                          interpolation="bilinear", vmin=0.0, vmax=top if top > 0 else 1.0)
        ax.set_title(f"{alignment.words[index]} (max {peak:.3g})", fontsize=9)
        if not shared_scale:
            bar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            bar.ax.yaxis.set_major_locator(MaxNLocator(4))
            bar.ax.tick_params(labelsize=6)
            bar.solids.set_alpha(1.0)
    if shared_scale and image is not None:
        bar = figure.colorbar(image, ax=list(axes.flat), fraction=0.03, pad=0.02)
        bar.set_label("attention weight", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        bar.solids.set_alpha(1.0)
    head = "mean of heads" if alignment.head is None else f"head {alignment.head}"
    scale = "one scale for all panels" if shared_scale else "each panel scaled to its maximum"
    title = f"text→image attention, layer {alignment.layer}, {head}"
    figure.suptitle(f"{title} ({scale})" if n_cols > 2 else f"{title}\n({scale})", fontsize=9)
    return figure
