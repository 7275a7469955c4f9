"""Procedurally generated unpaired datasets: small, deterministic stand-ins for horse->zebra and
Cityscapes label->photo that need no download.

Every image is a pure function of ``(seed, dataset, split, side, index)``: each image draws from its
own ``numpy.random.Generator(PCG64)`` seeded with that tuple, so train and test, the two sides, and
the images within a side are independent streams, and enlarging ``n_train`` keeps the first images.
Drawing the random parameters is per image; rendering is vectorised over chunks of images with
torch. The arrays of a dataset are cached as one ``.npz`` in ``cache_dir``, keyed by a hash of
``identity``.

Bump ``GENERATOR_VERSION`` of a dataset whenever its images would change, so that caches (of the
data and of metric statistics keyed by ``identity``) are invalidated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.core.registry import register_dataset

from .base import LabelInfo, PairedDataset, Side, Split, TensorImageSet, UnpairedDataset
from .generated import GeneratedArrays

_SPLITS = ("train", "test")
_SIDES = ("A", "B")
# Pixels rendered at once (images x pixels): keeps the tensors of a chunk cache-sized.
_CHUNK_PIXELS = 2 ** 16


# --------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------

@dataclass
class SyntheticOptions:
    size: int = 64
    n_train: int = 400
    n_test: int = 100
    seed: int = 0

    def validate(self) -> str | None:
        if not isinstance(self.size, int) or not 16 <= self.size <= 256 or self.size % 4:
            return f"size must be an integer multiple of 4 between 16 and 256, got {self.size!r}"
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 100_000:
                return f"{name} must be a positive integer (at most 100000), got {value!r}"
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            return f"seed must be a non-negative integer, got {self.seed!r}"
        return None


class LabelledImageSet(TensorImageSet):
    """In-memory images with label maps stored compactly (uint8) and returned as int64."""

    def label(self, index: int) -> torch.Tensor:
        return super().label(index).long()

    def labels(self, indices: Sequence[int]) -> torch.Tensor:
        if self._labels is None:
            return super().labels(indices)
        return self._labels[torch.as_tensor(list(indices), dtype=torch.long)].long()


def image_rng(seed: int, dataset_tag: int, split: str, side: str, index: int) -> np.random.Generator:
    """The random stream of one image."""
    key = [int(seed), int(dataset_tag), _SPLITS.index(split), _SIDES.index(side), int(index)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))


def _pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (Y, X) in [0, 1], each (size, size); x right, y down."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return c[:, None].expand(size, size), c[None, :].expand(size, size)


def _up(grids: np.ndarray, size: int | tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Upsample low-resolution noise grids (B, C, h, w) to (B, C, size, size)."""
    t = torch.from_numpy(np.ascontiguousarray(grids, dtype=np.float32))
    if isinstance(size, int):
        size = (size, size)
    return F.interpolate(t, size=size, mode=mode, align_corners=False)


def _blur(images: torch.Tensor) -> torch.Tensor:
    """A light 3x3 binomial blur of (B, C, H, W), edges replicated."""
    k = torch.tensor([0.25, 0.5, 0.25])
    kernel = (k[:, None] * k[None, :]).expand(images.shape[1], 1, 3, 3).contiguous()
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel, groups=images.shape[1])


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def _stack(dicts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([d[k] for d in dicts]) for k in dicts[0]}


