"""Training curves: each run's losses.csv (equal to what train_step returned, identical after a
resume), TensorBoard scalars equal to it, and the report's loss / FID plots."""
import csv
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.config import suite_from_dict
from benchmark.core.errors import ConfigError
from benchmark.progress import LOSSES_CSV, LossLog, read_losses, tensorboard_available
from benchmark.report import write_report
from benchmark.report.curves import (EVALS_JSONL, eval_curves, fid_figure, loss_axes, loss_curves, loss_figure,
                                     method_color, smoothing_window)
from benchmark.report.layouts import ReportContext
from benchmark.report.results import expected_rows
from benchmark.runner import Runner, expand

from conftest import tiny_suite_dict

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TENSORBOARD = tensorboard_available()


class Recorder:
    """A progress sink that keeps the values of every step (and can stop the run at one step, as a
    crash would, after that step's row is logged and before its checkpoint)."""

    def __init__(self, crash_at=None):
        self.values, self.crash_at = {}, crash_at

    def log(self, message):
        pass

    def resumed(self, label, step):
        pass

    def step(self, label, step, total, seconds, values, force=False):
        self.values[step] = dict(values)
        if step == self.crash_at:
            raise RuntimeError("simulated crash")


def _suite(tmp_path, name, **settings):
    raw = tiny_suite_dict(tmp_path / name, methods=("none",), steps=4)  # checkpoint_every 2
    raw.update({"log_every": 1, "tensorboard": TENSORBOARD, **settings})
    return suite_from_dict(raw, base_dir=tmp_path)


