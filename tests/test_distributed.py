"""Data-parallel training and evaluation (benchmark/core/distributed.py): two gloo processes on the
CPU, each with its share of the batch, compute what one process computes on the whole batch -- the
same averaged gradients (to 1e-6) and the same patch locations for CUT, a VGG-based method (LSeSim:
its heads' own optimiser, CycleGAN's image pool), the multi-modal task and the compression task
(with its teacher trained by rank 0) -- and a sharded evaluation scores exactly the N images one
process scores, in the same order, for the same FID; the compression task's search takes the
decisions of one process."""
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

from conftest import share_teachers, use_stand_in_inception

WORLD = 2
FID_TOLERANCE = 1e-6
"""Relative, for scores of runs trained (in float64) by two processes and by one: their weights
agree up to rounding of sums taken in another order, and the outputs are rounded to uint8 before
scoring (the scores came out bit-equal here, also in float32)."""
EVAL_IMAGES = 5
COMPRESSION_SEARCH = {"population_size": 3, "iterations": 1, "budget": 1.0e9, "held_out_images": 3,
                      "criterion": "fid"}

CASES = {
    # Fast GAN Compression with Hneg-SRC's compression preset: the teacher trained by rank 0 (the
    # other rank waits for the cache), the sampled sub-network, D, the student with its mappings and
    # the method's heads; batch 4 -> 2 per process.
    "compression": {"task": "compression", "batch_size": 4,
                    "method": {"name": "hnegsrc_compression", "params": {"num_patches": 8}}},
    # CUT with its identity term: batch 4 -> 2 images per process.
    "cut": {"task": "single_modal", "method": "cut", "batch_size": 4},
    # LSeSim (learned heads stepped by the method's own optimiser) on an untrained VGG16, with its
    # colour-jitter augmentation (the preset's setting: the jitter of every image of the whole batch
    # is drawn by each process, which applies its rows') and CycleGAN's image pool (F-LSeSim's
    # default 50, here 1 so that the first step already swaps): the pool sees the gathered global batch.
    "lsesim": {"task": "single_modal", "batch_size": 2, "options": {"pool_size": 1},
               "method": {"name": "lsesim", "params": {"vgg_weights": "untrained", "augment": True,
                                                       "patch_nums": 8}}},
    # NEGCUT: its negative generator's noise, drawn per image, is drawn for the whole batch by every
    # process (each keeps its rows); N's own step and optimiser are averaged too.
    "negcut": {"task": "single_modal", "method": "negcut", "batch_size": 4},
    # StarGAN v2 with CUT's patch loss in both generator steps: batch 4 -> 2 per process.
    "multi_modal": {"task": "multi_modal", "method": "cut", "batch_size": 4},
    # SinCUT: StyleGAN2 networks with noise injection, crops of one image pair, the sincut preset
    # with the task's patch settings (one patch per crop, negatives from every crop of the batch:
    # the keys gathered from both processes): batch 4 -> 2 crops of each image per process.
    "single_image": {"task": "single_image", "method": {"name": "sincut"}, "batch_size": 4},
}


def suite_dict(case: str, out_dir: Path) -> dict:
    spec = CASES[case]
    if spec["task"] == "compression":
        task = {"compression": {"student_ngf": 4, "channel_choices": [[4, 2]] * 8, "n_steps": 2, "n_steps_decay": 2,
                                "batch_size": spec["batch_size"], "search": COMPRESSION_SEARCH,
                                "teacher": {"ngf": 4, "n_blocks": 3, "n_steps": 1, "n_steps_decay": 1,
                                            "batch_size": 2}}}
        data = {"synthetic_objects": {"size": 32, "n_train": 11, "n_test": EVAL_IMAGES}}
    elif spec["task"] == "single_modal":
        task = {"single_modal": {"ngf": 4, "ndf": 4, "n_blocks": 1, "n_steps": 2, "n_steps_decay": 2,
                                 "batch_size": spec["batch_size"], **spec.get("options", {})}}
        data = {"synthetic_objects": {"size": 32, "n_train": 8, "n_test": EVAL_IMAGES}}
    elif spec["task"] == "single_image":
        task = {"single_image": {"ngf": 1, "ndf": 2, "n_blocks": 4, "crop_size": 16, "n_steps": 2,
                                 "n_steps_decay": 2, "batch_size": spec["batch_size"], "lpips": False}}
        data = {"synthetic_painting": {"width": 64, "height": 64, "strokes_per_pixel": 0.05}}
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
    if case == "compression":  # one teacher for every compression case, trained by rank 0 at the first
        share_teachers(out_dir / "results", out_dir.parent / "teachers")
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
    return in_float64(runner, run, lambda: _one_step(runner, run))


