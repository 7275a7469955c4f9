"""Runner: determinism, skipping finished runs, crash isolation, external plugins, every built-in preset
training every parameter it optimises (bit-exact resume: test_resume.py)."""
import math

import pytest
import torch

from benchmark.config import suite_from_dict
from benchmark.core.errors import ConfigError
from benchmark.runner import Runner, expand

from conftest import flatten_state, stand_in_plugin, tiny_suite_dict


def _weights(task):
    state = {f"G.{k}": v.clone() for k, v in task.netG.state_dict().items()}
    state.update({f"D.{k}": v.clone() for k, v in task.netD.state_dict().items()})
    state.update({f"M.{k}": v.clone() for k, v in task.method.state_dict().items()})
    return state


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train(tmp_path, name, stop_at=None, **kwargs):
    suite = suite_from_dict(tiny_suite_dict(tmp_path / name, **kwargs), base_dir=tmp_path)
    run = expand(suite)[0]
    return Runner(suite).train(run, stop_at=stop_at), run, suite


def test_same_seed_same_weights_different_seed_different(tmp_path):
    a, _, _ = _train(tmp_path, "a")
    b, _, _ = _train(tmp_path, "b")
    c, _, _ = _train(tmp_path, "c", seeds=(1,))
    assert _equal(_weights(a), _weights(b))
    assert not _equal(_weights(a), _weights(c))


def test_changed_config_does_not_overwrite_a_run(tmp_path):
    _train(tmp_path, "x", stop_at=2)
    with pytest.raises(ConfigError, match="different config"):
        _train(tmp_path, "x", lr=1e-3)


def test_a_setting_added_later_is_the_same_config_only_at_its_default(tmp_path):
    """A run directory written before a setting existed ran with that setting's default."""
    from benchmark.runner import check_config
    from benchmark.core.yaml_io import load_yaml
    import yaml

    _train(tmp_path, "x", stop_at=2)
    suite = suite_from_dict(tiny_suite_dict(tmp_path / "x"), base_dir=tmp_path)
    run = expand(suite)[0]
    path = run.directory / "config.yaml"
    stored = load_yaml(path.read_text())
    del stored["evaluation"]["kid_seed"], stored["task"]["options"]["lr"]  # "older version"
    path.write_text(yaml.safe_dump(stored))
    check_config(run)  # both at their defaults: the same config
    changed = suite_from_dict(tiny_suite_dict(tmp_path / "x"), base_dir=tmp_path,
                              overrides=["evaluation.kid_seed=3"])
    with pytest.raises(ConfigError, match=r"changed: evaluation\.kid_seed"):
        check_config(expand(changed)[0])


PLUGIN = '''
from dataclasses import dataclass
import torch
from benchmark.core.registry import register_method
from methods.base import Method


@dataclass
class Params:
    weight: float = 1.0
    explode: bool = False


@register_method("{name}")
class PixelL1(Method):
    """Toy external plugin: L1 between the source and the output."""
    Params = Params

    def generator_losses(self, pair, computed=None):
        if self.params.explode:
            raise RuntimeError("boom")
        return {{"L1": self.params.weight * (pair.output - pair.source).abs().mean()}}
'''


