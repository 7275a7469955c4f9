"""Schedules shared by tasks (learning-rate decay) and methods (curricula)."""
from __future__ import annotations


def linear_decay_factor(step: int, n_constant: int, n_decay: int) -> float:
    """CUT's 'linear' policy per step: 1 for ``n_constant`` steps, then linearly down towards 0
    over ``n_decay`` steps (``1 - max(0, step + 1 - n_constant) / (n_decay + 1)``)."""
    return 1.0 - max(0, step + 1 - n_constant) / float(n_decay + 1)


def linear_ramp(start: float, end: float, progress: float) -> float:
    """``start`` at progress 0, ``end`` at progress 1, linear in between (clamped)."""
    progress = min(max(progress, 0.0), 1.0)
    return start + (end - start) * progress
