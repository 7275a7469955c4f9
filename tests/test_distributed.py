"""Data-parallel training and evaluation (benchmark/core/distributed.py): two gloo processes on the
CPU, each with its share of the batch, compute what one process computes on the whole batch -- the
same averaged gradients (to 1e-6) and the same patch locations for CUT, a VGG-based method (LSeSim:
its heads' own optimiser, CycleGAN's image pool) and the multi-modal task -- and a sharded
evaluation scores exactly the N images one process scores, in the same order, for the same FID."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import methods.flsesim as flsesim_module
import methods.shared.patches as patches_module
from benchmark.config import suite_from_dict
from benchmark.core.distributed import SINGLE_PROCESS, Distributed
from benchmark.core.errors import ConfigError
from benchmark.runner import Runner, expand
from benchmark.selection import read_evals

WORLD = 2
FID_TOLERANCE = 1e-6
"""Relative, for scores of runs trained (in float64) by two processes and by one: their weights
agree up to rounding of sums taken in another order, and the outputs are rounded to uint8 before
scoring (the scores came out bit-equal here, also in float32)."""
EVAL_IMAGES = 5

CASES = {
    # CUT with its identity term: batch 4 -> 2 images per process.
    "cut": {"task": "single_modal", "method": "cut", "batch_size": 4},
    # LSeSim (learned heads stepped by the method's own optimiser) on an untrained VGG16, with
    # CycleGAN's image pool (F-LSeSim's default 50, here 1 so that the first step already swaps):
    # the pool sees the gathered global batch.
    "lsesim": {"task": "single_modal", "batch_size": 2, "options": {"pool_size": 1},
               "method": {"name": "lsesim", "params": {"vgg_weights": "untrained", "augment": False,
                                                       "patch_nums": 8}}},
    # StarGAN v2 with CUT's patch loss in both generator steps: batch 4 -> 2 per process.
    "multi_modal": {"task": "multi_modal", "method": "cut", "batch_size": 4},
}


def suite_dict(case: str, out_dir: Path) -> dict:
    spec = CASES[case]
    if spec["task"] == "single_modal":
        task = {"single_modal": {"ngf": 4, "ndf": 4, "n_blocks": 1, "n_steps": 2, "n_steps_decay": 2,
                                 "batch_size": spec["batch_size"], **spec.get("options", {})}}
        data = {"synthetic_objects": {"size": 32, "n_train": 8, "n_test": EVAL_IMAGES}}
    else:
        task = {"multi_modal": {"dim_in": 4, "max_conv_dim": 8, "hidden_dim": 16, "style_dim": 8,
                                "latent_dim": 4, "batch_size": spec["batch_size"], "n_steps": 3,
                                "ds_iter": 3, "lpips": False, "num_outs_per_domain": 2}}
        data = {"synthetic_seasons": {"size": 16, "n_train": 6, "n_val": 3,
                                      "domains": ["autumn", "summer", "winter"]}}
    method = spec["method"]
    if isinstance(method, str):
        method = {"name": method, "params": {"num_patches": 8}}
    return {"suite": case, "seeds": [0], "device": "cpu", "output_dir": str(out_dir / "results"),
            "checkpoint_every": 1, "tasks": task, "datasets": data, "methods": [method],
            "evaluation": {"num_test_images": EVAL_IMAGES, "kid_subsets": 2, "batch_size": 2,
                           "grid_images": 2, "label_scores": False}}


def build(case: str, out_dir: Path, place: Distributed):
    suite = suite_from_dict(suite_dict(case, out_dir), base_dir=out_dir)
    run = expand(suite)[0]
    runner = Runner(suite, None, place)
    return runner, run


def one_step(case: str, out_dir: Path, place: Distributed) -> dict:
    """Set a run up, take one training step: what each optimiser stepped with (its parameters'
    gradients after the ranks' average) and the patch locations drawn. In float64: what is left
    of the difference between two processes and one is then a bug, not float32 rounding of sums
    taken in another order (in float32 it reached 1.6e-4 on CUT generator gradients of about 40).
    (Not the parameters after the step: Adam's first step is lr * sign(gradient), and the
    gradients of the biases before an instance norm are rounding noise around 0.)"""
    runner, run = build(case, out_dir, place)
    dataset = runner.dataset(run.dataset)
    dataset.split("train", getattr(dataset, "domains", ["A"])[0])  # made (in float32) before the switch
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _one_step(runner, run)
    finally:
        torch.set_default_dtype(dtype)


def _one_step(runner: Runner, run) -> dict:
    task = runner.build_task(run)
    grads: dict[str, list] = {}
    for i, opt in enumerate(task._optimizers()):
        def record(o, args, kwargs, i=i):
            calls = sum(1 for k in grads if k.startswith(f"{i}:"))
            grads[f"{i}:{calls}"] = [p.grad.clone() if p.grad is not None else None
                                     for group in o.param_groups for p in group["params"]]
        opt.register_step_pre_hook(record)  # after the gradient average (registered before)
    locations = []
    original = patches_module.sample_locations

    def recording(features, num_patches):
        ids = original(features, num_patches)
        locations.append([i.clone() for i in ids])
        return ids
    patches_module.sample_locations = flsesim_module.sample_locations = recording
    try:
        task.train_step()
    finally:
        patches_module.sample_locations = flsesim_module.sample_locations = original
    return {"grads": grads, "locations": locations}


def sharded_evaluation(out_dir: Path, place: Distributed) -> dict:
    """CUT's single-modal evaluation of a freshly set-up run (real features not cached yet)."""
    from benchmark.core.metrics.fid import fid_from_features
    from tasks.evaluation import real_features, sharded_outputs_and_features

    runner, run = build("cut", out_dir, place)
    task = runner.build_task(run)
    outputs, features = sharded_outputs_and_features(task.translate, task.dataset.split("test", "A"),
                                                     EVAL_IMAGES, task.ctx)
    real = real_features(task.dataset, "test", task.ctx, side="B")
    return {"outputs": outputs, "features": features, "real": real,
            "FID": fid_from_features(features, real)}


def pixel_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A stand-in for LPIPS at 16 x 16 (AlexNet needs 32 x 32): per pair, the mean squared difference."""
    return ((a - b) ** 2).mean(dim=(1, 2, 3))


def multimodal_evaluation(out_dir: Path, place: Distributed) -> dict:
    """StarGAN v2's evaluation (both modes, its LPIPS path with a pixel distance) of a freshly set-up
    multi-modal run (the real features not cached yet)."""
    from tasks.multi_modal.evaluation import evaluate_multimodal

    runner, run = build("multi_modal", out_dir, place)
    task = runner.build_task(run)
    settings = dataclasses.replace(task.eval_settings(task.options), lpips=True)
    result = evaluate_multimodal(task.translator(), task.dataset, settings, task.ctx,
                                 lpips_distance=pixel_distance)
    per_pair = task.ctx.run_dir / "eval_per_pair.json"
    return {"metrics": result.metrics, "protocol": result.protocol,
            "per_pair": json.loads(per_pair.read_text()) if place.is_main else None}


def refused(out_dir: Path, place: Distributed) -> dict:
    """What setting up runs that cannot share a batch says under torchrun."""
    messages = {}
    for name, method in {"negcut": "negcut", "minibatch": {"name": "cut", "params": {
            "nce_includes_all_negatives_from_minibatch": True}}}.items():
        raw = suite_dict("cut", out_dir / name)
        raw["methods"] = [method]
        suite = suite_from_dict(raw, base_dir=out_dir)
        try:
            Runner(suite, None, place).build_task(expand(suite)[0])
            messages[name] = None
        except ConfigError as exc:
            messages[name] = str(exc)
    raw = suite_dict("cut", out_dir / "odd")
    raw["tasks"]["single_modal"]["batch_size"] = 3
    suite = suite_from_dict(raw, base_dir=out_dir)
    try:
        Runner(suite, None, place).build_task(expand(suite)[0])
        messages["odd_batch"] = None
    except ConfigError as exc:
        messages["odd_batch"] = str(exc)
    return messages


VALIDATION = {"eval_every": 1, "images": 2, "select": ["last", "best_val", "best_test"]}


VALIDATED = {"cut": 4, "multi_modal": 2}
"""The runs trained with evaluation during training, and their steps (the multi-modal one on two
domains: its evaluation translates every ordered pair of domains)."""


def validated_run(case: str, out_dir: Path, place: Distributed, stop_at: int | None = None) -> dict:
    """A run (CUT, or the multi-modal task) with evaluation at every step (validation and test) and the three checkpoint choices:
    trained to ``stop_at`` (then the run is left to resume), or to the end and finished. What the
    run's folder holds then (files written by rank 0). In float64, as :func:`one_step`: what is
    left of the difference between the weights two processes and one train is then far below what
    the outputs' rounding to uint8 can show."""
    raw = suite_dict(case, out_dir)
    raw["validation"] = VALIDATION
    if case == "multi_modal":
        raw["tasks"]["multi_modal"]["n_steps"] = VALIDATED[case]
        raw["datasets"]["synthetic_seasons"]["domains"] = ["summer", "winter"]
    suite = suite_from_dict(raw, base_dir=out_dir)
    run = expand(suite)[0]
    runner = Runner(suite, None, place)
    dataset = runner.dataset(run.dataset)
    dataset.split("train", getattr(dataset, "domains", ["A"])[0])  # made (in float32) before the switch
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        task = runner.train(run, stop_at=stop_at)
        if stop_at is not None:
            return {"step": task.step}
        record = runner.finish(run, task, 0.0)
    finally:
        torch.set_default_dtype(dtype)
    place.barrier()
    return {"record": record, "evals": read_evals(run.directory / "evals.jsonl"),
            "metrics": json.loads(run.metrics_path.read_text()),
            "kept": sorted(p.name for p in (run.directory / "checkpoints").glob("best_*.pt"))}


def train(case: str, out_dir: Path, place: Distributed, steps: int):
    runner, run = build(case, out_dir, place)
    return runner.train(run, stop_at=steps), run


def training_steps(out_dir: Path, place: Distributed) -> dict:
    return {case: one_step(case, out_dir, place) for case in CASES}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    from benchmark.plugins import load_builtins
    load_builtins()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        place = Distributed(rank=rank, world_size=world, local_rank=rank)
        out = Path(out_dir)
        results = training_steps(out / "ddp", place)
        results["eval"] = sharded_evaluation(out / "ddp_eval", place)
        results["mm_eval"] = multimodal_evaluation(out / "ddp_mm_eval", place)
        results["refused"] = refused(out / "ddp_refused", place)
        train("cut", out / "resume", place, steps=2)  # rank 0 checkpoints step 2
        # Evaluation during training: half of the steps, then (resumed) the rest and the finish.
        for case in VALIDATED:
            validated_run(case, out / "validated" / case, place, stop_at=VALIDATED[case] // 2)
            results[f"validated_{case}"] = validated_run(case, out / "validated" / case, place)
        with open(out / f"rank{rank}.pkl", "wb") as f:
            pickle.dump(results, f)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case in two gloo processes (one spawn for all), and in this process alone."""
    out = tmp_path_factory.mktemp("distributed")
    mp.start_processes(_worker, args=(WORLD, str(out / "init"), str(out)), nprocs=WORLD,
                       start_method="spawn", join=True)
    ranks = []
    for r in range(WORLD):
        with open(out / f"rank{r}.pkl", "rb") as f:
            ranks.append(pickle.load(f))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = training_steps(out / "single", SINGLE_PROCESS)
        single["eval"] = sharded_evaluation(out / "single_eval", SINGLE_PROCESS)
        single["mm_eval"] = multimodal_evaluation(out / "single_mm_eval", SINGLE_PROCESS)
        # The two processes' checkpoint of step 2, resumed by one process, against one process alone.
        _, run = build("cut", out / "resume", SINGLE_PROCESS)
        single["checkpointed_step"] = torch.load(run.checkpoint_path, weights_only=False)["step"]
        single["resumed"] = train("cut", out / "resume", SINGLE_PROCESS, steps=3)
        single["straight"] = train("cut", out / "straight", SINGLE_PROCESS, steps=3)
        for case in VALIDATED:
            single[f"validated_{case}"] = validated_run(case, out / "single_validated" / case, SINGLE_PROCESS)
    finally:
        torch.set_num_threads(threads)
    return ranks, single


def _max_difference(a: list, b: list) -> float:
    assert len(a) == len(b)
    worst = 0.0
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.shape == y.shape
            worst = max(worst, float((x - y).abs().max()))
    return worst


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_step_with_the_gradients_of_one_process_on_the_whole_batch(results, case):
    ranks, single = results
    reference = single[case]
    # Every optimiser stepped as often, with the whole batch's gradients (to 1e-6), on every rank.
    for rank in ranks:
        got = rank[case]
        assert sorted(got["grads"]) == sorted(reference["grads"])
        assert any(g is not None and g.abs().max() > 0 for gs in reference["grads"].values() for g in gs)
        for key in reference["grads"]:
            assert got["grads"][key][0].dtype == torch.float64
            difference = _max_difference(got["grads"][key], reference["grads"][key])
            scale = max(float(g.abs().max()) for g in reference["grads"][key] if g is not None)
            assert difference <= 1e-6, key
            assert difference <= 1e-10 * scale, key
    # The ranks stay identical: their averaged gradients are bit-equal.
    for key in reference["grads"]:
        assert _max_difference(ranks[0][case]["grads"][key], ranks[1][case]["grads"][key]) == 0.0


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_sample_the_patch_locations_of_one_process(results, case):
    ranks, single = results
    reference = single[case]["locations"]
    assert reference, "the step sampled no patch locations"
    for rank in ranks:
        got = rank[case]["locations"]
        assert len(got) == len(reference)
        for drawn, expected in zip(got, reference):
            assert all(torch.equal(a, b) for a, b in zip(drawn, expected, strict=True))


def test_sharded_evaluation_scores_each_image_once_for_the_fid_of_one_process(results):
    ranks, single = results
    reference = single["eval"]
    assert reference["outputs"].shape[0] == EVAL_IMAGES
    for rank in ranks:
        got = rank["eval"]
        # Exactly the N outputs of one process, in its order, with its Inception features.
        assert torch.equal(got["outputs"], reference["outputs"])
        assert got["features"].shape == reference["features"].shape == (EVAL_IMAGES, 2048)
        assert abs(got["features"] - reference["features"]).max() <= 1e-9
        assert abs(got["real"] - reference["real"]).max() <= 1e-9  # the real side sharded too
        assert got["FID"] == pytest.approx(reference["FID"], rel=1e-9)


def test_sharded_multimodal_evaluation_gives_the_scores_of_one_process(results):
    ranks, single = results
    reference = single["mm_eval"]
    protocol = reference["protocol"]
    # 3 domains: 6 (source, target) pairs of 3 val images x 2 outputs each, in both modes.
    assert protocol["images_per_mode"] == 6 * 3 * 2
    assert protocol["lpips_pairs_per_mode"] == 6 * 3 * 1
    metrics = reference["metrics"]
    for name in ("latent_FID", "reference_FID", "latent_LPIPS", "reference_LPIPS",
                 "latent_L1_diversity", "reference_L1_diversity", "structure_score"):
        assert name in metrics
    assert metrics["latent_LPIPS"] > 0 and metrics["latent_FID"] > 0
    for rank in ranks:
        got = rank["mm_eval"]
        assert got["protocol"]["images_per_mode"] == protocol["images_per_mode"]  # each image once
        assert got["protocol"]["lpips_pairs_per_mode"] == protocol["lpips_pairs_per_mode"]
        assert sorted(got["metrics"]) == sorted(metrics)
        for name, value in metrics.items():
            assert got["metrics"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    # The per-pair scores rank 0 writes are those of one process.
    assert ranks[0]["mm_eval"]["per_pair"].keys() == reference["per_pair"].keys()
    for key, value in reference["per_pair"].items():
        assert ranks[0]["mm_eval"]["per_pair"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_runs_that_cannot_share_a_batch_are_refused_with_the_reason(results):
    ranks, _ = results
    messages = ranks[0]["refused"]
    assert "noise is drawn per image" in messages["negcut"]
    assert "negatives from the other images" in messages["minibatch"]
    assert "batch of 3 cannot be shared equally by 2 processes" in messages["odd_batch"]


def test_a_run_of_two_processes_resumes_in_one_as_if_one_had_trained_it(results):
    _, single = results
    (resumed, _), (straight, _) = single["resumed"], single["straight"]
    assert resumed.step == straight.step == 3
    x = torch.linspace(-1, 1, 3 * 32 * 32).view(1, 3, 32, 32)
    assert torch.allclose(resumed.translate(x), straight.translate(x), atol=1e-4)
    assert single["checkpointed_step"] == 2  # written by rank 0 of the two processes


@pytest.mark.parametrize("case", list(VALIDATED))
def test_evaluation_during_training_under_two_processes_writes_what_one_process_writes(results, case):
    ranks, single = results
    reference = single[f"validated_{case}"]["evals"]
    # A point per step, each scored on validation and test.
    assert [(r["step"], r["split"]) for r in reference] == [
        (s, sp) for s in range(1, VALIDATED[case] + 1) for sp in ("val", "test")]
    got = ranks[0][f"validated_{case}"]["evals"]  # rank 0 wrote it, once per point (resumed halfway: no duplicate)
    assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in reference]
    for mine, theirs in zip(got, reference):
        assert sorted(mine["metrics"]) == sorted(theirs["metrics"])
        for name, value in theirs["metrics"].items():
            assert mine["metrics"][name] == pytest.approx(value, rel=FID_TOLERANCE, abs=1e-9), (mine["step"], name)
    # The FIDs differ between points by much more than the two runs differ: the choice is meaningful.
    vals = [r["metrics"]["FID"] for r in reference if r["split"] == "val"]
    assert max(vals) - min(vals) > 100 * FID_TOLERANCE * max(vals)


@pytest.mark.parametrize("case", list(VALIDATED))
def test_two_processes_choose_the_checkpoints_one_process_chooses_and_agree(results, case):
    ranks, single = results
    expected = single[f"validated_{case}"]["metrics"]["selection"]
    written = ranks[0][f"validated_{case}"]["metrics"]
    assert written["processes"] == WORLD and written["validation"]["points"] == VALIDATED[case]
    for rule in ("last", "best_val", "best_test"):
        assert written["selection"][rule]["step"] == expected[rule]["step"], rule
        scores = written["selection"][rule]["metrics"]
        assert sorted(scores) == sorted(expected[rule]["metrics"])
        for name, value in expected[rule]["metrics"].items():
            assert scores[name] == pytest.approx(value, rel=FID_TOLERANCE, abs=1e-9), (rule, name)
        # Every rank holds the same choice and scores (the ranks' records: rank 0's reading, broadcast).
        assert (ranks[1][f"validated_{case}"]["record"]["selection"][rule]
                == ranks[0][f"validated_{case}"]["record"]["selection"][rule])
    assert ranks[0][f"validated_{case}"]["kept"] == single[f"validated_{case}"]["kept"] == []  # discarded


# -- the pieces, in one process -----------------------------------------------------------------

def test_shards_cover_every_image_once_in_whole_batches():
    for count, batch, world in [(7, 2, 2), (7, 2, 3), (6, 2, 2), (1, 4, 2), (0, 2, 2), (10, 3, 4)]:
        shards = [Distributed(rank=r, world_size=world).shard(count, batch) for r in range(world)]
        assert [i for s in shards for i in s] == list(range(count))
        for s in shards:
            assert s.start % batch == 0 or s.start == count  # whole batches of one process
    assert Distributed(rank=1, world_size=3).shard(7, 2) == range(2, 4)
    assert SINGLE_PROCESS.shard(7, 2) == range(7)


def test_rows_split_a_batch_equally_and_refuse_what_does_not_divide():
    batch = torch.arange(8).view(4, 2)
    parts = [Distributed(rank=r, world_size=2).local(batch) for r in range(2)]
    assert torch.equal(torch.cat(parts), batch)
    assert SINGLE_PROCESS.local(batch) is batch
    with pytest.raises(ConfigError, match="batch of 5 cannot be shared equally by 2"):
        Distributed(rank=0, world_size=2).rows(5)


def test_one_process_adds_no_hook_and_no_communication():
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    SINGLE_PROCESS.synchronize([opt])
    assert not opt._optimizer_step_pre_hooks
    grads = torch.ones(3)
    assert SINGLE_PROCESS.gather_rows(grads) is grads
    assert SINGLE_PROCESS.broadcast({"a": 1}) == {"a": 1}
