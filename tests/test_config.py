"""Config validation: errors name the key, the file and what was expected."""
import pytest

from benchmark.config import load_suite, suite_from_dict
from benchmark.core.errors import ConfigError

GOOD = """
suite: demo
tasks:
  single_modal: {n_steps: 2, n_steps_decay: 2}
datasets:
  synthetic_objects: {size: 32}
methods: [cut, fastcut, {name: cut, label: cut-lambda2, params: {lambda_NCE: 2.0}}]
"""


def write(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_good_config_resolves_presets_and_params(tmp_path):
    suite = load_suite(write(tmp_path, GOOD))
    labels = [m.label for m in suite.methods]
    assert labels == ["cut", "fastcut", "cut-lambda2"]
    fast = suite.methods[1]
    assert fast.preset == "fastcut" and fast.options.lambda_NCE == 10.0 and not fast.options.nce_idt
    assert suite.methods[2].options.lambda_NCE == 2.0
    assert suite.tasks[0].options.n_steps == 2


def test_unknown_key_names_key_file_and_nearest(tmp_path):
    path = write(tmp_path, GOOD.replace("n_steps: 2,", "n_step: 2,"))
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    message = str(err.value)
    assert "n_step" in message and str(path) in message and "n_steps" in message


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, GOOD + "seed: [1]\n")
    with pytest.raises(ConfigError, match=r"unknown key 'seed'.*seeds"):
        load_suite(path)


def test_wrong_type_names_key_value_and_expected_type(tmp_path):
    path = write(tmp_path, GOOD.replace("n_steps: 2,", "n_steps: many,"))
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    message = str(err.value)
    assert "n_steps" in message and "'many'" in message and "int" in message


def test_wrong_method_param_type(tmp_path):
    path = write(tmp_path, GOOD.replace("lambda_NCE: 2.0", "lambda_NCE: [2]"))
    with pytest.raises(ConfigError, match=r"lambda_NCE.*\[2\].*float"):
        load_suite(path)


def test_unknown_method_suggests_nearest(tmp_path):
    path = write(tmp_path, GOOD.replace("[cut, fastcut,", "[cut, fastcutt,"))
    with pytest.raises(ConfigError, match=r"fastcutt.*fastcut"):
        load_suite(path)


def test_overrides_apply_and_validate(tmp_path):
    path = write(tmp_path, GOOD)
    suite = load_suite(path, ["seeds=[3,4]", "tasks.single_modal.n_blocks=1"])
    assert suite.settings.seeds == [3, 4] and suite.tasks[0].options.n_blocks == 1
    with pytest.raises(ConfigError, match="n_blocks"):
        load_suite(path, ["tasks.single_modal.n_blocks=0"])


