"""``plan`` checks the data and the output folder a suite will use before anything trains: every
image file a run reads opens and decodes (with a progress line), single-image files exist, the
output folder takes a file and has room for the checkpoints; exit 1 with the list of problems."""
import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from benchmark import plan as plan_module
from benchmark.cli import main
from benchmark.config import load_suite, suite_from_dict
from benchmark.core.checkpoint import load_weights_only
from benchmark.plan import build_runs, plan_suite
from benchmark.runner import Runner, expand

from conftest import flatten_state, share_teachers, tiny_suite_dict

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _folder_dataset(root: Path) -> None:
    for sub in ("trainA", "trainB", "testA", "testB"):
        (root / sub).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(root / sub / f"{i}.png")


def _suite(tmp_path, root):
    raw = tiny_suite_dict(tmp_path)
    raw["datasets"] = {"folder": {"type": "unaligned_folder", "root": str(root), "size": 16, "load_size": 16}}
    return suite_from_dict(raw, base_dir=tmp_path)


def test_an_empty_or_corrupt_image_in_testA_is_found_by_plan(tmp_path, capsys):
    root = tmp_path / "data"
    _folder_dataset(root)
    empty, corrupt = root / "testA" / "empty.png", root / "testA" / "corrupt.jpg"
    empty.write_bytes(b"")
    corrupt.write_bytes(b"\xff\xd8\xff not really a jpeg")
    stream = io.StringIO()
    plan = plan_suite(_suite(tmp_path, root), stream=stream)
    problems = "\n".join(plan.problems)
    assert len(plan.data_problems) == 2 and str(empty) in problems and str(corrupt) in problems
    assert "could not be decoded" in problems
    assert "folder" not in plan.datasets_checked                   # never 'data: folder ok'
    assert "decoding the datasets' images: 14/14 (100%)" in stream.getvalue()
    config = tmp_path / "suite.yaml"
    config.write_text(yaml.safe_dump(tiny_suite_dict(tmp_path) | {
        "datasets": {"folder": {"type": "unaligned_folder", "root": str(root), "size": 16, "load_size": 16}}}))
    assert main(["plan", str(config)]) == 1
    out = capsys.readouterr()
    assert str(empty) in out.out and "folder ok" not in out.out and "2 problem(s)" in out.err


def test_the_shipped_single_image_config_without_its_images_is_refused(tmp_path, capsys):
    path = CONFIG_DIR / "paper_single_image.yaml"
    plan = plan_suite(load_suite(path, [f"output_dir={tmp_path}"]))
    problems = "\n".join(plan.data_problems)
    assert "painting.jpg" in problems and "photo.jpg" in problems and "does not exist" in problems
    assert main(["plan", str(path), f"output_dir={tmp_path}"]) == 1
    assert "my_pair ok" not in capsys.readouterr().out


def test_an_output_folder_that_refuses_files_or_lacks_room_is_a_problem(tmp_path, monkeypatch):
    suite = suite_from_dict(tiny_suite_dict(tmp_path), base_dir=tmp_path)
    plan = plan_suite(suite, check_data=False, check_weight_files=False)
    assert plan.problems == [] and "writable" in plan.output_checked

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    with monkeypatch.context() as m:
        m.setattr(plan_module.tempfile, "TemporaryFile", refuse)
        (problem,) = plan_suite(suite, check_data=False, check_weight_files=False).problems
    assert str(tmp_path / "results") in problem and "Permission denied" in problem

    class Usage:
        free = 1000
    monkeypatch.setattr(plan_module.shutil, "disk_usage", lambda folder: Usage)
    (problem,) = plan_suite(suite, check_data=False, check_weight_files=False).problems
    assert "1000 bytes free" in problem and "need about" in problem


def test_the_space_check_counts_the_new_copy_of_a_checkpoint_beside_the_one_it_replaces(tmp_path, monkeypatch):
    suite = suite_from_dict(tiny_suite_dict(tmp_path, methods=("none",), ngf=16, ndf=16), base_dir=tmp_path)
    run = expand(suite)[0]
    size = build_runs(suite)[run.run_id].checkpoint_size()

    def usage_with(free):
        monkeypatch.setattr(plan_module.shutil, "disk_usage", lambda folder: type("Usage", (), {"free": free}))
        return plan_suite(suite, check_data=False, check_weight_files=False).problems

    assert usage_with(2 * size) == []        # latest.pt, and its next copy while it is written
    (problem,) = usage_with(2 * size - 1)
    assert "a new copy of the one being written" in problem


def test_the_checkpoint_estimate_is_close_to_a_real_checkpoint(tmp_path):
    suite = suite_from_dict(tiny_suite_dict(tmp_path, methods=("none",), ngf=16, ndf=16), base_dir=tmp_path)
    run = expand(suite)[0]
    estimate = build_runs(suite)[run.run_id].checkpoint_size()
    Runner(suite).train(run, stop_at=2)
    actual = run.checkpoint_path.stat().st_size
    assert 0.8 * actual < estimate <= actual, (estimate, actual)


def _multi_modal(tmp_path):
    from test_multi_modal import mm_suite_dict
    return mm_suite_dict(tmp_path)


def _single_image(tmp_path):
    from test_single_image import suite_dict
    return suite_dict(tmp_path)


def _compression(tmp_path):
    from test_compression_task import suite_dict
    return suite_dict(tmp_path / "results", method="none")


def _paired_compression(tmp_path):  # pix2pix's D: the image pair as input, ndf 128
    from test_compression_task import suite_dict
    return suite_dict(tmp_path / "results", method="none", dataset="synthetic_aligned_scenes")


@pytest.mark.parametrize("make", [_multi_modal, _single_image, _compression, _paired_compression])
def test_every_task_estimates_the_tensors_its_checkpoint_holds(tmp_path, teacher_cache, make):
    """Each task sizes its checkpoint from the networks it would build (with Adam's moments, EMA
    copies as weights only); at these tiny sizes the file's own overhead per tensor is a large
    part, so the estimate is held against the bytes of the tensors the checkpoint stores."""
    raw = make(tmp_path)
    share_teachers(raw["output_dir"], teacher_cache)
    suite = suite_from_dict(raw, base_dir=tmp_path)
    run = expand(suite)[0]
    estimate = build_runs(suite)[run.run_id].checkpoint_size()
    Runner(suite).train(run, stop_at=1)
    stored = sum(t.numel() * t.element_size() for t in flatten_state(load_weights_only(run.checkpoint_path)).values())
    assert 0.9 * stored < estimate <= stored, (estimate, stored)
