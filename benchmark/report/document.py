"""The report of a suite: ``<output_dir>/reports/<suite>.md`` (a section per task, in the layout
registered for the task, followed by its training curves), ``<suite>_results.csv`` and the image
grids and curve plots in ``reports/<suite>/``."""
from __future__ import annotations

from pathlib import Path

from ..config import Suite
from . import compression, multi_modal, per_dataset, single_image  # noqa: F401 - the built-in layouts register themselves
from .curves import curves_section
from .layouts import ReportContext, layout_for
from .format import uninformative
from .results import csv_table, dataset_identities, expected_rows, results_table
from .selection import selection_section

METRIC_NOTES = [
    ("FID", ("FID",), "lower is better"),
    ("KIDx100", ("KIDx100",), "KID x 100, lower is better"),
    ("[low, high] after FID and KID", ("FID_ci_low", "KIDx100_ci_low"), "a bootstrap confidence interval over "
     "the test images (resamples, level, seed and which images were resampled in each table's protocol "
     "list; with several seeds the bounds are averaged over seeds)"),
    ("KIDx100_std", ("KIDx100_std",), "the standard deviation of KID x 100 over its random subsets"),
    ("FID_inf", ("FID_inf",), "FID extrapolated to infinitely many images (Chong & Forsyth, CVPR 2020), "
     "reported for small test sets"),
    ("mIoU / pixAcc / clsAcc / maskIoU", ("mIoU", "pixAcc", "clsAcc", "maskIoU"), "segmentation of the outputs "
     "against the input's labels, in percent, higher is better (the footer names the segmenter and, for a "
     "segmenter trained here, its ceiling on real target images)"),
]
"""(what the header calls it, the metrics that make it present, its meaning)."""


def metric_notes(records: list[dict]) -> dict[str, str]:
    """The notes of METRIC_NOTES whose metrics the records hold (all of them when there are none), less
    those of a metric every table leaves out (:func:`format.uninformative`)."""
    present = {m for r in records for m in r["metrics"]} - set(uninformative(results_table(records)))
    return {title: words for title, metrics, words in METRIC_NOTES if not records or present & set(metrics)}


def write_report(suite: Suite) -> Path:
    """Write the suite's report from its run folders (finished rows with their numbers, missing ones
    with the reason); returns the markdown file."""
    report_dir = suite.output_dir / "reports"
    identities = dataset_identities(suite)
    ctx = ReportContext(suite, report_dir, expected_rows(suite, identities))
    records = ctx.records
    lines = [f"# {suite.name}", ""]
    if suite.settings.description:
        lines += [suite.settings.description, ""]
    unread = [label for label, identity in identities.items() if identity is None]
    if unread:
        lines += [f"**The files of dataset(s) {', '.join(unread)} cannot be read here: their results are shown "
                  "as recorded, not checked against those files.**", ""]
    notes = "; ".join(f"{k}: {v}" for k, v in metric_notes(records).items())
    lines += [f"Config: `{suite.source}`. Numbers are mean ± std over seeds (one seed: the value)."
              + (f" {notes}." if notes else ""), ""]
    if not records:
        lines.append("No finished runs yet: run `python -m benchmark run` with this config first.")
    for task in suite.tasks:
        lines += layout_for(task.cls.registry_name)(ctx, task)
        lines += curves_section(ctx, task)
        lines += selection_section(ctx, task)
    failed = [r for r in ctx.rows if r.failed]
    if failed:
        lines += ["## Unfinished runs", ""] + [f"- `{r.directory}`: see `{r.directory / 'error.log'}`"
                                                for r in failed] + [""]
    not_counted = [r for r in ctx.rows if r.not_counted]
    if not_counted:  # results on disk that the tables leave out: say which and why
        lines += ["## Results not shown (stale or broken)", ""] + [f"- `{r.directory}`: {r.reason}"
                                                                   for r in not_counted] + [""]
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / f"{suite.name}.md"
    path.write_text("\n".join(lines))
    csv_table(ctx.rows).to_csv(report_dir / f"{suite.name}_results.csv", index=False)
    return path
