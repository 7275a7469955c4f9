"""Expands a suite into runs and executes them: skips finished runs, refuses results of another
config and broken ones (benchmark/run_folder.py), resumes interrupted runs from their last
checkpoint, and keeps going when one run fails."""
from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from filelock import FileLock, Timeout

from methods.base import MethodEnvironment

from .core.atomic import make_folder, storage_error
from .core.context import RunContext
from .core.distributed import Distributed, from_environment, init_distributed
from .core.checkpoint import load_checkpoint, save_checkpoint, seed_everything, set_rng_state
from .config import Component, Run, Suite, identity_name, identity_task_options
from .core.errors import BenchmarkError, ConfigError
from .core.interrupt import Interrupted, deferred_stop
from .core.image_io import write_png
from .core.locks import waiting_lock
from .loss_watch import LossWatch
from .progress import LossLog, SuiteProgress, format_seconds, tensorboard_available
from .selection import RULE_SPLIT, RULES, SCORE, Selection
from .inputs import CODE, INPUTS, code_digests, dataset_identity, inputs_of_run, row_inputs
from .run_folder import BROKEN, FINISHED, RUN_LOCK, STALE, UNFINISHED, RunFolder
from .sanity import settings_note


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


@dataclass(frozen=True)
class Busy:
    """Outcome of a run whose lock another process holds (another ``run`` command, worker or job
    is training it): :meth:`Runner.run_all` comes back to it after its other jobs."""
    run_id: str


def run_lock(run: Run) -> FileLock:
    """The lock on ``run``'s folder (:meth:`RunFolder.lock`): held while a process trains and
    evaluates the run, so that two ``run`` commands, workers or jobs never train it at once."""
    return run.folder.lock()


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The configured device; under torchrun (``local_rank`` given) 'auto' and 'cuda' mean this
    process's GPU, ``cuda:<LOCAL_RANK>``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(name)


def write_error_log(path: Path) -> str:
    """Write the traceback being handled to ``path``; says where it is, or why it is not there (a
    full or read-only disk must not turn the run's clear error into a second traceback)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(traceback.format_exc())
    except OSError as exc:
        return f"its traceback could not be written to {path} ({exc.strerror})"
    return f"traceback in {path}"


def save_samples(directory: Path, samples: dict[str, torch.Tensor]) -> None:
    make_folder(directory, "the sample images")
    for name, images in samples.items():
        for i, image in enumerate(images):
            write_png(image, directory / f"{name}_{i:02d}.png")


def check_config(run: Run, write: bool = True, log=print) -> None:
    """A run directory belongs to one resolved config (:meth:`RunFolder.bind`). With ``write`` off
    (the ranks other than 0 under torchrun) a new run's config is not written."""
    run.folder.bind(write, log)


def task_imposed_note(run: Run) -> dict[str, str]:
    """The protocol entry naming the method options the task's patch policy set ({} if none)."""
    if not run.task_imposed:
        return {}
    return {"task_imposed": ", ".join(f"{k}={v}" for k, v in run.task_imposed.items())}


