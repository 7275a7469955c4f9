"""The layering rules (pyproject.toml's import-linter contracts) hold, every one of them checked."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        found = shutil.which("lint-imports")
        if found is None:
            pytest.fail("lint-imports is not installed: pip install -e '.[test]' installs import-linter")
        exe = Path(found)
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(exe), "--no-cache"],  # reads root/pyproject.toml
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    contracts = len(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"])
    assert contracts >= 1 and f"Contracts: {contracts} kept, 0 broken." in result.stdout, result.stdout[-2000:]


def test_every_module_of_benchmark_is_in_a_layering_contract():
    """A module named by no contract may import anything (``benchmark.selection`` and
    ``benchmark.perf_official`` were such modules)."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers" and "containers" not in c)["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {f"benchmark.{p.stem if p.suffix == '.py' else p.name}" for p in (ROOT / "benchmark").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert modules - named == set(), f"modules of benchmark/ in no layer: {sorted(modules - named)}"