def test_a_repeated_seed_is_refused(tmp_path):
    """The same seed twice is one run: the report would average it in twice and count two seeds."""
    with pytest.raises(ConfigError, match=r"seeds must differ from each other, got \[0, 0, 1\] \(repeated: \[0\]\)"):
        load_suite(write(tmp_path, GOOD), ["seeds=[0,0,1]"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(tmp_path / "nope.yaml")


def test_dataset_options_validated(tmp_path):
    path = write(tmp_path, GOOD.replace("size: 32", "size: 1000"))
    with pytest.raises(ConfigError, match="size"):
        load_suite(path)


def test_exponent_floats_without_a_dot_are_floats_in_files_and_overrides(tmp_path):
    # YAML 1.1 (PyYAML's default) reads 2e-4 as the string '2e-4'; configs are read as YAML 1.2.
    path = write(tmp_path, GOOD.replace("n_steps: 2,", "n_steps: 2, lr: 1e-4,"))
    assert load_suite(path).tasks[0].options.lr == pytest.approx(1e-4)
    suite = load_suite(path, ["tasks.single_modal.lr=2e-4", "methods.2.params.lambda_NCE=5E0"])
    assert suite.tasks[0].options.lr == pytest.approx(2e-4)
    assert suite.methods[2].options.lambda_NCE == pytest.approx(5.0)
    with pytest.raises(ConfigError, match=r"n_blocks.*'2e-4'.*int|n_blocks.*0\.0002.*int"):
        load_suite(path, ["tasks.single_modal.n_blocks=2e-4"])


def test_a_method_entry_sets_task_options_for_its_own_runs(tmp_path):
    from benchmark.runner import expand

    text = GOOD.replace("[cut, fastcut,", "[cut, {name: fastcut, task: {n_steps: 5, lr: 1e-3}},")
    suite = load_suite(write(tmp_path, text))
    runs = {run.method.label: run for run in expand(suite)}
    assert runs["cut"].task_options.n_steps == 2 and runs["cut"].task_options.lr == 2e-4
    fast = runs["fastcut"].task_options
    assert (fast.n_steps, fast.n_steps_decay, fast.lr) == (5, 2, 1e-3)
    assert runs["fastcut"].planned_steps() == 7 and runs["cut"].planned_steps() == 4
    assert runs["fastcut"].resolved_config()["task"]["options"]["n_steps"] == 5


def test_a_method_task_option_unknown_or_of_the_wrong_type_is_named(tmp_path):
    bad_key = GOOD.replace("[cut, fastcut,", "[cut, {name: fastcut, task: {n_step: 5}},")
    with pytest.raises(ConfigError, match=r"methods\[1\]\.task.*'n_step'.*n_steps"):
        load_suite(write(tmp_path, bad_key))
    bad_type = GOOD.replace("[cut, fastcut,", "[cut, {name: fastcut, task: {n_steps: many}},")
    with pytest.raises(ConfigError, match=r"n_steps.*'many'.*int"):
        load_suite(write(tmp_path, bad_type))


def test_a_dataset_sets_task_options_for_its_runs_before_a_method_entry(tmp_path):
    """Per-dataset settings (e.g. the compression task's per-dataset weights): datasets.<d>.task
    applies to every run on that dataset, after the suite's task section and before a method's own
    task:; nested option groups merge key by key."""
    from benchmark.config import _merged
    from benchmark.runner import expand

    text = GOOD.replace("  synthetic_objects: {size: 32}",
                        "  synthetic_objects: {size: 32}\n"
                        "  scenes: {type: synthetic_scenes, size: 32, task: {n_steps: 7, lr: 1e-3}}")
    text = text.replace("[cut, fastcut,", "[cut, {name: fastcut, task: {n_steps: 5}},")
    suite = load_suite(write(tmp_path, text))
    runs = {(run.dataset.label, run.method.label): run.task_options for run in expand(suite)}
    assert (runs["synthetic_objects", "cut"].n_steps, runs["synthetic_objects", "cut"].lr) == (2, 2e-4)
    assert (runs["scenes", "cut"].n_steps, runs["scenes", "cut"].lr) == (7, 1e-3)
    assert (runs["scenes", "fastcut"].n_steps, runs["scenes", "fastcut"].lr) == (5, 1e-3)
    assert _merged({"a": 1, "g": {"x": 1, "y": 2}}, {"g": {"y": 3}}) == {"a": 1, "g": {"x": 1, "y": 3}}
    bad = text.replace("task: {n_steps: 7, lr: 1e-3}", "task: {n_step: 7}")
    with pytest.raises(ConfigError, match=r"datasets\.scenes\.task.*'n_step'.*n_steps"):
        load_suite(write(tmp_path, bad))


def test_a_task_paired_with_a_dataset_of_another_kind_fails_at_load(tmp_path):
    from benchmark.runner import Runner

    data = {"suite": "mismatch", "tasks": {"multi_modal": {}}, "methods": ["none"],
            "datasets": {"objects": {"type": "synthetic_objects", "size": 32}}}
    with pytest.raises(ConfigError) as exc:
        suite_from_dict(data, "mismatch.yaml", tmp_path)
    message = str(exc.value)
    assert message.startswith("mismatch.yaml: task 'multi_modal' (multi_modal)")
    assert "dataset 'objects' (synthetic_objects), whose kind is 'unpaired'" in message
    assert "needs a dataset of kind 'multi_domain'" in message
    assert "synthetic_seasons" in message and "multidomain_folder" in message
    data["tasks"] = {"single_modal": {}}
    data["datasets"] = {"seasons": {"type": "synthetic_seasons", "size": 32}}
    with pytest.raises(ConfigError, match="task 'single_modal' .* whose kind is 'multi_domain'.* kind 'unpaired'"):
        suite_from_dict(data, "mismatch.yaml", tmp_path)
    data["tasks"] = {"multi_modal": {}}
    assert len(Runner(suite_from_dict(data, "ok.yaml", tmp_path)).runs) == 1  # the right kind loads


def test_task_options_are_resolved_once_at_load(tmp_path):
    """A method's task: options that are invalid with the suite's task section fail at load, and
    each run carries its resolved options (the method's paper settings applied)."""
    data = {"suite": "resolve", "tasks": {"single_modal": {"n_steps": 3}}, "methods": ["cut", "fsesim"],
            "datasets": {"synthetic_objects": {"size": 32}}}
    suite = suite_from_dict(data, "resolve.yaml", tmp_path)
    options = {run.method.label: run.task_options for run in suite.runs}
    assert options["cut"].lr == 2e-4 and options["fsesim"].lr == 1e-4 and options["fsesim"].pool_size == 50
    assert options["cut"].n_steps == options["fsesim"].n_steps == 3
    data["methods"] = [{"name": "cut", "task": {"batch_size": 0}}]
    with pytest.raises(ConfigError, match=r"tasks.single_modal \(with methods.cut.task\): batch_size must be >= 1"):
        suite_from_dict(data, "resolve.yaml", tmp_path)


@pytest.mark.parametrize("task", ["single_modal", "compression"])
def test_a_task_level_log_every_which_would_change_nothing_is_refused(tmp_path, task):
    # The suite's log_every sets the logging interval; these task options are kept only so that
    # earlier runs' configs still match, and a value a user sets there would silently do nothing.
    data = {"suite": "s", "seeds": [0], "output_dir": str(tmp_path), "tasks": {task: {"log_every": 5}},
            "datasets": {"synthetic_objects": {"size": 32}}, "methods": ["none"]}
    with pytest.raises(ConfigError, match=f"tasks.{task}: log_every here changes nothing"):
        suite_from_dict(data, base_dir=tmp_path)
    data["tasks"][task]["log_every"] = 50
    suite_from_dict(data, base_dir=tmp_path)


class _Reads:
    """Task options that remember which of them were read."""

    def __init__(self, options):
        self._options, self.names = options, set()

    def __getattr__(self, name):
        self.names.add(name)
        return getattr(self._options, name)


@pytest.mark.parametrize("task", ["single_modal", "multi_modal", "single_image", "compression"])
def test_a_tasks_identity_options_are_what_its_identity_scoring_reads(task, monkeypatch):
    """Only these options take a dataset's task: settings for the identity row: one the scoring
    reads but the list leaves out would score the row with the suite's value, one listed in excess
    would make identity rows stale for a setting that only trains."""
    import importlib
    from benchmark.core.distributed import SINGLE_PROCESS
    from benchmark.core.registry import TASKS
    from benchmark.plugins import load_builtins

    load_builtins()
    cls = TASKS.get(task)
    module = importlib.import_module(cls.__module__)
    for scorer in ("evaluate_translation", "evaluate_multimodal", "evaluate_single_image"):
        monkeypatch.setattr(module, scorer, lambda *args, **kwargs: None, raising=False)
    monkeypatch.setattr(module, "CompressionScorer", lambda *args: type("S", (), {"score_test": lambda s, f: None})(),
                        raising=False)
    options = _Reads(cls.Options())
    ctx = type("Ctx", (), {"distributed": SINGLE_PROCESS})()
    cls.evaluate_identity(options, object(), ctx)
    assert options.names == set(cls.identity_options)
