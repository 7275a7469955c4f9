"""Diversity of multi-modal outputs in pixel space: a score that needs no pretrained (or untrained)
backbone, reported beside LPIPS.

StarGAN v2 measures diversity as the mean LPIPS over every pair of the K outputs of one source
image (K = 10: 45 pairs), averaged over source images. :func:`pairwise_l1_diversity` averages the
same pairs, with the distance of two images being their mean absolute pixel difference on the
[0, 1] scale (uint8 / 255): 0 when every output of a source is the same image, 1 at most (black vs
white everywhere). It rises with the spread of the outputs (colour, brightness, texture) and does
not depend on a network, so it stays meaningful where LPIPS has to run on an untrained AlexNet.
"""
from __future__ import annotations

import torch

from ..errors import BenchmarkError

__all__ = ["pairwise_l1_diversity"]


def pairwise_l1_diversity(groups: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, K, C, H, W)``: the K outputs of each of N sources -> float64 ``(N,)``: per source,
    the mean over the K (K - 1) / 2 unordered pairs of outputs of their mean absolute pixel
    difference, pixels scaled to [0, 1]."""
    if not isinstance(groups, torch.Tensor) or groups.dtype != torch.uint8 or groups.dim() != 5:
        raise BenchmarkError("pixel diversity: expected uint8 groups of outputs (N, K, C, H, W), got "
                             f"{getattr(groups, 'dtype', type(groups))} {tuple(getattr(groups, 'shape', ()))}")
    n, k = groups.shape[:2]
    if k < 2:
        raise BenchmarkError(f"pixel diversity: needs at least 2 outputs per source (pairs), got K = {k}")
    flat = groups.flatten(2)
    total = torch.zeros(n, dtype=torch.float64, device=groups.device)
    for i in range(k - 1):                        # one output against every later one: (N, K-1-i, D)
        diff = (flat[:, i + 1:].to(torch.int16) - flat[:, i:i + 1].to(torch.int16)).abs()
        total += diff.double().mean(dim=2).sum(dim=1)
    return total / (k * (k - 1) / 2) / 255.0
