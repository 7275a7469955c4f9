"""Launchers and run locks: the ``launcher:`` section, submitit jobs that are killed or pre-empted
and resume bit-exactly, and two ``run`` commands on one suite that never train a run twice."""
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmark.config import suite_from_dict
from benchmark.core.errors import ConfigError
from benchmark.progress import SuiteProgress
from benchmark.report.results import missing_reason
from benchmark.runner import Runner, expand, run_lock

from conftest import flatten_state, slow_cut_plugin, stand_in_plugin, tiny_suite_dict, without_pause

REPO = Path(__file__).resolve().parents[1]

SLOW_PLUGIN = slow_cut_plugin('slow_cut_test', 0.05)


# -- the launcher section ---------------------------------------------------------------------

def test_launcher_section_is_local_by_default_and_validated(tmp_path):
    suite = suite_from_dict(tiny_suite_dict(tmp_path), base_dir=tmp_path)
    assert suite.settings.launcher.type == "local"
    raw = tiny_suite_dict(tmp_path)
    raw["launcher"] = "slurm"  # shorthand for {type: slurm}
    assert suite_from_dict(raw, base_dir=tmp_path).settings.launcher.type == "slurm"
    raw["launcher"] = {"type": "slurm", "partiton": "gpu"}
    with pytest.raises(ConfigError, match=r"launcher: unknown key 'partiton'; nearest valid keys: partition"):
        suite_from_dict(raw, base_dir=tmp_path)
    raw["launcher"] = {"type": "kubernetes"}
    with pytest.raises(ConfigError, match=r"launcher\.type: value 'kubernetes' is not one of 'local', "
                                          r"'submitit_local', 'slurm'"):
        suite_from_dict(raw, base_dir=tmp_path)
    raw["launcher"] = {"type": "slurm", "timeout_min": 0}
    with pytest.raises(ConfigError, match="timeout_min must be >= 1"):
        suite_from_dict(raw, base_dir=tmp_path)
    raw["launcher"] = {"type": "slurm", "folder": "jobs"}
    assert suite_from_dict(raw, base_dir=tmp_path).launcher_dir == tmp_path / "jobs"


def test_the_launcher_is_not_part_of_a_runs_config(tmp_path):
    """The same runs under another launcher are the same runs: their results are reused."""
    raw = tiny_suite_dict(tmp_path)
    local = expand(suite_from_dict(raw, base_dir=tmp_path))[0].resolved_config()
    raw["launcher"] = {"type": "slurm", "partition": "gpu"}
    assert expand(suite_from_dict(raw, base_dir=tmp_path))[0].resolved_config() == local


def test_a_job_launcher_without_submitit_says_how_to_install_it(tmp_path, monkeypatch):
    from benchmark.launcher import import_submitit
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(ConfigError, match=r"launcher 'slurm' needs the optional package submitit.*"
                                          r"pip install 'i2i-bench\[cluster\]'"):
        import_submitit("slurm")


def test_slurm_executor_gets_the_sections_settings(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from benchmark.launcher import make_executor
    raw = tiny_suite_dict(tmp_path)
    raw["launcher"] = "slurm"
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no SLURM here
    with pytest.raises(ConfigError, match="launcher 'slurm': SLURM's commands .* not found"):
        make_executor(suite_from_dict(raw, base_dir=tmp_path))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")  # a cluster, as submitit sees one
    (tmp_path / "bin" / "srun").chmod(0o755)
    raw["launcher"] = {"type": "slurm", "partition": "gpu", "gpus_per_node": 2, "cpus_per_task": 8,
                       "mem_gb": 64, "timeout_min": 120, "account": "lab", "qos": "high",
                       "constraint": "a100", "max_parallel": 5, "max_requeues": 7, "tasks_per_node": 2,
                       "nodes": 3, "slurm_additional_parameters": {"reservation": "paper"}}
    executor = make_executor(suite_from_dict(raw, base_dir=tmp_path))
    slurm = executor._executor
    assert slurm.max_num_timeout == 7
    p = slurm.parameters
    assert (p["partition"], p["gpus_per_node"], p["cpus_per_task"], p["mem"], p["time"]) == \
        ("gpu", 2, 8, "64GB", 120)
    assert (p["account"], p["qos"], p["constraint"], p["array_parallelism"]) == ("lab", "high", "a100", 5)
    assert p["additional_parameters"] == {"reservation": "paper"}
    assert (p["ntasks_per_node"], p["nodes"]) == (2, 3)  # one run over 6 processes
    assert p["job_name"] == "i2i-tiny"


def test_no_wait_needs_a_job_launcher(tmp_path, capsys):
    from benchmark.cli import main
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_suite_dict(tmp_path)))
    assert main(["run", str(config), "--no-wait"]) == 2
    assert "--no-wait needs a job launcher" in capsys.readouterr().err


