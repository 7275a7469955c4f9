"""Image grids of a report: reading samples, nearest enlargement of small images, writing the grid
(PNG with Pillow, through :mod:`benchmark.core.image_io`)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..core.image_io import read_png, write_png


def nearest_factor(side: int, min_side: int = 128) -> int:
    """The integer factor that enlarges ``side`` pixels to at least ``min_side`` (1 if already)."""
    return max(1, -(-min_side // side))


def upscale_nearest(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(..., H, W) -> (..., H * factor, W * factor), each pixel repeated (no smoothing)."""
    return images.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2) if factor > 1 else images


def read_rgb(path: Path) -> torch.Tensor:
    """A sample image as a uint8 (3, H, W) tensor (alpha dropped, grey expanded)."""
    return read_png(path, mode="RGB")


def save_grid(image: torch.Tensor, path: Path) -> None:
    """Write a uint8 (C, H, W) grid as PNG, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(image, path)
