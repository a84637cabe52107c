"""Reading images from disk: open with PIL, decode fully, convert to RGB, fail with the file name.

``PIL.Image.open`` only reads the header and ``Image.verify`` does not decode pixel data, so a
truncated JPEG passes both and only fails later, inside a DataLoader worker. Here every image is
decoded completely (:func:`load_image`) or, for the cheap up-front check, decoded at a reduced
scale (:func:`check_image`, JPEG "draft" mode, which still reads every byte of the entropy-coded
data and therefore still detects truncation).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

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
        return Image.open(path)
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image PIL can identify (wrong format or corrupt header)") from None
    except OSError as exc:
        raise BadImageError(path, f"cannot be opened: {exc}") from exc


def _decode(path: Path, image: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            # A decompression-bomb *warning* stays a warning; the error above the hard limit is reported.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Image.DecompressionBombError as exc:
        raise BadImageError(path, f"too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(path, f"corrupt or truncated image data: {exc}") from exc


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path``, decode every pixel and return an RGB image (closed file, safe to keep).

    Raises :class:`BadImageError` naming the file when it is missing, not an image, truncated
    or otherwise undecodable. Palette / grey / RGBA / CMYK images are converted to RGB.
    """
    p = Path(path)
    with _open_checked(p) as image:
        _decode(p, image)
        rgb = image.convert("RGB")
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
