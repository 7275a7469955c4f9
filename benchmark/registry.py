"""Name -> class registries for methods, tasks and datasets.

Built-in plugins register themselves when their package is imported; external plugins (a module
path or a ``.py`` file named in a config's ``plugins:`` list) register the same way when loaded.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError


@dataclass
class Registry:
    kind: str
    entries: dict[str, type] = field(default_factory=dict)

    def register(self, name: str) -> Callable[[type], type]:
        def decorator(cls: type) -> type:
            if name in self.entries and self.entries[name] is not cls:
                existing = self.entries[name]
                raise ConfigError(
                    f"{self.kind} '{name}' is already registered by "
                    f"{existing.__module__}.{existing.__qualname__}; pick another name")
            cls.registry_name = name
            self.entries[name] = cls
            return cls
        return decorator

    def get(self, name: str) -> type:
        load_builtins()
        if name not in self.entries:
            raise ConfigError(f"unknown {self.kind} '{name}'{suggest(name, self.names())}")
        return self.entries[name]

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self.entries)


def suggest(name: str, candidates: list[str]) -> str:
    """A ' (did you mean ...)' hint listing the nearest valid names, or all of them if none is close."""
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    if close:
        return f"; did you mean {', '.join(repr(c) for c in close)}?"
    return f"; valid names: {', '.join(sorted(candidates))}" if candidates else ""


METHODS = Registry("method")
TASKS = Registry("task")
DATASETS = Registry("dataset")

register_method = METHODS.register
register_task = TASKS.register
register_dataset = DATASETS.register

_BUILTIN_PACKAGES = ("methods", "tasks", "datasets")
_builtins_loaded = False


def load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for package in _BUILTIN_PACKAGES:
        importlib.import_module(package)


def load_plugin(spec: str, base_dir: Path | None = None) -> None:
    """Import an external plugin: a dotted module path or a path to a ``.py`` file."""
    load_builtins()
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ConfigError(f"plugin file '{path}' does not exist (named in plugins: '{spec}')")
        module_name = f"i2i_plugin_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
        if module_name in sys.modules:
            return
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"plugin module '{spec}' cannot be imported: {exc}. "
                          "Expected an importable module path or a path to a .py file") from exc


def describe(cls: Any) -> str:
    """First line of a class's docstring."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
