"""A run resumed from its checkpoint continues bit-exactly, for every task and for the methods with
state of their own. Each case trains k steps through the runner (which checkpoints step k) and takes
one more step in the same process; a fresh runner, from another RNG state, resumes the checkpoint
and takes that step too: every tensor of the two tasks' states (networks, optimisers, schedulers,
image pools, method heads), every other entry (steps, RNG states of task-owned generators) and the
global RNG states (torch, NumPy, Python) are equal. Step k+1 is in the learning-rate decay, so a
schedule restored at the wrong step shows too. The end-to-end kill of a training process (SIGKILL,
and pre-emption) is tests/test_launcher.py::test_submitit_jobs_killed_or_preempted_resume_bit_exactly."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from benchmark.config import suite_from_dict
from benchmark.core.checkpoint import rng_state
from benchmark.runner import Runner, expand

from conftest import flatten_state, share_teachers, tiny_suite_dict


def single_modal(tmp_path, method, **options):
    return tiny_suite_dict(tmp_path, methods=(method,), steps=4, **options)


def multi_modal(tmp_path):
    from test_multi_modal import mm_suite_dict
    method = {"name": "hnegsrc", "params": {"num_patches": 16, "use_curriculum": True, "HDCE_gamma": 50.0,
                                            "HDCE_gamma_min": 1.0, "lambda_SRC": 0.1}}
    return mm_suite_dict(tmp_path, methods=(method,), steps=4)


def single_image(tmp_path):
    from test_single_image import suite_dict
    return suite_dict(tmp_path, methods=["hnegsrc_single"], steps=2)  # curriculum, identity, heads; G injects noise


def compression(tmp_path):
    from test_compression_task import suite_dict
    return suite_dict(tmp_path / "results", steps=4)


# (suite dict, steps before the checkpoint); the step after it is one of linear decay where the task has one
CASES = {
    # CUT with CycleGAN's image pool (its images and RNG are part of the state)
    "cut_pool": (lambda p: single_modal(p, "cut", pool_size=2), 2),
    # FastCUT: flips drawn per step
    "fastcut": (lambda p: single_modal(p, "fastcut"), 2),
    # NEGCUT: the negative generator, its optimiser and the EMA heads
    "negcut": (lambda p: single_modal(p, "negcut"), 2),
    # LSeSim: learned heads with their own optimiser, colour-jitter augmentation (frozen VGG not checkpointed)
    "lsesim": (lambda p: single_modal(p, {"name": "lsesim", "params": {"vgg_weights": "untrained"}}), 2),
    # GraphCL: embedding, GNN and pooling scores
    "graphcl": (lambda p: single_modal(p, {"name": "graphcl", "params": {"vgg_weights": "untrained",
                                                                         "num_patches": 16}}), 2),
    # the CycleGAN baseline: two generators, two discriminators, two image pools
    "cyclegan": (lambda p: single_modal(p, "cyclegan", batch_size=2, pool_size=3), 2),
    # StarGAN v2 with Hneg-SRC's curriculum: mapping network, style encoder, EMA copies
    "multi_modal": (multi_modal, 3),
    # SinCUT's framework: StyleGAN2 noise injection, crops of one image pair
    "single_image": (single_image, 2),
    # the compression supernet: sampled sub-networks, distillation mappings (the teacher from the cache)
    "compression": (compression, 2),
}


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("case", list(CASES))
def test_a_resumed_run_takes_the_next_step_of_the_uninterrupted_one(tmp_path, teacher_cache, case):
    make, k = CASES[case]
    raw = make(tmp_path)
    if case == "compression":
        share_teachers(raw["output_dir"], teacher_cache)
    suite = suite_from_dict(raw, base_dir=tmp_path)
    run = expand(suite)[0]
    task = Runner(suite).train(run, stop_at=k)
    assert run.checkpoint_path.exists() and task.step == k
    task.train_step()
    expected = flatten_state({"task": task.state_dict(), "rng": rng_state()}, tensors_only=False)

    torch.manual_seed(12345), np.random.seed(12345), random.seed(12345)  # whatever the resuming process holds
    resumed = Runner(suite_from_dict(raw, base_dir=tmp_path)).train(run, stop_at=k + 1)
    assert resumed.step == k + 1
    got = flatten_state({"task": resumed.state_dict(), "rng": rng_state()}, tensors_only=False)
    assert got.keys() == expected.keys()
    assert sum(isinstance(v, torch.Tensor) for v in expected.values()) > 20
    assert [key for key in expected if not _equal(expected[key], got[key])] == []
