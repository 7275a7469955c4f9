"""The compression task end to end on tiny data: where gradients go, bit-exact resume, a batch of 2
against two batches of 1, the search's budget, and the report's Table 3 layout."""
import copy
import hashlib
import json

import pytest
import torch

from benchmark.config import suite_from_dict
from benchmark.runner import Runner, expand

from conftest import share_teachers

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one thread (conftest)

CHOICES = [[8, 4]] * 8


def suite_dict(out, method="hnegsrc_compression", dataset="synthetic_objects", steps=4, **task):
    options = {
        "n_steps": steps // 2, "n_steps_decay": steps - steps // 2, "student_ngf": 8,
        "channel_choices": CHOICES, "batch_size": 2,
        "teacher": {"ngf": 8, "n_blocks": 3, "n_steps": 2, "n_steps_decay": 1, "batch_size": 2},
        "search": {"population_size": 4, "iterations": 1, "budget": 3.0e6, "held_out_images": 4, "criterion": "fid"},
    }
    options.update(task)
    return {
        "suite": "ctest", "seeds": [0], "output_dir": str(out), "checkpoint_every": 2,
        "tasks": {"compression": options},
        "datasets": {dataset: {"size": 32, "n_train": 12, "n_test": 4}},
        "methods": [method],
        "evaluation": {"num_test_images": 4, "batch_size": 4, "grid_images": 2, "label_scores": False},
    }


@pytest.fixture
def teachers(teacher_cache):
    return teacher_cache  # the session's teachers: the suites here share one per dataset


def build(tmp_path, teachers, name="a", **kwargs):
    share_teachers(tmp_path / name, teachers)
    suite = suite_from_dict(suite_dict(tmp_path / name, **kwargs), base_dir=tmp_path)
    run = expand(suite)[0]
    return Runner(suite), run


