"""Multi-modal task (StarGAN v2 adapter): networks, losses, EMA, schedule, evaluation counts,
bit-exact resume, the patch-wise hook, and the multi-domain datasets."""
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.config import suite_from_dict
from benchmark.core.errors import ConfigError, DataError
from benchmark.core.registry import register_method
from benchmark.runner import Runner, expand
from methods.base import Method
from benchmark.core.context import RunContext
from tasks import evaluation as shared_eval
from tasks.multi_modal import evaluation as mm_eval
from tasks.multi_modal.networks import (Discriminator, Generator, HnegGenerator, MappingNetwork, StyleEncoder,
                                        diversity_weight, he_init, moving_average, r1_reg)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one thread (conftest)


TINY_NETS = {"dim_in": 4, "max_conv_dim": 8, "hidden_dim": 16, "style_dim": 8, "latent_dim": 4}

#: the small-sample statistics of each mode's FID: bootstrap interval, its shift, FID-infinity
SMALL_SAMPLE = {f"{mode}_FID_{part}" for mode in ("latent", "reference")
                for part in ("ci_low", "ci_high", "bootstrap_shift", "inf")}


def mm_suite_dict(tmp_path, methods=("none",), steps=4, size=16, domains=("autumn", "summer", "winter"),
                  evaluation=None, **task):
    options = {**TINY_NETS, "batch_size": 2, "n_steps": steps, "ds_iter": 3, "ema_beta": 0.9,
               "lpips_backbone": "untrained", "num_outs_per_domain": 3, "grid_styles": 2}
    options.update(task)
    return {
        "suite": "mm", "seeds": [0], "device": "cpu", "output_dir": str(tmp_path / "results"),
        "checkpoint_every": 2,
        "tasks": {"multi_modal": options},
        "datasets": {"synthetic_seasons": {"size": size, "n_train": 6, "n_val": 3, "domains": list(domains)}},
        "methods": list(methods),
        "evaluation": evaluation or {"num_test_images": 2, "batch_size": 4, "grid_images": 4},
    }


def build(tmp_path, name="run", **kwargs):
    suite = suite_from_dict(mm_suite_dict(tmp_path / name, **kwargs), base_dir=tmp_path)
    run = expand(suite)[0]
    return Runner(suite).build_task(run), run, suite


# -- networks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("generator_cls", [Generator, HnegGenerator])
def test_style_codes_change_the_output_and_the_same_code_repeats_it(generator_cls):
    torch.manual_seed(0)
    g = generator_cls(img_size=32, style_dim=8, max_conv_dim=16, dim_in=8)
    f = MappingNetwork(latent_dim=4, style_dim=8, num_domains=3, hidden_dim=16)
    for net in (g, f):
        net.apply(he_init)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = torch.tensor([0, 2])
    z1, z2 = torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad():
        s1, s2 = f(z1, y), f(z2, y)
        out1, out1_again, out2 = g(x, s1), g(x, s1), g(x, s2)
        other_domain = f(z1, torch.tensor([1, 1]))
    assert out1.shape == x.shape
    assert torch.equal(out1, out1_again) and torch.equal(f(z1, y), s1)
    assert (out1 - out2).abs().mean() > 1e-3
    assert not torch.allclose(s1, other_domain)  # per-domain heads


def test_official_widths_and_feature_points():
    g = Generator(img_size=64)            # dim_in = 2**14 // 64 = 256, capped at 512
    assert g.from_rgb.out_channels == 256 and len(g.encode) == 2 + 2
    assert [b.conv2.out_channels for b in g.encode] == [512, 512, 512, 512]
    feats = Generator(img_size=32, dim_in=8, max_conv_dim=16).encode_features(torch.zeros(1, 3, 32, 32), [0, 1, 3])
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 32, 32), (16, 16, 16), (16, 16, 16)]
    assert Generator(img_size=64, dim_in=8).default_feature_points == [2, 3, 4]
    assert HnegGenerator(img_size=64, dim_in=8).default_feature_points == [2, 3, 4, 5, 6]
    d = Discriminator(img_size=32, num_domains=3, max_conv_dim=16, dim_in=8)
    e = StyleEncoder(img_size=32, style_dim=8, num_domains=3, max_conv_dim=16, dim_in=8)
    x = torch.zeros(2, 3, 32, 32)
    assert d(x, torch.tensor([0, 2])).shape == (2,) and e(x, torch.tensor([0, 2])).shape == (2, 8)


# -- losses, EMA, schedule --------------------------------------------------------------------------

