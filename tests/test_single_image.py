"""Single-image task (SinCUT): the official networks' configuration, zoom-and-patch sampling, the
task's patch settings reaching the methods (and refusals), Hneg-SRC with one patch per crop, SIFID,
the structure score, bit-exact resume, and a run through the runner and the report."""
import json

import re

import numpy as np

import pytest
import torch
from PIL import Image

from benchmark.config import suite_from_dict
from benchmark.core.errors import ConfigError, DataError
from benchmark.core.metrics.structure import edge_correlation, gaussian_blur
from benchmark.report import write_report
from benchmark.runner import Runner, expand
from benchmark.inputs import dataset_identity
from datasets.single_image import SingleImageFiles, SingleImageFilesOptions, SyntheticPainting, SyntheticPaintingOptions
from methods.hnegsrc import HnegSRC, HnegSRCParams
from methods.shared.patches import PatchEmbeddings
from tasks.single_image.networks import (StyleGAN2Discriminator, StyleGAN2Generator, discriminator_channels,
                                         generator_channels, r1_penalty)
from tasks.single_image.sampler import ZoomAndPatch


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one thread (conftest)


# -- networks: the official SinCUT configuration ------------------------------------------------------

def conv_layer(cin, cout, k, activate=True):
    """Parameters of a ConvLayer: weight, plus the activation's bias (or the conv's without one)."""
    return cin * cout * k * k + cout


def res_block(cin, cout, downsample):
    skip = cin * cout if (cin != cout or downsample) else 0         # 1x1, no bias
    return conv_layer(cin, cin, 3) + conv_layer(cin, cout, 3) + skip


def test_networks_have_the_official_sincut_shapes_and_parameter_counts():
    # sincut_model.py: ngf 10, ndf 8, crop 64, stylegan2_G_num_downsampling 1; G's n_blocks 6 (3 + 3).
    ch = generator_channels(10)
    assert (ch[64], ch[32]) == (80, 160)                              # round(256 * 10/32), round(512 * 10/32)
    expected_g = (conv_layer(3, 80, 1) + res_block(80, 160, True) + 3 * res_block(160, 160, False)      # encoder
                  + 3 * res_block(160, 160, False) + (80 * 160 * 9 + 1 + 80) + conv_layer(80, 3, 1))  # decoder
    g = StyleGAN2Generator(ngf=10, crop_size=64, n_downsampling=1, n_blocks=6)
    assert sum(p.numel() for p in g.parameters()) == expected_g
    x = torch.randn(2, 3, 64, 64)
    feats = g(x, [0, 2, 4], encode_only=True)                        # SinCUT's nce_layers
    assert [tuple(f.shape[1:]) for f in feats] == [(3, 64, 64), (160, 32, 32), (160, 32, 32)]
    assert torch.equal(feats[0], x)                                  # layer 0: the image itself
    assert g(torch.randn(1, 3, 96, 128)).shape == (1, 3, 96, 128)    # test: the whole image

    dch = discriminator_channels(8)
    assert [dch[r] for r in (64, 32, 16, 8, 4)] == [32, 64, 128, 256, 384]   # int(c * 8/64), capped at 384
    expected_d = (conv_layer(3, 32, 1) + res_block(32, 64, True) + res_block(64, 128, True)
                  + res_block(128, 256, True) + res_block(256, 384, True) + conv_layer(384, 384, 3)
                  + (384 * 16 * 384 + 384) + (384 + 1))
    d = StyleGAN2Discriminator(ndf=8, crop_size=64)
    assert sum(p.numel() for p in d.parameters()) == expected_d
    assert d(x).shape == (2, 1)


def test_r1_penalty_equals_hand_computation():
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    x = torch.randn(3, 1, 2, 2, requires_grad=True)
    pred = (x * w).sum(dim=(1, 2, 3))[:, None]                       # D(x) = <w, x>: gradient w
    assert torch.isclose(r1_penalty(pred, x), 0.5 * w.pow(2).sum())


# -- zoom-and-patch ---------------------------------------------------------------------------------

