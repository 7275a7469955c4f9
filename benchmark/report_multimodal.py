"""The report section of tasks with ``report_layout = 'dataset_rows'`` (the multi-modal task), laid
out as Hneg-SRC's Table 2: one table per task, a row per dataset x method, the latent- and
reference-guided FID / LPIPS (+ the structure score), and the published numbers in their own
columns for the datasets the paper reports. Below the table, per dataset, the sources x targets
style grid of every method."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torchvision.io import read_image, write_png

from .config import Component, Suite
from .reference import PAPER_TABLES, PaperTable
from .report import (NOT_SCORED, dataset_paper_name, nearest_factor, paper_note, paper_rows,
                     protocol_footer, untrained_notes, upscale_nearest)
from .runner import runs_dir
from .core.yaml_io import load_yaml

METRICS = ["latent_FID", "latent_LPIPS", "reference_FID", "reference_LPIPS", "structure_score"]
GRID_TILE = 96
"""Grid tiles are enlarged (nearest) to at least this many pixels a side."""


def column(metric: str, paper: bool = False) -> str:
    return ("paper " if paper else "") + metric.replace("_", " ")


def digits(metric: str) -> int:
    return 2 if metric.endswith("FID") else 3


def mean_std(values: pd.Series, metric: str) -> str:
    d = digits(metric)
    if len(values) == 1:
        return f"{values.iloc[0]:.{d}f}"
    return f"{values.mean():.{d}f} ± {values.std(ddof=1):.{d}f}"


def dataset_table(records: list[dict], datasets: list[str], method_order: list[str],
                  paper: dict[str, str | None], table: PaperTable | None) -> pd.DataFrame:
    """Rows: dataset x (identity, then methods in suite order); columns: dataset, method, the
    metrics as mean ± std over seeds, seeds, then the paper's numbers (only when a dataset maps to
    the paper). ``paper``: dataset label -> the paper's dataset name or None."""
    present = {m for r in records for m in r["metrics"]}
    metrics = [m for m in METRICS if m in present] + sorted(present - set(METRICS))
    paper_metrics = list(table.metrics) if table is not None and any(paper.values()) else []
    to_paper = paper_rows(records, table) if paper_metrics else {}
    rows = []
    for dataset in datasets:
        recs = [r for r in records if r["dataset"] == dataset]
        for method in [m for m in ["identity", *method_order] if any(r["method"] == m for r in recs)]:
            runs = [r for r in recs if r["method"] == method]
            row = {"dataset": dataset, "method": method}
            for metric in metrics:
                values = pd.Series([r["metrics"][metric] for r in runs if metric in r["metrics"]], dtype=float)
                undefined = method == "identity" and metric.endswith("LPIPS")  # K copies of the input
                row[column(metric)] = NOT_SCORED if values.empty or undefined else mean_std(values, metric)
            row["seeds"] = "-" if method == "identity" else len({r["seed"] for r in runs})
            name = to_paper.get(method)
            for metric in paper_metrics:
                value = table.value(paper[dataset], name, metric) if paper[dataset] and name else None
                row[column(metric, paper=True)] = NOT_SCORED if value is None else f"{value:.{digits(metric)}f}"
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


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


def style_grid(suite: Suite, task: str, dataset: str, methods: list[str], tile: int | None,
               out_path: Path, styles: int | None = None) -> list[str]:
    """Every method's ``grid`` sample (its first seed) stacked top to bottom (target-domain groups
    set apart when ``tile`` and ``styles`` are known), enlarged (nearest) so that tiles are at least
    ``GRID_TILE`` pixels; returns the methods shown."""
    base = runs_dir(suite) / task / dataset
    grids, labels = [], []
    for method in methods:
        seeds = sorted((base / method).glob("seed*/samples/grid_00.png"))
        if not seeds:
            continue
        image = read_image(str(seeds[0]))[:3]
        if tile and styles:
            image = split_columns(image, tile, styles)
        if grids and image.shape != grids[0].shape:
            continue
        grids.append(image)
        labels.append(method)
    if not grids:
        return []
    gap = torch.full((3, 8, grids[0].shape[-1]), 255, dtype=torch.uint8)
    parts = [p for g in grids for p in (g, gap)][:-1]
    stacked = upscale_nearest(torch.cat(parts, dim=1)[None], nearest_factor(tile or GRID_TILE, GRID_TILE))[0]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_png(stacked, str(out_path))
    return labels


