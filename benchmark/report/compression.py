"""The layout of the compression task, as Hneg-SRC's Table 3: per dataset, the teacher, the student
baseline (``none``) and the student + each method, with #Params, MACs, FID (and KID, mIoU where
scored) as mean ± std over seeds, the published numbers in their own columns for the paper's
datasets, and an image grid (input, teacher, each student)."""
from __future__ import annotations

import pandas as pd

from ..config import Component
from ..core.yaml_io import load_yaml
from ..reference import PaperTable
from .format import (INTERVAL_BOUNDS, NOT_SCORED, STATUS, interval_words, markdown_table, mean_std, protocol_footer, uninformative,
                     status_words, table_warnings)
from .grids import labelled_grid, read_rgb, save_grid
from .layouts import ReportContext, register_layout
from .paper import dataset_paper_name, difference_cell, paper_methods, paper_note, published_cell, suite_table
from .results import IDENTITY, Row, first_sample, results_table

TEACHER = "teacher"
METRICS = ["params_M", "MACs_G", "FID", "FID_inf", "KIDx100", "KIDx100_std", "mIoU", "pixAcc", "clsAcc", "maskIoU",
           "largest_FID", "largest_mIoU", "largest_maskIoU", "gap_to_teacher_L1", "largest_gap_to_teacher_L1"]
NAMES = {"params_M": "#Params (M)", "MACs_G": "MACs (G)", "largest_FID": "FID (largest)",
         "largest_mIoU": "mIoU (largest)", "largest_maskIoU": "maskIoU (largest)",
         "gap_to_teacher_L1": "L1 to teacher", "largest_gap_to_teacher_L1": "L1 to teacher (largest)"}
DIGITS = {"params_M": 3, "MACs_G": 3, "gap_to_teacher_L1": 4, "largest_gap_to_teacher_L1": 4}
GRID_TILE = 96


def column(metric: str, paper: bool = False) -> str:
    return ("paper " if paper else "") + NAMES.get(metric, metric)


def _values(records: list[dict], metric: str, prefix: str = "") -> pd.Series:
    return pd.Series([r["metrics"][prefix + metric] for r in records if prefix + metric in r["metrics"]],
                     dtype=float)


def dataset_table(rows: list[Row], method_order: list[str], paper_name: str | None,
                  table: PaperTable | None, to_paper: dict[str, str | None]) -> pd.DataFrame:
    """Rows of one dataset: the teacher (its ``teacher_*`` metrics, one per seed, from the runs of
    the first method that has them), the identity row, then each method's exported student."""
    finished = [r.record for r in rows if r.finished and r.method != IDENTITY]
    present = {m for r in finished for m in r["metrics"]}
    metrics = [m for m in METRICS if m in present or f"teacher_{m}" in present]
    paper_metrics = list(table.metrics) if table is not None and paper_name else []
    out, statuses = [], []

    macs = _values(finished, "MACs_G", "teacher_")
    in_mega = not paper_metrics and not macs.empty and macs.max() < 0.1   # small images: MACs in millions

    def add(name: str, records: list[dict], prefix: str, seeds, paper_row: str | None, status: str) -> None:
        row = {"model": name}
        for metric in metrics:
            values = _values(records, metric, prefix)
            name_of = column(metric)
            if metric == "MACs_G" and in_mega:
                values, name_of = values * 1000, "MACs (M)"
            row[name_of] = NOT_SCORED if values.empty else mean_std(values, DIGITS.get(metric, 2)) + \
                interval_words(*(_values(records, metric + b, prefix) for b in INTERVAL_BOUNDS),
                               DIGITS.get(metric, 2))
        row["seeds"] = seeds
        published = {metric: table.value(paper_name, paper_row, metric) if paper_row else None
                     for metric in paper_metrics}
        for metric in paper_metrics:
            values = _values(records, metric, prefix)
            row[f"Δ {column(metric)}"] = difference_cell(None if values.empty else float(values.mean()),
                                                         published[metric], DIGITS.get(metric, 2))
        for metric in paper_metrics:
            row[column(metric, paper=True)] = published_cell(published[metric], DIGITS.get(metric, 2))
        out.append(row)
        statuses.append(status)

    teacher_source = next((m for m in method_order if any(r["method"] == m for r in finished)), None)
    teacher_runs = [r for r in finished if r["method"] == teacher_source]
    if teacher_runs:
        add(TEACHER, teacher_runs, "teacher_", len({r["seed"] for r in teacher_runs}), TEACHER, "")
    identity = [r for r in rows if r.method == IDENTITY]
    if identity:
        add(IDENTITY, [r.record for r in identity if r.finished], "", "-", None, status_words(identity))
    for method in method_order:
        mrows = [r for r in rows if r.method == method]
        if not mrows:
            continue
        runs = [r.record for r in mrows if r.finished]
        add(f"student + {method}" if method != "none" else "student (none)", runs, "",
            len({r["seed"] for r in runs}), to_paper.get(method), status_words(mrows))
    frame = pd.DataFrame(out)
    if any(statuses):
        frame[STATUS] = statuses
    return frame


