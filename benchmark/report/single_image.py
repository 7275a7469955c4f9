"""The layout of the single-image task (SinCUT): per dataset, a score table (SIFID to the target,
the structure score and LPIPS to the source; mean ± std over seeds) with what each score rewards,
the full-resolution outputs of every method beside the source and the target, and zoomed crops."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ..config import Component
from .format import (NOT_SCORED, STATUS, markdown_table, mean_std, protocol_footer, status_words,
                     table_warnings, with_status)
from .grids import annotate, read_rgb, save_grid, upscale_nearest
from .layouts import ReportContext, register_layout
from .results import IDENTITY, Row, first_sample

METRICS = {
    "SIFID": ("SIFID to target (lower)", 2,
              "single-image FID of the output against the target image: rewards the target's local "
              "colours and textures (early Inception statistics over positions)"),
    "structure": ("structure to source (higher)", 3,
                  "correlation of the blurred edge maps of output and source: rewards keeping the source's "
                  "layout (where its edges are), whatever the colours"),
    "LPIPS": ("LPIPS to source (lower)", 3,
              "perceptual distance of the output to the source: rewards staying close to the input in "
              "content and appearance, so a good translation does not reach 0 (read it with SIFID)"),
}
GAP = 6
ZOOM_WINDOW = 48
ZOOM_FACTOR = 4


def score_table(rows: list[Row], labels: list[str]) -> pd.DataFrame:
    """Rows: ``labels`` (identity first); columns: the metrics as 'mean ± std' over seeds, seeds,
    then ``status`` when a row is missing (or missing seeds)."""
    out = []
    present = {m for r in rows if r.finished for m in r.record["metrics"]}
    metrics = [m for m in METRICS if m in present] + sorted(present - set(METRICS))
    for label in labels:
        runs = [r.record for r in rows if r.method == label and r.finished]
        row = {"method": label}
        for metric in metrics:
            values = pd.Series([r["metrics"][metric] for r in runs if metric in r["metrics"]], dtype=float)
            name, digits, _ = METRICS.get(metric, (metric, 3, ""))
            row[name] = NOT_SCORED if values.empty else mean_std(values, digits)
        row["seeds"] = "-" if label == IDENTITY else len({r["seed"] for r in runs})
        out.append(row)
    frame = pd.DataFrame(out)
    return with_status(frame, [status_words([r for r in rows if r.method == m]) for m in labels])


def _first_sample(rows: list[Row], method: str, name: str) -> torch.Tensor | None:
    """``samples/<name>_00.png`` of the method's lowest finished seed that has it."""
    path = first_sample(rows, method, f"samples/{name}_00.png")
    return None if path is None else read_rgb(path)


def side_by_side(images: list[torch.Tensor], gap: int = GAP) -> torch.Tensor:
    """uint8 (3, H_i, W_i) images in one row, top-aligned on white, ``gap`` pixels apart."""
    height = max(img.shape[1] for img in images)
    parts = []
    for img in images:
        pad = torch.full((3, height, img.shape[2]), 255, dtype=torch.uint8)
        pad[:, :img.shape[1]] = img
        parts += [pad, torch.full((3, height, gap), 255, dtype=torch.uint8)]
    return torch.cat(parts[:-1], dim=2)


