"""Evaluation during training and the choice of checkpoint as a stated protocol (the suite's
``validation`` section, :class:`benchmark.core.context.ValidationConfig`).

Every ``eval_every`` steps and at the last step (an *evaluation point*) the runner scores the current
weights on the validation split the task held out of its training images (``Task.evaluate_point``)
and, for the ``best_test`` rule, on the test set. What a run's folder gets:

* ``evals.jsonl``: a JSON object per line, per evaluation point and split:
  ``{"step": int, "split": "val" | "test", "metrics": {name: float}}`` (FID under ``"FID"``);
* ``checkpoints/<rule>.pt`` (``best_val.pt``, ``best_test.pt``): the checkpoint the rule has chosen so far, at most one per rule
  (replaced when a better one appears, deleted once the run's metrics.json holds its test scores
  unless ``keep_checkpoints``), written atomically;
* ``selection/<rule>/scores.json``: the test scores of the rule's checkpoint once the run has
  finished (``{"run_id", "rule", "step", "metrics"}``), written before that checkpoint is deleted, so
  that a metrics.json rewritten later (``run --redo-broken``) still has them.

The rules (:data:`RULES`): ``last`` (the end of training), ``best_val`` (lowest validation FID; the
test set is never read for the choice) and ``best_test`` (lowest test FID: what the papers report,
optimistic). Ties go to the earliest step.

Under ``torchrun`` (:mod:`benchmark.core.distributed`) every rank reaches each evaluation point at
the same step and scores it together (the task's evaluation is sharded over the ranks and gathered,
so every rank holds the scores one process computes); rank 0 alone writes ``evals.jsonl`` and the
kept checkpoints, and hands what it read from them (the repair of :meth:`Selection.start`, each
rule's choice) to every rank, so the ranks resume from the same state and score the same chosen
checkpoints after training.

Order at an evaluation point ``s``, so that a crash anywhere resumes bit-exactly: evaluate (the
random-number state is restored afterwards, so training does not depend on whether it evaluates),
append the records, save ``latest.pt`` at ``s``, then replace the kept files ``s`` wins. A resumed run
at step ``c`` cuts ``evals.jsonl`` to the steps ``<= c`` (no duplicated line) and checks each best
file against the records: one left behind by a crash between ``latest.pt`` and the best file (the
records' best is ``c`` itself) is rewritten from the loaded state; any other disagreement is an error.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


from .core.atomic import atomic_write
from .core.checkpoint import load_checkpoint, load_weights_only, rng_state, save_checkpoint, set_rng_state
from .core.context import ValidationConfig
from .core.distributed import SINGLE_PROCESS, Distributed
from .core.errors import BenchmarkError, CheckpointError

EVALS_FILE = "evals.jsonl"
SCORES_FILE = "scores.json"
SCORE = "FID"
"""The metric the rules compare (lower is better)."""

RULE_SPLIT = {"best_val": "val", "best_test": "test"}
"""The split each best-of rule chooses on."""

RULES = {
    "last": "the checkpoint at the end of training (the test set chooses nothing)",
    "best_val": ("the evaluation point with the lowest FID on the validation split held out of the "
                 "training images (the test set is never read for the choice)"),
    "best_test": ("the evaluation point with the lowest test FID, as the papers report: optimistic, "
                  "the test set chooses the checkpoint it scores"),
}


# -- evals.jsonl ---------------------------------------------------------------------------------

def read_evals(path: Path) -> list[dict]:
    """The records of an ``evals.jsonl`` ([] when there is none)."""
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            raise BenchmarkError(f"{path}:{n} is not a JSON object ({exc}); expected one evaluation "
                                 "record per line") from exc
    return records


def write_evals(path: Path, records: list[dict]) -> None:
    """Replace ``path`` with ``records``, atomically."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)


def append_evals(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())


def best_point(records: list[dict], split: str) -> tuple[int, float] | None:
    """(step, FID) of the record of ``split`` with the lowest FID (the earliest on ties), or None."""
    found = [(r["metrics"][SCORE], r["step"]) for r in records if r["split"] == split]
    if not found:
        return None
    value, step = min(found)
    return step, value


