"""The suites shipped in configs/: each loads and validates, and each says what it claims."""
from pathlib import Path

import pytest

from benchmark.config import load_suite
from benchmark.reference import SINGLE_MODAL_TABLE1
from benchmark.report import dataset_paper_name
from benchmark.runner import expand
from benchmark.core.settings import field_defaults

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads_and_expands(path):
    suite = load_suite(path)
    runs = expand(suite)
    assert runs and all(run.planned_steps() > 0 for run in runs)


def test_quick_all_runs_every_registered_method_and_its_presets():
    from benchmark.core import registry

    suite = load_suite(CONFIGS[0].parent / "quick_all.yaml")
    # the project's own methods (other tests register plugins in the same registry)
    builtin = {name for name in registry.METHODS.names()
               if registry.METHODS.get(name).__module__.startswith("methods.")}
    presets = {p for name in builtin for p in (registry.METHODS.get(name).presets or [name])}
    # every patch-wise method: not the CycleGAN baseline (two generators and two discriminators per
    # step; whether the quick suites can afford it is measured separately)
    assert len(builtin) == 7 and {m.cls.registry_name for m in suite.methods} == builtin - {"cyclegan"}
    # every preset but hnegsrc_city (hnegsrc with Cityscapes' lambda and step curriculum: time), the
    # single-image task's presets (quick_single_image.yaml runs those) and the compression task's
    # (quick_compression.yaml)
    others = {"hnegsrc_city", "sincut", "hnegsrc_single", "hnegsrc_compression", "cyclegan"}
    assert sorted(m.label for m in suite.methods) == sorted(presets - others)


@pytest.mark.parametrize("name", ["paper_horse2zebra.yaml", "paper_cityscapes.yaml"])
def test_paper_suites_use_official_settings_and_map_onto_the_published_table(name):
    suite = load_suite(CONFIGS[0].parent / name)
    (dataset,) = suite.datasets
    assert dataset_paper_name(dataset, SINGLE_MODAL_TABLE1) is not None
    mapped = {SINGLE_MODAL_TABLE1.paper_method(m.cls.registry_name, m.preset) for m in suite.methods}
    # every published method runs, the CycleGAN baseline included
    assert set(SINGLE_MODAL_TABLE1.method_rows.values()) <= mapped
    defaults = field_defaults(suite.tasks[0].cls.Options)
    for run in expand(suite):
        options = run.task_options
        changed = {k for k, v in defaults.items() if getattr(options, k) != v}
        allowed = {"n_steps", "n_steps_decay"} | set(run.method.cls.task_defaults)
        assert changed <= allowed, (run.method.label, changed - allowed)
        if run.method.cls.registry_name == "flsesim":
            assert options.lr == 1e-4 and options.pool_size == 50     # F-LSeSim's own settings
    assert (dataset.options.size, dataset.options.load_size) == (256, 286)
    steps = {run.method.label: run.planned_steps() for run in expand(suite)}
    assert steps["fastcut"] == steps["fastnegcut"] == steps["cut"] // 2    # 200 of CUT's 400 epochs


def test_compression_suites_map_onto_table3_and_keep_the_official_search_settings():
    from benchmark.reference import PAPER_TABLES
    from tasks.compression.search import OFFICIAL_SEARCH_OPTIONS

    table = PAPER_TABLES["compression"]
    paper = load_suite(CONFIGS[0].parent / "paper_compression.yaml")
    assert {dataset_paper_name(d, table) for d in paper.datasets} == {"horse2zebra", "maps", "cityscapes"}
    assert {table.paper_method(m.cls.registry_name, m.preset) for m in paper.methods} == {
        "student_baseline", "student_HnegSRC"}
    official = {"horse2zebra": "horse2zebra", "maps": "map2sat", "cityscapes": "cityscapes"}
    for run in expand(paper):
        search, expected = run.task_options.search, OFFICIAL_SEARCH_OPTIONS[official[run.dataset.label]]
        assert (search.population_size, search.iterations, search.mutate_prob, search.budget) == (
            expected.population_size, expected.iterations, expected.mutate_prob, expected.budget)
        assert run.task_options.student_ngf == 64 and run.task_options.teacher.ngf == 64
    quick = load_suite(CONFIGS[0].parent / "quick_compression.yaml")
    assert {m.label for m in quick.methods} == {"none", "hnegsrc_compression"}
    assert {d.cls.kind for d in quick.datasets} == {"unpaired", "paired"}


def test_quick_multimodal_has_a_diversity_loss_control_that_differs_only_in_lambda_ds():
    from dataclasses import asdict
    from tasks.multi_modal.networks import diversity_weight

    suite = load_suite(CONFIGS[0].parent / "quick_multimodal.yaml")
    runs = {run.method.label: run for run in expand(suite)}
    assert {"none", "none_ds0", "cut"} <= set(runs) and any(k.startswith("hnegsrc") for k in runs)
    none, control = asdict(runs["none"].task_options), asdict(runs["none_ds0"].task_options)
    assert {k for k in none if none[k] != control[k]} == {"lambda_ds"}
    assert control["lambda_ds"] == 0 and runs["none_ds0"].method.cls is runs["none"].method.cls
    # the calibrated setting keeps (nearly) its whole diversity weight to the last step
    last = diversity_weight(none["lambda_ds"], none["n_steps"] - 1, none["ds_iter"])
    assert none["lambda_ds"] > 0 and last >= 0.9 * none["lambda_ds"]
