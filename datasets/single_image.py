"""Single-image datasets (kind ``single_image``): exactly one image per side, as CUT's
``SingleImageDataset`` requires (one file in ``trainA`` and one in ``trainB``).

* ``single_image_files``: any two image files named in the config (``path_a``: the source, e.g. a
  painting; ``path_b``: the target, e.g. a photo), read as RGB (``benchmark.core.image_io.decode``) at their own size (the
  official ``preprocess='none'`` at test time and ``zoom_and_patch``, which never resizes to
  ``load_size``) and resized (bilinear) so that each side is a multiple of 4 (the official
  ``__make_power_2(base=4)``). ``max_size > 0`` first scales an image down so its longer side is at
  most ``max_size`` (not in the official code; for large photos on small machines).
* ``synthetic_painting``: the embedded default, made procedurally and deterministically from a seed:
  a brush-stroke "painting" of a coast (sky, sea, a chalk cliff with an arch, a beach) and a
  photo-like image (smooth gradients, fine texture, sensor grain) of a *different* coast, as CUT's
  Monet painting -> Etretat photograph example. The painting's scene layout (``layout_a``, a label
  map) is kept for tests and inspection.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmark.core.errors import DataError
from benchmark.core.image_io import decode
from benchmark.core.registry import register_dataset
from benchmark.core.settings import path_setting

from .base import Dataset, Side

SIDES = ("A", "B")
SKY, SEA, CLIFF, BEACH, GRASS = range(5)
SCENE_CLASSES = ("sky", "sea", "cliff", "beach", "grass")
GENERATOR_VERSION = 1


class SingleImageDataset(Dataset):
    """Base of the single-image datasets: one uint8 (3, H, W) image per side, H and W multiples of 4."""

    kind: ClassVar[str] = "single_image"

    def image(self, side: Side) -> torch.Tensor:
        raise NotImplementedError

    def describe(self, side: Side) -> str:
        """Where the image of ``side`` comes from (for reports)."""
        return side


def check_side(side: str) -> None:
    if side not in SIDES:
        raise DataError(f"single-image dataset: side {side!r} does not exist; expected 'A' (source) or 'B' (target)")


def round_to_multiple(image: Image.Image, base: int = 4) -> Image.Image:
    """The official ``__make_power_2``: resize (bilinear) to the nearest multiple of ``base`` per side."""
    w, h = image.size
    nw, nh = int(round(w / base) * base), int(round(h / base) * base)
    return image if (nw, nh) == (w, h) else image.resize((nw, nh), Image.BILINEAR)


# --------------------------------------------------------------------------------------------------
# Two image files
# --------------------------------------------------------------------------------------------------
@dataclass
class SingleImageFilesOptions:
    path_a: str = path_setting()
    """The source image (translated), e.g. a painting."""
    path_b: str = path_setting()
    """The target image (whose appearance the output should take), e.g. a photo."""
    max_size: int = 0
    """0 = each image at its own size (official); else scale down so the longer side is at most this."""

    def validate(self):
        if not self.path_a or not self.path_b:
            return "path_a and path_b must both name an image file (the source and the target)"
        if self.max_size < 0 or 0 < self.max_size < 64:
            return f"max_size must be 0 (own size) or >= 64, got {self.max_size}"
        return None


@register_dataset("single_image_files")
class SingleImageFiles(SingleImageDataset):
    """One image per side from two files (a painting and a photo, for example)."""

    Options = SingleImageFilesOptions

    def __init__(self, options: SingleImageFilesOptions, cache_dir):
        super().__init__(options, cache_dir)
        self.paths = {"A": Path(options.path_a), "B": Path(options.path_b)}
        self._images: dict[str, torch.Tensor] = {}

    def image(self, side: Side) -> torch.Tensor:
        check_side(side)
        if side not in self._images:
            self._images[side] = self._read(self.paths[side], side)
        return self._images[side]

    def _check_file(self, side: str) -> Path:
        path = self.paths[side]
        if not path.is_file():
            raise DataError(f"single_image_files: the image of side {side} ('{path}') does not exist; expected "
                            "an image file (path_a: the source, path_b: the target)")
        return path

    def _read(self, path: Path, side: str) -> torch.Tensor:
        picture = decode(self._check_file(side))
        if self.options.max_size and max(picture.size) > self.options.max_size:
            scale = self.options.max_size / max(picture.size)
            picture = picture.resize((max(1, round(picture.size[0] * scale)),
                                      max(1, round(picture.size[1] * scale))), Image.BICUBIC)
        array = np.asarray(round_to_multiple(picture), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()

    def source_files(self) -> list[Path]:
        return [self.paths[side] for side in SIDES]

    def describe(self, side: Side) -> str:
        return str(self.paths[side])

    @property
    def identity(self) -> str:
        digests = []  # the content, not where the file lies; a missing file is a DataError, as when read
        for side in SIDES:
            digests.append(f"{side}@{hashlib.sha256(self._check_file(side).read_bytes()).hexdigest()[:16]}")
        return f"single_image_files/v2/{'/'.join(digests)}/max_size={self.options.max_size}"


# --------------------------------------------------------------------------------------------------
# The procedural painting / photo pair
# --------------------------------------------------------------------------------------------------
@dataclass
class SyntheticPaintingOptions:
    width: int = 320
    height: int = 224
    seed: int = 0
    strokes_per_pixel: float = 0.09
    """Brush strokes of the painting per pixel."""

    def validate(self):
        if self.width % 4 or self.height % 4 or min(self.width, self.height) < 64:
            return f"width and height must be multiples of 4 and at least 64, got {self.width} x {self.height}"
        if not 0.0 < self.strokes_per_pixel <= 1.0:
            return f"strokes_per_pixel must be in (0, 1], got {self.strokes_per_pixel}"
        return None


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a ``cells``-wide random grid, bicubically enlarged."""
    ch = max(2, round(cells * height / width))
    grid = torch.from_numpy(rng.standard_normal((1, 1, ch, cells)).astype(np.float32))
    return F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)[0, 0].numpy()


