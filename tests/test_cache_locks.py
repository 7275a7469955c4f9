"""Two processes that want the same cached file at once (parallel workers at the start of a suite)
build it once (benchmark/core/locks.py): the synthetic segmenter of a dataset and the real-image
Inception features of a split. Each process counts its own calls of the building function (a file
per call); the first holds the lock while it builds, the second waits and loads the file."""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from benchmark.core.metrics.fid import FeatureCache
from benchmark.core.segmenters import SegmenterSettings, get_segmenter
from benchmark.core.segmenters import synthetic as seg_mod
from datasets import SyntheticScenes

TINY = SegmenterSettings(width=4, steps=3, batch_size=4)
HOLD_S = 2.0
"""How long the building process keeps building after its call is counted: the other process,
started at the same moment, reaches the cache while the file is still missing."""
KEY = {"dataset": "two-processes", "split": "test", "count": 3}


def _scenes(root: Path) -> SyntheticScenes:
    return SyntheticScenes(SyntheticScenes.Options(size=16, n_train=8, n_test=4), root / "data")


def _meet(folder: Path, rank: int, name: str) -> None:
    """Wait until both processes have arrived at ``name``."""
    (folder / f"{name}.{rank}").touch()
    deadline = time.monotonic() + 120
    while not all((folder / f"{name}.{r}").exists() for r in range(2)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other process never reached {name}")
        time.sleep(0.01)


def _worker(rank: int, root: str) -> None:
    torch.set_num_threads(1)
    root_path = Path(root)
    calls = root_path / "calls"
    real_train = seg_mod.train_segmenter

    def counting_train(*args, **kwargs):
        (calls / f"segmenter.{rank}.{time.monotonic_ns()}").touch()
        time.sleep(HOLD_S)
        return real_train(*args, **kwargs)

    def counting_features():
        (calls / f"features.{rank}.{time.monotonic_ns()}").touch()
        time.sleep(HOLD_S)
        return np.arange(6, dtype=np.float64).reshape(3, 2) + 0.5

    seg_mod.train_segmenter = counting_train
    data = _scenes(root_path)
    lines: list[str] = []
    _meet(root_path, rank, "segmenter")
    segmenter = get_segmenter(data, "B", root_path / "segmenters", seed=0, settings=TINY, log=lines.append)
    _meet(root_path, rank, "features")
    features = FeatureCache(root_path / "fid_stats").get_or_compute(KEY, counting_features, lines.append)
    with open(root_path / f"rank{rank}.pkl", "wb") as f:
        pickle.dump({"cached": segmenter.cached, "state": segmenter.net.state_dict(),
                     "ceiling": segmenter.ceiling, "features": features, "lines": lines}, f)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    root = tmp_path_factory.mktemp("locks")
    (root / "calls").mkdir()
    _scenes(root).split("train", "B")  # the dataset generated before the race (not the subject here)
    # Forked: two processes with their own open files and locks, as spawned workers have, without
    # importing torch and the benchmark again (each sets one intra-op thread before any torch work).
    mp.start_processes(_worker, args=(str(root),), nprocs=2, start_method="fork", join=True)
    results = []
    for rank in range(2):
        with open(root / f"rank{rank}.pkl", "rb") as f:
            results.append(pickle.load(f))
    return root, results


def test_two_processes_train_the_segmenter_once_and_both_get_it(outcome):
    root, (first, second) = outcome
    assert len(list((root / "calls").glob("segmenter.*"))) == 1
    # One trained it (not cached), the other waited and loaded the file it wrote.
    assert sorted([first["cached"], second["cached"]]) == [False, True]
    waited = first if first["cached"] else second
    assert any("another process is training it" in line for line in waited["lines"])
    assert first["state"].keys() == second["state"].keys()
    assert all(torch.equal(first["state"][k], second["state"][k]) for k in first["state"])
    assert first["ceiling"] == second["ceiling"]
    assert len(list((root / "segmenters").glob("*.pt"))) == 1


def test_two_processes_compute_the_real_features_once_and_both_get_them(outcome):
    root, (first, second) = outcome
    assert len(list((root / "calls").glob("features.*"))) == 1
    expected = np.arange(6, dtype=np.float64).reshape(3, 2) + 0.5
    assert np.array_equal(first["features"], expected) and np.array_equal(second["features"], expected)
    assert sum(any("another process is computing the features" in line for line in r["lines"])
               for r in (first, second)) == 1
    assert np.array_equal(FeatureCache(root / "fid_stats").load(KEY), expected)


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path):
    """The lock is the OS's: a process that dies while holding it (here: its file stays behind)
    blocks nobody, and the next process builds what is missing."""
    cache = FeatureCache(tmp_path)
    lock_file = cache.path_for(KEY).with_name(cache.path_for(KEY).name + ".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock_file.touch()
    got = cache.get_or_compute(KEY, lambda: np.ones((2, 2)))
    assert np.array_equal(got, np.ones((2, 2))) and os.path.exists(cache.path_for(KEY))