def test_external_plugin_file_runs_in_single_modal_task(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(PLUGIN.format(name="pixel_l1_test"))
    raw = tiny_suite_dict(tmp_path, methods=["pixel_l1_test"], steps=2)
    raw["plugins"] = [str(plugin)]
    suite = suite_from_dict(raw, base_dir=tmp_path)
    assert suite.methods[0].cls.__name__ == "PixelL1"
    failures = Runner(suite).run_all()
    assert failures == []
    run = expand(suite)[0]
    record = __import__("json").loads(run.metrics_path.read_text())
    assert record["method"] == "pixel_l1_test" and record["metrics"]["FID"] > 0


def test_crash_keeps_finished_runs_and_rerun_continues(tmp_path):
    marker = tmp_path / "explode"
    marker.write_text("")
    plugin = tmp_path / "crashy.py"
    plugin.write_text(PLUGIN.format(name="crashy_test").replace(
        "if self.params.explode:",
        f"if self.params.explode and pair.step >= 2 and __import__('os').path.exists({str(marker)!r}):"))
    raw = tiny_suite_dict(tmp_path, steps=4, methods=[
        "none", {"name": "crashy_test", "label": "crashy", "params": {"explode": True}}])
    raw["plugins"] = [str(plugin)]
    suite = suite_from_dict(raw, base_dir=tmp_path)
    failures = Runner(suite).run_all()
    assert [f[0] for f in failures] == ["single_modal/synthetic_objects/crashy/seed0"]
    good, bad = expand(suite)
    assert good.metrics_path.exists() and not bad.metrics_path.exists()
    assert "boom" in (bad.directory / "error.log").read_text()
    assert bad.checkpoint_path.exists()  # saved at step 2, before the crash
    stamp = good.metrics_path.stat().st_mtime_ns
    # The transient fault goes away: the rerun skips the finished run and resumes the broken one.
    marker.unlink()
    messages = []
    runner = Runner(suite_from_dict(raw, base_dir=tmp_path))
    runner._log = messages.append
    assert runner.run_all() == []
    assert good.metrics_path.stat().st_mtime_ns == stamp
    assert bad.metrics_path.exists()
    assert any("finished earlier, skipped" in m for m in messages)
    assert any("resumed" in m and "step 2" in m for m in messages)


def test_parallel_workers_match_sequential_and_isolate_a_crash(tmp_path):
    """workers=2: each run (an external plugin included) trains in a spawned process that rebuilds
    the suite; the weights equal a sequential run's and a crashing run fails alone."""
    plugin = tmp_path / "crashy_par.py"
    plugin.write_text(PLUGIN.format(name="crashy_parallel_test"))
    methods = ["none", "pixel_l1_par", {"name": "crashy_parallel_test", "label": "crashy",
                                        "params": {"explode": True}}]
    plugin.write_text(PLUGIN.format(name="crashy_parallel_test") + PLUGIN.format(name="pixel_l1_par")
                      .replace("class PixelL1", "class PixelL1Par"))
    suites = {}
    for workers in (1, 2):
        raw = tiny_suite_dict(tmp_path / f"w{workers}", steps=4, methods=methods)
        raw.update(plugins=[stand_in_plugin(tmp_path), str(plugin)], workers=workers, cpu_threads=1)
        suites[workers] = suite_from_dict(raw, base_dir=tmp_path)
        failures = Runner(suites[workers]).run_all()
        assert [f[0] for f in failures] == ["single_modal/synthetic_objects/crashy/seed0"]
        assert "boom" in failures[0][1]
    for seq, par in zip(expand(suites[1]), expand(suites[2])):
        if seq.method.label == "crashy":
            assert not par.metrics_path.exists() and "boom" in (par.directory / "error.log").read_text()
            continue
        a = torch.load(seq.checkpoint_path, weights_only=False)["task"]
        b = torch.load(par.checkpoint_path, weights_only=False)["task"]
        flat_a, flat_b = _flatten(a), _flatten(b)
        assert flat_a.keys() == flat_b.keys() and len(flat_a) > 10
        assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a)
        assert __import__("json").loads(par.metrics_path.read_text())["metrics"] == \
            __import__("json").loads(seq.metrics_path.read_text())["metrics"]


def _flatten(state):
    return flatten_state(state)


