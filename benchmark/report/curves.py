"""Training curves in the report, per task and dataset: loss-vs-step (one axis per loss term, every
method on it unless their scales differ by more than SCALE_RATIO) from each run's ``losses.csv``, and FID-vs-step (every method on one axis; the
validation split solid, the test set dashed) from each run's ``evals.jsonl`` (one JSON object a
line: ``{"step": int, "split": "val" | "test", "metrics": {name: float}}``). Seeds are averaged step
by step. The figures are drawn on matplotlib's Agg canvas (no display, no pyplot state) and saved as
PNG beside the report's image grids."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..config import Component
from ..progress import LOSSES_CSV, read_losses
from .layouts import ReportContext
from .results import IDENTITY, Row

EVALS_JSONL = "evals.jsonl"
SPLIT_STYLES = {"val": "-", "test": "--"}
"""Line style of each evaluation split (validation solid, test dashed)."""
SPLIT_WORDS = {"val": "validation", "test": "test"}
SMOOTHING_FRACTION = 50
"""The loss curves' moving-average window: a 50th of the longest curve's logged steps (at least 1)."""
AXES_PER_ROW = 3


def method_color(index: int) -> str:
    """The colour of the suite's ``index``-th method, the same in every figure."""
    return f"C{index % 10}"


def _run_rows(rows: list[Row]) -> list[Row]:
    """The runs whose files belong to this config: finished or still training, never a stale or
    broken folder's (another config's losses and evaluations)."""
    return [r for r in rows if r.method != IDENTITY and r.seed is not None and not r.not_counted]


def loss_curves(rows: list[Row], methods: list[str]) -> dict[str, pd.DataFrame]:
    """Per method (in ``methods`` order, those with a ``losses.csv``): its losses indexed by step, the
    mean over the seeds that logged each step."""
    out = {}
    for method in methods:
        frames = []
        for row in _run_rows(rows):
            if row.method != method:
                continue
            names, logged = read_losses(row.directory / LOSSES_CSV)
            if logged:
                frames.append(pd.DataFrame([values for _, values in logged], columns=names,
                                           index=pd.Index([step for step, _ in logged], name="step")))
        frame = pd.concat(frames).groupby(level="step").mean() if frames else None
        if frame is not None and len(frame.columns):
            out[method] = frame
    return out


def missing_losses(rows: list[Row], every: int) -> list[str]:
    """Why a finished run's losses are missing from the curves, a line per run whose ``losses.csv``
    is missing, empty or starts after its first logged step (``every``): deleted, or missing when
    the run resumed."""
    out = []
    for row in _run_rows(rows):
        steps = row.record.get("steps") if row.finished else None
        if not isinstance(steps, int) or steps < every:
            continue
        path = row.directory / LOSSES_CSV
        _, logged = read_losses(path)
        if not logged:
            out.append(f"`{path}` is missing or empty (deleted?): the losses of {row.method} seed {row.seed} "
                       "are not in the curves.")
        elif logged[0][0] > every:
            out.append(f"`{path}` starts at step {logged[0][0]}, not {every}: its earlier rows were lost "
                       f"(the file was missing when the run resumed); {row.method} seed {row.seed}'s curves "
                       "start there.")
    return out


