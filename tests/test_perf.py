"""The perf command: options reach the measured task, and bad options are named."""
import pytest

from benchmark.core.errors import ConfigError
from benchmark.perf import measure_one, parse_task_options


def test_task_options_are_read_as_yaml_values():
    assert parse_task_options(["n_layers_D=1", "antialias=false", "lr=0.0002"]) == \
        {"n_layers_D": 1, "antialias": False, "lr": 2e-4}


def test_a_task_option_without_a_value_is_named():
    with pytest.raises(ConfigError, match="n_layers_D"):
        parse_task_options(["n_layers_D"])


def test_measure_one_builds_the_task_with_the_given_options(tmp_path):
    result = measure_one("cut", size=16, batch_size=1, steps=1, ngf=4, ndf=4, n_blocks=1, device="cpu",
                         cache_root=str(tmp_path), threads=1,
                         task_options={"n_layers_D": 1, "antialias": False})
    assert result["task_options"] == {"n_layers_D": 1, "antialias": False}
    assert result["step_seconds"] > 0 and result["peak_host_rss_mb"] > 0


def test_step_time_is_the_median_of_the_timed_steps(tmp_path):
    r = measure_one("none", size=16, batch_size=1, steps=3, ngf=4, ndf=4, n_blocks=1, device="cpu",
                    cache_root=str(tmp_path), threads=1, task_options={"n_layers_D": 1})
    assert r["step_seconds_min"] <= r["step_seconds"] <= r["step_seconds_max"]
    assert r["step_seconds_min"] <= r["step_seconds_mean"] <= r["step_seconds_max"]


def test_an_unknown_task_option_fails_with_its_name(tmp_path):
    with pytest.raises(ConfigError, match="n_layers_d"):
        measure_one("none", size=16, batch_size=1, steps=1, ngf=4, ndf=4, n_blocks=1, device="cpu",
                    cache_root=str(tmp_path), threads=1, task_options={"n_layers_d": 1})


def test_without_feature_reuse_times_a_twin_that_encodes_the_keys_again(tmp_path):
    r = measure_one("fastcut", size=16, batch_size=1, steps=2, ngf=4, ndf=4, n_blocks=1, device="cpu",
                    cache_root=str(tmp_path), threads=1, task_options={"n_layers_D": 1},
                   without_feature_reuse=True)
    assert r["feature_reuse"]  # batch 1, no identity half: the translated batch is the encoded one
    assert r["step_seconds_without_reuse"] > 0
    # The ratio is of the unrounded medians; the seconds are rounded to 0.1 ms, a few % of a tiny step.
    assert r["reuse_ratio"] == pytest.approx(r["step_seconds"] / r["step_seconds_without_reuse"], rel=0.05)
