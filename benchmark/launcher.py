"""Job launchers (``launcher:`` of a suite): each job of the suite (an identity row or a run) in its
own job through submitit, on SLURM (``slurm``) or as processes of this machine
(``submitit_local``). A job rebuilds the suite from its config and runs one job of
:class:`~benchmark.runner.Runner` under the run's lock. Pre-emption and timeouts: submitit calls
:meth:`SuiteJob.checkpoint`, which hands back the same job, and requeues it; it resumes the run from
its last checkpoint (the run's own, written every ``checkpoint_every`` steps: at most that many
steps are trained again, with the same numbers). A job that ended without a result (killed, node
failure) is submitted again while the command waits. The command shows which jobs are pending,
running, done or failed, and returns when all have ended (or right after submitting, ``--no-wait``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import Suite
from .core.atomic import atomic_write
from .core.errors import ConfigError
from .progress import SuiteProgress, format_seconds
from .run_folder import FINISHED
from .runner import Job, Runner


LIVE_SLURM_STATES = ("PENDING", "RUNNING", "REQUEUE", "CONFIGURING", "RESIZING", "SUSPENDED", "COMPLETING")
"""SLURM job states (prefixes) of a job that has not ended."""


def import_submitit(launcher: str):
    """The submitit module, or an error saying how to install it."""
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError(f"launcher '{launcher}' needs the optional package submitit (>= 1.5): "
                          "pip install 'i2i-bench[cluster]' (or pip install submitit), or use "
                          "launcher: local") from exc
    return submitit


class SuiteJob:
    """What one submitted job runs: job ``job`` of the suite given by its config mapping (the
    suite is rebuilt in the job's process, plugins included). Checkpointable in submitit's sense:
    :meth:`checkpoint` returns the submission to requeue, which is this same job, because the
    run's own checkpoint holds all of its state."""

    def __init__(self, raw: dict, source: str, base_dir: str, job: Job):
        self.raw, self.source, self.base_dir, self.job = raw, source, base_dir, job

    def __call__(self):
        from .config import suite_from_dict
        suite = suite_from_dict(self.raw, self.source, Path(self.base_dir))
        export_distributed_environment()
        runner = Runner(suite, SuiteProgress(0, run_eta_only=True))
        return runner.do(self.job, wait=True)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit
        return submitit.helpers.DelayedSubmission(SuiteJob(self.raw, self.source, self.base_dir, self.job))


def export_distributed_environment() -> None:
    """In a job of several processes (``tasks_per_node`` x ``nodes`` > 1), the variables torchrun
    would set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), from submitit's job
    environment: the runner then trains the job's run data-parallel over its processes. Each process
    keeps every GPU visible and takes ``cuda:LOCAL_RANK``, as under torchrun."""
    import submitit
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def make_executor(suite: Suite):
    """A submitit executor with the suite's ``launcher:`` settings."""
    settings = suite.settings.launcher
    submitit = import_submitit(settings.type)
    folder = suite.launcher_dir / "%j"
    if settings.type == "slurm":
        if submitit.SlurmExecutor.affinity() <= 0:
            raise ConfigError("launcher 'slurm': SLURM's commands (srun, sbatch) are not found on this "
                              "machine; run on a login node of the cluster, or try the config here with "
                              "launcher.type=submitit_local")
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                         slurm_max_num_timeout=settings.max_requeues)
        params: dict[str, Any] = {
            "timeout_min": settings.timeout_min, "gpus_per_node": settings.gpus_per_node,
            "cpus_per_task": settings.cpus_per_task, "nodes": settings.nodes,
            "tasks_per_node": settings.tasks_per_node,
            "name": settings.job_name or f"i2i-{suite.name}"}
        if settings.mem_gb:
            params["mem_gb"] = settings.mem_gb
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(settings, key):
                params[f"slurm_{key}"] = getattr(settings, key)
        if settings.slurm_additional_parameters:
            params["slurm_additional_parameters"] = dict(settings.slurm_additional_parameters)
        if settings.max_parallel:
            params["slurm_array_parallelism"] = settings.max_parallel
        executor.update_parameters(**params)
        return executor
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=settings.max_requeues)
    executor.update_parameters(timeout_min=settings.timeout_min, tasks_per_node=settings.tasks_per_node)
    return executor


@dataclass
class Tracked:
    """A job of the suite and its current submitted job."""
    job: Job
    name: str
    submitted: Any = None
    tries: int = 0
    outcome: str = ""  # '' while not ended; 'done' or 'failed'
    message: str = ""
    history: list = field(default_factory=list)


