"""A run folder and the state it owns. The runner and the report both ask this module what a folder
holds, so that ``run`` never reuses and ``report`` never shows numbers that the other would not.

A folder (a run's, or an identity row's) holds:

- ``config.yaml``: the resolved config its results belong to, written before any work;
- ``run.lock``: held while a process trains or scores it (an OS-level ``flock``: a killed process
  leaves no lock that blocks);
- ``checkpoints/*.pt``, ``losses.csv``, ...: work in progress;
- ``metrics.json``: the results, valid against :data:`METRICS_SCHEMA` and naming this folder's row.

Its state is one of :data:`FINISHED` (valid results of the current config), :data:`STALE` (valid
results of another config: the changed keys are named), :data:`BROKEN` (a metrics.json that is not
valid: unparseable, wrong shape, another row's) or :data:`UNFINISHED`. A broken metrics.json is
never deleted: :meth:`RunFolder.move_broken_aside` renames it, and the run is then done again."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml
from filelock import FileLock, Timeout

from .core.atomic import atomic_write, make_folder
from .core.errors import ConfigError
from .core.settings import NO_DEFAULT
from .core.yaml_io import load_yaml
from .inputs import INPUTS, input_changes

CONFIG_YAML = "config.yaml"
METRICS_JSON = "metrics.json"
INPUTS_JSON = "inputs.json"
RUN_LOCK = "run.lock"
BROKEN_SUFFIX = ".broken"
"""A broken metrics.json is renamed ``metrics.json.broken-<time>`` (a number added if taken)."""

METRICS_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "run_id": str, "task": str, "dataset": str, "method": str, "seed": int, "metrics": dict}
"""The keys every metrics.json holds and their types; ``metrics`` maps names to numbers (or null)."""

FINISHED, STALE, BROKEN, UNFINISHED = "finished", "stale", "broken", "unfinished"
REDO_BROKEN_HINT = "run the same command with --redo-broken to move it aside and do the run again"


@dataclass(frozen=True)
class State:
    """What a folder holds: ``kind`` (one of FINISHED, STALE, BROKEN, UNFINISHED), the valid
    ``record`` (FINISHED and STALE), the ``changed`` config keys or ``inputs`` (STALE) or the
    ``problem`` (BROKEN)."""
    kind: str
    record: dict | None = None
    changed: tuple[str, ...] = ()
    problem: str = ""
    inputs: tuple[str, ...] = ()

    def describe(self, metrics_path: Path) -> str:
        """The state in words, for ``run``'s log and the report."""
        if self.kind == STALE and self.inputs:
            return (f"stale: its results were made from other data or files than those there now "
                    f"({'; '.join(self.inputs)})")
        if self.kind == STALE:
            return (f"stale: its results were made with a different config (changed: "
                    f"{', '.join(self.changed[:8])}{', ...' if len(self.changed) > 8 else ''})")
        if self.kind == BROKEN:
            return f"broken {metrics_path}: {self.problem}"
        return self.kind


