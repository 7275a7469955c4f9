import atexit
import functools
import os
import re
import shutil
import tempfile
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def _plugin_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="i2i_doc_plugins_"))
    atexit.register(shutil.rmtree, root, True)
    return root


@functools.lru_cache(maxsize=None)
def doc_plugin(doc: Path) -> tuple[Path, list[str]]:
    """The doc's ``# my_methods.py`` block written to a file, and the method names of the YAML block
    after it. One file per doc and process: a plugin file is imported (and registers its names)
    once, so every test that loads it must load the same path."""
    text = doc.read_text()
    code = re.search(r"```python\n(# my_methods\.py\n.*?)```", text, re.S)
    assert code, f"{doc.name} has no '# my_methods.py' example"
    config = re.search(r"```yaml\n(plugins: \[my_methods\.py\].*?)```", text[code.end():], re.S)
    assert config, f"{doc.name} has no YAML block naming my_methods.py after its example"
    names = re.search(r"methods: \[(.*?)\]", config.group(1)).group(1)
    folder = _plugin_root() / doc.stem
    folder.mkdir(exist_ok=True)
    path = folder / "my_methods.py"
    path.write_text(code.group(1))
    return path, [n.strip() for n in names.split(",")]


@pytest.fixture(scope="session")
def plugin_file():
    """docs/methods.md's plugin example (``tiny_nce`` and its preset) as the file a config names."""
    return doc_plugin(ROOT / "docs" / "methods.md")
