"""Alignment heatmap figures: colorbars, per-panel vs shared colour scale, colormap and opacity."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmfuse.viz import AlignmentMaps, alignment_figure, plot_alignment


def _maps() -> AlignmentMaps:
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 0], maps[1, 3, 3], maps[2] = 0.8, 0.2, 1 / 16  # a peaked, a weak and a flat map
    return AlignmentMaps(words=["a", "lovely", "circle"], maps=maps, image=Image.new("RGB", (32, 32), (90, 90, 90)),
                         layer=1, head=None)


def _heatmaps(figure):
    return [im for ax in figure.axes for im in ax.get_images() if im.get_array().shape == (4, 4)]


def test_each_panel_has_its_own_scale_and_colorbar_by_default():
    figure = alignment_figure(_maps(), columns=3)
    heats = _heatmaps(figure)
    assert [im.get_clim() for im in heats] == [pytest.approx((0.0, v)) for v in (0.8, 0.2, 1 / 16)]
    assert all(im.get_cmap().name == "viridis" and im.get_alpha() == 0.6 for im in heats)
    assert len(figure.axes) == 3 + 3  # a colorbar axis next to every panel


def test_shared_scale_uses_one_range_and_one_colorbar():
    figure = alignment_figure(_maps(), columns=2, shared_scale=True, cmap="magma", alpha=0.4)
    heats = _heatmaps(figure)
    assert [im.get_clim() for im in heats] == [pytest.approx((0.0, 0.8))] * 3
    assert all(im.get_cmap().name == "magma" and im.get_alpha() == 0.4 for im in heats)
    assert len(figure.axes) == 4 + 1  # 2 × 2 panels (one empty) and one colorbar
    assert "one scale for all panels" in figure._suptitle.get_text()


def test_bad_options_fail_naming_them(tmp_path):
    with pytest.raises(ValueError, match="cmap: 'nope' is not a matplotlib colormap"):
        alignment_figure(_maps(), cmap="nope")
    with pytest.raises(ValueError, match=r"alpha: expected an opacity in \[0, 1\], got 1.5"):
        alignment_figure(_maps(), alpha=1.5)


def test_png_size_is_unchanged_by_colorbars(tmp_path):
    for shared in (False, True):
        path = plot_alignment(_maps(), tmp_path / f"a{shared}.png", columns=2, panel_size=1, dpi=40,
                              shared_scale=shared)
        with Image.open(path) as png:
            assert png.size == (80, 80)


def test_viz_takes_a_training_run_folder(tmp_path, capsys):
    import mmfuse
    from mmfuse.cli import main

    torch.manual_seed(0)
    model = mmfuse.build_model("radm-tiny", **{"image_encoder.img_size": 32})
    model.save_pretrained(tmp_path / "run" / "model")  # the layout a training run leaves
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "photo.png")
    out = tmp_path / "a.png"
    assert main(["viz", "--checkpoint", str(tmp_path / "run"), "--text", "a red circle", "--image",
                 str(tmp_path / "photo.png"), "--shared-scale", "--cmap", "magma", "--alpha", "0.5",
                 "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and out.is_file()
    assert main(["viz", "--checkpoint", str(tmp_path / "run"), "--text", "a red circle", "--image",
                 str(tmp_path / "photo.png"), "--cmap", "jett", "--out", str(tmp_path / "b.png")]) == 2
    assert "cmap: 'jett' is not a matplotlib colormap" in capsys.readouterr().err