class Launcher:
    """Submits the unfinished jobs of a suite and (unless ``wait`` is off) follows them to the end."""

    def __init__(self, suite: Suite, progress: SuiteProgress | None = None, executor=None,
                 redo_broken: bool = False):
        self.suite = suite
        self.settings = suite.settings.launcher
        progress = progress or SuiteProgress(0)
        self.log: Callable[[str], None] = progress.log
        self.executor = executor if executor is not None else make_executor(suite)
        self.runner = Runner(suite, progress, redo_broken=redo_broken)
        self.jobs_file = suite.launcher_dir / "jobs.json"
        self.tracked: list[Tracked] = []

    def launch(self, wait: bool = True) -> list[tuple[str, str]]:
        """Submit every unfinished job; with ``wait``, follow them until all have ended and return
        (name, error) for those that failed."""
        local_limit = self.settings.max_parallel if self.settings.type != "slurm" else 0
        if not wait and local_limit:
            raise ConfigError("--no-wait with launcher 'submitit_local' and max_parallel > 0: the "
                              "limit is kept by the waiting command; set max_parallel: 0 or wait")
        self.tracked = [Tracked(job, self.runner.job_name(job)) for job in self.runner.jobs()]
        refused = self.runner.refused  # stale results, broken metrics.json: listed with the failures
        if not self.tracked:
            self.log("[launcher] nothing to do: every run has finished" + (" or was refused" if refused else ""))
            return refused
        self._adopt_live_jobs()
        if local_limit:
            self._submit(self.tracked[:local_limit])
        else:
            self._submit([e for e in self.tracked if e.submitted is None])
        if not wait:
            self.log(f"[launcher] {len(self.tracked)} job(s) submitted ({self.jobs_file}); "
                     "`python -m benchmark report CONFIG` writes the report once they have ended")
            return refused
        return refused + self._follow(local_limit)

    def _adopt_live_jobs(self) -> None:
        """On SLURM, a job that an earlier command submitted for a run and that is still queued or
        running (jobs.json, then SLURM's state) is followed instead of submitting a second one, which
        would only wait for the run's lock and hold an allocation meanwhile."""
        if self.settings.type != "slurm" or not self.jobs_file.is_file():
            return
        import submitit
        try:
            data = json.loads(self.jobs_file.read_text())
        except (OSError, json.JSONDecodeError):
            return
        earlier = data.get("jobs", {}) if data.get("launcher") == "slurm" else {}
        for entry in self.tracked:
            info = earlier.get(entry.name)
            if not info:
                continue
            job = submitit.SlurmJob(self.suite.launcher_dir / "%j", info["job_id"])
            try:
                state = str(job.state).upper()
            except Exception:  # noqa: BLE001 - sacct/squeue unavailable: submit as usual
                continue
            if state.startswith(LIVE_SLURM_STATES):
                entry.submitted, entry.tries = job, 1
                entry.history = [*info.get("earlier_jobs", []), info["job_id"]]
                self.log(f"[launcher] {entry.name}: job {info['job_id']} of an earlier command is {state}; "
                         "following it instead of submitting another")

    def _callable(self, job: Job) -> SuiteJob:
        return SuiteJob(self.suite.raw, self.suite.source, str(self.suite.base_dir), job)

    def _submit(self, entries: list[Tracked]) -> None:
        if len(entries) > 1:
            with self.executor.batch():  # one job array on SLURM
                pending = [(e, self.executor.submit(self._callable(e.job))) for e in entries]
            for entry, submitted in pending:
                self._submitted(entry, submitted)
        else:
            for entry in entries:
                self._submitted(entry, self.executor.submit(self._callable(entry.job)))
        self._write_jobs_file()

    def _submitted(self, entry: Tracked, submitted) -> None:
        entry.submitted, entry.tries = submitted, entry.tries + 1
        entry.history.append(submitted.job_id)
        self.log(f"[launcher] {entry.name}: submitted as job {submitted.job_id}"
                 + (f" (try {entry.tries})" if entry.tries > 1 else ""))

    def _write_jobs_file(self) -> None:
        data = {e.name: {"job_id": e.submitted.job_id, "earlier_jobs": e.history[:-1],
                         "stdout": str(e.submitted.paths.stdout), "stderr": str(e.submitted.paths.stderr)}
                for e in self.tracked if e.submitted is not None}
        with atomic_write(self.jobs_file, "w", encoding="utf-8") as f:
            json.dump({"suite": self.suite.name, "launcher": self.settings.type, "jobs": data}, f, indent=1)

    def _follow(self, local_limit: int) -> list[tuple[str, str]]:
        started, shown, last_shown = time.monotonic(), "", 0.0
        while True:
            for entry in self.tracked:
                if entry.submitted is not None and not entry.outcome and entry.submitted.done():
                    self._ended(entry)
            if local_limit:
                running = sum(1 for e in self.tracked if e.submitted is not None and not e.outcome)
                waiting = [e for e in self.tracked if e.submitted is None]
                if waiting and running < local_limit:
                    self._submit(waiting[:local_limit - running])
            line = self.summary()
            now = time.monotonic()
            if line != shown or now - last_shown > 300:
                self.log(f"[launcher] {line} ({format_seconds(now - started)})")
                shown, last_shown = line, now
            if all(e.outcome for e in self.tracked):
                return [(e.name, e.message) for e in self.tracked if e.outcome == "failed"]
            time.sleep(self.settings.poll_s)

    def _ended(self, entry: Tracked) -> None:
        """A submitted job ended: done, failed (the run's own error, in its error.log), or ended
        without a result (killed, node failure): then it is submitted again, up to
        ``max_resubmissions`` times."""
        try:
            result = entry.submitted.results()[0]  # rank 0's, for a job of several processes
        except Exception as exc:  # noqa: BLE001 - the job's process died or raised outside the run
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
            if self._finished(entry):
                entry.outcome = "done"
                return
            if entry.tries <= self.settings.max_resubmissions:
                self.log(f"[launcher] {entry.name}: job {entry.submitted.job_id} ended without a result "
                         f"({reason}); submitting it again, it resumes from its last checkpoint")
                self._submit([entry])
                return
            entry.outcome = "failed"
            entry.message = (f"job {entry.submitted.job_id} ended without a result {entry.tries} time(s) "
                             f"({reason}); its log: {entry.submitted.paths.stderr}")
            self.log(f"[launcher] {entry.name}: FAILED: {entry.message}")
            return
        if result is not None and not isinstance(result, tuple):  # Busy cannot come back (jobs wait)
            result = (entry.name, f"unexpected result {result!r}")
        if result is None:
            entry.outcome = "done"
        else:
            entry.outcome, entry.message = "failed", result[1]
            self.log(f"[launcher] {entry.name}: FAILED: {entry.message}")

    def _finished(self, entry: Tracked) -> bool:
        if entry.job.kind == "run":
            return self.runner.runs[entry.job.run_index].folder.state().kind == FINISHED
        return False

    def summary(self) -> str:
        """'N pending, N running, N done, N failed', with the names of the running jobs."""
        groups: dict[str, list[str]] = {"pending": [], "running": [], "done": [], "failed": []}
        for entry in self.tracked:
            if entry.outcome:
                groups[entry.outcome].append(entry.name)
            elif entry.submitted is None:
                groups["pending"].append(entry.name)
            else:
                state = str(entry.submitted.state).upper()
                pending = state.startswith(("PENDING", "REQUEUE", "CONFIGURING", "RESIZING", "SUSPENDED"))
                groups["pending" if pending else "running"].append(f"{entry.name} (job {entry.submitted.job_id})")
        counts = ", ".join(f"{len(v)} {k}" for k, v in groups.items())
        return counts + (f" | running: {', '.join(groups['running'])}" if groups["running"] else "")


