"""The paper configs (a shipped config for every published table): each loads, validates its data
layout on small stand-in folders made here, and dry-runs (``plan``); the plan's counts and GPU-hour
estimate; the ablation tables' rows map onto the configs' methods; Hneg-SRC's InfoNCE switch."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import benchmark.plan as plan_module
from benchmark.cli import main
from benchmark.config import load_suite, suite_from_dict
from benchmark.core.errors import ConfigError
from benchmark.plan import PERF_DIR, measured_step_times, plan_suite
from benchmark.reference import GRAPHCL_TABLE2, HNEGSRC_TABLE2, HNEGSRC_TABLE4, SINGLE_MODAL_TABLE1
from benchmark.report import dataset_paper_name, write_report
from benchmark.runner import identity_dir
from benchmark.run_folder import write_json

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PAPER_CONFIGS = sorted(CONFIG_DIR.glob("paper_*.yaml"))


def png(path: Path, width: int = 16, height: int = 16, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def stand_in(dataset, root: Path) -> list[str]:
    """A tiny folder (or files) in the layout ``dataset``'s reader expects; the overrides that point
    the config at it."""
    kind, label = dataset.cls.registry_name, dataset.label
    if kind == "unaligned_folder":
        for sub in ("trainA", "trainB", "testA", "testB"):
            png(root / sub / "0.png")
        return [f"datasets.{label}.root={root}"]
    if kind == "aligned_folder":
        for sub in ("train", "val"):
            png(root / sub / "0.png", width=32)          # A | B side by side
        return [f"datasets.{label}.root={root}"]
    if kind == "multidomain_folder":
        for split in ("train", "val"):
            for domain in ("spring", "winter"):
                png(root / split / domain / "0.png")
        return [f"datasets.{label}.root={root}"]
    if kind == "single_image_files":
        png(root / "a.png", 24, 16)
        png(root / "b.png", 24, 16, seed=1)
        return [f"datasets.{label}.path_a={root / 'a.png'}", f"datasets.{label}.path_b={root / 'b.png'}"]
    raise AssertionError(f"no stand-in for dataset type {kind}")


def paper_suite(path: Path, tmp_path: Path):
    """The shipped suite with every dataset pointed at a stand-in under ``tmp_path``."""
    overrides = [f"output_dir={tmp_path / 'results'}"]
    for dataset in load_suite(path).datasets:
        overrides += stand_in(dataset, tmp_path / "data" / dataset.label)
    return load_suite(path, overrides), overrides


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.name)
def test_paper_config_loads_validates_its_data_layout_and_dry_runs(path, tmp_path, capsys, monkeypatch):
    suite, overrides = paper_suite(path, tmp_path)
    # the command plans the suite once, and this test checks that plan (each plan builds every
    # run's full-size networks to size its checkpoints)
    plans = []
    monkeypatch.setattr(plan_module, "plan_suite", lambda *a, **k: plans.append(plan_suite(*a, **k)) or plans[-1])
    code = main(["run", str(path), *overrides, "--dry-run"])
    out = capsys.readouterr()
    (plan,) = plans
    assert plan.data_problems == []
    assert set(plan.datasets_checked) == {d.label for d in suite.datasets}
    assert len(plan.runs) == len(suite.runs) == (len(suite.tasks) * len(suite.datasets) * len(suite.methods)
                                                  * len(suite.settings.seeds))
    assert plan.total_steps == sum(run.planned_steps() for run in suite.runs) > 0
    # the command: the same counts printed, nothing trained (weights may be missing on this machine)
    assert f"runs: {len(plan.runs)}; training steps: {plan.total_steps:,}" in out.out
    assert "estimated GPU time" in out.out and "NVIDIA H100" in out.out or plan.unknown_runs
    assert code == (1 if plan.weight_problems else 0)
    assert not suite.runs_dir.exists()


def test_a_missing_folder_is_named_with_what_was_expected(tmp_path, capsys):
    path = CONFIG_DIR / "paper_maps.yaml"
    suite, overrides = paper_suite(path, tmp_path)
    missing = tmp_path / "data" / "maps" / "testB"
    for f in missing.iterdir():
        f.unlink()
    missing.rmdir()
    plan = plan_suite(load_suite(path, overrides))
    (problem,) = plan.data_problems
    assert str(missing) in problem and "expected a folder with sub-folders trainA, trainB, testA, testB" in problem
    assert main(["plan", str(path), *overrides]) == 1
    assert str(missing) in capsys.readouterr().out
    # a missing root and a multi-domain folder without its val split are named too
    plan = plan_suite(load_suite(path, [*overrides, f"datasets.maps.root={tmp_path / 'nowhere'}"]))
    assert str(tmp_path / "nowhere") in plan.data_problems[0]
    suite, overrides = paper_suite(CONFIG_DIR / "paper_seasons.yaml", tmp_path / "mm")
    val = tmp_path / "mm" / "data" / "seasons" / "val" / "winter"
    (val / "0.png").unlink()
    val.rmdir()
    (problem,) = plan_suite(suite).data_problems
    assert str(val) in problem


def test_step_time_estimate_uses_the_measured_table_nearest_size_or_unknown(tmp_path):
    table = {(t.method, t.size, t.batch_size): t.seconds for t in measured_step_times()}
    files = sorted(PERF_DIR.glob("*.json"))
    assert files and len(table) == sum(len(json.loads(f.read_text())["results"]) for f in files)
    raw = {"suite": "s", "output_dir": str(tmp_path), "tasks": {"single_modal": {"n_steps": 30, "n_steps_decay": 10}},
           "datasets": {"synthetic_objects": {"size": 32}, "big": {"type": "synthetic_objects", "size": 256}},
           "methods": ["cut", {"name": "graphcl", "label": "g1", "params": {"num_hop": 1}}]}
    plan = plan_suite(suite_from_dict(raw, base_dir=tmp_path), check_data=False, check_weight_files=False)
    by_id = {r.run_id: r for r in plan.runs}
    small = by_id["single_modal/synthetic_objects/cut/seed0"]
    assert small.estimate.seconds == table[("cut", 64, 1)] and "32px not measured, nearest 64px" in small.estimate.note
    big = by_id["single_modal/big/g1/seed0"]
    assert big.estimate.seconds == table[("graphcl", 256, 1)] and "'g1' timed as 'graphcl'" in big.estimate.note
    assert math.isclose(plan.estimated_hours, sum(r.steps * r.estimate.seconds for r in plan.runs) / 3600)
    assert plan.total_steps == 4 * 40
    # batch sizes and tasks that were never measured are unknown, not guessed
    raw["tasks"]["single_modal"]["batch_size"] = 3
    plan = plan_suite(suite_from_dict(raw, base_dir=tmp_path), check_data=False, check_weight_files=False)
    assert all(r.estimate.seconds is None and "batch size 3" in r.estimate.note for r in plan.runs)
    assert plan.estimated_hours == 0
    mm = plan_suite(load_suite(CONFIG_DIR / "quick_multimodal.yaml"), check_data=False, check_weight_files=False)
    assert all(r.estimate.seconds is None and "task 'multi_modal' not measured" in r.estimate.note for r in mm.runs)


def mapped_rows(table, suite, dataset_label):
    dataset = next(d for d in suite.datasets if d.label == dataset_label)
    paper_ds = dataset_paper_name(dataset, table)
    rows = [table.paper_method(m.cls.registry_name, m.preset, m.options) for m in suite.methods]
    return paper_ds, [r for r in rows if r]


def published_rows(table, dataset):
    frame = table.load()
    return sorted(frame[frame.dataset == dataset].method)


def test_every_published_table_has_a_shipped_config_whose_rows_map_onto_it():
    table1 = {"horse2zebra": "paper_horse2zebra.yaml", "cityscapes": "paper_cityscapes.yaml",
              "maps": "paper_maps.yaml", "summer2winter": "paper_summer2winter.yaml",
              "apple2orange": "paper_apple2orange.yaml"}
    assert set(table1) == set(SINGLE_MODAL_TABLE1.datasets())
    for dataset, name in table1.items():
        paper_ds, rows = mapped_rows(SINGLE_MODAL_TABLE1, load_suite(CONFIG_DIR / name), dataset)
        assert paper_ds == dataset
        # CycleGAN and every contrastive method of the table run (MUNIT, DistanceGAN, GcGAN do not)
        assert {"CycleGAN", "CUT", "NEGCUT", "LSeSim", "HnegSRC", "GraphCL"} <= set(rows), name
    # GraphCL Table 2: each published row exactly once
    suite = load_suite(CONFIG_DIR / "paper_graphcl_ablation.yaml")
    paper_ds, rows = mapped_rows(GRAPHCL_TABLE2, suite, "horse2zebra")
    assert paper_ds == "horse2zebra" and sorted(rows) == published_rows(GRAPHCL_TABLE2, "horse2zebra")
    assert len(rows) == 9
    # Hneg-SRC Table 4: seven rows on each dataset, with each dataset's README command as the full row
    for dataset, preset in [("horse2zebra", "hnegsrc"), ("cityscapes", "hnegsrc_city")]:
        suite = load_suite(CONFIG_DIR / f"paper_hnegsrc_ablation_{dataset}.yaml")
        paper_ds, rows = mapped_rows(HNEGSRC_TABLE4, suite, dataset)
        assert paper_ds == dataset and sorted(rows) == published_rows(HNEGSRC_TABLE4, dataset)
        full = next(m for m in suite.methods if m.label == preset)
        assert HNEGSRC_TABLE4.paper_method("hnegsrc", preset, full.options) == "DCE, SRC yes, hard negatives yes"
    # Hneg-SRC Table 2: both datasets with the three rows, the fork's per-dataset lambda_dce
    lambdas = {}
    for dataset in ("seasons", "weather"):
        suite = load_suite(CONFIG_DIR / f"paper_{dataset}.yaml")
        paper_ds, rows = mapped_rows(HNEGSRC_TABLE2, suite, dataset)
        assert paper_ds == dataset and sorted(rows) == published_rows(HNEGSRC_TABLE2, dataset)
        lambdas[dataset] = next(m for m in suite.methods if m.cls.registry_name == "hnegsrc").options.lambda_HDCE
        assert all(r.task_options.lambda_ds == 2.0 and r.task_options.n_steps == 100000 for r in suite.runs)
    assert lambdas == {"seasons": 1.0, "weather": 0.1}


def test_graphcl_ablation_rows_change_one_switch_of_the_readme_command():
    from methods.graphcl import README_SETTINGS

    suite = load_suite(CONFIG_DIR / "paper_graphcl_ablation.yaml")
    for method in suite.methods:
        changed = {k for k, v in README_SETTINGS.items() if getattr(method.options, k) != v}
        assert len(changed - {"pooling_ratio"}) <= 1, (method.label, changed)
    other = suite_from_dict({"suite": "x", "tasks": ["single_modal"], "datasets": ["synthetic_objects"],
                             "methods": [{"name": "graphcl", "params": {"lambda_GNN": 1.0}}]})
    assert GRAPHCL_TABLE2.paper_method("graphcl", "", other.methods[0].options) is None   # not a table row


def test_unknown_paper_table_is_a_config_error():
    raw = {"suite": "x", "tasks": ["single_modal"], "datasets": ["synthetic_objects"], "methods": ["cut"],
           "paper_table": "graphcl_tabel2"}
    with pytest.raises(ConfigError, match="paper_table 'graphcl_tabel2'.*graphcl_table2"):
        suite_from_dict(raw)


def test_ablation_report_sets_ours_the_paper_and_the_difference_side_by_side(tmp_path):
    from test_report_multimodal import table_rows

    suite, _ = paper_suite(CONFIG_DIR / "paper_graphcl_ablation.yaml", tmp_path)
    ours = {}
    for i, run in enumerate(suite.runs):
        ours[run.method.label] = 30.0 + i
        write_json(run.metrics_path, {
            "run_id": run.run_id, "suite": suite.name, "task": "single_modal", "dataset": run.dataset.label,
            "method": run.method.label, "method_type": run.method.cls.registry_name, "preset": run.method.preset,
            "seed": 0, "steps": 4, "metrics": {"FID": ours[run.method.label], "KIDx100": 0.5},
            "protocol": {"num_outputs": 120, "num_real": 140, "resolution": [256, 256]}})
    write_json(identity_dir(suite, suite.tasks[0], suite.datasets[0]) / "metrics.json", {
        "run_id": "single_modal/horse2zebra/identity", "suite": suite.name, "task": "single_modal", "dataset": "horse2zebra",
        "method": "identity", "method_type": "identity", "preset": "", "seed": 0, "steps": 0,
        "metrics": {"FID": 300.0, "KIDx100": 30.0}, "protocol": {}})
    text = write_report(suite).read_text()
    header, rows = table_rows(text.split("## single_modal / horse2zebra")[1])
    assert header[-4:] == ["Δ FID", "Δ KIDx100", "paper FID", "paper KIDx100"]
    got = {r["method"]: r for r in rows}
    assert got["graphcl_hop1"]["paper FID"] == "37.9"
    assert float(got["graphcl_hop1"]["Δ FID"]) == pytest.approx(ours["graphcl_hop1"] - 37.9)
    assert got["graphcl_th0.4"]["paper KIDx100"] == "–" and got["graphcl_th0.4"]["Δ KIDx100"] == "–"
    assert got["graphcl"]["Δ KIDx100"] == f"{0.5 - 0.271:+.3f}"
    # the protocol line: what the paper did beside what this suite did, differences flagged
    line = next(l for l in text.splitlines() if l.startswith("Protocol against the paper"))
    assert "120 translated, 140 reference" in line
    assert "checkpoint: paper chosen on the test set" in line and "here the last (**differs**)" in line
    assert "FID resize: paper legacy" in line and "here legacy (pytorch-fid's) (same)" in line
    assert "(120 translated, 140 reference) (same)" in line and "output size: paper 256x256; here 256x256 (same)" in line
    # fewer images (max_images) or smaller outputs than the paper's are flagged, not called the same
    for run in suite.runs:
        record = json.loads(run.metrics_path.read_text())
        record["protocol"] = {"num_outputs": 3, "num_real": 3, "resolution": [32, 32]}
        write_json(run.metrics_path, record)
    line = next(l for l in write_report(suite).read_text().splitlines() if l.startswith("Protocol against the paper"))
    assert "(3 translated, 3 reference) (**differs**)" in line and "here 32x32 (**differs**)" in line


# -- Hneg-SRC's contrastive switch (the InfoNCE rows of Table 4) --------------------------------------

def test_infonce_keeps_the_positive_in_the_denominator():
    from methods.shared.dce import patch_hdce

    torch.manual_seed(0)
    q, k = F.normalize(torch.randn(2, 5, 8), dim=-1), F.normalize(torch.randn(2, 5, 8), dim=-1)
    w = torch.rand(2, 5, 5)
    dce = patch_hdce(q, k, w, 0.07)
    info = patch_hdce(q, k, w, 0.07, decoupled=False)
    # by hand for one patch: -log(e^{p/t} / (e^{p/t} + sum_j e^{n_j/t})), own entry -10
    t, i = 0.07, 3
    p = (q[0, i] * k[0, i]).sum()
    n = torch.stack([w[0, i, j] * (q[0, i] * k[0, j]).sum() if j != i else torch.tensor(-10.0) for j in range(5)])
    by_hand = -(p / t) + torch.logsumexp(torch.cat([(p / t).view(1), n / t]), 0)
    assert info[0, i].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert torch.allclose(info, F.softplus(dce), atol=1e-5)          # InfoNCE = log(1 + e^DCE) > DCE
    assert (info > dce).all()


def test_hnegsrc_contrastive_option_routes_the_loss_and_defaults_to_dce():
    from tasks.feature_sources import encoder_pair
    from methods.hnegsrc import HnegSRC, HnegSRCParams

    assert HnegSRCParams().contrastive == "dce"
    torch.manual_seed(0)
    x, out = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    encode = lambda img: [F.avg_pool2d(img, 2), F.avg_pool2d(img, 4)]  # noqa: E731

    def hdce(contrastive):
        torch.manual_seed(1)
        method = HnegSRC(HnegSRCParams(num_patches=8, lambda_SRC=0.0, contrastive=contrastive))
        method.initialize(encoder_pair(encode, source=x, output=out))
        torch.manual_seed(2)
        return method.generator_losses(encoder_pair(encode, source=x, output=out))["HDCE"]

    assert hdce("infonce").item() > hdce("dce").item()
    with pytest.raises(ConfigError, match="contrastive"):
        suite_from_dict({"suite": "x", "tasks": ["single_modal"], "datasets": ["synthetic_objects"],
                         "methods": [{"name": "hnegsrc", "params": {"contrastive": "nce"}}]})


def test_multi_modal_report_sets_the_difference_beside_table2_and_flags_the_fid_network(tmp_path):
    from test_report_multimodal import suite_dict, table_rows, write_fake_runs

    suite = suite_from_dict(suite_dict(tmp_path), base_dir=tmp_path)
    write_fake_runs(suite)
    text = write_report(suite).read_text()
    header, rows = table_rows(text)
    assert header.index("Δ latent FID") < header.index("paper latent FID")
    got = {(r["dataset"], r["method"]): r for r in rows}
    assert got[("seasons", "none")]["Δ latent FID"] == f"{(60.0 + 64.0) / 2 - 63.06:+.2f}"      # 2 seeds' mean
    assert got[("seasons", "hnegsrc_seasons")]["Δ reference LPIPS"] == f"{(0.36 + 0.38) / 2 - 0.365:+.3f}"
    assert got[("synthetic_seasons", "none")]["Δ latent FID"] == "–"          # not the paper's data
    line = next(l for l in text.splitlines() if l.startswith("Protocol against the paper"))
    assert "test images: paper every val image" in line and "here every val image (same)" in line
    assert "FID resize: paper StarGAN v2's metrics/fid.py" in line and "(pytorch-fid's) (**differs**)" in line


def test_compression_report_sets_the_difference_beside_table3(tmp_path):
    from test_report_multimodal import table_rows

    suite, _ = paper_suite(CONFIG_DIR / "paper_compression.yaml", tmp_path)
    fid = {"none": 70.0, "hnegsrc_compression": 66.0}
    for run in suite.runs:
        if run.dataset.label != "horse2zebra":
            continue
        write_json(run.metrics_path, {
            "run_id": run.run_id, "suite": suite.name, "task": "compression", "dataset": "horse2zebra",
            "method": run.method.label, "method_type": run.method.cls.registry_name, "preset": run.method.preset,
            "seed": 0, "steps": 4, "protocol": {},
            "metrics": {"FID": fid[run.method.label], "params_M": 0.4, "MACs_G": 2.9,
                        "teacher_FID": 60.0, "teacher_params_M": 11.38, "teacher_MACs_G": 56.8}})
    text = write_report(suite).read_text()
    header, rows = table_rows(text.split("### horse2zebra")[1].split("### ")[0])
    got = {r["model"]: r for r in rows}
    delta = next(c for c in header if c.startswith("Δ") and "FID" in c)
    assert header.index(delta) < header.index(next(c for c in header if c.startswith("paper") and "FID" in c))
    assert float(got["teacher"][delta]) == pytest.approx(60.0 - 59.46)
    assert float(got["student (none)"][delta]) == pytest.approx(70.0 - 74.39)
    assert float(got["student + hnegsrc_compression"][delta]) == pytest.approx(66.0 - 64.64)
