"""Results table (pandas, derived from every run's metrics.json) and the markdown report."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from torchvision.io import read_image, write_png
from torchvision.utils import make_grid

from .config import Component, Suite
from .reference import PAPER_TABLES, PaperTable, paper_dataset
from .runner import runs_dir

METRIC_ORDER = ["FID", "KIDx100", "mIoU", "pixAcc", "clsAcc", "maskIoU"]
METRIC_NOTES = {"FID": "lower is better", "KIDx100": "KID x 100, lower is better",
                "mIoU / pixAcc / clsAcc / maskIoU": "segmentation of the outputs against the input's "
                "labels, in percent, higher is better (the footer names the segmenter and, for a "
                "segmenter trained here, its ceiling on real target images)"}

NOT_SCORED = "–"
"""A cell with no number: not scored, or no published row."""


def metric_notes(records: list[dict]) -> dict[str, str]:
    """The notes of METRIC_NOTES whose metrics the records hold (all of them when there are none)."""
    present = {m for r in records for m in r["metrics"]}
    return {k: v for k, v in METRIC_NOTES.items() if not records or present & set(k.split(" / "))}


def load_records(suite: Suite) -> list[dict]:
    root = runs_dir(suite)
    return [json.loads(p.read_text()) for p in sorted(root.rglob("metrics.json"))] if root.exists() else []


def results_table(records: list[dict]) -> pd.DataFrame:
    """One row per run and metric: suite, task, dataset, method, seed, metric, value."""
    rows = [{"task": r["task"], "dataset": r["dataset"], "method": r["method"], "seed": r["seed"],
             "metric": name, "value": value}
            for r in records for name, value in r["metrics"].items()]
    return pd.DataFrame(rows, columns=["task", "dataset", "method", "seed", "metric", "value"])


def _mean_std(values: pd.Series) -> str:
    digits = 3 if values.abs().max() < 1 else 2  # LPIPS-like scores need three decimals
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def summary_table(table: pd.DataFrame, method_order: list[str]) -> pd.DataFrame:
    """Rows: methods (identity first, then suite order); columns: metrics as 'mean ± std' over seeds."""
    grouped = table.groupby(["method", "metric"])["value"]
    cells = grouped.apply(_mean_std).unstack("metric")
    seeds = table.groupby("method")["seed"].nunique()
    metrics = [m for m in METRIC_ORDER if m in cells.columns] + \
        sorted(c for c in cells.columns if c not in METRIC_ORDER)
    order = [m for m in ["identity", *method_order] if m in cells.index]
    out = cells.loc[order, metrics].copy()
    out.insert(len(out.columns), "seeds", [int(seeds[m]) if m != "identity" else "-" for m in order])
    return out


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| method | " + " | ".join(frame.columns) + " |"
    rule = "|---|" + "---|" * len(frame.columns)
    rows = [f"| {idx} | " + " | ".join(str(v) for v in row) + " |" for idx, row in frame.iterrows()]
    return "\n".join([header, rule, *rows])


def nearest_factor(side: int, min_side: int = 128) -> int:
    """The integer factor that enlarges ``side`` pixels to at least ``min_side`` (1 if already)."""
    return max(1, -(-min_side // side))


def upscale_nearest(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(..., H, W) -> (..., H * factor, W * factor), each pixel repeated (no smoothing)."""
    return images.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2) if factor > 1 else images


def image_grid(suite: Suite, task: str, dataset: str, methods: list[str], out_path: Path) -> list[str] | None:
    """Inputs in the first row, then one row per method's outputs (its first seed)."""
    base = runs_dir(suite) / task / dataset
    inputs = sorted((base / "identity" / "samples").glob("input_*.png"))
    if not inputs:
        return None
    rows, labels = [[read_image(str(p)) for p in inputs]], ["input"]
    for method in methods:
        seeds = sorted((base / method).glob("seed*/samples"))
        outputs = sorted(seeds[0].glob("output_*.png")) if seeds else []
        if len(outputs) >= len(inputs):
            rows.append([read_image(str(p)) for p in outputs[: len(inputs)]])
            labels.append(method)
    tiles = torch.stack([img[:3] for row in rows for img in row])
    tiles = upscale_nearest(tiles, nearest_factor(tiles.shape[-1]))  # small images: keep details visible
    grid = make_grid(tiles, nrow=len(inputs), padding=2, pad_value=255)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_png(grid, str(out_path))
    return labels


def paper_rows(records: list[dict], table: PaperTable) -> dict[str, str | None]:
    """Method label -> the paper's method name (None: not in the paper; identity never is)."""
    out = {}
    for r in records:
        if r["method"] != "identity":
            out[r["method"]] = table.paper_method(r.get("method_type", ""), r.get("preset", ""))
    return out


def mapping_words(table: PaperTable) -> str:
    parts = [f"`{kind}`{'' if preset == '*' else f' (preset `{preset}`)'} -> {name}"
             for (kind, preset), name in table.method_rows.items()]
    return ", ".join(parts)


def paper_note(table: PaperTable | None, paper: dict[str, str | None]) -> str:
    if table is None:
        return ""
    names = [d.capitalize() for d in table.datasets()]
    known = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
    mapped = {d: p for d, p in paper.items() if p}
    where = ", ".join(f"`{p.relative_to(p.parents[2])}`" for p in table.paths)
    if not mapped:
        return (f"Published numbers ({table.title}) exist only for {known}; no dataset here is one of "
                "them, so the table has no paper columns (a real dataset maps to one by its label or "
                "by `paper_dataset:` in the config).")
    pairs = ", ".join(f"`{d}` is the paper's {p.capitalize()}" for d, p in mapped.items())
    return (f"Paper columns: {table.title} ({where}); published numbers exist only for {known}. "
            f"Datasets: {pairs}. Rows by method: {mapping_words(table)}; {NOT_SCORED} where the paper "
            f"has no such row. {table.note}: compare the rows with each other first.")


