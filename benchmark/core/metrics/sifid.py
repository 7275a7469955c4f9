"""SIFID, the single-image FID of SinGAN (Shaham, Dekel and Michaeli, ICCV 2019; tamarott/SinGAN,
``SIFID/sifid_score.py`` and ``SIFID/inception.py``): the Fréchet distance between Gaussians fitted
to the Inception features of *every spatial position* of an early layer, of one image against another.

SinGAN's code, and what this module does with the TF-Inception network the project already loads
(:mod:`benchmark.core.metrics.inception`, TorchScript ``net.layers``: ``conv`` = Conv2d_1a_3x3,
``conv_1`` = 2a, ``conv_2`` = 2b, ``pool0``, ``conv_3`` = 3b_1x1, ``conv_4`` = 4a_3x3, ``pool1``, ...):

* input: the uint8 image divided by 255, then ``2 x - 1`` (``normalize_input``), at its own size
  (``resize_input=False``: no resize to 299);
* features: SinGAN's blocks end *before* the pooling their comments name ("block 0: input to
  maxpool1"; block 1 = maxpool1, Conv2d_3b_1x1, Conv2d_4a_3x3). Its script calls
  ``calculate_sifid_given_paths(..., dims=192)``, i.e. block 1: the output of Conv2d_4a_3x3, 192
  channels, the input of the second max-pooling -- "the output of the convolutional layer just
  before the second pooling layer" of the paper. That is ``channels=192`` here (``conv_4``), the
  default; ``channels=64`` is block 0, the output of Conv2d_2b_3x3 (``conv_2``), before the first
  pooling;
* statistics: the (H' W', C) matrix of positions x channels of each image, its mean and
  covariance (``np.cov(rowvar=False)``), and the Fréchet distance of the two Gaussians
  (``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``, clean-fid's ``frechet_distance``, the same
  formula as SinGAN's).

Differences: SinGAN uses torchvision's ImageNet Inception-v3 weights; this uses the TF-FID
Inception (the 2015 TensorFlow graph of pytorch-fid / clean-fid), the network the project has and
verifies. Values are therefore not those of SinGAN's script, but the protocol is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import BenchmarkError
from .fid import fid_from_features
from .inception import load_inception

__all__ = ["SIFID_LAYERS", "sifid_features", "sifid", "describe_layer"]

SIFID_LAYERS: dict[int, tuple[str, ...]] = {
    64: ("conv", "conv_1", "conv_2"),
    192: ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4"),
}
"""Feature width -> the TF-Inception layers run, in order (SinGAN's ``BLOCK_INDEX_BY_DIM``)."""


def describe_layer(channels: int) -> str:
    """Words for the report: which activations SIFID compares."""
    if channels == 192:
        return ("TF-Inception Conv2d_4a_3x3 output (192 channels, before the second max-pool: SinGAN's "
                "dims=192), statistics over spatial positions, no resize")
    return ("TF-Inception Conv2d_2b_3x3 output (64 channels, before the first max-pool: SinGAN's block 0), "
            "statistics over spatial positions, no resize")


def sifid_features(images: torch.Tensor, channels: Literal[64, 192] = 192,
                   device: torch.device | str | None = None,
                   weights_dir: Path | str | None = None) -> list[np.ndarray]:
    """Per image of uint8 ``images`` (N, 3, H, W), its (H' W', C) float64 matrix of early-layer
    TF-Inception activations (positions x channels)."""
    if channels not in SIFID_LAYERS:
        raise BenchmarkError(f"SIFID: channels must be one of {sorted(SIFID_LAYERS)}, got {channels!r}")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or images.shape[1] != 3:
        raise BenchmarkError(f"SIFID: expected uint8 images (N, 3, H, W), got "
                             f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}")
    if min(images.shape[-2:]) < 32:
        raise BenchmarkError(f"SIFID: images of {tuple(images.shape[-2:])} are too small; expected at least 32 x 32")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    layers = load_inception(device, weights_dir).net.layers
    out = []
    with torch.inference_mode():
        for image in images:
            x = image[None].to(device).float() / 255.0 * 2.0 - 1.0
            for name in SIFID_LAYERS[channels]:
                x = getattr(layers, name)(x)
            out.append(x[0].flatten(1).t().double().cpu().numpy())
    return out


def sifid(image: torch.Tensor, reference: torch.Tensor, channels: Literal[64, 192] = 192,
          device: torch.device | str | None = None, weights_dir: Path | str | None = None) -> float:
    """SIFID of one uint8 (3, H, W) ``image`` against one ``reference`` (sizes may differ)."""
    if image.dim() == 3:
        image = image[None]
    if reference.dim() == 3:
        reference = reference[None]
    if image.shape[0] != 1 or reference.shape[0] != 1:
        raise BenchmarkError(f"SIFID compares one image with one image, got batches of {image.shape[0]} "
                             f"and {reference.shape[0]}")
    (f1,), (f2,) = (sifid_features(x, channels, device, weights_dir) for x in (image, reference))
    return fid_from_features(f1, f2, reduce=False)
