"""SinCUT's zoom-and-patch sampling of training crops from one image (CUT's
``data/singleimage_dataset.py`` with ``preprocess='zoom_and_patch'``, ``data/base_dataset.py``
``__random_zoom`` and ``__patch``).

One crop, as the official transform makes it:

1. zoom: resize the whole image (PIL bilinear) to ``max(crop, round(W * zx)) x max(crop, round(H * zy))``
   with ``zx, zy ~ U(1 / random_scale_max, 1)`` drawn independently per axis;
2. patch: lay a grid of ``nw x nh = (W' // crop) x (H' // crop)`` cells over the zoomed image at a
   random offset ``(sx, sy)`` in ``[0, W' - nw * crop] x [0, H' - nh * crop]`` and cut cell ``c``
   (column ``c // nh``, row ``c % nh``);
3. flip horizontally with probability 0.5.

The official dataset means the zoom to be shared within a batch and the cells not to repeat ("the
negative samples should not come from the same location"): it tiles one zoom per batch over
consecutive indices and draws the cells from a permutation of the indices. Its data loader shuffles
the indices (``serial_batches`` is off), so in practice every crop gets its own zoom, offset and an
effectively random cell, and two crops of a batch -- each other's negatives -- can be the same cell.
``mode='intended'`` (default) does what the code means:

* one zoom and one grid offset per batch (so the cells of a batch tile the zoomed image without overlap);
* the cells of a batch are distinct: they are the first ``batch_size`` entries of a sequence of
  random permutations of the grid's cells, so no cell repeats until every cell has been used (only
  a grid with fewer cells than the batch repeats any);
* a flip per crop.

``mode='official'`` draws the zoom, the offset and the cell independently per crop (what the shuffled
official loader does). Either way batch ``step`` is a pure function of (seed, side, step), so a
resumed run sees exactly the batches of an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from benchmark.core.errors import ConfigError

from ..data import seeded_generator

SamplerMode = Literal["intended", "official"]
_PURPOSE = 40
"""Key part of the sampler's generators (other tasks use other small numbers)."""


@dataclass(frozen=True)
class CropPlan:
    """Where one crop comes from: the zoomed size, the grid and the chosen cell, and the flip."""

    zoomed_size: tuple[int, int]
    """(W', H') of the zoomed image."""
    grid: tuple[int, int]
    """(nw, nh) cells."""
    offset: tuple[int, int]
    """(sx, sy) of the grid."""
    cell: int
    flip: bool
    crop: int = 64

    @property
    def position(self) -> tuple[int, int]:
        """(x, y) of the crop's top-left corner in the zoomed image."""
        nh = self.grid[1]
        return self.offset[0] + (self.cell // nh) * self.crop, self.offset[1] + (self.cell % nh) * self.crop


def zoomed_size(width: int, height: int, zoom: tuple[float, float], crop: int) -> tuple[int, int]:
    """``__random_zoom``: ``(max(crop, round(W zx)), max(crop, round(H zy)))`` (Python rounding)."""
    return max(crop, int(round(width * zoom[0]))), max(crop, int(round(height * zoom[1])))


def _randint(high: int, g: torch.Generator) -> int:
    """Uniform in [0, high)."""
    return int(torch.randint(high, (1,), generator=g))


class ZoomAndPatch:
    """Batches of ``batch_size`` crops of ``crop_size`` from one uint8 (3, H, W) image."""

    def __init__(self, image: torch.Tensor, crop_size: int, batch_size: int, random_scale_max: float,
                 flip: bool, seed: int, side: int, mode: SamplerMode = "intended"):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ConfigError(f"zoom-and-patch: expected a uint8 image (3, H, W), got {image.dtype} "
                              f"{tuple(image.shape)}")
        if random_scale_max < 1:
            raise ConfigError(f"random_scale_max must be >= 1, got {random_scale_max}")
        if mode not in ("intended", "official"):
            raise ConfigError(f"sampler mode must be 'intended' or 'official', got {mode!r}")
        self.array = image.permute(1, 2, 0).contiguous().numpy()
        self.height, self.width = image.shape[1:]
        self.crop, self.batch_size, self.scale_max = crop_size, batch_size, random_scale_max
        self.flip, self.seed, self.side, self.mode = flip, seed, side, mode

    # -- the plan of a batch -----------------------------------------------------------------------
    def _zoom(self, g: torch.Generator) -> tuple[float, float]:
        low = 1.0 / self.scale_max
        u = torch.rand(2, generator=g, dtype=torch.float64)
        return float(low + (1 - low) * u[0]), float(low + (1 - low) * u[1])

    def _grid(self, size: tuple[int, int], g: torch.Generator) -> tuple[tuple[int, int], tuple[int, int]]:
        nw, nh = size[0] // self.crop, size[1] // self.crop
        offset = (_randint(size[0] - nw * self.crop + 1, g), _randint(size[1] - nh * self.crop + 1, g))
        return (nw, nh), offset

    def plan(self, step: int) -> list[CropPlan]:
        """The crops of batch ``step`` (a pure function of seed, side and step)."""
        g = seeded_generator(self.seed, _PURPOSE, self.side, step)
        b = self.batch_size
        if self.mode == "intended":
            size = zoomed_size(self.width, self.height, self._zoom(g), self.crop)
            grid, offset = self._grid(size, g)
            n = grid[0] * grid[1]
            cells = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(b / n))])[:b].tolist()
            flips = (torch.rand(b, generator=g) < 0.5).tolist()
            return [CropPlan(size, grid, offset, c, self.flip and f, self.crop) for c, f in zip(cells, flips)]
        plans = []
        for _ in range(b):
            size = zoomed_size(self.width, self.height, self._zoom(g), self.crop)
            grid, offset = self._grid(size, g)
            cell = _randint(grid[0] * grid[1], g)
            flip = bool(torch.rand((), generator=g) < 0.5)
            plans.append(CropPlan(size, grid, offset, cell, self.flip and flip, self.crop))
        return plans

    # -- the pixels -------------------------------------------------------------------------------
    def zoomed(self, size: tuple[int, int]) -> np.ndarray:
        """The image resized to ``size`` = (W', H') with PIL's bilinear filter (the official ``method``)."""
        if size == (self.width, self.height):
            return self.array
        return np.asarray(Image.fromarray(self.array).resize(size, Image.BILINEAR))

    def batch(self, step: int) -> torch.Tensor:
        """uint8 (B, 3, crop, crop) crops of batch ``step``."""
        crops, cache = [], {}
        for p in self.plan(step):
            if p.zoomed_size not in cache:
                cache = {p.zoomed_size: self.zoomed(p.zoomed_size)}
            x, y = p.position
            crop = cache[p.zoomed_size][y:y + self.crop, x:x + self.crop]
            if p.flip:
                crop = crop[:, ::-1]
            crops.append(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1))
        return torch.stack(crops)
