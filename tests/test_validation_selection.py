"""Evaluation during training on a held-out validation split and the checkpoint choice as a stated
protocol (last / best_val / best_test): the split's disjointness, the choice, bounded disk, bit-exact
resume, the config's checks and the report's selection table."""
import json

import pytest
import torch

from benchmark.config import suite_from_dict
from benchmark.core.errors import ConfigError
from benchmark.report import write_report
from benchmark.runner import Runner, check_config, expand
from benchmark.selection import EVALS_FILE, Selection, read_evals
from tasks.compression.evaluation import held_out_indices
from tasks.data import seeded_generator

from conftest import tiny_suite_dict

VALIDATION = {"eval_every": 2, "images": 2}


def _suite(tmp_path, name, validation=VALIDATION, dataset=None, checkpoint_every=2, **kwargs):
    raw = tiny_suite_dict(tmp_path / name, **kwargs)
    raw["checkpoint_every"] = checkpoint_every
    if validation is not None:
        raw["validation"] = dict(validation)
    if dataset:
        raw["datasets"] = dataset
    return suite_from_dict(raw, base_dir=tmp_path)


def _train(tmp_path, name, stop_at=None, validation=VALIDATION, **kwargs):
    suite = _suite(tmp_path, name, validation, **kwargs)
    run = expand(suite)[0]
    return Runner(suite).train(run, stop_at=stop_at), run, suite


