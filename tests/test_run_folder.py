"""A run folder owns its state (benchmark/run_folder.py): results bound to their config (a finished
run of another config is refused by `run` and shown stale by `report`), a folder without work takes
the new config, metrics.json checked against its schema (broken: shown, moved aside on request and
redone), identity rows locked like runs."""
import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from benchmark.cli import main
from benchmark.config import load_suite, suite_from_dict
from benchmark.plan import format_plan, plan_suite
from benchmark.runner import Runner, expand

from conftest import tiny_suite_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def _raw(folder):
    return {**tiny_suite_dict(folder, methods=["none"], steps=2), "log_every": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The results folder of a suite whose one run (GAN-only control, 2 steps) and identity row
    have finished (trained once for the module)."""
    root = tmp_path_factory.mktemp("trained")
    config = root / "suite.yaml"
    config.write_text(yaml.safe_dump(_raw(root)))
    assert main(["run", str(config)]) == 0
    return root / "results"


@pytest.fixture
def finished(trained, tmp_path):
    """A copy of ``trained`` under this test's folder, with its config file."""
    shutil.copytree(trained, tmp_path / "results")
    config = tmp_path / "suite.yaml"
    config.write_text(yaml.safe_dump(_raw(tmp_path)))
    run = expand(suite_from_dict(yaml.safe_load(config.read_text()), base_dir=tmp_path))[0]
    return config, run


def _report(tmp_path) -> str:
    return (tmp_path / "results" / "reports" / "tiny.md").read_text()


@pytest.mark.parametrize("override, key", [("tasks.single_modal.lr=0.001", "task.options.lr"),
                                           ("evaluation.num_test_images=2", "evaluation.num_test_images")])
def test_a_finished_run_of_another_config_is_refused_and_shown_stale(finished, tmp_path, capsys, override, key):
    config, run = finished
    before = run.metrics_path.read_bytes()
    capsys.readouterr()
    assert main(["run", str(config), override]) == 1
    err = capsys.readouterr().err
    assert f"{run.run_id}: REFUSED" in err and key in err and "finished earlier, skipped" not in err
    assert run.metrics_path.read_bytes() == before  # kept, untouched
    assert not (run.directory / "error.log").exists()
    report = _report(tmp_path)
    assert "stale" in report and key in report and str(run.directory) in report
    old_fid = json.loads(before)["metrics"]["FID"]
    assert f"{old_fid:.2f}" not in report  # the old numbers are not shown under the new config
    assert "samples](" not in report and "losses](" not in report  # nor its pictures and loss curves
    assert main(["report", str(config), override]) == 0  # `report` alone says the same
    assert "stale" in _report(tmp_path) and key in _report(tmp_path)


def test_plan_names_the_stale_and_the_broken_folders_that_run_would_refuse(finished, tmp_path):
    config, run = finished
    def plan_with(*overrides):
        return plan_suite(load_suite(config, list(overrides)), check_data=False, check_weight_files=False)

    plan = plan_with()
    assert not plan.folder_problems and [r.state.kind for r in plan.runs] == ["finished"]
    stale = plan_with("tasks.single_modal.lr=0.001")
    assert [r.state.kind for r in stale.runs] == ["stale"]
    (problem,) = stale.folder_problems
    assert run.run_id in problem and "task.options.lr" in problem and problem in stale.problems
    assert f"{run.run_id}" in format_plan(stale) and "(stale)" in format_plan(stale)
    run.metrics_path.write_text("{")
    broken = plan_with()
    assert [r.state.kind for r in broken.runs] == ["broken"] and "--redo-broken" in broken.folder_problems[0]


def test_a_folder_without_checkpoint_or_results_takes_the_new_config(tmp_path):
    """A run that failed before training (e.g. a wrong dataset root) wrote config.yaml only: the
    corrected command runs it."""
    bad = suite_from_dict(tiny_suite_dict(tmp_path, methods=["none"], steps=2, lr=1e-3), base_dir=tmp_path)
    bad_run = expand(bad)[0]
    bad_run.folder.bind()
    (bad_run.directory / "error.log").write_text("DataError: dataset root '/nowhere' does not exist")
    good = suite_from_dict(tiny_suite_dict(tmp_path, methods=["none"], steps=2), base_dir=tmp_path)
    assert Runner(good).run_all() == []
    run = expand(good)[0]
    assert json.loads(run.metrics_path.read_text())["steps"] == 2
    assert yaml.safe_load((run.directory / "config.yaml").read_text())["task"]["options"]["lr"] == 2e-4


def test_a_folder_with_a_checkpoint_keeps_refusing_another_config(tmp_path):
    from benchmark.core.errors import ConfigError
    first = suite_from_dict(tiny_suite_dict(tmp_path, methods=["none"], steps=4), base_dir=tmp_path)
    Runner(first).train(expand(first)[0], stop_at=2)
    other = expand(suite_from_dict(tiny_suite_dict(tmp_path, methods=["none"], steps=4, lr=1e-3),
                                   base_dir=tmp_path))[0]
    with pytest.raises(ConfigError, match=r"different config \(changed: task\.options\.lr\)"):
        other.folder.bind()


@pytest.mark.parametrize("content", ["{}", "[1, 2]", '{"run_id": "x"'])
def test_a_broken_metrics_json_is_shown_then_moved_aside_and_redone_on_request(finished, tmp_path, capsys, content):
    config, run = finished
    run.metrics_path.write_text(content)
    capsys.readouterr()
    assert main(["run", str(config)]) == 1  # refused, not counted as finished, no KeyError
    err = capsys.readouterr().err
    assert "broken" in err and "--redo-broken" in err
    assert run.metrics_path.read_text() == content
    report = _report(tmp_path)  # the report is still written, listing the broken run
    assert "Results not shown (stale or broken)" in report and f"broken {run.metrics_path}" in report
    assert main(["report", str(config)]) == 0
    assert main(["run", str(config), "--redo-broken"]) == 0
    aside = list(run.directory.glob("metrics.json.broken-*"))
    assert len(aside) == 1 and aside[0].read_text() == content  # never deleted
    record = json.loads(run.metrics_path.read_text())
    assert record["run_id"] == run.run_id and record["metrics"]["FID"] > 0
    assert "Results not shown" not in _report(tmp_path)


def test_a_metrics_json_of_another_run_is_broken(finished, tmp_path):
    config, run = finished
    record = json.loads(run.metrics_path.read_text())
    run.metrics_path.write_text(json.dumps({**record, "run_id": "single_modal/x/none/seed9"}))
    state = run.folder.state()
    assert state.kind == "broken" and "single_modal/x/none/seed9" in state.problem


def test_identity_rows_are_locked_like_runs(tmp_path, monkeypatch):
    """While another process holds an identity row's lock, `run` waits for it and then takes its
    results instead of scoring the row a second time."""
    from tasks.single_modal.task import SingleModalTask
    suite = suite_from_dict(tiny_suite_dict(tmp_path, methods=["none"], steps=2), base_dir=tmp_path)
    task, dataset = suite.tasks[0], suite.datasets[0]
    folder = suite.identity_folder(task, dataset)
    calls = []
    real = SingleModalTask.evaluate_identity.__func__
    monkeypatch.setattr(SingleModalTask, "evaluate_identity",
                        classmethod(lambda cls, *a: calls.append(1) or real(cls, *a)))
    folder.directory.mkdir(parents=True)
    other = FileLock(str(folder.directory / "run.lock"))
    other.acquire()
    messages = []
    runner = Runner(suite)
    runner._log = messages.append
    waiting = threading.Thread(target=runner.identity, args=(task, dataset))
    waiting.start()
    time.sleep(1.0)
    assert waiting.is_alive() and any("another process is scoring it" in m for m in messages)
    folder.write_metrics({"run_id": folder.name, "task": task.label, "dataset": dataset.label,
                          "method": "identity", "seed": 0, "metrics": {"FID": 1.0}})  # "the other one"
    other.release()
    waiting.join(timeout=60)
    assert not waiting.is_alive() and calls == []
    assert json.loads(folder.metrics_path.read_text())["metrics"] == {"FID": 1.0}


def test_the_report_says_why_a_runs_loss_curves_are_missing(finished, tmp_path):
    config, run = finished
    (run.directory / "losses.csv").unlink()
    assert main(["report", str(config)]) == 0
    assert f"`{run.directory / 'losses.csv'}` is missing or empty" in _report(tmp_path)


def _folder_suite(tmp_path):
    """A folder dataset of BMP files (each image's byte size fixed by its shape) and a tiny suite on it."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for sub in ("trainA", "trainB", "testA", "testB"):
        (root / sub).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / sub / f"{i}.bmp")
    return root, {**tiny_suite_dict(tmp_path, methods=["none"], steps=2),
                  "datasets": {"folder": {"type": "unaligned_folder", "root": str(root), "size": 32, "load_size": 32}}}


def _replace_image(path):
    """Another image in place: the same name and byte size."""
    import numpy as np
    from PIL import Image
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


def test_a_checkpoint_trained_from_other_files_is_not_resumed_on_these(tmp_path):
    from benchmark.core.errors import ConfigError
    root, raw = _folder_suite(tmp_path)
    suite = suite_from_dict(raw, base_dir=tmp_path)
    run = expand(suite)[0]
    Runner(suite).train(run, stop_at=1)
    assert json.loads((run.directory / "inputs.json").read_text())["dataset"].startswith("unaligned_folder/v2/")
    _replace_image(root / "trainA" / "1.bmp")
    suite = suite_from_dict(raw, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"was trained from other data or files than those there now \(dataset: then "):
        Runner(suite).train(expand(suite)[0])
    assert run.checkpoint_path.exists()                   # kept


def test_results_made_from_other_files_of_a_folder_dataset_are_stale(tmp_path, capsys):
    """An image replaced in place (same name, same byte size) changes the dataset: the finished run
    and identity row made from the old files are refused by `run`, listed by `plan` and shown stale
    by `report`, never averaged with runs of the new files."""
    root, raw = _folder_suite(tmp_path)
    config = tmp_path / "suite.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["run", str(config)]) == 0
    run = expand(load_suite(config))[0]
    recorded = json.loads(run.metrics_path.read_text())["inputs"]["dataset"]
    assert recorded.startswith("unaligned_folder/v2/files=")

    _replace_image(root / "testB" / "0.bmp")
    capsys.readouterr()
    assert main(["run", str(config), "seeds=[0,1]"]) == 1
    err = capsys.readouterr().err
    assert f"{run.run_id}: REFUSED" in err and "made from other data or files than those there now" in err
    assert recorded in err and "[identity]" in err
    plan = plan_suite(load_suite(config, ["seeds=[0,1]"]), check_weight_files=False)
    assert any("made from other data or files than those there now" in p and run.run_id in p for p in plan.folder_problems)
    report = (tmp_path / "results" / "reports" / "tiny.md").read_text()
    assert "made from other data or files than those there now" in report
    table = report.split("Results not shown")[0]
    assert "| none |" in table and "| 1 |" in table    # only the new seed counts
    shutil.move(root, tmp_path / "elsewhere")  # the report of a machine without the data says so
    assert main(["report", str(config)]) == 0
    assert "The files of dataset(s) folder cannot be read here" in (tmp_path / "results" / "reports" / "tiny.md").read_text()


def test_the_report_warns_when_the_runs_of_a_table_were_made_with_different_code(finished, tmp_path):
    """Each run records the digest of its method's and task's source; an edit between seeds (a
    plugin changed, an upgrade) is named above the table, the runs of each version listed."""
    config, run = finished
    record = json.loads(run.metrics_path.read_text())
    assert set(record["code"]) == {"methods.none", "tasks.single_modal.task"}
    assert record["code"]["methods.none"] == "sha256:" + hashlib.sha256(
        (Path(__file__).parents[1] / "methods" / "none.py").read_bytes()).hexdigest()[:12]
    assert main(["run", str(config), "seeds=[0,1]"]) == 0
    assert "different versions of the code" not in _report(tmp_path)
    (seed1,) = [r for r in expand(load_suite(config, ["seeds=[0,1]"])) if r.seed == 1]
    edited = json.loads(seed1.metrics_path.read_text())
    method_module = "methods.none"
    edited["code"][method_module] = "sha256:000000000000"
    seed1.metrics_path.write_text(json.dumps(edited))
    assert main(["report", str(config), "seeds=[0,1]"]) == 0
    report = _report(tmp_path)
    assert "**Warning: these runs were made with different versions of the code:" in report
    assert f"{method_module}: none seed 0 with {record['code'][method_module]} / none seed 1 with sha256:000000000000" in report


def test_an_interrupted_run_of_another_config_is_shown_stale_without_its_curves(tmp_path):
    raw = _raw(tmp_path)
    suite = suite_from_dict(raw, base_dir=tmp_path)
    run = expand(suite)[0]
    Runner(suite).train(run, stop_at=1)
    assert run.checkpoint_path.exists() and not run.metrics_path.exists()
    assert (run.directory / "losses.csv").is_file()
    config = tmp_path / "suite.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["report", str(config)]) == 0
    assert "losses](" in _report(tmp_path)                  # this config's interrupted run: its curves
    assert main(["report", str(config), "tasks.single_modal.lr=0.001"]) == 0
    report = _report(tmp_path)
    assert "stale: its checkpoint was made with a different config (changed: task.options.lr)" in report
    assert "losses](" not in report
