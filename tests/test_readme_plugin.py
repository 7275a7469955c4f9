"""The plugin examples, exactly as printed (the README's short one, docs/methods.md's full one),
train on every task and their heads get gradients."""
from __future__ import annotations

import pytest
import torch

from benchmark.config import suite_from_dict
from benchmark.runner import Runner

from conftest import ROOT, doc_plugin, tiny_suite_dict
from test_compression_task import suite_dict as compression_suite_dict
from test_multi_modal import mm_suite_dict
from test_single_image import suite_dict as single_image_suite_dict

DOCS_WITH_PLUGIN = ["README.md", "docs/methods.md"]
TASKS = ["single_modal", "multi_modal", "single_image", "compression"]
CASES = [(doc, task) for doc in DOCS_WITH_PLUGIN for task in TASKS]

pytestmark = pytest.mark.usefixtures("one_thread")


def task_suite_dict(task: str, tmp_path, methods: list[str]) -> dict:
    """A suite of ``task`` small enough to train two steps of each method in seconds."""
    if task == "single_modal":
        return tiny_suite_dict(tmp_path, methods=methods, steps=2)
    if task == "multi_modal":
        return mm_suite_dict(tmp_path, methods=methods, steps=2)
    if task == "single_image":
        return single_image_suite_dict(tmp_path, methods=methods, steps=2)
    raw = compression_suite_dict(tmp_path / "results", steps=2)
    raw["methods"] = methods
    return raw


@pytest.mark.parametrize("doc", DOCS_WITH_PLUGIN)
def test_each_doc_has_a_plugin_and_a_config_naming_it(doc):
    path, names = doc_plugin(ROOT / doc)
    assert path.is_file() and [n for n in names if n not in ("none", "cut")], (doc, names)


@pytest.mark.parametrize("doc, task", CASES)
def test_the_doc_plugin_trains_on_every_task_and_its_heads_get_gradients(tmp_path, doc, task):
    path, names = doc_plugin(ROOT / doc)
    own = [n for n in names if n not in ("none", "cut")]
    raw = task_suite_dict(task, tmp_path, own)
    raw["plugins"] = [str(path)]
    suite = suite_from_dict(raw, str(tmp_path / "suite.yaml"), tmp_path)
    runner = Runner(suite)
    for run in suite.runs:
        task_obj = runner.train(run)
        assert task_obj.step == run.planned_steps()
        params = [p for p in task_obj.method.parameters() if p.requires_grad]
        assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params), \
            f"{doc}: {run.method.label}: the plugin's heads got no gradient in {task}"