def test_cli_run_trains_reports_and_prints_the_report_path(tmp_path, capsys):
    """`python -m benchmark run CONFIG key=value` end to end, as README's first command does."""
    import yaml
    from benchmark.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_suite_dict(tmp_path, methods=["none"], steps=2)))
    assert main(["run", str(config), "suite=tiny_cli"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("report: ") and last.endswith("tiny_cli.md")
    report = (tmp_path / "results" / "reports" / "tiny_cli.md").read_text()
    assert "| identity |" in report and "| none |" in report


def test_a_failed_identity_row_leaves_its_error_for_the_report(tmp_path, monkeypatch):
    from benchmark.core.errors import BenchmarkError
    from benchmark.report import write_report
    from tasks.single_modal.task import SingleModalTask

    def broken(cls, options, dataset, ctx):
        raise BenchmarkError("test images unreadable")

    monkeypatch.setattr(SingleModalTask, "evaluate_identity", classmethod(broken))
    suite = suite_from_dict(tiny_suite_dict(tmp_path, methods=("none",), steps=2), base_dir=tmp_path)
    runner = Runner(suite)
    failed = runner.score_identity(suite.tasks[0], suite.datasets[0])
    assert failed == ("single_modal/synthetic_objects/identity", "test images unreadable")
    log = suite.identity_dir(suite.tasks[0], suite.datasets[0]) / "error.log"
    assert "BenchmarkError: test images unreadable" in log.read_text()
    report = write_report(suite).read_text()
    assert "missing: failed: benchmark.core.errors.BenchmarkError: test images unreadable" in report


def test_jobs_alternate_datasets_so_parallel_workers_start_on_different_ones(tmp_path):
    raw = tiny_suite_dict(tmp_path, methods=("none", "cut"))
    raw["datasets"]["scenes"] = {"type": "synthetic_scenes", "size": 32, "n_train": 8, "n_test": 4}
    runner = Runner(suite_from_dict(raw, base_dir=tmp_path))
    order = [runner.job_name(job) for job in runner.jobs() if job.kind == "run"]
    assert [name.split("/")[1:3] for name in order] == [
        ["synthetic_objects", "none"], ["scenes", "none"], ["synthetic_objects", "cut"], ["scenes", "cut"]]


def _built_in_methods() -> list[str]:
    """Every built-in method at its defaults (plugins registered by tests left out), and LSeSim:
    F/LSeSim's learned heads are trained modules its default (FSeSim) lacks."""
    from benchmark.core.registry import METHODS
    return sorted(name for name, cls in METHODS.entries.items() if cls.__module__.startswith("methods.")) + ["lsesim"]


@pytest.mark.parametrize("preset", _built_in_methods())
def test_every_built_in_method_trains_every_parameter_it_optimises(tmp_path, preset):
    """Two single-modal steps of each method: every loss it logs is finite; every parameter of every
    optimiser (the task's and the method's) gets a finite gradient before each of its steps, and some
    gradient is non-zero; every trainable parameter of the method is in one of its optimisers."""
    from benchmark.config import find_method

    cls, _ = find_method(preset)
    params = {k: v for k, v in (("vgg_weights", "untrained"), ("num_patches", 16)) if hasattr(cls.Params(), k)}
    suite = suite_from_dict(tiny_suite_dict(tmp_path, methods=({"name": preset, "params": params},), steps=2),
                            base_dir=tmp_path)
    task = Runner(suite).build_task(expand(suite)[0])
    seen = []

    def record(opt, args, kwargs):
        grads = [p.grad for group in opt.param_groups for p in group["params"]]
        seen.append((id(opt), [g is not None and bool(torch.isfinite(g).all()) for g in grads],
                     any(g is not None and bool(g.abs().max() > 0) for g in grads)))
    optimizers = task._optimizers()
    for opt in optimizers:
        opt.register_step_pre_hook(record)
    for _ in range(2):
        logs = task.train_step()
        assert logs and all(math.isfinite(v) for v in logs.values()), logs
    assert {opt_id for opt_id, _, _ in seen} == {id(opt) for opt in optimizers}  # each stepped
    assert all(all(finite) and nonzero for _, finite, nonzero in seen)
    optimised = {id(p) for opt in optimizers for group in opt.param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in task.method.parameters() if p.requires_grad)


def test_each_step_trains_at_cuts_linear_learning_rate(tmp_path):
    """CUT's 'linear' policy (models/networks.py get_scheduler, epoch_count 1, stepped after each
    epoch, here each step): 0-based step s trains at lr (1 - max(0, s + 1 - n_steps) / (n_steps_decay + 1)),
    so 2 + 2 steps at 1, 1, 2/3, 1/3 of lr, every optimiser (the method's heads too)."""
    suite = suite_from_dict(tiny_suite_dict(tmp_path, methods=("cut",), steps=4, lr=3e-4), base_dir=tmp_path)
    task = Runner(suite).build_task(expand(suite)[0])
    rates: dict[int, list[float]] = {}
    for i, opt in enumerate(task._optimizers()):
        opt.register_step_pre_hook(lambda o, args, kwargs, i=i: rates.setdefault(i, []).append(o.param_groups[0]["lr"]))
    for _ in range(4):
        task.train_step()
    assert len(rates) == 3  # G, D, the heads
    for got in rates.values():
        assert got == pytest.approx([3e-4, 3e-4, 2e-4, 1e-4], rel=1e-12)