class TinyD(nn.Module):
    """out_i = sum_p tanh(x_i)_p W[p, y_i]: its input gradient is (1 - tanh(x_i)^2) * W[:, y_i]."""

    def __init__(self, pixels, domains):
        super().__init__()
        self.w = nn.Parameter(torch.randn(pixels, domains))

    def forward(self, x, y):
        return (torch.tanh(x).flatten(1) @ self.w)[torch.arange(x.shape[0]), y]


def test_r1_penalty_equals_hand_computation():
    torch.manual_seed(1)
    d = TinyD(3 * 4 * 4, 3)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1, 0])
    reg = r1_reg(d(x, y), x)
    with torch.no_grad():
        grads = (1 - torch.tanh(x).flatten(1) ** 2) * d.w[:, y].t()       # (B, pixels)
        hand = 0.5 * (grads ** 2).sum(1).mean()
    assert torch.allclose(reg, hand, rtol=1e-5, atol=1e-7)
    reg.backward()  # create_graph: the penalty trains D
    assert d.w.grad is not None and d.w.grad.abs().sum() > 0


def test_ema_update_equals_its_formula():
    torch.manual_seed(2)
    net, ema = nn.Linear(4, 3), nn.Linear(4, 3)
    before = [p.detach().clone() for p in ema.parameters()]
    moving_average(net, ema, beta=0.999)
    for p, e_old, e_new in zip(net.parameters(), before, ema.parameters()):
        assert torch.allclose(e_new, 0.999 * e_old + 0.001 * p.detach(), atol=1e-7)


def test_diversity_weight_decays_linearly_to_zero_at_ds_iter():
    values = [diversity_weight(2.0, step, 10) for step in range(15)]
    assert values[0] == 2.0 and values[5] == pytest.approx(1.0) and values[10] == 0.0
    assert all(v == 0.0 for v in values[10:])
    assert np.allclose(np.diff(values[:11]), -0.2)
    official, lam = [], 2.0           # the official cumulative subtraction, while positive
    for _ in range(10):
        official.append(lam)
        if lam > 0:
            lam -= 2.0 / 10
    assert np.allclose(official, values[:10])


def test_training_steps_apply_ema_and_the_decayed_diversity_weight(tmp_path):
    task, _, _ = build(tmp_path, steps=4, ds_iter=3, ema_beta=0.9, lambda_ds=1.5)
    g_ema_before = [p.clone() for p in task.G_ema.parameters()]
    logs = [task.train_step()]
    for p, old, new in zip(task.G.parameters(), g_ema_before, task.G_ema.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * p.detach(), atol=1e-6)
    logs += [task.train_step() for _ in range(3)]
    assert [round(entry["lambda_ds"], 6) for entry in logs] == [1.5, 1.0, 0.5, 0.0]


# -- the patch-wise hook -----------------------------------------------------------------------------

@dataclass
class SpyParams:
    weight: float = 1.0


SEEN: list = []


@register_method("mm_spy_test")
class SpyMethod(Method):
    """Records what it is given; its loss pulls output features towards source features."""
    Params = SpyParams

    def generator_losses(self, pair, computed=None):
        src, out = pair.features("source"), pair.features("output")
        SEEN.append((pair, [f.detach() for f in src], [f.detach() for f in out]))
        loss = sum(((o - s.detach()) ** 2).mean() for o, s in zip(out, src))
        return {"SPY": self.params.weight * loss}


def _grad_norm(modules):
    return sum(float(p.grad.abs().sum()) for m in modules for p in m.parameters() if p.grad is not None)