def test_zoom_and_patch_shares_the_zoom_and_never_repeats_a_cell_within_a_batch():
    image = torch.randint(0, 256, (3, 120, 200), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    sampler = ZoomAndPatch(image, crop_size=16, batch_size=12, random_scale_max=3.0, flip=True, seed=5, side=0)
    for step in range(20):
        plan = sampler.plan(step)
        assert len({(p.zoomed_size, p.offset) for p in plan}) == 1               # one zoom and grid per batch
        nw, nh = plan[0].grid
        cells = [p.cell for p in plan]
        if nw * nh >= len(plan):
            assert len(set(cells)) == len(cells)                                 # distinct cells
        else:                                                                    # every cell before any repeats
            assert set(cells[:nw * nh]) == set(range(nw * nh))
        w, h = plan[0].zoomed_size
        assert w >= 16 and h >= 16 and w <= 200 and h <= 120
    sizes = {sampler.plan(s)[0].zoomed_size for s in range(20)}
    assert len(sizes) > 10                                                       # the zoom changes per batch
    # The crops are the planned cells of the (PIL bilinear) zoomed image, flipped where planned.
    plan, batch = sampler.plan(3), sampler.batch(3)
    zoomed = torch.from_numpy(np.array(Image.fromarray(image.permute(1, 2, 0).numpy()).resize(
        plan[0].zoomed_size, Image.BILINEAR))).permute(2, 0, 1)
    for p, crop in zip(plan, batch):
        x, y = p.position
        expected = zoomed[:, y:y + 16, x:x + 16]
        assert torch.equal(crop, expected.flip(-1) if p.flip else expected)
    assert any(p.flip for p in plan) and not all(p.flip for p in plan)
    assert torch.equal(batch, sampler.batch(3))                                  # a pure function of the step


def test_small_grid_cycles_through_every_cell_and_official_mode_zooms_per_crop():
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    sampler = ZoomAndPatch(image, crop_size=16, batch_size=9, random_scale_max=1.0, flip=False, seed=0, side=1)
    cells = [p.cell for p in sampler.plan(0)]                                    # 2 x 2 grid, 9 crops
    assert [sorted(cells[i:i + 4]) for i in (0, 4)] == [[0, 1, 2, 3]] * 2
    official = ZoomAndPatch(torch.zeros(3, 200, 200, dtype=torch.uint8), 16, 8, 3.0, True, 0, 0, "official")
    assert len({p.zoomed_size for p in official.plan(0)}) > 1


# -- the task's patch settings reach the methods ------------------------------------------------------

def suite_dict(tmp_path, methods=("none",), steps=3, dataset=None, **task):
    options = {"ngf": 1, "ndf": 2, "n_blocks": 4, "crop_size": 16, "batch_size": 4, "n_steps": steps,
               "n_steps_decay": 1, "lpips_backbone": "untrained"}
    options.update(task)
    return {"suite": "si", "seeds": [0], "device": "cpu", "output_dir": str(tmp_path / "results"),
            "checkpoint_every": 2, "tasks": {"single_image": options},
            "datasets": dataset or {"synthetic_painting": {"width": 64, "height": 64, "strokes_per_pixel": 0.05}},
            "methods": list(methods)}


def test_methods_get_one_patch_per_crop_with_minibatch_negatives_unless_set(tmp_path):
    suite = suite_from_dict(suite_dict(tmp_path, methods=[
        "sincut", "hnegsrc_single", {"name": "cut", "label": "cut4", "params": {"num_patches": 4}}]))
    options = {r.method.label: r.method_options for r in expand(suite)}
    assert (options["sincut"].num_patches, options["sincut"].nce_includes_all_negatives_from_minibatch,
            options["sincut"].lambda_NCE, options["sincut"].nce_idt) == (1, True, 4.0, True)
    hneg = options["hnegsrc_single"]                                             # Hneg-SRC README, Monet command
    assert (hneg.num_patches, hneg.lambda_HDCE, hneg.lambda_SRC, hneg.HDCE_gamma, hneg.HDCE_gamma_min,
            hneg.dce_idt, hneg.use_curriculum) == (1, 4.0, 10.0, 200.0, 40.0, True, True)
    assert options["cut4"].num_patches == 4                                      # the config's own value wins
    stored = expand(suite)[0].resolved_config()["method"]["options"]
    assert stored["num_patches"] == 1                                            # the run's config records it
    # The same method in the single-modal task keeps its own defaults.
    raw = {"suite": "sm", "tasks": {"single_modal": {}}, "datasets": {"synthetic_objects": {"size": 16}},
           "methods": ["cut"], "output_dir": str(tmp_path / "sm")}
    assert expand(suite_from_dict(raw))[0].method_options.num_patches == 256


@pytest.mark.parametrize("method, reason", [
    ("graphcl", "other nodes of each image's own graph"),
    ("lsesim", "self-similarity maps of patch_nums query locations within each image")])
def test_methods_that_cannot_follow_the_patch_policy_are_refused_at_load_with_their_reason(tmp_path, method, reason):
    with pytest.raises(ConfigError, match=rf"(?s)methods.{method} .*cannot run in task 'single_image'.*"
                                          rf"1 patch\(es\) per image.*{re.escape(reason)}"):
        suite_from_dict(suite_dict(tmp_path, methods=[method]))


NO_PATCH_SETTINGS_PLUGIN = """
from dataclasses import dataclass
import torch
from benchmark.core.registry import register_method
from methods.base import Method


@dataclass
class Params:
    num_patches: int = 64


@register_method("silent_patches")
class SilentPatches(Method):
    Params = Params

    def generator_losses(self, pair, computed=None):
        return {"NCE": pair.output.sum() * 0}
"""


def test_a_plugin_without_patch_settings_is_refused_not_trained_with_zero_nce(tmp_path_factory, tmp_path):
    """A method that has num_patches but does not say how it follows the policy once trained with
    one patch and no negatives: NCE exactly 0 at every step."""
    plugin = tmp_path_factory.mktemp("silent") / "silent_methods.py"
    plugin.write_text(NO_PATCH_SETTINGS_PLUGIN)
    raw = {**suite_dict(tmp_path, methods=["silent_patches"]), "plugins": [str(plugin)]}
    with pytest.raises(ConfigError, match=r"(?s)methods.silent_patches .*single_image.*does not say how it "
                                          r"follows a task's patch policy \(Method.patch_settings\)"):
        suite_from_dict(raw, str(tmp_path / "suite.yaml"), tmp_path)


def test_the_doc_plugin_follows_the_policy(tmp_path, plugin_file):
    """docs/methods.md's example answers the policy: one patch, negatives across the batch."""
    raw = {**suite_dict(tmp_path, methods=["tiny_nce"]), "plugins": [str(plugin_file[0])]}
    run, = expand(suite_from_dict(raw, str(tmp_path / "suite.yaml"), tmp_path))
    assert run.task_imposed == {"num_patches": 1, "nce_includes_all_negatives_from_minibatch": True}


def test_the_imposed_settings_are_in_the_resolved_config_and_the_protocol_line(tmp_path):
    from benchmark.runner import task_imposed_note
    runs = {r.method.label: r for r in expand(suite_from_dict(suite_dict(
        tmp_path, methods=["none", "sincut", {"name": "cut", "label": "cut4", "params": {"num_patches": 4}}])))}
    imposed = {"num_patches": 1, "nce_includes_all_negatives_from_minibatch": True}
    assert runs["sincut"].resolved_config()["method"]["task_imposed"] == imposed
    assert task_imposed_note(runs["sincut"]) == {
        "task_imposed": "num_patches=1, nce_includes_all_negatives_from_minibatch=True"}
    assert runs["cut4"].task_imposed == {"nce_includes_all_negatives_from_minibatch": True}  # its own value wins
    assert "task_imposed" not in runs["none"].resolved_config()["method"] and task_imposed_note(runs["none"]) == {}


def test_single_image_task_refuses_an_unpaired_dataset(tmp_path):
    raw = suite_dict(tmp_path, dataset={"synthetic_objects": {"size": 16}})
    with pytest.raises(ConfigError, match="needs a dataset of kind 'single_image'"):
        suite_from_dict(raw)


# -- Hneg-SRC with one patch per crop ---------------------------------------------------------------

def test_hnegsrc_relation_weights_with_one_patch_per_crop_differ_between_crops():
    params = HnegSRCParams(num_patches=1, nce_includes_all_negatives_from_minibatch=True)
    method = HnegSRC(params)
    g = torch.Generator().manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(6, 1, 8, generator=g), dim=-1)   # 6 crops, 1 patch each
    queries = torch.nn.functional.normalize(torch.randn(6, 1, 8, generator=g), dim=-1)
    q, k = method._group(PatchEmbeddings([keys], [queries], [torch.zeros(1, dtype=torch.long)]))
    (weights,), src = method.relations(q, k, gamma=0.5)
    assert weights.shape == (1, 6, 6)                                  # relations between the crops
    off = weights[0][~torch.eye(6, dtype=torch.bool)].view(6, 5)
    assert off.std() > 0.05 and torch.all(off > 0) and torch.all(off <= 1)
    assert torch.allclose(off.amax(dim=1), torch.ones(6))              # the hardest negative of a row: weight 1
    # The hardest negative of crop i is the crop whose key is most similar to crop i's key.
    sim = keys[:, 0] @ keys[:, 0].t()
    sim.fill_diagonal_(-10)
    assert torch.equal(weights[0].argmax(dim=1), sim.argmax(dim=1))
    assert src.item() > 0
    # The official mask (eye(num_patches) = one entry, broadcast over the whole matrix) makes every
    # weight 1: what no_Hneg gives.
    (none,), _ = HnegSRC(HnegSRCParams(num_patches=1, nce_includes_all_negatives_from_minibatch=True,
                                       no_Hneg=True)).relations(q, k, gamma=0.5)
    assert none is None


