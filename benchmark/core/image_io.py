"""PNG files <-> uint8 image tensors, with Pillow (torchvision's image I/O is deprecated since 0.29),
and :func:`decode`, the one way every dataset and the report read an image file.

Tensors are ``torch.uint8`` of shape (C, H, W) with C = 1, 3 or 4, as torchvision's ``read_image`` /
``write_png`` used them; files are written atomically.

Decoding, for every mode Pillow returns: 8-bit modes (1, L, P, RGB, CMYK, ...) convert as Pillow
converts them. Alpha (LA, PA, RGBA, P with transparency) is dropped, not composited: the colour
stored under a transparent pixel is kept, as CUT's and CycleGAN's loaders (``convert('RGB')``) do,
so that results stay comparable with theirs. High bit depths are scaled to 8 bits, as Pillow's own
conversion does not (it clips: a mid-grey 16-bit PNG would become white): 16-bit (I;16, I;16B,
I;16L, I;16N) and 32-bit integer (I, taken as 16-bit data, which is how Pillow opens 16-bit files)
by 255/65535, float (F) by 255 from [0, 1]; a value outside that range is an error, not clipped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_write
from .errors import BenchmarkError, DataError

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def write_png(image: torch.Tensor, path: Path | str) -> None:
    """Write a uint8 (C, H, W) tensor (C = 1, 3 or 4) as a PNG file, atomically."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in _MODES:
        raise BenchmarkError(f"write_png({path}): expected a uint8 tensor of shape (1|3|4, H, W), "
                             f"got {image.dtype} {tuple(image.shape)}")
    array = image.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    picture = Image.fromarray(array)  # (H, W) -> L, (H, W, 3) -> RGB, (H, W, 4) -> RGBA
    with atomic_write(Path(path), "wb") as f:
        picture.save(f, format="PNG")


_FULL_SCALE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I;16BS": 65535,
               "I;16LS": 65535, "I": 65535, "F": 1.0}
"""The value that maps to 255 for each mode deeper than 8 bits (see the module docstring)."""


def eight_bit(picture: Image.Image, path: Path | str = "") -> Image.Image:
    """``picture`` as an 8-bit image: high bit depths scaled to 8 bits (an 'L' image), any other
    mode unchanged; a :class:`DataError` naming ``path`` when a value lies outside the mode's range."""
    full = _FULL_SCALE.get(picture.mode)
    if full is None:
        return picture
    values = np.asarray(picture).astype(np.float64)  # numpy reads the byte order of I;16B etc.
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > full or not np.isfinite(values).all():
        raise DataError(f"image file '{Path(path).absolute()}' ({picture.mode}) holds values from {low:g} to "
                        f"{high:g}; expected 0 to {full:g} ({'float' if full == 1.0 else '16-bit'} data, "
                        "scaled to 8 bits)")
    return Image.fromarray(np.round(values * (255 / full)).astype(np.uint8), "L")


def decode(path: Path | str, mode: str = "RGB") -> Image.Image:
    """Decode the image file ``path`` in full into a Pillow image of ``mode`` (8 bits per channel,
    see the module docstring); a :class:`DataError` naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as picture:
            picture.load()
            return eight_bit(picture, path).convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"image file '{Path(path).absolute()}' could not be decoded as an image "
                        f"({type(exc).__name__}: {exc}); expected a readable image file (png, jpg, bmp, webp)") from exc


def read_png(path: Path | str, mode: str = "RGB") -> torch.Tensor:
    """Read an image file as a uint8 (C, H, W) tensor in Pillow ``mode`` ('RGB': C = 3, 'L': 1,
    'RGBA': 4); :class:`DataError` naming the file when it cannot be read."""
    array = np.asarray(decode(path, mode), dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
