"""Data helpers shared by the tasks, and the single-modal (CUT) unpaired batch stream.

* :func:`seeded_generator`: a ``torch.Generator`` seeded with a mix of integer key parts -- every
  random choice of a task's data order, augmentation and evaluation is a pure function of such a key
  (seed, purpose, step, ...), so a resumed run sees exactly the batches of an uninterrupted one;
* :func:`to_model_range` and the two ways back to uint8, each faithful to the official code of the
  task that uses it: :func:`to_uint8_truncated` (CUT's ``tensor2im``) and :func:`to_uint8_rounded`
  (StarGAN v2's ``save_image``);
* :class:`UnpairedBatches`: CUT's stateless, seeded data order and augmentation;
* :func:`held_out_split`: the one draw of held-out training images (the compression task's search
  images, the validation split of every task).
"""
from __future__ import annotations

import torch

from datasets.base import ImageSet


def seeded_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded with a hash-free mix of the integer ``key`` parts:
    ``seed = (seed * 1_000_003 + k) mod (2**63 - 1)`` over the parts, starting from 0."""
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def held_out_split(n: int, count: int, *key: int) -> tuple[list[int], list[int]]:
    """(held out, kept): ``count`` of the indices ``0 .. n-1`` held out -- the last ``count`` of a
    permutation drawn with :func:`seeded_generator` ``(*key, n)`` -- and the others, each sorted. The
    draw depends on the key and ``n`` only, so every run and seed of a suite holds out the same
    images of a set. Raises ValueError unless ``0 <= count < n``."""
    if not 0 <= count < n:
        raise ValueError(f"cannot hold out {count} of {n} images: at least one must be left")
    order = torch.randperm(n, generator=seeded_generator(*key, n)).tolist()
    return sorted(order[n - count:]), sorted(order[:n - count])


def to_model_range(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [-1, 1] on ``device`` (torch's default float dtype: float32
    unless a test sets float64)."""
    return images.to(device=device, dtype=torch.get_default_dtype()).div(127.5).sub(1.0)


def to_uint8_truncated(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 on the CPU, truncating: ``(clamp(x, -1, 1) + 1) / 2 * 255`` cast to
    uint8 (towards zero), as CUT's ``util.tensor2im`` does (``clamp(-1.0, 1.0)``, then
    ``(x + 1) / 2.0 * 255.0`` and ``astype(np.uint8)``). x = 0 gives 127 (127.5 truncated)."""
    return ((images.detach().float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).cpu()


def to_uint8_rounded(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 on the CPU, rounding half up: as StarGAN v2 saves its outputs
    (``solver/utils.py``: ``denormalize``, i.e. ``((x + 1) / 2).clamp_(0, 1)``, then torchvision's
    ``save_image``: ``mul(255).add_(0.5).clamp_(0, 255)`` cast to uint8). x = 0 gives 128."""
    x = ((images.detach().float() + 1) / 2).clamp(0, 1)
    return x.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).cpu()


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
            ids_a.append(int(torch.randperm(n_a, generator=seeded_generator(self.seed, 1, epoch))[offset]))
        g = seeded_generator(self.seed, 2, step)
        ids_b = torch.randint(len(self.set_b), (self.batch_size,), generator=g).tolist()
        return ids_a, ids_b

    def augment(self, images: torch.Tensor, step: int, side: int) -> torch.Tensor:
        g = seeded_generator(self.seed, 3 + side, step)
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
