"""Result files: losses.csv survives being deleted while a run trains, and files written atomically
(metrics.json, checkpoints, config.yaml) get the permissions the user's umask allows, not mkstemp's
0600."""
import os
import stat

import pytest

from benchmark.core.atomic import atomic_write
from benchmark.progress import LOSSES_CSV, LossLog, read_losses


def test_losses_csv_deleted_while_training_is_recreated_whole(tmp_path):
    messages = []
    log = LossLog(tmp_path, every=1, tensorboard=False, log=messages.append)
    for step in (1, 2, 3):
        log.write(step, {"G": float(step), "D": 0.5})
    (tmp_path / LOSSES_CSV).unlink()
    log.write(4, {"G": 4.0, "D": 0.5})
    names, rows = read_losses(tmp_path / LOSSES_CSV)
    assert names == ["G", "D"] and [s for s, _ in rows] == [1, 2, 3, 4] and rows[3][1] == {"G": 4.0, "D": 0.5}
    assert any("was deleted" in m and "recreated" in m for m in messages)
    (tmp_path / LOSSES_CSV).unlink()
    log.sync()  # before a checkpoint: the rows are on disk again
    assert [s for s, _ in read_losses(tmp_path / LOSSES_CSV)[1]] == [1, 2, 3, 4]
    log.close()


def test_losses_csv_missing_at_resume_is_said(tmp_path):
    messages = []
    LossLog(tmp_path, start_step=20, every=10, tensorboard=False, log=messages.append).close()
    assert any("missing" in m and "step 20" in m for m in messages)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_files_get_the_umask_permissions(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "metrics.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == mode
