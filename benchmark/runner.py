"""Expands a suite into runs and executes them: skips finished runs, resumes interrupted ones from
their last checkpoint, and keeps going when one run fails."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import yaml

from .core.atomic import atomic_write
from .core.context import RunContext
from .core.checkpoint import load_checkpoint, save_checkpoint, seed_everything, set_rng_state
from .config import Component, Run, Suite
from .core.errors import BenchmarkError, ConfigError
from .core.image_io import write_png
from .progress import SuiteProgress, format_seconds
from .selection import RULE_SPLIT, RULES, SCORE, Selection
from .core.settings import NO_DEFAULT
from .core.yaml_io import load_yaml


def runs_dir(suite: Suite) -> Path:
    return suite.runs_dir


def cache_dir(suite: Suite) -> Path:
    return suite.cache_dir


def identity_dir(suite: Suite, task: Component, dataset: Component) -> Path:
    return suite.identity_dir(task, dataset)


def expand(suite: Suite) -> list[Run]:
    """The suite's runs (resolved when the config was loaded)."""
    return suite.runs


@dataclass(frozen=True)
class Job:
    """One unit of work of :meth:`Runner.run_all`: score an identity row (the inputs as outputs of a
    task and dataset) or train and evaluate a run; ``index`` points into the suite's lists, so a
    worker process that rebuilt the suite from its config finds the same item."""
    kind: Literal["identity", "run"]
    task_index: int = 0
    dataset_index: int = 0
    run_index: int = 0
    header: str = ""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def write_json(path: Path, data: dict) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)


def save_samples(directory: Path, samples: dict[str, torch.Tensor]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, images in samples.items():
        for i, image in enumerate(images):
            write_png(image, directory / f"{name}_{i:02d}.png")


def check_config(run: Run) -> None:
    """A run directory belongs to one resolved config: never mix results of two configs."""
    path = run.directory / "config.yaml"
    resolved = run.resolved_config()
    if path.exists():
        stored = load_yaml(path.read_text())
        diffs = _diff(stored, resolved, run.config_defaults())
        if diffs:
            raise ConfigError(
                f"run '{run.run_id}' in {run.directory} was made with a different config "
                f"(changed: {', '.join(diffs[:5])}). Its results are kept: use another suite name "
                f"or output_dir, or move that folder away to rerun it")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(resolved, sort_keys=False))


