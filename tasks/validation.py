"""The validation split shared by the tasks: training images held out of the training steps (the
suite's ``validation`` section, :class:`benchmark.core.context.ValidationConfig`) and the scores of a
translation on them.

Two-sided data (the single-modal and compression tasks): ``images`` of each side's training images
are held out -- on paired data the same indices of both sides, so a held-out pair is held out whole;
on unpaired data an independent draw per side. A validation evaluation translates the held-out A
images and scores them against the held-out B images, as the test protocol scores test A's outputs
against test B; the test images are never read. The multi-modal task holds out ``images`` of each
domain's training images the same way (see its ``evaluate_point``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from benchmark.core.context import RunContext, ValidationConfig
from benchmark.core.errors import DataError
from benchmark.core.images import ImageSet, SubsetImageSet

from .data import held_out_split
from .evaluation import evaluate_translation, image_set_features

VALIDATION_KEY = 7001
"""First part of the key of the validation split's draw (:func:`tasks.data.held_out_split`), then
the config's seed and the side (0 = A, 1 = B, 2 + d = domain d)."""


def validation_count(config: ValidationConfig, n: int) -> int:
    """Images held out of a set of ``n``: ``config.images``, or a tenth of them (at least 2)."""
    return config.images or max(2, n // 10)


def hold_out(image_set: ImageSet, config: ValidationConfig, part: int, what: str) -> tuple[ImageSet, ImageSet]:
    """(held out, kept) parts of ``image_set`` for the validation split; ``part`` keys the draw
    (equal parts draw equal indices from sets of equal size), ``what`` names the set in errors."""
    n = len(image_set)
    count = validation_count(config, n)
    if count >= n:
        raise DataError(f"validation.images = {count} leaves none of the {n} training images of {what} "
                        "to train on; hold out fewer (validation.images)")
    held, kept = held_out_split(n, count, VALIDATION_KEY, config.seed, part)
    return SubsetImageSet(image_set, held), SubsetImageSet(image_set, kept)


@dataclass
class ValidationSides:
    """The held-out images of a two-sided training set: ``a`` (translated) and ``b`` (the real
    images their translations are scored against)."""
    a: ImageSet
    b: ImageSet


def hold_out_sides(train_a: ImageSet, train_b: ImageSet, config: ValidationConfig,
                   paired: bool) -> tuple[ImageSet, ImageSet, ValidationSides | None]:
    """(training A, training B, validation sides): the sets unchanged and None when validation is off;
    else each side without its held-out images, and those (the same indices of both sides when
    ``paired``)."""
    if not config.enabled:
        return train_a, train_b, None
    val_a, keep_a = hold_out(train_a, config, 0, "side A")
    val_b, keep_b = hold_out(train_b, config, 0 if paired else 1, "side B")
    return keep_a, keep_b, ValidationSides(val_a, val_b)


class TranslationValidation:
    """Scores a translation of the held-out A images against the held-out B images (FID, KID and,
    where the A images carry labels, the task's label scores), with the real features computed once."""

    def __init__(self, sides: ValidationSides, dataset, ctx: RunContext):
        self.sides, self.dataset, self.ctx = sides, dataset, ctx
        self._real: np.ndarray | None = None

    def real(self) -> np.ndarray:
        """Inception features of the held-out B images; under torchrun each rank scores its shard of
        whole evaluation batches and the shards are gathered (one process: all of them, in the same
        batches)."""
        if self._real is None:
            self._real = image_set_features(self.sides.b, self.ctx)
        return self._real

    def score(self, translate: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        return evaluate_translation(translate, self.dataset, self.ctx, sources=self.sides.a, real=self.real(),
                                    real_split="validation B (held-out training images)").metrics
