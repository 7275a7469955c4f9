"""PNG files <-> uint8 image tensors, with Pillow (torchvision's image I/O is deprecated since 0.29).

Tensors are ``torch.uint8`` of shape (C, H, W) with C = 1, 3 or 4, as torchvision's ``read_image`` /
``write_png`` used them; files are written atomically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_write
from .errors import BenchmarkError

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


def read_png(path: Path | str, mode: str = "RGB") -> torch.Tensor:
    """Read an image file as a uint8 (C, H, W) tensor in Pillow ``mode`` ('RGB': C = 3, 'L': 1,
    'RGBA': 4); :class:`BenchmarkError` naming the file when it cannot be read."""
    try:
        with Image.open(path) as picture:
            array = np.asarray(picture.convert(mode), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise BenchmarkError(f"{path}: cannot read as an image ({exc}); expected a PNG or JPEG file") from exc
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