def _weights(task):
    return {f"{n}.{k}": v.clone() for n, m in task._modules().items() for k, v in m.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _contents(images):
    return {bytes(img.contiguous().numpy()) for img in images}


# -- the split ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["synthetic_objects", "synthetic_aligned_scenes"])
def test_validation_split_shares_no_image_with_test_or_the_training_steps(tmp_path, dataset):
    suite = _suite(tmp_path, dataset, {"eval_every": 2, "images": 3},
                   dataset={dataset: {"size": 32, "n_train": 10, "n_test": 4}})
    run = expand(suite)[0]
    task = Runner(suite).build_task(run)
    val, data = task.validation.sides, task.dataset
    assert len(val.a) == len(val.b) == 3 and len(task.batches.set_a) == len(task.batches.set_b) == 7
    for side, held in (("A", val.a), ("B", val.b)):
        assert not _contents(held.images(range(len(held)))) & _contents(
            data.split("test", side).images(range(len(data.split("test", side)))))
    # every image the training steps draw, over several epochs
    drawn_a, drawn_b = set(), set()
    for step in range(40):
        ids_a, ids_b = task.batches.indices(step)
        drawn_a |= _contents(task.batches.set_a.images(ids_a))
        drawn_b |= _contents(task.batches.set_b.images(ids_b))
    assert len(drawn_a) == 7
    assert not drawn_a & _contents(val.a.images(range(3))) and not drawn_b & _contents(val.b.images(range(3)))
    if dataset == "synthetic_aligned_scenes":  # a held-out pair is held out whole
        assert val.a.indices == val.b.indices


def test_validation_split_of_the_multi_modal_task_is_held_out_of_each_domains_training_images(tmp_path):
    from test_multi_modal import mm_suite_dict
    raw = mm_suite_dict(tmp_path, steps=2, lpips=False)
    raw["validation"] = {"eval_every": 1, "images": 2}
    suite = suite_from_dict(raw, base_dir=tmp_path)
    task = Runner(suite).build_task(expand(suite)[0])
    for d, domain in enumerate(task.domains):
        held = _contents(task.validation_sets[d].images(range(2)))
        trained = _contents(task.batches.sets[d].images(range(len(task.batches.sets[d]))))
        test = task.dataset.split("val", domain)  # StarGAN v2's val split is this task's test set
        assert len(held) == 2 and len(trained) == 4
        assert not held & trained and not held & _contents(test.images(range(len(test))))
    metrics = task.evaluate_point("val")
    assert metrics["FID"] == pytest.approx(0.5 * (metrics["latent_FID"] + metrics["reference_FID"]))


def test_compression_keeps_its_search_images_and_takes_validation_from_the_rest(tmp_path):
    from test_compression_task import suite_dict
    base = suite_from_dict(suite_dict(tmp_path / "off"), base_dir=tmp_path)
    raw = suite_dict(tmp_path / "on")
    raw["validation"] = {"eval_every": 2, "images": 2}
    on = suite_from_dict(raw, base_dir=tmp_path)
    task_off = Runner(base).build_task(expand(base)[0])
    task_on = Runner(on).build_task(expand(on)[0])
    search = set(held_out_indices(12, 4))
    assert set(task_off.batches.set_a.indices) == set(range(12)) - search  # unchanged without validation
    val = task_on.validation.sides
    val_ids = {task_on.batches.set_a.base.indices[i] for i in val.a.indices}
    trained = {task_on.batches.set_a.base.indices[i] for i in task_on.batches.set_a.indices}
    assert len(val_ids) == 2 and not val_ids & search and not val_ids & trained
    assert trained | val_ids | search == set(range(12))
    assert set(task_on.evaluate_point("val")) >= {"FID", "KIDx100"}


@pytest.mark.parametrize("n", [5, 12, 120, 1067])
def test_the_shared_held_out_helper_keeps_the_compression_searchs_images(n):
    """The search's held-out images are those the task drew before the helper was shared."""
    count = max(2, n // 10)
    order = torch.randperm(n, generator=seeded_generator(20240, n)).tolist()
    assert held_out_indices(n, 0) == sorted(order[n - count:])


# -- the choice ---------------------------------------------------------------------------------------

class _Spy:
    """A dataset whose test image sets count the batches read from them (``images()``)."""

    def __init__(self, dataset):
        self._dataset, self.test_reads = dataset, 0

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def split(self, split, side):
        image_set = self._dataset.split(split, side)
        if split != "test":
            return image_set
        spy = self

        class Counting(type(image_set)):
            def images(self, indices):
                spy.test_reads += 1
                return super().images(indices)

        image_set.__class__ = Counting
        return image_set


@pytest.mark.parametrize("select", [["last", "best_val"], ["last", "best_val", "best_test"]])
def test_best_val_is_the_lowest_validation_fid_and_never_reads_test(tmp_path, select):
    suite = _suite(tmp_path, "s", {"eval_every": 1, "images": 2, "select": select, "keep_checkpoints": True},
                   steps=5)
    runner, run = Runner(suite), expand(suite)[0]
    spy = _Spy(runner.dataset(run.dataset))
    runner._datasets[run.dataset.label] = spy
    task = runner.train(run)
    assert (spy.test_reads > 0) == ("best_test" in select)  # the spy sees test reads when there are any
    records = read_evals(run.directory / EVALS_FILE)
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in val] == [1, 2, 3, 4, 5]
    fids = [r["metrics"]["FID"] for r in val]
    best = val[fids.index(min(fids))]["step"]
    record = runner.finish(run, task, 0.0)
    assert record["selection"]["best_val"]["step"] == best
    assert ("best_test" in record["selection"]) == ("best_test" in select)
    # the kept checkpoint holds the weights that scored that FID
    selection = Selection(suite.settings.validation, run.directory, run.run_id)
    task.load_state_dict(selection.load_best("best_val", "cpu"))
    assert task.step == best
    assert task.evaluate_point("val")["FID"] == min(fids)


def test_best_test_is_the_lowest_test_fid_and_each_rule_is_scored_by_the_full_test_protocol(tmp_path):
    suite = _suite(tmp_path, "s", {"eval_every": 1, "images": 2}, steps=4)
    assert Runner(suite).run_all() == []
    run = expand(suite)[0]
    record = json.loads(run.metrics_path.read_text())
    test = [r for r in read_evals(run.directory / EVALS_FILE) if r["split"] == "test"]
    best = min(test, key=lambda r: (r["metrics"]["FID"], r["step"]))
    chosen = record["selection"]["best_test"]
    assert chosen["step"] == best["step"] and chosen["optimistic"] is True
    # the single-modal task's point scores on test are its test protocol: the same numbers
    assert chosen["metrics"] == best["metrics"]
    assert record["selection"]["last"]["metrics"] == record["metrics"] == test[-1]["metrics"]
    assert record["protocol"]["checkpoint"] == "last"
    assert not list((run.directory / "checkpoints").glob("best_*.pt"))  # discarded once scored


# -- disk and resume ----------------------------------------------------------------------------------

def test_disk_use_stays_bounded_whatever_the_number_of_evaluations(tmp_path):
    suite = _suite(tmp_path, "s", {"eval_every": 1, "images": 2}, steps=5)
    runner, run = Runner(suite), expand(suite)[0]
    seen = set()
    for stop in range(1, 6):
        runner.train(run, stop_at=stop)
        files = sorted(p.name for p in (run.directory / "checkpoints").iterdir())
        seen |= set(files)
        assert len(files) <= 3 and not [f for f in files if f.endswith(".tmp")]
    assert seen == {"latest.pt", "best_val.pt", "best_test.pt"}
    assert len(read_evals(run.directory / EVALS_FILE)) == 10


def _evals(run):
    return (run.directory / EVALS_FILE).read_text()


def _best_states(run):
    out = {}
    for path in sorted((run.directory / "checkpoints").glob("best_*.pt")):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        out[path.name] = (ckpt["step"], ckpt["task"])
    return out


def _same_best(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][0] == b[name][0]
        ta, tb = a[name][1], b[name][1]
        for key in ("netG", "netD", "method"):
            assert _same(ta[key], tb[key])


@pytest.mark.parametrize("stop_at", [3, 4])
def test_resume_with_evaluation_is_bit_exact(tmp_path, stop_at):
    """Interrupted between two evaluation points (3) and right after one (4), then resumed."""
    kwargs = dict(steps=6, validation={"eval_every": 2, "images": 2})
    full, full_run, _ = _train(tmp_path, "full", **kwargs)
    _train(tmp_path, "split", stop_at=stop_at, **kwargs)
    resumed, run, _ = _train(tmp_path, "split", **kwargs)
    assert resumed.step == full.step == 6
    assert _same(_weights(full), _weights(resumed))
    assert _evals(run) == _evals(full_run)  # every record identical, none duplicated
    _same_best(_best_states(run), _best_states(full_run))


def _power_cut_before_the_best_file(monkeypatch, step, train):
    """``train()`` stopped by a KeyboardInterrupt in ``Selection.keep_best`` at ``step``: after
    latest.pt holds that step, before the best-of files it wins are written."""
    real_keep = Selection.keep_best

    def crash_keep(self, task):
        if task.step == step:
            raise KeyboardInterrupt("power cut")
        return real_keep(self, task)

    monkeypatch.setattr(Selection, "keep_best", crash_keep)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(Selection, "keep_best", real_keep)


def test_a_crash_between_records_and_checkpoints_resumes_bit_exact(tmp_path, monkeypatch):
    """Crash 1: after step 4's records, before latest.pt (the records are cut, step 4 redone).
    Crash 2: after latest.pt at step 4, before the kept checkpoints (rewritten on resume)."""
    import benchmark.runner as runner_module
    kwargs = dict(steps=6, validation={"eval_every": 2, "images": 2}, checkpoint_every=100)
    full, full_run, _ = _train(tmp_path, "full", **kwargs)

    real_save = runner_module.save_checkpoint

    def crash_at_4(path, run_id, step, state):
        if step == 4:
            raise KeyboardInterrupt("power cut")
        return real_save(path, run_id, step, state)

    monkeypatch.setattr(runner_module, "save_checkpoint", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "crash1", **kwargs)
    monkeypatch.setattr(runner_module, "save_checkpoint", real_save)
    _, run1, _ = _train(tmp_path, "crash1", **kwargs)

    _power_cut_before_the_best_file(monkeypatch, 4, lambda: _train(tmp_path, "crash2", **kwargs))
    resumed2, run2, _ = _train(tmp_path, "crash2", **kwargs)
    for run in (run1, run2):
        assert _evals(run) == _evals(full_run)
        _same_best(_best_states(run), _best_states(full_run))
    assert _same(_weights(full), _weights(resumed2))


def test_a_crash_before_the_last_steps_best_checkpoint_resumes_and_finishes(tmp_path, monkeypatch):
    """The last step is the best point (the only one) and the run stops between its latest.pt and
    best_val.pt: resuming at the last step writes best_val.pt from the loaded state (it was not
    deleted by a finished run)."""
    kwargs = dict(steps=1, validation={"eval_every": 1, "images": 2, "select": ["last", "best_val"]})
    _power_cut_before_the_best_file(monkeypatch, 1, lambda: _train(tmp_path, "crash", **kwargs))
    suite = _suite(tmp_path, "crash", kwargs["validation"], steps=1)
    run = expand(suite)[0]
    assert not (run.directory / "checkpoints" / "best_val.pt").exists()
    assert Runner(suite).run_all() == []
    assert json.loads(run.metrics_path.read_text())["selection"]["best_val"]["step"] == 1


@pytest.fixture
def finished_with_an_earlier_best(tmp_path):
    """A finished run whose best_val and best_test checkpoints chose step 1 of 2 and were deleted once
    scored (keep_checkpoints off), and its metrics.json then broken."""
    suite = _suite(tmp_path, "s", {"eval_every": 1, "images": 2}, steps=2)
    assert Runner(suite).run_all() == []
    run = expand(suite)[0]
    record = json.loads(run.metrics_path.read_text())
    assert {rule: record["selection"][rule]["step"] for rule in ("best_val", "best_test")} == {
        "best_val": 1, "best_test": 1}  # the precondition: chosen before the last step
    assert not list((run.directory / "checkpoints").glob("best_*.pt"))
    run.metrics_path.write_text("{}")
    return suite, run, record


def test_redoing_a_broken_metrics_json_keeps_the_scores_of_the_deleted_best_checkpoints(
        finished_with_an_earlier_best, capsys):
    suite, run, record = finished_with_an_earlier_best
    assert Runner(suite, redo_broken=True).run_all() == []
    again = json.loads(run.metrics_path.read_text())
    assert again["metrics"] == record["metrics"]
    for rule in ("best_val", "best_test"):
        assert again["selection"][rule].pop("scored") == "when the run first finished (its checkpoint was deleted since)"
    assert again["selection"] == record["selection"]
    out = capsys.readouterr().out
    assert "the best_val checkpoint (step 1) was scored when the run first finished" in out
    assert str(run.directory / "selection" / "best_val" / "scores.json") in out


def test_redoing_a_run_folder_without_kept_scores_names_what_is_missing(finished_with_an_earlier_best):
    suite, run, _ = finished_with_an_earlier_best
    for rule in ("best_val", "best_test"):
        (run.directory / "selection" / rule / "scores.json").unlink()  # as an earlier version left it
    ((_, message),) = Runner(suite, redo_broken=True).run_all()
    assert "best_val.pt (step 1, chosen by evals.jsonl) was deleted when the run finished" in message
    assert "restore a sound metrics.json (from a backup)" in message
    assert not run.metrics_path.exists()


def test_evaluating_does_not_change_training(tmp_path):
    """The same images held out, evaluated every step or every third: the same weights."""
    often, _, _ = _train(tmp_path, "often", steps=6, validation={"eval_every": 1, "images": 2})
    rarely, _, _ = _train(tmp_path, "rarely", steps=6, validation={"eval_every": 3, "images": 2,
                                                                    "select": ["last", "best_val"]})
    assert _same(_weights(often), _weights(rarely))


# -- the config -----------------------------------------------------------------------------------------

def test_validation_is_off_by_default_and_older_run_folders_stay_valid(tmp_path):
    import yaml
    from benchmark.core.yaml_io import load_yaml

    plain, run, _ = _train(tmp_path, "x", stop_at=2, validation=None)
    assert plain.validation is None and not (run.directory / EVALS_FILE).exists()
    path = run.directory / "config.yaml"
    stored = load_yaml(path.read_text())
    del stored["validation"]  # a run folder written before the setting existed
    path.write_text(yaml.safe_dump(stored))
    check_config(run)  # the same config
    with pytest.raises(ConfigError, match=r"changed: validation\b"):
        check_config(expand(_suite(tmp_path, "x", {"eval_every": 2}))[0])


@pytest.mark.parametrize("validation, message", [
    ({"eval_every": 2, "select": ["best_val"]}, "must include 'last'"),
    ({"eval_every": 2, "images": 1}, "FID needs two"),
    ({"eval_every": 2, "selct": ["last"]}, "unknown key 'selct'; nearest valid keys: select"),
    ({"eval_every": 2, "select": ["last", "best_train"]}, "is not one of"),
])
def test_bad_validation_settings_are_refused(tmp_path, validation, message):
    with pytest.raises(ConfigError, match=message):
        _suite(tmp_path, "bad", validation)


def test_the_single_image_task_refuses_validation_and_says_why(tmp_path):
    from test_single_image import suite_dict
    raw = suite_dict(tmp_path)
    raw["validation"] = {"eval_every": 2}
    with pytest.raises(ConfigError, match="single_image.*one source and one target image"):
        suite_from_dict(raw)


def test_too_many_held_out_images_is_a_clear_error(tmp_path):
    suite = _suite(tmp_path, "s", {"eval_every": 2, "images": 8})
    with pytest.raises(Exception, match="leaves none of the 8 training images of side A"):
        Runner(suite).build_task(expand(suite)[0])


# -- the report -------------------------------------------------------------------------------------------

def test_report_shows_last_best_val_and_best_test_side_by_side_with_the_gain(tmp_path):
    suite = _suite(tmp_path, "s", {"eval_every": 1, "images": 2}, steps=3, methods=("cut", "fastcut"))
    assert Runner(suite).run_all() == []
    text = write_report(suite).read_text()
    assert "checkpoint selection" in text
    header = next(line for line in text.splitlines() if "FID best_test (optimistic)" in line)
    for column in ("FID last", "FID best_val", "FID gain best_test − last", "FID gain best_val − last"):
        assert column in header
    record = json.loads(expand(suite)[0].metrics_path.read_text())
    gain = record["selection"]["best_test"]["metrics"]["FID"] - record["metrics"]["FID"]
    row = next(line for line in text.splitlines() if line.startswith("| synthetic_objects | cut |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert float(cells[columns.index("FID gain best_test − last")]) == pytest.approx(gain, abs=0.006)
    assert gain <= 0  # the test set's own choice is never worse than the last checkpoint on test
    for rule, column in (("last", "FID last"), ("best_test", "FID best_test (optimistic)")):
        chosen = record["selection"][rule]["metrics"]  # each rule's cell carries its own bootstrap interval
        assert cells[columns.index(column)] == (f"{chosen['FID']:.2f} [{chosen['FID_ci_low']:.2f}, "
                                                f"{chosen['FID_ci_high']:.2f}]")
