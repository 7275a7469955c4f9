"""The checkpoint-selection table of a task (runs with the suite's ``validation`` section): per dataset
and method, the test FID of the ``last`` checkpoint, of ``best_val`` (chosen on the held-out
validation split) and of ``best_test`` (chosen on the test set: optimistic), side by side, and the
selection gains (a rule's FID minus last's, per seed, then mean ± std over seeds)."""
from __future__ import annotations

import pandas as pd

from ..config import Component
from .format import INTERVAL_BOUNDS, NOT_SCORED, interval_words, markdown_table, mean_std
from .layouts import ReportContext
from .results import IDENTITY

RULE_LABELS = {"last": "last", "best_val": "best_val", "best_test": "best_test (optimistic)"}
SCORES = ("FID", "latent_FID", "reference_FID")
"""The test metrics the table shows for each rule (those the records have)."""


def selection_table(records: list[dict], datasets: list[str], methods: list[str]) -> pd.DataFrame | None:
    """Rows: dataset x method (runs with a ``selection`` record); None when no run has one."""
    records = [r for r in records if r.get("selection")]
    if not records:
        return None
    rules = [rule for rule in RULE_LABELS if any(rule in r["selection"] for r in records)]
    scores = [m for m in SCORES if any(m in r["selection"]["last"]["metrics"] for r in records)]
    rows = []
    for dataset in datasets:
        for method in methods:
            runs = [r for r in records if r["dataset"] == dataset and r["method"] == method]
            if not runs:
                continue
            row = {"dataset": dataset, "method": method}
            for metric in scores:
                for rule in rules:
                    chosen = [r["selection"][rule]["metrics"] for r in runs
                              if metric in r["selection"].get(rule, {}).get("metrics", {})]
                    values = pd.Series([m[metric] for m in chosen], dtype=float)
                    bounds = [pd.Series([m[metric + b] for m in chosen if metric + b in m], dtype=float)
                              for b in INTERVAL_BOUNDS]
                    row[f"{metric} {RULE_LABELS[rule]}"] = NOT_SCORED if values.empty else \
                        mean_std(values, 2) + interval_words(*bounds, 2)
                for rule in rules[1:]:
                    gains = pd.Series([r["selection"][rule]["metrics"][metric] - r["selection"]["last"]["metrics"][metric]
                                       for r in runs if metric in r["selection"].get(rule, {}).get("metrics", {})],
                                      dtype=float)
                    row[f"{metric} gain {rule} − last"] = NOT_SCORED if gains.empty else mean_std(gains, 2)
            row["steps chosen"] = "; ".join(
                f"{rule} " + ", ".join(str(r["selection"][rule]["step"]) for r in runs if rule in r["selection"])
                for rule in rules)
            row["seeds"] = len(runs)
            rows.append(row)
    return pd.DataFrame(rows)


def selection_section(ctx: ReportContext, task: Component) -> list[str]:
    """The task's checkpoint-selection table and what its columns mean ([] without selection records)."""
    records = [r.record for r in ctx.rows_of(task.label) if r.finished and r.method != IDENTITY]
    table = selection_table(records, [d.label for d in ctx.suite.datasets], [m.label for m in ctx.suite.methods])
    if table is None:
        return []
    validation = next(r["validation"] for r in records if r.get("validation"))
    return [f"### {task.label}: checkpoint selection", "",
            markdown_table(table), "",
            "Test scores of three checkpoints of each run, each under the task's full test protocol: "
            "`last` (the end of training; the numbers of the tables above), `best_val` (the evaluation "
            "point with the lowest FID on a validation split held out of the training images: "
            f"{validation['images'] or 'a tenth'} images per side or domain, seed {validation['seed']}; the "
            "test set is never read for the choice) and `best_test (optimistic)` (the point with the "
            "lowest test FID, as the papers report: the test set chooses the checkpoint it scores). "
            f"Evaluation every {validation['eval_every']} steps and at the last step. `gain R − last`: "
            "rule R's score minus last's, per seed (negative = lower FID than the last checkpoint); "
            "the best_test gain is how much of a best-epoch number is checkpoint selection on the test set. "
            "`steps chosen`: each rule's step, per seed. [low, high]: the bootstrap interval over the test "
            "images of that checkpoint's score (as in the tables above). Multi-modal runs choose on the mean of the "
            "latent- and reference-guided FIDs.", ""]