def zoom_windows(source: torch.Tensor, size: int = ZOOM_WINDOW) -> list[tuple[int, int]]:
    """Top-left corners of two ``size`` windows of the source: the one with the most edge energy
    (gradient magnitude of the luminance, summed) and the centre one."""
    lum = source.float().mean(0, keepdim=True)[None]
    gx, gy = lum[..., :, 1:] - lum[..., :, :-1], lum[..., 1:, :] - lum[..., :-1, :]
    energy = F.pad(gx.abs(), (0, 1)) + F.pad(gy.abs(), (0, 0, 0, 1))
    size = min(size, source.shape[1], source.shape[2])
    sums = F.avg_pool2d(energy, size, stride=4)[0, 0]
    iy, ix = divmod(int(sums.argmax()), sums.shape[1])
    centre = ((source.shape[1] - size) // 2, (source.shape[2] - size) // 2)
    return [(iy * 4, ix * 4), centre]


def zoomed_crops(images: list[torch.Tensor], windows: list[tuple[int, int]], size: int = ZOOM_WINDOW,
                 factor: int = ZOOM_FACTOR) -> torch.Tensor:
    """For each window a row of the same crop of every image (the source's size), enlarged
    (nearest) by ``factor``; rows stacked with a gap."""
    rows = []
    for y, x in windows:
        crops = [upscale_nearest(img[:, y:y + size, x:x + size], factor) for img in images]
        rows += [side_by_side(crops), torch.full((3, GAP, 0), 255, dtype=torch.uint8)]
    width = max(r.shape[2] for r in rows)
    rows = [torch.cat([r, torch.full((3, r.shape[1], width - r.shape[2]), 255, dtype=torch.uint8)], 2)
            for r in rows]
    return torch.cat(rows[:-1], dim=1)


def figures(rows: list[Row], methods: list[str], out_dir: Path, stem: str) -> tuple[Path, Path, list[str]] | None:
    """The full-resolution row (source, target, each method's output of its first seed) and the zoomed
    crops (source and outputs); returns their paths and the methods shown."""
    source = _first_sample(rows, IDENTITY, "input")
    target = _first_sample(rows, IDENTITY, "target")
    if source is None or target is None:
        return None
    outputs, shown = [], []
    for method in methods:
        out = _first_sample(rows, method, "output")
        if out is not None and out.shape == source.shape:
            outputs.append(out)
            shown.append(method)
    full_path, zoom_path = out_dir / f"{stem}_full.png", out_dir / f"{stem}_zoom.png"
    full = [source, target, *outputs]
    save_grid(annotate(side_by_side(full), [], column_spans(["source", "target", *shown], full)), full_path)
    windows = zoom_windows(source)
    zoom = zoomed_crops([source, *outputs], windows)
    side = min(ZOOM_WINDOW, source.shape[1], source.shape[2]) * ZOOM_FACTOR
    crops = [torch.zeros(3, side, side)] * (1 + len(outputs))
    row_spans = [(name, i * (side + GAP), i * (side + GAP) + side) for i, name in enumerate(["edges", "centre"])]
    save_grid(annotate(zoom, row_spans, column_spans(["source", *shown], crops)), zoom_path)
    return full_path, zoom_path, shown


def column_spans(titles: list[str], images: list[torch.Tensor], gap: int = GAP) -> list[tuple[str, int, int]]:
    """Each title over its image of a :func:`side_by_side` row."""
    spans, x = [], 0
    for title, img in zip(titles, images):
        spans.append((title, x, x + img.shape[2]))
        x += img.shape[2] + gap
    return spans


@register_layout("single_image")
def single_image_section(ctx: ReportContext, task: Component) -> list[str]:
    """Markdown lines for one task: per dataset a heading, warnings, the score table, what each score
    rewards, the protocol, the full-resolution outputs and the zoomed crops."""
    lines = []
    method_labels = [m.label for m in ctx.suite.methods]
    for dataset in ctx.suite.datasets:
        rows = ctx.rows_of(task.label, dataset.label)
        if not rows:
            continue
        recs = [r.record for r in rows if r.finished]
        lines += [f"## {task.label} / {dataset.label} (single-image translation, SinCUT)", ""]
        lines += table_warnings(recs)
        labels = [m for m in [IDENTITY, *method_labels] if any(r.method == m for r in rows)]
        table = score_table(rows, labels)
        lines += [markdown_table(table), ""]
        present = {m for r in recs for m in r["metrics"]}
        lines += ["What each score rewards: " + "; ".join(
            f"**{METRICS[m][0]}**: {METRICS[m][2]}" for m in METRICS if m in present or not recs) + ". "
                  "`identity` scores the source itself as the output (structure 1 and LPIPS 0 by "
                  "definition; its SIFID is the distance of the untranslated painting to the target)."
                  + (f" `{STATUS}`: why a row has no (or not every) result." if STATUS in table else ""), ""]
        lines += protocol_footer(recs)
        made = figures(rows, [m for m in labels if m != IDENTITY], ctx.grid_dir, f"{task.label}_{dataset.label}")
        if made:
            full, zoom, shown = made
            lines += [f"![{task.label} {dataset.label} full resolution]({ctx.suite.name}/{full.name})", "",
                      "Full resolution, left to right: source, target"
                      + "".join(f", {m}" for m in shown) + " (first seed of each).", "",
                      f"![{task.label} {dataset.label} zoomed crops]({ctx.suite.name}/{zoom.name})", "",
                      f"Zoomed crops ({ZOOM_WINDOW} x {ZOOM_WINDOW} px, x{ZOOM_FACTOR} nearest), left to right: "
                      "source" + "".join(f", {m}" for m in shown) + "; top: the source's window with the "
                      "most edges, bottom: the centre.", ""]
    return lines