def comparison_grid(rows: list[Row], methods: list[str], out_path) -> list[str]:
    """Columns: input, teacher, then each method's student (first seed); a row per test sample."""
    columns, labels = [], []
    source = next((m for m in methods if first_sample(rows, m, "samples/input_00.png")), None)
    if source is None:
        return []
    count = 0
    while first_sample(rows, source, f"samples/input_{count:02d}.png"):
        count += 1
    for label, method, name in [("input", source, "input"), ("teacher", source, "teacher"),
                                *[(m, m, "output") for m in methods]]:
        images = [first_sample(rows, method, f"samples/{name}_{i:02d}.png") for i in range(count)]
        if any(p is None for p in images):
            continue
        columns.append([read_rgb(p) for p in images])
        labels.append(label)
    if not columns or any(c[0].shape != columns[0][0].shape for c in columns):
        return []
    cells = [[column[i] for column in columns] for i in range(count)]  # a row per test image
    save_grid(labelled_grid(cells, [f"test image {i + 1}" for i in range(count)], labels), out_path)
    return labels


def teacher_words(rows: list[Row]) -> str | None:
    """The teacher generator of the finished runs, from their stored config: 'ResNet generator, 9
    residual blocks, ngf 64' (and where it came from when loaded); None when no config is readable."""
    found = set()
    for r in rows:
        path = r.directory / "config.yaml"
        if not (r.finished and r.method != IDENTITY and path.is_file()):
            continue
        teacher = ((load_yaml(path.read_text()) or {}).get("task", {}).get("options", {}).get("teacher") or {})
        if "n_blocks" in teacher and "ngf" in teacher:
            loaded = f", loaded from {teacher['checkpoint']}" if teacher.get("checkpoint") else ""
            found.add(f"ResNet generator, {teacher['n_blocks']} residual blocks, ngf {teacher['ngf']}{loaded}")
    return "; ".join(sorted(found)) or None


@register_layout("compression")
def table3_section(ctx: ReportContext, task: Component) -> list[str]:
    rows = ctx.rows_of(task.label)
    if not rows:
        return []
    table = suite_table(ctx.suite, task)
    method_order = [m.label for m in ctx.suite.methods]
    to_paper = paper_methods(ctx.suite.methods, table)
    title = f" (layout of {table.title})" if table else ""
    lines = [f"## {task.label}{title}", ""]
    lines += table_warnings([r.record for r in rows if r.finished])
    paper, teachers = {}, {}
    for d in ctx.suite.datasets:
        drows = [r for r in rows if r.dataset == d.label]
        if not drows:
            continue
        paper[d.label] = dataset_paper_name(d, table)
        frame = dataset_table(drows, method_order, paper[d.label], table, to_paper)
        teachers[d.label] = teacher_words(drows)
        dropped = uninformative(results_table([r.record for r in drows if r.finished]))
        frame = frame.drop(columns=[c for c in dropped if c in frame.columns])
        lines += [f"### {d.label}", "", markdown_table(frame), ""]
        lines += [f"{words}." for words in dropped.values()] + ([""] if dropped else [])
        records = [r.record for r in drows if r.finished and r.method != IDENTITY]
        lines += protocol_footer(records, f"Protocol ({d.label})")
        grid_path = ctx.grid_dir / f"{task.label}_{d.label}_students.png"
        labels = comparison_grid(drows, method_order, grid_path)
        if labels:
            lines += [f"![{task.label} {d.label}]({ctx.suite.name}/{grid_path.name})", "",
                      f"*{d.label}:* columns {', '.join(labels)} (first seed; each student is the "
                      "sub-network its search chose); a row per test image.", ""]
    described = {k: v for k, v in teachers.items() if v}
    if len(set(described.values())) == 1:
        teacher = next(iter(described.values()))
    elif described:
        teacher = "; ".join(f"{k}: {v}" for k, v in described.items())
    else:
        teacher = "its generator as configured in the runs"
    lines += [f"Rows: the teacher ({teacher}; its scores from each seed's run), `identity` (the "
              "test inputs scored as outputs), the once-for-all student with no patch loss (`none`: plain "
              "Fast GAN Compression) and with each method's loss, each exported at the sub-network its "
              "evolution search chose under the MACs budget on held-out training images. #Params and "
              "MACs (torchprofile, at the test resolution) of that sub-network. `(largest)`: the "
              "supernet's largest sub-network (all channels at their widest), scored the same way: a "
              "comparison of the trained supernets that does not depend on the search's choice. FID / "
              "KID: lower is better; mIoU / maskIoU: higher is better.", ""]
    note = paper_note(table, paper)
    if note:
        lines += [note, ""]
    return lines