def _train(suite, progress=None):
    run = expand(suite)[0]
    Runner(suite, progress).train(run)
    return run


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """An uninterrupted run of 4 steps (the GAN-only control: the cheapest step), every step logged,
    and the values each step returned."""
    recorder = Recorder()
    return _train(_suite(tmp_path_factory.mktemp("curves"), "full"), recorder), recorder.values


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The same run stopped by a crash at step 3 (after its row, so one row beyond the checkpoint of
    step 2, plus a row torn by the crash), then resumed; and its rows before the resume."""
    suite = _suite(tmp_path_factory.mktemp("curves"), "split")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(suite, Recorder(crash_at=3))
    path = expand(suite)[0].directory / LOSSES_CSV
    before = [r[0] for r in _csv_rows(path)[1:]]
    with open(path, "a") as f:
        f.write("4,0.12")
    return _train(suite), before


def test_losses_csv_rows_are_the_values_train_step_returned(full):
    run, returned = full
    header, *rows = _csv_rows(run.directory / LOSSES_CSV)
    names = list(returned[1])
    assert header == ["step", *names] and len(names) >= 2  # D, G_GAN, ...
    assert [int(r[0]) for r in rows] == list(range(1, 5))
    for row in rows:
        assert [float(c) for c in row[1:]] == [returned[int(row[0])][n] for n in names]  # exactly


def test_a_resumed_run_writes_the_csv_of_an_uninterrupted_run(full, resumed):
    run, before = resumed
    assert before == ["1", "2", "3"]  # the crash left a row after the checkpoint's step
    assert (run.directory / LOSSES_CSV).read_bytes() == (full[0].directory / LOSSES_CSV).read_bytes()


def test_loss_log_keeps_rows_up_to_the_start_step_and_every_nth_step(tmp_path):
    log = LossLog(tmp_path, 0, every=2, tensorboard=False)
    for step in range(1, 6):
        log.write(step, {"a": step / 4})
    log.close()
    assert (tmp_path / LOSSES_CSV).read_text() == "step,a\n2,0.5\n4,1.0\n"
    assert not list(tmp_path.glob("events.out.tfevents.*"))  # tensorboard off: no event file
    LossLog(tmp_path, 3, tensorboard=False).close()  # resumed at step 3
    assert (tmp_path / LOSSES_CSV).read_text() == "step,a\n2,0.5\n"
    LossLog(tmp_path, 0, tensorboard=False).close()  # started over (no checkpoint yet)
    assert not (tmp_path / LOSSES_CSV).exists()


def test_loss_log_widens_its_header_for_a_loss_first_returned_later(tmp_path):
    log = LossLog(tmp_path, 0, tensorboard=False)
    log.write(1, {"a": 1.5})
    log.write(2, {"a": 0.25, "b": -3.0})
    log.write(3, {"b": float("nan")})
    log.close()
    assert (tmp_path / LOSSES_CSV).read_text() == "step,a,b\n1,1.5,\n2,0.25,-3.0\n3,,nan\n"
    names, rows = read_losses(tmp_path / LOSSES_CSV, upto=2)
    assert names == ["a", "b"] and rows == [(1, {"a": 1.5}), (2, {"a": 0.25, "b": -3.0})]
    LossLog(tmp_path, 1, tensorboard=False).close()  # resuming at step 1: "b" was not logged yet
    assert (tmp_path / LOSSES_CSV).read_text() == "step,a\n1,1.5\n"


def test_log_every_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="log_every must be >= 1"):
        _suite(tmp_path, "bad", log_every=0)


@pytest.mark.skipif(not TENSORBOARD, reason="the optional tensorboard package is not installed")
def test_tensorboard_scalars_equal_the_csv_after_a_resume(resumed):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = resumed
    names, rows = read_losses(run.directory / LOSSES_CSV)
    assert len(list(run.directory.glob("events.out.tfevents.*"))) == 2  # one per attempt
    events = EventAccumulator(str(run.directory))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == sorted(f"loss/{n}" for n in names)
    for name in names:  # step 3 of the crashed attempt is hidden: each step once, the resumed value
        logged = [(e.step, e.value) for e in events.Scalars(f"loss/{name}")]
        assert logged == [(step, float(np.float32(values[name]))) for step, values in rows]


# -- the report's plots ------------------------------------------------------------------------

def _write_losses(directory, names, rows):
    directory.mkdir(parents=True, exist_ok=True)
    lines = [",".join(["step", *names])] + [",".join(map(str, row)) for row in rows]
    (directory / LOSSES_CSV).write_text("\n".join(lines) + "\n")


def _write_evals(directory, records, torn=""):
    directory.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps({"step": s, "split": sp, "metrics": {"FID": v, "KIDx100": 1.0}}) + "\n"
                   for s, sp, v in records)
    (directory / EVALS_JSONL).write_text(text + torn)


@pytest.fixture
def logged_suite(tmp_path):
    """Two methods x two seeds, none trained: their losses.csv written by hand (the control logs D and
    G_GAN, CUT also NCE; 100 logged steps, so the smoothing window is 2)."""
    suite = suite_from_dict(tiny_suite_dict(tmp_path, methods=("none", "cut"), seeds=(0, 1)), base_dir=tmp_path)
    steps = range(10, 1010, 10)
    for run in expand(suite):
        k = 1.0 + run.seed
        if run.method.label == "none":
            _write_losses(run.directory, ["D", "G_GAN"], [(s, k * s, -k) for s in steps])
        else:
            _write_losses(run.directory, ["D", "G_GAN", "NCE"], [(s, 2 * k * s, -3 * k, 3.0) for s in steps])
    return suite


def _context(suite):
    return ReportContext(suite, suite.output_dir / "reports", expected_rows(suite))


def test_loss_plot_has_an_axis_per_loss_and_a_smoothed_seed_mean_line_per_method(logged_suite):
    ctx = _context(logged_suite)
    curves = loss_curves(ctx.rows_of("single_modal", "synthetic_objects"), ["none", "cut"])
    assert list(curves) == ["none", "cut"]
    assert curves["none"].loc[20, "D"] == pytest.approx(1.5 * 20)  # mean of seeds 0 and 1 (k = 1, 2)
    window = smoothing_window(curves)
    assert window == 2
    fig = loss_figure(curves, {"none": method_color(0), "cut": method_color(1)}, window)
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert sorted(axes) == ["D", "G_GAN", "NCE"]
    assert [len(axes[n].get_lines()) for n in ("D", "G_GAN", "NCE")] == [2, 2, 1]
    none_d = next(line for line in axes["D"].get_lines() if line.get_label() == "none")
    d = 1.5 * np.arange(10, 1010, 10)
    assert np.allclose(none_d.get_ydata(), np.concatenate([d[:1], (d[1:] + d[:-1]) / 2]))  # trailing mean of 2
    assert list(none_d.get_xdata()) == list(range(10, 1010, 10))


def test_a_loss_whose_scale_differs_between_methods_gets_an_axis_per_method():
    """FastCUT's NCE (weight 10, near 46) beside CUT's (near 3): on one axis CUT's line would be flat."""
    steps = pd.Index(range(10, 110, 10), name="step")
    curves = {"cut": pd.DataFrame({"D": 0.5, "NCE": 3.0}, index=steps),
              "fastcut": pd.DataFrame({"D": 0.4, "NCE": 46.0}, index=steps)}
    assert loss_axes(curves) == [("D", "D", ["cut", "fastcut"]), ("NCE (cut)", "NCE", ["cut"]),
                                 ("NCE (fastcut)", "NCE", ["fastcut"])]
    fig = loss_figure(curves, {"cut": "C0", "fastcut": "C1"}, 1)
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert sorted(axes) == ["D", "NCE (cut)", "NCE (fastcut)"]
    (line,) = axes["NCE (cut)"].get_lines()
    assert line.get_label() == "cut" and np.allclose(line.get_ydata(), 3.0)
    curves["fastcut"]["NCE"] = 25.0  # within a factor 10: one shared axis
    assert ("NCE", "NCE", ["cut", "fastcut"]) in loss_axes(curves)


