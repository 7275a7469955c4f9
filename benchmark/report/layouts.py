"""The registry of report layouts: how the report tabulates a task, keyed by the task's registered name.

A layout is a function ``(ReportContext, task Component) -> list of markdown lines`` (its section of
the report: headings, tables, footers, image grids). It registers itself for the tasks it lays out::

    @register_layout("multi_modal")
    def table2_section(ctx: ReportContext, task: Component) -> list[str]: ...

A task with no layout of its own gets the default one (``register_layout(..., default=True)``: the
per-dataset layout). Tasks never import the report: the registry lives here, in the application, and a
plugin that brings a task with its own layout registers that layout from a module outside ``tasks``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import Component, Suite
from ..core.errors import ConfigError
from .results import Row


@dataclass
class ReportContext:
    """What every layout gets: the suite, the folder of the report (grids go in ``report_dir /
    suite.name``) and every row the config asks for, finished or missing."""
    suite: Suite
    report_dir: Path
    rows: list[Row]

    @property
    def records(self) -> list[dict]:
        """The metrics.json records of the finished rows."""
        return [r.record for r in self.rows if r.finished]

    def rows_of(self, task: str, dataset: str | None = None) -> list[Row]:
        return [r for r in self.rows if r.task == task and (dataset is None or r.dataset == dataset)]

    @property
    def grid_dir(self) -> Path:
        return self.report_dir / self.suite.name


Layout = Callable[[ReportContext, Component], list[str]]

LAYOUTS: dict[str, Layout] = {}
"""Task registry name -> its layout."""
_DEFAULT: dict[str, Layout] = {}


def register_layout(*task_names: str, default: bool = False) -> Callable[[Layout], Layout]:
    """Decorator: the layout of the tasks registered as ``task_names`` (and, with ``default``, of every
    task without a layout of its own)."""
    def decorator(layout: Layout) -> Layout:
        for name in task_names:
            existing = LAYOUTS.get(name)
            if existing is not None and existing is not layout:
                raise ConfigError(f"report layout of task '{name}' is already registered by "
                                  f"{existing.__module__}.{existing.__qualname__}")
            LAYOUTS[name] = layout
        if default:
            _DEFAULT["layout"] = layout
        return layout
    return decorator


def layout_for(task_name: str) -> Layout:
    """The layout of the task registered as ``task_name``: its own, else the default."""
    if task_name in LAYOUTS:
        return LAYOUTS[task_name]
    if "layout" not in _DEFAULT:
        raise ConfigError(f"no report layout for task '{task_name}' and no default layout registered")
    return _DEFAULT["layout"]