# -- run locks ----------------------------------------------------------------------------------

def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)


RUN_COMMAND = ("import sys, conftest; conftest.use_stand_in_inception(); "
               "from benchmark.cli import main; sys.exit(main(sys.argv[1:]))")
"""`python -m benchmark run CONFIG`, its evaluations scored with the tests' Inception stand-in (conftest)
as in this process."""


def _run_command(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    return subprocess.Popen([sys.executable, "-c", RUN_COMMAND, "run", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _trained(logs: list[str], run_id: str) -> int:
    return sum(line.endswith(f"{run_id}: training on cpu") for text in logs for line in text.splitlines())


def _metrics(run) -> dict:
    return json.loads(run.metrics_path.read_text())["metrics"]


def _reference_metrics(tmp_path, raw: dict) -> list[dict]:
    """Every run's metrics from one uninterrupted sequential run of the same config."""
    suite = suite_from_dict({**raw, "output_dir": str(tmp_path / "reference"), "launcher": "local"},
                            base_dir=tmp_path)
    assert Runner(suite, SuiteProgress(0, stream=io.StringIO())).run_all() == []
    return [_metrics(run) for run in expand(suite)]


def test_a_locked_run_is_skipped_then_taken_over_when_its_holder_dies(tmp_path):
    """A `run` command skips the run another process holds, trains the others, waits for it, and
    trains it itself once the holder is killed: the lock of a killed process blocks nothing."""
    raw = tiny_suite_dict(tmp_path, methods=("none",), seeds=(0, 1), steps=4)
    raw["cpu_threads"] = 1
    config = tmp_path / "suite.yaml"
    config.write_text(yaml.safe_dump(raw))
    held, free = expand(suite_from_dict(raw, base_dir=tmp_path))
    held.directory.mkdir(parents=True)
    holder = _python("import sys, time\nfrom filelock import FileLock\n"
                     f"lock = FileLock({str(held.directory / 'run.lock')!r})\nlock.acquire()\n"
                     "print('held', flush=True)\ntime.sleep(600)")
    try:
        assert holder.stdout.readline().strip() == "held"
        log = tmp_path / "run.log"
        command = _run_command(config, log)
        _wait_for(free.metrics_path.exists, 240, "the free run's results")
        time.sleep(0.5)
        assert not held.metrics_path.exists() and command.poll() is None  # waiting for the holder
        assert missing_reason(held.directory) == "running"  # what `report` says meanwhile
        holder.send_signal(signal.SIGKILL)  # dies holding the lock
        holder.wait()
        assert command.wait(timeout=240) == 0
    finally:
        holder.kill()
    text = log.read_text()
    assert f"{held.run_id}: another process is training it" in text and "skipped for now" in text
    assert f"{held.run_id}: another process is training it (lock {held.directory / 'run.lock'}); waiting" in text
    assert _trained([text], held.run_id) == 1 and _trained([text], free.run_id) == 1
    assert [_metrics(held), _metrics(free)] == _reference_metrics(tmp_path, raw)


def test_two_concurrent_run_commands_train_each_run_once(tmp_path):
    raw = tiny_suite_dict(tmp_path, methods=("none", "cut"), seeds=(0,), steps=6)
    raw["cpu_threads"] = 1
    config = tmp_path / "suite.yaml"
    config.write_text(yaml.safe_dump(raw))
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    commands = [_run_command(config, log) for log in logs]
    assert [c.wait(timeout=300) for c in commands] == [0, 0]
    texts = [log.read_text() for log in logs]
    runs = expand(suite_from_dict(raw, base_dir=tmp_path))
    for run in runs:
        assert _trained(texts, run.run_id) == 1, texts
    assert [_metrics(run) for run in runs] == _reference_metrics(tmp_path, raw)
    for run in runs:  # neither command left its lock taken
        lock = run_lock(run)
        lock.acquire(timeout=0)
        lock.release()


# -- submitit jobs: killed and pre-empted, resumed bit-exactly ------------------------------------

def _flatten(state):
    return flatten_state(state, tensors_only=False)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _checkpoint_step(run) -> int:
    return torch.load(run.checkpoint_path, weights_only=False)["step"]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the job's process in /proc")
def test_submitit_jobs_killed_or_preempted_resume_bit_exactly(tmp_path):
    """Two runs, each a job of submitit's LocalExecutor. At its first checkpoint one job's process
    is killed (SIGKILL: no result; the launcher submits the job again), the other is pre-empted
    (submitit's signal: it checkpoints and requeues itself). Both resume from their checkpoints and
    end with the weights and metrics of an uninterrupted run of the same config."""
    pytest.importorskip("submitit")
    from submitit.local.local import LocalJobEnvironment

    from benchmark.launcher import Launcher

    steps, every = 12, 3
    plugin = tmp_path / "slow_cut.py"
    plugin.write_text(SLOW_PLUGIN)
    raw = tiny_suite_dict(tmp_path, methods=("slow_cut_test",), seeds=(0, 1), steps=steps)
    raw.update(plugins=[stand_in_plugin(tmp_path), str(plugin)], checkpoint_every=every, cpu_threads=1,
               launcher={"type": "submitit_local", "poll_s": 0.2, "timeout_min": 20})
    suite = suite_from_dict(raw, base_dir=tmp_path)
    killed, preempted = expand(suite)
    # The identity row is scored here first (a job of its own in test_a_job_of_two_processes_...):
    # the launcher skips it as finished and submits the two runs alone.
    scorer = Runner(suite, SuiteProgress(0, stream=io.StringIO()))
    assert [scorer.do(job) for job in scorer.jobs() if job.kind == "identity"] == [None]
    # SIGKILL, and pre-emption as SLURM signals it (sbatch --signal): submitit's signal to the job's process.
    how = {killed.run_id: signal.SIGKILL, preempted.run_id: LocalJobEnvironment._usr_sig()}
    at: dict[str, int] = {}  # the checkpoint's step when each job was signalled
    log = io.StringIO()
    launcher = Launcher(suite, SuiteProgress(0, stream=log))
    failures = []
    thread = threading.Thread(target=lambda: failures.append(launcher.launch()))
    thread.start()
    try:
        _wait_for(lambda: len(launcher.tracked) == 2 and all(e.submitted for e in launcher.tracked), 60,
                  "the jobs")
        job = {e.name: e.submitted for e in launcher.tracked}

        def signal_each_at_its_first_checkpoint() -> bool:
            for run in (killed, preempted):
                if run.run_id not in at and run.checkpoint_path.exists():
                    pids = _children(int(job[run.run_id].job_id))  # the job's process, under its controller
                    assert pids
                    if run is killed:  # no result will come: no wait for it as for a slow shared file system
                        job[run.run_id]._results_timeout_s = 0  # (submitit's own tests do so too)
                    for pid in pids:
                        os.kill(pid, how[run.run_id])
                    at[run.run_id] = _checkpoint_step(run)
            return len(at) == 2
        _wait_for(signal_each_at_its_first_checkpoint, 240, "the first checkpoint of each run")
    finally:
        thread.join(timeout=400)
    assert not thread.is_alive()
    assert failures == [[]], log.getvalue()
    assert all(every <= step < steps for step in at.values()), at
    text = log.getvalue()
    assert f"{killed.run_id}: job {job[killed.run_id].job_id} ended without a result" in text
    assert f"{killed.run_id}: submitted as job" in text and "(try 2)" in text
    assert f"{preempted.run_id}: submitted as job" in text and text.count(f"{preempted.run_id}: submitted") == 1
    jobs = json.loads((suite.launcher_dir / "jobs.json").read_text())["jobs"]
    for run in (killed, preempted):
        job_log = Path(jobs[run.run_id]["stderr"]).read_text()
        assert f"resumed {run.run_id} at step" in job_log, job_log
    assert "preempted" in Path(jobs[preempted.run_id]["stderr"]).read_text()
    from benchmark.launcher import job_states  # what `report` prints after `run --no-wait`
    states = job_states(suite)
    assert len(states) == 2 and all(" FINISHED (log: " in line for line in states), states

    reference = suite_from_dict({**raw, "output_dir": str(tmp_path / "reference"), "launcher": "local"},
                                base_dir=tmp_path)
    runner = Runner(reference, SuiteProgress(0, stream=io.StringIO()))
    with without_pause("slow_cut_test"):
        for ref in expand(reference):
            runner.finish(ref, runner.train(ref), 0.0)
    for run, ref in zip((killed, preempted), expand(reference)):
        a = _flatten(torch.load(run.checkpoint_path, weights_only=False)["task"])
        b = _flatten(torch.load(ref.checkpoint_path, weights_only=False)["task"])
        assert a.keys() == b.keys() and sum(isinstance(v, torch.Tensor) for v in a.values()) > 10
        for k in a:
            assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else np.array_equal(a[k], b[k]), k
        assert _metrics(run) == _metrics(ref)


def test_a_job_of_two_processes_trains_its_run_data_parallel(tmp_path):
    """``tasks_per_node: 2``: each job's two processes find each other through submitit's job
    environment and train the run together (gloo on CPU), as under torchrun: one set of results,
    written by rank 0, which records the two processes."""
    pytest.importorskip("submitit")
    from benchmark.launcher import Launcher

    raw = tiny_suite_dict(tmp_path, steps=4, batch_size=2)
    raw.update(plugins=[stand_in_plugin(tmp_path)], cpu_threads=1,
               launcher={"type": "submitit_local", "poll_s": 0.2, "timeout_min": 20, "tasks_per_node": 2})
    suite = suite_from_dict(raw, base_dir=tmp_path)
    (run,) = expand(suite)
    log = io.StringIO()
    failures = Launcher(suite, SuiteProgress(0, stream=log)).launch()
    assert failures == [], log.getvalue()
    metrics = json.loads(run.metrics_path.read_text())
    assert metrics["processes"] == 2
    assert np.isfinite(metrics["metrics"]["FID"])
    jobs = json.loads((suite.launcher_dir / "jobs.json").read_text())["jobs"]
    assert f"resumed {run.run_id}" not in Path(jobs[run.run_id]["stderr"]).read_text()


def test_a_multi_process_job_with_workers_is_refused(tmp_path):
    raw = tiny_suite_dict(tmp_path)
    raw.update(workers=2, launcher={"type": "slurm", "tasks_per_node": 4})
    with pytest.raises(ConfigError, match="workers: 2 with a launcher job of 4 processes"):
        suite_from_dict(raw, base_dir=tmp_path)
    raw.update(workers=1, launcher={"type": "submitit_local", "nodes": 2})
    with pytest.raises(ConfigError, match="nodes: 2 needs type slurm"):
        suite_from_dict(raw, base_dir=tmp_path)


def test_a_second_run_command_follows_live_slurm_jobs_instead_of_submitting_again(tmp_path, monkeypatch):
    """jobs.json names the jobs an earlier `run --no-wait` submitted: those SLURM still has queued or
    running are followed; a run whose job ended without a result is submitted again."""
    submitit = pytest.importorskip("submitit")
    from types import SimpleNamespace
    from contextlib import nullcontext
    from benchmark.launcher import Launcher

    def fake_job(job_id):
        return SimpleNamespace(job_id=job_id, paths=SimpleNamespace(stdout=f"{job_id}.out", stderr=f"{job_id}.err"))

    class FakeExecutor:
        def __init__(self):
            self.submitted = []

        def batch(self):
            return nullcontext()

        def submit(self, fn):
            self.submitted.append(fn.job)
            return fake_job(f"new{len(self.submitted)}")

    states = {"101": "RUNNING", "102": "FAILED"}

    class FakeSlurmJob:
        def __init__(self, folder, job_id):
            self.job_id, self.paths = job_id, fake_job(job_id).paths

        @property
        def state(self):
            return states[self.job_id]

    monkeypatch.setattr(submitit, "SlurmJob", FakeSlurmJob)
    raw = tiny_suite_dict(tmp_path, seeds=(0, 1))
    raw["launcher"] = {"type": "slurm"}
    suite = suite_from_dict(raw, base_dir=tmp_path)
    first, second = expand(suite)
    suite.launcher_dir.mkdir(parents=True)
    (suite.launcher_dir / "jobs.json").write_text(json.dumps({"suite": "tiny", "launcher": "slurm", "jobs": {
        first.run_id: {"job_id": "101", "earlier_jobs": ["90"]}, second.run_id: {"job_id": "102"}}}))
    log = io.StringIO()
    executor = FakeExecutor()
    launcher = Launcher(suite, SuiteProgress(0, stream=log), executor=executor)
    assert launcher.launch(wait=False) == []
    submitted = [launcher.runner.job_name(job) for job in executor.submitted]
    assert first.run_id not in submitted and second.run_id in submitted
    assert f"{first.run_id}: job 101 of an earlier command is RUNNING; following it" in log.getvalue()
    jobs = json.loads((suite.launcher_dir / "jobs.json").read_text())["jobs"]
    assert jobs[first.run_id]["job_id"] == "101" and jobs[first.run_id]["earlier_jobs"] == ["90"]
    assert jobs[second.run_id]["job_id"].startswith("new")