def published_cell(metric: str, value: float | None) -> str:
    """A published number as the papers print it: KID x 100 with three decimals, the rest with one."""
    return NOT_SCORED if value is None else f"{value:.{3 if metric == 'KIDx100' else 1}f}"


def with_paper_columns(summary: pd.DataFrame, records: list[dict], table: PaperTable,
                       paper_ds: str) -> pd.DataFrame:
    """``summary`` (rows: methods) with a ``paper <metric>`` column for each metric the paper reports
    on ``paper_ds``: the published value of the row's method (as printed), else NOT_SCORED."""
    published = table.load()
    published = published[published["dataset"] == paper_ds]
    metrics = [m for m in table.metrics if m in published.columns and published[m].notna().any()]
    to_paper = paper_rows(records, table)
    out = summary.copy()
    for metric in metrics:
        out[f"paper {metric}"] = [
            published_cell(metric, table.value(paper_ds, to_paper[m], metric) if to_paper.get(m) else None)
            for m in out.index]
    return out


def dataset_paper_name(dataset: Component, table: PaperTable | None) -> str | None:
    """The published dataset a suite dataset stands for under ``table`` (None: none, or no table)."""
    if table is None:
        return None
    return paper_dataset(dataset.label, dataset.cls.registry_name, dataset.paper_dataset, table)


def untrained_notes(records: list[dict]) -> str:
    """Words for every untrained backbone the records' protocols mention, with the methods using it."""
    found = {}
    for r in records:
        for key, value in r.get("protocol", {}).items():
            if isinstance(value, str) and "UNTRAINED" in value.upper():
                found.setdefault(f"{key}: {value}", []).append(r["method"])
    return "; ".join(f"{note} (used by {', '.join(sorted(set(m)))})" for note, m in found.items())


def protocol_footer(records: list[dict]) -> str:
    protocol = {}
    for r in records:
        for k, v in r.get("protocol", {}).items():
            protocol.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    parts = []
    for k, values in protocol.items():
        shown = ", ".join(sorted(v.strip('"') for v in values))
        parts.append(f"{k}: {shown}")
    steps = sorted({r["steps"] for r in records if r["method"] != "identity"})
    if steps:
        parts.append(f"training steps: {', '.join(map(str, steps))}")
    return "; ".join(parts)


def write_report(suite: Suite) -> Path:
    records = load_records(suite)
    report_dir = suite.output_dir / "reports"
    path = report_dir / f"{suite.name}.md"
    method_order = [m.label for m in suite.methods]
    lines = [f"# {suite.name}", ""]
    if suite.settings.description:
        lines += [suite.settings.description, ""]
    notes = "; ".join(f"{k}: {v}" for k, v in metric_notes(records).items())
    lines += [f"Config: `{suite.source}`. Numbers are mean ± std over seeds (one seed: the value)."
              + (f" {notes}." if notes else ""), ""]
    if not records:
        lines.append("No finished runs yet: run `python -m benchmark run` with this config first.")
    table = results_table(records)
    for task_component in suite.tasks:
        if getattr(task_component.cls, "report_layout", "per_dataset") == "dataset_rows":
            from .report_multimodal import dataset_rows_section  # imports this module's helpers
            lines += dataset_rows_section(suite, task_component, records, report_dir)
            continue
        task = task_component.label
        paper_table = PAPER_TABLES.get(task_component.cls.registry_name)
        for dataset_component in suite.datasets:
            dataset = dataset_component.label
            part = table[(table.task == task) & (table.dataset == dataset)]
            if part.empty:
                continue
            recs = [r for r in records if r["task"] == task and r["dataset"] == dataset]
            lines += [f"## {task} / {dataset}", ""]
            untrained = untrained_notes(recs)
            if untrained:
                lines += [f"**Warning: {untrained}.** Numbers that depend on it are not comparable with "
                          "published ones.", ""]
            paper_ds = dataset_paper_name(dataset_component, paper_table)
            summary = summary_table(part, method_order)
            if paper_ds:
                summary = with_paper_columns(summary, recs, paper_table, paper_ds)
            lines += [markdown_table(summary), ""]
            lines += [f"Protocol: {protocol_footer(recs)}. Rows: methods trained in this suite plus "
                      "`identity` (the input itself scored as the output).", ""]
            if paper_ds:
                lines += [paper_note(paper_table, {dataset: paper_ds}), ""]
            grid_path = report_dir / suite.name / f"{task}_{dataset}.png"
            labels = image_grid(suite, task, dataset, method_order, grid_path)
            if labels:
                lines += [f"![{task} {dataset} samples]({suite.name}/{grid_path.name})", "",
                          f"Rows, top to bottom: {', '.join(labels)}.", ""]
    failed = sorted(runs_dir(suite).rglob("error.log")) if runs_dir(suite).exists() else []
    failed = [p for p in failed if not (p.parent / "metrics.json").exists()]
    if failed:
        lines += ["## Unfinished runs", ""] + [f"- `{p.parent}`: see `{p}`" for p in failed] + [""]
    report_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    csv_path = report_dir / f"{suite.name}_results.csv"
    table.to_csv(csv_path, index=False)
    return path
