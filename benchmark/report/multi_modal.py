"""The layout of the multi-modal task, as Hneg-SRC's Table 2: one table per task, a row per dataset x
method, the latent- and reference-guided FID / LPIPS (+ the structure score), and the published
numbers in their own columns for the datasets the paper reports. Below the table, per dataset, the
sources x targets style grid of every method."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ..config import Component
from ..core.yaml_io import load_yaml
from ..reference import PaperTable
from .format import (INTERVAL_BOUNDS, NOT_SCORED, NOT_TABULATED, STATUS, interval_words, markdown_table, mean_std,
                     protocol_footer, status_words, table_warnings)
from .grids import annotate, nearest_factor, read_rgb, save_grid, upscale_nearest
from .layouts import ReportContext, register_layout
from .paper import (dataset_paper_name, difference_cell, paper_methods, paper_note, protocol_flags, published_cell,
                    suite_table)
from .results import IDENTITY, Row, first_sample

METRICS = ["latent_FID", "latent_LPIPS", "latent_L1_diversity", "reference_FID", "reference_LPIPS",
           "reference_L1_diversity", "structure_score"]
DIVERSITY = ("LPIPS", "L1_diversity")
"""Metrics that score the spread of the K outputs of one source: undefined for the identity row."""
GRID_TILE = 96
"""Grid tiles are enlarged (nearest) to at least this many pixels a side."""


def column(metric: str, paper: bool = False) -> str:
    return ("paper " if paper else "") + metric.replace("_", " ")


def digits(metric: str) -> int:
    return 2 if "FID" in metric else 3


def dataset_table(rows: list[Row], datasets: list[str], method_order: list[str],
                  paper: dict[str, str | None], table: PaperTable | None,
                  to_paper: dict[str, str | None]) -> pd.DataFrame:
    """Rows: dataset x (identity, then methods in suite order); columns: dataset, method, the
    metrics as mean ± std over seeds, seeds, then the paper's numbers (only when a dataset maps to
    the paper), then ``status`` when a row is missing (or missing seeds). ``paper``: dataset label
    -> the paper's dataset name or None; ``to_paper``: method label -> the paper's method name."""
    records = [r.record for r in rows if r.finished]
    present = {m for r in records for m in r["metrics"]}
    metrics = [m for m in METRICS if m in present] + sorted(
        m for m in present - set(METRICS) if not m.endswith(INTERVAL_BOUNDS) and m not in NOT_TABULATED)
    paper_metrics = list(table.metrics) if table is not None and any(paper.values()) else []
    out, statuses = [], []
    for dataset in datasets:
        drows = [r for r in rows if r.dataset == dataset]
        for method in [m for m in [IDENTITY, *method_order] if any(r.method == m for r in drows)]:
            mrows = [r for r in drows if r.method == method]
            runs = [r.record for r in mrows if r.finished]
            row = {"dataset": dataset, "method": method}
            for metric in metrics:
                values = pd.Series([r["metrics"][metric] for r in runs if metric in r["metrics"]], dtype=float)
                undefined = method == IDENTITY and metric.endswith(DIVERSITY)  # K copies of the input
                bounds = [pd.Series([r["metrics"][metric + b] for r in runs if metric + b in r["metrics"]],
                                    dtype=float) for b in INTERVAL_BOUNDS]
                row[column(metric)] = NOT_SCORED if values.empty or undefined else \
                    mean_std(values, digits(metric)) + interval_words(*bounds, digits(metric))
            row["seeds"] = "-" if method == IDENTITY else len({r["seed"] for r in runs})
            name = to_paper.get(method)
            published = {metric: table.value(paper[dataset], name, metric) if paper[dataset] and name else None
                         for metric in paper_metrics}
            for metric in paper_metrics:
                ours = [r["metrics"][metric] for r in runs if metric in r["metrics"]]
                row[f"Δ {column(metric)}"] = difference_cell(sum(ours) / len(ours) if ours else None,
                                                             published[metric], digits(metric))
            for metric in paper_metrics:
                row[column(metric, paper=True)] = published_cell(published[metric], digits(metric))
            out.append(row)
            statuses.append(status_words(mrows))
    frame = pd.DataFrame(out)
    if any(statuses):
        frame[STATUS] = statuses
    return frame


# -- the style grid ---------------------------------------------------------------------------------

def split_columns(grid: torch.Tensor, tile: int, styles: int, gap: int = 4) -> torch.Tensor:
    """A composed grid (``make_grid``, padding 2; columns: the source, then ``styles`` per target
    domain) with a white ``gap`` after the source column and after each target's group; unchanged
    when its width does not fit that layout."""
    step = tile + 2
    columns = (grid.shape[-1] - 2) // step
    if (grid.shape[-1] - 2) % step or (columns - 1) % styles or columns <= 1:
        return grid
    cuts = [step * c for c in range(1, columns, styles)]
    white = torch.full((*grid.shape[:-1], gap), 255, dtype=grid.dtype)
    pieces = [grid[..., a:b] for a, b in zip([0, *cuts], [*cuts, grid.shape[-1]])]
    return torch.cat([p for piece in pieces for p in (piece, white)][:-1], dim=-1)


def style_columns(tile: int, styles: int, domains: list[str], gap: int = 4) -> list[tuple[str, int, int]]:
    """Titles and pixel spans of the columns of a :func:`split_columns` grid: the source, then a
    group of ``styles`` columns per target domain."""
    step, out = tile + 2, []
    for group, title in enumerate(["source", *[f"to {d}" for d in domains]]):
        first = 0 if group == 0 else 1 + (group - 1) * styles
        last = 0 if group == 0 else first + styles - 1
        x0 = 2 + first * step + gap * group  # a gap after the source and after each earlier group
        out.append((title, x0, 2 + last * step + tile + gap * group))
    return out


def style_grid(rows: list[Row], methods: list[str], tile: int | None, out_path: Path,
               styles: int | None = None, domains: list[str] | None = None) -> list[str]:
    """Every method's ``grid`` sample (its first seed) stacked top to bottom (target-domain groups
    set apart when ``tile`` and ``styles`` are known), enlarged (nearest) so that tiles are at least
    ``GRID_TILE`` pixels, each block named on its left and the columns titled (source, then each
    target domain) when the layout is known; returns the methods shown. ``rows``: the rows of one
    task and dataset."""
    grids, labels, split = [], [], False
    for method in methods:
        path = first_sample(rows, method, "samples/grid_00.png")
        if path is None:
            continue
        image = read_rgb(path)
        if tile and styles:
            before = image.shape[-1]
            image = split_columns(image, tile, styles)
            split = image.shape[-1] != before
        if grids and image.shape != grids[0].shape:
            continue
        grids.append(image)
        labels.append(method)
    if not grids:
        return []
    gap = torch.full((3, 8, grids[0].shape[-1]), 255, dtype=torch.uint8)
    parts = [p for g in grids for p in (g, gap)][:-1]
    factor = nearest_factor(tile or GRID_TILE, GRID_TILE)
    stacked = upscale_nearest(torch.cat(parts, dim=1)[None], factor)[0]
    block = grids[0].shape[1]
    row_spans = [(m, i * (block + 8) * factor, (i * (block + 8) + block) * factor) for i, m in enumerate(labels)]
    columns = []
    if split and domains and len(style_columns(tile, styles, domains)) == 1 + len(domains):
        columns = [(t, x0 * factor, x1 * factor) for t, x0, x1 in style_columns(tile, styles, domains)]
    save_grid(annotate(stacked, row_spans, columns), out_path)
    return labels


def grid_caption(labels: list[str], domains: list[str] | None, styles: int | None) -> str:
    order = f" ({', '.join(domains)})" if domains else ""
    per = f"{styles} latent styles" if styles else "a few latent styles"
    return (f"Blocks, top to bottom: {', '.join(labels)} (first seed). In each block, a row per source "
            f"domain{order}, its first validation image; columns: the source, then {per} for every "
            f"target domain in the same order (the source's own domain included), each group set "
            f"apart by a wider gap; the same style codes in every row and every block.")


def grid_styles(rows: list[Row]) -> int | None:
    """The ``grid_styles`` option of the finished runs (from their stored config), if readable."""
    for r in rows:
        path = r.directory / "config.yaml"
        if r.finished and r.method != IDENTITY and path.is_file():
            return (load_yaml(path.read_text()) or {}).get("task", {}).get("options", {}).get("grid_styles")
    return None


# -- the section ---------------------------------------------------------------------------------------

@register_layout("multi_modal")
def table2_section(ctx: ReportContext, task: Component) -> list[str]:
    """Markdown lines for one task: heading, warnings, table, footer, a style grid per dataset."""
    rows = ctx.rows_of(task.label)
    if not rows:
        return []
    recs = [r.record for r in rows if r.finished]
    datasets = [d for d in ctx.suite.datasets if any(r.dataset == d.label for r in rows)]
    table = suite_table(ctx.suite, task)
    paper = {d.label: dataset_paper_name(d, table) for d in datasets}
    method_order = [m.label for m in ctx.suite.methods]
    title = f" (layout of {table.title})" if table else ""
    lines = [f"## {task.label}{title}", ""]
    lines += table_warnings(recs)
    frame = dataset_table(rows, [d.label for d in datasets], method_order, paper, table,
                          paper_methods(ctx.suite.methods, table))
    lines += [markdown_table(frame), ""]
    lines += ["Rows: dataset x method; `identity` scores each dataset's validation images themselves "
              "(FID of real images, the structure score of real layouts; diversity is undefined "
              f"for copies: {NOT_SCORED}). FID: lower is better; LPIPS and L1 diversity (the diversity "
              "of the outputs of one source; L1: mean absolute pixel difference of two outputs, "
              "pixels in [0, 1], no network): higher is more diverse; structure score: higher keeps "
              "the source layout."
              + (" `status`: why a row has no (or not every) result." if STATUS in frame else ""), ""]
    note = paper_note(table, paper)
    if note:
        lines += [note, ""]
    if any(paper.values()) and (flags := protocol_flags(ctx.suite, table, split="val")):
        lines += [flags, ""]
    for d in datasets:
        drecs = [r.record for r in rows if r.dataset == d.label and r.finished]
        lines += protocol_footer(drecs, f"Protocol ({d.label})")
    for d in datasets:
        drows = [r for r in rows if r.dataset == d.label]
        trained = [r.record for r in drows if r.finished and r.method != IDENTITY]
        protocol = trained[0].get("protocol", {}) if trained else {}
        resolution, styles = protocol.get("resolution"), grid_styles(drows)
        grid_path = ctx.grid_dir / f"{task.label}_{d.label}_styles.png"
        labels = style_grid(drows, method_order, int(resolution[-1]) if resolution else None, grid_path, styles,
                            protocol.get("domains"))
        if labels:
            lines += [f"![{task.label} {d.label} styles]({ctx.suite.name}/{grid_path.name})", "",
                      f"*{d.label}:* " + grid_caption(labels, protocol.get("domains"), styles), ""]
    return lines