@pytest.mark.parametrize("patch_query", ["output", "source"])
def test_method_gets_source_and_output_encoder_features_and_its_loss_reaches_the_generator(tmp_path, patch_query):
    SEEN.clear()
    task, _, _ = build(tmp_path, methods=("mm_spy_test",), patch_query=patch_query)
    b = task.batches.batch(0)
    torch.manual_seed(0)
    objective = task.g_loss(b, "latent", 0.0, use_method=True)
    total, terms = objective.total, objective.terms
    pair, src_feats, out_feats = SEEN[-1]
    with torch.no_grad():
        x_fake = task.G(b.x_src, task.F(b.z_trg, b.y_ref))
    source, output = (b.x_src, x_fake) if patch_query == "output" else (x_fake, b.x_src)
    assert torch.allclose(pair.source, source, atol=1e-6) and torch.allclose(pair.output, output, atol=1e-6)
    expected = task.G.encode_features(source, task.layers)
    assert len(src_feats) == len(task.layers) == len(task.G.default_feature_points)
    assert all(torch.allclose(a, e, atol=1e-5) for a, e in zip(src_feats, expected))
    assert objective.reconstruction == "same_image"       # 'auto' with method terms: the fork's reconstruction
    assert not hasattr(task, "last_reconstruction")        # returned, not kept between calls
    task._zero_grad()
    terms["SPY"].backward()
    assert _grad_norm(task.G.encode) > 0                   # reaches the generator's encoder
    decoder = _grad_norm(task.G.decode)
    if patch_query == "output":
        assert decoder > 0                                 # ... and, through the translation, the decoder
    else:
        assert decoder == 0                                # the fork: only the source path has a gradient
    # The term is part of the G objective: the total changes by exactly the term.
    SEEN.clear()
    torch.manual_seed(0)
    task.method.params.weight = 0.0
    total0 = task.g_loss(b, "latent", 0.0, use_method=True, recon="same_image").total
    assert torch.allclose(total - total0, terms["SPY"].detach(), atol=1e-5)
    # Without method terms 'auto' is StarGAN v2's cycle; an explicit reconstruction is kept.
    assert task.g_loss(b, "reference", 0.0, use_method=False).reconstruction == "cycle"
    assert task.g_loss(b, "reference", 0.0, use_method=False, recon="same_image").reconstruction == "same_image"


# -- evaluation ----------------------------------------------------------------------------------------

class FakeTranslator:
    """Counts generated images and records the references of each call."""
    latent_dim = 4

    def __init__(self):
        self.images = 0
        self.refs = []

    def latent(self, x, y, z):
        self.images += x.shape[0]
        return (x + 0.1 * z[:, :1, None, None]).clamp(-1, 1)

    def reference(self, x, y, x_ref):
        self.images += x.shape[0]
        self.refs.append(x_ref.clone())
        return (0.5 * x + 0.5 * x_ref).clamp(-1, 1)


def test_evaluation_makes_the_documented_number_of_images_and_lpips_pairs(tmp_path, monkeypatch):
    from datasets.synthetic_seasons import SyntheticSeasons
    from benchmark.core.context import EvaluationConfig

    fid_calls = []

    def fake_inception(images, resize="legacy", device=None, batch_size=50, progress=None, weights_dir=None):
        images = images if isinstance(images, torch.Tensor) else torch.cat(list(images))
        fid_calls.append(images.shape[0])
        g = torch.Generator().manual_seed(len(fid_calls))
        return torch.randn(images.shape[0], 6, generator=g).double().numpy() + images.float().mean().item()

    pairs = []

    def counting_lpips(a, b):
        pairs.append(a.shape[0])
        return (a - b).abs().mean(dim=(1, 2, 3))

    monkeypatch.setattr(shared_eval, "inception_features", fake_inception)  # outputs and real images
    dataset = SyntheticSeasons(SyntheticSeasons.Options(size=16, n_train=5, n_val=12,
                                                        domains=["autumn", "summer", "winter"]), tmp_path / "data")
    ctx = RunContext(run_dir=tmp_path / "run", seed=0, device=torch.device("cpu"), cache_dir=tmp_path / "cache",
                     evaluation=EvaluationConfig(num_test_images=2, batch_size=4, grid_images=5))
    settings = mm_eval.EvalSettings(num_outs_per_domain=10, latent_dim=4, grid_styles=2)
    translator = FakeTranslator()
    result = mm_eval.evaluate_multimodal(translator, dataset, settings, ctx, lpips_distance=counting_lpips)

    domains, val_images, outs = 3, 2, 10
    per_mode = domains * (domains - 1) * val_images * outs                      # 120
    lpips_per_mode = domains * (domains - 1) * val_images * outs * (outs - 1) // 2  # 540
    grid_calls = 5 + domains * domains * 2                                      # input/output row + grid
    assert translator.images == 2 * per_mode + grid_calls
    assert sum(pairs) == 2 * lpips_per_mode
    assert sorted(fid_calls) == sorted([5] * domains + [val_images * outs] * (2 * domains * (domains - 1)))
    assert result.protocol["images_per_mode"] == per_mode
    assert result.protocol["lpips_pairs_per_mode"] == lpips_per_mode
    assert set(result.metrics) == {"latent_FID", "latent_LPIPS", "reference_FID", "reference_LPIPS",
                                   "latent_L1_diversity", "reference_L1_diversity", "structure_score"} | SMALL_SAMPLE
    # Reference mode: 10 different reference images (of the target's 12 val images) per source image.
    refs = torch.stack([r for call in translator.refs for r in call])  # (calls * batch, 3, H, W)
    per_source = refs.view(domains * (domains - 1), outs, val_images, -1).transpose(1, 2)
    for group in per_source.reshape(-1, outs, per_source.shape[-1]):
        assert len({tuple(v.tolist()) for v in group}) == outs
    assert result.samples["input"].shape == result.samples["output"].shape == (5, 3, 16, 16)
    assert result.samples["grid"].shape == (1, 3, domains * 18 + 2, (1 + domains * 2) * 18 + 2)
    # Identity: the inputs scored as outputs: LPIPS 0, both modes equal.
    ident = mm_eval.evaluate_multimodal(None, dataset, settings, ctx)
    assert ident.metrics["latent_LPIPS"] == 0.0 and ident.metrics["latent_FID"] == ident.metrics["reference_FID"]
    assert torch.equal(ident.samples["input"], ident.samples["output"])


