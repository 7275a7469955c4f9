"""The suite config: YAML -> validated dataclasses.

A suite expands to runs = tasks x datasets x methods x seeds. Tasks and datasets are mappings from a
label to options (``type:`` names the registered class when the label is not its name); methods are a
list of method or preset names, or mappings ``{name, label, params}``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from . import paths, plugins
from .core import registry
from .core.context import EvaluationConfig, ValidationConfig
from .core.errors import ConfigError
from .core.settings import build, field_defaults, path_setting, to_dict
from .core.yaml_io import load_yaml
from .run_folder import METRICS_JSON, RunFolder
from datasets.base import DATASET_KINDS


@dataclass
class LauncherSettings:
    """Where the runs of a suite train (``launcher:``). ``local``: in this process and its
    ``workers``; ``slurm``: each run (and each identity row) in its own SLURM job through submitit,
    requeued after pre-emption or timeout and resumed from its checkpoint; ``submitit_local``: the
    same jobs as processes of this machine (submitit's LocalExecutor: a test bed for ``slurm``)."""
    type: Literal["local", "submitit_local", "slurm"] = "local"
    folder: str = path_setting()
    """submitit's job files and logs ('' = <output_dir>/launcher/<suite>). Must be on a file system
    the jobs see."""
    partition: str = ""
    """SLURM partition ('' = the cluster's default)."""
    gpus_per_node: int = 1
    tasks_per_node: int = 1
    """Processes per node of each job. More than one trains each run data-parallel over them, as
    under torchrun (one process per GPU: set it to ``gpus_per_node``); the job's processes find each
    other through submitit (``TorchDistributedEnvironment``)."""
    nodes: int = 1
    """Nodes per job (slurm); with ``tasks_per_node`` the job's processes are nodes x tasks_per_node."""
    cpus_per_task: int = 4
    mem_gb: int = 0
    """Memory per job (0 = the partition's default)."""
    timeout_min: int = 1440
    """Time limit of one job; a run that needs longer is requeued at the limit and resumes."""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    slurm_additional_parameters: dict[str, Any] = field(default_factory=dict)
    """Passed to sbatch as they are, e.g. {reservation: name, exclude: node12}."""
    max_parallel: int = 0
    """Jobs running at once (slurm: the job array's parallelism); 0 = no limit."""
    max_requeues: int = 3
    """Requeues after a timeout (pre-emptions are always requeued): submitit's max_num_timeout."""
    max_resubmissions: int = 2
    """A job that ended without a result (killed, node failure) is submitted again this many
    times while the command waits; the run resumes from its last checkpoint."""
    poll_s: float = 10.0
    """Seconds between two looks at the jobs' states while the command waits."""
    job_name: str = ""
    """The jobs' name ('' = i2i-<suite>)."""

    def validate(self):
        for name in ("gpus_per_node", "max_parallel", "max_requeues", "max_resubmissions"):
            if getattr(self, name) < 0:
                return f"{name} must be >= 0, got {getattr(self, name)}"
        for name in ("tasks_per_node", "nodes"):
            if getattr(self, name) < 1:
                return f"{name} must be >= 1, got {getattr(self, name)}"
        if self.nodes > 1 and self.type != "slurm":
            return f"nodes: {self.nodes} needs type slurm (submitit_local runs on this machine: nodes 1)"
        if self.cpus_per_task < 1:
            return f"cpus_per_task must be >= 1, got {self.cpus_per_task}"
        if self.timeout_min < 1:
            return f"timeout_min must be >= 1 (minutes per job), got {self.timeout_min}"
        if self.mem_gb < 0:
            return f"mem_gb must be >= 0 (0 = the partition's default), got {self.mem_gb}"
        if self.poll_s <= 0:
            return f"poll_s must be > 0 seconds, got {self.poll_s}"
        return None


@dataclass
class SuiteSettings:
    suite: str
    tasks: dict[str, Any]
    datasets: dict[str, Any]
    methods: list[Any]
    seeds: list[int] = field(default_factory=lambda: [0])
    plugins: list[str] = field(default_factory=list)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """Evaluation during training on a held-out validation split and the checkpoint choices
    reported (off by default)."""
    device: str = "auto"
    output_dir: str = path_setting("results")
    """Where runs, caches and reports go ('results' beside the config file by default)."""
    weights_dir: str = path_setting()
    checkpoint_every: int = 100
    log_every: int = 10
    """Steps between the rows of a run's ``losses.csv`` (and its TensorBoard scalars): the values
    ``train_step`` returned at every ``log_every``-th step (not averaged over the interval). 10 keeps
    a paper run's file small (533,600 steps, six losses: about 4 MB) and its curve fine-grained."""
    tensorboard: bool = True
    """Also write the losses as TensorBoard event files in each run's folder, when the optional
    ``tensorboard`` package is installed (``pip install i2i-bench[tensorboard]``); without it, the
    CSV alone."""
    cpu_threads: int = 0
    """Torch intra-op threads on CPU (0 = torch's default). Small CPU networks often run faster on 1."""
    workers: int = 1
    """Runs trained at the same time, each in its own process (on CPU give each worker its own
    cores: workers x cpu_threads <= cores; on one GPU they share the device)."""
    launcher: LauncherSettings = field(default_factory=LauncherSettings)
    """Where the runs train: this machine (``local``, default) or a job each (``slurm``,
    ``submitit_local``); see docs/scaling.md, "Running on a cluster"."""
    description: str = ""
    paper_table: str = ""
    """The published table the report compares with (a key of ``benchmark.reference.NAMED_TABLES``,
    e.g. ``graphcl_table2`` for an ablation suite); '' = the task's own (Table 1 for single-modal)."""

    def validate(self):
        if not self.suite.replace("-", "").replace("_", "").isalnum():
            return f"suite name '{self.suite}' must be letters, digits, '-' or '_'"
        if not self.seeds:
            return "seeds must list at least one seed"
        repeated = sorted({seed for seed in self.seeds if self.seeds.count(seed) > 1})
        if repeated:  # a repeated seed is the same run: the report would count it twice
            return f"seeds must differ from each other, got {self.seeds} (repeated: {repeated})"
        if self.checkpoint_every < 1:
            return "checkpoint_every must be >= 1"
        if self.log_every < 1:
            return f"log_every must be >= 1 (steps between logged losses), got {self.log_every}"
        if self.cpu_threads < 0:
            return f"cpu_threads must be >= 0 (0 = torch's default), got {self.cpu_threads}"
        if self.workers < 1:
            return f"workers must be >= 1 (runs trained at the same time), got {self.workers}"
        processes = self.launcher.tasks_per_node * self.launcher.nodes
        if self.launcher.type != "local" and processes > 1 and self.workers > 1:
            return (f"workers: {self.workers} with a launcher job of {processes} processes: a job trains its "
                    "run data-parallel over its processes, one run at a time; set workers: 1")
        return None


@dataclass(frozen=True)
class Component:
    """A resolved task, dataset or method: its label, registered class and validated options."""
    kind: str
    label: str
    cls: type
    options: Any
    preset: str = ""
    raw: dict = field(default_factory=dict, compare=False)
    paper_dataset: str | None = None
    """Datasets only: the published dataset the report compares with (``paper_dataset:``; '' =
    none; None = not given, the report then goes by the label). Not part of the run's config."""
    task_overrides: dict = field(default_factory=dict, compare=False)
    """Methods and datasets: task options for their runs (``task:`` of a method entry or a dataset),
    applied after the suite's task options (a dataset's first, then a method's); each run's config
    holds the options it trained with."""

    def as_dict(self) -> dict:
        d = {"type": self.cls.registry_name, "options": to_dict(self.options)}
        if self.preset:
            d["preset"] = self.preset
        return d


@dataclass
class Suite:
    settings: SuiteSettings
    tasks: list[Component]
    datasets: list[Component]
    methods: list[Component]
    source: str
    base_dir: Path
    raw: dict = field(default_factory=dict, compare=False)
    """The config mapping after overrides: rebuilds the same suite in a worker process."""
    runs: list[Run] = field(default_factory=list, compare=False)
    """Every run (tasks x datasets x methods x seeds), each with its task options resolved."""

    @property
    def name(self) -> str:
        return self.settings.suite

    @property
    def output_dir(self) -> Path:
        return Path(self.settings.output_dir)  # absolute since the config was loaded (benchmark/paths.py)

    @property
    def runs_dir(self) -> Path:
        return self.output_dir / "runs" / self.name

    @property
    def cache_dir(self) -> Path:
        return self.output_dir / "cache"

    @property
    def launcher_dir(self) -> Path:
        """Where a job launcher keeps its job files and logs (``launcher.folder``)."""
        folder = self.settings.launcher.folder
        return Path(folder) if folder else self.output_dir / "launcher" / self.name

    def identity_dir(self, task: Component, dataset: Component) -> Path:
        """Folder of the ``identity`` row (the inputs scored as outputs) of a task and dataset."""
        return self.runs_dir / task.label / dataset.label / "identity"

    def identity_folder(self, task: Component, dataset: Component) -> RunFolder:
        """The identity row's folder, bound to what its scores depend on: the task (with the
        dataset's ``task:`` settings), the dataset and the evaluation settings."""
        config = {"run_id": identity_name(task, dataset),
                  "task": {"type": task.cls.registry_name, "options": to_dict(identity_task_options(task, dataset))},
                  "dataset": dataset.as_dict(), "evaluation": to_dict(self.settings.evaluation)}
        defaults = {"task": {"options": field_defaults(task.cls.Options)},
                    "dataset": {"options": field_defaults(dataset.cls.Options)},
                    "evaluation": field_defaults(type(self.settings.evaluation))}
        return RunFolder(self.identity_dir(task, dataset), config["run_id"], config, defaults)


def identity_name(task: Component, dataset: Component) -> str:
    """The name of the identity row of a task and dataset (its metrics.json's run_id)."""
    return f"{task.label}/{dataset.label}/identity"


@dataclass
class Run:
    """One run of a suite, fully resolved: its components, seed and task options (the task's
    defaults, then the method's paper settings, then the suite's task section, then the method
    entry's own ``task:``). The runner only executes runs; it resolves nothing."""
    suite: Suite
    task: Component
    dataset: Component
    method: Component
    seed: int
    task_options: Any
    method_options: Any = None
    """The method's options in this run: the method entry's, on top of the settings the task's patch
    policy imposed (``task_imposed``); None = the entry's own."""
    task_imposed: dict = field(default_factory=dict)
    """The method options the task's patch policy set (``Task.patch_policy``, as the method answered
    it), shown in the resolved config and the report's protocol line."""

    def __post_init__(self):
        if self.method_options is None:
            self.method_options = self.method.options

    @property
    def run_id(self) -> str:
        return f"{self.task.label}/{self.dataset.label}/{self.method.label}/seed{self.seed}"

    @property
    def directory(self) -> Path:
        return self.suite.runs_dir / self.task.label / self.dataset.label / self.method.label / f"seed{self.seed}"

    @property
    def folder(self) -> RunFolder:
        """The run's folder, bound to its resolved config."""
        return RunFolder(self.directory, self.run_id, self.resolved_config(), self.config_defaults())

    @property
    def checkpoint_path(self) -> Path:
        return self.directory / "checkpoints" / "latest.pt"

    @property
    def metrics_path(self) -> Path:
        return self.directory / METRICS_JSON

    def planned_steps(self) -> int:
        return self.task.cls.planned_steps(self.task_options)

    def config_defaults(self) -> dict:
        """The defaults of the settings in :meth:`resolved_config` (a run made before a setting
        existed ran with its default)."""
        return {"task": {"options": field_defaults(self.task.cls.Options)},
                "dataset": {"options": field_defaults(self.dataset.cls.Options)},
                # task_imposed restates method options compared already: a run made before it was
                # recorded differs only if those options do.
                "method": {"options": field_defaults(self.method.cls.Params), "task_imposed": dict(self.task_imposed)},
                "evaluation": field_defaults(type(self.suite.settings.evaluation)),
                "validation": field_defaults(type(self.suite.settings.validation))}

    def resolved_config(self) -> dict:
        return {
            "run_id": self.run_id,
            "seed": self.seed,
            "task": {"type": self.task.cls.registry_name, "options": to_dict(self.task_options)},
            "dataset": self.dataset.as_dict(),
            "method": {**self.method.as_dict(), "options": to_dict(self.method_options),
                       **({"task_imposed": dict(self.task_imposed)} if self.task_imposed else {})},
            "evaluation": to_dict(self.suite.settings.evaluation),
            "validation": to_dict(self.suite.settings.validation),
        }


def _resolve_options(kind: str, label: str, cls: type, raw: Any, where: str) -> Any:
    options_cls = getattr(cls, "Options", None) or getattr(cls, "Params")
    return build(options_cls, raw, where)


def find_method(name: str) -> tuple[type, str]:
    """A method or preset name -> (method class, preset name)."""
    plugins.load_builtins()
    if name in registry.METHODS.entries:
        cls = registry.METHODS.entries[name]
        return cls, (name if name in cls.presets else "")
    for cls in registry.METHODS.entries.values():
        if name in cls.presets:
            return cls, name
    candidates = list(registry.METHODS.entries)
    for cls in registry.METHODS.entries.values():
        candidates += list(cls.presets)
    raise ConfigError(f"unknown method or preset '{name}'{registry.suggest(name, sorted(set(candidates)))}")


def _resolve_methods(raw: list, where: str) -> list[Component]:
    out, labels = [], set()
    for i, entry in enumerate(raw):
        here = f"{where}[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise ConfigError(f"{here}: expected a method name or a mapping with 'name', got {entry!r}")
        unknown = set(entry) - {"name", "label", "params", "task"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"{here}: unknown key '{key}'; valid keys: name, label, params, task")
        task_overrides = entry.get("task") or {}
        if not isinstance(task_overrides, dict):
            raise ConfigError(f"{here}.task: expected a mapping of task options (e.g. "
                              f"{{n_steps: 1000}}), got {task_overrides!r}")
        if "name" not in entry:
            raise ConfigError(f"{here}: missing required key 'name' (a method or preset name)")
        cls, preset = find_method(entry["name"])
        params = dict(cls.presets.get(preset, {}))
        params.update(entry.get("params") or {})
        options = build(cls.Params, params, f"{here}.params")
        label = entry.get("label") or entry["name"]
        if label in labels:
            raise ConfigError(f"{here}: method label '{label}' is used twice; give one a 'label'")
        labels.add(label)
        out.append(Component("method", label, cls, options, preset, raw=params,
                             task_overrides=dict(task_overrides)))
    return out


def _check_task_override_keys(components: list[Component], tasks: list[Component], where: str) -> None:
    """Each key of a method's or a dataset's ``task:`` must be an option of one of the suite's tasks."""
    valid = sorted({f for task in tasks for f in task.cls.Options.__dataclass_fields__})
    for i, component in enumerate(components):
        for key in component.task_overrides:
            if key not in valid:
                at = f"[{i}]" if component.kind == "method" else f".{component.label}"
                raise ConfigError(f"{where}{at}.task: '{key}' is not an option of any task in this suite"
                                  f"{registry.suggest(key, valid)}")


def _merged(*layers: dict) -> dict:
    """The mappings layered left to right; a nested mapping (an option that is itself a group of
    options, e.g. the compression task's ``search``) is merged key by key, not replaced."""
    out: dict = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _merged(out[key], value)
            else:
                out[key] = value
    return out


def resolve_task_options(task: Component, method: Component, where: str,
                         dataset: Component | None = None) -> Any:
    """The options a run of ``method`` on ``task`` (and ``dataset``) trains with: the task's
    defaults, then the method's paper settings (``task_defaults``), then the suite's task section,
    then the dataset's ``task:``, then the method entry's own ``task:`` (each only where the task has
    that option)."""
    fields = task.cls.Options.__dataclass_fields__
    defaults = {k: v for k, v in method.cls.task_defaults.items() if k in fields}
    per_dataset = {k: v for k, v in (dataset.task_overrides if dataset else {}).items() if k in fields}
    own = {k: v for k, v in method.task_overrides.items() if k in fields}
    here = (f"{where}: tasks.{task.label}" + (f" (with datasets.{dataset.label}.task)" if per_dataset else "")
            + (f" (with methods.{method.label}.task)" if own else ""))
    return build(task.cls.Options, _merged(defaults, task.raw, per_dataset, own), here)


def identity_task_options(task: Component, dataset: Component) -> Any:
    """The options the identity row of ``task`` on ``dataset`` is scored with: the task's defaults,
    then the suite's task section, then the dataset's ``task:`` settings of the options the row's
    scoring reads (``Task.identity_options``: its protocol, say); a method's settings do not apply,
    the row has no method."""
    per_dataset = {k: v for k, v in dataset.task_overrides.items() if k in task.cls.identity_options}
    where = f"identity row: tasks.{task.label}" + (f" (with datasets.{dataset.label}.task)" if per_dataset else "")
    return build(task.cls.Options, _merged(task.raw, per_dataset), where)


def missing_capabilities(task_cls: type, task_options: Any, method_cls: type) -> list[str]:
    """What ``method_cls`` requires (``required_capabilities``) that ``task_cls`` does not offer with
    ``task_options`` (``Task.capabilities_for``)."""
    return sorted(set(getattr(method_cls, "required_capabilities", ())) - set(task_cls.capabilities_for(task_options)))


def task_imposed_settings(task: Component, method: Component, where: str) -> dict:
    """The method options that ``task``'s patch policy (``Task.patch_policy``) imposes on ``method``,
    as the method itself answers it (``Method.patch_settings``), less those its config entry sets;
    {} without a policy. A method that cannot follow the policy is refused here, with its reason."""
    policy = getattr(task.cls, "patch_policy", None)
    if policy is None:
        return {}
    answer = method.cls.patch_settings(policy, method.options)
    if isinstance(answer, str):
        raise ConfigError(f"{where}: methods.{method.label} ({method.cls.registry_name}) cannot run in task "
                          f"'{task.label}' ({task.cls.registry_name}), whose patch policy is "
                          f"{policy.describe()}: {answer}")
    return {k: v for k, v in answer.items() if k not in method.raw}


def resolve_method_options(task: Component, method: Component, where: str) -> tuple[Any, dict]:
    """The options of ``method`` in runs of ``task`` and the settings the task imposed: the method's
    answer to the task's patch policy (:func:`task_imposed_settings`), then the entry's preset and
    ``params``, checked by the method's own option checks."""
    imposed = task_imposed_settings(task, method, where)
    if not imposed:
        return method.options, {}
    settings = ", ".join(f"{k}: {v}" for k, v in imposed.items())
    here = (f"{where}: methods.{method.label} in task '{task.label}' ({task.cls.registry_name}), whose "
            f"patch policy sets {settings}")
    return build(method.cls.Params, {**imposed, **method.raw}, here), imposed


def expand_runs(suite: Suite) -> list[Run]:
    """tasks x datasets x methods x seeds, each run's task and method options resolved once (errors
    at load)."""
    options = {(t.label, d.label, m.label): resolve_task_options(t, m, suite.source, d)
               for t in suite.tasks for d in suite.datasets for m in suite.methods}
    method_options = {(t.label, m.label): resolve_method_options(t, m, suite.source)
                      for t in suite.tasks for m in suite.methods}
    return [Run(suite, t, d, m, seed, options[(t.label, d.label, m.label)], *method_options[(t.label, m.label)])
            for t in suite.tasks for d in suite.datasets for m in suite.methods for seed in suite.settings.seeds]


def _check_dataset_kinds(tasks: list[Component], datasets: list[Component], where: str) -> None:
    """Every task must accept the kind of every dataset it is paired with (before any run starts)."""
    for task in tasks:
        for dataset in datasets:
            if task.cls.accepts(dataset.cls):
                continue
            kind = getattr(dataset.cls, "kind", None) or "(none declared)"
            needed = " or ".join(f"'{k}' ({DATASET_KINDS.get(k, 'see the task')})" for k in task.cls.dataset_kinds)
            fitting = [name for name in registry.DATASETS.names() if task.cls.accepts(registry.DATASETS.get(name))]
            raise ConfigError(
                f"{where}: task '{task.label}' ({task.cls.registry_name}) cannot train on dataset "
                f"'{dataset.label}' ({dataset.cls.registry_name}), whose kind is '{kind}': the task needs "
                f"a dataset of kind {needed}; registered datasets of that kind: "
                f"{', '.join(fitting) or 'none'}. A suite pairs every task with every dataset: put "
                "tasks that need different kinds of data in separate suites")


def _check_capabilities(runs: list[Run], where: str) -> None:
    """Every run's task, with the run's options, must offer what its method requires of it
    (``Method.required_capabilities`` against ``Task.capabilities_for``, e.g. CycleGAN's second
    generator, or a gradient through the output's pixels)."""
    for run in runs:
        task, method = run.task, run.method
        missing = missing_capabilities(task.cls, run.task_options, method.cls)
        if missing:
            able = [name for name in registry.TASKS.names()
                    if set(missing) <= set(getattr(registry.TASKS.get(name), "capabilities", ()))]
            options = " with its options in this run" if set(missing) <= set(task.cls.capabilities) else ""
            raise ConfigError(
                f"{where}: method '{method.label}' ({method.cls.registry_name}) needs a task that can "
                f"provide {', '.join(missing)}; task '{task.label}' ({task.cls.registry_name}) cannot"
                f"{options}. Tasks that can: {', '.join(able) or 'none'}")


def _resolve_mapping(kind: str, reg: registry.Registry, raw: dict, where: str) -> list[Component]:
    out = []
    for label, options in raw.items():
        here = f"{where}.{label}"
        options = dict(options or {})
        type_name = options.pop("type", label)
        paper = _paper_dataset(options.pop("paper_dataset", None), here) if kind == "dataset" else None
        task_overrides = options.pop("task", None) or {} if kind == "dataset" else {}
        if not isinstance(task_overrides, dict):
            raise ConfigError(f"{here}.task: expected a mapping of task options for the runs on this "
                              f"dataset (e.g. {{lambda_recon: 10}}), got {task_overrides!r}")
        cls = reg.get(type_name)
        out.append(Component(kind, str(label), cls, _resolve_options(kind, label, cls, options, here),
                             raw=options, paper_dataset=paper, task_overrides=dict(task_overrides)))
    return out


def _paper_dataset(value: Any, where: str) -> str | None:
    """A dataset's ``paper_dataset:`` (None when absent; null / false / '' = compare with none)."""
    if value is None or value is False or value == "":
        return None if value is None else ""
    from .reference import all_paper_datasets
    known = all_paper_datasets()
    if not isinstance(value, str) or value not in known:
        raise ConfigError(f"{where}.paper_dataset: {value!r} is not a dataset with published numbers; "
                          f"valid: {', '.join(sorted(known)) or 'none (benchmark/published is missing)'}, "
                          "or '' for none")
    return value


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``dotted.key=value`` (value parsed as YAML) to a raw config mapping."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' must look like key=value (e.g. seeds=[0,1])")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    try:
        parsed = load_yaml(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{assignment}': value is not valid YAML: {exc}") from exc
    if isinstance(node, list):
        node[int(parts[-1])] = parsed
    else:
        node[parts[-1]] = parsed


def load_suite(path: str | Path, overrides: list[str] = ()) -> Suite:
    path = Path(path).absolute()  # messages name the file wherever the command started
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from exc
    return suite_from_dict(raw, str(path), Path.cwd(), overrides)


def suite_from_dict(raw: dict, source: str = "<dict>", base_dir: Path | None = None,
                    overrides: list[str] = ()) -> Suite:
    """The suite of config mapping ``raw`` read from the file ``source`` ('<dict>': none), with
    ``overrides`` (``key=value``, from the command line) applied. Relative paths (benchmark/paths.py)
    are relative to the folder of ``source``, those of ``overrides`` (and all, without a file) to
    ``base_dir`` (default: the working directory)."""
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        apply_override(raw, assignment)
    where = source
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    for key in ("tasks", "datasets"):
        if isinstance(raw.get(key), list):
            raw[key] = {name: {} for name in raw[key]}
    if isinstance(raw.get("launcher"), str):  # ``launcher: slurm`` = ``launcher: {type: slurm}``
        raw["launcher"] = {"type": raw["launcher"]}
    base_dir = Path(base_dir or Path.cwd()).absolute()
    config_dir = Path(source).absolute().parent if source != "<dict>" else base_dir
    base = paths.path_base(config_dir, base_dir, [a.split("=", 1)[0].strip() for a in overrides])
    raw.setdefault("output_dir", field_defaults(SuiteSettings)["output_dir"])  # the default lies beside the file too
    paths.absolute_settings(SuiteSettings, raw, "", base)
    paths.absolute_plugin_files(raw, base)
    plugins.load_builtins()
    for plugin in build(SuiteSettings, raw, where).plugins:  # validated; their classes name their path options
        plugins.load_plugin(plugin)
    paths.absolute_component_paths(raw, base)
    applied = copy.deepcopy(raw)  # absolute paths: a worker or job rebuilds the same suite from it
    settings = build(SuiteSettings, raw, where)
    if settings.paper_table:
        from .reference import NAMED_TABLES
        if settings.paper_table not in NAMED_TABLES:
            raise ConfigError(f"{where}: paper_table '{settings.paper_table}' is not a published table"
                              f"{registry.suggest(settings.paper_table, sorted(NAMED_TABLES))} "
                              "(or '' for the task's own)")
    tasks = _resolve_mapping("task", registry.TASKS, settings.tasks, f"{where}: tasks")
    datasets = _resolve_mapping("dataset", registry.DATASETS, settings.datasets, f"{where}: datasets")
    methods = _resolve_methods(settings.methods, f"{where}: methods")
    if not tasks or not datasets or not methods:
        raise ConfigError(f"{where}: tasks, datasets and methods must each name at least one entry")
    _check_task_override_keys(methods, tasks, f"{where}: methods")
    _check_task_override_keys(datasets, tasks, f"{where}: datasets")
    _check_dataset_kinds(tasks, datasets, where)
    suite = Suite(settings, tasks, datasets, methods, source, base_dir, raw=applied)
    suite.runs = expand_runs(suite)
    _check_capabilities(suite.runs, where)
    _check_validation(suite, where)
    return suite


def _check_validation(suite: Suite, where: str) -> None:
    """With ``validation`` on, every run's task must be able to evaluate on a held-out split."""
    if not suite.settings.validation.enabled:
        return
    for run in suite.runs:
        reason = run.task.cls.validation_refusal(run.task_options)
        if reason:
            raise ConfigError(
                f"{where}: validation (eval_every {suite.settings.validation.eval_every}): task "
                f"'{run.task.label}' ({run.task.cls.registry_name}) cannot evaluate on a held-out "
                f"validation split: {reason}. Put it in a suite without a validation section")