@dataclass(frozen=True)
class RunFolder:
    """The folder of one row: ``name`` (the run id metrics.json must hold), the ``config`` its
    results must belong to and that config's ``defaults`` (a setting a newer version added is
    unchanged while it has its default)."""
    directory: Path
    name: str
    config: dict = field(compare=False)
    defaults: dict = field(compare=False)

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_YAML

    @property
    def metrics_path(self) -> Path:
        return self.directory / METRICS_JSON

    # -- the lock ----------------------------------------------------------------------------

    def lock(self) -> FileLock:
        """The folder's lock (held while a process trains or scores it)."""
        make_folder(self.directory, f"the folder of '{self.name}'")
        return FileLock(str(self.directory / RUN_LOCK))

    def held_by_a_process(self) -> bool:
        return held_by_a_process(self.directory)

    # -- the state ---------------------------------------------------------------------------

    def refusal(self, state: State) -> str | None:
        """Why ``run`` will not touch this folder in ``state`` (None: it may): results of another
        config are kept, not reused or overwritten; a broken metrics.json waits for --redo-broken."""
        if state.kind == STALE:
            return (f"'{self.name}' in {self.directory} is {state.describe(self.metrics_path)}. "
                    "They are kept: use another suite name or output_dir, or move that folder away to redo it")
        if state.kind == BROKEN:
            return f"'{self.name}': {state.describe(self.metrics_path)}; {REDO_BROKEN_HINT}"
        return None

    def state(self, inputs: dict[str, str | None] | None = None) -> State:
        """The folder's state; with ``inputs`` (``benchmark.inputs.row_inputs``: the dataset and
        files as they are now), results recorded from other inputs are stale too. An input that
        cannot be read here (None), or that the results did not record (earlier versions), is not
        compared."""
        if not self.metrics_path.exists():
            return State(UNFINISHED)
        record, problem = read_metrics(self.metrics_path, self.name)
        if problem:
            return State(BROKEN, problem=problem)
        changed = self.config_changes()
        if changed:
            return State(STALE, record=record, changed=tuple(changed))
        differ = input_changes(record.get(INPUTS), inputs)
        if differ:
            return State(STALE, record=record, inputs=differ)
        return State(FINISHED, record=record)

    def config_changes(self) -> list[str]:
        """The dotted keys in which the stored config.yaml differs from ``config`` ([] without one:
        identity rows and runs of versions before config.yaml was written to identity rows)."""
        if not self.config_path.exists():
            return []
        try:
            stored = load_yaml(self.config_path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            return [f"(unreadable {self.config_path}: {exc})"]
        return config_diff(stored, self.config, self.defaults)

    def work_of_other_settings(self, inputs: dict[str, str | None] | None = None) -> str:
        """For a folder without results: why the work it holds (a checkpoint, losses) is not this
        config's, the words :meth:`bind` and :meth:`bind_inputs` would refuse it with; '' when it
        is (or holds no work)."""
        if not self.holds_work():
            return ""
        changed = self.config_changes()
        if changed:
            return f"its checkpoint was made with a different config (changed: {', '.join(changed[:8])})"
        differ = input_changes(self.stored_inputs(), inputs)
        return f"its checkpoint was trained from other data or files ({'; '.join(differ)})" if differ else ""

    def holds_work(self) -> bool:
        """Whether the folder holds a checkpoint or results (work that a new config must not mix with)."""
        return self.metrics_path.exists() or any((self.directory / "checkpoints").glob("*.pt"))

    # -- writing -----------------------------------------------------------------------------

    def bind(self, write: bool = True, log: Callable[[str], None] = print) -> None:
        """Bind the folder to ``config`` before any work: write config.yaml when there is none; a
        different stored config is refused while the folder holds a checkpoint or results, and
        replaced when it holds neither (e.g. a run that failed before training on a wrong dataset
        root). With ``write`` off (the ranks other than 0 under torchrun) nothing is written."""
        changed = self.config_changes()
        if changed and self.holds_work():
            raise ConfigError(
                f"'{self.name}' in {self.directory} was made with a different config "
                f"(changed: {', '.join(changed[:5])}). Its results are kept: use another suite name "
                f"or output_dir, or move that folder away to redo it")
        if not write or (self.config_path.exists() and not changed):
            return
        if changed:
            log(f"  {self.name}: {self.config_path} held another config (changed: "
                f"{', '.join(changed[:5])}) but no checkpoint or results: replaced by this one")
        with atomic_write(self.config_path, "w", encoding="utf-8") as f:
            f.write(yaml.safe_dump(self.config, sort_keys=False))

    @property
    def inputs_path(self) -> Path:
        return self.directory / INPUTS_JSON

    def stored_inputs(self) -> dict | None:
        """What inputs.json holds (None: no such file, or not readable)."""
        try:
            return json.loads(self.inputs_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def bind_inputs(self, inputs: dict[str, str | None], write: bool = True) -> None:
        """Bind the folder's training to ``inputs`` (``benchmark.inputs``) as :meth:`bind` does to
        the config: a checkpoint trained from other data or files is refused, not resumed on these;
        ``inputs.json`` is written when the folder holds no work yet (rank 0 only under torchrun)."""
        stored = self.stored_inputs()
        work = self.holds_work()
        differ = input_changes(stored, inputs) if work else ()
        if differ:
            raise ConfigError(
                f"'{self.name}' in {self.directory} was trained from other data or files than those there "
                f"now ({'; '.join(differ)}). Its checkpoint and results are kept: restore those files, "
                "or move that folder away to redo it")
        if write and (stored is None or not work):
            write_json(self.inputs_path, inputs)

    def write_metrics(self, record: dict) -> None:
        problem = schema_problem(record, self.name)
        if problem:  # a bug of the task, caught before it becomes a file the report rejects
            raise ValueError(f"metrics of '{self.name}' do not fit the schema: {problem}")
        write_json(self.metrics_path, record)

    def move_broken_aside(self) -> Path:
        """Rename the broken metrics.json to a name not taken (never deleted); returns the new path."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.metrics_path.with_name(f"{METRICS_JSON}{BROKEN_SUFFIX}-{stamp}")
        k = 1
        while target.exists():
            k += 1
            target = self.metrics_path.with_name(f"{METRICS_JSON}{BROKEN_SUFFIX}-{stamp}-{k}")
        self.metrics_path.rename(target)
        return target


def write_json(path: Path, data) -> None:
    """``data`` as indented JSON, written atomically."""
    with atomic_write(path, "w", encoding="utf-8", what=f"the results ({path.name})") as f:
        json.dump(data, f, indent=2, sort_keys=True)


def held_by_a_process(directory: Path) -> bool:
    """Whether a process holds the lock of the folder ``directory`` (it is training it now)."""
    path = directory / RUN_LOCK
    if not path.is_file():
        return False
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def read_metrics(path: Path, name: str) -> tuple[dict | None, str]:
    """(the record, '') of a valid metrics.json of row ``name``, else (None, what is wrong)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"not readable as JSON ({type(exc).__name__}: {exc})"
    problem = schema_problem(record, name)
    return (None, problem) if problem else (record, "")


def schema_problem(record, name: str) -> str:
    """What makes ``record`` not a metrics.json of row ``name`` ('' when nothing)."""
    if not isinstance(record, dict):
        return f"expected a JSON object with keys {', '.join(METRICS_SCHEMA)}, got {type(record).__name__}"
    for key, kind in METRICS_SCHEMA.items():
        if key not in record:
            return f"missing key '{key}' (expected keys: {', '.join(METRICS_SCHEMA)})"
        value = record[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"'{key}' is {value!r}, expected {kind.__name__}"
    for metric, value in record["metrics"].items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (value is None or number):
            return f"metric '{metric}' is {value!r}, expected a number"
    if record["run_id"] != name:
        return f"it holds the results of '{record['run_id']}', not of '{name}'"
    return ""


def config_diff(stored, resolved, defaults=None, prefix="") -> list[str]:
    """Dotted keys whose values differ. A key the stored config lacks is a setting added to the
    benchmark after the run was made: it differs only when its value is not the setting's default."""
    if isinstance(stored, dict) and isinstance(resolved, dict):
        defaults = defaults if isinstance(defaults, dict) else {}
        out = []
        for k in sorted(set(stored) | set(resolved), key=str):
            default = defaults.get(k, NO_DEFAULT)
            if k not in stored and default is not NO_DEFAULT and resolved[k] == default:
                continue
            out += config_diff(stored.get(k), resolved.get(k), default, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if stored == resolved else [prefix]