def _content_features(images, resize="legacy", device=None, batch_size=50, progress=None, weights_dir=None):
    """A stand-in for Inception: a deterministic function of each image (quadrant colour means and spreads)."""
    images = images if isinstance(images, torch.Tensor) else torch.cat(list(images))
    x = images.double() / 255
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    quads = [x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]]
    return torch.cat([q.mean(dim=(2, 3)) for q in quads] + [q.std(dim=(1, 2, 3))[:, None] for q in quads], 1).numpy()


def test_identity_row_scores_the_sources_as_outputs_for_every_pair(tmp_path, monkeypatch):
    from datasets.synthetic_seasons import SyntheticSeasons
    from benchmark.core.context import EvaluationConfig
    from benchmark.core.metrics.fid import fid_from_features

    monkeypatch.setattr(shared_eval, "inception_features", _content_features)
    domains = ["autumn", "summer", "winter"]
    dataset = SyntheticSeasons(SyntheticSeasons.Options(size=16, n_train=9, n_val=4, domains=domains), tmp_path / "data")
    ctx = RunContext(run_dir=tmp_path / "identity", seed=0, device=torch.device("cpu"), cache_dir=tmp_path / "cache",
                     evaluation=EvaluationConfig(num_test_images=3, batch_size=4, grid_images=3))
    k = 4
    settings = mm_eval.EvalSettings(num_outs_per_domain=k, latent_dim=4, grid_styles=1, lpips=False)
    result = mm_eval.evaluate_multimodal(None, dataset, settings, ctx)
    per_pair = json.loads((tmp_path / "identity" / "eval_per_pair.json").read_text())

    expected = {}
    for t, trg in enumerate(domains):
        real = _content_features(dataset.split("train", trg).images(range(9)))
        for s, src in enumerate(domains):
            if s != t:   # the first 3 val images of the source, each as its K outputs, against the target's train images
                sources = dataset.split("val", src).images(range(3))
                expected[f"{src}2{trg}"] = fid_from_features(np.repeat(_content_features(sources), k, axis=0), real)
    assert len(expected) == len(domains) * (len(domains) - 1)
    assert len(set(round(v, 6) for v in expected.values())) == len(expected)   # the pairs are told apart
    for mode in ("latent", "reference"):
        for task_name, fid in expected.items():
            assert per_pair[f"FID_{mode}/{task_name}"] == pytest.approx(fid, rel=1e-9), (mode, task_name)
            assert per_pair[f"L1_diversity_{mode}/{task_name}"] == 0.0
        assert result.metrics[f"{mode}_FID"] == pytest.approx(np.mean(list(expected.values())), rel=1e-9)
        assert result.metrics[f"{mode}_L1_diversity"] == 0.0
    assert result.protocol["images_per_mode"] == len(expected) * 3 * k
    # The structure score of the sources themselves: their own label maps.
    own = torch.cat([mm_eval.structure_correlation(dataset.split("val", d).images(range(3)),
                                                   dataset.split("val", d).labels(range(3)))
                     for d in domains]).mean()
    assert result.metrics["structure_score"] == pytest.approx(float(own), rel=1e-9)