def grid_caption(labels: list[str], domains: list[str] | None, styles: int | None) -> str:
    order = f" ({', '.join(domains)})" if domains else ""
    per = f"{styles} latent styles" if styles else "a few latent styles"
    return (f"Blocks, top to bottom: {', '.join(labels)} (first seed). In each block, a row per source "
            f"domain{order}, its first validation image; columns: the source, then {per} for every "
            f"target domain in the same order (the source's own domain included), each group set "
            f"apart by a wider gap; the same style codes in every row and every block.")


def _grid_styles(suite: Suite, recs: list[dict]) -> int | None:
    """The ``grid_styles`` option of the runs (from their stored config), if readable."""
    for r in recs:
        path = runs_dir(suite) / r["task"] / r["dataset"] / r["method"] / f"seed{r['seed']}" / "config.yaml"
        if path.is_file():
            return (load_yaml(path.read_text()) or {}).get("task", {}).get("options", {}).get("grid_styles")
    return None


# -- the section ---------------------------------------------------------------------------------------

def dataset_rows_section(suite: Suite, task: Component, records: list[dict], report_dir: Path) -> list[str]:
    """Markdown lines for one task: heading, warnings, table, footer, a style grid per dataset."""
    recs = [r for r in records if r["task"] == task.label]
    if not recs:
        return []
    datasets = [d for d in suite.datasets if any(r["dataset"] == d.label for r in recs)]
    table = PAPER_TABLES.get(task.cls.registry_name)
    paper = {d.label: dataset_paper_name(d, table) for d in datasets}
    method_order = [m.label for m in suite.methods]
    title = f" (layout of {table.title})" if table else ""
    lines = [f"## {task.label}{title}", ""]
    untrained = untrained_notes(recs)
    if untrained:
        lines += [f"**Warning: {untrained}.** Numbers that depend on it are not comparable with "
                  "published ones.", ""]
    frame = dataset_table(recs, [d.label for d in datasets], method_order, paper, table)
    lines += [markdown(frame), ""]
    lines += ["Rows: dataset x method; `identity` scores each dataset's validation images themselves "
              "(FID of real images, the structure score of real layouts; LPIPS diversity is undefined "
              f"for copies: {NOT_SCORED}). FID: lower is better; LPIPS (diversity of the outputs of "
              "one source): higher is more diverse; structure score: higher keeps the source layout.", ""]
    note = paper_note(table, paper)
    if note:
        lines += [note, ""]
    for d in datasets:
        drecs = [r for r in recs if r["dataset"] == d.label]
        lines += [f"Protocol ({d.label}): {protocol_footer(drecs)}.", ""]
    for d in datasets:
        drecs = [r for r in recs if r["dataset"] == d.label and r["method"] != "identity"]
        protocol = drecs[0].get("protocol", {}) if drecs else {}
        resolution, styles = protocol.get("resolution"), _grid_styles(suite, drecs)
        grid_path = report_dir / suite.name / f"{task.label}_{d.label}_styles.png"
        labels = style_grid(suite, task.label, d.label, method_order,
                            int(resolution[-1]) if resolution else None, grid_path, styles)
        if labels:
            lines += [f"![{task.label} {d.label} styles]({suite.name}/{grid_path.name})", "",
                      f"*{d.label}:* " + grid_caption(labels, protocol.get("domains"), styles), ""]
    return lines
