"""The single-modal report: a table per dataset, and the published numbers (GraphCL Table 1,
Hneg-SRC Table 1) beside the rows of datasets that are the papers' own."""
import shutil
import traceback

import pandas as pd
import pytest

from benchmark.config import suite_from_dict
from benchmark.core.checkpoint import save_checkpoint
from benchmark.core.errors import ConfigError
from benchmark.reference import REFERENCE_DIR
from benchmark.report import LAYOUTS, layout_for, register_layout, write_report
from benchmark.report.results import error_message
from benchmark.runner import expand, identity_dir
from benchmark.run_folder import write_json

from test_report_multimodal import table_rows

METHODS = ["none", "cut", "fastcut", "fsesim", "lsesim", "hnegsrc_city", "graphcl"]


def fake_suite(tmp_path):
    raw = {"suite": "sm", "seeds": [0], "output_dir": str(tmp_path / "results"),
           "tasks": {"single_modal": {}},
           "datasets": {"horse2zebra": {"type": "unaligned_folder", "root": "x"},
                        "city": {"type": "unaligned_folder", "root": "y", "direction": "BtoA",
                                 "paper_dataset": "cityscapes"},
                        "synthetic_objects": {"size": 16}},
           "methods": METHODS}
    suite = suite_from_dict(raw, base_dir=tmp_path)
    for i, run in enumerate(expand(suite)):
        write_json(run.metrics_path, {
            "run_id": run.run_id, "suite": "sm", "task": "single_modal", "dataset": run.dataset.label,
            "method": run.method.label, "method_type": run.method.cls.registry_name,
            "preset": run.method.preset, "seed": 0, "steps": 4,
            "metrics": {"FID": 100.0 + i, "KIDx100": 1.0 + i}, "protocol": {}})
    for d in suite.datasets:
        write_json(identity_dir(suite, suite.tasks[0], d) / "metrics.json", {
            "run_id": f"single_modal/{d.label}/identity", "suite": "sm", "task": "single_modal", "dataset": d.label,
            "method": "identity", "method_type": "identity", "preset": "", "seed": 0, "steps": 0,
            "metrics": {"FID": 300.0, "KIDx100": 30.0}, "protocol": {}})
    return suite


def section(text, dataset):
    return text.split(f"## single_modal / {dataset}")[1].split("\n## ")[0]


def published(dataset, method, metric):
    """The value as the papers print it, read straight from the transcribed CSVs."""
    graphcl = pd.read_csv(REFERENCE_DIR / "graphcl_aaai24_table1.csv")
    hnegsrc = pd.read_csv(REFERENCE_DIR / "hnegsrc_cvpr22_table1_single_modal.csv").set_index("method")
    if metric in ("FID", "KIDx100"):
        hit = graphcl[(graphcl.dataset == dataset) & (graphcl.method == method)][metric]
        return float(hit.iloc[0])
    return float(hnegsrc.loc[method, {"mIoU": "city_mAP", "pixAcc": "city_pixAcc", "clsAcc": "city_clsAcc"}[metric]])


def test_paper_columns_hold_the_published_values_of_each_methods_paper_row(tmp_path):
    text = write_report(fake_suite(tmp_path)).read_text()
    header, rows = table_rows(section(text, "horse2zebra"))
    assert header[-2:] == ["paper FID", "paper KIDx100"]          # no FCN scores for horse2zebra
    got = {r["method"]: (r["paper FID"], r["paper KIDx100"]) for r in rows}
    for method, paper in [("cut", "CUT"), ("lsesim", "LSeSim"), ("hnegsrc_city", "HnegSRC"), ("graphcl", "GraphCL")]:
        assert tuple(map(float, got[method])) == (published("horse2zebra", paper, "FID"),
                                                  published("horse2zebra", paper, "KIDx100"))
    for method in ("identity", "none", "fastcut", "fsesim"):                  # no row in the papers
        assert got[method] == ("–", "–")
    header, rows = table_rows(section(text, "city"))
    assert header[-5:] == ["paper FID", "paper KIDx100", "paper mIoU", "paper pixAcc", "paper clsAcc"]
    city = {r["method"]: r for r in rows}
    assert float(city["cut"]["paper mIoU"]) == published("cityscapes", "CUT", "mIoU") == 24.7
    assert float(city["hnegsrc_city"]["paper clsAcc"]) == published("cityscapes", "HnegSRC", "clsAcc")
    assert city["lsesim"]["paper mIoU"] == "–" and city["lsesim"]["paper pixAcc"] == "73.2"
    assert city["hnegsrc_city"]["paper mIoU"] == "29.0" and city["cut"]["paper KIDx100"] == "1.611"
    assert city["graphcl"]["paper mIoU"] == "–"           # GraphCL published no FCN scores
    assert "`city` is the paper's Cityscapes" in section(text, "city")
    header, _ = table_rows(section(text, "synthetic_objects"))
    assert not any(c.startswith("paper") for c in header)
    assert "Paper columns" not in section(text, "synthetic_objects")


def test_the_two_papers_print_the_same_fid_for_the_rows_they_share():
    graphcl = pd.read_csv(REFERENCE_DIR / "graphcl_aaai24_table1.csv")
    hnegsrc = pd.read_csv(REFERENCE_DIR / "hnegsrc_cvpr22_table1_single_modal.csv")
    shared = 0
    for _, row in hnegsrc.iterrows():
        for dataset, column in (("horse2zebra", "h2z_FID"), ("cityscapes", "city_FID")):
            hit = graphcl[(graphcl.dataset == dataset) & (graphcl.method == row.method)]
            if not hit.empty:
                assert float(hit.FID.iloc[0]) == pytest.approx(row[column]), (row.method, dataset)
                shared += 1
    assert shared >= 14


