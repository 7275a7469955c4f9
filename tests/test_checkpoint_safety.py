"""Checkpoints load with torch.load(weights_only=True): the run's own hold nothing else (the runner
resumes through this load: test_resume.py), and a file holding any other pickled object is refused
with a CheckpointError before it can act."""
import re

import pytest
import torch

from benchmark.config import suite_from_dict
from benchmark.core.checkpoint import CHECKPOINT_GLOBALS, load_checkpoint, load_weights_only, save_checkpoint
from benchmark.core.errors import CheckpointError
from benchmark.report.results import checkpoint_step
from benchmark.runner import Runner, expand

from conftest import tiny_suite_dict

TRIGGERED = []


def _trigger(message):
    TRIGGERED.append(message)
    return message


class Payload:
    """What an attacker would pickle: unpickling it calls a function."""

    def __reduce__(self):
        return _trigger, ("unpickled",)


def _train(tmp_path, stop_at=None, **kwargs):
    suite = suite_from_dict(tiny_suite_dict(tmp_path, **kwargs), base_dir=tmp_path)
    run = expand(suite)[0]
    return Runner(suite).train(run, stop_at=stop_at), run


@pytest.mark.parametrize("method, options", [("cut", {"pool_size": 2}), ("negcut", {})])
def test_the_runs_own_checkpoints_load_weights_only(tmp_path, method, options):
    """An image pool and NEGCUT's negative generator and EMA heads included."""
    _, run = _train(tmp_path, methods=(method,), steps=4, stop_at=2, **options)
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(run.checkpoint_path))
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in CHECKPOINT_GLOBALS}
    assert unsafe <= allowed                         # NumPy's random state only
    ckpt = load_checkpoint(run.checkpoint_path, run.run_id)
    assert ckpt["step"] == 2 and checkpoint_step(run.checkpoint_path) == 2
    assert "pool" in ckpt["task"]  # the image pool, loaded weights-only too


def test_a_checkpoint_holding_a_pickled_object_is_refused_before_it_runs(tmp_path):
    _, run = _train(tmp_path, stop_at=2)
    good = load_checkpoint(run.checkpoint_path, run.run_id)
    save_checkpoint(run.checkpoint_path, run.run_id, 2, {**good["task"], "extra": Payload()})
    TRIGGERED.clear()
    with pytest.raises(CheckpointError, match=r"weights_only=True.*_trigger"):
        load_checkpoint(run.checkpoint_path, run.run_id)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        _train(tmp_path)                             # the runner resumes through the same check
    assert checkpoint_step(run.checkpoint_path) is None
    assert TRIGGERED == []                           # nothing was unpickled
    with pytest.raises(Exception):                   # the proof that the payload does act when allowed
        torch.load(run.checkpoint_path, weights_only=True)
    torch.load(run.checkpoint_path, weights_only=False)
    assert TRIGGERED == ["unpickled"]


def test_a_file_that_is_no_checkpoint_gets_a_clear_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt.*cannot be read"):
        load_weights_only(path)
    torch.save({"format": 1, "run_id": "other", "step": 0}, path)
    with pytest.raises(CheckpointError, match="belongs to run 'other'"):
        load_checkpoint(path, "mine")


# -- every torch.load of the package is weights_only=True, and a planted best_val.pt runs nothing --

PACKAGES = ("benchmark", "methods", "tasks", "datasets")


def _torch_load_calls(source: str):
    """(line, weights_only keyword node or None) of each call of ``torch.load`` / ``load`` imported
    from torch in ``source``."""
    import ast
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = (f.attr if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                    and f.value.id == "torch" else None)
            if name == "load":
                keyword = next((k for k in node.keywords if k.arg == "weights_only"), None)
                yield node.lineno, keyword


def test_every_torch_load_in_the_package_says_weights_only_true():
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    calls, unsafe = 0, []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            assert "from torch import load" not in source, f"{path}: call torch.load by its full name"
            for line, keyword in _torch_load_calls(source):
                calls += 1
                if keyword is None or not (isinstance(keyword.value, ast.Constant) and keyword.value.value is True):
                    unsafe.append(f"{path.relative_to(root)}:{line}")
    assert calls >= 5                                # the scan does find the calls
    assert unsafe == [], f"torch.load without weights_only=True: {unsafe}"


def test_a_pickled_object_planted_as_best_val_in_an_untrained_run_is_refused(tmp_path):
    import pickle
    marker = tmp_path / "marker"
    raw = tiny_suite_dict(tmp_path, steps=2)
    raw["validation"] = {"eval_every": 2, "images": 2}               # keeps best_val.pt
    suite = suite_from_dict(raw, base_dir=tmp_path)
    run = expand(suite)[0]
    best = run.directory / "checkpoints" / "best_val.pt"
    best.parent.mkdir(parents=True)
    for name, write in (("plain pickle", lambda f: pickle.dump({"step": 0, "x": Marker(str(marker))}, f)),
                        ("torch zip", lambda f: torch.save({"step": 0, "x": Marker(str(marker))}, f))):
        with open(best, "wb") as f:
            write(f)
        with pytest.raises(CheckpointError) as info:
            Runner(suite).train(run)
        message = str(info.value)
        assert str(best) in message and re.search(r"\b(io|builtins)\.open\b", message), name  # file, global
        assert "inspect" in message and "weights_only=False will" not in message, name
        assert "Re-running" not in message, name                          # not torch's advice
        assert not marker.exists(), name                                   # nothing ran
    assert not run.checkpoint_path.exists()


class Marker:
    """A pickled object that creates a file when it is unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")