# -- scores ---------------------------------------------------------------------------------------------

def test_sifid_of_an_image_with_itself_is_zero_and_rises_with_blur():
    from benchmark.core.metrics.sifid import sifid

    image = SyntheticPainting(SyntheticPaintingOptions(width=96, height=96), ".").image("A")
    values = [sifid(image, image, device="cpu")]
    for sigma in (1.0, 2.0, 4.0):
        blurred = gaussian_blur(image[None].float(), sigma).round().clamp(0, 255).to(torch.uint8)[0]
        values.append(sifid(blurred, image, device="cpu"))
    assert abs(values[0]) < 1e-6
    assert values[0] < values[1] < values[2] < values[3]


def test_structure_score_keeps_edges_and_ignores_colour_changes():
    image = SyntheticPainting(SyntheticPaintingOptions(width=64, height=64), ".").image("A")[None]
    recoloured = (255 - image)                                          # same edges, other colours
    shuffled = image[..., torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    assert edge_correlation(image, image, 2.0).item() == pytest.approx(1.0)
    assert edge_correlation(recoloured, image, 2.0).item() == pytest.approx(1.0, abs=1e-6)
    assert edge_correlation(shuffled, image, 2.0).item() < 0.5


# -- data -------------------------------------------------------------------------------------------------

def test_embedded_pair_is_deterministic_and_the_file_reader_rounds_to_multiples_of_four(tmp_path):
    a1 = SyntheticPainting(SyntheticPaintingOptions(width=64, height=64), tmp_path)
    a2 = SyntheticPainting(SyntheticPaintingOptions(width=64, height=64), tmp_path)
    other = SyntheticPainting(SyntheticPaintingOptions(width=64, height=64, seed=1), tmp_path)
    assert torch.equal(a1.image("A"), a2.image("A")) and not torch.equal(a1.image("A"), other.image("A"))
    assert not torch.equal(a1.image("A"), a1.image("B")) and a1.image("B").shape == (3, 64, 64)
    Image.new("RGB", (70, 45), (10, 20, 30)).save(tmp_path / "a.png")
    Image.new("RGB", (64, 64), (200, 20, 30)).save(tmp_path / "b.jpg")
    files = SingleImageFiles(SingleImageFilesOptions(str(tmp_path / "a.png"), str(tmp_path / "b.jpg")), tmp_path)
    assert files.image("A").shape == (3, 44, 72)                       # round(45/4)*4, round(70/4)*4
    missing = SingleImageFiles(SingleImageFilesOptions(str(tmp_path / "nope.png"), str(tmp_path / "b.jpg")), tmp_path)
    with pytest.raises(DataError, match="side A .*nope.png.* does not exist"):
        missing.image("A")
    with pytest.raises(DataError, match="side A .*nope.png.* does not exist"):  # not an identity of 'missing'
        missing.identity
    assert dataset_identity(missing) is None and dataset_identity(files).startswith("single_image_files/v2/A@")


# -- training: runner, report (bit-exact resume: test_resume.py) --------------------------------------

def test_method_loss_reaches_the_generator_and_its_heads_only(tmp_path):
    suite = suite_from_dict(suite_dict(tmp_path, methods=["sincut"], lambda_identity=0.0, lambda_GAN=0.0))
    task = Runner(suite).build_task(expand(suite)[0])
    real_a, real_b = task._batch(0)
    fake = task.netG(torch.cat([real_a, real_b]))
    pair = task._pair(real_a, fake[:4], real_b, fake[4:], False)
    terms = task.method.generator_losses(pair)
    assert set(terms) == {"NCE", "NCE_Y"}
    task.netD.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in task.method.heads.parameters())
    assert task.netG.encoder.convs[2].conv1[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in task.netD.parameters())


