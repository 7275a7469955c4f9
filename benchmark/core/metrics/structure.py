"""Structure scores that need no pretrained weights: edge maps of luminance and their agreement.

* :func:`edge_magnitude`: Sobel gradient magnitude of the luminance (ITU-R 601 weights) of uint8
  images, optionally after a Gaussian blur of standard deviation ``sigma`` pixels (which removes
  texture finer than about ``sigma``, e.g. brush strokes, and keeps the layout's edges);
* :func:`edge_correlation`: per image pair, the Pearson correlation of two such edge maps -- 1 when
  the edges of one image are an affine function of the other's (same places, any contrast), 0 when
  unrelated. Invariant to colour changes that keep the luminance edges (what a translation may
  change) and to global contrast, it rewards keeping *where* the source's edges are.

The multi-modal task correlates :func:`edge_magnitude` with label-map boundaries; the single-image
task correlates the output's blurred edges with the input's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import BenchmarkError

__all__ = ["luminance", "gaussian_blur", "edge_magnitude", "pearson", "edge_correlation"]

_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def _check(images: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or images.shape[1] != 3:
        raise BenchmarkError(f"structure score: {name} must be uint8 images (N, 3, H, W), got "
                             f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}")
    return images


def luminance(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> luminance in [0, 1], float32 (N, 1, H, W)."""
    x = _check(images, "images").float() / 255.0
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), radius ceil(3 sigma), reflected borders; sigma 0 = none."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def edge_magnitude(images: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> Sobel gradient magnitude of the (blurred) luminance, (N, H, W)."""
    lum = gaussian_blur(luminance(images), sigma)
    padded = F.pad(lum, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, _SOBEL[None, None].to(lum.device))
    gy = F.conv2d(padded, _SOBEL.t()[None, None].to(lum.device))
    return (gx.pow(2) + gy.pow(2)).sqrt()[:, 0]


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row of (N, ...) tensors, the Pearson correlation (0 where either is constant); float64 (N,)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denom > 0, (a * b).sum(1) / denom.clamp(min=1e-30), torch.zeros_like(denom))


def edge_correlation(images: torch.Tensor, references: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
    """Per pair, the Pearson correlation of the edge maps of ``images`` and ``references`` (uint8,
    same shape (N, 3, H, W)), both blurred by ``sigma``; float64 (N,) in [-1, 1]."""
    _check(images, "images"), _check(references, "references")
    if images.shape != references.shape:
        raise BenchmarkError(f"structure score: images {tuple(images.shape)} and references "
                             f"{tuple(references.shape)} must have the same shape")
    return pearson(edge_magnitude(images, sigma), edge_magnitude(references, sigma))
