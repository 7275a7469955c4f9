"""`describe` for every registered name, the generated configuration reference, the plugin hook
check of `plan`, and the warnings for meaningless settings."""
import json
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.config import suite_from_dict
from benchmark.core import registry
from benchmark.core.errors import ConfigError
from benchmark.describe import METRICS, configuration_reference, describe, known_names, method_refusal
from benchmark.hooks import hook_problems
from benchmark.options_doc import options_of
from benchmark.plan import plan_suite
from benchmark.report import write_report
from benchmark.runner import Runner
from benchmark.sanity import SETTINGS_WARNINGS, meaningless_settings
from conftest import tiny_suite_dict

REPO = Path(__file__).resolve().parents[1]


def test_describe_works_for_every_registered_name():
    names = known_names()
    assert {"cut", "fastcut", "single_modal", "unaligned_folder", "FID"} <= set(names)
    for name in names:
        text = describe(name)
        assert f"`{name}`" in text, name


def test_a_preset_shows_its_values_over_the_defaults_and_every_option_of_the_method():
    text = describe("fastcut")
    assert "| `lambda_NCE` | float | 10.0 (default 1.0) |" in text
    assert "| `nce_T` | float | 0.07 | Temperature tau of the contrastive loss. |" in text
    for option in options_of(registry.METHODS.get("cut").Params):
        assert f"| `{option.name}` |" in text


def test_task_acceptance_follows_the_config_loader():
    """describe says 'refuses' exactly where loading a suite with that pairing raises."""
    text = describe("cyclegan")
    assert "- `single_modal`: accepts" in text
    assert "- `compression`: refuses: the method needs cycle_consistency" in text
    builtin = {"methods", "tasks"}
    for task in [n for n in registry.TASKS.names() if registry.TASKS.get(n).__module__.split(".")[0] in builtin]:
        task_cls = registry.TASKS.get(task)
        for method in [n for n in registry.METHODS.names()
                       if registry.METHODS.get(n).__module__.split(".")[0] in builtin]:
            refused = method_refusal(registry.METHODS.get(method), "", task_cls) is not None
            data = {"suite": "t", "tasks": {task: {}}, "methods": [method],
                    "datasets": {"d": {"type": next(d for d in registry.DATASETS.names() if d.startswith("synthetic")
                                                    and task_cls.accepts(registry.DATASETS.get(d)))}}}
            try:
                suite_from_dict(data)
                loaded = True
            except ConfigError:
                loaded = False
            assert loaded != refused, (task, method)


def test_list_with_a_name_describes_it_and_an_unknown_name_suggests(capsys):
    assert main(["list", "cut"]) == 0
    assert "### method `cut`" in capsys.readouterr().out
    assert main(["describe", "fastcutt"]) == 2
    assert "did you mean 'fastcut'" in capsys.readouterr().err


def test_the_configuration_reference_is_current():
    """docs/configuration.md is what `describe --reference` prints now: regenerate it with
    `python -m benchmark describe --reference > docs/configuration.md`."""
    assert (REPO / "docs" / "configuration.md").read_text() == configuration_reference()
    assert all(f"`{m}`" in configuration_reference() for m in METRICS)


def test_builtin_plugins_have_no_hook_problem():
    for reg in (registry.METHODS, registry.TASKS):
        for name in reg.names():
            assert hook_problems(reg.get(name)) == [], name


@pytest.fixture
def restore_registry():
    """The test plugins' methods leave the registry afterwards (other tests iterate over it)."""
    before = dict(registry.METHODS.entries)
    yield
    registry.METHODS.entries.clear()
    registry.METHODS.entries.update(before)


def _plugin(tmp_path, body: str) -> Path:
    path = tmp_path / "my_method.py"
    path.write_text(
        "from dataclasses import dataclass\n"
        "from benchmark.core.registry import register_method\n"
        "from methods.base import Method\n"
        "@dataclass\nclass P:\n    w: float = 1.0\n"
        f"@register_method('{tmp_path.name[-20:].lower().replace('-', '_')}')\n"
        "class Mine(Method):\n    Params = P\n" + body)
    return path


