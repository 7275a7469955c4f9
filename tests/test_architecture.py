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
