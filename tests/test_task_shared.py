"""Helpers the tasks share (tasks/data.py, tasks/base.py, tasks/evaluation.py): the two uint8
conversions, the seeded generators, set_requires_grad, and the one real-feature cache."""
import numpy as np
import pytest
import torch
from torch import nn

from benchmark.core.context import EvaluationConfig, RunContext
from benchmark.core.metrics.fid import FeatureCache
from benchmark.core.metrics.inception import INCEPTION_SHA256
from tasks import evaluation as shared_eval
from tasks.base import set_requires_grad
from tasks.data import seeded_generator, to_uint8_rounded, to_uint8_truncated
from tasks.multi_modal import evaluation as mm_eval

# -- [-1, 1] float -> uint8 ---------------------------------------------------------------------------

#          x:   -2   -1   -0.5    0    0.5   0.998    1    2
# (x+1)/2*255:   -    0   63.75 127.5 191.25 254.745 255   -   (x clamped to [-1, 1] first)
VALUES = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 0.998, 1.0, 2.0])
TRUNCATED = [0, 0, 63, 127, 191, 254, 255, 255]
ROUNDED = [0, 0, 64, 128, 191, 255, 255, 255]


def test_to_uint8_truncated_cuts_the_fraction_off_like_cuts_tensor2im():
    out = to_uint8_truncated(VALUES.view(1, 1, 2, 4))
    assert out.dtype == torch.uint8 and out.device.type == "cpu" and out.shape == (1, 1, 2, 4)
    assert out.flatten().tolist() == TRUNCATED


def test_to_uint8_rounded_rounds_half_up_like_stargan_v2s_save_image():
    out = to_uint8_rounded(VALUES.view(1, 1, 2, 4))
    assert out.dtype == torch.uint8 and out.device.type == "cpu" and out.shape == (1, 1, 2, 4)
    assert out.flatten().tolist() == ROUNDED


def test_uint8_conversions_leave_their_input_alone_and_take_tensors_that_need_grad():
    x = VALUES.clone().requires_grad_(True)
    assert to_uint8_truncated(x).tolist() == TRUNCATED and to_uint8_rounded(x).tolist() == ROUNDED
    assert torch.equal(x.detach(), VALUES)
    # Every uint8 value survives to_model_range-like scaling and back through the rounded conversion.
    levels = torch.arange(256, dtype=torch.float32).div(127.5).sub(1.0)
    assert to_uint8_rounded(levels).tolist() == list(range(256))


# -- seeded generators --------------------------------------------------------------------------------

def test_seeded_generator_mixes_the_key_parts_as_documented():
    assert seeded_generator(2, 5).initial_seed() == 2 * 1_000_003 + 5
    assert seeded_generator().initial_seed() == 0
    expected = 0
    key = (10**6, 7, 10**6, 3, 12)          # large enough to wrap around 2**63 - 1
    for k in key:
        expected = (expected * 1_000_003 + k) % (2**63 - 1)
    assert seeded_generator(*key).initial_seed() == expected
    a = torch.rand(5, generator=seeded_generator(0, 3, 11))
    b = torch.rand(5, generator=torch.Generator().manual_seed(3 * 1_000_003 + 11))
    assert torch.equal(a, b)


# -- set_requires_grad --------------------------------------------------------------------------------

def test_set_requires_grad_switches_every_parameter_and_no_buffer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Linear(4, 1)))
    set_requires_grad(net, False)
    assert not any(p.requires_grad for p in net.parameters())
    assert not any(b.requires_grad for b in net.buffers())
    x = torch.randn(5, 3, requires_grad=True)
    net(x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in net.parameters())
    set_requires_grad(net, True)
    assert all(p.requires_grad for p in net.parameters())
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_every_task_module_uses_the_one_shared_set_requires_grad():
    import importlib
    import pkgutil

    import tasks
    users = []
    for info in pkgutil.walk_packages(tasks.__path__, "tasks."):
        found = getattr(importlib.import_module(info.name), "set_requires_grad", None)
        assert found is None or found is set_requires_grad, f"{info.name} defines its own set_requires_grad"
        users += [info.name] if found is not None else []
    assert {"tasks.adversarial_steps", "tasks.multi_modal.task", "tasks.compression.task"} <= set(users)


# -- the real-feature cache, shared by both tasks ----------------------------------------------------------

class Counting:
    """A stand-in for inception_features: 5 features per image, counts the calls and images."""

    def __init__(self):
        self.calls, self.images = 0, 0

    def __call__(self, images, resize="legacy", device=None, batch_size=50, progress=None, weights_dir=None):
        images = images if isinstance(images, torch.Tensor) else torch.cat(list(images))
        self.calls += 1
        self.images += images.shape[0]
        flat = images.float().flatten(1)
        return torch.stack([flat.mean(1), flat.std(1), flat[:, 0], flat[:, 1], flat[:, -1]], 1).double().numpy()