def fractal_noise(rng: np.random.Generator, height: int, width: int, octaves: int = 5) -> np.ndarray:
    """Sum of smooth noise at doubling frequencies with halving amplitudes, normalised to std 1."""
    out = sum(0.5 ** k * smooth_noise(rng, height, width, 4 * 2 ** k) for k in range(octaves))
    return out / (out.std() + 1e-8)


@dataclass
class CoastLayout:
    """A coastal scene: per-pixel class ids and the geometry the renderers shade with."""

    labels: np.ndarray
    """int64 (H, W) of SKY, SEA, CLIFF, BEACH, GRASS."""
    horizon: float
    sun: tuple[float, float]


def coast_layout(rng: np.random.Generator, height: int, width: int, cliff_left: bool) -> CoastLayout:
    """Sky above a horizon, sea below it, a chalk cliff with a grassy top and a sea arch entering from
    one side, and a beach along the bottom with a wavy edge."""
    h, w = height, width
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    xs = x if cliff_left else (w - 1 - x)            # distance from the cliff's side
    horizon = h * rng.uniform(0.42, 0.55)
    labels = np.where(y < horizon, SKY, SEA)
    beach_line = h * rng.uniform(0.78, 0.88) + h * 0.03 * np.sin(x / w * rng.uniform(4, 9) + rng.uniform(0, 6))
    labels = np.where(y > beach_line, BEACH, labels)
    # cliff: flat top, then a steep seaward face; an arch at its foot
    top = h * rng.uniform(0.2, 0.32)
    reach = w * rng.uniform(0.35, 0.55)              # seaward edge at the top
    slope = rng.uniform(0.15, 0.45)                  # the face leans out as it goes down
    face = reach + slope * (y - top) + w * 0.02 * np.sin(y / h * 11 + rng.uniform(0, 6))
    top_edge = top + h * 0.02 * np.sin(xs / w * 7 + rng.uniform(0, 6)) + np.maximum(0, xs - 0.7 * reach) * 0.25
    cliff = (y >= top_edge) & (xs <= face) & (y <= beach_line + h * 0.02)
    grass = cliff & (y < top_edge + h * rng.uniform(0.025, 0.045))
    arch_cx, arch_cy = reach * rng.uniform(0.72, 0.85) + slope * (beach_line.mean() - top) * 0.8, beach_line.mean()
    arch = ((xs - arch_cx) / (w * rng.uniform(0.06, 0.09))) ** 2 + ((y - arch_cy) / (h * rng.uniform(0.18, 0.26))) ** 2 < 1
    cliff &= ~arch
    labels = np.where(cliff, CLIFF, labels)
    labels = np.where(grass & cliff, GRASS, labels)
    sun_x = rng.uniform(0.55, 0.85) * w
    sun = (sun_x if cliff_left else w - 1 - sun_x, horizon * rng.uniform(0.25, 0.6))
    return CoastLayout(labels.astype(np.int64), float(horizon), sun)


