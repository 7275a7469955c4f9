"""Progress lines with rates and ETAs for long jobs (plain text, fit for logs and terminals), and the
curves a run writes as it trains, to be watched live: ``losses.csv`` (always) and TensorBoard event
files (when the optional ``tensorboard`` package is installed)."""
from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from pathlib import Path

from .core.atomic import atomic_write


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


class CountProgress:
    """Progress through ``total`` items (e.g. ``plan`` decoding every image): a line
    ``<what>: <done>/<total> (<pct>%), <rate>/s, ETA <eta>`` at most every ``interval`` seconds and
    at the last item."""

    def __init__(self, total: int, what: str, stream=None, interval: float = 5.0):
        self.total, self.what, self.stream, self.interval = total, what, stream or sys.stderr, interval
        self.done = 0
        self.start = self._last_print = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last_print < self.interval and self.done < self.total:
            return
        self._last_print = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = format_seconds((self.total - self.done) / rate) if rate else "?"
        print(f"  {self.what}: {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%), "
              f"{rate:.0f}/s, ETA {eta}", file=self.stream, flush=True)


# -- the curves of a run ---------------------------------------------------------------------------

LOSSES_CSV = "losses.csv"
"""A run's losses as it trains: a header ``step,<loss>,...`` and a row per logged step with the
values ``train_step`` returned (Python's shortest exact repr; an empty cell where a step returned no
such value)."""
TENSORBOARD_TAG = "loss/{}"
"""The TensorBoard tag of a loss (its event files lie in the run folder itself, so that
``tensorboard --logdir <runs>/<suite>`` names each run by its task/dataset/method/seed path)."""


def read_losses(path: Path, upto: int | None = None) -> tuple[list[str], list[tuple[int, dict[str, float]]]]:
    """The loss names and the rows ``(step, {name: value})`` of a ``losses.csv`` (only the steps up to
    ``upto`` when given). Reading stops at the first row that is not whole (a line without its
    newline, a wrong number of cells, a step that does not increase): what a process killed while
    writing leaves behind. A missing file has no rows."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    lines = text.split("\n")[:-1]  # the last piece has no newline: empty, or a torn line
    if not lines:
        return [], []
    header = next(csv.reader([lines[0]]))
    if not header or header[0] != "step":
        return [], []
    names, rows, last = header[1:], [], 0
    for cells in csv.reader(lines[1:]):
        if len(cells) != len(header):
            break
        try:
            step = int(cells[0])
            values = {n: float(c) for n, c in zip(names, cells[1:]) if c != ""}
        except ValueError:
            break
        if step <= last or (upto is not None and step > upto):
            break
        rows.append((step, values))
        last = step
    return names, rows


def _csv_line(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()


def _value(v) -> str:
    v = float(v)
    return repr(v) if math.isfinite(v) else str(v)  # 'nan', 'inf', '-inf': what float() reads back


class LossLog:
    """Writes the values of each ``train_step`` of a run to ``<run_dir>/losses.csv`` (every
    ``every`` steps) and, with ``tensorboard`` and the package installed, to TensorBoard event files
    in ``run_dir``. Opened at ``start_step`` (the step the run resumes from, 0 when it starts), it
    first drops what a previous attempt logged after that step, so that a resumed run's file is the
    file an uninterrupted run writes. :meth:`sync` (called before each checkpoint) puts the rows on
    disk, so that every row up to a checkpoint's step survives a crash.

    The file is opened for each row, never held open: a file deleted while the run trains is
    recreated, whole, from the rows this object keeps (a held handle would go on writing to the
    deleted file). A file missing when a run resumes cannot be recreated: ``log`` says which rows are
    lost, and the report notes a file that starts late."""

    def __init__(self, run_dir: Path, start_step: int = 0, every: int = 1, tensorboard: bool = True,
                 log=print):
        self.path = Path(run_dir) / LOSSES_CSV
        self.every = every
        self.log = log
        names, rows = read_losses(self.path, upto=start_step)
        if start_step >= every and not rows:
            log(f"  {self.path} is missing: the losses up to step {start_step} are lost; "
                "it goes on from the steps trained from now on")
        self.names = [n for n in names if any(n in values for _, values in rows)]
        self.rows = rows
        """Every row of the file: what recreates it when it is deleted."""
        self._rewrite()
        self.tensorboard = _tensorboard_writer(Path(run_dir), start_step + 1) if tensorboard else None

    def _line(self, step: int, values: dict[str, float]) -> str:
        return _csv_line([str(step), *(_value(values[n]) if n in values else "" for n in self.names)])

    def _rewrite(self) -> None:
        """Replace the file with :attr:`rows` under the current names, all at once (no rows: no file)."""
        if not self.rows:
            self.path.unlink(missing_ok=True)
            return
        with atomic_write(self.path, "w", encoding="utf-8") as f:
            f.write(_csv_line(["step", *self.names]))
            for step, values in self.rows:
                f.write(self._line(step, values))

    def _recreate(self) -> None:
        self.log(f"  {self.path} was deleted while the run trained: recreated with its {len(self.rows)} rows")
        self._rewrite()

    def write(self, step: int, values: dict[str, float]) -> None:
        """Log the values ``train_step`` returned for ``step`` (the step count after it)."""
        if step % self.every:
            return
        new = [n for n in values if n not in self.names]
        self.names += new
        self.rows.append((step, dict(values)))
        if new or len(self.rows) == 1:  # a loss not seen before: the file under the wider header
            self._rewrite()
        else:
            with open(self.path, "a", encoding="utf-8", newline="") as f:
                gone = f.tell() == 0  # "a" created it: the file was deleted
                if not gone:
                    f.write(self._line(step, values))
            if gone:
                self._recreate()
        if self.tensorboard is not None:
            for name, value in values.items():
                self.tensorboard.add_scalar(TENSORBOARD_TAG.format(name), float(value), step)

    def sync(self) -> None:
        """Put every row written so far on disk (before a checkpoint)."""
        if self.rows:
            try:
                with open(self.path, "rb") as f:
                    os.fsync(f.fileno())
            except FileNotFoundError:  # deleted since the last row
                self._recreate()
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - needs the tensorboard package
    except ImportError:
        return False
    return True


def _tensorboard_writer(run_dir: Path, purge_step: int):
    """A SummaryWriter on ``run_dir`` that hides what an earlier attempt logged at ``purge_step`` or
    later (TensorBoard's own mechanism for a resumed run), or None without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    _after_existing_event_files(run_dir)
    return SummaryWriter(log_dir=str(run_dir), purge_step=purge_step, flush_secs=10)


def _after_existing_event_files(run_dir: Path) -> None:
    """TensorBoard reads a folder's event files in the order of their names, which begin with the
    second they were created: wait, if need be, until a new file's name sorts after every existing
    one (only a resume within a second of the previous attempt's start waits)."""
    stamps = []
    for path in run_dir.glob("events.out.tfevents.*"):
        try:
            stamps.append(int(path.name.split(".")[3]))
        except (IndexError, ValueError):
            continue
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)
