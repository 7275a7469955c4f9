"""Stateless, seeded data order and augmentation, so that a resumed run sees exactly the batches an
uninterrupted one would: every step's choice is a pure function of (seed, step)."""
from __future__ import annotations

import torch

from datasets.base import ImageSet


def _generator(*key: int) -> torch.Generator:
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def to_model_range(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [-1, 1] on ``device``."""
    return images.to(device=device, dtype=torch.float32).div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 like CUT's ``tensor2im`` ((x + 1) / 2 * 255, truncated)."""
    return ((images.detach().float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).cpu()


class UnpairedBatches:
    """Batch ``step`` of an unpaired training set: A in shuffled epochs (a fresh permutation per
    epoch), B drawn at random (CUT's ``serial_batches=False``), each image randomly cropped to
    ``crop_size`` and flipped with probability 0.5 unless ``flip`` is off."""

    def __init__(self, set_a: ImageSet, set_b: ImageSet, batch_size: int, crop_size: int,
                 flip: bool, seed: int):
        self.set_a, self.set_b = set_a, set_b
        self.batch_size, self.crop_size, self.flip, self.seed = batch_size, crop_size, flip, seed

    def indices(self, step: int) -> tuple[list[int], list[int]]:
        n_a = len(self.set_a)
        ids_a = []
        for j in range(self.batch_size):
            position = step * self.batch_size + j
            epoch, offset = divmod(position, n_a)
            ids_a.append(int(torch.randperm(n_a, generator=_generator(self.seed, 1, epoch))[offset]))
        g = _generator(self.seed, 2, step)
        ids_b = torch.randint(len(self.set_b), (self.batch_size,), generator=g).tolist()
        return ids_a, ids_b

    def augment(self, images: torch.Tensor, step: int, side: int) -> torch.Tensor:
        g = _generator(self.seed, 3 + side, step)
        out = []
        for img in images:
            h, w = img.shape[-2:]
            top = int(torch.randint(h - self.crop_size + 1, (1,), generator=g))
            left = int(torch.randint(w - self.crop_size + 1, (1,), generator=g))
            img = img[:, top:top + self.crop_size, left:left + self.crop_size]
            if self.flip and bool(torch.rand((), generator=g) < 0.5):
                img = img.flip(-1)
            out.append(img)
        return torch.stack(out)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids_a, ids_b = self.indices(step)
        return (self.augment(self.set_a.images(ids_a), step, 0),
                self.augment(self.set_b.images(ids_b), step, 1))
