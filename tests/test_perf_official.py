"""``perf --official``: the checkout is checked, the official model gets the compared settings, the
timed steps of the two sides alternate (order flipped every round), and the ratio is ours / official
of the medians. The "official checkout" here is a stand-in written to tmp_path that records what the
harness does with it (no timing is asserted)."""
import argparse
import json
import sys
import textwrap
import time

import pytest

from benchmark.core.errors import ConfigError
from benchmark.perf_official import OFFICIAL_FILES, OFFICIAL_PACKAGES, check_official_checkout, run_official_comparison

EVENTS = []
"""What both sides did, in order (the stand-in official model appends to it too)."""

FAKE_MODELS = '''
import time
import tests_perf_events
class Model:
    def __init__(self, opt):
        self.opt = opt
        tests_perf_events.EVENTS.append(("official_options", opt))
    def data_dependent_initialize(self, data):
        tests_perf_events.EVENTS.append(("official_init", tuple(data["A"].shape)))
    def setup(self, opt):
        pass
    def parallelize(self):
        pass
    def set_input(self, data):
        self.data = data
    def optimize_parameters(self):
        time.sleep(0.004)
        tests_perf_events.EVENTS.append("official")
def create_model(opt):
    return Model(opt)
'''

FAKE_OPTIONS = '''
import argparse
class TrainOptions:
    def __init__(self, cmd_line=None):
        self.cmd_line = cmd_line.split()
    def gather_options(self):
        parser = argparse.ArgumentParser()
        for flag in ("dataroot", "name", "model", "CUT_mode", "gpu_ids", "netG", "netD", "normG", "normD",
                     "init_type"):
            parser.add_argument("--" + flag)
        for flag in ("ngf", "n_layers_D", "ndf", "batch_size", "load_size", "crop_size", "num_threads"):
            parser.add_argument("--" + flag, type=int)
        parser.add_argument("--init_gain", type=float)
        parser.add_argument("--no_antialias", action="store_true")
        parser.add_argument("--no_antialias_up", action="store_true")
        return parser.parse_args(self.cmd_line)
'''


class FakeTask:
    def train_step(self):
        time.sleep(0.002)
        EVENTS.append("ours")


@pytest.fixture
def fake_checkout(tmp_path, monkeypatch):
    root = tmp_path / "official"
    for name in OFFICIAL_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    for package in OFFICIAL_PACKAGES:
        (root / package / "__init__.py").write_text("")
    (root / "models" / "__init__.py").write_text(textwrap.dedent(FAKE_MODELS))
    (root / "options" / "train_options.py").write_text(textwrap.dedent(FAKE_OPTIONS))
    events = type(sys)("tests_perf_events")
    events.EVENTS = EVENTS
    monkeypatch.setitem(sys.modules, "tests_perf_events", events)
    for name in list(sys.modules):  # the stand-in's packages are forgotten again after the test
        if name.split(".")[0] in OFFICIAL_PACKAGES:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield root
    for name in list(sys.modules):
        if name.split(".")[0] in OFFICIAL_PACKAGES:
            del sys.modules[name]


def _args(root, tmp_path, **kwargs):
    values = dict(official=str(root), methods=None, official_sizes=[16], steps=3, ngf=4, ndf=4,
                  device="cpu", threads=0, out=str(tmp_path / "out"), batch_size=1, task_option=[], warmup=2)
    values.update(kwargs)
    return argparse.Namespace(**values)


def test_a_missing_or_wrong_checkout_is_named_with_what_was_expected(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder.*taesungp/contrastive-unpaired-translation"):
        check_official_checkout(tmp_path / "nowhere")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "cut_model.py").write_text("")
    with pytest.raises(ConfigError, match=r"lacks models/networks\.py.*repository root"):
        check_official_checkout(tmp_path)


def test_only_cut_and_fastcut_and_sensible_sizes_are_compared(fake_checkout, tmp_path):
    with pytest.raises(ConfigError, match=r"\['cut', 'fastcut'\] only.*\['negcut'\]"):
        run_official_comparison(_args(fake_checkout, tmp_path, methods=["negcut"]))
    with pytest.raises(ConfigError, match="multiples of 8"):
        run_official_comparison(_args(fake_checkout, tmp_path, official_sizes=[60]))


