"""SIGTERM (SLURM at a job's time limit, ``kill``) and SIGINT (Ctrl-C) during training: the run
finishes its step, writes a checkpoint at that step, the command prints ``interrupted at step N;
run the same command again to resume`` and exits 143 / 130; running it again resumes and ends
with the metrics and weights of an uninterrupted run."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.cli import main
from benchmark.config import suite_from_dict
from benchmark.core.checkpoint import load_checkpoint
from benchmark.core.interrupt import Interrupted, deferred_stop, stop_on_signals
from benchmark.progress import SuiteProgress
from benchmark.runner import Runner, expand

from conftest import flatten_state, slow_cut_plugin, stand_in_plugin, tiny_suite_dict, without_pause

REPO = Path(__file__).resolve().parents[1]
STEPS = 15
EVERY = 3
METHOD = 'slow_cut_signal_test'
SLOW_PLUGIN = slow_cut_plugin(METHOD, 0.1)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """One plugin file for the module: a method name is registered once per process."""
    path = tmp_path_factory.mktemp("plugin") / "slow_cut.py"
    path.write_text(SLOW_PLUGIN)
    return path


def _raw(plugin: Path, output: Path) -> dict:
    raw = tiny_suite_dict(output, methods=(METHOD,), steps=STEPS)
    # The commands this test starts score with the test process's Inception stand-in too: their
    # cached real-image statistics are then the ones the resumed run in this process compares with.
    raw.update(plugins=[stand_in_plugin(output.parent), str(plugin)], checkpoint_every=EVERY, cpu_threads=1,
               output_dir=str(output))
    return raw


def _outcome(run) -> tuple[dict, dict]:
    metrics = json.loads(run.metrics_path.read_text())["metrics"]
    return metrics, flatten_state(load_checkpoint(run.checkpoint_path, run.run_id)["task"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, plugin):
    folder = tmp_path_factory.mktemp("uninterrupted")
    suite = suite_from_dict(_raw(plugin, folder / "results"), base_dir=folder)
    with without_pause(METHOD):
        assert Runner(suite, SuiteProgress(0, stream=io.StringIO())).run_all() == []
    return _outcome(expand(suite)[0])


def _interrupt(config: Path, run, signum: int, after_step: int) -> tuple[int, str, int]:
    """Start ``run CONFIG`` in a process, send ``signum`` once the run's checkpoint holds
    ``after_step`` or later: (exit code, output, the checkpoint's step after the command ended)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A command started in the background by a shell without job control inherits SIGINT ignored;
    # a terminal's Ctrl-C reaches a process whose SIGINT is at its default.
    command = subprocess.Popen([sys.executable, "-m", "benchmark", "run", str(config)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (run.checkpoint_path.exists()
                   and load_checkpoint(run.checkpoint_path, run.run_id)["step"] >= after_step):
            assert time.monotonic() < deadline and command.poll() is None, command.stdout.read()
            time.sleep(0.05)
        command.send_signal(signum)
        output, _ = command.communicate(timeout=120)
    finally:
        command.kill()
    return command.returncode, output, load_checkpoint(run.checkpoint_path, run.run_id)["step"]


def test_sigterm_then_sigint_mid_training_checkpoint_say_how_to_resume_and_resume_bit_exactly(
        tmp_path, plugin, uninterrupted):
    raw = _raw(plugin, tmp_path / "results")
    config = tmp_path / "suite.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = expand(suite_from_dict(raw, base_dir=tmp_path))[0]
    first = None
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        after = EVERY if first is None else first + EVERY  # the second command has resumed and trained on
        returncode, output, step = _interrupt(config, run, signum, after)
        assert returncode == code, output
        assert after <= step < STEPS and not run.metrics_path.exists(), output
        assert f"interrupted at step {step}; run the same command again to resume" in output
        assert "Traceback" not in output
        if first is not None:
            assert f"resumed {run.run_id} at step {first}" in output
        first = step
    with without_pause(METHOD):
        assert main(["run", str(config)]) == 0                 # the same command resumes
    metrics, state = _outcome(run)
    assert metrics == uninterrupted[0]
    assert state.keys() == uninterrupted[1].keys()
    assert all(torch.equal(state[k], uninterrupted[1][k]) for k in state)


def test_handlers_are_left_alone_where_someone_else_set_them():
    """submitit ignores SIGTERM in its jobs (its own signal pre-empts and requeues them): the
    training loop must not take SIGTERM over there."""
    def theirs(signum, frame):
        pass
    previous = signal.signal(signal.SIGTERM, theirs)
    # Python's own SIGINT handler, as in a terminal: a process started in the background by a
    # non-interactive shell (a CI script, say) inherits SIGINT ignored, which is not ours to take over.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with deferred_stop() as stop:
            assert signal.getsignal(signal.SIGTERM) is theirs
            os.kill(os.getpid(), signal.SIGTERM)
            assert not stop
        with stop_on_signals(), pytest.raises(Interrupted) as info:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert info.value.exit_code == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