def test_fid_plot_has_a_line_per_method_and_split(logged_suite):
    runs = {(r.method.label, r.seed): r for r in expand(logged_suite)}
    _write_evals(runs["none", 0].directory, [(500, "val", 90.0), (1000, "val", 80.0), (1000, "test", 85.0)],
                 torn='{"step": 1500, "split": "val", "metr')
    _write_evals(runs["none", 1].directory, [(500, "val", 70.0), (1000, "val", 60.0)])
    _write_evals(runs["cut", 0].directory, [(500, "val", 50.0)])
    ctx = _context(logged_suite)
    curves = eval_curves(ctx.rows_of("single_modal", "synthetic_objects"), ["none", "cut"])
    assert sorted(curves) == [("cut", "val"), ("none", "test"), ("none", "val")]
    assert curves["none", "val"].to_dict() == {500: 80.0, 1000: 70.0}  # seeds averaged step by step
    assert curves["none", "test"].to_dict() == {1000: 85.0}
    fig = fid_figure(curves, {"none": "C0", "cut": "C1"})
    (ax,) = fig.axes
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles == {"none (validation)": "-", "none (test)": "--", "cut (validation)": "-"}

    report = write_report(logged_suite)
    text = report.read_text()
    for name in ("single_modal_synthetic_objects_losses.png", "single_modal_synthetic_objects_fid.png"):
        assert f"]({logged_suite.name}/{name})" in text  # linked relative to the report
        png = report.parent / logged_suite.name / name
        assert png.read_bytes().startswith(PNG_SIGNATURE)
        with Image.open(png) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 100
    assert "trailing moving average over 2 logged steps" in text
    assert "solid: validation, dashed: test" in text


def test_without_evaluations_the_report_has_no_fid_plot(logged_suite):
    report = write_report(logged_suite)
    text = report.read_text()
    assert "single_modal_synthetic_objects_losses.png" in text
    assert "_fid.png" not in text and "FID during training" not in text
    assert not (report.parent / logged_suite.name / "single_modal_synthetic_objects_fid.png").exists()


def test_a_suite_without_logged_runs_has_no_curves(tmp_path):
    suite = suite_from_dict(tiny_suite_dict(tmp_path), base_dir=tmp_path)
    assert "training curves" not in write_report(suite).read_text()