@pytest.mark.parametrize("body, words", [
    ("    def generator_loss(self, pair, computed=None):\n        return {}\n",
     ["does not define 'generator_losses'", "defines 'generator_loss'", "did you mean 'generator_losses'"]),
    ("    def generator_losses(self, pair, computed=None):\n        return {}\n"
     "    def after_generator_steps(self):\n        pass\n",
     ["defines 'after_generator_steps'", "did you mean 'after_generator_step'"]),
])
def test_plan_refuses_a_misspelt_hook_before_training(tmp_path, body, words, restore_registry):
    plugin = _plugin(tmp_path, body)
    data = tiny_suite_dict(tmp_path, methods=[tmp_path.name[-20:].lower().replace("-", "_")])
    data["plugins"] = [str(plugin)]
    suite = suite_from_dict(data, base_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        plan_suite(suite, check_data=False, check_weight_files=False)
    for w in words:
        assert w in str(err.value)


def test_a_correct_plugin_with_helpers_passes(tmp_path, restore_registry):
    plugin = _plugin(tmp_path, "    def generator_losses(self, pair, computed=None):\n        return {}\n"
                               "    def contrastive_term(self):\n        return 0\n")
    data = tiny_suite_dict(tmp_path, methods=[tmp_path.name[-20:].lower().replace("-", "_")])
    data["plugins"] = [str(plugin)]
    plan = plan_suite(suite_from_dict(data, base_dir=tmp_path), check_data=False, check_weight_files=False)
    assert len(plan.runs) == 1


def _multi_modal(tmp_path, **task):
    return suite_from_dict({"suite": "mm", "tasks": {"multi_modal": task}, "methods": ["none"],
                            "datasets": {"synthetic_seasons": {"size": 32}}, "log_every": 1}, base_dir=tmp_path)


def test_warns_when_the_ema_horizon_is_longer_than_the_run(tmp_path):
    (warning,) = meaningless_settings(_multi_modal(tmp_path, n_steps=20, ema_beta=0.999))
    assert "ema_beta 0.999" in warning and "only 2% of the way" in warning and "20 steps" in warning
    assert meaningless_settings(_multi_modal(tmp_path, n_steps=2000, ema_beta=0.999)) == []
    assert meaningless_settings(_multi_modal(tmp_path, n_steps=20, ema_beta=0.999, eval_nets="raw")) == []
    plan = plan_suite(_multi_modal(tmp_path, n_steps=20), check_data=False, check_weight_files=False)
    assert plan.warnings and not plan.problems


def test_a_runs_settings_warnings_are_kept_in_its_record_and_printed_above_the_reports_table(tmp_path):
    data = tiny_suite_dict(tmp_path, methods=["none"], steps=2)
    data["log_every"] = 5
    suite = suite_from_dict(data, base_dir=tmp_path)
    (warning,) = meaningless_settings(suite)
    assert Runner(suite).run_all() == []
    (run,) = suite.runs
    assert warning == f"{run.run_id}: log_every (5) is longer than the run (2 steps): no loss is logged and " \
        "the report has no loss curve for it"
    record = json.loads(run.metrics_path.read_text())
    assert record["protocol"][SETTINGS_WARNINGS] == warning.split(": ", 1)[1]
    report = write_report(suite).read_text()
    line = f"**Warning: these runs used settings that `plan` warns about: {warning.split(': ', 1)[1]} (none seed 0).**"
    assert line in report and report.index(line) < report.index("| none |")


def test_warns_when_validation_or_logging_cannot_happen_within_the_run(tmp_path):
    data = tiny_suite_dict(tmp_path, steps=6)
    data["validation"] = {"eval_every": 6}
    data["log_every"] = 7
    warnings = meaningless_settings(suite_from_dict(data, base_dir=tmp_path))
    assert len(warnings) == 2
    assert "eval_every (6) is not below the run's 6 steps" in warnings[0]
    assert "log_every (7) is longer than the run (6 steps)" in warnings[1]
    data["validation"], data["log_every"] = {"eval_every": 3}, 6
    assert meaningless_settings(suite_from_dict(data, base_dir=tmp_path)) == []


def test_run_prints_the_warnings_and_checks_the_hooks_before_training(tmp_path, monkeypatch, capsys):
    import yaml

    from benchmark import cli
    from benchmark.core import weights
    from benchmark.runner import Runner

    trained = []
    monkeypatch.setattr(weights, "check_suite", lambda suite: [])
    monkeypatch.setattr(Runner, "run_all", lambda self: trained.append(self) or [])
    monkeypatch.setattr("benchmark.report.write_report", lambda suite: tmp_path / "report.md")
    config = tmp_path / "mm.yaml"
    config.write_text(yaml.safe_dump({"suite": "mm", "tasks": {"multi_modal": {"n_steps": 20}}, "methods": ["none"],
                                      "datasets": {"synthetic_seasons": {"size": 32}}, "log_every": 1,
                                      "output_dir": str(tmp_path / "out")}))
    assert cli.main(["run", str(config)]) == 0
    assert "warning: multi_modal/synthetic_seasons/none/seed0: the evaluated EMA networks" in capsys.readouterr().err
    assert len(trained) == 1
