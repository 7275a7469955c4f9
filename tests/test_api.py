"""The Python API (benchmark/api.py): load from a file or a dict, run, report, results long and wide."""
import os

import pandas as pd
import pytest
import yaml

from benchmark import api
from conftest import tiny_suite_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def test_load_run_report_and_read_results(tmp_path, monkeypatch):
    data = tiny_suite_dict(tmp_path, steps=2)
    data["output_dir"] = "results"  # relative: resolved against base_dir, as `run` against its working dir
    data["evaluation"].update(bootstrap_resamples=0)
    suite = api.load(data, base_dir=tmp_path)
    assert suite.output_dir == tmp_path / "results"

    outcome = api.run(suite)
    assert outcome.failures == [] and outcome.report == tmp_path / "results" / "reports" / "tiny.md"
    assert outcome.report.is_file()

    long = api.results(suite)
    assert list(long.columns) == ["task", "dataset", "method", "seed", "metric", "value", "status"]
    assert set(long["method"]) == {"identity", "cut"} and set(long["status"]) == {"finished"}
    wide = api.results(suite, wide=True)
    assert wide.index.names == ["task", "dataset", "method", "seed"]
    cut_fid = long[(long["method"] == "cut") & (long["metric"] == "FID")]["value"].item()
    assert wide.loc[("single_modal", "synthetic_objects", "cut", 0), "FID"] == cut_fid
    assert list(wide.index.get_level_values("method")) == ["cut", "identity"]
    assert wide.loc[("single_modal", "synthetic_objects", "identity", 0), "FID"] == \
        long[(long["method"] == "identity") & (long["metric"] == "FID")]["value"].item()

    # the same suite from a YAML file, loaded from another working directory, finds the same results
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(data))
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from_file = api.load(os.path.relpath(config, elsewhere))  # a file's paths: against its folder
    assert from_file.output_dir == tmp_path / "results"
    pd.testing.assert_frame_equal(api.results(from_file, wide=True), wide)
    assert api.report(from_file) == outcome.report
    # a dict's paths and the overrides' against base_dir (default: the working directory)
    assert api.load(data).output_dir == elsewhere / "results"
    assert api.load(config, overrides=["output_dir=out"], base_dir=tmp_path).output_dir == tmp_path / "out"