def test_one_step_trains_student_mappings_and_heads_never_the_teacher(tmp_path, teachers):
    runner, run = build(tmp_path, teachers)
    task = runner.build_task(run)
    teacher_before = copy.deepcopy(task.teacher.state_dict())
    student_before = copy.deepcopy(task.student.state_dict())
    logs = task.train_step()
    assert {"D", "G_GAN", "recon", "distill", "HDCE", "SRC"} <= set(logs)
    assert all(p.grad is None for p in task.teacher.parameters())
    assert all(torch.equal(v, task.teacher.state_dict()[k]) for k, v in teacher_before.items())
    # Every mapping layer and the student's first conv got a gradient and moved.
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in task.mappings.parameters())
    assert task.student.model[1].weight.grad.abs().sum() > 0
    assert not torch.equal(student_before["model.1.weight"], task.student.state_dict()["model.1.weight"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.method.parameters())


def test_the_method_sees_teacher_keys_and_student_queries(tmp_path, teachers):
    """Keys: the teacher's hook activations (detached); queries: the student's, zero-padded to the
    teacher's width (Hneg-SRC's SuperMLP on the raw activations) or mapped to it."""
    for mode in ("student", "mapped"):
        runner, run = build(tmp_path, teachers, name=mode, method_features=mode)
        task = runner.build_task(run)
        a, b = task._batch(0)
        config = {"channels": [4] * 8}
        forward = task._forward(a, config)
        pair = task._pair(a, b, config, forward)
        keys, queries = pair.features("source"), pair.features("output")
        assert all(not k.requires_grad for k in keys)
        assert [k.shape for k in keys] == [q.shape for q in queries]          # (B, 4 ngf_t, h, w)
        assert all(q.requires_grad for q in queries)
        if mode == "student":
            raw = forward[3]
            assert all(torch.equal(q[:, :r.shape[1]], r) and not q[:, r.shape[1]:].any() for q, r in zip(queries, raw))


def test_a_batch_of_two_equals_two_batches_of_one_for_per_image_losses(tmp_path, teachers):
    """Hneg-SRC's compression code is batch 1 only; here each image keeps its own relation matrices,
    so a batch of 2 gives the mean of the two single-image losses at the same patch locations."""
    runner, run = build(tmp_path, teachers)
    task = runner.build_task(run)
    a, b = task._batch(0)
    config = {"channels": [8, 4, 8, 4, 8, 4, 8, 4]}

    def losses(x, y):
        pair = task._pair(x, y, config, task._forward(x, config))
        torch.manual_seed(5)                     # the same patch locations every time
        return task.method.generator_losses(pair, None)

    both = losses(a, b)
    one, two = losses(a[:1], b[:1]), losses(a[1:], b[1:])
    for name in both:
        assert torch.allclose(both[name], (one[name] + two[name]) / 2, rtol=1e-5, atol=1e-7), name


def test_finished_run_reports_a_subnet_within_budget_beside_the_teacher(tmp_path, teachers):
    from benchmark.report import write_report

    runner, run = build(tmp_path, teachers, method="none", dataset="synthetic_aligned_scenes")
    assert runner.run_all() == []
    record = json.loads(run.metrics_path.read_text())
    m = record["metrics"]
    assert m["MACs_G"] * 1e9 <= 3.0e6 and m["params_M"] < m["teacher_params_M"]
    assert {"FID", "teacher_FID", "search_fid", "largest_FID"} <= set(m)
    chosen = json.loads((run.directory / "search" / "subnet.json").read_text())["config"]
    assert record["protocol"]["subnet"] == chosen
    report = write_report(runner.suite)
    text = report.read_text()
    assert "Table 3" in text and "| teacher |" in text and "student (none)" in text and "MACs (M)" in text  # small images: millions


def test_results_made_with_another_teacher_file_are_stale(tmp_path, teachers, capsys):
    """teacher.checkpoint names a file: the run records its sha256, and once the file holds other
    weights the finished run is refused (and shown stale), not averaged with runs of the new one."""
    from tasks.compression.teacher import TeacherOptions, build_teacher_generator

    path = tmp_path / "latest_net_G.pth"
    torch.manual_seed(0)
    torch.save(build_teacher_generator(TeacherOptions(ngf=8, n_blocks=3)).state_dict(), path)
    runner, run = build(tmp_path, teachers, method="none", steps=2,
                        teacher={"checkpoint": str(path), "ngf": 8, "n_blocks": 3})
    assert runner.run_all() == []
    recorded = json.loads(run.metrics_path.read_text())["inputs"]
    assert recorded["teacher.checkpoint"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    torch.manual_seed(1)
    torch.save(build_teacher_generator(TeacherOptions(ngf=8, n_blocks=3)).state_dict(), path)
    runner, run = build(tmp_path, teachers, method="none", steps=2,
                        teacher={"checkpoint": str(path), "ngf": 8, "n_blocks": 3})
    ((run_id, message),) = runner.run_all()
    assert run_id == run.run_id and "made from other data or files than those there now" in message
    assert f"teacher.checkpoint: then {recorded['teacher.checkpoint']}, now sha256:" in message


def test_the_teacher_is_scored_once_for_all_runs_that_share_it(tmp_path, monkeypatch, teachers):
    from tasks.compression import evaluation as compression_eval

    calls = []
    original = compression_eval.CompressionScorer.score_test

    def counting(self, translate):
        calls.append(translate)
        return original(self, translate)

    monkeypatch.setattr(compression_eval.CompressionScorer, "score_test", counting)
    share_teachers(tmp_path / "s", teachers)
    d = suite_dict(tmp_path / "s", method="none")
    d["methods"] = ["none", {"name": "none", "label": "none_again"}]
    suite = suite_from_dict(d, base_dir=tmp_path)
    runner = Runner(suite)
    assert runner.run_all() == []
    # the identity row, then per run the chosen subnet and the largest one; the teacher once.
    assert len(calls) == 1 + 2 * 2 + 1
    records = [json.loads(run.metrics_path.read_text())["metrics"] for run in expand(suite)]
    teacher = [{k: v for k, v in m.items() if k.startswith("teacher_")} for m in records]
    assert teacher[0] == teacher[1] and "teacher_FID" in teacher[0]
    assert len(list((tmp_path / "s").rglob("teacher_scores/*.pt"))) == 1
