"""Reading images from disk: open with PIL, decode fully, convert to RGB, fail with the file name.

``PIL.Image.open`` only reads the header and ``Image.verify`` does not decode pixel data, so a
truncated JPEG passes both and only fails later, inside a DataLoader worker. Here every image is
decoded completely (:func:`load_image`) or, for the cheap up-front check, decoded at a reduced
scale (:func:`check_image`, JPEG "draft" mode, which still reads every byte of the entropy-coded
data and therefore still detects truncation).

Hostile files become a :class:`BadImageError` naming the file, so they follow ``on_bad_image``
like any corrupt image: a decompression bomb (a small file declaring a huge canvas, refused from
its header before any pixel is decoded: more than :data:`MAX_IMAGE_PIXELS` pixels, whatever
``PIL.Image.MAX_IMAGE_PIXELS`` is set to), oversized PNG text chunks, and any other error of a
PIL decoder.

High bit-depth images are scaled, not clipped: 16-bit grey (``I;16``, or ``I`` from a 16-bit
PNG) maps 0..65535 to 0..255 (``round(v / 257)``), float images (``F``) in [0, 1] are scaled by
255, so a 16-bit scan does not come out saturated white.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Largest image (width × height) mmfuse decodes: Pillow's default bomb limit (about 89 Mpx,
#: 0.27 GB as RGB). Larger images are reported as bad images. Raise it here if you need to.
MAX_IMAGE_PIXELS: int = 89_478_485

#: Extensions tried, in order, when an image is looked up by its stem (``<id>.jpg`` first).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


class BadImageError(ValueError):
    """An image file that is missing, unreadable or corrupt; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"image {str(self.path)!r}: {reason}")


def _open_checked(path: Path) -> Image.Image:
    if not path.exists():
        raise BadImageError(path, "file does not exist")
    if not path.is_file():
        raise BadImageError(path, "not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            image = Image.open(path)
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image PIL can identify (wrong format or corrupt header)") from None
    except Image.DecompressionBombError as exc:
        raise BadImageError(path, f"decompression bomb: {exc}") from None
    except Exception as exc:  # any decoder error on a hostile header (ValueError, SyntaxError, struct.error, ...)
        raise BadImageError(path, f"cannot be opened: {type(exc).__name__}: {exc}") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS or width <= 0 or height <= 0:
        image.close()
        raise BadImageError(path, f"declares {width}×{height} = {width * height} pixels, more than the "
                            f"{MAX_IMAGE_PIXELS} allowed (decompression-bomb guard, mmfuse.data.images.MAX_IMAGE_PIXELS)")
    return image


def _decode(path: Path, image: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            # A decompression-bomb *warning* stays a warning; the error above the hard limit is reported.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Image.DecompressionBombError as exc:
        raise BadImageError(path, f"too large to decode safely: {exc}") from None
    except MemoryError:
        raise BadImageError(path, "too large to decode (out of memory)") from None
    except Exception as exc:  # OSError, SyntaxError, ValueError, EOFError, struct.error, ...
        raise BadImageError(path, f"corrupt or truncated image data: {type(exc).__name__}: {exc}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, scaling high bit-depth grey (``I;16*``, ``I``) and float (``F``)
    images to 0..255 instead of clipping them (see the module docstring)."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if mode == "I" and values.size and values.max() <= 255 and values.min() >= 0:
            grey = values  # an 8-bit image stored as 32-bit ints
        else:
            grey = np.clip(values, 0, 65535) / 257.0
        return Image.fromarray(np.rint(grey).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        return Image.fromarray(np.rint(np.clip(values * scale, 0, 255)).astype(np.uint8), "L").convert("RGB")
    if mode == "RGB":
        return image.copy() if image.readonly else image
    return image.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path``, decode every pixel and return an RGB image (closed file, safe to keep).

    Raises :class:`BadImageError` naming the file when it is missing, not an image, truncated
    or otherwise undecodable. Palette / grey / RGBA / CMYK images are converted to RGB.
    """
    p = Path(path)
    with _open_checked(p) as image:
        _decode(p, image)
        try:
            rgb = to_rgb(image)
            rgb.load()
        except Exception as exc:  # an exotic mode PIL cannot convert
            raise BadImageError(p, f"cannot be converted to RGB (mode {image.mode}): {exc}") from None
    return rgb


def check_image(path: str | os.PathLike[str]) -> str | None:
    """Return ``None`` when ``path`` decodes, else the reason it does not (no exception).

    Faster than :func:`load_image` for large JPEGs: they are decoded at reduced scale
    (``Image.draft``), which still reads the whole file and so detects truncation.
    """
    p = Path(path)
    try:
        with _open_checked(p) as image:
            if image.format == "JPEG":
                image.draft("RGB", (64, 64))
            _decode(p, image)
    except BadImageError as exc:
        return exc.reason
    return None


def find_image(
    folder: str | os.PathLike[str], stem: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> Path:
    """The path of ``<folder>/<stem><ext>`` for the first extension that exists.

    When none exists the ``.jpg`` path is returned (the conventional name), so the error raised
    when it is loaded names the file the user is expected to provide.
    """
    base = Path(folder)
    for ext in extensions:
        candidate = base / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return base / f"{stem}{extensions[0]}"
