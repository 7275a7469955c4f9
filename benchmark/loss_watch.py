"""What the training loop watches in the loss values of every step, so that no number comes from a
run whose losses went wrong without a word:

- a non-finite value (NaN, inf) stops the run at once with :class:`TrainingDiverged`: every later
  step would train on it, and the metrics of such a run mean nothing;
- a term that was exactly 0.0 at every step trained nothing (a method without negatives, say, whose
  NCE is identically zero): the run finishes, and its record names the term, which the report puts
  in a warning above the table.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

from .core.errors import BenchmarkError

DEGENERATE = "degenerate_losses"
"""The protocol key of a run's record that names its terms that were exactly 0 at every step."""


class TrainingDiverged(BenchmarkError):
    """A loss value of a training step was NaN or infinite."""


class LossWatch:
    """Checks each step's values; ``earlier`` are the rows a resumed run logged before (step,
    values), so that a term that was non-zero before the checkpoint is not called degenerate."""

    def __init__(self, earlier: Iterable[tuple[int, Mapping[str, float]]] = ()):
        self.seen: set[str] = set()
        self.nonzero: set[str] = set()
        for _, values in earlier:
            self._note(values)

    def _note(self, values: Mapping[str, float]) -> None:
        self.seen.update(values)
        self.nonzero.update(k for k, v in values.items() if v != 0)

    def check(self, step: int, values: Mapping[str, float]) -> None:
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            terms = ", ".join(f"{k} = {v}" for k, v in sorted(bad.items()))
            raise TrainingDiverged(
                f"training diverged at step {step}: {terms}. The run stops here (its last checkpoint is "
                "kept; resuming would diverge again): lower the learning rate or the loss weights, or "
                "check the method's loss for a division by a zero norm")
        self._note(values)

    def degenerate(self) -> list[str]:
        """The terms that were exactly 0 at every step seen."""
        return sorted(self.seen - self.nonzero)

    def protocol(self) -> dict[str, str]:
        """The record's protocol entry ({} when every term moved)."""
        terms = self.degenerate()
        return {DEGENERATE: ", ".join(terms) + " (exactly 0 at every step)"} if terms else {}