# -- one run's evaluation points and kept checkpoints -----------------------------------------------

class Selection:
    """The evaluation points of one run and the checkpoints its rules keep (files in ``run_dir``)."""

    def __init__(self, config: ValidationConfig, run_dir: Path, run_id: str,
                 log: Callable[[str], None] = print, distributed: Distributed = SINGLE_PROCESS):
        self.config, self.run_dir, self.run_id, self.log = config, Path(run_dir), run_id, log
        self.distributed = distributed  # under torchrun rank 0 reads and writes the run's files

    @property
    def evals_path(self) -> Path:
        return self.run_dir / EVALS_FILE

    def best_path(self, rule: str) -> Path:
        return self.run_dir / "checkpoints" / f"{rule}.pt"  # best_val.pt, best_test.pt

    @property
    def splits(self) -> list[str]:
        """The splits scored at each point: the validation split, and test for ``best_test``."""
        return ["val"] + (["test"] if "best_test" in self.config.rules else [])

    def is_point(self, step: int, total: int) -> bool:
        return step > 0 and (step % self.config.eval_every == 0 or step == total)

    def records(self) -> list[dict]:
        return read_evals(self.evals_path)

    def chosen(self) -> dict[str, tuple[int, float]]:
        """Each best-of rule's choice so far: rule -> (step, its FID on the rule's split). Under
        torchrun every rank calls it together and gets rank 0's reading of ``evals.jsonl``."""
        d = self.distributed
        return d.broadcast(self._chosen_in(self.records()) if d.is_main else None)

    def _chosen_in(self, records: list[dict]) -> dict[str, tuple[int, float]]:
        out = {}
        for rule in self.config.rules:
            best = best_point(records, RULE_SPLIT[rule])
            if best is not None:
                out[rule] = best
        return out

    # -- during training --------------------------------------------------------------------------
    def start(self, task) -> None:
        """Before training from ``task.step`` (0, or the step a checkpoint was resumed at): cut the
        records to that step and check or repair the kept checkpoints (rank 0 under torchrun; a
        disagreement it finds stops every rank)."""
        d = self.distributed
        if d.is_main:
            try:
                self._start(task)
            except BenchmarkError as exc:
                d.broadcast(str(exc))  # the other ranks stop with it
                raise
            d.broadcast(None)
        else:
            problem = d.broadcast(None)
            if problem is not None:
                raise CheckpointError(f"rank 0: {problem}")

    def _start(self, task) -> None:
        step = task.step
        records = self.records()
        kept = [r for r in records if r["step"] <= step]
        if len(kept) != len(records):
            write_evals(self.evals_path, kept)
        for rule in self.config.rules:
            path = self.best_path(rule)
            best = best_point(kept, RULE_SPLIT[rule])
            held = _checkpoint_step(path, self.run_id) if path.exists() else None
            if best is None and held is None or best is not None and held == best[0]:
                continue
            if held is None and best[0] < step == task.total_steps:  # deleted by discard() when the run finished
                if self.earlier_scores(rule, best[0]) is not None:
                    continue
                raise CheckpointError(
                    f"run '{self.run_id}': {path.name} (step {best[0]}, chosen by {self.evals_path.name}) was "
                    f"deleted when the run finished, and its test scores were kept only in metrics.json, not "
                    f"in {self.scores_path(rule)} (a run folder of an earlier version): restore a sound "
                    f"metrics.json (from a backup), or move {self.run_dir} away to rerun the run")
            if best is not None and best[0] == step:  # a crash fell between latest.pt and this file
                save_checkpoint(path, self.run_id, step, task.state_dict())
            elif best is None and step == 0:  # a fresh start: nothing of an earlier attempt counts
                path.unlink()
            else:
                raise CheckpointError(
                    f"run '{self.run_id}': {path.name} holds step {held} but {self.evals_path} chooses "
                    f"step {None if best is None else best[0]} for '{rule}' (resuming at step {step}); "
                    f"the evaluation records and checkpoints disagree: move {self.run_dir} away to "
                    "rerun the run")

    def evaluate(self, task) -> list[dict]:
        """Score ``task`` at its step on each split, append the records and log a line; the global
        random-number state is as before the call. Under torchrun every rank scores (the task's
        evaluation is sharded) and rank 0 appends and logs."""
        state = rng_state()
        try:
            records = []
            for split in self.splits:
                metrics = {k: float(v) for k, v in task.evaluate_point(split).items()}
                if SCORE not in metrics:
                    raise BenchmarkError(f"{type(task).__name__}.evaluate_point('{split}') returned no "
                                         f"'{SCORE}' (got {', '.join(metrics) or 'nothing'})")
                records.append({"step": task.step, "split": split, "metrics": metrics})
        finally:
            set_rng_state(state)
        if not self.distributed.is_main:
            return records
        append_evals(self.evals_path, records)
        scores = ", ".join(f"{r['split']} FID {r['metrics'][SCORE]:.2f}" for r in records)
        best = best_point(self.records(), "val")
        self.log(f"  {self.run_id} eval at step {task.step}/{task.total_steps}: {scores} "
                 f"(best val FID {best[1]:.2f} at step {best[0]})")
        return records

    def keep_best(self, task) -> None:
        """After ``latest.pt`` holds ``task.step``: replace the best file of each rule ``task.step``
        now wins (rank 0 under torchrun; a no-op on the other ranks)."""
        if not self.distributed.is_main:
            return
        for rule, (step, _) in self._chosen_in(self.records()).items():
            if step == task.step:
                save_checkpoint(self.best_path(rule), self.run_id, step, task.state_dict())

    # -- after training ---------------------------------------------------------------------------
    def load_best(self, rule: str, device) -> dict[str, Any]:
        """The task state ``<rule>.pt`` holds (every rank reads the file rank 0 wrote, as every rank
        resumes from ``latest.pt``: the run folder is shared)."""
        return load_checkpoint(self.best_path(rule), self.run_id, map_location=device)["task"]

    def scores_path(self, rule: str) -> Path:
        return self.run_dir / "selection" / rule / SCORES_FILE

    def save_scores(self, rule: str, step: int, metrics: dict) -> None:
        """Keep the test scores of ``rule``'s checkpoint at ``step`` beside its samples (rank 0)."""
        if not self.distributed.is_main:
            return
        with atomic_write(self.scores_path(rule), "w", encoding="utf-8",
                          what=f"the test scores of the {rule} checkpoint of run '{self.run_id}'") as f:
            json.dump({"run_id": self.run_id, "rule": rule, "step": step, "metrics": metrics}, f,
                      indent=2, sort_keys=True)

    def earlier_scores(self, rule: str, step: int) -> dict | None:
        """The test scores :meth:`save_scores` kept for ``rule`` at ``step``; None when there are none
        (or they are of another run, rule or step, or not readable)."""
        try:
            data = json.loads(self.scores_path(rule).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or (data.get("run_id"), data.get("rule"), data.get("step")) != (
                self.run_id, rule, step) or not isinstance(data.get("metrics"), dict):
            return None
        return data["metrics"]

    def discard(self) -> None:
        """Delete the kept checkpoints (their test scores are in metrics.json and
        ``selection/<rule>/scores.json``) unless asked to keep them (rank 0 under torchrun)."""
        if self.config.keep_checkpoints or not self.distributed.is_main:
            return
        for rule in self.config.rules:
            self.best_path(rule).unlink(missing_ok=True)


def _checkpoint_step(path: Path, run_id: str) -> int:
    """The step a kept checkpoint holds (memory-mapped: its tensors are not read)."""
    ckpt = load_weights_only(path, mmap=True)  # a file planted here is refused before it runs
    if not isinstance(ckpt, dict) or ckpt.get("run_id") != run_id or not isinstance(ckpt.get("step"), int):
        raise CheckpointError(f"checkpoint '{path}' is not a checkpoint of run '{run_id}'")
    return ckpt["step"]
