"""A full disk or a folder we may not write to ends in a message naming the file, what was being
written and the free space (benchmark.core.atomic.StorageError), the run's last good checkpoint is
kept, and running again after space is freed resumes bit-exactly."""
import errno
import tempfile

import pytest
import torch

from benchmark import cli
from benchmark.config import suite_from_dict
from benchmark.core import atomic, checkpoint
from benchmark.core.checkpoint import load_checkpoint
from benchmark.runner import Runner, expand

from conftest import flatten_state, tiny_suite_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def _suite(tmp_path):
    return suite_from_dict(tiny_suite_dict(tmp_path, steps=4), base_dir=tmp_path)


def _disk_full_from_step(monkeypatch, step):
    """torch.save as it fails on a full disk (its RuntimeError, the OSError in its context) for
    checkpoints at ``step`` and later: part of the file is written first."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step", 0) >= step:
            f.write(b"PK\x03\x04 partial")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(checkpoint.torch, "save", save)


def test_a_full_disk_names_the_file_and_space_keeps_the_last_checkpoint_and_resumes(tmp_path, monkeypatch):
    suite = _suite(tmp_path / "split")
    run = expand(suite)[0]
    _disk_full_from_step(monkeypatch, 4)
    failed = Runner(suite).execute(run, "[run 1/1]")
    assert failed is not None
    message = failed[1]
    assert str(run.checkpoint_path) in message                     # the absolute path
    assert "No space left on device" in message and "free of" in message
    assert f"checkpoint of run '{run.run_id}' at step 4" in message  # what was being written
    assert "enforce fail" not in message
    assert load_checkpoint(run.checkpoint_path, run.run_id)["step"] == 2   # the last good one is kept
    assert not list(run.checkpoint_path.parent.glob("*.tmp"))               # no partial file left
    assert not run.metrics_path.exists()
    monkeypatch.undo()                                                        # space freed
    resumed = Runner(suite).train(run)
    whole = Runner(_suite(tmp_path / "whole")).train(expand(_suite(tmp_path / "whole"))[0])
    a, b = flatten_state(resumed.state_dict()), flatten_state(whole.state_dict())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_folder_we_may_not_write_to_gives_a_message_not_a_traceback(tmp_path, monkeypatch, capsys, code):
    """Tests run as root, whom chmod does not stop: the refusal is made where the OS would make it,
    at the creation of each file."""
    def refuse(*args, dir=None, **kwargs):
        raise OSError(code, "refused", str(dir))
    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    config = tmp_path / "suite.yaml"
    import yaml
    config.write_text(yaml.safe_dump(tiny_suite_dict(tmp_path, steps=2)))
    rc = cli.main(["run", str(config)])
    out, err = capsys.readouterr()
    assert rc != 0
    assert "Traceback" not in out + err
    assert f"{tmp_path / 'results'}" in out + err
    assert ("read-only" in err.lower() if code == errno.EROFS else "Permission denied" in err)
    assert "free of" in err
    assert tempfile.mkstemp is refuse
