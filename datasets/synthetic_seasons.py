"""``synthetic_seasons``: procedurally generated landscapes restyled by season, a small deterministic
stand-in for the Seasons / Weather multi-domain datasets (Hneg-SRC Table 2) that needs no download.

Every image is a landscape with a known layout (its label map, classes ``SEASON_CLASSES``): sky
above a mountain ridge of one to three peaks, the ground below the horizon, often a lake, and
two to six conifers or round-crowned trees drawn far to near, their size following the perspective.
The domains restyle such scenes:

* ``summer``: deep blue sky, few clouds, green grass and trees, blue water, bare rock with at most
  tiny snow caps;
* ``autumn``: paler, cloudier sky, dry yellow-brown ground with fallen-leaf speckles, orange / red /
  yellow crowns (conifers stay green), dark water;
* ``winter``: grey overcast sky, snow-covered ground and mountains, frozen pale water, bare
  see-through crowns and snow-dusted conifers;
* ``spring``: light sky with puffy clouds, fresh green ground with flower speckles, pink / white
  blossoms or light-green crowns, snow caps on the peaks.

Within a domain, colours, cloud cover and texture vary per image, the ground's colour is drawn
between two palettes of the season (summer: green or deep green; autumn: yellow-brown or red-brown;
winter: white or bluish snow; spring: fresh or yellow green, with more flowers than in version 1),
and every image has its own lighting, drawn alike in every domain: a time of day from a cool blue
hour to a warm golden hour (colour temperature +-22 %), an exposure (0.78 - 1.12) and a haze. These
are the "styles" a multi-modal translator's style codes can pick (version 1 varied the lighting by
+-5 % only: every image of a domain had nearly one look). Layouts are drawn independently of the
domain and independently per image: the domains are unpaired.

Each image is a pure function of ``(seed, domain, split, index)`` (its own ``numpy`` PCG64 stream),
so enlarging ``n_train`` keeps the first images and the domains, splits and images are independent
streams. The arrays are cached as one ``.npz`` in ``cache_dir`` keyed by a hash of ``identity``; bump
``GENERATOR_VERSION`` whenever the images would change.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.core.registry import register_dataset

from .base import LabelInfo
from .generated import GeneratedArrays
from .multidomain import SPLITS, MultiDomainDataset, MultiSplit
from .synthetic import LabelledImageSet

SEASON_CLASSES = ("sky", "mountain", "ground", "water", "tree")
SKY, MOUNTAIN, GROUND, WATER, TREE = range(len(SEASON_CLASSES))
SEASON_DOMAINS = ("autumn", "spring", "summer", "winter")
"""Default domains, sorted by name as StarGAN v2 orders domain folders."""
SEASON_LABEL_INFO = LabelInfo(kind="segmentation", class_names=SEASON_CLASSES)

_DATASET_TAG = 3
_M_CROWN, _M_TRUNK = 1, 2
_CONIFER, _ROUND = 0, 1

# Base colours per domain (RGB in [0, 1]); each image jitters them.
_STYLE = {
    "summer": dict(sky_top=(0.18, 0.42, 0.85), sky_hor=(0.62, 0.79, 0.95), cloud=(0.0, 0.45),
                   cloud_rgb=(0.97, 0.97, 0.98), rock=(0.43, 0.46, 0.52), foot=(0.22, 0.40, 0.20),
                   snow_free=(0.85, 1.0), ground=(0.30, 0.56, 0.17), ground_alt=(0.18, 0.42, 0.12),
                   water=(0.14, 0.36, 0.62),
                   conifer=(0.07, 0.27, 0.10), crowns=((0.14, 0.42, 0.11), (0.20, 0.48, 0.14)),
                   trunk=(0.30, 0.20, 0.12)),
    "autumn": dict(sky_top=(0.36, 0.50, 0.72), sky_hor=(0.82, 0.78, 0.70), cloud=(0.25, 0.75),
                   cloud_rgb=(0.86, 0.85, 0.84), rock=(0.46, 0.41, 0.38), foot=(0.55, 0.36, 0.16),
                   snow_free=(0.80, 0.97), ground=(0.62, 0.48, 0.20), ground_alt=(0.56, 0.26, 0.12),
                   water=(0.17, 0.27, 0.37),
                   conifer=(0.10, 0.26, 0.12),
                   crowns=((0.86, 0.44, 0.10), (0.72, 0.16, 0.08), (0.90, 0.72, 0.16)),
                   trunk=(0.28, 0.19, 0.12), speckle=(0.80, 0.32, 0.08), speckles=(0.04, 0.14)),
    "winter": dict(sky_top=(0.48, 0.54, 0.64), sky_hor=(0.72, 0.75, 0.80), cloud=(0.35, 0.85),
                   cloud_rgb=(0.84, 0.85, 0.87), rock=(0.34, 0.36, 0.41), foot=(0.66, 0.70, 0.78),
                   snow_free=(0.05, 0.35), ground=(0.90, 0.93, 0.97), ground_alt=(0.74, 0.82, 0.96),
                   water=(0.70, 0.80, 0.88),
                   conifer=(0.08, 0.20, 0.12), crowns=((0.34, 0.29, 0.26), (0.40, 0.35, 0.31)),
                   trunk=(0.24, 0.19, 0.16)),
    "spring": dict(sky_top=(0.33, 0.60, 0.93), sky_hor=(0.74, 0.88, 0.97), cloud=(0.15, 0.60),
                   cloud_rgb=(1.0, 1.0, 1.0), rock=(0.45, 0.50, 0.58), foot=(0.40, 0.62, 0.30),
                   snow_free=(0.55, 0.80), ground=(0.50, 0.74, 0.30), ground_alt=(0.64, 0.80, 0.34),
                   water=(0.24, 0.52, 0.72),
                   conifer=(0.11, 0.35, 0.14),
                   crowns=((0.96, 0.70, 0.80), (0.97, 0.90, 0.92), (0.46, 0.74, 0.26)),
                   trunk=(0.33, 0.23, 0.15), speckle=(0.97, 0.62, 0.78), speckles=(0.10, 0.22)),
}


# --------------------------------------------------------------------------------------------
# Drawing (per image, numpy) and rendering (per image, torch)
# --------------------------------------------------------------------------------------------

def _rng(seed: int, domain: str, split: str, index: int) -> np.random.Generator:
    key = [int(seed), _DATASET_TAG, SEASON_DOMAINS.index(domain), SPLITS.index(split), int(index)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return c[:, None].expand(size, size), c[None, :].expand(size, size)


def _up(noise: np.ndarray, size: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(noise, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False)[0, 0]


def _jitter(rng: np.random.Generator, rgb, amount: float = 0.12) -> torch.Tensor:
    c = np.asarray(rgb, np.float32) * rng.uniform(1 - amount, 1 + amount) + rng.uniform(-0.04, 0.04, 3)
    return torch.from_numpy(np.clip(c, 0, 1).astype(np.float32))[:, None, None]


def _layout(rng: np.random.Generator, s: int) -> dict:
    """Horizon, ridge, lake and trees of one scene, plus its label and material maps."""
    Y, X = _grid(s)
    yh = rng.uniform(0.44, 0.62)
    n_peaks = int(rng.integers(1, 4))
    ridge_h = torch.zeros(s)
    x = X[0]
    peaks = []
    for _ in range(n_peaks):
        c, h, slope = rng.uniform(0.05, 0.95), rng.uniform(0.10, min(0.34, yh - 0.10)), rng.uniform(0.6, 1.6)
        peaks.append(c)
        ridge_h = torch.maximum(ridge_h, (h - slope * (x - c).abs()).clamp(min=0))
    wiggle = F.interpolate(torch.from_numpy(rng.standard_normal((1, 1, 12)).astype(np.float32)), size=s,
                      mode="linear", align_corners=False)[0, 0]
    ridge_h = (ridge_h + 0.012 * wiggle * (ridge_h > 0)).clamp(min=0)
    ridge = yh - ridge_h                                                  # (s,) y of the skyline
    label = torch.full((s, s), GROUND, dtype=torch.uint8)
    label[Y < yh] = MOUNTAIN
    label[Y < ridge[None, :]] = SKY
    lake = None
    if rng.random() < 0.7:
        cx, ry = rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.12)
        cy = yh + ry * rng.uniform(0.3, 1.0)
        rx = rng.uniform(0.18, 0.42)
        inside = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 < 1
        label[inside & (Y >= yh + 0.5 / s)] = WATER
        lake = (cx, cy, rx, ry)
    material = torch.zeros((s, s), dtype=torch.uint8)
    trees = []
    for _ in range(int(rng.integers(2, 7))):
        for _attempt in range(6):
            tx, tb = rng.uniform(0.03, 0.97), rng.uniform(yh + 0.04, 0.98)
            if lake is None or ((tx - lake[0]) / lake[2]) ** 2 + ((tb - lake[1]) / lake[3]) ** 2 > 1.1:
                break
        depth = (tb - yh) / (1 - yh)
        trees.append((tb, tx, (0.12 + 0.36 * depth) * rng.uniform(0.8, 1.2),
                      _CONIFER if rng.random() < 0.5 else _ROUND, rng.uniform(0.8, 1.25)))
    trees.sort()                                                          # far (high) to near (low)
    tree_info = []
    for tb, tx, h, kind, wf in trees:
        if kind == _CONIFER:
            apex, crown_base = tb - h, tb - 0.15 * h
            frac = ((Y - apex) / (crown_base - apex)).clamp(0, 1)
            crown = (Y >= apex) & (Y <= crown_base) & ((X - tx).abs() <= 0.28 * h * wf * frac + 0.4 / s)
            trunk = ((X - tx).abs() <= max(0.04 * h, 0.5 / s)) & (Y > crown_base) & (Y <= tb)
            centre = (tx, tb - 0.55 * h)
        else:
            cyc, rxc, ryc = tb - 0.64 * h, 0.30 * h * wf, 0.36 * h
            crown = ((X - tx) / rxc) ** 2 + ((Y - cyc) / ryc) ** 2 <= 1
            trunk = ((X - tx).abs() <= max(0.045 * h, 0.5 / s)) & (Y > cyc) & (Y <= tb) & ~crown
            centre = (tx, cyc)
        label[crown | trunk] = TREE
        material[crown] = _M_CROWN
        material[trunk] = _M_TRUNK
        tree_info.append((kind, crown, centre, h))
    return {"yh": yh, "ridge": ridge, "peaks": peaks, "label": label, "material": material,
            "trees": tree_info, "Y": Y, "X": X}


def _render(rng: np.random.Generator, domain: str, s: int) -> tuple[np.ndarray, np.ndarray]:
    lay = _layout(rng, s)
    st = _STYLE[domain]
    Y, X, yh, ridge, label, material = lay["Y"], lay["X"], lay["yh"], lay["ridge"], lay["label"], lay["material"]
    low, mid = _up(rng.standard_normal((5, 5)), s), _up(rng.standard_normal((10, 10)), s)
    high = _up(rng.standard_normal((max(8, s // 2), max(8, s // 2))), s)
    fine = torch.from_numpy(rng.standard_normal((s, s)).astype(np.float32))
    pixel = torch.from_numpy(rng.standard_normal((3, s, s)).astype(np.float32))

    # Sky: vertical gradient, clouds from thresholded noise.
    t = (Y / yh).clamp(0, 1) ** 0.8
    sky = _jitter(rng, st["sky_top"]) * (1 - t) + _jitter(rng, st["sky_hor"], 0.06) * t
    cover = rng.uniform(*st["cloud"])
    cloud_noise = _up(rng.standard_normal((4, 8)), s) * 0.8 + 0.4 * mid
    clouds = ((cloud_noise - 1.3 + 2.2 * cover) * 2.0).clamp(0, 1) * (1 - 0.5 * t)
    sky = sky * (1 - clouds) + _jitter(rng, st["cloud_rgb"], 0.04) * clouds

    # Mountains: rock with sun-side shading, foothill tint near the horizon, snow above a line.
    peaks = torch.tensor(lay["peaks"])
    nearest = peaks[(X[..., None] - peaks).abs().argmin(-1)]
    sun = 1.0 if rng.random() < 0.5 else -1.0
    shade = 1.0 + 0.16 * sun * torch.sign(X - nearest)
    rock = _jitter(rng, st["rock"]) * shade * (1 + 0.10 * mid + 0.08 * high)
    top = float(ridge.min())
    foot = ((Y - (yh - 0.35 * (yh - top))) / (0.35 * (yh - top) + 1e-6)).clamp(0, 1)
    mountain = rock * (1 - 0.8 * foot) + _jitter(rng, st["foot"]) * (1 + 0.08 * high) * 0.8 * foot
    snow_line = yh - rng.uniform(*st["snow_free"]) * (yh - top)
    snow = ((snow_line + 0.03 * mid + 0.02 * high - Y) * s * 0.7).clamp(0, 1)
    snow = snow * (1 - ((high - 0.9) * 3).clamp(0, 1))                  # rock breaking through
    snow_rgb = torch.tensor([0.93, 0.95, 0.98])[:, None, None] * (0.86 + 0.14 * shade)
    mountain = mountain * (1 - snow) + snow_rgb * snow

    # Ground: texture, perspective shading, seasonal speckles.
    depth = ((Y - yh) / (1 - yh)).clamp(0, 1)
    mix = float(rng.uniform(0, 1))          # the domain's palette: one ground colour or the other
    base = tuple((1 - mix) * a + mix * b for a, b in zip(st["ground"], st["ground_alt"]))
    ground = _jitter(rng, base) * (1 + 0.12 * low + 0.08 * mid + 0.10 * high) * (0.9 + 0.2 * depth)
    if domain == "winter":
        ground = ground * (1 - 0.10 * (0.5 + 0.5 * low).clamp(0, 1) * torch.tensor([1.0, 0.6, 0.0])[:, None, None])
    if "speckle" in st:
        density = rng.uniform(*st["speckles"])
        dots = (fine > 2.2 - 6 * density).float() * (0.4 + 0.6 * depth)
        spk = _jitter(rng, st["speckle"], 0.08)
        if domain == "spring" and rng.random() < 0.5:
            spk = _jitter(rng, (0.98, 0.95, 0.55), 0.05)
        ground = ground * (1 - dots) + spk * dots

    # Water: sky reflection and horizontal ripples (winter: ice).
    water_rgb = _jitter(rng, st["water"])
    if domain == "winter":
        water = water_rgb * (1 + 0.05 * high + 0.04 * fine)
    else:
        ripple = torch.sin(Y * s * 1.3 + 2.0 * mid + 0.5 * high)
        water = water_rgb * (0.85 + 0.10 * ripple) + 0.25 * sky.mean(dim=(1, 2), keepdim=True) * (0.5 + 0.5 * ripple)

    img = torch.zeros(3, s, s)
    for cls, layer in ((SKY, sky), (MOUNTAIN, mountain), (GROUND, ground), (WATER, water)):
        img = torch.where(label == cls, layer.expand(3, s, s), img)

    # Trees: crowns shaded towards the sun, trunks; seasonal crowns.
    trunk_rgb = _jitter(rng, st["trunk"])
    for kind, crown, (cx, cy), h in lay["trees"]:
        light = 1 + 0.25 * ((sun * (X - cx) - (Y - cy)) / (h + 1e-6)).clamp(-1, 1)
        if kind == _CONIFER:
            colour = _jitter(rng, st["conifer"])
            layer = colour * light * (0.85 + 0.25 * high + 0.1 * fine)
            if domain == "winter":
                dust = ((high + 0.6 * fine) > rng.uniform(0.3, 0.8)).float()
                layer = layer * (1 - dust) + torch.tensor([0.92, 0.94, 0.98])[:, None, None] * dust
        else:
            colour = _jitter(rng, st["crowns"][int(rng.integers(len(st["crowns"])))])
            layer = colour * light * (0.85 + 0.2 * high + 0.12 * fine)
            if domain == "winter":          # bare twigs: the background shows through
                twigs = ((0.5 * high + fine) > 0.0).float()
                layer = layer * (1 - twigs) + img * twigs
            elif domain == "spring" and colour[1, 0, 0] < 0.8 and colour[0, 0, 0] > 0.8:
                layer = layer * (1 + 0.08 * fine)
        img = torch.where(crown, layer, img)
    img = torch.where(material == _M_TRUNK, trunk_rgb * (1 + 0.08 * fine), img)

    # Lighting, the same distribution in every domain (a style a style code can pick): a time of day
    # from a cool blue hour through daylight to a warm golden hour, an exposure and a haze; then a
    # light blur and noise.
    exposure, warm, haze = rng.uniform(0.78, 1.12), rng.uniform(-1, 1), rng.uniform(0, 0.35) ** 1.5
    tint = torch.tensor([1 + 0.22 * warm, 1 + 0.03 * warm, 1 - 0.22 * warm])[:, None, None]
    img = img * exposure * tint
    haze_rgb = torch.tensor([0.80 + 0.08 * warm, 0.80, 0.84 - 0.08 * warm])[:, None, None]
    img = img * (1 - haze) + haze_rgb * haze
    k = torch.tensor([0.25, 0.5, 0.25])
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 3, 3).contiguous()
    img = F.conv2d(F.pad(img[None], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)[0]
    img = img + 0.012 * pixel
    out = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return out, label.numpy()


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------

@register_dataset("synthetic_seasons")
class SyntheticSeasons(GeneratedArrays, MultiDomainDataset):
    """Synthetic multi-domain landscapes (summer / autumn / winter / spring restylings of scenes with known layouts).

    ``domains`` picks and orders the domains (default: all four, sorted by name). Every domain has
    ``n_train`` train and ``n_val`` val images of ``size`` x ``size`` with label maps (classes
    sky, mountain, ground, water, tree).
    """

    GENERATOR_VERSION = 2
    LABEL_INFO = SEASON_LABEL_INFO

    @dataclass
    class Options:
        size: int = 64
        n_train: int = 300
        n_val: int = 50
        seed: int = 0
        domains: list[str] = field(default_factory=lambda: list(SEASON_DOMAINS))

        def validate(self) -> str | None:
            if not isinstance(self.size, int) or not 16 <= self.size <= 256 or self.size & (self.size - 1):
                return f"size must be a power of two between 16 and 256, got {self.size!r}"
            for name in ("n_train", "n_val"):
                value = getattr(self, name)
                if not isinstance(value, int) or not 1 <= value <= 100_000:
                    return f"{name} must be a positive integer (at most 100000), got {value!r}"
            if not 0 <= self.seed < 2 ** 63:
                return f"seed must be a non-negative integer, got {self.seed!r}"
            unknown = [d for d in self.domains if d not in SEASON_DOMAINS]
            if unknown:
                return f"unknown domain {unknown[0]!r}; domains: {', '.join(SEASON_DOMAINS)}"
            if len(self.domains) < 2 or len(set(self.domains)) != len(self.domains):
                return f"domains must list at least two distinct names, got {self.domains!r}"
            return None

    @property
    def domains(self) -> list[str]:
        return list(self.options.domains)

    @property
    def size(self) -> int:
        return self.options.size

    def split(self, split: MultiSplit, domain: str | int) -> LabelledImageSet:
        self.check_split(split)
        name = self.domain_name(domain)
        arrays = self._load()
        return LabelledImageSet(torch.from_numpy(arrays[f"{split}_{name}_images"]),
                                torch.from_numpy(arrays[f"{split}_{name}_labels"]), self.LABEL_INFO)

    # -- generation and cache -----------------------------------------------------------------

    def _count(self, split: str) -> int:
        return self.options.n_train if split == "train" else self.options.n_val

    def generate(self) -> dict[str, np.ndarray]:
        out = {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small per-image tensors: threading only adds overhead
        try:
            for split in SPLITS:
                for d in self.domains:
                    pairs = [_render(_rng(self.options.seed, d, split, i), d, self.options.size)
                             for i in range(self._count(split))]
                    out[f"{split}_{d}_images"] = np.stack([p[0] for p in pairs])
                    out[f"{split}_{d}_labels"] = np.stack([p[1] for p in pairs])
        finally:
            torch.set_num_threads(threads)
        return out

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        s, shapes = self.options.size, {}
        for split in SPLITS:
            for d in self.domains:
                shapes[f"{split}_{d}_images"] = (self._count(split), 3, s, s)
                shapes[f"{split}_{d}_labels"] = (self._count(split), s, s)
        return shapes
