"""The per-dataset layout (single-modal tasks, and the default of any task without its own): a table
per dataset with a row per method (``identity`` first), metrics as mean ± std over seeds, the
published numbers (GraphCL Table 1, Hneg-SRC Table 1) beside the rows of datasets that are the
papers' own, and a grid of inputs and each method's outputs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import Component
from ..reference import PaperTable
from .format import (NOT_SCORED, STATUS, auto_digits, markdown_table, mean_std, protocol_footer, status_words,
                     uninformative, table_warnings, with_intervals, with_status)
from .grids import labelled_grid, read_rgb, save_grid, target_examples
from .layouts import ReportContext, register_layout
from .paper import (dataset_paper_name, difference_cell, paper_methods, paper_note, protocol_flags, published_cell,
                    suite_table)
from .results import IDENTITY, Row, first_sample, results_table

METRIC_ORDER = ["FID", "FID_inf", "KIDx100", "KIDx100_std", "mIoU", "pixAcc", "clsAcc", "maskIoU"]


def summary_table(table: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Rows: ``labels`` (identity first, then the suite's methods); columns: the metrics as
    'mean ± std' over seeds (NOT_SCORED where a row has none), then ``seeds``."""
    if table.empty:
        cells = pd.DataFrame(index=pd.Index([], name="method"))
        seeds = pd.Series(dtype=int)
    else:
        cells = table.groupby(["method", "metric"])["value"].apply(
            lambda v: mean_std(v, auto_digits(v))).unstack("metric")
        seeds = table.groupby("method")["seed"].nunique()
        cells = with_intervals(cells, table)
    metrics = [m for m in METRIC_ORDER if m in cells.columns] + \
        sorted(c for c in cells.columns if c not in METRIC_ORDER)
    out = cells.reindex(index=labels, columns=metrics).fillna(NOT_SCORED)
    out["seeds"] = ["-" if m == IDENTITY else int(seeds.get(m, 0)) for m in labels]
    return out


def with_paper_columns(summary: pd.DataFrame, methods: list[Component], table: PaperTable,
                       paper_ds: str, means: dict[tuple[str, str], float] | None = None) -> pd.DataFrame:
    """``summary`` (rows: methods) with, for each metric the paper reports on ``paper_ds``, a
    ``Δ <metric>`` column (ours minus the paper's, from ``means``: (method, metric) -> our mean over
    seeds) and a ``paper <metric>`` column: the published value of the row's method (as the papers
    print it: KID x 100 with three decimals, the rest with one), else NOT_SCORED."""
    published = table.load()
    published = published[published["dataset"] == paper_ds]
    metrics = [m for m in table.metrics if m in published.columns and published[m].notna().any()]
    to_paper = paper_methods(methods, table)
    out = summary.copy()
    values = {metric: [table.value(paper_ds, to_paper[m], metric) if to_paper.get(m) else None for m in out.index]
              for metric in metrics}
    if means is not None:
        for metric in metrics:
            out[f"Δ {metric}"] = [difference_cell(means.get((m, metric)), v, 3 if metric == "KIDx100" else 1)
                                  for m, v in zip(out.index, values[metric])]
    for metric in metrics:
        out[f"paper {metric}"] = [published_cell(v, 3 if metric == "KIDx100" else 1) for v in values[metric]]
    return out


