"""Progress lines with rates and ETAs for long jobs (plain text, fit for logs and terminals)."""
from __future__ import annotations

import sys
import time


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class SuiteProgress:
    """Tracks steps done across a suite's runs and prints a line at most every ``interval`` seconds."""

    def __init__(self, total_steps: int, stream=None, interval: float = 5.0, run_eta_only: bool = False):
        self.total_steps = max(1, total_steps)
        self.run_eta_only = run_eta_only  # a worker process: the suite's ETA is the parent's
        self.done_steps = 0
        self.stream = stream or sys.stderr
        self.interval = interval
        self.start = time.monotonic()
        self.trained_seconds = 0.0
        self.trained_steps = 0
        self._per_run: dict[str, list[float]] = {}  # label -> [seconds, steps]
        self._resumed_at: dict[str, int] = {}        # label -> step its checkpoint held
        self._last_print = 0.0

    def log(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def skip(self, steps: int) -> None:
        """Steps that need no training (finished runs) leave the remaining total."""
        self.total_steps = max(1, self.total_steps - steps)

    def resumed(self, label: str, step: int) -> None:
        """A run resumed from a checkpoint at ``step``: those steps need no training."""
        self._resumed_at[label] = step
        self.skip(step)

    def abandon(self, label: str, planned: int) -> None:
        """A run failed: the steps it will not train leave the remaining total."""
        trained = self._resumed_at.get(label, 0) + int(self._per_run.get(label, [0.0, 0])[1])
        self.skip(max(0, planned - trained))

    def step(self, label: str, step: int, total: int, seconds: float, values: dict[str, float],
             force: bool = False) -> None:
        self.done_steps += 1
        self.trained_steps += 1
        self.trained_seconds += seconds
        this_run = self._per_run.setdefault(label, [0.0, 0])
        this_run[0] += seconds
        this_run[1] += 1
        now = time.monotonic()
        if not force and now - self._last_print < self.interval and step != total:
            return
        self._last_print = now
        rate = this_run[0] / this_run[1]
        run_eta = rate * (total - step)
        suite_eta = self.trained_seconds / self.trained_steps * (self.total_steps - self.done_steps)
        shown = " ".join(f"{k}={v:.3f}" for k, v in list(values.items())[:6])
        eta = f"ETA run {format_seconds(run_eta)}"
        if not self.run_eta_only:
            eta += f" suite {format_seconds(suite_eta)}"
        self.log(f"  {label} step {step}/{total} ({100 * step / total:.0f}%) {rate:.3f}s/step {eta} | {shown}")
