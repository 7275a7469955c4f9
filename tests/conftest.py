import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

from benchmark.plugins import load_builtins  # noqa: E402 - the registries the tests look names up in

load_builtins()


def tiny_suite_dict(tmp_path, methods=("cut",), steps=6, seeds=(0,), **task):
    """A suite small enough to train in a second or two on a CPU."""
    options = {"ngf": 8, "ndf": 8, "n_blocks": 2, "n_steps": steps // 2, "n_steps_decay": steps - steps // 2}
    options.update(task)
    return {
        "suite": "tiny", "seeds": list(seeds), "device": "cpu", "output_dir": str(tmp_path / "results"),
        "checkpoint_every": 2,
        "tasks": {"single_modal": options},
        "datasets": {"synthetic_objects": {"size": 32, "n_train": 8, "n_test": 4}},
        "methods": list(methods),
        "evaluation": {"num_test_images": 4, "kid_subsets": 2, "batch_size": 4, "grid_images": 2,
                       "label_scores": False},
    }


@pytest.fixture
def tiny_suite(tmp_path):
    from benchmark.config import suite_from_dict

    def make(**kwargs):
        return suite_from_dict(tiny_suite_dict(tmp_path, **kwargs), base_dir=tmp_path)
    return make


def flatten_state(state, prefix="", tensors_only=True) -> dict:
    """Every tensor of a nested checkpoint (dicts, lists) under a dotted key, to compare two states
    entry by entry; with ``tensors_only=False`` the other leaves (steps, RNG states) too."""
    out = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(flatten_state(v, f"{prefix}.{k}", tensors_only))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(flatten_state(v, f"{prefix}.{i}", tensors_only))
    elif isinstance(state, torch.Tensor) or not tensors_only:
        out[prefix] = state
    return out


@pytest.fixture
def one_thread():
    """Tiny networks run many times faster on one intra-op thread than on two on a busy 2-core
    machine; a module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def slow_cut_plugin(name: str, pause: float) -> str:
    """The source of a plugin file registering method ``name``: CUT with a ``pause`` in each step,
    so that a test can signal or kill a run between two checkpoints. One name per test module: a
    method is registered once per process."""
    return f'''
import time
from benchmark.core import registry
from benchmark.core.registry import register_method


@register_method({name!r})
class SlowCUT(registry.METHODS.get("cut")):
    presets = {{}}

    def generator_losses(self, pair, computed=None):
        time.sleep({pause!r})
        return super().generator_losses(pair, computed)
'''