def _diff(stored, resolved, defaults=None, prefix="") -> list[str]:
    """Dotted keys whose values differ. A key the stored config lacks is a setting added to the
    benchmark after the run was made: it differs only when its value is not the setting's default."""
    if isinstance(stored, dict) and isinstance(resolved, dict):
        defaults = defaults if isinstance(defaults, dict) else {}
        out = []
        for k in sorted(set(stored) | set(resolved), key=str):
            default = defaults.get(k, NO_DEFAULT)
            if k not in stored and default is not NO_DEFAULT and resolved[k] == default:
                continue
            out += _diff(stored.get(k), resolved.get(k), default, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if stored == resolved else [prefix]


class Runner:
    def __init__(self, suite: Suite, progress: SuiteProgress | None = None):
        self.suite = suite
        self.device = resolve_device(suite.settings.device)
        if suite.settings.cpu_threads and self.device.type == "cpu":
            torch.set_num_threads(suite.settings.cpu_threads)
        self._datasets = {}
        self.progress = progress
        self.runs = expand(suite)

    def dataset(self, component: Component):
        if component.label not in self._datasets:
            self._datasets[component.label] = component.cls(component.options, cache_dir(self.suite) / "datasets")
        return self._datasets[component.label]

    def context(self, run_dir: Path, seed: int):
        weights = Path(self.suite.settings.weights_dir) if self.suite.settings.weights_dir else None
        return RunContext(run_dir=run_dir, seed=seed, device=self.device,
                          evaluation=self.suite.settings.evaluation, cache_dir=cache_dir(self.suite),
                          weights_dir=weights, log=self.progress.log if self.progress else print,
                          validation=self.suite.settings.validation)

    def selection(self, run: Run) -> Selection | None:
        """The run's evaluation points and kept checkpoints; None when validation is off."""
        if not self.suite.settings.validation.enabled:
            return None
        return Selection(self.suite.settings.validation, run.directory, run.run_id, self._log)

    def build_task(self, run: Run):
        seed_everything(run.seed)
        method = run.method.cls(run.method_options)
        if self.suite.settings.weights_dir:
            method.weights_dir = Path(self.suite.settings.weights_dir)
        task = run.task.cls(run.task_options, self.dataset(run.dataset), method,
                            self.context(run.directory, run.seed))
        task.setup()
        return task

    def train(self, run: Run, stop_at: int | None = None):
        """Train ``run`` to the end (or to ``stop_at`` steps, for tests), resuming from its
        checkpoint; returns the task."""
        check_config(run)
        task = self.build_task(run)
        if run.checkpoint_path.exists():
            ckpt = load_checkpoint(run.checkpoint_path, run.run_id, map_location=self.device)
            task.load_state_dict(ckpt["task"])
            set_rng_state(ckpt["rng"])
            self._log(f"  resumed {run.run_id} at step {task.step}")
            if self.progress:
                self.progress.resumed(run.run_id, task.step)
        selection = self.selection(run)
        if selection:
            selection.start(task)
        every = self.suite.settings.checkpoint_every
        end = task.total_steps if stop_at is None else min(stop_at, task.total_steps)
        while task.step < end:
            started = time.perf_counter()
            values = task.train_step()
            if self.progress:
                self.progress.step(run.run_id, task.step, task.total_steps, time.perf_counter() - started, values)
            point = selection is not None and selection.is_point(task.step, task.total_steps)
            if point:
                selection.evaluate(task)
            if point or task.step % every == 0 or task.step == end:
                save_checkpoint(run.checkpoint_path, run.run_id, task.step, task.state_dict())
            if point:
                selection.keep_best(task)
        return task

    def _log(self, message: str) -> None:
        (self.progress.log if self.progress else print)(message)

    def finish(self, run: Run, task, train_seconds: float) -> dict:
        started = time.perf_counter()
        result = task.evaluate()
        save_samples(run.directory / "samples", result.samples)
        record = {
            "run_id": run.run_id, "suite": self.suite.name, "task": run.task.label, "dataset": run.dataset.label,
            "method": run.method.label, "method_type": run.method.cls.registry_name,
            "preset": run.method.preset, "seed": run.seed, "steps": task.step,
            "metrics": result.metrics,
            "protocol": {**result.protocol, **task.method.protocol_notes(), "checkpoint": "last"},
            "train_seconds": round(train_seconds, 1), "eval_seconds": round(time.perf_counter() - started, 1),
            "device": str(self.device), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        selection = self.selection(run)
        if selection:
            record["selection"] = self.selected_checkpoints(run, task, selection, result.metrics)
            record["validation"] = {**dataclasses.asdict(self.suite.settings.validation),
                                    "points": len({r["step"] for r in selection.records()}),
                                    "records": selection.evals_path.name}
            record["eval_seconds"] = round(time.perf_counter() - started, 1)
        write_json(run.metrics_path, record)
        if selection:
            selection.discard()
        return record

    def selected_checkpoints(self, run: Run, task, selection: Selection, last_metrics: dict) -> dict:
        """metrics.json's ``selection``: each rule's checkpoint (its step, the FID that chose it) and
        its test scores under the task's full test protocol (``Task.evaluate``), computed in
        ``selection/<rule>/`` of the run folder; a rule choosing the last step reuses the last
        checkpoint's scores. Leaves ``task`` holding the weights evaluated last."""
        out = {"last": {"step": task.step, "metrics": last_metrics, "rule": RULES["last"], "optimistic": False}}
        scored = {task.step: last_metrics}
        ctx = task.ctx
        for rule, (step, score) in selection.chosen().items():
            if step not in scored:
                task.load_state_dict(selection.load_best(rule, self.device))
                task.ctx = dataclasses.replace(ctx, run_dir=run.directory / "selection" / rule)
                try:
                    result = task.evaluate()
                finally:
                    task.ctx = ctx
                save_samples(run.directory / "selection" / rule / "samples", result.samples)
                scored[step] = result.metrics
            out[rule] = {"step": step, "metrics": scored[step], "rule": RULES[rule],
                         "chosen_by": f"{RULE_SPLIT[rule]} {SCORE} {score:.4f}",
                         "optimistic": rule == "best_test"}
        return out

    def identity(self, task: Component, dataset: Component) -> None:
        directory = identity_dir(self.suite, task, dataset)
        if (directory / "metrics.json").exists():
            return
        ctx = self.context(directory, 0)
        result = task.cls.evaluate_identity(task.options, self.dataset(dataset), ctx)
        save_samples(directory / "samples", result.samples)
        write_json(directory / "metrics.json", {
            "run_id": f"{task.label}/{dataset.label}/identity", "suite": self.suite.name, "task": task.label,
            "dataset": dataset.label, "method": "identity", "method_type": "identity", "preset": "",
            "seed": 0, "steps": 0, "metrics": result.metrics, "protocol": result.protocol})

    def jobs(self) -> list[Job]:
        """The identity rows, then every unfinished run (finished ones are logged as skipped), the
        runs of different datasets alternating: parallel workers then start on different datasets,
        so that what a dataset's runs share and one of them builds first (the compression task's
        teacher) is built while another worker trains elsewhere instead of waiting for it."""
        jobs = [Job("identity", task_index=ti, dataset_index=di) for ti in range(len(self.suite.tasks))
                for di in range(len(self.suite.datasets))]
        by_dataset: dict[str, list[Job]] = {}
        for i, run in enumerate(self.runs):
            header = f"[run {i + 1}/{len(self.runs)}] {run.run_id}"
            if run.metrics_path.exists():
                self._log(f"{header}: finished earlier, skipped")
            else:
                by_dataset.setdefault(run.dataset.label, []).append(Job("run", run_index=i, header=header))
        queues = list(by_dataset.values())
        for k in range(max((len(q) for q in queues), default=0)):
            jobs += [q[k] for q in queues if k < len(q)]
        return jobs

    def run_all(self) -> list[tuple[str, str]]:
        """Score the identity rows, then run every unfinished run (``workers`` jobs at a time);
        returns (run_id, error) for the jobs that failed."""
        jobs = self.jobs()
        workers = min(self.suite.settings.workers, len(jobs))
        if workers <= 1:
            outcomes = (self.do(job) for job in jobs)
        else:
            outcomes = self._execute_in_workers(jobs, workers)
        return [failure for failure in outcomes if failure is not None]

    def job_name(self, job: Job) -> str:
        if job.kind == "run":
            return self.runs[job.run_index].run_id
        return _identity_name(self.suite.tasks[job.task_index], self.suite.datasets[job.dataset_index])

    def do(self, job: Job) -> tuple[str, str] | None:
        """One job of ``run_all``; returns (name, error) when it failed."""
        if job.kind == "identity":
            return self.score_identity(self.suite.tasks[job.task_index], self.suite.datasets[job.dataset_index])
        return self.execute(self.runs[job.run_index], job.header)

    def score_identity(self, task: Component, dataset: Component) -> tuple[str, str] | None:
        self._log(f"[identity] {task.label}/{dataset.label}: scoring the inputs as outputs")
        try:
            self.identity(task, dataset)
        except BenchmarkError as exc:
            directory = identity_dir(self.suite, task, dataset)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "error.log").write_text(traceback.format_exc())  # the report names the reason
            self._log(f"  FAILED: {exc}")
            return _identity_name(task, dataset), str(exc)
        return None

    def execute(self, run: Run, header: str) -> tuple[str, str] | None:
        """Train (or resume) and evaluate one run; a failure is logged with its traceback in the
        run folder and returned as (run_id, message) instead of stopping the suite."""
        self._log(f"{header}: training on {self.device}")
        started = time.perf_counter()
        try:
            task = self.train(run)
            record = self.finish(run, task, time.perf_counter() - started)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one broken run must not stop the suite
            run.directory.mkdir(parents=True, exist_ok=True)
            (run.directory / "error.log").write_text(traceback.format_exc())
            message = str(exc) if isinstance(exc, BenchmarkError) else f"{type(exc).__name__}: {exc}"
            if self.progress:
                self.progress.abandon(run.run_id, _planned_or_zero(run))
            self._log(f"{header}: FAILED ({message}); traceback in {run.directory / 'error.log'}")
            return run.run_id, message
        shown = ", ".join(f"{k} {v:.2f}" for k, v in record["metrics"].items())
        self._log(f"{header}: done in {format_seconds(time.perf_counter() - started)}: {shown}")
        return None

    def _execute_in_workers(self, jobs: list[Job], workers: int):
        """Jobs spread over ``workers`` processes, each rebuilding the suite from its config;
        yields each job's outcome as it finishes, with the suite's progress."""
        runs = self.runs
        steps = [runs[job.run_index].planned_steps() if job.kind == "run" else 0 for job in jobs]
        total, done = sum(steps), 0
        started = time.monotonic()
        self._log(f"{len(jobs)} job(s) in {workers} worker processes")
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                                 initargs=(self.suite.raw, self.suite.source, str(self.suite.base_dir))) as pool:
            futures = {pool.submit(_worker_do, job): k for k, job in enumerate(jobs)}
            try:
                for future in as_completed(futures):
                    k = futures[future]
                    if steps[k]:
                        done += steps[k]
                        elapsed = time.monotonic() - started
                        eta = elapsed / max(done, 1) * (total - done)
                        self._log(f"[suite] {done}/{total} training steps finished, "
                                  f"{format_seconds(elapsed)} elapsed, ETA {format_seconds(eta)}")
                    try:
                        yield future.result()
                    except Exception as exc:  # noqa: BLE001 - a worker process died
                        yield self.job_name(jobs[k]), f"worker process failed: {type(exc).__name__}: {exc}"
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def planned_steps(self) -> int:
        """Training steps still to do across the suite (for the suite ETA)."""
        return sum(run.planned_steps() for run in self.runs if not run.metrics_path.exists())


def _planned_or_zero(run: Run) -> int:
    try:
        return run.planned_steps()
    except BenchmarkError:  # the run failed because its options are invalid
        return 0


def _identity_name(task: Component, dataset: Component) -> str:
    return f"{task.label}/{dataset.label}/identity"


# -- worker processes (``workers`` > 1) --------------------------------------------------------

_WORKER: dict = {}


def _worker_start(raw: dict, source: str, base_dir: str) -> None:
    from .config import suite_from_dict
    suite = suite_from_dict(raw, source, Path(base_dir))
    _WORKER["runner"] = Runner(suite, SuiteProgress(0, run_eta_only=True))


def _worker_do(job: Job) -> tuple[str, str] | None:
    return _WORKER["runner"].do(job)
