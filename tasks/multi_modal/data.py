"""StarGAN v2's training batches as a pure function of (seed, step) (``core/data_loader.py``).

Per step, like the official ``InputFetcher`` in 'train' mode:

* sources ``(x_src, y_src)``: balanced over domains (``WeightedRandomSampler`` with weights
  1 / images-in-domain, i.e. a uniformly random domain, then a uniformly random image of it);
* references ``(x_ref, x_ref2, y_ref)``: balanced the same way, independently; ``x_ref2`` is the
  image's fixed random partner in the same domain (the official ``ReferenceDataset`` pairs every
  file with one of a random permutation of its domain's files, drawn once);
* latent codes ``z_trg, z_trg2 ~ N(0, I)``;
* augmentation of every image: with probability ``randcrop_prob`` a ``RandomResizedCrop`` (scale
  [0.8, 1], ratio [0.9, 1.1], torchvision's sampling rule with 10 tries and the central fallback)
  resized back to the image size, then a horizontal flip with probability 0.5.

Every random choice comes from a ``torch.Generator`` seeded with (seed, purpose, step), so a resumed
run sees exactly the batches of an uninterrupted one without saving loader state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from datasets.base import ImageSet

from ..data import seeded_generator


@dataclass
class MultiDomainBatch:
    x_src: torch.Tensor
    y_src: torch.Tensor
    x_ref: torch.Tensor
    x_ref2: torch.Tensor
    y_ref: torch.Tensor
    z_trg: torch.Tensor
    z_trg2: torch.Tensor

    def to(self, device: torch.device) -> "MultiDomainBatch":
        return MultiDomainBatch(**{k: v.to(device) for k, v in vars(self).items()})


def random_resized_crop_params(height: int, width: int, g: torch.Generator,
                               scale=(0.8, 1.0), ratio=(0.9, 1.1)) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` drawing from ``g``: (top, left, h, w)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=g))
        aspect = math.exp(float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class MultiDomainBatches:
    """Batch ``step`` of StarGAN v2's training stream over ``sets`` (one ImageSet per domain)."""

    def __init__(self, sets: list[ImageSet], batch_size: int, latent_dim: int, img_size: int,
                 randcrop_prob: float, flip: bool, seed: int):
        if any(len(s) == 0 for s in sets):
            raise ValueError("every domain needs at least one training image")
        self.sets, self.batch_size, self.latent_dim = sets, batch_size, latent_dim
        self.img_size, self.randcrop_prob, self.flip, self.seed = img_size, randcrop_prob, flip, seed
        self.partners = [torch.randperm(len(s), generator=seeded_generator(seed, 5, d))
                         for d, s in enumerate(sets)]

    def _balanced(self, g: torch.Generator) -> tuple[list[int], list[int]]:
        domains, ids = [], []
        for _ in range(self.batch_size):
            d = int(torch.randint(len(self.sets), (1,), generator=g))
            domains.append(d)
            ids.append(int(torch.randint(len(self.sets[d]), (1,), generator=g)))
        return domains, ids

    def _images(self, domains: list[int], ids: list[int]) -> torch.Tensor:
        return torch.stack([self.sets[d].image(i) for d, i in zip(domains, ids)])

    def augment(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float in [-1, 1], (B, 3, img_size, img_size)."""
        out = []
        for img in images:
            x = img.to(torch.get_default_dtype()).div(127.5).sub(1.0)[None]
            h, w = x.shape[-2:]
            if self.randcrop_prob > 0 and float(torch.rand((), generator=g)) < self.randcrop_prob:
                top, left, ch, cw = random_resized_crop_params(h, w, g)
                x = x[..., top:top + ch, left:left + cw]
            if x.shape[-2:] != (self.img_size, self.img_size):
                x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear",
                                  align_corners=False, antialias=True)
            if self.flip and float(torch.rand((), generator=g)) < 0.5:
                x = x.flip(-1)
            out.append(x[0])
        return torch.stack(out)

    def batch(self, step: int) -> MultiDomainBatch:
        y_src, ids_src = self._balanced(seeded_generator(self.seed, 1, step))
        y_ref, ids_ref = self._balanced(seeded_generator(self.seed, 2, step))
        ids_ref2 = [int(self.partners[d][i]) for d, i in zip(y_ref, ids_ref)]
        gz = seeded_generator(self.seed, 3, step)
        z = torch.randn(2, self.batch_size, self.latent_dim, generator=gz)
        return MultiDomainBatch(
            x_src=self.augment(self._images(y_src, ids_src), seeded_generator(self.seed, 4, step)),
            y_src=torch.tensor(y_src),
            x_ref=self.augment(self._images(y_ref, ids_ref), seeded_generator(self.seed, 6, step)),
            x_ref2=self.augment(self._images(y_ref, ids_ref2), seeded_generator(self.seed, 7, step)),
            y_ref=torch.tensor(y_ref),
            z_trg=z[0], z_trg2=z[1])
