"""Patch-wise InfoNCE (CUT's PatchNCELoss), batched correctly."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.core.distributed import SINGLE_PROCESS, Distributed

DIAGONAL_FILL = -10.0
"""CUT fills the query-to-own-key entry of the negative logits with -10 (a masked, near-zero term)."""


def patch_nce(query: torch.Tensor, key: torch.Tensor, tau: float = 0.07,
              negatives_from_minibatch: bool = False, batch_share: Distributed = SINGLE_PROCESS) -> torch.Tensor:
    """Per-patch InfoNCE losses, shape (B, P).

    ``query`` and ``key`` are (B, P, D) unit vectors at the same P locations; ``key`` is detached.
    The positive of query i is key i; its negatives are the other keys of the same image (or of the
    whole minibatch when ``negatives_from_minibatch``). Logits are ``[q.k+, q.k_j (j != i, own
    entry filled with -10)] / tau`` and the loss is the cross entropy towards the positive.

    Under torchrun (``batch_share``, the rows of a global batch this process holds) the minibatch's
    negatives are the keys of the global batch, gathered from every process in batch order: the
    keys carry no gradient, so each process's queries get the losses one process computes for them
    on the whole batch.
    """
    key = key.detach()
    batch, patches, dim = query.shape
    positive = (query * key).sum(-1, keepdim=True)  # (B, P, 1)
    if negatives_from_minibatch:
        keys = batch_share.gather_rows(key)  # the key itself in one process
        first = batch_share.rank * batch * patches if batch_share.enabled else 0
        q, k = query.reshape(1, batch * patches, dim), keys.reshape(1, keys.shape[0] * patches, dim)
    else:
        first, q, k = 0, query, key
    negatives = torch.bmm(q, k.transpose(1, 2))  # (b, n, m): query n against key m
    rows, columns = negatives.shape[1:]
    if first == 0 and rows == columns:
        own = torch.eye(rows, dtype=torch.bool, device=query.device)
    else:  # query n of this process is query first + n of the global batch
        own = (torch.arange(rows, device=query.device)[:, None] + first
               == torch.arange(columns, device=query.device)[None, :])
    negatives = negatives.masked_fill(own, DIAGONAL_FILL).reshape(batch, patches, -1)
    return info_nce(positive, negatives, tau)


def info_nce(positive: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """-log( exp(p / tau) / (exp(p / tau) + sum_j exp(n_j / tau)) ) per row.

    ``positive`` is (..., 1) and ``negatives`` (..., N) similarity scores; returns shape (...)."""
    logits = torch.cat([positive, negatives], dim=-1) / tau
    flat = logits.reshape(-1, logits.shape[-1])
    target = torch.zeros(flat.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(flat, target, reduction="none").view(logits.shape[:-1])
