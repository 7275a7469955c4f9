"""Formatting shared by every report layout: table cells (mean ± std over seeds), markdown tables,
the words of a missing row, and the footers and warnings under a table."""
from __future__ import annotations

import json

import pandas as pd

from ..loss_watch import DEGENERATE
from ..inputs import CODE
from ..sanity import SETTINGS_WARNINGS

NOT_SCORED = "–"
"""A cell with no number: not scored, no finished run, or no published row."""

STATUS = "status"
"""The column that says why a row has no (or not every) result; only in tables with such a row."""


def mean_std(values: pd.Series, digits: int) -> str:
    """'mean ± std' (sample std) of ``values`` with ``digits`` decimals; one value: the value."""
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


INTERVAL_BOUNDS = ("_ci_low", "_ci_high")
"""Suffixes of the metrics that hold a bootstrap interval's bounds (e.g. ``FID_ci_low``)."""
NOT_TABULATED = ("FID_bootstrap_shift", "latent_FID_bootstrap_shift", "reference_FID_bootstrap_shift")
"""Metrics kept in metrics.json and the CSV but given no column of their own."""


def interval_words(lows: pd.Series, highs: pd.Series, digits: int) -> str:
    """' [low, high]': a bootstrap interval (the bounds averaged over seeds when there are several),
    to follow a metric's cell; '' when there is none."""
    if lows.empty or highs.empty:
        return ""
    return f" [{lows.mean():.{digits}f}, {highs.mean():.{digits}f}]"