def in_float64(runner: Runner, run, compute):
    """``compute()`` with float64 as the default dtype (the dataset's images made before, in float32)."""
    dataset = runner.dataset(run.dataset)
    if run.task.cls.registry_name == "single_image":  # made (in float32) before the switch
        dataset.image("A"), dataset.image("B")
    else:
        dataset.split("train", getattr(dataset, "domains", ["A"])[0])
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return compute()
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
    rows, batch = [], task._batch

    def recording_batch(step):  # the rows this process trains on (its share of the batch)
        b = batch(step)
        rows.append((b[0] if isinstance(b, tuple) else b.x_src).shape[0])
        return b
    task._batch = recording_batch
    try:
        task.train_step()
    finally:
        patches_module.sample_locations = flsesim_module.sample_locations = original
    return {"grads": grads, "locations": locations, "rows": rows}


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


def single_image_evaluation(out_dir: Path, place: Distributed) -> dict:
    """The single-image task's evaluation (one image, scored by rank 0) of a freshly set-up run."""
    runner, run = build("single_image", out_dir, place)
    result = runner.build_task(run).evaluate()
    return {"metrics": result.metrics, "output": result.samples["output"]}
def pixel_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A stand-in for LPIPS at 16 x 16 (AlexNet needs 32 x 32): per pair, the mean squared difference."""
    return ((a - b) ** 2).mean(dim=(1, 2, 3))


def multimodal_evaluation(out_dir: Path, place: Distributed) -> dict:
    """StarGAN v2's evaluation (both modes, its LPIPS path with a pixel distance) of a freshly set-up
    multi-modal run (the real features not cached yet)."""
    from tasks.multi_modal.evaluation import evaluate_multimodal

    # two outputs per image: LPIPS diversity compares them
    suite = suite_from_dict(two_domains(suite_dict("multi_modal", out_dir), outputs=2), base_dir=out_dir)
    run = expand(suite)[0]
    runner = Runner(suite, None, place)
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
    for name, method in {"negcut_minibatch": {"name": "negcut", "params": {
            "nce_includes_all_negatives_from_minibatch": True}}, "minibatch": {"name": "hnegsrc", "params": {
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


def compression_evaluation(out_dir: Path, place: Distributed) -> dict:
    """The compression task's evaluation of a freshly set-up supernet (the search on held-out
    training images, the chosen subnet's, the largest one's and the teacher's test scores) and the
    files each process wrote on the way."""
    import tasks.compression.search as search_module
    import tasks.compression.task as task_module

    runner, run = build("compression", out_dir, place)
    task = runner.build_task(run)
    written = []
    originals = {m: m.atomic_write for m in (search_module, task_module)}

    def recording(original):
        def atomic_write(path, *args, **kwargs):
            written.append(str(Path(path).relative_to(out_dir)))
            return original(path, *args, **kwargs)
        return atomic_write
    for module, original in originals.items():
        module.atomic_write = recording(original)
    try:
        result = task.evaluate()
    finally:
        for module, original in originals.items():
            module.atomic_write = original
    return {"metrics": result.metrics, "subnet": result.protocol["subnet"], "written": sorted(set(written)),
            "output": result.samples["output"], "rows": [t.shape[0] for t in task._batch(0)]}


VALIDATION = {"eval_every": 1, "images": 2, "select": ["last", "best_val", "best_test"]}


VALIDATED = {"cut": 2}
"""The runs trained with evaluation during training, and their steps. The selection code is the
task's ``evaluate_point`` behind one task-independent runner path; a multi-modal case (``"multi_modal":
2``, on two domains, one output per image) passes too but costs 40 s of the suite, and the
multi-modal evaluation's sharding has its own test above."""


