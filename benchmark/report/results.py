"""What a report tabulates: every row the config asks for (each run of ``runner.expand`` and the
identity row of each task x dataset), finished with its ``metrics.json`` record or missing with the
reason read from its folder; and the results table (pandas) of the finished ones."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import Suite
from ..core.checkpoint import load_weights_only
from ..core.errors import CheckpointError
from ..inputs import dataset_identity, inputs_of_run, row_inputs
from ..run_folder import BROKEN, FINISHED as FOLDER_FINISHED, REDO_BROKEN_HINT, STALE, RunFolder, held_by_a_process
from ..runner import expand

IDENTITY = "identity"
ERROR_LOG = "error.log"
MAX_REASON = 160
"""Characters of an error message kept in a missing row's reason."""

CSV_COLUMNS = ["task", "dataset", "method", "seed", "metric", "value", "status"]
FINISHED = "finished"
"""The CSV status of a finished run's metric rows."""


@dataclass(frozen=True)
class Row:
    """One row the config asks for: a run (task, dataset, method, seed) or an identity row (seed
    None). ``record``: its metrics.json when finished; ``reason``: why not, otherwise."""
    task: str
    dataset: str
    method: str
    seed: int | None
    directory: Path
    record: dict | None = None
    reason: str | None = None
    kind: str = ""
    """The folder's state (``benchmark.run_folder``): finished, stale, broken or unfinished."""

    @property
    def finished(self) -> bool:
        return self.record is not None

    @property
    def not_counted(self) -> bool:
        """Results are on disk but not shown: another config's (stale) or an invalid metrics.json."""
        return self.kind in (STALE, BROKEN)

    @property
    def failed(self) -> bool:
        return bool(self.reason) and self.reason.startswith("failed")


def first_sample(rows: list[Row], method: str, relative: str) -> Path | None:
    """``relative`` (e.g. ``samples/output_00.png``) in the folder of the method's lowest seed that
    has it (the identity row first), among finished rows only: the samples of a stale run (another
    config's), a broken or an unfinished one are never shown as this config's."""
    runs = sorted((r for r in rows if r.method == method and r.finished), key=lambda r: -1 if r.seed is None else r.seed)
    return next((r.directory / relative for r in runs if (r.directory / relative).is_file()), None)


def dataset_identities(suite: Suite) -> dict[str, str | None]:
    """Each dataset's identity as its files are now; None where they cannot be read here (its
    results are then not compared with them, and the report says so)."""
    return {c.label: dataset_identity(c.cls(c.options, suite.cache_dir / "datasets")) for c in suite.datasets}


def expected_rows(suite: Suite, identities: dict[str, str | None] | None = None) -> list[Row]:
    """Every row of the suite, in report order: per task and dataset the identity row, then each
    method's runs (seeds in config order); results made from other data (``identities``, default
    :func:`dataset_identities`) or files than those there now are stale."""
    identities = dataset_identities(suite) if identities is None else identities
    rows = []
    for task in suite.tasks:
        for dataset in suite.datasets:
            rows.append(_row(task.label, dataset.label, IDENTITY, None, suite.identity_folder(task, dataset),
                             row_inputs(identities.get(dataset.label))))
    for run in expand(suite):
        rows.append(_row(run.task.label, run.dataset.label, run.method.label, run.seed, run.folder,
                         inputs_of_run(run, identities.get(run.dataset.label))))
    order = {(t.label, d.label): i for i, (t, d) in enumerate((t, d) for t in suite.tasks for d in suite.datasets)}
    return sorted(rows, key=lambda r: order[(r.task, r.dataset)])  # stable: identity first per pair


