"""DRN-D-22 / DRN-D-105 Cityscapes segmenters: official checkpoint layout, both protocols, palette."""
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.core import weights
from benchmark.core.errors import WeightsError
from benchmark.core.metrics import drn
from benchmark.core.metrics.drn import (CITYSCAPES_PALETTE, IGNORE_INDEX, CityscapesSegmenter, DRNSeg,
                                   colourise, decode_colour_labels, resize_log_probs)


def official_keys(arch: str) -> dict[str, tuple]:
    """Parameter / buffer names and shapes of fyu/drn's ``DRNSeg(arch, 19)``, derived from its
    ``DRN._make_layer`` / ``_make_conv_layers`` rules (stage i of ``base`` is ``layer{i}``)."""
    bottleneck, counts = {"drn_d_22": (False, (1, 1, 2, 2, 2, 2, 1, 1)),
                          "drn_d_105": (True, (1, 1, 3, 4, 23, 3, 1, 1))}[arch]
    channels = (16, 32, 64, 128, 256, 512, 512, 512)
    keys = {}

    def bn(prefix, c):
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{name}"] = (c,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    def conv_layers(stage, c_in, c_out, n):
        for i in range(n):
            keys[f"base.{stage}.{3 * i}.weight"] = (c_out, c_in if i == 0 else c_out, 3, 3)
            bn(f"base.{stage}.{3 * i + 1}", c_out)
        return c_out

    keys["base.0.0.weight"] = (16, 3, 7, 7)
    bn("base.0.1", 16)
    c = conv_layers(1, 16, channels[0], counts[0])
    c = conv_layers(2, c, channels[1], counts[1])
    for stage, planes, n, stride in ((3, channels[2], counts[2], 2), (4, channels[3], counts[3], 2),
                                     (5, channels[4], counts[4], 1), (6, channels[5], counts[5], 1)):
        out = planes * (4 if bottleneck else 1)
        for b in range(n):
            p = f"base.{stage}.{b}"
            c_in = c if b == 0 else out
            if bottleneck:
                keys[f"{p}.conv1.weight"] = (planes, c_in, 1, 1)
                keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                keys[f"{p}.conv3.weight"] = (out, planes, 1, 1)
                bn(f"{p}.bn1", planes), bn(f"{p}.bn2", planes), bn(f"{p}.bn3", out)
            else:
                keys[f"{p}.conv1.weight"] = (planes, c_in, 3, 3)
                keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn1", planes), bn(f"{p}.bn2", planes)
            if b == 0 and (stride != 1 or c_in != out):
                keys[f"{p}.downsample.0.weight"] = (out, c_in, 1, 1)
                bn(f"{p}.downsample.1", out)
        c = out
    c = conv_layers(7, c, channels[6], counts[6])
    conv_layers(8, c, channels[7], counts[7])
    keys["seg.weight"], keys["seg.bias"], keys["up.weight"] = (19, 512, 1, 1), (19,), (19, 1, 16, 16)
    return keys


@pytest.mark.parametrize("arch,n_params", [("drn_d_22", 16.4e6), ("drn_d_105", 54.8e6)])
def test_state_dict_layout_matches_official(arch, n_params):
    model = DRNSeg(arch)
    sd = model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == official_keys(arch)
    for name in ("base.0.0.weight", "base.0.1.running_var", "base.3.0.downsample.0.weight",
                 "base.8.1.running_mean", "seg.bias", "up.weight"):
        assert name in sd
    assert not any(k.startswith("base.9") for k in sd)
    if arch == "drn_d_105":
        assert "base.5.22.conv3.weight" in sd and sd["base.7.0.weight"].shape == (512, 2048, 3, 3)
    # the classifier's size in fyu/drn's README: base + a 512 -> 1000 fc
    base = sum(v.numel() for k, v in model.named_parameters() if k.startswith("base."))
    assert abs(base + 512 * 1000 + 1000 - n_params) < 0.05e6


def test_up_is_frozen_bilinear():
    m = DRNSeg("drn_d_22")
    assert not m.up.weight.requires_grad
    k = m.up.weight[3, 0]
    assert torch.allclose(k, k.T) and torch.allclose(k, m.up.weight[0, 0])
    x = torch.ones(1, 19, 4, 4)
    y = m.up(x)
    assert y.shape == (1, 19, 32, 32) and torch.allclose(y[..., 4:-4, 4:-4], torch.ones(1))  # interpolates


