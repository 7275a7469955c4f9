"""Patch-wise InfoNCE (CUT's PatchNCELoss), batched correctly."""
from __future__ import annotations

import torch
import torch.nn.functional as F

DIAGONAL_FILL = -10.0
"""CUT fills the query-to-own-key entry of the negative logits with -10 (a masked, near-zero term)."""


def patch_nce(query: torch.Tensor, key: torch.Tensor, tau: float = 0.07,
              negatives_from_minibatch: bool = False) -> torch.Tensor:
    """Per-patch InfoNCE losses, shape (B, P).

    ``query`` and ``key`` are (B, P, D) unit vectors at the same P locations; ``key`` is detached.
    The positive of query i is key i; its negatives are the other keys of the same image (or of the
    whole minibatch when ``negatives_from_minibatch``). Logits are ``[q.k+, q.k_j (j != i, own
    entry filled with -10)] / tau`` and the loss is the cross entropy towards the positive.
    """
    key = key.detach()
    batch, patches, dim = query.shape
    positive = (query * key).sum(-1, keepdim=True)  # (B, P, 1)
    if negatives_from_minibatch:
        q, k = query.reshape(1, batch * patches, dim), key.reshape(1, batch * patches, dim)
    else:
        q, k = query, key
    negatives = torch.bmm(q, k.transpose(1, 2))  # (b, n, n)
    eye = torch.eye(negatives.shape[1], dtype=torch.bool, device=query.device)
    negatives = negatives.masked_fill(eye, DIAGONAL_FILL).reshape(batch, patches, -1)
    return info_nce(positive, negatives, tau)


def info_nce(positive: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """-log( exp(p / tau) / (exp(p / tau) + sum_j exp(n_j / tau)) ) per row.

    ``positive`` is (..., 1) and ``negatives`` (..., N) similarity scores; returns shape (...)."""
    logits = torch.cat([positive, negatives], dim=-1) / tau
    flat = logits.reshape(-1, logits.shape[-1])
    target = torch.zeros(flat.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(flat, target, reduction="none").view(logits.shape[:-1])
