"""The Python API: what ``python -m benchmark run | report`` do, for a notebook or a script.

    from benchmark import api

    suite = api.load("configs/quick.yaml", overrides=["seeds=[0,1]"])   # or api.load({...}) from a dict
    api.run(suite)                       # trains the runs not finished yet, writes the report
    long = api.results(suite)            # a row per run and metric (and per missing run, with why)
    wide = api.results(suite, wide=True) # a row per run, a column per metric

Relative paths resolve as ``run`` resolves them: in a config file against the file's folder (so a
notebook in another folder finds the results the command line wrote), in a dict or an override
against ``base_dir`` (default: the working directory).
The module wraps :func:`benchmark.config.load_suite`, :class:`benchmark.runner.Runner` and
:func:`benchmark.report.write_report`; it adds no behaviour of its own.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import pandas as pd

from .config import Suite, load_suite, suite_from_dict
from .core.weights import check_suite
from .plan import check_plugin_hooks
from .report import write_report
from .report.results import FINISHED, csv_table, expected_rows
from .runner import Runner
from .sanity import meaningless_settings

RUN_KEYS = ["task", "dataset", "method", "seed"]


@contextmanager
def _working_directory(path: Path | None) -> Iterator[None]:
    """``load_suite`` resolves the overrides' relative paths against the working directory (as the
    command line does): run it from ``path``."""
    if path is None:
        yield
        return
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def load(config: str | Path | Mapping, overrides: Sequence[str] = (), base_dir: str | Path | None = None) -> Suite:
    """A suite from a YAML file or a mapping with the same keys, with dotted ``key=value``
    overrides as on the command line. ``base_dir``: the folder the relative paths of a dict and of
    the overrides resolve against (default: the working directory, as ``python -m benchmark run``)."""
    base = Path(base_dir).resolve() if base_dir is not None else None
    if isinstance(config, Mapping):
        return suite_from_dict(dict(config), "<dict>", base or Path.cwd(), list(overrides))
    path = Path(config).resolve()  # relative to the caller's working directory, as typed
    with _working_directory(base):
        return load_suite(path, list(overrides))


@dataclass
class RunResult:
    report: Path
    """The markdown report (the CSV and images are beside it)."""
    failures: list[tuple[str, str]]
    """(run id, error message) of the runs that failed; finished runs are kept, a new ``run`` resumes."""
    warnings: list[str]
    """Settings that make results meaningless (as ``plan`` lists them)."""


def run(suite: Suite) -> RunResult:
    """Train every unfinished run of the suite in this process (``launcher: local``), then write the
    report; the same checks as ``python -m benchmark run`` come first (pretrained files, plugin hooks)."""
    check_suite(suite)
    check_plugin_hooks(suite)
    warnings = meaningless_settings(suite)
    failures = Runner(suite).run_all()
    return RunResult(write_report(suite), list(failures), warnings)


def report(suite: Suite) -> Path:
    """(Re)write the suite's report from its run folders; returns the markdown file."""
    return write_report(suite)


def results(suite: Suite, wide: bool = False) -> pd.DataFrame:
    """The suite's results as the report's CSV holds them.

    Long (default): columns task, dataset, method, seed, metric, value, status; a row per finished
    run (and identity row) and metric, and a row per missing one (no metric, ``status`` says why).
    Wide: the finished rows only, one per run, indexed by (task, dataset, method, seed), a column per
    metric (NaN where a run has no such metric). The ``identity`` rows (the inputs scored as outputs)
    have seed 0."""
    table = csv_table(expected_rows(suite))
    if not wide:
        return table
    finished = table[table["status"] == FINISHED]
    out = finished.pivot_table(index=RUN_KEYS, columns="metric", values="value", aggfunc="first")
    out.columns.name = None
    return out