def test_a_per_pair_file_that_cannot_be_written_fails_the_evaluation(tmp_path, monkeypatch):
    import errno
    from benchmark.core import atomic
    from benchmark.core.errors import StorageError
    from benchmark.core.context import EvaluationConfig
    from datasets.synthetic_seasons import SyntheticSeasons

    monkeypatch.setattr(shared_eval, "inception_features", _content_features)
    dataset = SyntheticSeasons(SyntheticSeasons.Options(size=16, n_train=4, n_val=2, domains=["autumn", "summer"]),
                               tmp_path / "data")
    ctx = RunContext(run_dir=tmp_path / "run", seed=0, device=torch.device("cpu"), cache_dir=tmp_path / "cache",
                     evaluation=EvaluationConfig(num_test_images=2, batch_size=4, grid_images=2))
    settings = mm_eval.EvalSettings(num_outs_per_domain=2, latent_dim=4, grid_styles=1, lpips=False)

    real_replace = atomic.os.replace

    def disk_full_for_the_per_pair_file(source, target):
        if str(target).endswith("eval_per_pair.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(source, target)
    monkeypatch.setattr(atomic.os, "replace", disk_full_for_the_per_pair_file)
    with pytest.raises(StorageError, match="per-pair metrics of the evaluation") as failure:
        mm_eval.evaluate_multimodal(None, dataset, settings, ctx)
    assert str(tmp_path / "run" / "eval_per_pair.json") in str(failure.value)
    assert not list((tmp_path / "run").glob("*.tmp"))     # no partial file left behind


def test_the_identity_row_is_scored_with_the_datasets_task_settings(tmp_path, monkeypatch):
    """datasets.<d>.task applies to the identity row as to the runs: here its outputs per domain."""
    import yaml as yaml_module
    monkeypatch.setattr(shared_eval, "inception_features", _content_features)
    raw = mm_suite_dict(tmp_path, domains=("autumn", "summer"))
    raw["datasets"]["synthetic_seasons"]["task"] = {"num_outs_per_domain": 2,    # the suite's: 3
                                                    "n_steps": 7}              # trains only
    suite = suite_from_dict(raw, base_dir=tmp_path)
    task, dataset = suite.tasks[0], suite.datasets[0]
    Runner(suite).identity(task, dataset)
    folder = suite.identity_folder(task, dataset)
    record = json.loads(folder.metrics_path.read_text())
    assert record["protocol"]["images_per_mode"] == 2 * 2 * 2       # 2 pairs x 2 sources x 2 outputs
    stored = yaml_module.safe_load(folder.config_path.read_text())
    assert stored["task"]["options"]["num_outs_per_domain"] == 2
    assert stored["task"]["options"]["n_steps"] == suite.tasks[0].options.n_steps == 4  # the row is not bound to it
    assert expand(suite)[0].task_options.num_outs_per_domain == 2    # what the runs use too


def test_structure_score_prefers_outputs_that_keep_the_layout():
    from datasets.synthetic_seasons import SyntheticSeasons
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        ds = SyntheticSeasons(SyntheticSeasons.Options(size=32, n_train=1, n_val=6), d)
        summer, winter = ds.split("val", "summer"), ds.split("val", "winter")
        labels = summer.labels(range(6))
        kept = mm_eval.structure_correlation(summer.images(range(6)), labels).mean()
        other = mm_eval.structure_correlation(winter.images(range(6)), labels).mean()
        flat = mm_eval.structure_correlation(torch.full((6, 3, 32, 32), 128, dtype=torch.uint8), labels)
    assert kept > other + 0.1 and torch.all(flat == 0)


# -- runner: end to end (bit-exact resume: test_resume.py) ----------------------------------------------

def test_runner_trains_evaluates_and_writes_samples(tmp_path, monkeypatch):
    def fake_inception(images, resize="legacy", device=None, batch_size=50, progress=None, weights_dir=None):
        images = images if isinstance(images, torch.Tensor) else torch.cat(list(images))
        noise = np.random.default_rng(0).normal(size=(len(images), 8))
        return images.float().flatten(1)[:, :8].double().numpy() / 255 + noise  # noise-dominated: well-conditioned

    monkeypatch.setattr(shared_eval, "inception_features", fake_inception)  # outputs and real images
    raw = mm_suite_dict(tmp_path, methods=("none",), steps=2, size=32)
    suite = suite_from_dict(raw, base_dir=tmp_path)
    assert Runner(suite).run_all() == []
    run = expand(suite)[0]
    record = json.loads(run.metrics_path.read_text())
    assert set(record["metrics"]) == {"latent_FID", "latent_LPIPS", "reference_FID", "reference_LPIPS",
                                      "latent_L1_diversity", "reference_L1_diversity", "structure_score"} | SMALL_SAMPLE
    assert "UNTRAINED" in record["protocol"]["lpips"]
    samples = run.directory / "samples"
    ident = run.directory.parent.parent / "identity" / "samples"
    assert (samples / "grid_00.png").exists()
    assert len(list(samples.glob("output_*.png"))) == len(list(ident.glob("input_*.png"))) == 4


def test_multi_modal_rejects_an_unpaired_dataset(tmp_path):
    raw = mm_suite_dict(tmp_path)
    raw["datasets"] = {"synthetic_objects": {"size": 16, "n_train": 2, "n_test": 2}}
    with pytest.raises(ConfigError, match="needs a dataset of kind 'multi_domain'"):  # at load, before any run
        suite_from_dict(raw, base_dir=tmp_path)


# -- datasets ------------------------------------------------------------------------------------------

def test_synthetic_seasons_is_deterministic_labelled_and_prefix_stable(tmp_path):
    from datasets.synthetic_seasons import SEASON_CLASSES, SyntheticSeasons
    a = SyntheticSeasons(SyntheticSeasons.Options(size=32, n_train=4, n_val=2), tmp_path / "a")
    b = SyntheticSeasons(SyntheticSeasons.Options(size=32, n_train=6, n_val=2), tmp_path / "b")
    assert a.domains == ["autumn", "spring", "summer", "winter"]
    for d in a.domains:
        assert torch.equal(a.split("train", d).images(range(4)), b.split("train", d).images(range(4)))
        assert torch.equal(a.split("val", d).images(range(2)), b.split("val", d).images(range(2)))
    again = SyntheticSeasons(SyntheticSeasons.Options(size=32, n_train=4, n_val=2), tmp_path / "a")
    assert torch.equal(again.split("train", "winter").images(range(4)), a.split("train", "winter").images(range(4)))
    labels = a.split("train", "summer").labels(range(4))
    assert labels.dtype == torch.int64 and set(labels.unique().tolist()) <= set(range(len(SEASON_CLASSES)))
    assert {0, 1, 2, 4} <= set(labels.unique().tolist())   # sky, mountain, ground, tree in every few images
    # Season styles differ: the snowy winter ground is brighter than the summer grass.
    def ground_brightness(domain):
        s = a.split("train", domain)
        imgs, labs = s.images(range(4)).float(), s.labels(range(4))
        return imgs.mean(1)[labs == 2].mean()
    assert ground_brightness("winter") > ground_brightness("summer") + 60
    with pytest.raises(ConfigError, match="unknown domain"):
        SyntheticSeasons(SyntheticSeasons.Options(domains=["summer", "monsoon"]), tmp_path)


def _png(path, value=100):
    from benchmark.core.image_io import write_png
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.full((3, 20, 20), value, dtype=torch.uint8), path)