def launch(suite: Suite, progress: SuiteProgress | None = None, wait: bool = True,
           redo_broken: bool = False) -> list[tuple[str, str]]:
    """Run the suite's unfinished jobs through its ``launcher:`` (slurm or submitit_local)."""
    return Launcher(suite, progress, redo_broken=redo_broken).launch(wait)


def job_states(suite: Suite) -> list[str]:
    """Lines 'name: job ID STATE' from the jobs file of the last ``run`` (for ``report`` after
    ``run --no-wait``); empty when there is none or submitit is not installed."""
    path = suite.launcher_dir / "jobs.json"
    if not path.is_file():
        return []
    try:
        import submitit
    except ImportError:
        return []
    data = json.loads(path.read_text())
    lines = []
    for name, info in data.get("jobs", {}).items():
        folder = suite.launcher_dir / "%j"
        try:
            if data.get("launcher") == "slurm":
                state = submitit.SlurmJob(folder, info["job_id"]).state
            else:  # a job of an earlier process: FINISHED once its result is written
                state = submitit.local.local.LocalJob(folder, info["job_id"]).state
        except Exception as exc:  # noqa: BLE001 - sacct missing or the job forgotten
            state = f"UNKNOWN ({type(exc).__name__})"
        lines.append(f"{name}: job {info['job_id']} {state} (log: {info.get('stderr', '?')})")
    return lines
