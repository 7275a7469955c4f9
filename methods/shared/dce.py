"""Decoupled contrastive loss with hardness-weighted negatives (Hneg-SRC's hDCE), batched per image.

Decoupled contrastive learning (Yeh et al., "Decoupled Contrastive Learning", 2021) leaves the
positive out of the denominator of InfoNCE:

    l_DCE(i) = -log( exp(s_ii / tau) / sum_{j != i} exp(s_ij / tau) )
             =  log sum_{j != i} exp((s_ij - s_ii) / tau)

with s_ij = q_i . k_j. Jung et al. (CVPR 2022, jcy132/Hneg_SRC, ``models/hDCE.py``) re-weight the
negatives by their semantic similarity to the anchor, s_ij -> w_ij s_ij, with weights from the
(detached) key-key similarity (``hardness_weights``), and keep CUT's convention of putting the
query's own key, filled with -10, among the negatives.
"""
from __future__ import annotations

import torch

from .nce import DIAGONAL_FILL, info_nce


def hardness_weights(similarity: torch.Tensor, gamma: float) -> torch.Tensor:
    """Weights of the negatives from a patch-patch similarity ``(..., P, P)`` (detached here).

    Hneg-SRC's ``SRC_Loss.forward`` ``weight_out``: the diagonal is filled with -10, each row is
    softmaxed at temperature ``gamma`` (softmax over the last dim of S / gamma) and divided by its
    maximum, so the weights lie in (0, 1] and the most similar patch of each row gets weight 1.
    """
    if gamma <= 0:
        raise ValueError(f"hardness temperature gamma must be positive, got {gamma}")
    s = similarity.detach()
    eye = torch.eye(s.shape[-1], dtype=torch.bool, device=s.device)
    w = torch.softmax(s.masked_fill(eye, DIAGONAL_FILL) / gamma, dim=-1)
    return w / w.amax(dim=-1, keepdim=True)


def weighted_patch_scores(query: torch.Tensor, key: torch.Tensor,
                          weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and (weighted) negative scores of each query patch against the keys of its image.

    ``query``, ``key``: (B, P, D) at the same P locations; ``key`` is detached. Returns
    ``positive`` (B, P, 1) = q_i . k_i and ``negatives`` (B, P, P) = w_ij (q_i . k_j), with the own
    entry (j = i) set to -10 after weighting (hDCE's ``l_neg_curbatch``).
    """
    key = key.detach()
    positive = (query * key).sum(-1, keepdim=True)
    negatives = torch.bmm(query, key.transpose(1, 2))
    if weights is not None:
        negatives = negatives * weights
    eye = torch.eye(negatives.shape[-1], dtype=torch.bool, device=query.device)
    return positive, negatives.masked_fill(eye, DIAGONAL_FILL)


def decoupled_nce(positive: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """log sum_j exp((n_j - p) / tau) per row: the decoupled loss; ``positive`` (..., 1), ``negatives``
    (..., N); returns shape (...). Its gradient is that of hDCE's ``exp(v - v.detach())`` trick."""
    return torch.logsumexp((negatives - positive) / tau, dim=-1)


def patch_hdce(query: torch.Tensor, key: torch.Tensor, weights: torch.Tensor | None = None,
               tau: float = 0.07, value: str = "dce", decoupled: bool = True) -> torch.Tensor:
    """Per-patch hardness-weighted decoupled NCE, shape (B, P) (hDCE's ``PatchHDCELoss``, per image).

    The gradient is that of ``decoupled_nce``. ``value`` picks what the numbers say:
    ``"dce"`` the decoupled loss itself; ``"official"`` the value the official code reports, the
    cross entropy of [positive, weighted negatives] towards the positive (InfoNCE with the
    positive in the denominator), with the decoupled loss's gradient.

    ``decoupled=False``: the InfoNCE rows of Hneg-SRC's Table 4 ablation, the positive kept in the
    denominator (CUT's PatchNCE on the weighted negatives); value and gradient are then that cross
    entropy, whatever ``value`` says.
    """
    positive, negatives = weighted_patch_scores(query, key, weights)
    if not decoupled:
        return info_nce(positive, negatives, tau)
    loss = decoupled_nce(positive, negatives, tau)
    if value == "dce":
        return loss
    if value == "official":
        shown = info_nce(positive.detach(), negatives.detach(), tau)
        return loss - loss.detach() + shown
    raise ValueError(f"value must be 'dce' or 'official', got {value!r}")
