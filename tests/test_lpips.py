"""LPIPS through the lpips package: no download, the untrained-backbone opt-in, StarGAN v2 diversity."""
import pytest
import torch
import torchvision

from benchmark.core import weights
from benchmark.core.errors import BenchmarkError, WeightsError
from benchmark.core.metrics.lpips_metric import (LPIPSMetric, load_alexnet_features, lpips_distance,
                                            lpips_diversity, pair_indices)


@pytest.fixture(autouse=True)
def no_alexnet_anywhere(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv(weights.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("I2I_BENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def metric(tmp_path_factory):
    return LPIPSMetric("cpu", backbone="untrained", cache_dir=tmp_path_factory.mktemp("c"), batch_size=8)


def _images(n, seed, size=64):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 8, size // 8, generator=g)  # smooth, image-like content
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False) * 2 - 1


def test_untrained_opt_in_is_marked(metric):
    assert metric.untrained and "UNTRAINED" in metric.description
    assert metric.files["alexnet"] is None and metric.files["linear"].endswith("alex.pth")
    assert metric.net.version == "0.1" and metric.net.pnet_type == "alex"


def test_identical_images_give_zero_and_noise_raises_lpips(metric):
    x = _images(4, 0)
    assert torch.equal(metric.distance(x, x), torch.zeros(4))
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    means = [metric.distance(x, (x + s * noise).clamp(-1, 1)).mean().item() for s in (0.05, 0.2, 0.6)]
    assert 0 < means[0] < means[1] < means[2]


def test_uint8_and_float_inputs_agree(metric):
    u = ((_images(3, 2) + 1) * 127.5).round().to(torch.uint8)
    v = ((_images(3, 3) + 1) * 127.5).round().to(torch.uint8)
    d = lpips_distance(u, v, metric=metric)
    assert d.shape == (3,) and (d > 0).all()
    assert torch.allclose(d, metric.distance(u.float() / 127.5 - 1, v.float() / 127.5 - 1))
    with pytest.raises(BenchmarkError, match=r"\[-1, 1\]"):
        metric.distance(u.float(), v.float())


def test_diversity_pairs_and_identical_outputs(metric):
    assert len(pair_indices(10)) == 45 and pair_indices(3) == [(0, 1), (0, 2), (1, 2)]
    same = _images(1, 4, size=32).expand(10, 3, 32, 32)
    assert lpips_diversity([same], metric=metric) == 0.0
    groups = torch.stack([_images(3, 5, size=32), _images(3, 6, size=32)])  # (G=2, K=3, 3, H, W)
    mean, per_group = lpips_diversity(groups, metric=metric, return_per_group=True)
    expected = [torch.stack([metric.distance(g[i:i + 1], g[j:j + 1])[0] for i, j in pair_indices(3)]).mean()
                for g in groups]
    assert per_group == pytest.approx([e.item() for e in expected], rel=1e-5)
    assert mean == pytest.approx(sum(per_group) / 2)
    with pytest.raises(BenchmarkError, match="need >= 2"):
        lpips_diversity([same[:1]], metric=metric)


def test_missing_alexnet_without_opt_in_names_the_file(tmp_path):
    with pytest.raises(WeightsError) as exc:
        LPIPSMetric("cpu", weights_dir=tmp_path)
    msg = str(exc.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(tmp_path / "alexnet-owt-7be5be79.pth") in msg


def test_wrong_alexnet_file_is_refused(tmp_path):
    (tmp_path / "alexnet-owt-7be5be79.pth").write_bytes(b"an interrupted download")
    with pytest.raises(WeightsError, match="WRONG"):
        LPIPSMetric("cpu", weights_dir=tmp_path)


def test_alexnet_features_go_into_the_lpips_trunk(metric):
    import copy
    trunk = copy.deepcopy(metric.net.net)
    state = torchvision.models.alexnet(weights=None).state_dict()
    load_alexnet_features(trunk, state)
    loaded = dict(trunk.named_parameters())
    for i, slice_name in zip((0, 3, 6, 8, 10), ("slice1", "slice2", "slice3", "slice4", "slice5")):
        assert torch.equal(loaded[f"{slice_name}.{i}.weight"], state[f"features.{i}.weight"])
        assert torch.equal(loaded[f"{slice_name}.{i}.bias"], state[f"features.{i}.bias"])
    with pytest.raises(WeightsError, match="not a torchvision AlexNet"):
        load_alexnet_features(trunk, torchvision.models.squeezenet1_1(weights=None).state_dict())
