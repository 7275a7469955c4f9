"""Dense, batched graph pieces on patch features: thresholded-similarity adjacency, DGL-style
symmetric normalisation, TAG convolution and top-K node pooling.

Every function works on a batch of independent graphs of the same size: node features are
``(B, N, D)`` and adjacency matrices ``(B, N, N)``, with ``adj[b, i, j]`` the number of edges from
node ``i`` to node ``j`` (0/1, or 2 for a doubled self-loop). Everything stays on the input's device;
nothing goes through DGL, scipy or the CPU.
"""
from __future__ import annotations

import torch
from torch import nn


def threshold_adjacency(nodes: torch.Tensor, threshold: float) -> torch.Tensor:
    """``1[<x_i, x_j> > threshold]`` for unit-norm node features ``(B, N, D)`` (cosine similarity);
    a float ``(B, N, N)`` 0/1 matrix, computed without gradients. For unit vectors and a threshold
    below 1 the diagonal is 1: every node already carries one self-loop."""
    with torch.no_grad():
        similarity = torch.bmm(nodes, nodes.transpose(1, 2))
        return (similarity > threshold).to(nodes.dtype)


def add_self_loops(adj: torch.Tensor, duplicate: bool = False) -> torch.Tensor:
    """Give every node a self-loop. ``duplicate=False``: exactly one (the diagonal is set to 1);
    ``duplicate=True``: one more on top of any already there (``dgl.add_self_loop``, which adds a
    loop "regardless of whether one already exists": an existing loop becomes a diagonal of 2)."""
    eye = torch.eye(adj.shape[-1], dtype=adj.dtype, device=adj.device)
    return adj + eye if duplicate else torch.maximum(adj, eye.expand_as(adj))


def symmetric_normalize(adj: torch.Tensor) -> torch.Tensor:
    """The propagation matrix of DGL's ``TAGConv``/``GraphConv(norm='both')`` without edge weights:
    ``P = D^-1/2 A^T D^-1/2`` with ``D`` the in-degrees (column sums of ``A``, counting multi-edges)
    clamped to at least 1, so that ``(P @ X)[j] = sum_i A[i, j] X[i] / sqrt(d_i d_j)``, the sum of
    messages over the in-edges of node ``j``. For a symmetric ``A`` this is ``D^-1/2 A D^-1/2``."""
    degree = adj.sum(dim=-2).clamp(min=1)  # in-degree of each node
    inv_sqrt = degree.pow(-0.5)
    return inv_sqrt.unsqueeze(-1) * adj.transpose(-1, -2) * inv_sqrt.unsqueeze(-2)


class TAGConv(nn.Module):
    """Topology adaptive graph convolution (Du et al. 2017) as DGL's ``TAGConv``:

        out = Linear([X, P X, P^2 X, ..., P^K X])  =  sum_k (P^k X) W_k + b

    with ``P`` the normalised propagation matrix (``symmetric_normalize``). The single ``lin`` over
    the concatenation has DGL's parameter layout, ``(out_dim, in_dim * (K + 1))``."""

    def __init__(self, in_dim: int, out_dim: int, hops: int = 2, bias: bool = True):
        super().__init__()
        if hops < 0:
            raise ValueError(f"hops must be >= 0, got {hops}")
        self.hops = hops
        self.lin = nn.Linear(in_dim * (hops + 1), out_dim, bias=bias)

    def forward(self, x: torch.Tensor, propagation: torch.Tensor) -> torch.Tensor:
        """``x`` (B, N, in_dim), ``propagation`` (B, N, N) -> (B, N, out_dim)."""
        stack = [x]
        for _ in range(self.hops):
            stack.append(torch.bmm(propagation, stack[-1]))
        return self.lin(torch.cat(stack, dim=-1))


def gather_nodes(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` (B, K) of node features ``x`` (B, N, D) -> (B, K, D)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def restrict_adjacency(adj: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The sub-graph on nodes ``idx`` (B, K): ``adj[b][idx[b]][:, idx[b]]`` -> (B, K, K)."""
    rows = torch.gather(adj, 1, idx.unsqueeze(-1).expand(-1, -1, adj.shape[-1]))
    return torch.gather(rows, 2, idx.unsqueeze(1).expand(-1, idx.shape[1], -1))


def two_hop_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """``1[(B A B) > 0]`` with ``B = 1[A != 0]``: nodes within two hops are connected (nodes with a
    self-loop keep their one-hop edges); the connectivity boost of graph U-Net's gPool."""
    binary = (adj != 0).to(adj.dtype)
    return (torch.bmm(binary, binary) > 0).to(adj.dtype)


def top_k_nodes(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (B, k) and values (B, k) of the ``k`` highest node scores (B, N) of each graph."""
    values, idx = torch.topk(scores, k, dim=-1)
    return idx, values


def top_k_pool(scores: torch.Tensor, adj: torch.Tensor, features: list[torch.Tensor], k: int
               ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """gPool-style top-K pooling (Gao & Ji 2019) of one or more feature sets sharing a graph.

    Keeps the ``k`` nodes of highest ``scores`` (B, N) in each graph, multiplies each kept node's
    features by its score (so the scorer is trained through them) and connects the kept nodes by
    the two-hop structure of ``adj`` (``two_hop_adjacency`` restricted to them). Returns the pooled
    features (each (B, k, D)), the pooled 0/1 adjacency (B, k, k) and the kept indices (B, k)."""
    idx, values = top_k_nodes(scores, k)
    pooled = [gather_nodes(f, idx) * values.unsqueeze(-1) for f in features]
    return pooled, restrict_adjacency(two_hop_adjacency(adj), idx), idx
