"""GraphCL: Jung, Kwon & Ye, "Patch-wise Graph Contrastive Learning for Image Translation",
AAAI 2024 (jcy132/PatchGCL: ``models/PatchGCL.py`` ``GNNLoss``, ``models/cut_model.py``).

Patches of the source x and of the output G(x) are compared through graph neural networks on a
graph built from the source. For each layer l of a frozen VGG16 (relu3_1, relu4_1, relu4_3), at the
same P random locations in both images:

    e_i = E_l(f_l(x)_i) / ||.||,   e^_i = E_l(f_l(G(x))_i) / ||.||      (one Linear E_l per layer)
    A_ij = 1[<e_i, e_j> > t]  (+ I: the official code adds a second self-loop)   from the source only
    P = D^-1/2 A^T D^-1/2,    GNN(X) = L2( sum_{k=0..K} (P^k X) W_k + b )      (TAGConv, K = num_hop)
    v = sg(GNN(e)),   z = GNN(e^)                                           (one GNN, shared A)
    L_node(v, z) = mean_i CE([<v_i, z_i>, <v_i, z_j>_{j != i}] / tau)            (source as query)
                 + mean_i CE([<z_i, v_i>, <z_i, v_j>_{j != i}] / tau)            (output as query)

(the own-entry negative is -10, as in CUT). Graph pooling keeps the P // down_scale nodes of highest
score s = sigmoid(w . v_i + b), multiplies both sides' node features by s, links the kept nodes by
the two-hop structure 1[(1[A] 1[A]) > 0] and applies a one-hop TAGConv GNN_1 on the pooled graph:

    L_l = ( L_node(v, z) + r_1 L_node(sg(GNN_1(s v)), GNN_1(s z)) ) / (pooling_num + 1)
    L_GNN(x, G(x)) = mean_l L_l

and the generator loss is lambda_GNN * 0.5 * (L_GNN(x, G(x)) + L_GNN(y, G(y))) (``gnn_idt``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from benchmark.core.registry import register_method

from .base import OUTPUT_GRADIENT, STANDALONE, MethodEnvironment, PatchPolicy, TranslationPair, flip_back
from .shared.graphs import TAGConv, add_self_loops, symmetric_normalize, threshold_adjacency, top_k_pool
from .shared.heads import l2_normalize
from .shared.nce import DIAGONAL_FILL, info_nce
from .shared.patch_contrastive import PatchContrastiveMethod, PatchContrastiveParams
from .shared.patches import gather_locations, sample_locations
from .shared.vgg import VGG16_LAYERS, FrozenVGG16, backbone_notes, vgg16_weight_keys

README_SETTINGS = {"lambda_GNN": 0.1, "num_hop": 2, "gnn_idt": True, "nonzero_th": 0.1,
                   "pooling_num": 1, "pooling_ratio": [1.0, 0.5], "down_scale": 4}
"""The training command of the official README (the paper's results)."""


@dataclass
class GraphCLParams(PatchContrastiveParams):
    """The shared options (``num_patches``: nodes sampled per VGG layer; ``netF_nc``: the node
    embedding width) and GraphCL's."""

    lambda_GNN: float = 0.1
    """Weight of the graph contrastive loss L_GNN in the generator objective."""
    gnn_idt: bool = True
    """Also apply the loss to (real_B, G(real_B)) with weight 0.5 each (the official code needs it)."""
    num_hop: int = 2
    """K of the TAGConv GNN before pooling (the pooled GNNs are one-hop)."""
    nonzero_th: float = 0.1
    """Cosine-similarity threshold of the adjacency."""
    pooling_num: int = 1
    """Graph pooling levels after the first GNN (each with its own one-hop GNN and loss term)."""
    pooling_ratio: list[float] = field(default_factory=lambda: [1.0, 0.5])
    """Loss weight of pooling level l is pooling_ratio[l] (l >= 1; level 0 always has weight 1)."""
    down_scale: int = 4
    """Pooling level l keeps P // (down_scale * 2^(l-1)) nodes (at least 2) of the P sampled patches."""
    vgg_layers: list[str] = field(default_factory=lambda: ["relu3_1", "relu4_1", "relu4_3"])
    """Frozen VGG16 layers whose patches become the graph's nodes."""
    vgg_weights: Literal["imagenet", "untrained"] = "imagenet"
    official_double_self_loop: bool = True
    """True: the official graphs (the threshold's self-loop plus dgl.add_self_loop's: a diagonal of
    2). False: one self-loop per node, the adjacency of the paper's equations."""
    init_gain: float = 0.02
    """std of the normal init of every Linear (the official init_net(GNNLoss, 'normal', 0.02))."""

    weight_option = "lambda_GNN"
    identity_option = "gnn_idt"

    def validate(self):
        if problem := super().validate():
            return problem
        if 0 < self.num_patches < 2:
            return (f"num_patches must be 0 (every location) or >= 2, got {self.num_patches}: GraphCL contrasts "
                    "the nodes of each image's own graph, and a graph of one node has no negatives (GraphCL "
                    "has no mode taking negatives from the other images of the minibatch, which is how "
                    "the single-image task samples one patch per crop; the official single-image mode "
                    "does not run either: PatchGCL lacks models/stylegan_networks.py)")
        if self.num_hop < 0:
            return f"num_hop must be >= 0, got {self.num_hop}"
        if self.pooling_num < 0:
            return f"pooling_num must be >= 0, got {self.pooling_num}"
        if self.pooling_num > 0 and len(self.pooling_ratio) <= self.pooling_num:
            return (f"pooling_ratio needs an entry for each level 0..{self.pooling_num} "
                    f"(got {len(self.pooling_ratio)}: {self.pooling_ratio})")
        if self.down_scale < 1:
            return f"down_scale must be >= 1, got {self.down_scale}"
        unknown = [name for name in self.vgg_layers if name not in VGG16_LAYERS]
        if unknown or not self.vgg_layers:
            return f"vgg_layers must be VGG16 layer names ({', '.join(VGG16_LAYERS)}), got {self.vgg_layers}"
        return None


class GraphEncoder(nn.Module):
    """A TAGConv followed by L2 normalisation (the official ``Encoder``)."""

    def __init__(self, dim: int, hops: int):
        super().__init__()
        self.conv = TAGConv(dim, dim, hops)

    def forward(self, nodes: torch.Tensor, propagation: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.conv(nodes, propagation))


class LayerGraphHeads(nn.Module):
    """The learnable parts for one feature layer: the embedding, the GNN before pooling, and per
    pooling level a node scorer (the official ``Pool``) and a one-hop GNN."""

    def __init__(self, channels: int, dim: int, hops: int, pooling_num: int):
        super().__init__()
        self.embed = nn.Linear(channels, dim)
        self.gnn = GraphEncoder(dim, hops)
        self.scores = nn.ModuleList(nn.Linear(dim, 1) for _ in range(pooling_num))
        self.pooled_gnns = nn.ModuleList(GraphEncoder(dim, 1) for _ in range(pooling_num))


def node_contrastive_loss(source_nodes: torch.Tensor, output_nodes: torch.Tensor, tau: float) -> torch.Tensor:
    """Node-wise InfoNCE in both directions (the official ``calc_gnn`` loss): the mean cross entropy
    with the source nodes as queries and the output nodes as keys, plus the same with the roles
    swapped; positives are the same node, negatives the other nodes of the same graph (own entry of
    the negatives filled with -10). ``source_nodes`` is treated as a constant; (B, N, D) each."""
    source_nodes = source_nodes.detach()
    count = source_nodes.shape[1]
    positive = (source_nodes * output_nodes).sum(-1, keepdim=True)  # (B, N, 1)
    eye = torch.eye(count, dtype=torch.bool, device=source_nodes.device)
    source_query = torch.bmm(source_nodes, output_nodes.transpose(1, 2)).masked_fill(eye, DIAGONAL_FILL)
    output_query = torch.bmm(output_nodes, source_nodes.transpose(1, 2)).masked_fill(eye, DIAGONAL_FILL)
    return info_nce(positive, source_query, tau).mean() + info_nce(positive, output_query, tau).mean()


@register_method("graphcl")
class GraphCL(PatchContrastiveMethod):
    """GraphCL: node-wise InfoNCE between GNN features of VGG patch graphs, with pooling (Jung et al., AAAI 2024)."""

    Params = GraphCLParams
    presets = {"graphcl": dict(README_SETTINGS)}

    required_capabilities = frozenset({OUTPUT_GRADIENT})  # its loss is on the output's pixels (frozen VGG16)

    @classmethod
    def required_weights(cls, params: GraphCLParams) -> list[str]:
        return vgg16_weight_keys(params.vgg_weights)

    @classmethod
    def patch_settings(cls, policy: PatchPolicy, params: GraphCLParams) -> dict | str:
        return ("its negatives are the other nodes of each image's own graph of num_patches patches: with one "
                "patch per image there are none, and it has no setting that takes them from the other images"
                if policy.limits else {})

    def __init__(self, params: GraphCLParams, environment: MethodEnvironment = STANDALONE):
        super().__init__(params, environment)
        self.vgg: FrozenVGG16 | None = None
        self.layer_heads: nn.ModuleList | None = None

    def initialize(self, pair: TranslationPair) -> None:
        p, device = self.params, pair.source.device
        self.vgg = FrozenVGG16(p.vgg_layers, p.vgg_weights, self.environment.weights_dir).to(device)
        channels = self.vgg.channels(pair.source)
        self.layer_heads = nn.ModuleList(
            LayerGraphHeads(c, p.netF_nc, p.num_hop, p.pooling_num) for c in channels)
        for m in self.layer_heads.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, p.init_gain)
                nn.init.zeros_(m.bias)
        self.layer_heads.to(device)

    # -- the loss -----------------------------------------------------------------------------------
    def graph(self, source_nodes: torch.Tensor) -> torch.Tensor:
        """Adjacency (B, N, N) of the source embeddings, with self-loops (no gradient)."""
        adj = threshold_adjacency(source_nodes, self.params.nonzero_th)
        return add_self_loops(adj, duplicate=self.params.official_double_self_loop)

    def pooled_size(self, level: int, patches: int) -> int:
        """Nodes kept at pooling level ``level`` >= 1 of a graph of ``patches`` nodes at level 0:
        ``max(2, patches // (down_scale * 2^(level-1)))`` (the official ``top_k_graph``)."""
        keep = max(2, patches // (self.params.down_scale * 2 ** (level - 1)))
        return min(keep, patches)

    def layer_loss(self, heads: LayerGraphHeads, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """(L_0 + sum_l r_l L_l) / (pooling_num + 1) for patch features (B, P, C) of one layer."""
        p = self.params
        with torch.no_grad():  # the official code detaches the source side after its GNN
            source_nodes = l2_normalize(heads.embed(source))
            adj = self.graph(source_nodes)
            propagation = symmetric_normalize(adj)
            source_nodes = heads.gnn(source_nodes, propagation)
        output_nodes = heads.gnn(l2_normalize(heads.embed(output)), propagation)
        loss = node_contrastive_loss(source_nodes, output_nodes, p.nce_T)
        patches = source.shape[1]
        for level in range(1, p.pooling_num + 1):
            scores = torch.sigmoid(heads.scores[level - 1](source_nodes)).squeeze(-1)  # (B, N)
            k = min(self.pooled_size(level, patches), scores.shape[1])
            (source_nodes, output_nodes), adj, _ = top_k_pool(scores, adj, [source_nodes, output_nodes], k)
            adj = add_self_loops(adj, duplicate=p.official_double_self_loop)
            propagation = symmetric_normalize(adj)
            gnn = heads.pooled_gnns[level - 1]
            with torch.no_grad():
                source_nodes = gnn(source_nodes, propagation)
            output_nodes = gnn(output_nodes, propagation)
            loss = loss + p.pooling_ratio[level] * node_contrastive_loss(source_nodes, output_nodes, p.nce_T)
        return loss / (p.pooling_num + 1)

    def gnn_loss(self, source_feats: list[torch.Tensor], output_feats: list[torch.Tensor]) -> torch.Tensor:
        """L_GNN: the mean over VGG layers of the per-layer graph losses (``GNNLoss.forward``)."""
        ids = sample_locations(source_feats, self.params.num_patches)
        sources = gather_locations(source_feats, ids)
        outputs = gather_locations(output_feats, ids)
        per_layer = [self.layer_loss(heads, s, o) for heads, s, o in zip(self.layer_heads, sources, outputs)]
        return torch.stack(per_layer).mean()

    def generator_losses(self, pair: TranslationPair, computed: Any = None) -> dict[str, torch.Tensor]:
        p = self.params
        if p.lambda_GNN <= 0:
            return {}
        n = pair.source.shape[0]
        sources = torch.cat([pair.source, pair.target]) if self.uses_identity else pair.source
        outputs = torch.cat([pair.output, pair.identity]) if self.uses_identity else pair.output
        with torch.no_grad():
            source_feats = self.vgg(sources)
        output_feats = flip_back(self.vgg(outputs), pair.output_flipped)
        gnn_x = self.gnn_loss([f[:n] for f in source_feats], [f[:n] for f in output_feats])
        if not self.uses_identity:
            return {"GNN": p.lambda_GNN * gnn_x}
        gnn_y = self.gnn_loss([f[n:] for f in source_feats], [f[n:] for f in output_feats])
        return {"GNN": 0.5 * p.lambda_GNN * gnn_x, "GNN_Y": 0.5 * p.lambda_GNN * gnn_y}

    # -- bookkeeping --------------------------------------------------------------------------------
    def protocol_notes(self) -> dict[str, str]:
        return backbone_notes(self.vgg, self.params.vgg_weights)
