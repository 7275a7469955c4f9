"""Projection heads that map sampled patch features to the embedding space of a contrastive loss."""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn


def l2_normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-7) -> torch.Tensor:
    """x / (||x|| + eps), the normalisation of CUT's ``Normalize(2)``."""
    return x / (x.pow(2).sum(dim, keepdim=True).sqrt() + eps)


def xavier_init_(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """CUT's ``init_weights(init_type='xavier', init_gain=0.02)``: xavier-normal weights, zero biases."""
    return init_linear_(module, "xavier", gain)


def init_linear_(module: nn.Module, init: Literal["xavier", "normal"], gain: float = 0.02) -> nn.Module:
    """``init_weights(init_type=init, init_gain=gain)`` of the CUT / GAN Compression code on every
    Linear and Conv2d: xavier-normal weights with that gain, or normal(0, gain); zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if init == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            else:
                nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class ProjectionHeads(nn.Module):
    """One head per feature layer: Linear(C, d)-ReLU-Linear(d, d) (``use_mlp``) or identity, then L2
    normalisation; CUT's ``PatchSampleF`` with ``netF='mlp_sample'``."""

    def __init__(self, channels: Sequence[int], dim: int | None = 256, use_mlp: bool = True,
                 init_gain: float = 0.02, init: Literal["xavier", "normal"] = "xavier"):
        """``dim`` None: as wide as the widest feature layer (Hneg-SRC's compression header, whose hooks
        are all 4 x the teacher's ngf wide; a narrower layer, e.g. an RGB input, is not squeezed to a
        few units, where the L2 normalisation of a near-zero output blew up to NaN)."""
        super().__init__()
        self.use_mlp = use_mlp
        dim = dim or max(channels)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) if use_mlp else nn.Identity()
            for c in channels)
        init_linear_(self, init, init_gain)

    def forward(self, samples: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """(B, P, C) per layer -> (B, P, dim) unit vectors."""
        return [l2_normalize(mlp(x)) for mlp, x in zip(self.mlps, samples)]


def feature_channels(pair) -> list[int]:
    """Channel counts of the task's features a method sees on ``pair`` (a ``TranslationPair``)."""
    return pair.features.channels()


def heads_for_pair(pair, dim: int = 256, use_mlp: bool = True) -> ProjectionHeads:
    """Projection heads sized from the features of ``pair`` (CUT's data-dependent initialisation),
    on the pair's device."""
    return ProjectionHeads(feature_channels(pair), dim, use_mlp).to(pair.source.device)