def _mix(a, b, t):
    t = np.clip(t, 0.0, 1.0)[..., None]
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


def render_photo(rng: np.random.Generator, layout: CoastLayout) -> np.ndarray:
    """A photo-like rendering in [0, 1] (H, W, 3): smooth sky with soft clouds and a sun glow, sea
    with horizontal ripples, textured chalk with strata, grass, pebble beach, then lens vignetting
    and sensor grain."""
    lab = layout.labels
    h, w = lab.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t_sky = y / max(layout.horizon, 1)
    img = _mix((0.30, 0.50, 0.80), (0.78, 0.86, 0.93), t_sky)
    clouds = np.clip(smooth_noise(rng, h, w, 6) + 0.5 * smooth_noise(rng, h, w, 14) - 0.3, 0, 1)
    img = _mix(img, (0.95, 0.95, 0.97), 0.8 * clouds * (y < layout.horizon))
    glow = np.exp(-((x - layout.sun[0]) ** 2 + (y - layout.sun[1]) ** 2) / (0.02 * w * w))
    img = img + 0.35 * glow[..., None] * np.array([1.0, 0.9, 0.7], np.float32)
    depth = np.clip((y - layout.horizon) / (h - layout.horizon), 0, 1)
    ripples = 0.5 + 0.5 * np.sin(y * (0.9 + 1.5 * depth) + 2.0 * smooth_noise(rng, h, w, 10))
    sea = _mix((0.18, 0.38, 0.48), (0.08, 0.25, 0.30), depth) * (0.88 + 0.2 * ripples[..., None])
    sea = sea + 0.25 * glow[..., None] * (ripples[..., None] > 0.8)
    img = np.where((lab == SEA)[..., None], sea, img)
    rock_tex = fractal_noise(rng, h, w)
    strata = 0.5 + 0.5 * np.sin(y * 0.35 + 1.5 * smooth_noise(rng, h, w, 8))
    chalk = np.array([0.86, 0.84, 0.76], np.float32) * (0.85 + 0.08 * rock_tex[..., None] + 0.07 * strata[..., None])
    shade = np.clip(0.75 + 0.25 * smooth_noise(rng, h, w, 5), 0.55, 1.0)
    img = np.where((lab == CLIFF)[..., None], chalk * shade[..., None], img)
    grass = np.array([0.30, 0.46, 0.20], np.float32) * (0.9 + 0.12 * rock_tex[..., None])
    img = np.where((lab == GRASS)[..., None], grass, img)
    pebbles = fractal_noise(rng, h, w, octaves=6)
    beach = np.array([0.62, 0.58, 0.52], np.float32) * (0.85 + 0.1 * pebbles[..., None])
    img = np.where((lab == BEACH)[..., None], beach, img)
    vignette = 1.0 - 0.18 * (((x - w / 2) / w) ** 2 + ((y - h / 2) / h) ** 2) * 2
    img = img * vignette[..., None] + rng.normal(0, 0.012, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


def render_painting(rng: np.random.Generator, layout: CoastLayout, strokes_per_pixel: float) -> np.ndarray:
    """An impressionist rendering in [0, 1] (H, W, 3): a blurred under-painting in a warmer, more
    saturated palette, covered by short straight brush strokes (one flat colour each: the palette
    colour under the stroke's centre, jittered), horizontal in sky and sea, steep on the cliff."""
    lab = layout.labels
    h, w = lab.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t_sky = y / max(layout.horizon, 1)
    base = _mix((0.55, 0.62, 0.85), (0.96, 0.82, 0.62), t_sky)                # warm sunset sky
    glow = np.exp(-((x - layout.sun[0]) ** 2 + (y - layout.sun[1]) ** 2) / (0.01 * w * w))
    base = base + 0.4 * glow[..., None] * np.array([1.0, 0.7, 0.3], np.float32)
    depth = np.clip((y - layout.horizon) / (h - layout.horizon), 0, 1)
    base = np.where((lab == SEA)[..., None], _mix((0.35, 0.55, 0.70), (0.15, 0.35, 0.55), depth), base)
    cliff = _mix((0.95, 0.80, 0.62), (0.70, 0.55, 0.60), np.clip(0.5 + 0.5 * smooth_noise(rng, h, w, 5), 0, 1))
    base = np.where((lab == CLIFF)[..., None], cliff, base)
    base = np.where((lab == GRASS)[..., None], np.array([0.45, 0.60, 0.25], np.float32), base)
    base = np.where((lab == BEACH)[..., None], np.array([0.85, 0.70, 0.45], np.float32), base)
    base = np.clip(base, 0, 1)
    under = F.avg_pool2d(torch.from_numpy(base).permute(2, 0, 1)[None], 5, 1, 2,
                         count_include_pad=False)[0].permute(1, 2, 0).numpy()
    canvas = under.copy()
    count = int(strokes_per_pixel * h * w)
    centres = rng.uniform(0, 1, (count, 2)) * np.array([w - 1, h - 1])
    lengths = rng.uniform(4.0, 11.0, count)
    widths = rng.uniform(1.5, 3.2, count)
    jitter = rng.normal(0, 0.06, (count, 3))
    bend = rng.normal(0, 0.25, count)
    for (cx, cy), length, width, dc, db in zip(centres, lengths, widths, jitter, bend):
        cls = lab[int(cy), int(cx)]
        angle = (math.pi / 2 + db if cls in (CLIFF,) else db * 0.5)
        ux, uy = math.cos(angle), math.sin(angle)
        r = int(length / 2 + width) + 1
        x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
        y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
        px, py = x[y0:y1, x0:x1] - cx, y[y0:y1, x0:x1] - cy
        along, across = px * ux + py * uy, -px * uy + py * ux
        mask = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
        canvas[y0:y1, x0:x1][mask] = np.clip(base[int(cy), int(cx)] + dc, 0, 1)
    return canvas


@register_dataset("synthetic_painting")
class SyntheticPainting(SingleImageDataset):
    """The embedded single-image pair: a brush-stroke painting of a coast (A) and a photo-like
    image of another coast (B), procedural and deterministic."""

    Options = SyntheticPaintingOptions

    def __init__(self, options: SyntheticPaintingOptions, cache_dir):
        super().__init__(options, cache_dir)
        self._images: dict[str, torch.Tensor] = {}
        self.layouts: dict[str, CoastLayout] = {}

    def _make(self, side: str) -> torch.Tensor:
        o = self.options
        rng = np.random.default_rng([o.seed, GENERATOR_VERSION, SIDES.index(side)])
        layout = coast_layout(rng, o.height, o.width, cliff_left=side == "A")
        self.layouts[side] = layout
        pixels = render_painting(rng, layout, o.strokes_per_pixel) if side == "A" else render_photo(rng, layout)
        array = np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    def image(self, side: Side) -> torch.Tensor:
        check_side(side)
        if side not in self._images:
            self._images[side] = self._make(side)
        return self._images[side]

    def layout(self, side: Side) -> np.ndarray:
        """The scene's label map (``SCENE_CLASSES``) of ``side``."""
        self.image(side)
        return self.layouts[side].labels

    def describe(self, side: Side) -> str:
        return ("procedural brush-stroke painting" if side == "A" else "procedural photo-like image") + \
            f" ({self.options.width} x {self.options.height}, seed {self.options.seed})"

    @property
    def identity(self) -> str:
        o = self.options
        return f"synthetic_painting/v{GENERATOR_VERSION}/{o.width}x{o.height}/seed={o.seed}/strokes={o.strokes_per_pixel}"