class Runner:
    def __init__(self, suite: Suite, progress: SuiteProgress | None = None,
                 distributed: Distributed | None = None, redo_broken: bool = False):
        self.suite = suite
        self.redo_broken = redo_broken
        """A broken metrics.json is moved aside and its run done again (``run --redo-broken``);
        without it such a run is refused (listed as failed) and left as it is."""
        self.refused: list[tuple[str, str]] = []
        """(name, why) of the rows :meth:`jobs` refused: stale results, broken metrics.json."""
        # -- torchrun (benchmark/core/distributed.py): every rank walks the same runs together --
        self.distributed = from_environment() if distributed is None else distributed
        if self.distributed.enabled:
            if suite.settings.workers > 1:
                raise ConfigError(f"workers: {suite.settings.workers} under torchrun: the "
                                  f"{self.distributed.world_size} processes train one run at a time "
                                  f"together; set workers: 1")
            self.device = resolve_device(suite.settings.device, self.distributed.local_rank)
            init_distributed(self.distributed, self.device)
            if not self.distributed.is_main:
                progress = None  # rank 0 logs
        else:
            self.device = resolve_device(suite.settings.device)
        # -- end torchrun --
        if suite.settings.cpu_threads and self.device.type == "cpu":
            torch.set_num_threads(suite.settings.cpu_threads)
        self._datasets = {}
        self.progress = progress
        self.runs = expand(suite)
        self._tensorboard_checked = False
        self._loss_notes: dict[str, dict[str, str]] = {}
        """Per run: the terms its training left exactly 0 (``LossWatch.protocol``), for its record."""

    def dataset(self, component: Component):
        if component.label not in self._datasets:
            self._datasets[component.label] = component.cls(component.options, cache_dir(self.suite) / "datasets")
        return self._datasets[component.label]

    @property
    def weights_dir(self) -> Path | None:
        """The config's folder of pretrained weights, if it names one."""
        return Path(self.suite.settings.weights_dir) if self.suite.settings.weights_dir else None

    def context(self, run_dir: Path, seed: int):
        return RunContext(run_dir=run_dir, seed=seed, device=self.device,
                          evaluation=self.suite.settings.evaluation, cache_dir=cache_dir(self.suite),
                          weights_dir=self.weights_dir, log=self._log, distributed=self.distributed,
                          validation=self.suite.settings.validation)

    def selection(self, run: Run) -> Selection | None:
        """The run's evaluation points and kept checkpoints; None when validation is off."""
        if not self.suite.settings.validation.enabled:
            return None
        return Selection(self.suite.settings.validation, run.directory, run.run_id, self._log,
                         self.distributed)

    def build_method(self, run: Run):
        """The run's method, told the weights folder and this process's place under torchrun."""
        return run.method.cls(run.method_options, MethodEnvironment(self.weights_dir, self.distributed))

    def build_task(self, run: Run):
        if self.distributed.enabled and not run.task.cls.trains_distributed:
            raise ConfigError(f"task '{run.task.label}' does not train under torchrun yet; "
                              f"run it in one process")
        seed_everything(run.seed)
        method = self.build_method(run)
        task = run.task.cls(run.task_options, self.dataset(run.dataset), method,
                            self.context(run.directory, run.seed))
        task.setup()
        return task

    def train(self, run: Run, stop_at: int | None = None):
        """Train ``run`` to the end (or to ``stop_at`` steps, for tests), resuming from its
        checkpoint; returns the task."""
        dist_ = self.distributed
        run.folder.bind(write=dist_.is_main, log=self._log)
        run.folder.bind_inputs(self.run_inputs(run), write=dist_.is_main)
        task = self.build_task(run)
        if dist_.broadcast(run.checkpoint_path.exists()):  # every rank resumes, or none
            ckpt = load_checkpoint(run.checkpoint_path, run.run_id, map_location=self.device)
            task.load_state_dict(ckpt["task"])
            set_rng_state(ckpt["rng"])
            self._log(f"  resumed {run.run_id} at step {task.step}")
            if self.progress:
                self.progress.resumed(run.run_id, task.step)
        selection = self.selection(run)
        if selection:
            selection.start(task)
        settings = self.suite.settings
        every = settings.checkpoint_every
        end = task.total_steps if stop_at is None else min(stop_at, task.total_steps)
        losses = self.loss_log(run, task.step) if dist_.is_main else None  # rank 0 writes (torchrun)
        watch = LossWatch(losses.rows if losses is not None else ())
        try:
            # SIGTERM / SIGINT: finish the step, checkpoint it, stop (benchmark/core/interrupt.py)
            with deferred_stop(enabled=not dist_.enabled) as stop:
                while task.step < end:
                    started = time.perf_counter()
                    values = task.train_step()
                    watch.check(task.step, values)
                    if losses is not None:
                        losses.write(task.step, values)
                    if self.progress:
                        self.progress.step(run.run_id, task.step, task.total_steps, time.perf_counter() - started, values)
                    point = selection is not None and selection.is_point(task.step, task.total_steps)
                    if point:
                        selection.evaluate(task)
                    stopping = bool(stop)
                    if (point or task.step % every == 0 or task.step == end or stopping) and dist_.is_main:
                        losses.sync()  # every row up to the checkpoint's step is on disk before it
                        save_checkpoint(run.checkpoint_path, run.run_id, task.step, task.state_dict())
                    if point:
                        selection.keep_best(task)
                    if stopping:
                        raise Interrupted(stop.signum, task.step,
                                          f"run {run.run_id}, checkpoint {run.checkpoint_path}")
        finally:
            if losses is not None:
                losses.close()
        self._loss_notes[run.run_id] = watch.protocol()
        return task

    def loss_log(self, run: Run, start_step: int) -> LossLog:
        """The run's ``losses.csv`` (and TensorBoard events), cut back to ``start_step``."""
        settings = self.suite.settings
        if settings.tensorboard and not self._tensorboard_checked:
            self._tensorboard_checked = True
            if not tensorboard_available():
                self._log("  tensorboard is not installed: losses go to each run's losses.csv only "
                          "(pip install 'i2i-bench[tensorboard]' for event files)")
        return LossLog(run.directory, start_step, every=settings.log_every, tensorboard=settings.tensorboard,
                       log=self._log)

    def _log(self, message: str) -> None:
        if self.distributed.is_main:
            (self.progress.log if self.progress else print)(message)

    def finish(self, run: Run, task, train_seconds: float) -> dict:
        started = time.perf_counter()
        result = task.evaluate()  # every rank: sharded under torchrun
        if self.distributed.is_main:
            save_samples(run.directory / "samples", result.samples)
        record = {
            "run_id": run.run_id, "suite": self.suite.name, "task": run.task.label, "dataset": run.dataset.label,
            "method": run.method.label, "method_type": run.method.cls.registry_name,
            "preset": run.method.preset, "seed": run.seed, "steps": task.step,
            "metrics": result.metrics,
            "protocol": {**result.protocol, **task.method.protocol_notes(), **task_imposed_note(run),
                         **self._loss_notes.pop(run.run_id, {}), **settings_note(run), "checkpoint": "last"},
            "train_seconds": round(train_seconds, 1), "eval_seconds": round(time.perf_counter() - started, 1),
            "device": str(self.device), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            INPUTS: inputs_of_run(run, task.dataset.identity),
            CODE: code_digests(run.method.cls, run.task.cls),
        }
        if self.distributed.enabled:
            record["processes"] = self.distributed.world_size
        selection = self.selection(run)
        if selection:
            record["selection"] = self.selected_checkpoints(run, task, selection, result.metrics)
            record["validation"] = {**dataclasses.asdict(self.suite.settings.validation),
                                    "points": len({r["step"] for r in selection.records()}),
                                    "records": selection.evals_path.name}
            record["eval_seconds"] = round(time.perf_counter() - started, 1)
        if self.distributed.is_main:
            run.folder.write_metrics(record)
        if selection:
            selection.discard()
        self.distributed.barrier()
        return record

    def selected_checkpoints(self, run: Run, task, selection: Selection, last_metrics: dict) -> dict:
        """metrics.json's ``selection``: each rule's checkpoint (its step, the FID that chose it) and
        its test scores under the task's full test protocol (``Task.evaluate``), computed in
        ``selection/<rule>/`` of the run folder; a rule choosing the last step reuses the last
        checkpoint's scores. A checkpoint deleted once the run had finished (``run --redo-broken``
        writes metrics.json again) is not scored again: its scores are read from what
        :meth:`Selection.save_scores` kept, and the rule says so. Leaves ``task`` holding the weights
        evaluated last."""
        out = {"last": {"step": task.step, "metrics": last_metrics, "rule": RULES["last"], "optimistic": False}}
        scored = {task.step: last_metrics}
        kept_scores: set[int] = set()
        ctx = task.ctx
        for rule, (step, score) in selection.chosen().items():
            if step not in scored and not selection.best_path(rule).exists():  # deleted by discard()
                earlier = selection.earlier_scores(rule, step)
                if earlier is not None:
                    self._log(f"  {run.run_id}: the {rule} checkpoint (step {step}) was scored when the run "
                              f"first finished, then deleted; its test scores are read from "
                              f"{selection.scores_path(rule)}")
                    scored[step] = earlier
                    kept_scores.add(step)
            if step not in scored:
                task.load_state_dict(selection.load_best(rule, self.device))
                task.ctx = dataclasses.replace(ctx, run_dir=run.directory / "selection" / rule)
                try:
                    result = task.evaluate()
                finally:
                    task.ctx = ctx
                if self.distributed.is_main:
                    save_samples(run.directory / "selection" / rule / "samples", result.samples)
                scored[step] = result.metrics
            if step != out["last"]["step"]:  # a checkpoint that discard() deletes
                selection.save_scores(rule, step, scored[step])
            out[rule] = {"step": step, "metrics": scored[step], "rule": RULES[rule],
                         "chosen_by": f"{RULE_SPLIT[rule]} {SCORE} {score:.4f}",
                         "optimistic": rule == "best_test"}
            if step in kept_scores:
                out[rule]["scored"] = "when the run first finished (its checkpoint was deleted since)"
        return out

    def identity(self, task: Component, dataset: Component) -> None:
        """Score the identity row of ``task`` and ``dataset`` unless it is finished, holding its
        folder's lock (rank 0 holds it for every rank under torchrun), so that two commands never
        both score it: the second waits, then finds the first one's results."""
        folder = self.suite.identity_folder(task, dataset)
        d = self.distributed
        lock = (waiting_lock(folder.directory / RUN_LOCK, f"[identity] {folder.name}: another process is "
                             "scoring it; waiting", self._log) if d.is_main else contextlib.nullcontext())
        with lock:
            inputs = self.identity_inputs(dataset) if d.is_main else None
            needed = d.broadcast(folder.state(inputs).kind != FINISHED if d.is_main else None)
            if not needed:
                return
            if d.is_main:
                self._refuse_stale_or_broken(folder, inputs)
                folder.bind(log=self._log)
            ctx = self.context(folder.directory, 0)
            result = task.cls.evaluate_identity(identity_task_options(task, dataset), self.dataset(dataset), ctx)
            if not d.is_main:
                d.barrier()
                return
            save_samples(folder.directory / "samples", result.samples)
            folder.write_metrics({
                "run_id": folder.name, "suite": self.suite.name, "task": task.label,
                "dataset": dataset.label, "method": "identity", "method_type": "identity", "preset": "",
                "seed": 0, "steps": 0, "metrics": result.metrics, "protocol": result.protocol,
                INPUTS: inputs})
            d.barrier()

    def run_inputs(self, run: Run) -> dict[str, str | None]:
        """What ``run``'s results are made from besides its config, as it is now (benchmark/inputs.py)."""
        return inputs_of_run(run, dataset_identity(self.dataset(run.dataset)))

    def identity_inputs(self, dataset: Component) -> dict[str, str | None]:
        """What an identity row's results are made from: ``dataset`` as it is now."""
        return row_inputs(dataset_identity(self.dataset(dataset)))

    def _refuse_stale_or_broken(self, folder: RunFolder, inputs: dict[str, str | None]) -> None:
        """Raise when the folder holds results that must not be reused or overwritten: those of
        another config or other ``inputs`` (stale) or a metrics.json that is not valid (broken)."""
        refusal = folder.refusal(folder.state(inputs))
        if refusal:
            raise ConfigError(refusal)

    def triage(self, folder: RunFolder, inputs: dict[str, str | None], header: str) -> bool:
        """Whether the row of ``folder`` (made from ``inputs``) needs work. A finished row is logged
        as skipped; stale results and a broken metrics.json are refused (added to :attr:`refused`),
        or with ``redo_broken`` the broken file is moved aside and the row done again."""
        state = folder.state(inputs)
        if state.kind == FINISHED:
            self._log(f"{header}: finished earlier, skipped")
            return False
        if state.kind == BROKEN and self.redo_broken:
            moved = folder.move_broken_aside()
            self._log(f"{header}: {state.describe(folder.metrics_path)}; moved aside to {moved.name}, done again")
            return True
        if state.kind in (STALE, BROKEN):
            try:
                self._refuse_stale_or_broken(folder, inputs)
            except ConfigError as exc:
                self._log(f"{header}: REFUSED: {exc}")
                self.refused.append((folder.name, str(exc)))
            return False
        return True

    def jobs(self) -> list[Job]:
        """The identity rows, then every unfinished run (finished ones are logged as skipped, stale
        and broken ones refused: :meth:`triage`), the runs of different datasets alternating:
        parallel workers then start on different datasets, so that what a dataset's runs share and
        one of them builds first (the compression task's teacher) is built while another worker
        trains elsewhere instead of waiting for it. Rank 0 decides for every rank under torchrun."""
        self.refused = []
        is_main = self.distributed.is_main
        pairs = [(ti, di) for ti in range(len(self.suite.tasks)) for di in range(len(self.suite.datasets))]
        todo = [is_main and self.triage(self.suite.identity_folder(self.suite.tasks[ti], self.suite.datasets[di]),
                                        self.identity_inputs(self.suite.datasets[di]),
                                        f"[identity] {identity_name(self.suite.tasks[ti], self.suite.datasets[di])}")
                for ti, di in pairs]
        headers = [f"[run {i + 1}/{len(self.runs)}] {run.run_id}" for i, run in enumerate(self.runs)]
        todo += [is_main and self.triage(run.folder, self.run_inputs(run), headers[i]) for i, run in enumerate(self.runs)]
        todo = self.distributed.broadcast(todo)
        jobs = [Job("identity", task_index=ti, dataset_index=di) for (ti, di), do in zip(pairs, todo) if do]
        by_dataset: dict[str, list[Job]] = {}
        for i, run in enumerate(self.runs):
            if todo[len(pairs) + i]:
                by_dataset.setdefault(run.dataset.label, []).append(Job("run", run_index=i, header=headers[i]))
        queues = list(by_dataset.values())
        for k in range(max((len(q) for q in queues), default=0)):
            jobs += [q[k] for q in queues if k < len(q)]
        return jobs

    def run_all(self) -> list[tuple[str, str]]:
        """Score the identity rows, then run every unfinished run (``workers`` jobs at a time);
        returns (run_id, error) for the jobs that failed. A run that another process is training
        (its folder is locked) is skipped at first; after the other jobs this process waits for
        that lock, then takes the run's results, or trains the run itself (resuming it) when the
        other process stopped before finishing it."""
        jobs = self.jobs()
        workers = min(self.suite.settings.workers, len(jobs))
        if workers <= 1:
            outcomes = (self.do(job) for job in jobs)
        else:
            outcomes = self._execute_in_workers(jobs, workers)
        outcomes = list(outcomes)
        busy = {o.run_id for o in outcomes if isinstance(o, Busy)}
        if busy:
            self._log(f"{len(busy)} run(s) held by another process: waiting for them")
            outcomes += [self.do(job, wait=True) for job in jobs
                         if job.kind == "run" and self.runs[job.run_index].run_id in busy]
        return self.refused + [o for o in outcomes if o is not None and not isinstance(o, Busy)]

    def job_name(self, job: Job) -> str:
        if job.kind == "run":
            return self.runs[job.run_index].run_id
        return identity_name(self.suite.tasks[job.task_index], self.suite.datasets[job.dataset_index])

    def do(self, job: Job, wait: bool = False) -> tuple[str, str] | Busy | None:
        """One job of ``run_all``; returns (name, error) when it failed, :class:`Busy` when another
        process holds the run (``wait``: wait for it instead)."""
        if job.kind == "identity":
            return self.score_identity(self.suite.tasks[job.task_index], self.suite.datasets[job.dataset_index])
        return self.execute(self.runs[job.run_index], job.header, wait)

    def score_identity(self, task: Component, dataset: Component) -> tuple[str, str] | None:
        self._log(f"[identity] {task.label}/{dataset.label}: scoring the inputs as outputs")
        try:
            self.identity(task, dataset)
        except BenchmarkError as exc:
            if self.distributed.enabled:
                raise  # under torchrun a failure stops every rank (see execute)
            write_error_log(identity_dir(self.suite, task, dataset) / "error.log")  # the report names the reason
            self._log(f"  FAILED: {exc}")
            return identity_name(task, dataset), str(exc)
        return None

    def execute(self, run: Run, header: str, wait: bool = False) -> tuple[str, str] | Busy | None:
        """Train (or resume) and evaluate one run, holding its lock; a failure is logged with its
        traceback in the run folder and returned as (run_id, message) instead of stopping the
        suite. When another process holds the run's lock: :class:`Busy`, or with ``wait`` wait for
        that process and take its results (or go on from its checkpoint if it stopped early).
        Under torchrun rank 0 holds the lock for every rank and never skips (the ranks must train
        the same runs): it waits, and the ranks follow its decision."""
        d = self.distributed
        if d.enabled and not d.is_main:
            proceed = d.broadcast(None)
            return self._execute_locked(run, header) if proceed else None
        lock = run_lock(run)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not wait and not d.enabled:
                self._log(f"{header}: another process is training it (lock {lock.lock_file}); "
                          "skipped for now")
                return Busy(run.run_id)
            self._log(f"{header}: another process is training it (lock {lock.lock_file}); waiting")
            lock.acquire()
        try:
            inputs = self.run_inputs(run)
            state = run.folder.state(inputs)  # what another process may have left meanwhile
            d.broadcast(state.kind == UNFINISHED)
            if state.kind == FINISHED:
                self._log(f"{header}: finished by another process, skipped")
                return None
            if state.kind != UNFINISHED:
                try:
                    self._refuse_stale_or_broken(run.folder, inputs)
                except ConfigError as exc:
                    self._log(f"{header}: REFUSED: {exc}")
                    return run.run_id, str(exc)
            return self._execute_locked(run, header)
        finally:
            lock.release()

    def _execute_locked(self, run: Run, header: str) -> tuple[str, str] | None:
        self._log(f"{header}: training on {self.device}")
        started = time.perf_counter()
        try:
            task = self.train(run)
            record = self.finish(run, task, time.perf_counter() - started)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one broken run must not stop the suite
            exc = storage_error(exc, getattr(exc, "filename", None) or run.directory) or exc
            log = write_error_log(run.directory / f"error{self._rank_suffix()}.log")
            if self.distributed.enabled:
                # Under torchrun the ranks would go on out of step (a collective waiting forever):
                # stop this process, and torchrun stops the others; rerunning resumes.
                raise exc
            message = str(exc) if isinstance(exc, BenchmarkError) else f"{type(exc).__name__}: {exc}"
            if self.progress:
                self.progress.abandon(run.run_id, _planned_or_zero(run))
            self._log(f"{header}: FAILED ({message}); {log}")
            return run.run_id, message
        shown = ", ".join(f"{k} {v:.2f}" for k, v in record["metrics"].items())
        self._log(f"{header}: done in {format_seconds(time.perf_counter() - started)}: {shown}")
        return None

    def _rank_suffix(self) -> str:
        """'' in one process, '.rank<r>' for the ranks other than 0 under torchrun."""
        return "" if self.distributed.is_main else f".rank{self.distributed.rank}"

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
        return sum(run.planned_steps() for run in self.runs if run.folder.state().kind == UNFINISHED)


def _planned_or_zero(run: Run) -> int:
    try:
        return run.planned_steps()
    except BenchmarkError:  # the run failed because its options are invalid
        return 0


# -- worker processes (``workers`` > 1) --------------------------------------------------------

_WORKER: dict = {}


def _worker_start(raw: dict, source: str, base_dir: str) -> None:
    from .config import suite_from_dict
    suite = suite_from_dict(raw, source, Path(base_dir))
    _WORKER["runner"] = Runner(suite, SuiteProgress(0, run_eta_only=True))


def _worker_do(job: Job) -> tuple[str, str] | None:
    return _WORKER["runner"].do(job)
