"""``mmfuse viz``: text-token → image-patch attention heatmaps of a model, saved as a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """\
examples:
  mmfuse viz --checkpoint runs/demo --text "look at this lovely triangle" \\
             --image photo.jpg --tokens lovely triangle --out align.png
  mmfuse viz --model radm-tiny --seed 0 --text "a red circle" --image photo.jpg --layer 0 --head 1 --out a.png

The maps are the softmax of the text→image scores (stream "ti") of one interaction layer, over
the image's patch grid; one panel per selected word, each with a colorbar (--shared-scale: one
scale and colorbar for all panels). A model built from a preset (--model) has
random weights unless the preset loads local ones: use --checkpoint for a trained model.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "viz",
        help="draw text→image attention heatmaps (one panel per word) and save them as a PNG",
        description="Draw where each word of a text attends in an image (RADM's text→image attention) "
                    "and save the heatmaps as a PNG.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="DIR", type=Path,
                        help="trained model: a training run folder (runs/X) or a model folder written by "
                             "save_pretrained (config.json + model.safetensors)")
    source.add_argument("--model", metavar="PRESET|CONFIG",
                        help="preset name (e.g. radm-tiny) or a .json/.yaml model config (random weights)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="config override, repeatable (e.g. --set fusion.n_layers=3)")
    p.add_argument("--text", required=True, help="the text (caption, post)")
    p.add_argument("--image", required=True, type=Path, metavar="PATH", help="the image file")
    p.add_argument("--layer", type=int, default=-1,
                   help="interaction layer to show, 0-based; negative counts from the last (default: -1)")
    p.add_argument("--head", type=int, default=None,
                   help="attention head to show, 0-based (default: the mean of all heads)")
    p.add_argument("--tokens", nargs="+", metavar="WORD|INDEX", default=None,
                   help="words to draw, as words of the text (case-insensitive) or 0-based word indices "
                        "(default: every word)")
    p.add_argument("--out", required=True, type=Path, metavar="PNG", help="output PNG file")
    p.add_argument("--columns", type=int, default=4, help="panels per row (default: 4)")
    p.add_argument("--panel-size", type=float, default=2.5, help="panel side in inches (default: 2.5)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the PNG (default: 100)")
    p.add_argument("--cmap", default="viridis",
                   help="matplotlib colormap of the heatmaps (default: viridis; magma, inferno, cividis, ...)")
    p.add_argument("--alpha", type=float, default=0.6, help="heatmap opacity over the image, 0-1 (default: 0.6)")
    p.add_argument("--shared-scale", action="store_true",
                   help="one colour scale (and colorbar) for all panels instead of one per panel, so "
                        "panels compare directly")
    p.add_argument("--device", default="cpu", help="torch device to run the model on (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init for --model (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ValueError as exc:  # bad --tokens / --layer / --head / image, config errors
        print(f"mmfuse viz: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch

    from mmfuse.models.builder import build_model
    from mmfuse.models.checkpoint import load_pretrained
    from mmfuse.cli.common import checked_device
    from mmfuse.core.config import parse_set_overrides
    from mmfuse.data.images import BadImageError, load_image
    from mmfuse.viz import plot_alignment, text_image_alignment

    overrides = parse_set_overrides(args.set)
    if not args.image.is_file():
        raise FileNotFoundError(f"--image: {str(args.image)!r} does not exist")
    try:
        image = load_image(args.image)
    except BadImageError as exc:
        raise ValueError(f"--image: {exc}") from None
    checked_device(args.device, "viz")
    if args.checkpoint is not None:
        model = load_pretrained(args.checkpoint, map_location=args.device, **overrides)
    else:
        torch.manual_seed(args.seed)
        model = build_model(args.model, **overrides).to(args.device)
    alignment = text_image_alignment(model, args.text, image, layer=args.layer, head=args.head)
    out = plot_alignment(alignment, args.out, tokens=args.tokens, columns=args.columns,
                         panel_size=args.panel_size, dpi=args.dpi, cmap=args.cmap, alpha=args.alpha,
                         shared_scale=args.shared_scale)
    shown = [alignment.words[i] for i in alignment.select(args.tokens)]
    print(f"wrote {out} (layer {alignment.layer}, "
          f"{'mean of heads' if alignment.head is None else f'head {alignment.head}'}; words: {' '.join(shown)})")
    return 0
