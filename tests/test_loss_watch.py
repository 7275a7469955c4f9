"""A run whose losses went wrong never gives a number without a word: a NaN or inf stops it with the
term and step named; a term exactly 0 at every step is named in its record and warned about above
the report's table."""
from __future__ import annotations

import json
import math

import pytest

from benchmark.config import suite_from_dict
from benchmark.loss_watch import DEGENERATE, LossWatch, TrainingDiverged
from benchmark.report import write_report
from benchmark.runner import Runner

from conftest import tiny_suite_dict

pytestmark = pytest.mark.usefixtures("one_thread")

PLUGIN = """
from dataclasses import dataclass
import torch
from benchmark.core.registry import register_method
from methods.base import STANDALONE, Method


@dataclass
class Params:
    value: str = "zero"   # zero: a loss identically 0; nan: NaN from the third step on


@register_method("watched_loss")
class WatchedLoss(Method):
    Params = Params

    def __init__(self, params, environment=STANDALONE):
        super().__init__(params, environment)
        self.calls = 0

    def generator_losses(self, pair, computed=None):
        self.calls += 1
        zero = (pair.output - pair.output.detach()).sum()  # 0 with a gradient path
        if self.params.value == "nan" and self.calls >= 3:
            return {"NCE": zero + float("nan")}
        return {"NCE": zero}
"""


def test_non_finite_values_stop_with_the_term_and_step_named():
    watch = LossWatch()
    watch.check(1, {"D": 0.5, "NCE": 1.0})
    with pytest.raises(TrainingDiverged, match=r"step 2: NCE = nan"):
        watch.check(2, {"D": 0.5, "NCE": math.nan})
    with pytest.raises(TrainingDiverged, match=r"step 3: D = inf"):
        watch.check(3, {"D": math.inf, "NCE": 1.0})


def test_terms_exactly_zero_at_every_step_are_degenerate_counting_the_rows_before_a_resume():
    watch = LossWatch()
    for step in range(3):
        watch.check(step, {"G_GAN": 0.7, "NCE": 0.0, "R1": 0.0 if step < 2 else 1e-30})
    assert watch.degenerate() == ["NCE"]
    assert watch.protocol() == {DEGENERATE: "NCE (exactly 0 at every step)"}
    resumed = LossWatch(earlier=[(10, {"NCE": 0.3})])
    resumed.check(11, {"NCE": 0.0})
    assert resumed.degenerate() == [] and resumed.protocol() == {}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("watched") / "watched_methods.py"
    path.write_text(PLUGIN)
    return str(path)


def _suite(tmp_path, plugin, value):
    raw = tiny_suite_dict(tmp_path, methods=[{"name": "watched_loss", "params": {"value": value}}], steps=4)
    raw["plugins"] = [plugin]
    raw["evaluation"]["bootstrap_resamples"] = 0
    return suite_from_dict(raw, str(tmp_path / "suite.yaml"), tmp_path)


def test_a_zero_loss_is_named_in_the_record_and_warned_about_in_the_report(tmp_path, plugin):
    suite = _suite(tmp_path, plugin, "zero")
    assert Runner(suite).run_all() == []
    run = suite.runs[0]
    record = json.loads(run.metrics_path.read_text())
    assert record["protocol"][DEGENERATE] == "NCE (exactly 0 at every step)"
    report = write_report(suite).read_text()
    assert ("trained nothing: watched_loss seed 0: NCE (exactly 0 at every step).**" in report
            and report.index("**Warning: logged training values") < report.index("| watched_loss |"))


def test_a_nan_loss_stops_the_run_before_any_number_is_written(tmp_path, plugin):
    suite = _suite(tmp_path, plugin, "nan")
    failures = Runner(suite).run_all()
    assert len(failures) == 1 and "training diverged at step 3: NCE = nan" in failures[0][1]
    run = suite.runs[0]
    assert not run.metrics_path.exists()
    assert "TrainingDiverged" in (run.directory / "error.log").read_text()
