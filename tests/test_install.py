"""A non-editable install works: the wheel carries the packages and what the code reads at run time
(the published tables) and nothing else (checked always); installed in a fresh environment, it runs
outside the source tree and writes results to the working directory (checked in CI, env CI=true,
where the time of a fresh install and a run is spent once per change)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The project built as a wheel from a copy of its files."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for package in ("benchmark", "methods", "tasks", "datasets"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
         str(source)], cwd=tmp)
    return next(wheels.glob("i2i_bench-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """The wheel installed into a fresh virtual environment outside the source tree (its dependencies
    seen through a .pth line pointing at this environment's site-packages, whose own .pth files --
    the editable install's -- are not run). In CI only (env CI=true)."""
    if os.environ.get("CI") != "true":
        pytest.skip("installs the wheel in CI only (CI=true); the wheel's file list is checked always")
    tmp = tmp_path_factory.mktemp("install")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
         str(wheel)], cwd=tmp)
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).strip())
    (site / "i2i_bench_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    work = tmp / "work"
    work.mkdir()
    return wheel, python, site, env, work


def test_the_wheel_carries_the_packages_and_the_published_tables_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("benchmark", "methods", "tasks", "datasets"):  # every module of the source tree
        for module in (ROOT / package).rglob("*.py"):
            assert module.relative_to(ROOT).as_posix() in names
    published = list((ROOT / "benchmark" / "published").glob("*.csv"))
    assert published and all(f"benchmark/published/{csv.name}" in names for csv in published)
    assert not [n for n in names if n.startswith(("tests/", "configs/", "results/"))]


def test_installed_package_lists_plugins_outside_the_source_tree(installed):
    _, python, site, env, work = installed
    where = run([str(python), "-c", "import benchmark, methods; print(benchmark.__file__); print(methods.__file__)"],
                cwd=work, env=env)
    assert all(Path(line).is_relative_to(site) for line in where.split()), where
    out = run([str(python), "-m", "benchmark", "list"], cwd=work, env=env)
    for name in ("cut", "negcut", "hnegsrc", "graphcl", "single_modal", "multi_modal", "synthetic_objects"):
        assert name in out


def test_installed_package_runs_a_suite_with_published_columns(installed):
    _, python, site, env, work = installed
    config = {
        "suite": "wheel", "seeds": [0], "device": "cpu", "cpu_threads": 1, "checkpoint_every": 2,
        "tasks": {"single_modal": {"ngf": 8, "ndf": 8, "n_blocks": 1, "n_layers_D": 1, "n_steps": 1,
                                   "n_steps_decay": 1}},
        "datasets": {"objects": {"type": "synthetic_objects", "size": 32, "n_train": 4, "n_test": 4,
                                 "paper_dataset": "horse2zebra"}},
        "methods": ["cut"],
        "evaluation": {"num_test_images": 4, "kid_subsets": 2, "batch_size": 4, "grid_images": 2,
                       "label_scores": False},
    }
    (work / "wheel.yaml").write_text(yaml.safe_dump(config))
    out = run([str(python), "-m", "benchmark", "run", "wheel.yaml"], cwd=work, env=env)
    report = Path(out.strip().splitlines()[-1].removeprefix("report: "))
    assert report == work / "results" / "reports" / "wheel.md" and report.is_file()
    assert (work / "results" / "runs" / "wheel" / "single_modal" / "objects" / "cut" / "seed0" / "metrics.json").is_file()
    text = report.read_text()
    assert "paper FID" in text
    published = pd.read_csv(ROOT / "benchmark" / "published" / "graphcl_aaai24_table1.csv")
    fid = published[(published.dataset == "horse2zebra") & (published.method == "CUT")].iloc[0]["FID"]
    assert f"{fid:.1f}" in text or f"{fid}" in text
    assert not list(site.glob("results")) and not list(site.parent.glob("results"))