def with_intervals(cells: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``cells`` (rows: methods, columns: metrics, 'mean ± std' strings from the long ``table`` of
    method / metric / value) with each metric's bootstrap interval appended to its cell, as
    '45.30 [41.20, 49.80]', and no column of its own for the bounds (nor for NOT_TABULATED)."""
    out = cells.copy()
    for metric in cells.columns:
        low, high = (metric + suffix for suffix in INTERVAL_BOUNDS)
        if low not in cells.columns or high not in cells.columns:
            continue
        for method in out.index:
            of = table[table["method"] == method]
            values = of.loc[of["metric"] == metric, "value"]
            words = interval_words(of.loc[of["metric"] == low, "value"], of.loc[of["metric"] == high, "value"],
                                   auto_digits(values) if not values.empty else 2)
            if words and isinstance(out.loc[method, metric], str):
                out.loc[method, metric] += words
    hidden = [c for c in out.columns if c.endswith(INTERVAL_BOUNDS) or c in NOT_TABULATED]
    return out.drop(columns=hidden)


def auto_digits(values: pd.Series) -> int:
    """Three decimals for scores below 1 (LPIPS-like), else two."""
    return 3 if values.abs().max() < 1 else 2


def cell(value) -> str:
    """A value as a markdown table cell: no '|' or line break can split the row."""
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame) -> str:
    """The columns of ``frame`` (not its index) as a markdown table."""
    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def status_words(rows) -> str:
    """Why a table row (all runs of one method, or one identity row) lacks results, '' when none is
    missing. ``rows``: :class:`benchmark.report.results.Row` objects (``seed``, ``reason``)."""
    missing = [r for r in rows if not r.finished]
    if not missing:
        return ""
    reasons = {r.reason for r in missing}
    if len(missing) == len(rows) and len(reasons) == 1:
        return f"missing: {missing[0].reason}"
    by_reason: dict[str, list] = {}
    for r in missing:
        by_reason.setdefault(r.reason, []).append(r.seed)
    parts = [f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: {reason}"
             for reason, seeds in by_reason.items()]
    if len(missing) == len(rows):
        return "missing: " + "; ".join(parts)
    return "missing " + "; ".join(parts)


def with_status(frame: pd.DataFrame, statuses: list[str]) -> pd.DataFrame:
    """``frame`` with a last ``status`` column when any of ``statuses`` (one per row) says something;
    unchanged when every row is complete."""
    if not any(statuses):
        return frame
    out = frame.copy()
    out[STATUS] = statuses
    return out


def untrained_notes(records: list[dict]) -> str:
    """Words for every untrained backbone the records' protocols mention, with the methods using it."""
    found = {}
    for r in records:
        for key, value in r.get("protocol", {}).items():
            if isinstance(value, str) and "UNTRAINED" in value.upper():
                found.setdefault(f"{key}: {value}", []).append(r["method"])
    return "; ".join(f"{note} (used by {', '.join(sorted(set(m)))})" for note, m in found.items())


def degenerate_notes(records: list[dict]) -> str:
    """Words for every run whose training left a loss term exactly 0 at every step."""
    return "; ".join(f"{r['method']} seed {r['seed']}: {r['protocol'][DEGENERATE]}"
                     for r in records if DEGENERATE in r.get("protocol", {}))


def settings_notes(records: list[dict]) -> str:
    """Words for every warning about meaningless settings the records keep (``benchmark/sanity.py``),
    each once, with the runs it applies to."""
    found = {}
    for r in records:
        text = r.get("protocol", {}).get(SETTINGS_WARNINGS)
        for warning in text.split("; ") if text else ():
            found.setdefault(warning, []).append(f"{r['method']} seed {r['seed']}")
    return "; ".join(f"{warning} ({', '.join(runs)})" for warning, runs in found.items())


def code_notes(records: list[dict]) -> str:
    """Words for each module (a method's, a task's) whose code differed between the runs of a table
    that recorded it (metrics.json's ``code``), with the runs made with each version."""
    versions: dict[str, dict[str, list[str]]] = {}
    for r in records:
        for module, digest in (r.get(CODE) or {}).items():
            versions.setdefault(module, {}).setdefault(digest, []).append(f"{r['method']} seed {r['seed']}")
    return "; ".join(f"{module}: " + " / ".join(f"{', '.join(runs)} with {digest}" for digest, runs in found.items())
                     for module, found in versions.items() if len(found) > 1)


def table_warnings(records: list[dict]) -> list[str]:
    """The warning lines put above a table whose runs used an untrained backbone, trained a loss
    term that stayed exactly 0, ran with settings that ``plan`` warns about, or were made with
    different versions of a method's or task's code ([] if none did)."""
    lines = []
    if code := code_notes(records):
        lines += [f"**Warning: these runs were made with different versions of the code: {code}.** An edit "
                  "may change the numbers: rerun the older runs (move their folders away) to compare like "
                  "with like.", ""]
    if settings := settings_notes(records):
        lines += [f"**Warning: these runs used settings that `plan` warns about: {settings}.**", ""]
    if untrained := untrained_notes(records):
        lines += [f"**Warning: {untrained}.** Numbers that depend on it are not comparable with published ones.", ""]
    if degenerate := degenerate_notes(records):
        lines += [f"**Warning: logged training values that stayed exactly 0, so the loss term (or its weight) "
                  f"trained nothing: {degenerate}.** A zero weight set on purpose explains it (e.g. a "
                  "control row); otherwise the method's loss is degenerate (e.g. a contrastive loss without "
                  "negatives) and its row measures the rest of the objective only.", ""]
    return lines


def protocol_items(records: list[dict]) -> list[str]:
    """The protocol values of the records (each key once, its distinct values) and the training
    steps, as 'key: value' items."""
    if not records:
        return ["no finished run yet"]
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
    return parts


def protocol_footer(records: list[dict], title: str = "Protocol") -> list[str]:
    """Markdown lines under a table: '<title>:' and a bullet per protocol item (a list a reader scans,
    not one paragraph of a dozen settings)."""
    return [f"{title}:", "", *[f"- {cell(item)}" for item in protocol_items(records)], ""]


ALWAYS_ZERO_NOTES = {
    "KIDx100_std": "`KIDx100_std` is left out: it is 0 in every run here, because each KID subset is the "
                   "whole set of scored images (fewer than `evaluation.kid_subset_size`), so the subsets "
                   "do not vary",
}
"""Columns that carry no information when every value is 0, and why they are then 0."""
ZERO_TOLERANCE = 1e-9
"""'0' up to rounding: the spread of identical KID subsets comes out near 1e-14, not exactly 0."""


def uninformative(table: pd.DataFrame) -> dict[str, str]:
    """Metric -> why its column is left out, for the ALWAYS_ZERO_NOTES metrics that are 0 (within
    ZERO_TOLERANCE) in every row of the long ``table`` (method / metric / value)."""
    out = {}
    for metric, words in ALWAYS_ZERO_NOTES.items():
        values = table.loc[table["metric"] == metric, "value"] if not table.empty else pd.Series(dtype=float)
        if not values.empty and (values.abs() <= ZERO_TOLERANCE).all():
            out[metric] = words
    return out
