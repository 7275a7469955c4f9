"""The contract types shared by the runner and the tasks: where a run happens (``RunContext``), the
suite's evaluation settings (``EvaluationConfig``) and what an evaluation returns (``Evaluation``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from .distributed import SINGLE_PROCESS, Distributed


@dataclass
class EvaluationConfig:
    num_test_images: int = 0
    """Test images translated and scored (0 = every test image)."""
    fid_resize: Literal["legacy", "clean"] = "legacy"
    """'legacy': pytorch-fid's bilinear resize (paper parity); 'clean': clean-fid's PIL bicubic."""
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    kid_seed: int = 0
    batch_size: int = 16
    grid_images: int = 6
    """Test inputs shown in the report's image grid."""
    label_scores: bool = True
    """Score outputs with a segmenter when the source side has labels (mIoU / pixAcc / clsAcc)."""
    bootstrap_resamples: int = 200
    """Bootstrap resamples of the test images for FID's and KID's confidence intervals (0 = none)."""
    bootstrap_confidence: float = 0.95
    """Confidence level of those intervals."""
    bootstrap_seed: int = 0
    """Seed of the resampling (numpy ``default_rng``); the same seed gives the same intervals."""
    bootstrap_max_images: int = 4096
    """No intervals when the outputs and real images of one FID number are more than this many together
    (each resample costs an SVD of about (0.63 n) x (0.63 m): seconds on a CPU at this size)."""
    fid_infinity_below: int = 2048
    """Report FID-infinity (Chong & Forsyth 2020) when fewer test outputs than this are scored (a
    "small" test set: by default fewer images than Inception feature dimensions); 0 = never."""
    fid_infinity_points: int = 15
    """Sample sizes N of the FID_N line (the official code's 15)."""
    fid_infinity_min_fraction: float = 0.1
    """Smallest N as a fraction of the outputs (the official 5,000 of 50,000)."""
    fid_infinity_seed: int = 0
    """Seed of the FID_N subsets (numpy ``default_rng``)."""

    def validate(self):
        if self.num_test_images < 0:
            return f"num_test_images must be >= 0, got {self.num_test_images}"
        if self.kid_subsets < 1 or self.kid_subset_size < 2:
            return "kid_subsets must be >= 1 and kid_subset_size >= 2"
        if self.bootstrap_resamples != 0 and self.bootstrap_resamples < 10:
            return f"bootstrap_resamples must be 0 (no intervals) or >= 10, got {self.bootstrap_resamples}"
        if self.bootstrap_max_images < 4:
            return f"bootstrap_max_images must be >= 4, got {self.bootstrap_max_images}"
        if not 0.0 < self.bootstrap_confidence < 1.0:
            return f"bootstrap_confidence must be in (0, 1), e.g. 0.95, got {self.bootstrap_confidence}"
        if self.fid_infinity_below < 0:
            return f"fid_infinity_below must be >= 0 (0 = never), got {self.fid_infinity_below}"
        if self.fid_infinity_points < 2:
            return f"fid_infinity_points must be >= 2 (a line needs two), got {self.fid_infinity_points}"
        if not 0.0 < self.fid_infinity_min_fraction < 1.0:
            return ("fid_infinity_min_fraction must be in (0, 1), e.g. 0.1, got "
                    f"{self.fid_infinity_min_fraction}")
        return None


SELECTION_RULES = ("last", "best_val", "best_test")
"""Checkpoint choices a suite can report (``validation.select``): ``last`` (the checkpoint at the
end of training), ``best_val`` (lowest FID on the held-out validation split) and ``best_test``
(lowest FID on the test set: the papers' practice, optimistic)."""


@dataclass
class ValidationConfig:
    """Evaluation during training on a validation split held out of the training images, and the
    checkpoint choices (``select``) the run reports. Off by default (``eval_every: 0``): no image is
    held out and runs train and score exactly as without this section."""
    eval_every: int = 0
    """Evaluate every ``eval_every`` training steps and at the last step; 0 = off."""
    images: int = 0
    """Training images held out per side (per domain in the multi-modal task, a pair per image on
    paired data); 0 = a tenth of the training images, at least 2."""
    seed: int = 0
    """Seed of the draw of the held-out images: every run and seed of a suite holds out the same."""
    select: list[Literal["last", "best_val", "best_test"]] = field(
        default_factory=lambda: list(SELECTION_RULES))
    """The checkpoint choices reported; ``last`` is always one (metrics.json's ``metrics``).
    ``best_test`` evaluates the test set at every evaluation point too."""
    keep_checkpoints: bool = False
    """Keep ``checkpoints/<rule>.pt`` after the run finished (they are deleted by default once
    their test scores are in metrics.json and ``selection/<rule>/scores.json``)."""

    @property
    def enabled(self) -> bool:
        return self.eval_every > 0

    @property
    def rules(self) -> list[str]:
        """The selection rules other than ``last`` (each keeps one extra checkpoint)."""
        return [r for r in SELECTION_RULES if r in self.select and r != "last"]

    def validate(self):
        if self.eval_every < 0:
            return f"eval_every must be >= 0 (0 = no evaluation during training), got {self.eval_every}"
        if self.images < 0 or self.images == 1:
            return (f"images must be 0 (a tenth of the training images) or >= 2 (FID needs two), "
                    f"got {self.images}")
        if "last" not in self.select:
            return (f"select must include 'last' (metrics.json's 'metrics' are the last checkpoint's), "
                    f"got {self.select}")
        if len(set(self.select)) != len(self.select):
            return f"select names a rule twice: {self.select}"
        return None


@dataclass
class RunContext:
    """Where and how one run happens."""
    run_dir: Path
    seed: int
    device: torch.device
    evaluation: EvaluationConfig
    cache_dir: Path
    weights_dir: Path | None = None
    log: Callable[[str], None] = print
    distributed: Distributed = SINGLE_PROCESS
    """This process's rank among the processes training the run (``torchrun``; one by default):
    tasks train on its share of each batch and shard their evaluation (benchmark/core/distributed.py)."""
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """The suite's ``validation`` section: tasks hold out its images from the training steps when
    it is on (``validation.enabled``)."""


@dataclass
class Evaluation:
    """A task's evaluation result: scalar metrics, protocol facts, and sample images (uint8)."""
    metrics: dict[str, float]
    protocol: dict[str, Any]
    samples: dict[str, torch.Tensor]
