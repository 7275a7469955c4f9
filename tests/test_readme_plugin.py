"""The README's plugin example ("Adding a method"), exactly as printed, runs in both tasks."""
from __future__ import annotations

import pytest
import torch

from benchmark.config import suite_from_dict
from benchmark.runner import Runner

from conftest import tiny_suite_dict
from test_multi_modal import mm_suite_dict


@pytest.mark.parametrize("task", ["single_modal", "multi_modal"])
def test_the_readme_plugin_trains_and_its_heads_get_gradients(tmp_path, plugin_file, task):
    path, names = plugin_file
    own = [n for n in names if n not in ("none", "cut")]
    assert own, names
    raw = (tiny_suite_dict(tmp_path, methods=own, steps=2) if task == "single_modal"
           else mm_suite_dict(tmp_path, methods=own, steps=2))
    raw["plugins"] = [str(path)]
    suite = suite_from_dict(raw, str(tmp_path / "suite.yaml"), tmp_path)
    runner = Runner(suite)
    for run in suite.runs:
        task_obj = runner.train(run)
        assert task_obj.step == 2
        params = [p for p in task_obj.method.parameters() if p.requires_grad]
        assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params), \
            f"{run.method.label}: the plugin's heads got no gradient in {task}"
