"""The multi-modal report (Hneg-SRC Table 2 layout), built from fake finished runs: rows, mean ± std,
the paper's columns and the style grid."""
import json
import re
import shutil

import pandas as pd
import pytest
import torch
from torchvision.utils import make_grid

from benchmark.config import suite_from_dict
from benchmark.core.errors import ConfigError
from benchmark.core.image_io import read_png, write_png
from benchmark.reference import HNEGSRC_TABLE2
from benchmark.report import write_report
from benchmark.report.multi_modal import split_columns
from benchmark.runner import check_config, expand, identity_dir
from benchmark.run_folder import write_json

DOMAINS = ["autumn", "winter"]
SIZE, STYLES = 16, 2
# (dataset, method label) -> per seed: latent_FID, latent_LPIPS, reference_FID, reference_LPIPS, structure
VALUES = {
    ("synthetic_seasons", "none"): [(100.0, 0.20, 90.0, 0.10, 0.30), (110.0, 0.30, 96.0, 0.14, 0.40)],
    ("synthetic_seasons", "hnegsrc_seasons"): [(80.0, 0.25, 70.0, 0.12, 0.50), (84.0, 0.27, 74.0, 0.16, 0.52)],
    ("seasons", "none"): [(60.0, 0.40, 58.0, 0.30, 0.20), (64.0, 0.44, 62.0, 0.34, 0.22)],
    ("seasons", "hnegsrc_seasons"): [(50.0, 0.48, 52.0, 0.36, 0.25), (51.0, 0.50, 53.0, 0.38, 0.27)],
}
IDENTITY = {"synthetic_seasons": (300.0, 0.0, 300.0, 0.0, 0.55), "seasons": (40.0, 0.0, 40.0, 0.0, 0.60)}
KEYS = ["latent_FID", "latent_LPIPS", "reference_FID", "reference_LPIPS", "structure_score"]


def suite_dict(tmp_path, datasets=None, methods=None):
    return {
        "suite": "mmrep", "seeds": [0, 1], "device": "cpu", "output_dir": str(tmp_path / "results"),
        "tasks": {"multi_modal": {"lpips_backbone": "untrained", "grid_styles": STYLES}},
        "datasets": datasets or {"synthetic_seasons": {"size": SIZE, "n_train": 4, "n_val": 2},
                                 "seasons": {"type": "multidomain_folder", "root": str(tmp_path / "no_data")}},
        "methods": methods or ["none", {"name": "hnegsrc", "label": "hnegsrc_seasons",
                                        "params": {"lambda_HDCE": 1.0, "lambda_SRC": 0.1}}],
    }


def fake_grid(seed: int) -> torch.Tensor:
    """A grid as the evaluation saves it: a row per source domain, 1 + D * STYLES tiles of SIZE px."""
    g = torch.Generator().manual_seed(seed)
    tiles = torch.randint(0, 256, (len(DOMAINS) * (1 + len(DOMAINS) * STYLES), 3, SIZE, SIZE),
                          generator=g, dtype=torch.uint8)
    return make_grid(tiles, nrow=1 + len(DOMAINS) * STYLES, padding=2, pad_value=255)


def record(run_id, dataset, method, method_type, preset, seed, values):
    return {"run_id": run_id, "suite": "mmrep", "task": "multi_modal", "dataset": dataset, "method": method,
            "method_type": method_type, "preset": preset, "seed": seed, "steps": 0 if method == "identity" else 10,
            "metrics": dict(zip(KEYS, values)),
            "protocol": {"lpips": "AlexNet trunk UNTRAINED (random)", "domains": DOMAINS,
                         "resolution": [SIZE, SIZE]}}