def failing_traceback(message: str) -> str:
    """An error.log as the runner writes it (traceback.format_exc()), with a chained exception."""
    try:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise RuntimeError(message) from exc
    except RuntimeError:
        return traceback.format_exc()


def test_the_layout_comes_from_the_registry_keyed_by_the_task_name(tmp_path, monkeypatch):
    from benchmark.report.multi_modal import table2_section
    from benchmark.report.per_dataset import per_dataset_section
    from tasks.base import Task

    assert layout_for("single_modal") is per_dataset_section
    assert layout_for("multi_modal") is table2_section
    assert layout_for("a_plugin_task") is per_dataset_section              # no layout of its own: the default
    assert not hasattr(Task, "report_layout")                               # not part of the training contract
    seen = []

    def custom(ctx, task):
        seen.append((task.label, len(ctx.rows)))
        return ["## custom layout", ""]
    monkeypatch.setitem(LAYOUTS, "single_modal", custom)
    text = write_report(fake_suite(tmp_path)).read_text()
    assert "## custom layout" in text and "## single_modal / city" not in text
    assert seen == [("single_modal", 3 * (1 + len(METHODS)))]             # every expected row, finished or not
    with pytest.raises(ConfigError, match="already registered"):
        register_layout("multi_modal")(custom)


def test_missing_runs_are_rows_with_their_reason(tmp_path):
    suite = fake_suite(tmp_path)
    runs = {(r.dataset.label, r.method.label): r for r in expand(suite)}
    shutil.rmtree(runs[("city", "cut")].directory)                              # folder removed
    failed = runs[("city", "fastcut")]
    failed.metrics_path.unlink()
    (failed.directory / "error.log").write_text(failing_traceback("CUDA out of memory | try less"))
    stopped = runs[("city", "graphcl")]
    stopped.metrics_path.unlink()
    save_checkpoint(stopped.directory / "checkpoints" / "latest.pt", stopped.run_id, 7, {})
    started = runs[("city", "lsesim")]
    started.metrics_path.unlink()                                               # folder left, no checkpoint
    shutil.rmtree(identity_dir(suite, suite.tasks[0], suite.datasets[1]))
    text = write_report(suite).read_text()

    header, rows = table_rows(section(text, "city"))
    assert header[-1] == "status" and [r["method"] for r in rows] == ["identity", *METHODS]
    got = {r["method"]: r for r in rows}
    assert got["identity"]["status"] == "missing: not run yet" and got["identity"]["FID"] == "–"
    assert got["cut"]["status"] == "missing: not run yet"
    assert got["cut"]["FID"] == got["cut"]["KIDx100"] == "–" and got["cut"]["seeds"] == "0"
    assert got["cut"]["paper mIoU"] == "24.7"                                   # published numbers stay
    assert got["fastcut"]["status"] == "missing: failed: RuntimeError: CUDA out of memory \\| try less"
    assert got["graphcl"]["status"] == "missing: interrupted at step 7"
    assert got["lsesim"]["status"] == "missing: not finished"
    assert got["none"]["status"] == "" and got["none"]["FID"] == "107.00"       # finished rows unchanged
    assert "| fastcut | – | – | 0 | " + "– | " * 10 + \
           "missing: failed: RuntimeError: CUDA out of memory \\| try less |" in text   # 5 Δ, 5 paper cells
    assert f"`{failed.directory}`: see `{failed.directory / 'error.log'}`" in text
    # the other datasets have every row: no status column
    assert "status" not in table_rows(section(text, "horse2zebra"))[0]

    csv = pd.read_csv(suite.output_dir / "reports" / "sm_results.csv", keep_default_na=False)
    assert list(csv.columns) == ["task", "dataset", "method", "seed", "metric", "value", "status"]
    city = csv[csv.dataset == "city"]
    status = dict(zip(city.method, city.status))
    assert status["cut"] == "missing: not run yet" and status["identity"] == "missing: not run yet"
    assert status["fastcut"].startswith("missing: failed: RuntimeError: CUDA out of memory")
    assert status["graphcl"] == "missing: interrupted at step 7" and status["none"] == "finished"
    assert (city[city.method == "cut"].metric == "").all() and len(city[city.method == "none"]) == 2


def test_a_dataset_with_no_finished_run_still_lists_its_rows(tmp_path):
    suite = fake_suite(tmp_path)
    for run in expand(suite):
        if run.dataset.label == "synthetic_objects":
            shutil.rmtree(run.directory)
    shutil.rmtree(identity_dir(suite, suite.tasks[0], suite.datasets[2]))
    header, rows = table_rows(section(write_report(suite).read_text(), "synthetic_objects"))
    assert header == ["method", "seeds", "status"]
    assert [(r["method"], r["seeds"], r["status"]) for r in rows] == \
        [("identity", "-", "missing: not run yet")] + [(m, "0", "missing: not run yet") for m in METHODS]


def test_error_message_is_the_raised_exception_line(tmp_path):
    log = tmp_path / "error.log"
    log.write_text(failing_traceback("boom"))
    assert error_message(log) == "RuntimeError: boom"
    log.write_text("\nworker process failed: OSError\nmore\n")            # not a traceback: its first line
    assert error_message(log) == "worker process failed: OSError"
