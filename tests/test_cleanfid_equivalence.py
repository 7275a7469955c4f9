"""Protocol equivalence with clean-fid: our ``fid_resize`` modes against clean-fid's
own code paths, with the same images and the same network file.

clean-fid normally downloads its own network, so its pipeline is driven with ours: its folder reader
(``cleanfid.fid.get_folder_features``: PIL loading, ``ResizeDataset`` with ``build_resizer(mode)``,
``ToTensor``, its DataLoader and ``get_batch_features``) feeds our sha256-verified TF-Inception
TorchScript through the input scaling of clean-fid's own wrapper for that mode:

* ``legacy_pytorch``: ``feature_extractor("pytorch_inception")`` calls the network on ``x / 255``, and
  pytorch-fid's ``InceptionV3.forward`` (``normalize_input=True``) maps that to ``2 x - 1``;
* ``clean``: ``InceptionV3W.forward`` (``resize_inside=False``) feeds ``(x - 128) / 128``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.core.metrics.fid import inception_features
from benchmark.core.metrics.inception import load_inception

cleanfid_fid = pytest.importorskip("cleanfid.fid")

#: clean-fid's wrappers' input scaling per mode, in front of our network (see the module docstring)
CLEANFID_SCALING = {
    "legacy_pytorch": lambda x: 2 * (x / 255) - 1,
    "clean": lambda x: (x - 128) / 128,
}
#: which of our ``fid_resize`` modes equals which clean-fid mode
OUR_MODE = {"legacy_pytorch": "legacy", "clean": "clean"}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two small RGB images with smooth gradients, edges and noise, as PNG files (lossless)."""
    folder = tmp_path_factory.mktemp("cleanfid_images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:32]
    images = []
    for i in range(2):
        base = np.stack([(xx * (7 + i)) % 256, (yy * (11 - i)) % 256, ((xx + yy) * 5 + 60 * i) % 256], -1)
        img = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
        img[6 + i:14 + i, 8:20] = [250, 30 * i, 10]  # a sharp-edged block
        Image.fromarray(img).save(folder / f"img_{i}.png")
        images.append(img)
    return folder, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


_cache: dict[tuple[str, str], np.ndarray] = {}


def features(image_folder, side: str, mode: str) -> np.ndarray:
    """Features of the two images through clean-fid's pipeline in its ``mode`` (side 'theirs') or
    ours in the matching ``fid_resize`` mode (side 'ours'); each computed once per test session."""
    if (side, mode) not in _cache:
        folder, images = image_folder
        if side == "theirs":
            network, scale = load_inception("cpu"), CLEANFID_SCALING[mode]
            found = cleanfid_fid.get_folder_features(
                str(folder), model=lambda x: network(scale(x.float())), num_workers=0, batch_size=2,
                device=torch.device("cpu"), mode=mode, verbose=False)
            _cache[side, mode] = np.asarray(found, dtype=np.float64)
        else:
            _cache[side, mode] = inception_features(images, resize=OUR_MODE[mode], device="cpu", batch_size=2)
    return _cache[side, mode]


@pytest.mark.parametrize("cleanfid_mode", ["legacy_pytorch", "clean"])
def test_our_preprocessing_gives_cleanfid_features(image_folder, cleanfid_mode):
    theirs = features(image_folder, "theirs", cleanfid_mode)
    ours = features(image_folder, "ours", cleanfid_mode)
    assert theirs.shape == ours.shape == (2, 2048)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_the_two_modes_differ(image_folder):
    """A control: the comparison above can fail -- the other mode's preprocessing gives features that
    differ far beyond the tolerance."""
    assert np.abs(features(image_folder, "ours", "legacy_pytorch")
                  - features(image_folder, "theirs", "clean")).max() > 1e-3
    assert np.abs(features(image_folder, "ours", "clean")
                  - features(image_folder, "theirs", "legacy_pytorch")).max() > 1e-3
