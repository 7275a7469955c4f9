"""The layering rules (pyproject.toml's import-linter contracts) hold, and breaking one fails."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "methods", "tasks", "datasets")


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
    assert "BROKEN" not in result.stdout and " kept, 0 broken." in result.stdout


def test_every_module_of_benchmark_is_in_a_layering_contract():
    """A module named by no contract may import anything (``benchmark.selection`` and
    ``benchmark.perf_official`` were such modules)."""
    import tomllib
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers" and "containers" not in c)["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {f"benchmark.{p.stem if p.suffix == '.py' else p.name}" for p in (ROOT / "benchmark").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert modules - named == set(), f"modules of benchmark/ in no layer: {sorted(modules - named)}"


def copy_tree(dest: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_an_import_from_the_base_into_methods_breaks_a_contract(tmp_path):
    root = copy_tree(tmp_path)
    errors = root / "benchmark" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport methods.cut  # noqa: E402 - the violation under test\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "The base layer (benchmark.core) imports no plugin package" in result.stdout
    assert "benchmark.core.errors -> methods.cut" in result.stdout


def test_a_cycle_inside_a_package_breaks_a_contract(tmp_path):
    root = copy_tree(tmp_path)
    atomic = root / "benchmark" / "core" / "atomic.py"  # checkpoint imports atomic: close a cycle
    atomic.write_text(atomic.read_text() + "\nfrom . import checkpoint  # noqa: E402,F401\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "No import cycles inside a package" in result.stdout and "BROKEN" in result.stdout
