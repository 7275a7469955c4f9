"""One rule for relative paths (benchmark/paths.py): in a config file relative to that file's folder,
on the command line relative to the working directory; messages show absolute paths; `report` from
another folder finds the runs."""
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.config import load_suite, suite_from_dict
from benchmark.core.errors import ConfigError, DataError
from benchmark.run_folder import write_json

REPO = Path(__file__).resolve().parents[1]


def _config(folder: Path, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = {"suite": "paths", "device": "cpu", "tasks": {"single_modal": {"n_steps": 1, "n_steps_decay": 1}},
           "datasets": {"horses": {"type": "unaligned_folder", "root": "data/h2z"}}, "methods": ["none"],
           **extra}
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_paths_in_the_file_are_relative_to_its_folder_and_overrides_to_the_working_directory(tmp_path, monkeypatch):
    config = _config(tmp_path / "exp", output_dir="out", weights_dir="../weights",
                     launcher={"type": "local", "folder": "jobs"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    suite = load_suite("../exp/suite.yaml")
    assert suite.output_dir == tmp_path / "exp" / "out"
    assert suite.settings.weights_dir == str(tmp_path / "weights")
    assert suite.launcher_dir == tmp_path / "exp" / "jobs"
    assert suite.datasets[0].options.root == str(tmp_path / "exp" / "data" / "h2z")
    overridden = load_suite(config, ["datasets.horses.root=mine", "output_dir=o2"])
    assert overridden.datasets[0].options.root == str(elsewhere / "mine")
    assert overridden.output_dir == elsewhere / "o2"
    assert overridden.settings.weights_dir == str(tmp_path / "weights")  # still the file's
    # A worker process or a cluster job rebuilds the suite from its mapping, in any folder: same paths.
    monkeypatch.chdir(tmp_path)
    rebuilt = suite_from_dict(overridden.raw, overridden.source, tmp_path)
    assert rebuilt.datasets[0].options.root == str(elsewhere / "mine") and rebuilt.output_dir == elsewhere / "o2"


def test_the_default_output_dir_lies_beside_the_config_file(tmp_path, monkeypatch):
    config = _config(tmp_path / "exp")
    monkeypatch.chdir(tmp_path)
    assert load_suite(config.relative_to(tmp_path)).output_dir == tmp_path / "exp" / "results"


def test_plugin_files_follow_the_same_rule(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "my_plugin_paths.py").write_text("LOADED = True\n")
    config = _config(tmp_path / "exp", plugins=["my_plugin_paths.py"])
    monkeypatch.chdir(tmp_path)
    assert load_suite(config.relative_to(tmp_path)).settings.plugins == [str(tmp_path / "exp" / "my_plugin_paths.py")]
    with pytest.raises(ConfigError, match=f"plugin file '{tmp_path / 'nothere.py'}' does not exist"):
        load_suite(config, ["plugins=[nothere.py]"])


def test_messages_show_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"config file '{tmp_path / 'missing.yaml'}' does not exist"):
        load_suite("missing.yaml")
    suite = load_suite(_config(tmp_path / "exp").relative_to(tmp_path))
    dataset = suite.datasets[0].cls(suite.datasets[0].options, tmp_path / "cache")
    with pytest.raises(DataError, match=f"dataset root '{tmp_path / 'exp' / 'data' / 'h2z'}' does not exist"):
        dataset.folder_files("trainA")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_write_to_the_repository_results_from_any_folder(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_suite(path).output_dir == REPO / "results"


def test_report_from_another_folder_finds_the_runs(tmp_path, monkeypatch):
    _config(tmp_path / "exp", output_dir="out",
            datasets={"synthetic_objects": {"size": 16, "n_train": 4, "n_test": 2}})
    monkeypatch.chdir(tmp_path / "exp")
    suite = load_suite("suite.yaml")
    (run,) = suite.runs
    run.folder.bind()
    write_json(run.metrics_path, {"run_id": run.run_id, "suite": "paths", "task": "single_modal",
                                  "dataset": "synthetic_objects", "method": "none", "seed": 0, "steps": 2,
                                  "metrics": {"FID": 123.45, "KIDx100": 6.0}, "protocol": {}})
    monkeypatch.chdir(tmp_path)
    assert main(["report", "exp/suite.yaml"]) == 0
    report = (tmp_path / "exp" / "out" / "reports" / "paths.md").read_text()
    assert "No finished runs yet" not in report and "123.45" in report
    assert not (tmp_path / "results").exists()
