"""One rule for relative paths in a suite: a path written in a config file is relative to that
file's folder; a path given on the command line (an override) is relative to the working directory.
Both are made absolute when the config is loaded, in the config mapping itself, so that every later
reader (the runner, the report, a worker process or a cluster job rebuilding the suite from that
mapping) sees the same absolute path, and every message shows it.

The settings that are paths are marked in their dataclass (``benchmark.core.settings.path_setting``): the suite's ``output_dir``, ``weights_dir`` and
``launcher.folder``, a dataset's ``root`` or image files, the compression teacher's ``checkpoint``;
``plugins`` entries that are ``.py`` files follow the same rule."""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Callable

from .core import registry

Base = Callable[[str], Path]
"""The folder a relative path at a dotted config key is relative to."""


def path_base(config_dir: Path, cwd: Path, overridden: list[str]) -> Base:
    """The rule: the working directory for a key set (or inside a mapping set) on the command
    line, the config file's folder otherwise."""
    def base(key: str) -> Path:
        return cwd if any(key == o or key.startswith(o + ".") for o in overridden) else config_dir
    return base


def absolute(value: str, base: Path) -> str:
    """``value`` as an absolute path ('~' expanded; '..' folded, so messages stay readable)."""
    path = Path(value).expanduser()
    return str(path) if path.is_absolute() else os.path.normpath(base / path)


def absolute_settings(cls: type, data, key: str, base: Base) -> None:
    """Make the path settings of dataclass ``cls`` in its raw mapping ``data`` (at dotted ``key``)
    absolute, in place, nested settings included. Anything of the wrong shape is left for
    validation to report."""
    if not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        here = f"{key}.{f.name}" if key else f.name
        value = data[f.name]
        if f.metadata.get("path"):
            if isinstance(value, str) and value:
                data[f.name] = absolute(value, base(here))
            continue
        for nested in _dataclasses_in(hints[f.name]):
            absolute_settings(nested, value, here, base)


def _dataclasses_in(tp) -> list[type]:
    """The dataclasses a field's type names (itself, or the members of a union)."""
    if dataclasses.is_dataclass(tp):
        return [tp]
    return [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]


def absolute_plugin_files(raw: dict, base: Base) -> None:
    """``plugins`` entries that are ``.py`` files (the others are module names) made absolute."""
    specs = raw.get("plugins")
    if isinstance(specs, list):
        raw["plugins"] = [absolute(s, base(f"plugins.{i}")) if isinstance(s, str) and s.endswith(".py") else s
                          for i, s in enumerate(specs)]


def absolute_component_paths(raw: dict, base: Base) -> None:
    """The path options of the tasks, datasets and methods' ``task:`` sections of a config mapping
    (after its plugins are loaded: their classes name their path options). A ``task:`` section
    holds options of the suite's tasks, so each task's path options apply to it."""
    task_classes = []
    for label, options in _mapping(raw.get("tasks")).items():
        cls = _registered(registry.TASKS, options, label)
        if cls is not None:
            task_classes.append(cls)
            absolute_settings(cls.Options, options, f"tasks.{label}", base)
    for label, options in _mapping(raw.get("datasets")).items():
        cls = _registered(registry.DATASETS, options, label)
        if cls is not None:
            absolute_settings(cls.Options, options, f"datasets.{label}", base)
        for task_cls in task_classes:
            if isinstance(options, dict):
                absolute_settings(task_cls.Options, options.get("task"), f"datasets.{label}.task", base)
    methods = raw.get("methods")
    for i, entry in enumerate(methods if isinstance(methods, list) else []):
        for task_cls in task_classes:
            if isinstance(entry, dict):
                absolute_settings(task_cls.Options, entry.get("task"), f"methods.{i}.task", base)


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _registered(reg: registry.Registry, options, label: str) -> type | None:
    """The class a task or dataset entry names (``type:``, else its label); None when unknown (the
    config's validation names it)."""
    name = options.get("type", label) if isinstance(options, dict) else label
    return reg.entries.get(name) if isinstance(name, str) else None
