"""Image grids of a report: reading samples, nearest enlargement of small images, labels drawn into
the grid (row names, column titles), writing it (PNG with Pillow, through :mod:`benchmark.core.image_io`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
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


MARGIN = 6
"""Pixels between a label and the tiles, and around the labels."""


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def annotate(image: torch.Tensor, rows: list[tuple[str, int, int]], columns: list[tuple[str, int, int]],
             font_size: int = 14) -> torch.Tensor:
    """``image`` (uint8 (3, H, W)) with a white margin on the left holding each row's label, centred
    on its span of pixel rows (label, y0, y1), and one on top holding each column's title, centred on
    its span of pixel columns (title, x0, x1), in black."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str) -> tuple[int, int]:
        left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
        return right - left, bottom - top

    left = max((text_size(t)[0] for t, _, _ in rows), default=-2 * MARGIN) + 2 * MARGIN
    top = max((text_size(t)[1] for t, _, _ in columns), default=-2 * MARGIN) + 2 * MARGIN
    height, width = image.shape[-2:]
    placed = [(title, max(x0, (x0 + x1 - text_size(title)[0]) // 2)) for title, x0, x1 in columns]
    # a title wider than its column may run past the image's right edge: widen the canvas for it
    right = max([width, *(x + text_size(title)[0] + MARGIN for title, x in placed)])
    canvas = Image.new("RGB", (left + right, top + height), "white")
    canvas.paste(Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()), (left, top))
    draw = ImageDraw.Draw(canvas)
    for title, x in placed:
        draw.text((left + x, MARGIN), title, fill="black", font=font)
    for label, y0, y1 in rows:
        _, th = text_size(label)
        draw.text((MARGIN, top + (y0 + y1 - th) // 2), label, fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def labelled_grid(cells: list[list[torch.Tensor]], row_labels: list[str], column_titles: list[str],
                  gap: int = 4, min_tile: int = 128) -> torch.Tensor:
    """Tiles (uint8 (3, h, w), all the same size) in rows, enlarged (nearest) to at least ``min_tile``
    pixels, white ``gap`` between them, with ``row_labels`` left of each row and ``column_titles``
    above each column: a reader needs no caption to know what each row and column is."""
    h, w = cells[0][0].shape[-2:]
    factor = nearest_factor(min(h, w), min_tile)
    h, w = h * factor, w * factor
    columns = max(len(r) for r in cells)
    grid = torch.full((3, len(cells) * (h + gap) - gap, columns * (w + gap) - gap), 255, dtype=torch.uint8)
    for r, row in enumerate(cells):
        for c, tile in enumerate(row):
            grid[:, r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = upscale_nearest(tile, factor)
    return annotate(grid, [(t, r * (h + gap), r * (h + gap) + h) for r, t in enumerate(row_labels)],
                    [(t, c * (w + gap), c * (w + gap) + w) for c, t in enumerate(column_titles)],
                    font_size=max(12, min(20, w // 9)))


def target_examples(suite, dataset, count: int) -> list[torch.Tensor]:
    """The first ``count`` test images of the dataset's target side (B), to show what the outputs
    should look like; none when the dataset cannot be read now (e.g. its folder moved since the runs)."""
    from ..core.errors import BenchmarkError
    try:
        images = dataset.cls(dataset.options, suite.cache_dir / "datasets").split("test", "B")
        return list(images.images(range(min(count, len(images)))))
    except (BenchmarkError, OSError, ValueError):
        return []