def test_runner_trains_scores_and_reports_the_single_image_suite(tmp_path):
    suite = suite_from_dict(suite_dict(tmp_path, methods=["none", "sincut"], steps=2))
    assert Runner(suite).run_all() == []
    records = {r.method.label: json.loads(r.metrics_path.read_text()) for r in expand(suite)}
    for record in records.values():
        assert set(record["metrics"]) == {"SIFID", "structure", "LPIPS"}
        assert "UNTRAINED" in record["protocol"]["lpips"] and "Conv2d_4a_3x3" in record["protocol"]["sifid"]
        assert record["protocol"]["resolution"] == [64, 64]
    identity = json.loads((suite.identity_dir(suite.tasks[0], suite.datasets[0]) / "metrics.json").read_text())
    assert identity["metrics"]["structure"] == pytest.approx(1.0) and identity["metrics"]["LPIPS"] == pytest.approx(0.0, abs=1e-6)
    report = write_report(suite).read_text()
    assert "SIFID to target (lower)" in report and "structure to source (higher)" in report
    assert "| identity |" in report and "| sincut |" in report and "UNTRAINED" in report
    grids = suite.output_dir / "reports" / "si"
    assert (grids / "single_image_synthetic_painting_full.png").is_file()
    assert (grids / "single_image_synthetic_painting_zoom.png").is_file()
    full = np.asarray(Image.open(grids / "single_image_synthetic_painting_full.png"))
    titles, tiles = full[:-64], full[-64:]                             # the titles' margin above the images
    assert tiles.shape[1] == 4 * 64 + 3 * 6 and titles.shape[0] > 10  # source, target, two outputs, full size
    for i in range(4):                                                 # a title over each image
        assert (titles[:, i * (64 + 6):i * (64 + 6) + 64] < 128).any()


def test_shipped_single_image_suites_use_the_official_settings_where_they_say():
    from pathlib import Path

    from benchmark.config import load_suite
    from benchmark.core.settings import field_defaults

    configs = Path(__file__).resolve().parents[1] / "configs"
    paper = load_suite(configs / "paper_single_image.yaml")
    defaults = field_defaults(paper.tasks[0].cls.Options)
    for run in expand(paper):
        assert all(getattr(run.task_options, k) == v for k, v in defaults.items())
        assert run.method_options.__dict__.get("num_patches", 1) == 1
    quick = load_suite(configs / "quick_single_image.yaml")
    assert {m.label for m in quick.methods} == {"none", "sincut", "hnegsrc_single"} and len(quick.settings.seeds) >= 2
