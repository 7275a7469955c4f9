"""The single-modal report: a table per dataset, and the published numbers (GraphCL Table 1,
Hneg-SRC Table 1) beside the rows of datasets that are the papers' own."""
import pandas as pd
import pytest

from benchmark.config import suite_from_dict
from benchmark.reference import REFERENCE_DIR
from benchmark.report import write_report
from benchmark.runner import expand, identity_dir, write_json

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
            "run_id": "identity", "suite": "sm", "task": "single_modal", "dataset": d.label,
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
