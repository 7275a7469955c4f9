import atexit
import contextlib
import functools
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# One intra-op thread: the tests' networks are tiny (and Inception's runs are of a few images), and
# two threads on a 2-core machine that runs anything else (the jobs and workers the tests start,
# another user) spend much of their time spinning instead of computing.
torch.set_num_threads(1)

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
    """One intra-op thread for each test of a module that opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``, whatever an earlier test set (a suite's
    ``cpu_threads`` sets the count of the process that runs it); the count before, after it."""
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


# -- Inception stand-in for the tasks' evaluations ----------------------------------------------------

_PROJECTION: torch.Tensor | None = None


def stand_in_features(images, resize="legacy", device=None, batch_size=50, progress=None, weights_dir=None):
    """A cheap stand-in for TF-Inception's pool features in the tasks' evaluations: 2048 features per
    image, a fixed random projection of its 8 x 8 colour means, so a deterministic function of every
    image's content (another image, another feature; the same image, the same feature in any batch).
    Real Inception costs about 0.15 s per image on a CPU; the tests of Inception itself (test_fid,
    test_fid_datasets, test_cleanfid_equivalence) call ``benchmark.core.metrics.inception_features``,
    which this does not replace. Batches are checked and counted as the real function does."""
    from benchmark.core.metrics.fid import FEATURE_DIM, _iter_batches

    global _PROJECTION
    if _PROJECTION is None:
        _PROJECTION = torch.randn(3 * 8 * 8, FEATURE_DIM, generator=torch.Generator().manual_seed(0),
                                  dtype=torch.float64)
    out, done = [], 0
    for batch in _iter_batches(images, batch_size):
        x = torch.nn.functional.adaptive_avg_pool2d(batch.double() / 127.5 - 1, 8).flatten(1)
        out.append(torch.tanh(x @ _PROJECTION).numpy())
        done += batch.shape[0]
        if progress is not None:
            progress(done)
    import numpy as np
    return np.concatenate(out) if out else np.zeros((0, 2048))


def use_stand_in_inception() -> None:
    """The tasks' evaluations (tasks.evaluation, which every task's scoring goes through) score with
    :func:`stand_in_features`; for processes a test starts itself (spawned workers)."""
    import tasks.evaluation
    tasks.evaluation.inception_features = stand_in_features


@pytest.fixture(scope="session", autouse=True)
def stand_in_inception():
    """Every test's task evaluations use the Inception stand-in (see :func:`stand_in_features`)."""
    import tasks.evaluation
    real = tasks.evaluation.inception_features
    use_stand_in_inception()
    yield
    tasks.evaluation.inception_features = real


# -- one teacher cache for the session ------------------------------------------------------------------

@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory):
    """A teachers folder shared by every compression suite of the session: teachers are cached under
    a content hash of (dataset identity, teacher settings, seed), so suites with the same teacher
    train it once and the others load it; see :func:`share_teachers`."""
    return tmp_path_factory.mktemp("teachers")


def share_teachers(output_dir, teachers) -> None:
    """Make the suite writing to ``output_dir`` keep its teachers in the session's ``teachers`` folder
    (its ``cache/teachers`` a link to it); the suite's other caches stay its own."""
    from pathlib import Path
    cache = Path(output_dir) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    Path(teachers).mkdir(parents=True, exist_ok=True)
    try:
        (cache / "teachers").symlink_to(teachers, target_is_directory=True)
    except FileExistsError:  # linked already (by this suite earlier, or by the other process of a pair)
        pass


def stand_in_plugin(folder) -> str:
    """A plugin file that makes a process loading the suite (a worker, a launcher job) score with
    the Inception stand-in, as the test process does: name it first in the suite's ``plugins``."""
    from pathlib import Path
    path = Path(folder) / "inception_stand_in.py"
    path.write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                    "import conftest\nconftest.use_stand_in_inception()\n")
    return str(path)


def slow_cut_plugin(name: str, pause: float) -> str:
    """The source of a plugin file registering method ``name``: CUT with a ``pause`` in each step,
    so that a test can signal or kill a run between two checkpoints. One name per test module: a
    method is registered once per process. The pause changes no result: a test's reference run in
    its own process can set the class's ``pause`` to 0 (:func:`without_pause`)."""
    return f'''
import time
from benchmark.core import registry
from benchmark.core.registry import register_method


@register_method({name!r})
class SlowCUT(registry.METHODS.get("cut")):
    presets = {{}}
    pause = {pause!r}

    def generator_losses(self, pair, computed=None):
        time.sleep(self.pause)
        return super().generator_losses(pair, computed)
'''


@contextlib.contextmanager
def without_pause(name: str):
    """The method ``name`` of :func:`slow_cut_plugin` (loaded in this process) without its pause."""
    from benchmark.core import registry
    cls = registry.METHODS.get(name)
    pause, cls.pause = cls.pause, 0.0
    try:
        yield
    finally:
        cls.pause = pause