def read_evals(path: Path, metric: str = "FID") -> list[tuple[int, str, float]]:
    """``(step, split, value)`` of ``metric`` in an ``evals.jsonl``; a line that is not a whole
    record with that metric (e.g. one being written) is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
            step, split, value = record["step"], record["split"], record["metrics"][metric]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(step, int) and split in SPLIT_STYLES and isinstance(value, (int, float)):
            out.append((step, split, float(value)))
    return out


def eval_curves(rows: list[Row], methods: list[str], metric: str = "FID") -> dict[tuple[str, str], pd.Series]:
    """Per (method, split) with evaluations: ``metric`` indexed by step, the mean over the seeds that
    evaluated that step."""
    out = {}
    for method in methods:
        found = [(step, split, value) for row in _run_rows(rows) if row.method == method
                 for step, split, value in read_evals(row.directory / EVALS_JSONL, metric)]
        if not found:
            continue
        frame = pd.DataFrame(found, columns=["step", "split", "value"])
        for split in SPLIT_STYLES:
            values = frame[frame["split"] == split]
            if not values.empty:
                out[(method, split)] = values.groupby("step")["value"].mean()
    return out


def smoothing_window(curves: dict[str, pd.DataFrame]) -> int:
    """Logged steps in the loss curves' trailing moving average."""
    longest = max((len(frame) for frame in curves.values()), default=0)
    return max(1, longest // SMOOTHING_FRACTION)


def _figure(n_axes: int, extra_width: float = 0.0) -> tuple[Figure, list]:
    cols = min(AXES_PER_ROW, n_axes)
    rows = math.ceil(n_axes / cols)
    fig = Figure(figsize=(4.2 * cols + extra_width, 3.0 * rows + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, cols, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[n_axes:]:
        ax.remove()
    return fig, axes[:n_axes]


def _legend(fig: Figure, axes: list, beside: bool = False) -> None:
    """One legend for the figure's lines (by label): below the axes, or ``beside`` them, one entry a
    line."""
    handles, labels = {}, []
    for ax in axes:
        for line in ax.get_lines():
            if line.get_label() not in handles:
                handles[line.get_label()] = line
                labels.append(line.get_label())
    if handles:
        fig.legend([handles[label] for label in labels], labels, fontsize="small",
                   loc="outside right upper" if beside else "outside lower center",
                   ncols=1 if beside else min(len(labels), 5))


SCALE_RATIO = 10.0
"""Methods whose typical values of one loss term differ by more than this factor get an axis each for
it (FastCUT's NCE, weighted 10, runs near 46 where CUT's is near 3: on one axis CUT's line is flat)."""


def loss_axes(curves: dict[str, pd.DataFrame]) -> list[tuple[str, str, list[str]]]:
    """(axis title, loss name, methods drawn on it): one axis per loss term (in order of first appearance) with
    every method that logged it, split into one axis per method when their scales differ by more
    than SCALE_RATIO (the median absolute value of each method's curve)."""
    names = list(dict.fromkeys(name for frame in curves.values() for name in frame.columns))
    out = []
    for name in names:
        methods = [m for m, frame in curves.items() if name in frame and not frame[name].dropna().empty]
        scales = [float(curves[m][name].dropna().abs().median()) for m in methods]
        positive = [v for v in scales if v > 0]
        if len(methods) > 1 and positive and (len(positive) < len(scales)
                                              or max(positive) > SCALE_RATIO * min(positive)):
            out += [(f"{name} ({m})", name, [m]) for m in methods]
        else:
            out.append((name, name, methods))
    return out


def loss_figure(curves: dict[str, pd.DataFrame], colors: dict[str, str], window: int) -> Figure:
    """One axis per loss name (:func:`loss_axes`: per method where their scales differ), a line per
    method that logged it, smoothed by a trailing moving average over ``window`` logged steps."""
    layout = loss_axes(curves)
    fig, axes = _figure(len(layout))
    for ax, (title, name, methods) in zip(axes, layout):
        for method in methods:
            smooth = curves[method][name].dropna().rolling(window, min_periods=1).mean()
            ax.plot(smooth.index, smooth.to_numpy(), color=colors[method], label=method, linewidth=1.2)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    return fig


def fid_figure(curves: dict[tuple[str, str], pd.Series], colors: dict[str, str], metric: str = "FID") -> Figure:
    """Every method on one axis: a line per (method, split), validation solid, test dashed."""
    fig, (ax,) = _figure(1, extra_width=2.4)
    for (method, split), values in curves.items():
        ax.plot(values.index, values.to_numpy(), SPLIT_STYLES[split], marker="o", markersize=3,
                color=colors[method], label=f"{method} ({SPLIT_WORDS[split]})", linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} during training", fontsize="medium")
    ax.grid(alpha=0.3)
    _legend(fig, [ax], beside=True)
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})


def curves_section(ctx: ReportContext, task: Component) -> list[str]:
    """Markdown lines: per dataset with logged runs, the loss figure and (when some run evaluated
    during training) the FID figure, saved in the report's image folder and linked relatively."""
    methods = [m.label for m in ctx.suite.methods]
    colors = {m: method_color(i) for i, m in enumerate(methods)}
    lines = []
    for dataset in ctx.suite.datasets:
        rows = ctx.rows_of(task.label, dataset.label)
        losses = loss_curves(rows, methods)
        fids = eval_curves(rows, methods)
        gaps = missing_losses(rows, ctx.suite.settings.log_every)
        if not losses and not fids and not gaps:
            continue
        stem = f"{task.label}_{dataset.label}"
        lines += [f"## {task.label} / {dataset.label}: training curves", ""]
        lines += [f"- {gap}" for gap in gaps] + ([""] if gaps else [])
        if losses:
            window = smoothing_window(losses)
            path = ctx.grid_dir / f"{stem}_losses.png"
            save_figure(loss_figure(losses, colors, window), path)
            lines += [f"![{task.label} {dataset.label} losses]({ctx.suite.name}/{path.name})", "",
                      f"Training losses as `train_step` returned them (each run's `{LOSSES_CSV}`), the "
                      "mean over seeds at each logged step, smoothed by a trailing moving average over "
                      f"{window} logged step{'s' if window > 1 else ''} (a {SMOOTHING_FRACTION}th of the "
                      "longest curve); one axis per loss term, and one per method for a term whose scale differs by "
                      f"more than {SCALE_RATIO:g}x between methods (the axis then names the method).", ""]
        if fids:
            path = ctx.grid_dir / f"{stem}_fid.png"
            save_figure(fid_figure(fids, colors), path)
            splits = [s for s in SPLIT_STYLES if any(split == s for _, split in fids)]
            styles = ", ".join(f"{'solid' if SPLIT_STYLES[s] == '-' else 'dashed'}: {SPLIT_WORDS[s]}"
                               for s in splits)
            lines += [f"![{task.label} {dataset.label} FID during training]({ctx.suite.name}/{path.name})", "",
                      f"FID during training (each run's `{EVALS_JSONL}`), the mean over seeds at each "
                      f"evaluated step; {styles}.", ""]
    return lines
