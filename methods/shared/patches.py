"""Sampling the same spatial locations from corresponding feature maps, and the projected
keys/queries at those locations that the patch-wise contrastive methods compare."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..base import Role, TranslationPair


def sample_locations(features: Sequence[torch.Tensor], num_patches: int) -> list[torch.Tensor]:
    """Random locations per feature map (shared by every image of the batch), as in CUT's
    PatchSampleF: a permutation of the H*W positions cut to ``num_patches`` (all when 0 or more than
    there are), on the map's device. Drawn with the global (CPU) torch RNG, which the task seeds and
    checkpoints, so that every device samples the same locations."""
    ids = []
    for feat in features:
        count = feat.shape[2] * feat.shape[3]
        if num_patches > 0:
            drawn = torch.randperm(count)[: min(num_patches, count)]
        else:
            drawn = torch.arange(count)
        ids.append(to_device_async(drawn, feat.device))
    return ids


def to_device_async(cpu_tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device``; to CUDA through pinned memory without a stream synchronisation
    (a copy from pageable memory waits for the GPU to drain its queue)."""
    if device.type != "cuda":
        return cpu_tensor.to(device)
    return cpu_tensor.pin_memory().to(device, non_blocking=True)


def all_locations(features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Every position of each (B, C, H, W) map as a (B, H*W, C) view (no copy)."""
    return [feat.flatten(2).transpose(1, 2) for feat in features]


def gather_locations(features: Sequence[torch.Tensor], ids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Feature vectors at ``ids``: for each (B, C, H, W) map a (B, P, C) tensor."""
    return [flat[:, idx.to(flat.device), :] for flat, idx in zip(all_locations(features), ids)]


def pair_features(pair: TranslationPair, keys: Role, queries: Role, fresh_keys: bool = False
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The task's features ``(keys' side, queries' side)`` of two corresponding images of ``pair``,
    e.g. ("source", "output"): location s of both is the same place of the scene. The queries' side
    is asked first (the order every method used). ``fresh_keys``: the keys' features in a graph of
    their own (``FeatureSource.__call__``), for a method whose loss sends gradients into them."""
    query_feats = pair.features(queries)
    return pair.features(keys, fresh=fresh_keys), query_feats


@dataclass
class PatchEmbeddings:
    """Projected, L2-normalised patch features at shared locations, per layer.

    ``keys[l]`` = z_l = H_l(source features) and ``queries[l]`` = z_hat_l = H_l(output features),
    each (B, P_l, D): row s of image b of both comes from location ``ids[l][s]`` of image b."""

    keys: list[torch.Tensor]
    queries: list[torch.Tensor]
    ids: list[torch.Tensor]


def sample_keys_queries(heads: Callable[[Sequence[torch.Tensor]], list[torch.Tensor]],
                        source_feats: Sequence[torch.Tensor], output_feats: Sequence[torch.Tensor],
                        num_patches: int, ids: Sequence[torch.Tensor] | None = None) -> PatchEmbeddings:
    """Keys from ``source_feats`` and queries from ``output_feats`` at the same locations, projected
    through ``heads`` (which L2-normalise, e.g. ``ProjectionHeads``).

    The locations are drawn per layer with ``sample_locations`` (one ``randperm`` per layer from the
    global torch RNG, the same for every image of the batch) unless ``ids`` are given, e.g. to reuse
    one draw for a second pair of images. Every image keeps its own rows, so a batch of B gives what
    B batches of one would at the same locations."""
    if ids is None:
        ids = sample_locations(source_feats, num_patches)
    keys = heads(gather_locations(source_feats, ids))
    queries = heads(gather_locations(output_feats, ids))
    return PatchEmbeddings(keys, queries, list(ids))