def _ctx(tmp_path, name):
    return RunContext(run_dir=tmp_path / name, seed=0, device=torch.device("cpu"), cache_dir=tmp_path / "cache",
                      evaluation=EvaluationConfig(num_test_images=3, kid_subsets=1, kid_subset_size=2,
                                                  batch_size=2, grid_images=2, label_scores=False),
                      log=lambda message: None)


def test_real_features_of_both_tasks_are_computed_once_then_read_from_the_shared_cache(tmp_path, monkeypatch):
    from datasets.synthetic import SyntheticObjects
    from datasets.synthetic_seasons import SyntheticSeasons

    real, fake = Counting(), Counting()
    monkeypatch.setattr(shared_eval, "inception_features", real)     # the shared module: fake outputs too
    monkeypatch.setattr(mm_eval, "sharded_inception_features",       # the multi-modal outputs
                        lambda images, ctx: fake(images, batch_size=ctx.evaluation.batch_size))
    called = []
    original = shared_eval.real_features

    def spy(*args, **kwargs):
        called.append(kwargs)
        return original(*args, **kwargs)
    monkeypatch.setattr(shared_eval, "real_features", spy)
    monkeypatch.setattr(mm_eval, "real_features", spy)

    # Single-modal: real features of test B; the outputs go through the same inception stand-in.
    objects = SyntheticObjects(SyntheticObjects.Options(size=16, n_train=2, n_test=4), tmp_path / "data")
    first = shared_eval.evaluate_translation(lambda x: -x, objects, _ctx(tmp_path, "sm1"))
    assert (real.calls, real.images) == (2, 3 + 4)                   # 3 outputs, then the 4 test B images
    second = shared_eval.evaluate_translation(lambda x: -x, objects, _ctx(tmp_path, "sm2"))
    assert (real.calls, real.images) == (3, 3 + 4 + 3)               # the outputs only: test B was cached
    assert first.metrics == second.metrics
    assert called == [{"side": "B"}, {"side": "B"}]

    # Multi-modal (identity rows): real features of every domain's train images.
    seasons = SyntheticSeasons(SyntheticSeasons.Options(size=16, n_train=3, n_val=2, domains=["summer", "winter"]),
                               tmp_path / "data")
    settings = mm_eval.EvalSettings(num_outs_per_domain=2, lpips=False, structure_score=False, latent_dim=4)
    real.calls = real.images = 0
    one = mm_eval.evaluate_multimodal(None, seasons, settings, _ctx(tmp_path, "mm1"))
    assert (real.calls, real.images) == (2, 2 * 3)                   # once per domain, not per mode
    assert fake.calls == 2                                           # the val images of each domain
    two = mm_eval.evaluate_multimodal(None, seasons, settings, _ctx(tmp_path, "mm2"))
    assert real.calls == 2 and one.metrics == two.metrics            # the second evaluation: all cached
    assert called[2:] == [{"domain": d} for _ in range(4) for d in ("summer", "winter")]

    # The cache keys are the ones the two tasks used before they shared the function (same files).
    cache = FeatureCache(tmp_path / "cache" / "fid_stats")
    test_b = objects.split("test", "B")
    old_single = {"dataset": objects.identity, "split": "test", "side": "B", "resolution": [16, 16],
                  "resize": "legacy", "network": INCEPTION_SHA256, "count": len(test_b)}
    old_multi = [{"dataset": seasons.identity, "split": "train", "domain": d, "resolution": [16, 16],
                  "resize": "legacy", "network": INCEPTION_SHA256, "count": 3} for d in ("summer", "winter")]
    for key in (old_single, *old_multi):
        assert cache.path_for(key).is_file()
    assert len(list(cache.cache_dir.glob("features-*.npz"))) == 3
    assert shared_eval.real_features_key(objects, "test", test_b, "legacy", side="B") == old_single


def test_real_features_wants_exactly_one_of_side_and_domain(tmp_path):
    ctx = _ctx(tmp_path, "run")
    with pytest.raises(TypeError, match="exactly one of side / domain"):
        shared_eval.real_features(object(), "test", ctx)
    with pytest.raises(TypeError, match="exactly one of side / domain"):
        shared_eval.real_features(object(), "test", ctx, side="B", domain="winter")


def test_cached_real_features_equal_freshly_computed_ones(tmp_path, monkeypatch):
    from datasets.synthetic import SyntheticObjects
    monkeypatch.setattr(shared_eval, "inception_features", Counting())
    objects = SyntheticObjects(SyntheticObjects.Options(size=16, n_train=2, n_test=3), tmp_path / "data")
    ctx = _ctx(tmp_path, "run")
    fresh = shared_eval.real_features(objects, "test", ctx, side="A")
    cached = shared_eval.real_features(objects, "test", ctx, side="A")
    assert fresh.shape == (3, 5) and np.array_equal(fresh, cached)