def test_folder_per_domain_reader_and_its_errors(tmp_path):
    from datasets.multidomain import MultiDomainFolder
    root = tmp_path / "seasons"
    for split in ("train", "val"):
        for d in ("winter", "summer"):
            _png(root / split / d / "a.png")
            _png(root / split / d / "sub" / "b.png", 200)
    ds = MultiDomainFolder(MultiDomainFolder.Options(root=str(root), size=16), tmp_path)
    assert ds.domains == ["summer", "winter"]                 # sorted: the label order
    val = ds.split("val", 1)
    assert len(val) == 2 and val.image(1).shape == (3, 16, 16) and int(val.image(1)[0, 0, 0]) == 200
    assert "domains=summer,winter" in ds.identity
    (root / "val" / "winter" / "a.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="a.png"):
        ds.split("val", "winter").image(0)
    for p in (root / "val" / "winter").rglob("*"):
        if p.is_file():
            p.unlink()
    (root / "val" / "winter" / "sub").rmdir()
    (root / "val" / "winter").rmdir()
    fresh = MultiDomainFolder(MultiDomainFolder.Options(root=str(root), size=16), tmp_path)
    with pytest.raises(DataError, match=r"val[/\\]winter"):
        fresh.domains
    missing = MultiDomainFolder(MultiDomainFolder.Options(root=str(tmp_path / "nope"), size=16), tmp_path)
    with pytest.raises(DataError, match="nope"):
        missing.domains


def test_train_step_reports_the_methods_auxiliary_logs(tmp_path):
    task, _, _ = build(tmp_path, methods=("negcut",), steps=2)
    logs = task.train_step()
    assert {"N", "N_ref"} <= set(logs), sorted(logs)   # NEGCUT's negative-generator loss, both G steps
    assert all(isinstance(v, float) for v in logs.values())