def _official_style_checkpoint(arch, path, seed=0, wrap=False):
    """Random tensors under the official key layout (``official_keys``, not our class), saved as the
    2017 checkpoints are: a plain state dict without num_batches_tracked or metadata, legacy
    (non-zip) serialisation. Returns the saved tensors."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_keys(arch).items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_var"):
            t = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 1:  # BN weight / bias / running_mean, seg bias
            t = torch.randn(shape, generator=g) * 0.1 + (1.0 if key.endswith(".weight") else 0.0)
        else:
            t = torch.randn(shape, generator=g) * (2.0 / (shape[0] * shape[2] * shape[3])) ** 0.5
        state[key] = t
    state["up.weight"] = drn.bilinear_up_kernel(16).expand(19, 1, 16, 16).clone()
    saved = {"state_dict": {f"module.{k}": v for k, v in state.items()}} if wrap else state
    torch.save(saved, path, _use_new_zipfile_serialization=False)
    return state


@pytest.fixture
def wdir(tmp_path, monkeypatch):
    monkeypatch.delenv(weights.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("I2I_BENCH_CACHE_DIR", str(tmp_path / "cache"))
    d = tmp_path / "weights"
    d.mkdir()
    return d


def test_cut_protocol_loads_checkpoint_and_predicts_at_256x128(wdir):
    state = _official_style_checkpoint("drn_d_22", wdir / "drn_d_22_cityscapes.pth")
    seg = CityscapesSegmenter("cut", weights_dir=wdir, device="cpu")
    loaded = seg.net.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8, generator=g)
    pred = seg.predict(images)
    assert pred.shape == (2, 128, 256) and pred.dtype == torch.int64
    assert int(pred.min()) >= 0 and int(pred.max()) < 19
    # the same pipeline by hand for the first image: PIL bicubic to 256x128, Cityscapes mean/std
    small = np.asarray(Image.fromarray(images[0].permute(1, 2, 0).numpy()).resize((256, 128), Image.BICUBIC))
    x = torch.from_numpy(small.copy()).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(drn.CITYSCAPES_MEAN).view(1, 3, 1, 1)) / torch.tensor(drn.CITYSCAPES_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(seg.net(x).argmax(1)[0], pred[0])
    assert "drn_d_22" in seg.description and "cut" in seg.description
    digest = hashlib.sha256((wdir / "drn_d_22_cityscapes.pth").read_bytes()).hexdigest()
    assert f"(drn_d_22_cityscapes.pth, sha256 {digest[:12]})" in seg.description  # which file scored


def test_wrapped_checkpoint_loads_and_wrong_arch_is_refused(wdir, tmp_path):
    state = _official_style_checkpoint("drn_d_22", tmp_path / "wrapped.pth", wrap=True)
    m = DRNSeg("drn_d_22")
    drn.load_drn_checkpoint(m, tmp_path / "wrapped.pth")
    assert torch.equal(m.seg.weight, state["seg.weight"])
    with pytest.raises(WeightsError, match="does not fit drn_d_105"):
        drn.load_drn_checkpoint(DRNSeg("drn_d_105"), tmp_path / "wrapped.pth")


def test_missing_checkpoint_raises_with_where_to_put_it(wdir):
    with pytest.raises(WeightsError) as exc:
        CityscapesSegmenter("gan_compression", weights_dir=wdir, device="cpu")
    assert str(wdir / "drn-d-105_ms_cityscapes.pth") in str(exc.value)


def test_gan_compression_protocol_resizes_to_2048x1024(wdir):
    """DRN-D-105 on one small stand-in image (32x32 instead of 256x256: CPU time); the output
    resize to 2048x1024 and the argmax are the protocol's (the resize itself is checked against
    PIL below)."""
    state = _official_style_checkpoint("drn_d_105", wdir / "drn-d-105_ms_cityscapes.pth")
    seg = CityscapesSegmenter("gan_compression", weights_dir=wdir, device="cpu")
    assert torch.equal(seg.net.state_dict()["base.5.22.conv3.weight"], state["base.5.22.conv3.weight"])
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    lp = seg.log_probs(image)
    assert lp.shape == (1, 19, 32, 32)  # x8 inside the network
    assert torch.allclose(lp.exp().sum(1), torch.ones(1, 32, 32), atol=1e-4)
    pred = seg.predict(image)
    assert pred.shape == (1, 1024, 2048) and pred.dtype == torch.int64
    # bilinear x32 with half-pixel centres: the first 16 output rows/columns copy input pixel (0, 0),
    # the last 16 copy pixel (31, 31)
    assert (pred[0, :16, :16] == lp[0, :, 0, 0].argmax()).all()
    assert (pred[0, -16:, -16:] == lp[0, :, -1, -1].argmax()).all()
    assert seg.prepare_labels(torch.zeros(1, 1024, 2048, dtype=torch.int64)).shape == (1, 1024, 2048)


def test_resize_matches_gan_compressions_pil_bilinear():
    x = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(3))
    ours = resize_log_probs(x, (64, 128))[0].numpy()
    pil = np.stack([np.asarray(Image.fromarray(c.numpy()).resize((128, 64), Image.BILINEAR)) for c in x[0]])
    assert np.abs(ours - pil).max() < 1e-5


def test_palette_round_trip_and_void():
    assert len(CITYSCAPES_PALETTE) == 19 and len(set(CITYSCAPES_PALETTE)) == 19
    assert drn.CITYSCAPES_CLASSES[0] == "road" and drn.CITYSCAPES_CLASSES[18] == "bicycle"
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 19, (2, 16, 24), generator=g)
    ids[0, :3] = IGNORE_INDEX
    rgb = colourise(ids)
    assert rgb.shape == (2, 3, 16, 24) and rgb.dtype == torch.uint8
    assert torch.equal(decode_colour_labels(rgb), ids)
    noisy = (rgb.int() + torch.randint(-6, 7, rgb.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    assert torch.equal(decode_colour_labels(noisy), ids)  # near colours (resampling) decode too
    as_np = decode_colour_labels(colourise(ids.numpy()))   # numpy: channels-last
    assert isinstance(as_np, np.ndarray) and (as_np == ids.numpy()).all()
    white = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    assert (decode_colour_labels(white, max_distance=60) == IGNORE_INDEX).all()


def test_cut_labels_are_resized_colour_images(wdir):
    _official_style_checkpoint("drn_d_22", wdir / "drn_d_22_cityscapes.pth")
    seg = CityscapesSegmenter("cut", weights_dir=wdir, device="cpu")
    ids = torch.zeros(1, 256, 256, dtype=torch.int64)
    ids[:, 128:] = 13  # car below road
    labels = seg.prepare_labels(colourise(ids))
    assert labels.shape == (1, 128, 256)
    assert (labels[0, :60] == 0).all() and (labels[0, 68:] == 13).all()


def _cityscapes_folder(root, size=64, count=2):
    """CUT's cityscapes layout (prepare_cityscapes_dataset.py): A = photos, B = colour label maps
    (blocks of train ids); CUT trains it with --direction BtoA."""
    rng = np.random.default_rng(0)
    for sub in ("trainA", "trainB", "testA", "testB"):
        (root / sub).mkdir(parents=True)
        for i in range(count):
            if sub.endswith("B"):
                ids = np.kron(rng.integers(0, 19, (4, 4)), np.ones((size // 4, size // 4), np.int64))
                pixels = colourise(ids)
            else:
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / sub / f"{i}.png")
    return root


def test_cityscapes_folder_with_cut_protocol_is_scored_by_drn_against_its_input_labels(wdir, tmp_path):
    from benchmark.core.context import EvaluationConfig
    from datasets.folders import UnalignedFolder
    from benchmark.core.context import RunContext
    from tasks.data import to_uint8_truncated
    from tasks.evaluation import evaluate_translation

    _official_style_checkpoint("drn_d_22", wdir / "drn_d_22_cityscapes.pth")
    root = _cityscapes_folder(tmp_path / "cityscapes")
    options = UnalignedFolder.Options(root=str(root), size=64, load_size=64, direction="BtoA",
                                      segmentation_protocol="cut")
    dataset = UnalignedFolder(options, tmp_path / "cache")
    g = torch.Generator().manual_seed(3)
    photos = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    ctx = RunContext(run_dir=tmp_path / "run", seed=0, device=torch.device("cpu"),
                     evaluation=EvaluationConfig(num_test_images=2, kid_subsets=1, kid_subset_size=2,
                                                 batch_size=2),
                     cache_dir=tmp_path / "cache", weights_dir=wdir, log=lambda message: None)
    result = evaluate_translation(lambda x: photos[: x.shape[0]], dataset, ctx)
    assert {"mIoU", "pixAcc", "clsAcc"} <= set(result.metrics)
    assert "drn_d_22" in result.protocol["segmenter"]
    # pixel accuracy by hand: DRN on the outputs vs the input label images decoded at 256x128
    seg = CityscapesSegmenter("cut", weights_dir=wdir, device="cpu")
    pred = seg.predict(to_uint8_truncated(photos))
    labels = torch.stack([torch.from_numpy(np.asarray(Image.open(root / "testB" / f"{i}.png").convert("RGB")
                                                      .resize((256, 128), Image.BICUBIC)).copy())
                          .permute(2, 0, 1) for i in range(2)])
    truth = decode_colour_labels(labels)
    valid = truth != IGNORE_INDEX
    assert valid.float().mean() > 0.9
    expected = 100.0 * (pred[valid] == truth[valid]).double().mean().item()
    assert result.metrics["pixAcc"] == pytest.approx(expected, abs=1e-6)


def test_a_suite_with_a_cityscapes_folder_needs_the_drn_checkpoint(wdir, tmp_path):
    from benchmark.config import suite_from_dict

    root = _cityscapes_folder(tmp_path / "cityscapes")
    raw = {"suite": "city", "tasks": {"single_modal": {}}, "methods": ["cut"], "weights_dir": str(wdir),
           "datasets": {"cityscapes": {"type": "unaligned_folder", "root": str(root),
                                       "segmentation_protocol": "cut"}}}
    suite = suite_from_dict(raw, base_dir=tmp_path)
    assert "drn_d_22_cityscapes" in weights.required_weights(suite)
    with pytest.raises(WeightsError, match="drn_d_22_cityscapes.pth"):
        weights.check_suite(suite)
    bad = dict(raw, datasets={"cityscapes": {"type": "unaligned_folder", "root": str(root),
                                             "segmentation_protocol": "gan_compression"}})
    from benchmark.core.errors import ConfigError
    with pytest.raises(ConfigError, match="segmentation_protocol"):
        suite_from_dict(bad, base_dir=tmp_path)
