"""The contract types shared by the runner and the tasks: where a run happens (``RunContext``), the
suite's evaluation settings (``EvaluationConfig``) and what an evaluation returns (``Evaluation``)."""
from __future__ import annotations

from dataclasses import dataclass
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

    def validate(self):
        if self.num_test_images < 0:
            return f"num_test_images must be >= 0, got {self.num_test_images}"
        if self.kid_subsets < 1 or self.kid_subset_size < 2:
            return "kid_subsets must be >= 1 and kid_subset_size >= 2"
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


@dataclass
class Evaluation:
    """A task's evaluation result: scalar metrics, protocol facts, and sample images (uint8)."""
    metrics: dict[str, float]
    protocol: dict[str, Any]
    samples: dict[str, torch.Tensor]
