"""Visualisations: text-token → image-patch attention alignment heatmaps (matplotlib, Agg)."""

from mmfuse.viz.alignment import (
    AlignmentMaps,
    alignment_figure,
    attention_weights,
    plot_alignment,
    text_image_alignment,
)

__all__ = ["AlignmentMaps", "alignment_figure", "attention_weights", "plot_alignment", "text_image_alignment"]