def write_fake_runs(suite, values=VALUES):
    """metrics.json (runner.finish's format), config.yaml and samples/grid_00.png for every run."""
    for run in expand(suite):
        key = (run.dataset.label, run.method.label)
        if key not in values:
            continue
        check_config(run)
        write_json(run.metrics_path, record(run.run_id, *key, run.method.cls.registry_name, run.method.preset,
                                            run.seed, values[key][run.seed]))
        (run.directory / "samples").mkdir(parents=True, exist_ok=True)
        write_png(fake_grid(len(str(key)) + run.seed), run.directory / "samples" / "grid_00.png")
    for task in suite.tasks:
        for dataset in suite.datasets:
            if dataset.label in IDENTITY:
                directory = identity_dir(suite, task, dataset)
                write_json(directory / "metrics.json", record(f"multi_modal/{dataset.label}/identity", dataset.label,
                                                              "identity", "identity", "", 0, IDENTITY[dataset.label]))


def table_rows(markdown: str) -> tuple[list[str], list[dict]]:
    """The header and rows (dicts) of the first markdown table."""
    lines = [l for l in markdown.splitlines() if l.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", l.strip()[1:-1])] for l in lines]  # '\|' is in a cell
    header = cells[0]
    return header, [dict(zip(header, row)) for row in cells[2:]]


def mean_pm_std(a: float, b: float, digits: int) -> str:
    s = pd.Series([a, b])
    return f"{s.mean():.{digits}f} ± {s.std(ddof=1):.{digits}f}"


@pytest.fixture
def report(tmp_path):
    suite = suite_from_dict(suite_dict(tmp_path), base_dir=tmp_path)
    write_fake_runs(suite)
    path = write_report(suite)
    return suite, path, path.read_text()


def test_table2_layout_rows_and_mean_std(report):
    _, _, text = report
    header, rows = table_rows(text)
    assert header[:7] == ["dataset", "method", "latent FID", "latent LPIPS", "reference FID", "reference LPIPS",
                          "structure score"]
    assert header[7] == "seeds"
    assert [(r["dataset"], r["method"]) for r in rows] == [
        ("synthetic_seasons", "identity"), ("synthetic_seasons", "none"), ("synthetic_seasons", "hnegsrc_seasons"),
        ("seasons", "identity"), ("seasons", "none"), ("seasons", "hnegsrc_seasons")]
    assert text.count("| dataset | method |") == 1          # several datasets share one table
    for row in rows:
        if row["method"] == "identity":
            ident = IDENTITY[row["dataset"]]
            assert row["latent FID"] == f"{ident[0]:.2f}" and row["structure score"] == f"{ident[4]:.3f}"
            assert row["latent LPIPS"] == row["reference LPIPS"] == "–" and row["seeds"] == "-"
            continue
        (a, b) = VALUES[(row["dataset"], row["method"])]
        for i, key in enumerate(KEYS):
            digits = 2 if key.endswith("FID") else 3
            assert row[key.replace("_", " ")] == mean_pm_std(a[i], b[i], digits), (row, key)
        assert row["seeds"] == "2"
    # the numbers by hand for one row
    assert rows[1]["latent FID"] == "105.00 ± 7.07" and rows[1]["latent LPIPS"] == "0.250 ± 0.071"


def test_paper_columns_only_for_the_seasons_rows_and_equal_to_the_csv(report):
    _, _, text = report
    header, rows = table_rows(text)
    paper_cols = ["paper latent FID", "paper latent LPIPS", "paper reference FID", "paper reference LPIPS"]
    assert all(c in header for c in paper_cols)
    published = pd.read_csv(HNEGSRC_TABLE2.path)
    names = {"none": "StarGANv2", "hnegsrc_seasons": "StarGANv2+HnegSRC"}
    for row in rows:
        if row["dataset"] != "seasons" or row["method"] == "identity":
            assert all(row[c] == "–" for c in paper_cols), row
            continue
        ref = published[(published.dataset == "seasons") & (published.method == names[row["method"]])].iloc[0]
        for c in paper_cols:
            metric = c.removeprefix("paper ").replace(" ", "_")
            assert float(row[c]) == pytest.approx(ref[metric]), (row, c)
    assert rows[4]["paper latent FID"] == "63.06" and rows[5]["paper reference LPIPS"] == "0.365"
    assert "exist only for Seasons and Weather" in text


def test_synthetic_only_has_no_paper_columns_and_says_why(tmp_path):
    datasets = {"synthetic_seasons": {"size": SIZE, "n_train": 4, "n_val": 2}}
    suite = suite_from_dict(suite_dict(tmp_path, datasets=datasets), base_dir=tmp_path)
    write_fake_runs(suite)
    text = write_report(suite).read_text()
    header, rows = table_rows(text)
    assert not any(c.startswith("paper") for c in header)
    assert "–" not in "".join(r["latent FID"] for r in rows)
    assert "exist only for Seasons and Weather" in text and "no paper columns" in text


def test_style_grid_is_embedded_enlarged_and_captioned(report):
    suite, path, text = report
    for dataset in ("synthetic_seasons", "seasons"):
        name = f"multi_modal_{dataset}_styles.png"
        assert f"]({suite.name}/{name})" in text
        image = read_png(path.parent / suite.name / name)
        one = fake_grid(0)
        factor = 96 // SIZE                                   # 16 px tiles -> 96 px
        groups = len(DOMAINS)                                 # a 4 px gap after the source and each target but the last
        width, height = (one.shape[-1] + 4 * groups) * factor, (2 * one.shape[-2] + 8) * factor  # 8 px between methods
        left, top = image.shape[-1] - width, image.shape[-2] - height   # the margins of the labels
        assert left > 20 and top > 10
        labels, titles, image = image[:, top:, :left], image[:, :top, left:], image[:, top:, left:]
        block = one.shape[-2] * factor
        for y0 in (0, block + 8 * factor):                    # each method's name beside its block
            assert (labels[:, y0:y0 + block] < 128).any()
        assert not (labels[:, block:block + 8 * factor] < 128).any()
        dark = (titles < 128).any(0).any(0).nonzero().flatten().tolist()   # columns with title text
        clusters = []
        for x in dark:
            if clusters and x - clusters[-1][-1] < 20:
                clusters[-1].append(x)
            else:
                clusters.append([x])
        centres = [(c[0] + c[-1]) / 2 for c in clusters]
        step = SIZE + 2                                           # 'source', then 'to <domain>' over each group
        spans = [(0, 0)] + [(1 + (g - 1) * STYLES, g * STYLES) for g in (1, 2)]   # first and last column
        expected = [(2 + 4 * g + (first * step + last * step + SIZE) / 2) * factor
                    for g, (first, last) in enumerate(spans)]
        assert len(centres) == 3 and all(abs(c - e) <= 6 for c, e in zip(centres, expected)), (centres, expected)
        run = next(r for r in expand(suite) if (r.dataset.label, r.method.label, r.seed) == (dataset, "none", 0))
        first = read_png(run.directory / "samples" / "grid_00.png")
        small = image[:, ::factor, ::factor]
        assert torch.equal(image, small.repeat_interleave(factor, -1).repeat_interleave(factor, -2))  # nearest
        assert torch.equal(small[:, : one.shape[-2]], split_columns(first, SIZE, STYLES))
    assert "Blocks, top to bottom: none, hnegsrc_seasons" in text
    assert "a row per source domain (autumn, winter)" in text and f"then {STYLES} latent styles" in text


def test_split_columns_sets_the_source_and_each_target_group_apart():
    grid = fake_grid(3)
    step = SIZE + 2
    out = split_columns(grid, SIZE, STYLES, gap=4)
    cuts = [step, step * (1 + STYLES)]                    # after the source, after the first target group
    assert out.shape[-1] == grid.shape[-1] + 4 * len(cuts)
    assert (out[..., cuts[0]:cuts[0] + 4] == 255).all()
    kept = torch.cat([out[..., :cuts[0]], out[..., cuts[0] + 4:cuts[1] + 4], out[..., cuts[1] + 8:]], dim=-1)
    assert torch.equal(kept, grid)
    assert torch.equal(split_columns(grid[..., :-1], SIZE, STYLES), grid[..., :-1])   # unknown layout: unchanged


def test_dataset_mapping_label_explicit_and_synthetic(tmp_path):
    """A synthetic set labelled 'seasons' is not the paper's; ``paper_dataset:`` maps any label;
    flsesim maps to LSeSim only with the lsesim preset."""
    datasets = {"seasons": {"type": "synthetic_seasons", "size": SIZE, "n_train": 4, "n_val": 2},
                "my_weather": {"type": "multidomain_folder", "root": "x", "paper_dataset": "weather"}}
    methods = [{"name": m, "task": {"patch_query": "output"}} for m in ("lsesim", "fsesim")]  # as the paper configs
    values = {(d, m): VALUES[("seasons", "none")] for d in datasets for m in ("lsesim", "fsesim")}
    suite = suite_from_dict(suite_dict(tmp_path, datasets=datasets, methods=methods), base_dir=tmp_path)
    write_fake_runs(suite, values)
    _, rows = table_rows(write_report(suite).read_text())
    got = {(r["dataset"], r["method"]): r["paper latent FID"] for r in rows}
    assert got[("my_weather", "lsesim")] == "60.07"               # weather, StarGANv2+LSeSim
    assert got[("my_weather", "fsesim")] == got[("seasons", "lsesim")] == "–"


def test_unknown_paper_dataset_is_a_config_error(tmp_path):
    datasets = {"x": {"type": "multidomain_folder", "root": "x", "paper_dataset": "afhq"}}
    with pytest.raises(ConfigError, match="paper_dataset.*horse2zebra.*seasons.*weather"):
        suite_from_dict(suite_dict(tmp_path, datasets=datasets), base_dir=tmp_path)


def test_single_modal_report_keeps_its_per_dataset_table(tmp_path):
    raw = {"suite": "sm", "seeds": [0], "output_dir": str(tmp_path / "results"),
           "tasks": {"single_modal": {}}, "datasets": {"synthetic_objects": {"size": 16}}, "methods": ["cut"]}
    suite = suite_from_dict(raw, base_dir=tmp_path)
    run = expand(suite)[0]
    write_json(run.metrics_path, {"run_id": run.run_id, "suite": "sm", "task": "single_modal",
                                  "dataset": "synthetic_objects", "method": "cut", "method_type": "cut",
                                  "preset": "cut", "seed": 0, "steps": 4, "metrics": {"FID": 12.345, "KIDx100": 1.5},
                                  "protocol": {}})
    text = write_report(suite).read_text()
    assert "## single_modal / synthetic_objects" in text
    assert "| method | FID | KIDx100 | seeds |" in text and "| cut | 12.35 | 1.50 | 1 |" in text
    assert "paper" not in text.split("## single_modal")[1]


def test_the_table2_layout_is_the_registered_one_for_multi_modal(tmp_path, monkeypatch):
    from benchmark.report import LAYOUTS, layout_for
    from benchmark.report.multi_modal import table2_section
    from tasks.multi_modal.task import MultiModalTask

    assert layout_for(MultiModalTask.registry_name) is table2_section
    assert "report_layout" not in vars(MultiModalTask)
    suite = suite_from_dict(suite_dict(tmp_path), base_dir=tmp_path)
    write_fake_runs(suite)
    monkeypatch.setitem(LAYOUTS, "multi_modal", lambda ctx, task: [f"## {task.label} laid out elsewhere", ""])
    text = write_report(suite).read_text()
    assert "## multi_modal laid out elsewhere" in text and "| dataset | method |" not in text


def test_removed_and_failed_runs_are_missing_rows_with_their_reason(tmp_path):
    suite = suite_from_dict(suite_dict(tmp_path), base_dir=tmp_path)
    write_fake_runs(suite)
    runs = {(r.dataset.label, r.method.label, r.seed): r for r in expand(suite)}
    for seed in (0, 1):                                          # a finished run's folders removed
        shutil.rmtree(runs[("synthetic_seasons", "none", seed)].directory)
    shutil.rmtree(identity_dir(suite, suite.tasks[0], suite.datasets[0]))
    failed = runs[("seasons", "hnegsrc_seasons", 1)]             # one of two seeds failed
    failed.metrics_path.unlink()
    (failed.directory / "error.log").write_text(
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    train()\n"
        "benchmark.core.errors.ConfigError: dataset root /no/data does not exist\n")
    text = write_report(suite).read_text()

    header, rows = table_rows(text)
    assert header[-1] == "status"
    assert [(r["dataset"], r["method"]) for r in rows] == [
        ("synthetic_seasons", "identity"), ("synthetic_seasons", "none"), ("synthetic_seasons", "hnegsrc_seasons"),
        ("seasons", "identity"), ("seasons", "none"), ("seasons", "hnegsrc_seasons")]
    got = {(r["dataset"], r["method"]): r for r in rows}
    for method, seeds in (("identity", "-"), ("none", "0")):
        row = got[("synthetic_seasons", method)]
        assert row["status"] == "missing: not run yet" and row["seeds"] == seeds
        assert all(row[column] == "–" for column in header[2:7])
    partial = got[("seasons", "hnegsrc_seasons")]                 # seed 0's numbers, and why seed 1 is absent
    assert partial["status"] == "missing seed 1: failed: benchmark.core.errors.ConfigError: dataset root " \
                                "/no/data does not exist"
    assert partial["seeds"] == "1" and partial["latent FID"] == f"{VALUES[('seasons', 'hnegsrc_seasons')][0][0]:.2f}"
    assert partial["paper latent FID"] == "54.70"
    assert got[("seasons", "none")]["status"] == "" and got[("seasons", "none")]["seeds"] == "2"
    assert "`status`: why a row has no" in text
    assert "Blocks, top to bottom: hnegsrc_seasons (first seed)" in text   # the grid of what is left

    csv = pd.read_csv(suite.output_dir / "reports" / "mmrep_results.csv", keep_default_na=False)
    missing = csv[csv.status != "finished"]
    assert sorted(zip(missing.dataset, missing.method, missing.seed, missing.status)) == sorted([
        ("synthetic_seasons", "identity", 0, "missing: not run yet"),
        ("synthetic_seasons", "none", 0, "missing: not run yet"),
        ("synthetic_seasons", "none", 1, "missing: not run yet"),
        ("seasons", "hnegsrc_seasons", 1,
         "missing: failed: benchmark.core.errors.ConfigError: dataset root /no/data does not exist")])


def test_a_complete_table_has_no_status_column(report):
    _, _, text = report
    header, rows = table_rows(text)
    assert "status" not in header and "missing:" not in text  # no run reported missing
    assert not any("missing" in cell for row in rows for cell in row.values())


def test_l1_diversity_columns_beside_lpips_and_undefined_for_identity(tmp_path):
    suite = suite_from_dict(suite_dict(tmp_path, datasets={"synthetic_seasons": {"size": SIZE, "n_train": 4,
                                                                                  "n_val": 2}}), base_dir=tmp_path)
    write_fake_runs(suite, {k: v for k, v in VALUES.items() if k[0] == "synthetic_seasons"})
    for run in expand(suite):                      # add the pixel-space diversity to every finished record
        record_ = json.loads(run.metrics_path.read_text())
        record_["metrics"].update(latent_L1_diversity=0.1 + 0.01 * run.seed, reference_L1_diversity=0.05)
        write_json(run.metrics_path, record_)
    ident = identity_dir(suite, suite.tasks[0], suite.datasets[0]) / "metrics.json"
    record_ = json.loads(ident.read_text())
    record_["metrics"].update(latent_L1_diversity=0.0, reference_L1_diversity=0.0)
    write_json(ident, record_)
    header, rows = table_rows(write_report(suite).read_text())
    assert header[:9] == ["dataset", "method", "latent FID", "latent LPIPS", "latent L1 diversity", "reference FID",
                          "reference LPIPS", "reference L1 diversity", "structure score"]
    assert rows[0]["method"] == "identity" and rows[0]["latent L1 diversity"] == "–"
    assert rows[1]["latent L1 diversity"] == mean_pm_std(0.10, 0.11, 3)
    assert rows[1]["reference L1 diversity"] == "0.050 ± 0.000"
