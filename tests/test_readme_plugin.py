"""The README's plugin example ("Adding a method"), exactly as printed, runs in both tasks."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from benchmark.config import suite_from_dict
from benchmark.runner import Runner

from conftest import tiny_suite_dict
from test_multi_modal import mm_suite_dict

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_plugin() -> tuple[str, list[str]]:
    """The ```python block that starts with '# my_methods.py', and the names in the YAML block after it."""
    text = README.read_text()
    code = re.search(r"```python\n(# my_methods\.py\n.*?)```", text, re.S)
    assert code, "README has no '# my_methods.py' example"
    yaml_block = re.search(r"```yaml\n(plugins: \[my_methods\.py\].*?)```", text[code.end():], re.S)
    assert yaml_block, "README has no YAML block naming my_methods.py after the example"
    names = re.search(r"methods: \[(.*?)\]", yaml_block.group(1)).group(1)
    return code.group(1), [n.strip() for n in names.split(",")]


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory):
    """One file for both tasks: a plugin module is imported (and registers its names) once."""
    code, names = readme_plugin()
    path = tmp_path_factory.mktemp("readme") / "my_methods.py"
    path.write_text(code)
    return path, names


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