def test_a_module_that_would_shadow_the_checkouts_is_refused(fake_checkout, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "util", type(sys)("util"))
    with pytest.raises(ConfigError, match="'util' is already imported"):
        run_official_comparison(_args(fake_checkout, tmp_path))


def test_both_sides_run_interleaved_at_the_same_settings_and_the_ratio_is_of_the_medians(
        fake_checkout, tmp_path, monkeypatch):
    import benchmark.perf

    built = []
    monkeypatch.setattr(benchmark.perf, "build_perf_task",
                        lambda *a, **k: built.append((a, k)) or (FakeTask(), __import__("torch").device("cpu")))
    EVENTS.clear()
    results = run_official_comparison(_args(fake_checkout, tmp_path, methods=["fastcut"], official_sizes=[16, 24]))
    options = [e[1] for e in EVENTS if isinstance(e, tuple) and e[0] == "official_options"]
    assert [(o.CUT_mode, o.crop_size, o.load_size) for o in options] == [("FastCUT", 16, 16), ("FastCUT", 24, 24)]
    o = options[0]
    assert (o.model, o.netG, o.netD, o.n_layers_D, o.ngf, o.ndf, o.batch_size, o.normG, o.gpu_ids) == \
        ("cut", "resnet_9blocks", "basic", 3, 4, 4, 1, "instance", [])  # CPU, as parse() turns "-1"
    assert not o.no_antialias and not o.no_antialias_up
    assert [(a[0], a[1], a[2], a[4], a[5], a[6]) for a, _ in built] == [("fastcut", 16, 1, 4, 4, 9),
                                                                          ("fastcut", 24, 1, 4, 4, 9)]
    steps = [e for e in EVENTS if e in ("ours", "official")]
    warm_up, timed = ["ours", "official"] * 2, ["ours", "official", "official", "ours", "ours", "official"]
    assert steps == (warm_up + timed) * 2
    for r in results:
        assert r["ratio"] == pytest.approx(r["ours_s"] / r["official_s"], rel=0.1)
        assert r["ours_min_max"][0] <= r["ours_s"] <= r["ours_min_max"][1]
    saved = json.loads((tmp_path / "out" / "perf_official_cpu_b1.json").read_text())
    assert [r["size"] for r in saved["results"]] == [16, 24]
    assert "ours / official" in (tmp_path / "out" / "perf_official_cpu_b1.md").read_text()


def test_batch_size_and_our_options_reach_both_sides(fake_checkout, tmp_path, monkeypatch):
    """``--batch-size 2 --task-option channels_last=true``: the official run gets --batch_size 2 and
    a batch of two images; ours gets batch 2 and the option; the files are named after both."""
    import benchmark.perf

    built = []
    monkeypatch.setattr(benchmark.perf, "build_perf_task",
                        lambda *a, **k: built.append((a, k)) or (FakeTask(), __import__("torch").device("cpu")))
    EVENTS.clear()
    run_official_comparison(_args(fake_checkout, tmp_path, methods=["cut"], batch_size=2,
                                  task_option=["channels_last=true"], warmup=3))
    o = next(e[1] for e in EVENTS if isinstance(e, tuple) and e[0] == "official_options")
    assert o.batch_size == 2
    assert next(e[1] for e in EVENTS if isinstance(e, tuple) and e[0] == "official_init")[0] == 2
    assert [a[2] for a, _ in built] == [2] and built[0][0][10] == {"channels_last": True}
    steps = [e for e in EVENTS if e in ("ours", "official")]
    assert steps[:6] == ["ours", "official"] * 3  # three warm-up steps each
    stem = "perf_official_cpu_b2_channelslast-True"
    saved = json.loads((tmp_path / "out" / f"{stem}.json").read_text())
    assert saved["meta"]["batch_size"] == 2 and saved["results"][0]["ours_options"] == {"channels_last": True}
    assert "with channels_last=True" in (tmp_path / "out" / f"{stem}.md").read_text()
