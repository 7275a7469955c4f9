"""Paired (aligned) training batches, as pix2pix / GAN Compression's ``aligned`` data mode makes them."""
from __future__ import annotations

import torch

from benchmark.core.errors import DataError
from datasets.base import ImageSet

from ..data import UnpairedBatches


class PairedBatches(UnpairedBatches):
    """Batch ``step`` of an aligned training set: pairs in shuffled epochs (a fresh permutation per
    epoch, as for side A of :class:`UnpairedBatches`), and both images of a pair cropped at the same
    position and flipped alike (``data/aligned_dataset.py``: one ``get_params`` for A and B)."""

    def __init__(self, set_a: ImageSet, set_b: ImageSet, batch_size: int, crop_size: int,
                 flip: bool, seed: int):
        if len(set_a) != len(set_b):
            raise DataError(f"paired batches: side A has {len(set_a)} images and side B {len(set_b)}; "
                            "expected aligned sides of equal length (image i of A pairs with image i of B)")
        super().__init__(set_a, set_b, batch_size, crop_size, flip, seed)

    def indices(self, step: int) -> tuple[list[int], list[int]]:
        ids = super().indices(step)[0]
        return ids, ids

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, _ = self.indices(step)
        a, b = self.set_a.images(ids), self.set_b.images(ids)
        if a.shape != b.shape:
            raise DataError(f"paired batches: the images of side A have shape {tuple(a.shape[1:])} and "
                            f"those of side B {tuple(b.shape[1:])}; expected equal sizes")
        # One augmentation stream for both sides: the same crop positions and flips.
        return self.augment(a, step, 0), self.augment(b, step, 0)