class _SyntheticDataset(GeneratedArrays, UnpairedDataset):
    """Generation and loading shared by the synthetic two-domain datasets."""

    DATASET_TAG: ClassVar[int]
    LABEL_INFO: ClassVar[LabelInfo]

    def split(self, split: Split, side: Side) -> LabelledImageSet:
        if split not in _SPLITS or side not in _SIDES:
            raise ValueError(f"split must be one of {_SPLITS} and side one of {_SIDES}, "
                             f"got {split!r}, {side!r}")
        arrays = self._load()
        images = torch.from_numpy(arrays[f"{split}{side}_images"])
        labels = torch.from_numpy(arrays[f"{split}{side}_labels"])
        return LabelledImageSet(images, labels, self.LABEL_INFO)

    # -- generation ---------------------------------------------------------------------------

    def generate(self) -> dict[str, np.ndarray]:
        """All four split/sides, freshly generated (no cache)."""
        out = {}
        for split in _SPLITS:
            n = self.options.n_train if split == "train" else self.options.n_test
            for side in _SIDES:
                images, labels = self._generate_side(split, side, n)
                out[f"{split}{side}_images"] = images
                out[f"{split}{side}_labels"] = labels
        return out

    def _generate_side(self, split: str, side: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        size = self.options.size
        chunk = max(1, _CHUNK_PIXELS // (size * size))
        images, labels = [], []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small cache-sized tensors: threading only adds overhead
        try:
            for start in range(0, n, chunk):
                params = [self._draw(self._image_rng(split, side, i), side)
                          for i in range(start, min(n, start + chunk))]
                img, lab = self._render(_stack(params), side)
                images.append(img)
                labels.append(lab)
        finally:
            torch.set_num_threads(threads)
        return np.concatenate(images), np.concatenate(labels)

    def _image_rng(self, split: str, side: str, index: int) -> np.random.Generator:
        """The random stream image ``index`` of ``split``/``side`` is drawn from."""
        return image_rng(self.options.seed, self.DATASET_TAG, split, side, index)

    def _draw(self, rng: np.random.Generator, side: str) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _render(self, params: dict[str, np.ndarray], side: str) -> tuple[np.ndarray, np.ndarray]:
        """-> images uint8 (B, 3, S, S), labels uint8 (B, S, S)."""
        raise NotImplementedError

    # -- cache --------------------------------------------------------------------------------

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        s = self.options.size
        shapes = {}
        for split in _SPLITS:
            n = self.options.n_train if split == "train" else self.options.n_test
            for side in _SIDES:
                shapes[f"{split}{side}_images"] = (n, 3, s, s)
                shapes[f"{split}{side}_labels"] = (n, s, s)
        return shapes


# --------------------------------------------------------------------------------------------
# synthetic_objects: plain horse-like objects on grass vs striped ones on savanna
# --------------------------------------------------------------------------------------------

# Parts of the animal (ellipses), in drawing-independent order.
_BODY, _CHEST, _RUMP, _NECK, _HEAD, _LEG0, _TAIL = 0, 1, 2, 3, 4, 5, 9
_N_PARTS = 10
# Coat colours of side A: bay, chestnut, dark brown, grey, dun, liver.
_COATS = np.array([[0.45, 0.28, 0.15], [0.60, 0.33, 0.16], [0.30, 0.19, 0.11],
                   [0.52, 0.51, 0.50], [0.68, 0.56, 0.40], [0.38, 0.26, 0.20]], np.float32)


def _animal(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Pose of a horse-like animal as ellipses: centres, unit axes, semi-axes, stripe frames."""
    s = rng.uniform(0.85, 1.12)                     # overall scale (image widths)
    d = 1.0 if rng.random() < 0.5 else -1.0          # facing right (+1) or left (-1)
    ground = rng.uniform(0.80, 0.93)                 # y of the hooves
    body_a = rng.uniform(0.20, 0.24) * s
    body_b = rng.uniform(0.085, 0.105) * s
    leg_len = rng.uniform(0.16, 0.20) * s
    cy = ground - leg_len - 0.45 * body_b
    cx = 0.5 - d * 0.07 * s + rng.uniform(-0.07, 0.07)
    tilt = rng.uniform(-0.07, 0.07)

    # Body frame: fx forward, fy down. Each part: centre, axis direction, semi-axes a (along) b.
    centre = np.zeros((_N_PARTS, 2))
    axis = np.tile([1.0, 0.0], (_N_PARTS, 1))
    semi = np.zeros((_N_PARTS, 2))
    semi[_BODY] = (body_a, body_b)
    centre[_CHEST] = (0.55 * body_a, 0.04 * body_b)
    semi[_CHEST] = (0.45 * body_a, 1.0 * body_b)
    centre[_RUMP] = (-0.60 * body_a, -0.06 * body_b)
    semi[_RUMP] = (0.45 * body_a, 1.08 * body_b)
    phi = rng.uniform(0.6, 1.1)                      # neck elevation
    neck_dir = np.array([math.cos(phi), -math.sin(phi)])
    neck_len = rng.uniform(0.18, 0.22) * s
    neck_base = np.array([0.72 * body_a, -0.45 * body_b])
    centre[_NECK] = neck_base + neck_dir * neck_len / 2
    axis[_NECK] = neck_dir
    semi[_NECK] = (neck_len / 2 + 0.03 * s, rng.uniform(0.042, 0.05) * s)
    psi = rng.uniform(0.35, 1.0)                     # head points forward and down
    head_dir = np.array([math.cos(psi), math.sin(psi)])
    centre[_HEAD] = neck_base + neck_dir * neck_len + head_dir * 0.055 * s
    axis[_HEAD] = head_dir
    semi[_HEAD] = (0.075 * s, 0.036 * s)
    leg_x = np.array([0.72, 0.52, -0.55, -0.75]) * body_a + rng.uniform(-0.04, 0.04, 4) * body_a
    swing = rng.uniform(-0.3, 0.3, 4)
    leg_total = leg_len + 0.25 * body_b
    leg_half_width = rng.uniform(0.024, 0.03) * s
    for k in range(4):
        direction = np.array([math.sin(swing[k]), math.cos(swing[k])])
        centre[_LEG0 + k] = np.array([leg_x[k], 0.2 * body_b]) + direction * leg_total / 2
        axis[_LEG0 + k] = direction
        semi[_LEG0 + k] = (leg_total / 2, leg_half_width)
    tau = rng.uniform(0.9, 1.35)
    tail_dir = np.array([-math.cos(tau), math.sin(tau)])
    centre[_TAIL] = np.array([-0.97 * body_a, -0.35 * body_b]) + tail_dir * 0.07 * s
    axis[_TAIL] = tail_dir
    semi[_TAIL] = (0.07 * s, 0.017 * s)

    # To image coordinates: mirror forward axis by d, rotate by tilt, translate to (cx, cy).
    rot = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]])
    mirror = np.array([d, 1.0])
    centre = (centre * mirror) @ rot.T + np.array([cx, cy])
    axis = (axis * mirror) @ rot.T
    # Stripes of chest and rump continue those of the body.
    stripe_centre, stripe_axis = centre.copy(), axis.copy()
    stripe_centre[[_CHEST, _RUMP]] = centre[_BODY]
    stripe_axis[[_CHEST, _RUMP]] = axis[_BODY]
    period_mult = np.array([1, 1, 1, 0.8, 0.6, 0.55, 0.55, 0.55, 0.55, 0.5])
    period = rng.uniform(0.05, 0.075) * s * period_mult
    warp = np.array([rng.uniform(0.1, 0.35), rng.uniform(0.12, 0.3) * s,
                     rng.uniform(0, 2 * math.pi)])
    # Affine maps from pixel (x, y, 1) to: u/a, v/b (ellipse frame), stripe phase, warp angle.
    affine = np.zeros((_N_PARTS, 4, 3))
    for k in range(_N_PARTS):
        (ax, ay), (cx_k, cy_k) = axis[k], centre[k]
        affine[k, 0] = np.array([ax, ay, -(cx_k * ax + cy_k * ay)]) / semi[k, 0]
        affine[k, 1] = np.array([-ay, ax, -(-cx_k * ay + cy_k * ax)]) / semi[k, 1]
        (ax, ay), (cx_k, cy_k) = stripe_axis[k], stripe_centre[k]
        affine[k, 2] = np.array([ax, ay, -(cx_k * ax + cy_k * ay)]) / period[k]
        affine[k, 3] = np.array([-ay, ax, -(-cx_k * ay + cy_k * ax)]) * 2 * math.pi / warp[1]
    return {
        "affine": affine.astype(np.float32), "semi": semi.astype(np.float32),
        "period": period.astype(np.float32), "warp": warp.astype(np.float32),
        "phase": rng.uniform(0, 1, _N_PARTS).astype(np.float32),
        "stripe_bias": np.float32(rng.uniform(-0.25, 0.15)),
        "body_c": np.array([cx, cy], np.float32), "body_b": np.float32(body_b),
        "shadow": np.array([cx, ground + 0.01, 1.3 * body_a, 0.035 * s,
                            rng.uniform(0.25, 0.45)], np.float32),
    }


@register_dataset("synthetic_objects")
class SyntheticObjects(_SyntheticDataset):
    """Object-texture pair like horse->zebra: plain objects vs striped objects on different backgrounds.

    Side A: one plain, smoothly shaded horse-like animal (ellipse body, neck, head, legs, tail;
    random pose, scale, position, facing and brown/grey coat) on green grass below a dark tree line.
    Side B: the same kind of animal covered with black-and-white stripes that follow each body part
    (random period, phase, waviness) on dry tan savanna under a blue sky band. Labels: the object
    mask (0 background, 1 object) of each image.
    """

    GENERATOR_VERSION = 1
    DATASET_TAG = 1
    LABEL_INFO = LabelInfo(kind="object_mask", class_names=("background", "object"))

    @dataclass
    class Options(SyntheticOptions):
        pass

    def _draw(self, rng: np.random.Generator, side: str) -> dict[str, np.ndarray]:
        s = self.options.size
        p = _animal(rng)
        p["coat"] = (_COATS[rng.integers(len(_COATS))] * rng.uniform(0.85, 1.15)
                     + rng.uniform(-0.04, 0.04, 3)).astype(np.float32)
        p["low"] = rng.standard_normal((1, 5, 5)).astype(np.float32)
        p["mid"] = rng.standard_normal((1, 10, 10)).astype(np.float32)
        p["leafy"] = rng.standard_normal((1, 20, 20)).astype(np.float32)
        p["edge"] = rng.standard_normal((1, 1, 10)).astype(np.float32)
        p["pixel"] = rng.standard_normal((3, s, s)).astype(np.float32) * 0.5
        if side == "A":
            p["ground"] = np.array([rng.uniform(0.20, 0.32), rng.uniform(0.42, 0.56),
                                    rng.uniform(0.10, 0.20)], np.float32)
            p["horizon"] = np.float32(rng.uniform(0.08, 0.22) if rng.random() < 0.75 else -0.1)
            p["streaks"] = rng.standard_normal((1, max(4, s // 8), s // 2)).astype(np.float32)
            p["sky_top"] = np.zeros(3, np.float32)
        else:
            p["ground"] = np.array([rng.uniform(0.72, 0.85), rng.uniform(0.60, 0.70),
                                    rng.uniform(0.33, 0.45)], np.float32)
            p["horizon"] = np.float32(rng.uniform(0.22, 0.38))
            p["streaks"] = rng.standard_normal((1, s // 2, max(4, s // 8))).astype(np.float32)
            p["sky_top"] = np.array([rng.uniform(0.32, 0.5), rng.uniform(0.55, 0.7),
                                     rng.uniform(0.85, 0.97)], np.float32)
        return p

    def _render(self, p: dict[str, np.ndarray], side: str) -> tuple[np.ndarray, np.ndarray]:
        s = self.options.size
        t = {k: torch.from_numpy(v) for k, v in p.items()}
        Y, X = _pixel_grid(s)

        # Background.
        low, mid = _up(p["low"], s), _up(p["mid"], s)
        leafy, streaks = _up(p["leafy"], s), _up(p["streaks"], s)
        pixel = t["pixel"]
        edge = _up(p["edge"], (1, s), mode="bilinear")[:, :, :1, :]          # (B,1,1,S)
        ground = t["ground"][:, :, None, None]
        horizon = t["horizon"][:, None, None, None]
        if side == "A":
            grass = ground * (1 + 0.16 * low + 0.08 * mid + 0.12 * streaks + 0.05 * pixel)
            grass = grass * (0.85 + 0.25 * Y)
            line = horizon + 0.03 * edge + 0.02 * mid                          # wavy tree line
            trees = torch.tensor([0.10, 0.22, 0.08])[:, None, None] * (1 + 0.3 * leafy + 0.1 * pixel)
            far = ((line - Y) * s + 0.5).clamp(0, 1)
            bg = grass * (1 - far) + trees * far
        else:
            soil = ground * (1 + 0.10 * low + 0.05 * mid + 0.10 * streaks + 0.05 * pixel)
            soil = soil * (0.9 + 0.15 * (Y - horizon).clamp(0, 1))
            sky_t = (Y / horizon.clamp(min=1e-3)).clamp(0, 1)
            sky_h = torch.tensor([0.82, 0.86, 0.92])[None, :, None, None]
            sky = t["sky_top"][:, :, None, None] * (1 - sky_t) + sky_h * sky_t + 0.01 * pixel
            bush_top = horizon - 0.012 - 0.012 * edge.abs()                    # distant scrub
            bush = (((Y - bush_top) * s + 0.5).clamp(0, 1)
                    * ((horizon + 0.015 - Y) * s + 0.5).clamp(0, 1))
            scrub = torch.tensor([0.42, 0.42, 0.28])[:, None, None] * (1 + 0.2 * leafy)
            sky_w = ((horizon - Y) * s + 0.5).clamp(0, 1)
            bg = soil * (1 - sky_w) + sky * sky_w
            bg = bg * (1 - bush) + scrub * bush

        # Shadow on the ground below the animal.
        sh = t["shadow"]
        r_sh = ((X - sh[:, 0, None, None]) / sh[:, 2, None, None]) ** 2 + \
               ((Y - sh[:, 1, None, None]) / sh[:, 3, None, None]) ** 2
        bg = bg * (1 - (sh[:, 4, None, None] * (1 - r_sh).clamp(0, 1))[:, None])

        # Animal: per part, one matrix product gives (u/a, v/b, stripe coordinate, warp angle)
        # at every pixel; u runs along the part's axis and v across it.
        coords = torch.stack([X.reshape(-1), Y.reshape(-1), torch.ones(s * s)])          # (3, N)
        rows = 2 if side == "A" else 4
        affine = t["affine"][:, :, :rows]                                           # (B,P,rows,3)
        b_, p_ = affine.shape[:2]
        frame = torch.matmul(affine.reshape(b_, p_ * rows, 3), coords).view(b_, p_, rows, -1)
        r2 = frame[:, :, 0] ** 2 + frame[:, :, 1] ** 2                             # (B,P,N)
        alpha = (0.5 - (r2.sqrt() - 1) * t["semi"][:, :, 1, None] * s).clamp(0, 1).amax(dim=1)
        inner, part = r2.min(dim=1)                                                 # innermost part
        dome = (1 - inner).clamp(min=0).sqrt().view(b_, 1, s, s)
        top_light = ((t["body_c"][:, 1, None, None] - Y)
                     / (2 * t["body_b"][:, None, None])).clamp(-1, 1)
        shade = 0.62 + 0.3 * dome.sqrt() + 0.12 * top_light[:, None]
        if side == "A":
            coat = t["coat"][:, :, None, None] * (1 + 0.03 * mid + 0.02 * pixel)
            obj = coat * shade
        else:
            pick = part[:, None, None, :].expand(-1, 1, 2, -1)
            stripe = torch.gather(frame[:, :, 2:], 1, pick)[:, 0]                       # (B,2,N)
            w = t["warp"]
            phase = (stripe[:, 0] + torch.gather(t["phase"], 1, part)
                     + w[:, 0, None] * torch.sin(stripe[:, 1] + w[:, 2, None]))
            wave = torch.sin(2 * math.pi * phase)
            # Stripe edges about one pixel wide whatever the period.
            sharp = (torch.gather(t["period"], 1, part) * s / 2.5).clamp(min=1.5)
            white = torch.sigmoid(2 * sharp * (wave + t["stripe_bias"][:, None])).view(b_, 1, s, s)
            light = torch.tensor([0.94, 0.93, 0.89])[:, None, None]
            dark = torch.tensor([0.07, 0.06, 0.06])[:, None, None]
            obj = (dark + (light - dark) * white) * shade * (1 + 0.02 * pixel)
        alpha = alpha.view(b_, 1, s, s)
        img = bg * (1 - alpha) + obj * alpha
        img = img + 0.012 * pixel
        labels = (alpha[:, 0] > 0.5).to(torch.uint8).numpy()
        return _to_uint8(img), labels


# --------------------------------------------------------------------------------------------
# synthetic_scenes: colour-coded street label maps vs photo-like street scenes
# --------------------------------------------------------------------------------------------

SCENE_CLASSES = ("road", "sidewalk", "building", "pole", "vegetation", "sky", "person", "car")
# Cityscapes colours of these classes (RGB), indexed by class id.
SCENE_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (153, 153, 153),
                 (107, 142, 35), (70, 130, 180), (220, 20, 60), (0, 0, 142))
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR = range(len(SCENE_CLASSES))

# Materials refine the rendering of side B inside a class (they are not labels).
_M_PLAIN, _M_WINDOW, _M_TYRE, _M_TRUNK, _M_LANE, _M_SKIN, _M_DARK, _M_LIGHT = range(8)
_FACADES = np.array([[0.74, 0.67, 0.55], [0.56, 0.55, 0.54], [0.60, 0.31, 0.22],
                     [0.46, 0.36, 0.29], [0.84, 0.79, 0.69], [0.50, 0.55, 0.62]], np.float32)
_CAR_PAINTS = np.array([[0.65, 0.10, 0.10], [0.15, 0.25, 0.60], [0.86, 0.86, 0.86],
                        [0.60, 0.62, 0.65], [0.10, 0.10, 0.12], [0.15, 0.35, 0.20],
                        [0.82, 0.70, 0.15]], np.float32)
_CLOTHES = np.array([[0.70, 0.15, 0.15], [0.15, 0.30, 0.65], [0.85, 0.85, 0.80],
                     [0.20, 0.20, 0.22], [0.80, 0.60, 0.20], [0.25, 0.50, 0.30]], np.float32)


def _street(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """A street label map with the materials, base colours and shading that side B renders."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    Y, X = c[:, None], c[None, :]
    half_px = 0.6 / size                               # thin things still cover a pixel
    lab = np.full((size, size), SKY, np.uint8)
    mat = np.zeros((size, size), np.uint8)
    col = np.zeros((size, size, 3), np.float32)
    shade = np.ones((size, size), np.float32)

    yh = rng.uniform(0.36, 0.50)                       # horizon
    xv = rng.uniform(0.35, 0.65)                       # vanishing point
    k_road = rng.uniform(0.75, 1.25)
    k_side = k_road * rng.uniform(1.25, 1.7)
    depth = np.maximum(Y - yh, 0.0)
    off = X - xv
    sun = 1.0 if rng.random() < 0.5 else -1.0          # which side of the street is lit

    # Buildings along the street (and a park where a gap falls below the horizon).
    x0 = 0.0
    while x0 < 1.0:
        x1 = x0 + rng.uniform(0.07, 0.2)
        xc = min((x0 + x1) / 2, 1.0)
        cols = (X >= x0) & (X < x1)
        top = yh - (0.06 + 0.75 * abs(xc - xv)) * rng.uniform(0.6, 1.3)
        facade = (_FACADES[rng.integers(len(_FACADES))] * rng.uniform(0.85, 1.12)
                  + rng.uniform(-0.03, 0.03, 3)).astype(np.float32)
        wx, wy = rng.uniform(0.025, 0.05), rng.uniform(0.035, 0.06)
        wfx, wfy = rng.uniform(0.4, 0.65), rng.uniform(0.4, 0.65)
        if rng.random() < 0.12:                       # gap: park below the horizon
            area = cols & (Y > yh)
            lab[area] = VEGETATION
        else:
            area = cols & (Y >= top)
            lab[area] = BUILDING
            col[area] = facade
            lit = 1.08 if (xc - xv) * sun < 0 else 0.82
            shade[area] = lit
            windows = area & (((X - x0) / wx) % 1.0 < wfx) & (((Y - top) / wy) % 1.0 > 1 - wfy) \
                & (Y > top + 0.02) & (X > x0 + 0.01) & (X < x1 - 0.01)
            mat[windows] = _M_WINDOW
        x0 = x1

    # Sidewalks and road in perspective, with lane marks.
    lower = Y > yh
    walk = lower & (np.abs(off) <= k_side * depth)
    lab[walk] = SIDEWALK
    mat[walk] = _M_PLAIN
    road = lower & (np.abs(off) <= k_road * depth)
    lab[road] = ROAD
    dash = rng.uniform(0.12, 0.25)
    centre_line = road & (np.abs(off) < 0.035 * k_road * depth + half_px / 2) & \
        ((dash / np.maximum(depth, 1e-3)) % 1.0 < 0.45) & (depth > 0.03)
    mat[centre_line] = _M_LANE
    if rng.random() < 0.7:
        mat[road & (np.abs(off) > 0.93 * k_road * depth) & (depth > 0.05)] = _M_LANE

    # Things standing on the ground, drawn far to near.
    things = []
    for _ in range(rng.integers(0, 4)):
        things.append(("tree", rng.uniform(yh + 0.04, min(yh + 0.3, 0.95))))
    for _ in range(rng.integers(0, 3)):
        things.append(("pole", rng.uniform(yh + 0.04, 0.95)))
    for _ in range(rng.integers(0, 3)):
        things.append(("person", rng.uniform(yh + 0.03, 0.98)))
    for _ in range(rng.integers(1, 5)):
        things.append(("car", rng.uniform(yh + 0.03, 1.05)))
    things.sort(key=lambda item: item[1])

    def box(xa, xb, ya, yb):
        if xb - xa < 2 * half_px:
            xm = (xa + xb) / 2
            xa, xb = xm - half_px, xm + half_px
        return (X >= xa) & (X < xb) & (Y >= ya) & (Y < yb)

    for kind, yg in things:
        m = k_road * (yg - yh) / 3.5                   # image units per metre at this depth
        side = 1.0 if rng.random() < 0.5 else -1.0
        on_walk = xv + side * (k_road + rng.uniform(0.3, 0.9) * (k_side - k_road)) * (yg - yh)
        if kind == "tree":
            trunk_h = rng.uniform(2.0, 3.0) * m
            trunk = box(on_walk - 0.18 * m, on_walk + 0.18 * m, yg - trunk_h, yg)
            lab[trunk] = VEGETATION
            mat[trunk] = _M_TRUNK
            shade[trunk] = 1.0
            radius = rng.uniform(1.6, 2.4) * m
            cx, cy = on_walk, yg - trunk_h - 0.6 * radius
            for _ in range(rng.integers(3, 6)):
                bx, by = cx + rng.uniform(-0.5, 0.5) * radius, cy + rng.uniform(-0.4, 0.3) * radius
                br = radius * rng.uniform(0.55, 0.85)
                dist = np.sqrt((X - bx) ** 2 + (Y - by) ** 2) / br
                blob = dist < 1
                lab[blob] = VEGETATION
                mat[blob] = _M_PLAIN
                lit = 1.15 - 0.35 * np.clip((Y - (cy - radius)) / (2 * radius), 0, 1)
                shade[blob] = np.broadcast_to(lit, blob.shape)[blob]
        elif kind == "pole":
            height = rng.uniform(5.5, 8.0) * m
            pole = box(on_walk - 0.12 * m, on_walk + 0.12 * m, yg - height, yg)
            arm_len = rng.uniform(0.8, 1.6) * m * -side
            arm = box(min(on_walk, on_walk + arm_len), max(on_walk, on_walk + arm_len),
                      yg - height, yg - height + max(0.15 * m, 2 * half_px))
            for part in (pole, arm):
                lab[part] = POLE
                mat[part] = _M_PLAIN
                lit = 1.0 - 0.15 * sun * np.sign(X - on_walk)
                shade[part] = np.broadcast_to(lit, part.shape)[part]
        elif kind == "person":
            height = rng.uniform(1.6, 1.9) * m
            px = on_walk
            legs = box(px - 0.2 * m, px + 0.2 * m, yg - 0.48 * height, yg)
            torso = box(px - 0.25 * m, px + 0.25 * m, yg - 0.84 * height, yg - 0.48 * height)
            head = np.sqrt((X - px) ** 2 + (Y - (yg - 0.92 * height)) ** 2) < max(0.11 * m, half_px)
            shirt = _CLOTHES[rng.integers(len(_CLOTHES))]
            for part, material in ((legs, _M_DARK), (torso, _M_PLAIN), (head, _M_SKIN)):
                lab[part] = PERSON
                mat[part] = material
                col[part] = shirt
                shade[part] = 1.0
        else:
            lane = xv + rng.uniform(-0.7, 0.7) * (k_road * (yg - yh) - 1.0 * m)
            paint = _CAR_PAINTS[rng.integers(len(_CAR_PAINTS))] * np.float32(rng.uniform(0.9, 1.1))
            hw = rng.uniform(0.85, 0.95) * m           # half width
            roof = rng.uniform(1.35, 1.6) * m
            belt = 0.9 * m
            body = box(lane - hw, lane + hw, yg - belt, yg - 0.12 * m)
            rel = np.clip((Y - (yg - roof)) / roof, 0, 1)
            cabin_hw = (0.65 + 0.18 * rel / max(1 - belt / roof, 1e-3)) * hw
            cabin = (np.abs(X - lane) < np.minimum(cabin_hw, hw)) & (Y >= yg - roof) & (Y < yg - belt)
            glass = (np.abs(X - lane) < np.minimum(cabin_hw, hw) - 0.1 * m) & \
                (Y >= yg - roof + 0.1 * m) & (Y < yg - belt)
            tyres = (box(lane - hw, lane - 0.55 * hw, yg - 0.35 * m, yg)
                     | box(lane + 0.55 * hw, lane + hw, yg - 0.35 * m, yg))
            lights = (box(lane - hw, lane - 0.7 * hw, yg - belt + 0.1 * m, yg - belt + 0.3 * m)
                      | box(lane + 0.7 * hw, lane + hw, yg - belt + 0.1 * m, yg - belt + 0.3 * m))
            whole = body | cabin | tyres
            lab[whole] = CAR
            mat[whole] = _M_PLAIN
            col[whole] = paint
            shade[whole] = np.broadcast_to(1.15 - 0.35 * rel, whole.shape)[whole]
            mat[glass] = _M_WINDOW
            mat[tyres & ~body] = _M_TYRE
            mat[tyres & (Y > yg - 0.12 * m)] = _M_TYRE
            mat[lights & body] = _M_LIGHT
    return {"label": lab, "material": mat, "colour": col.transpose(2, 0, 1).copy(), "shade": shade,
            "horizon": np.float32(yh), "vanish": np.float32(xv)}


@register_dataset("synthetic_scenes")
class SyntheticScenes(_SyntheticDataset):
    """Label->photo pair like Cityscapes: colour-coded label maps vs photo-like scenes rendered from independent label maps.

    Street label maps with the classes of ``SCENE_CLASSES``: sky above a skyline of buildings, a
    road in perspective towards a vanishing point with sidewalks on both sides, trees, poles,
    pedestrians and cars drawn far to near. Side A: the label maps in the flat Cityscapes colours
    of ``SCENE_PALETTE``. Side B: photo-like renderings of independently drawn label maps (noisy
    sky with clouds, facades with windows, asphalt with lane marks, leafy trees, painted cars with
    dark glass), with lighting, vignetting, slight blur and noise. Labels: the label map each image
    shows.
    """

    GENERATOR_VERSION = 1
    DATASET_TAG = 2
    LABEL_INFO = LabelInfo(kind="segmentation", class_names=SCENE_CLASSES)

    @dataclass
    class Options(SyntheticOptions):
        pass

    def _draw(self, rng: np.random.Generator, side: str) -> dict[str, np.ndarray]:
        s = self.options.size
        p = _street(rng, s)
        if side == "A":
            return {"label": p["label"]}
        p["low"] = rng.standard_normal((1, 6, 6)).astype(np.float32)
        p["mid"] = rng.standard_normal((1, 12, 12)).astype(np.float32)
        p["high"] = rng.standard_normal((1, 24, 24)).astype(np.float32)
        p["pixel"] = rng.standard_normal((3, s, s)).astype(np.float32) * 0.5
        p["sky"] = np.array([rng.uniform(0.25, 0.45), rng.uniform(0.45, 0.62),   # zenith
                             rng.uniform(0.75, 0.92), rng.uniform(0.72, 0.85),
                             rng.uniform(0.80, 0.90), rng.uniform(0.88, 0.96)],  # horizon
                            np.float32)
        p["cloud"] = np.array([rng.uniform(0.0, 0.9), rng.uniform(0.0, 1.0)], np.float32)
        p["asphalt"] = np.float32(rng.uniform(0.26, 0.38))
        p["pavement"] = np.array([0.62, 0.60, 0.56], np.float32) * np.float32(rng.uniform(0.85, 1.1))
        p["leaves"] = np.array([rng.uniform(0.15, 0.28), rng.uniform(0.32, 0.45),
                                rng.uniform(0.08, 0.16)], np.float32)
        # exposure, colour temperature
        p["light"] = np.array([rng.uniform(0.85, 1.1), rng.uniform(-1, 1)], np.float32)
        return p

    def _render(self, p: dict[str, np.ndarray], side: str) -> tuple[np.ndarray, np.ndarray]:
        labels = p["label"]
        if side == "A":
            palette = torch.tensor(SCENE_PALETTE, dtype=torch.uint8)
            img = palette[torch.from_numpy(labels).long()].permute(0, 3, 1, 2).contiguous()
            return img.numpy(), labels
        s = self.options.size
        Y, X = _pixel_grid(s)
        lab = torch.from_numpy(labels).long()[:, None]
        mat = torch.from_numpy(p["material"]).long()[:, None]
        col, shade = torch.from_numpy(p["colour"]), torch.from_numpy(p["shade"])[:, None]
        low, mid, high = _up(p["low"], s), _up(p["mid"], s), _up(p["high"], s)
        pixel = torch.from_numpy(p["pixel"])
        grey = pixel.mean(dim=1, keepdim=True)
        yh = torch.from_numpy(p["horizon"])[:, None, None, None]

        def rgb(values) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32)[None, :, None, None]

        sky_c = torch.from_numpy(p["sky"])
        t = (Y / yh).clamp(0, 1) ** 0.7
        sky = sky_c[:, :3, None, None] * (1 - t) + sky_c[:, 3:, None, None] * t
        cl = torch.from_numpy(p["cloud"])
        clouds = ((0.8 * low + 0.4 * mid - 1.2 + cl[:, 0, None, None, None]) * 1.5).clamp(0, 1) * \
            cl[:, 1, None, None, None]
        sky = sky * (1 - clouds) + 0.95 * clouds + 0.01 * pixel

        facade = col * (0.9 + 0.06 * mid + 0.07 * grey + 0.04 * high) * shade
        glass = rgb([0.10, 0.13, 0.18]) + 0.10 * (0.5 * mid + 0.5 * high).clamp(0, 1)
        building = torch.where(mat == _M_WINDOW, glass * shade, facade)

        asphalt = torch.from_numpy(p["asphalt"])[:, None, None, None]
        road = asphalt * (1 + 0.08 * mid + 0.07 * grey) * (0.9 + 0.2 * (Y - yh).clamp(0, 1))
        road = road.expand(-1, 3, -1, -1)
        road = torch.where(mat == _M_LANE, rgb([0.86, 0.86, 0.80]) + 0.03 * grey, road)
        walk = torch.from_numpy(p["pavement"])[:, :, None, None] * (1 + 0.05 * mid + 0.1 * grey)

        leaves = torch.from_numpy(p["leaves"])[:, :, None, None] * \
            (0.8 + 0.25 * high + 0.15 * mid + 0.2 * grey) * shade
        vegetation = torch.where(mat == _M_TRUNK, rgb([0.30, 0.21, 0.14]) * (1 + 0.1 * grey), leaves)
        pole = rgb([0.42, 0.43, 0.46]) * shade * (1 + 0.03 * grey)

        person = torch.where(mat == _M_SKIN, rgb([0.82, 0.62, 0.50]),
                             torch.where(mat == _M_DARK, rgb([0.16, 0.16, 0.22]), col))
        person = person * (1 + 0.05 * grey)

        paint = col * shade * (1 + 0.03 * grey)
        car_glass = rgb([0.08, 0.10, 0.14]) + 0.12 * (1 - shade).clamp(0, 1) + 0.05 * high.clamp(0, 1)
        car = torch.where(mat == _M_WINDOW, car_glass,
                          torch.where(mat == _M_TYRE, rgb([0.05, 0.05, 0.05]),
                                      torch.where(mat == _M_LIGHT, rgb([0.85, 0.12, 0.10]), paint)))

        img = torch.zeros(lab.shape[0], 3, s, s)
        for cls, layer in ((SKY, sky), (BUILDING, building), (ROAD, road), (SIDEWALK, walk),
                           (VEGETATION, vegetation), (POLE, pole), (PERSON, person), (CAR, car)):
            img = torch.where(lab == cls, layer.expand_as(img), img)

        light = torch.from_numpy(p["light"])
        warm = light[:, 1]
        tint = torch.stack([1 + 0.06 * warm, torch.ones_like(warm), 1 - 0.06 * warm], 1)
        img = img * light[:, :1, None, None] * tint[:, :, None, None]
        vignette = 1 - 0.35 * ((X - 0.5) ** 2 + (Y - 0.5) ** 2)
        img = _blur(img * vignette) + 0.015 * pixel
        return _to_uint8(img), labels


@register_dataset("synthetic_aligned_scenes")
class SyntheticAlignedScenes(SyntheticScenes, PairedDataset):
    """Aligned label->photo pairs like pix2pix's Cityscapes: each photo is rendered from the label map shown on the other side.

    The scenes, classes and renderer of ``synthetic_scenes``, but one street per pair index: image i
    of side A is the label map in the flat Cityscapes colours of ``SCENE_PALETTE`` and image i of side
    B the photo-like rendering of *the same* label map (same split, same index). Both sides carry that
    label map (``segmentation`` with ``SCENE_CLASSES``). Kind 'paired'.
    """

    GENERATOR_VERSION = 1
    DATASET_TAG = 4  # 3 is synthetic_seasons' (same key layout)
    kind = "paired"

    @dataclass
    class Options(SyntheticOptions):
        pass

    def _image_rng(self, split: str, side: str, index: int) -> np.random.Generator:
        """One stream per pair: both sides draw the same street (and side A ignores the photo's
        lighting and noise draws)."""
        return image_rng(self.options.seed, self.DATASET_TAG, split, "B", index)

    def _draw(self, rng: np.random.Generator, side: str) -> dict[str, np.ndarray]:
        return super()._draw(rng, "B")  # the full scene; side A's renderer uses only its label map
