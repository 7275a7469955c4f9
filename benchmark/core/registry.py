"""Name -> class registries for methods, tasks and datasets.

A plugin class registers itself with ``@register_method`` / ``@register_task`` /
``@register_dataset`` when its module is imported. This module imports no plugin: the application
(:mod:`benchmark.plugins`) imports the built-in packages, the packages that declare the
``i2i_bench.plugins`` entry point, and the modules or ``.py`` files a config names in ``plugins:``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
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
        if name not in self.entries:
            raise ConfigError(f"unknown {self.kind} '{name}'{suggest(name, self.names())}")
        return self.entries[name]

    def names(self) -> list[str]:
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

def describe(cls: Any) -> str:
    """First line of a class's docstring."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