def _row(task: str, dataset: str, method: str, seed: int | None, folder: RunFolder,
         inputs: dict[str, str | None]) -> Row:
    """The row of ``folder``: its numbers only when they are valid results of this config and inputs."""
    state = folder.state(inputs)
    if state.kind == FOLDER_FINISHED:
        return Row(task, dataset, method, seed, folder.directory, record=state.record, kind=state.kind)
    if state.kind == STALE:
        reason = f"{state.describe(folder.metrics_path)}; not shown"
    elif state.kind == BROKEN:
        reason = f"{state.describe(folder.metrics_path)}; {REDO_BROKEN_HINT}"
    elif other := folder.work_of_other_settings(inputs):  # an interrupted run of another config or data
        return Row(task, dataset, method, seed, folder.directory, reason=f"stale: {other}; not shown", kind=STALE)
    else:
        reason = missing_reason(folder.directory)
    return Row(task, dataset, method, seed, folder.directory, reason=reason, kind=state.kind)


def missing_reason(directory: Path) -> str:
    """Why the run in ``directory`` has no metrics.json: 'not run yet' (no folder: never started, or
    removed), 'failed: <the error>' (an error.log newer than any checkpoint), 'interrupted at step N'
    (a readable checkpoint), else 'not finished'; 'running' first when a process holds the run's
    lock (e.g. a job of ``run --no-wait``)."""
    if not directory.is_dir():
        return "not run yet"
    error_log = directory / ERROR_LOG
    checkpoint = latest_checkpoint(directory)
    if held_by_a_process(directory):
        step = checkpoint_step(checkpoint) if checkpoint is not None else None
        return "running" + (f" (checkpoint at step {step})" if step is not None else "")
    if error_log.is_file() and (checkpoint is None or error_log.stat().st_mtime >= checkpoint.stat().st_mtime):
        return f"failed: {error_message(error_log)}"
    step = checkpoint_step(checkpoint) if checkpoint is not None else None
    return f"interrupted at step {step}" if step is not None else "not finished"


def error_message(path: Path) -> str:
    """The error an error.log reports, on one line: the exception line of its last traceback (the
    one raised), or its first non-empty line when it holds no traceback."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {path.name}: {exc})"
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    candidates = lines[starts[-1] + 1:] if starts else lines
    found = next((l for l in candidates if l.strip() and (not starts or not l[0].isspace())), "")
    found = found.strip() or "no message"
    return found if len(found) <= MAX_REASON else found[: MAX_REASON - 1] + "…"


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest ``checkpoints/*.pt`` of a run folder, if any."""
    found = [p for p in (directory / "checkpoints").glob("*.pt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def checkpoint_step(path: Path) -> int | None:
    """The training step a checkpoint holds, read without loading its tensors (memory-mapped);
    None when it cannot be read."""
    try:
        ckpt = load_weights_only(path, "cpu", mmap=True)
    except CheckpointError:  # an unreadable or refused checkpoint only loses the step in the words
        return None
    step = ckpt.get("step") if isinstance(ckpt, dict) else None
    return step if isinstance(step, int) else None


def results_table(records: list[dict]) -> pd.DataFrame:
    """One row per finished run and metric: task, dataset, method, seed, metric, value."""
    rows = [{"task": r["task"], "dataset": r["dataset"], "method": r["method"], "seed": r["seed"],
             "metric": name, "value": value}
            for r in records for name, value in r["metrics"].items()]
    return pd.DataFrame(rows, columns=["task", "dataset", "method", "seed", "metric", "value"])


def csv_table(rows: list[Row]) -> pd.DataFrame:
    """The report's CSV: a line per finished run and metric (status 'finished'), and a line per
    missing run or identity row (no metric, no value, status 'missing: <reason>')."""
    out = []
    for row in rows:
        if row.finished:
            r = row.record
            out += [{"task": r["task"], "dataset": r["dataset"], "method": r["method"], "seed": r["seed"],
                     "metric": name, "value": value, "status": FINISHED} for name, value in r["metrics"].items()]
        else:
            out.append({"task": row.task, "dataset": row.dataset, "method": row.method,
                        "seed": 0 if row.seed is None else row.seed, "metric": "", "value": None,
                        "status": f"missing: {row.reason}"})
    return pd.DataFrame(out, columns=CSV_COLUMNS)