def two_domains(raw: dict, outputs: int = 1) -> dict:
    """A multi-modal suite on two of its domains, ``outputs`` per test image and mode (the
    evaluation translates every ordered pair of domains: 2 pairs instead of 6)."""
    raw["datasets"]["synthetic_seasons"]["domains"] = ["summer", "winter"]
    raw["tasks"]["multi_modal"]["num_outs_per_domain"] = outputs
    return raw


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
        two_domains(raw)
    else:  # a step at the initial rate, then one of decay
        raw["tasks"]["single_modal"].update(n_steps=VALIDATED[case] // 2, n_steps_decay=VALIDATED[case] - VALIDATED[case] // 2)
    suite = suite_from_dict(raw, base_dir=out_dir)
    run = expand(suite)[0]
    runner = Runner(suite, None, place)

    def train_and_finish():
        task = runner.train(run, stop_at=stop_at)
        return task, (runner.finish(run, task, 0.0) if stop_at is None else None)
    task, record = in_float64(runner, run, train_and_finish)
    if stop_at is not None:
        return {"step": task.step}
    place.barrier()
    return {"record": record, "evals": read_evals(run.directory / "evals.jsonl"),
            "metrics": json.loads(run.metrics_path.read_text()),
            "kept": sorted(p.name for p in (run.directory / "checkpoints").glob("best_*.pt"))}


def train(case: str, out_dir: Path, place: Distributed, steps: int, float64: bool = False):
    runner, run = build(case, out_dir, place)
    if float64:
        return in_float64(runner, run, lambda: runner.train(run, stop_at=steps)), run
    return runner.train(run, stop_at=steps), run


def training_steps(out_dir: Path, place: Distributed) -> dict:
    return {case: one_step(case, out_dir, place) for case in CASES}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    from benchmark.plugins import load_builtins
    from tasks.compression import teacher
    load_builtins()
    use_stand_in_inception()  # as in the test process (conftest)
    teacher.TEACHER_POLL_SECONDS = 0.1  # rank 1 waits for the teacher rank 0 trains
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        place = Distributed(rank=rank, world_size=world, local_rank=rank)
        out = Path(out_dir)
        results = training_steps(out / "ddp", place)
        results["compression_eval"] = compression_evaluation(out / "ddp_compression_eval", place)
        results["eval"] = sharded_evaluation(out / "ddp_eval", place)
        results["mm_eval"] = multimodal_evaluation(out / "ddp_mm_eval", place)
        results["refused"] = refused(out / "ddp_refused", place)
        results["single_image_eval"] = single_image_evaluation(out / "ddp_single_image_eval", place)
        train("cut", out / "resume", place, steps=2)  # rank 0 checkpoints step 2
        train("compression", out / "resume_compression", place, steps=2, float64=True)
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
    """Every case in two gloo processes (one start for all), and in this process alone. The two are
    forked from this process (which starts no process group itself), so they need not import torch
    and the benchmark again; each sets one intra-op thread before any torch work."""
    out = tmp_path_factory.mktemp("distributed")
    mp.start_processes(_worker, args=(WORLD, str(out / "init"), str(out)), nprocs=WORLD,
                       start_method="fork", join=True)
    ranks = []
    for r in range(WORLD):
        with open(out / f"rank{r}.pkl", "rb") as f:
            ranks.append(pickle.load(f))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = training_steps(out / "single", SINGLE_PROCESS)
        single["eval"] = sharded_evaluation(out / "single_eval", SINGLE_PROCESS)
        single["single_image_eval"] = single_image_evaluation(out / "single_single_image_eval", SINGLE_PROCESS)
        single["mm_eval"] = multimodal_evaluation(out / "single_mm_eval", SINGLE_PROCESS)
        # The two processes' checkpoint of step 2, resumed by one process, against one process alone.
        _, run = build("cut", out / "resume", SINGLE_PROCESS)
        single["checkpointed_step"] = torch.load(run.checkpoint_path, weights_only=False)["step"]
        single["resumed"] = train("cut", out / "resume", SINGLE_PROCESS, steps=3)
        single["straight"] = train("cut", out / "straight", SINGLE_PROCESS, steps=3)
        # (in float64: float32 sums taken in another order move Adam's first steps by up to 1e-4)
        single["resumed_compression"] = train("compression", out / "resume_compression", SINGLE_PROCESS, steps=3,
                                              float64=True)
        single["straight_compression"] = train("compression", out / "straight_compression", SINGLE_PROCESS,
                                               steps=3, float64=True)
        single["compression_eval"] = compression_evaluation(out / "single_compression_eval", SINGLE_PROCESS)
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
    # Every optimiser stepped as often, with the whole batch's gradients (to 1e-6), on every rank,
    # each rank having trained on its share of the batch (not on the whole batch twice).
    assert reference["rows"] and all(r == CASES[case]["batch_size"] for r in reference["rows"])
    for rank in ranks:
        got = rank[case]
        assert got["rows"] == [r // WORLD for r in reference["rows"]]
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


def test_single_image_evaluation_under_two_processes_is_that_of_one_process(results):
    ranks, single = results
    reference = single["single_image_eval"]
    assert reference["output"].shape[0] == 1 and "SIFID" in reference["metrics"]
    for rank in ranks:  # rank 0 scored the image and handed the result to rank 1
        assert torch.equal(rank["single_image_eval"]["output"], reference["output"])
        assert rank["single_image_eval"]["metrics"] == pytest.approx(reference["metrics"], rel=1e-9)
def test_sharded_multimodal_evaluation_gives_the_scores_of_one_process(results):
    ranks, single = results
    reference = single["mm_eval"]
    protocol = reference["protocol"]
    # 2 domains: 2 (source, target) pairs of 3 val images x 2 outputs each, in both modes.
    assert protocol["images_per_mode"] == 2 * 3 * 2
    assert protocol["lpips_pairs_per_mode"] == 2 * 3 * 1
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
    assert "negatives from the other images" in messages["negcut_minibatch"]
    assert "negatives from the other images" in messages["minibatch"]
    assert "batch of 3 cannot be shared equally by 2 processes" in messages["odd_batch"]


def test_a_run_of_two_processes_resumes_in_one_as_if_one_had_trained_it(results):
    _, single = results
    (resumed, _), (straight, _) = single["resumed"], single["straight"]
    assert resumed.step == straight.step == 3
    x = torch.linspace(-1, 1, 3 * 32 * 32).view(1, 3, 32, 32)
    assert torch.allclose(resumed.translate(x), straight.translate(x), atol=1e-4)
    assert single["checkpointed_step"] == 2  # written by rank 0 of the two processes


def test_compression_search_and_scores_under_two_processes_are_those_of_one_written_by_rank_0(results):
    """The evolution search scores each subnet on sharded held-out images, so both ranks take the
    one process's decisions: the same subnet, the same test scores (teacher, largest, chosen);
    only rank 0 writes the search state, the exported subnet and the teacher's cached scores."""
    ranks, single = results
    reference = single["compression_eval"]
    assert {"FID", "teacher_FID", "largest_FID", "search_fid", "gap_to_teacher_L1"} <= set(reference["metrics"])
    # each process trains on its half of a batch of 4 (A and B)
    assert reference["rows"] == [4, 4] and [r["compression_eval"]["rows"] for r in ranks] == [[2, 2], [2, 2]]
    for rank in ranks:
        got = rank["compression_eval"]
        assert got["subnet"] == reference["subnet"]
        assert torch.equal(got["output"], reference["output"])
        assert sorted(got["metrics"]) == sorted(reference["metrics"])
        for name, value in reference["metrics"].items():
            assert got["metrics"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    written = [Path(p).name for p in reference["written"]]
    assert {"state.json", "subnet.pt", "subnet.json"} <= set(written) and any(p.endswith(".pt") and "teacher_scores" in p
                                                                            for p in reference["written"])
    assert [Path(p).name for p in ranks[0]["compression_eval"]["written"]] == written
    assert ranks[1]["compression_eval"]["written"] == []


def test_a_compression_run_of_two_processes_resumes_in_one_as_if_one_had_trained_it(results):
    _, single = results
    (resumed, _), (straight, _) = single["resumed_compression"], single["straight_compression"]
    assert resumed.step == straight.step == 3
    x = torch.linspace(-1, 1, 3 * 32 * 32, dtype=torch.float64).view(1, 3, 32, 32)
    for config in ({"channels": [4] * 8}, {"channels": [2, 4] * 4}):
        a, b = resumed._translate_with(config)(x), straight._translate_with(config)(x)
        assert a.dtype == torch.float64
        assert (a - b).abs().max() <= 1e-9


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


def test_single_image_noise_of_a_shared_batch_is_the_rows_of_one_process_draw():
    torch.manual_seed(3)
    whole = torch.randn(8, 1, 2, 3)  # one process: crops A (4) then crops B (4) in one pass
    after = torch.rand(())
    for rank in range(2):
        torch.manual_seed(3)
        local = Distributed(rank=rank, world_size=2).draw_rows(lambda n: torch.randn(n, 1, 2, 3), 4, parts=2)
        assert torch.equal(local, torch.cat([whole[2 * rank:2 * rank + 2], whole[4 + 2 * rank:6 + 2 * rank]]))
        assert torch.equal(torch.rand(()), after)  # the global RNG moved on as one process's did
