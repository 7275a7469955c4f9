"""Sampling the same spatial locations from corresponding feature maps."""
from __future__ import annotations

from typing import Sequence

import torch


def sample_locations(features: Sequence[torch.Tensor], num_patches: int) -> list[torch.Tensor]:
    """Random locations per feature map (shared by every image of the batch), as in CUT's
    PatchSampleF: a permutation of the H*W positions cut to ``num_patches`` (all when 0 or more than
    there are). Uses the global torch RNG, which the task seeds and checkpoints."""
    ids = []
    for feat in features:
        count = feat.shape[2] * feat.shape[3]
        if num_patches > 0:
            ids.append(torch.randperm(count)[: min(num_patches, count)])
        else:
            ids.append(torch.arange(count))
    return ids


def gather_locations(features: Sequence[torch.Tensor], ids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Feature vectors at ``ids``: for each (B, C, H, W) map a (B, P, C) tensor."""
    out = []
    for feat, idx in zip(features, ids):
        flat = feat.flatten(2).transpose(1, 2)  # (B, H*W, C)
        out.append(flat[:, idx.to(feat.device), :])
    return out