def metric_means(table: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(method, metric) -> mean over seeds of a results table."""
    if table.empty:
        return {}
    return {k: float(v) for k, v in table.groupby(["method", "metric"])["value"].mean().items()}


def test_images_scored(records: list[dict]) -> dict[str, int]:
    """The images the finished runs translated and compared with (their protocol's ``num_outputs`` and
    ``num_real``), when every run says the same."""
    out = {}
    for key, name in (("num_outputs", "translated"), ("num_real", "reference")):
        counts = {r.get("protocol", {}).get(key) for r in records if r.get("method") != "identity"}
        if len(counts) == 1 and isinstance(next(iter(counts)), int):
            out[name] = next(iter(counts))
    return out


def scored_resolution(records: list[dict]) -> int | None:
    """The side of the outputs the finished runs scored (their protocol's ``resolution``), when every
    run says the same and the outputs are square."""
    sizes = {tuple(r.get("protocol", {}).get("resolution") or ()) for r in records if r.get("method") != "identity"}
    if len(sizes) == 1 and len(size := next(iter(sizes))) == 2 and size[0] == size[1]:
        return int(size[0])
    return None


def image_grid(ctx: ReportContext, rows: list[Row], labels: list[str], out_path: Path,
               dataset: Component | None = None) -> list[str] | None:
    """A labelled grid: the test inputs (``source``) in the first row, real target-domain test images
    (``target example``, not paired with the inputs) in the second, then one row per method's outputs
    (its first seed with samples), each row named on its left."""
    first_input = first_sample(rows, IDENTITY, "samples/input_00.png")
    inputs = sorted(first_input.parent.glob("input_*.png")) if first_input else []
    if not inputs:
        return None
    tiles, shown = [[read_rgb(p) for p in inputs]], ["source"]
    targets = target_examples(ctx.suite, dataset, len(inputs)) if dataset is not None else []
    if targets and targets[0].shape == tiles[0][0].shape:
        tiles.append(targets)
        shown.append("target example")
    for method in labels:
        first_output = first_sample(rows, method, "samples/output_00.png")
        outputs = sorted(first_output.parent.glob("output_*.png")) if first_output else []
        if len(outputs) >= len(inputs):
            tiles.append([read_rgb(p) for p in outputs[: len(inputs)]])
            shown.append(method)
    titles = [f"test image {i + 1}" for i in range(len(inputs))]
    save_grid(labelled_grid(tiles, shown, titles), out_path)
    return shown


@register_layout("single_modal", default=True)
def per_dataset_section(ctx: ReportContext, task: Component) -> list[str]:
    """Markdown lines for one task: per dataset a heading, warnings, the table, its footer and grid."""
    paper_table = suite_table(ctx.suite, task)
    method_labels = [m.label for m in ctx.suite.methods]
    lines = []
    for dataset in ctx.suite.datasets:
        rows = ctx.rows_of(task.label, dataset.label)
        if not rows:
            continue
        recs = [r.record for r in rows if r.finished]
        lines += [f"## {task.label} / {dataset.label}", ""]
        lines += table_warnings(recs)
        labels = [m for m in [IDENTITY, *method_labels] if any(r.method == m for r in rows)]
        results = results_table(recs)
        summary = summary_table(results, labels)
        paper_ds = dataset_paper_name(dataset, paper_table)
        if paper_ds:
            summary = with_paper_columns(summary, ctx.suite.methods, paper_table, paper_ds, metric_means(results))
        summary = with_status(summary, [status_words([r for r in rows if r.method == m]) for m in labels])
        dropped = uninformative(results)
        if dropped:
            summary = summary.drop(columns=[c for c in dropped if c in summary.columns])
        lines += [markdown_table(summary.rename_axis("method").reset_index()), ""]
        lines += [f"{words}." for words in dropped.values()] + ([""] if dropped else [])
        lines += protocol_footer(recs)
        lines += ["Rows: methods trained in this suite plus "
                  "`identity` (the input itself scored as the output)"
                  + ("; `status` says why a row has no (or not every) result" if STATUS in summary else "")
                  + ".", ""]
        if paper_ds:
            lines += [paper_note(paper_table, {dataset.label: paper_ds}), ""]
            flags = protocol_flags(ctx.suite, paper_table, test_images_scored(recs), paper_dataset=paper_ds,
                                   resolution=scored_resolution(recs))
            if flags:
                lines += [flags, ""]
        grid_path = ctx.grid_dir / f"{task.label}_{dataset.label}.png"
        shown = image_grid(ctx, rows, labels[1:] if labels[:1] == [IDENTITY] else labels, grid_path, dataset)
        if shown:
            lines += [f"![{task.label} {dataset.label} samples]({ctx.suite.name}/{grid_path.name})", "",
                      f"Rows, top to bottom: {', '.join(shown)} (each method's first seed); "
                      "`target example`: real test images of the target domain, not paired with the sources.", ""]
    return lines
