"""GraphCL (PatchGCL): dense graph pieces checked against explicit loops, the loss against an
independent per-node implementation, gradient flow, batching, presets and an end-to-end smoke."""
import dataclasses
import math

import pytest
import torch

from methods import graphcl as graphcl_module
from methods.base import TranslationPair
from methods.graphcl import GraphCL, GraphCLParams, LayerGraphHeads, node_contrastive_loss
from methods.shared.graphs import (TAGConv, add_self_loops, symmetric_normalize, threshold_adjacency,
                                   top_k_pool)



# -- shared graph pieces ------------------------------------------------------------------------------
def test_adjacency_by_hand_on_three_nodes():
    # cos(e0, e1) = 0.6, cos(e0, e2) = 0, cos(e1, e2) = 0.8; threshold 0.7 links only 1 and 2.
    e = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]])
    adj = threshold_adjacency(e, 0.7)
    assert torch.equal(adj[0], torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 1, 1]]))
    assert torch.equal(threshold_adjacency(e, 0.5)[0], torch.tensor([[1.0, 1, 0], [1, 1, 1], [0, 1, 1]]))
    single = add_self_loops(adj, duplicate=False)
    double = add_self_loops(adj, duplicate=True)
    assert torch.equal(single, adj)
    assert torch.equal(double[0], torch.tensor([[2.0, 0, 0], [0, 2, 1], [0, 1, 2]]))
    # D^-1/2 A D^-1/2 with in-degrees (2, 3, 3) for the doubled loops.
    p = symmetric_normalize(double)[0]
    expected = torch.tensor([[1.0, 0, 0], [0, 2 / 3, 1 / 3], [0, 1 / 3, 2 / 3]])
    assert torch.allclose(p, expected, atol=1e-6)
    # in-degrees (1, 2, 2) with a single loop: P[1, 2] = 1 / sqrt(2 * 2)
    assert torch.allclose(symmetric_normalize(single)[0, 1, 2], torch.tensor(0.5))
    assert not threshold_adjacency(e.requires_grad_(), 0.7).requires_grad


def test_tag_convolution_matches_explicit_per_node_sums():
    torch.manual_seed(0)
    n, d_in, d_out, hops = 5, 3, 4, 2
    # A directed multigraph (edge i -> j when adj[i, j] > 0) with a node of in-degree 0.
    adj = (torch.rand(n, n) > 0.5).double()
    adj[:, 4] = 0
    adj[1, 1] = 2.0
    x = torch.randn(n, d_in, dtype=torch.float64)
    conv = TAGConv(d_in, d_out, hops).double()
    out = conv(x[None], symmetric_normalize(adj[None]))[0]

    deg = [max(1.0, sum(adj[i, j].item() for i in range(n))) for j in range(n)]  # in-degrees
    hop_feats = [[x[j] for j in range(n)]]
    for _ in range(hops):
        prev = hop_feats[-1]
        hop_feats.append([sum((adj[i, j] * prev[i] / math.sqrt(deg[i] * deg[j]) for i in range(n)),
                              torch.zeros(d_in, dtype=torch.float64)) for j in range(n)])
    w, b = conv.lin.weight, conv.lin.bias
    for j in range(n):
        expected = b.clone()
        for k in range(hops + 1):
            expected = expected + w[:, k * d_in:(k + 1) * d_in] @ hop_feats[k][j]
        assert torch.allclose(out[j], expected, atol=1e-10)


def test_top_k_pool_keeps_k_nodes_weights_by_score_and_links_two_hops():
    torch.manual_seed(1)
    n, k = 8, 2
    adj = torch.zeros(1, n, n)
    for i, j in [(1, 5), (5, 3), (0, 2), (6, 7), (4, 0)]:  # 1 and 3 are linked only through 5
        adj[0, i, j] = adj[0, j, i] = 1.0
    adj = add_self_loops(adj, duplicate=True)
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.2, 0.4, 0.05, 0.6]])
    a, b = torch.randn(1, n, 4), torch.randn(1, n, 4)
    (pa, pb), pooled_adj, idx = top_k_pool(scores, adj, [a, b], k)
    assert idx.tolist() == [[1, 3]]
    assert pa.shape == (1, k, 4) and pooled_adj.shape == (1, k, k)
    assert torch.allclose(pa[0], torch.stack([a[0, 1] * 0.9, a[0, 3] * 0.8]))
    assert torch.allclose(pb[0], torch.stack([b[0, 1] * 0.9, b[0, 3] * 0.8]))
    # (binarised A)^2 restricted to the kept nodes, by hand: all of 1-1, 1-3 (via 5), 3-1, 3-3.
    assert torch.equal(pooled_adj[0], torch.ones(2, 2))
    kept = [1, 3, 0, 4]
    (_,), pooled_adj, idx = top_k_pool(torch.tensor([[0.7, 0.9, 0.0, 0.8, 0.6, 0.0, 0.0, 0.0]]), adj, [a], 4)
    assert idx.tolist() == [kept]
    hand = [[float(any(adj[0, u, m] > 0 and adj[0, m, v] > 0 for m in range(n))) for v in kept] for u in kept]
    assert hand == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert torch.equal(pooled_adj[0], torch.tensor(hand))


def test_node_contrastive_loss_by_hand():
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    z = torch.tensor([[[0.6, 0.8], [0.8, 0.6]]])
    tau = 0.5
    # s0.z0 = 0.6, s0.z1 = 0.8, s1.z0 = 0.8, s1.z1 = 0.6 (own entries of the negatives are -10)
    def ce(pos, neg):
        return -math.log(math.exp(pos / tau) / (math.exp(pos / tau) + math.exp(-10 / tau) + math.exp(neg / tau)))
    source_query = 0.5 * (ce(0.6, 0.8) + ce(0.6, 0.8))   # s0 vs (z0+, z1-), s1 vs (z1+, z0-)
    output_query = 0.5 * (ce(0.6, 0.8) + ce(0.6, 0.8))   # z0 vs (s0+, s1-), z1 vs (s1+, s0-)
    assert torch.allclose(node_contrastive_loss(s, z, tau), torch.tensor(source_query + output_query), atol=1e-6)
    # An asymmetric case: the two directions differ, both count.
    z2 = torch.tensor([[[0.6, 0.8], [0.0, 1.0]]])  # s0.z0=.6 s0.z1=0 s1.z0=.8 s1.z1=1
    sq = 0.5 * (ce(0.6, 0.0) + ce(1.0, 0.8))
    oq = 0.5 * (ce(0.6, 0.8) + ce(1.0, 0.0))      # z0: s0+ .6, s1 .8 ; z1: s1+ 1, s0 0
    assert torch.allclose(node_contrastive_loss(s, z2, tau), torch.tensor(sq + oq), atol=1e-6)


# -- the GraphCL loss against an independent per-node implementation ----------------------------------
def _naive_layer_loss(heads, src, out, p):
    """One image: src/out (N, C) float64. Loops over nodes; shares nothing with the method's code."""
    n = src.shape[0]

    def unit(v):
        return v / (v.norm() + 1e-7)

    def tag(conv, feats, adj, hops):
        deg = [max(1.0, sum(adj[i][j] for i in range(len(feats)))) for j in range(len(feats))]
        stack = [feats]
        for _ in range(hops):
            prev = stack[-1]
            stack.append([sum((adj[i][j] * prev[i] / math.sqrt(deg[i] * deg[j]) for i in range(len(feats))),
                              torch.zeros_like(prev[0])) for j in range(len(feats))])
        d = feats[0].shape[0]
        res = []
        for j in range(len(feats)):
            v = conv.lin.bias.clone()
            for k in range(hops + 1):
                v = v + conv.lin.weight[:, k * d:(k + 1) * d] @ stack[k][j]
            res.append(unit(v))
        return res

    def nce(vs, zs):
        total = 0.0
        m = len(vs)
        for queries, keys in ((vs, zs), (zs, vs)):
            for i in range(m):
                pos = math.exp(float(queries[i] @ keys[i]) / p.nce_T)
                neg = sum(math.exp((-10.0 if j == i else float(queries[i] @ keys[j])) / p.nce_T) for j in range(m))
                total += -math.log(pos / (pos + neg)) / m
        return total

    loops = 2.0 if p.official_double_self_loop else 1.0
    e = [unit(heads.embed.weight @ src[i] + heads.embed.bias) for i in range(n)]
    eo = [unit(heads.embed.weight @ out[i] + heads.embed.bias) for i in range(n)]
    adj = [[(loops if i == j else float(float(e[i] @ e[j]) > p.nonzero_th)) for j in range(n)] for i in range(n)]
    v, z = tag(heads.gnn.conv, e, adj, p.num_hop), tag(heads.gnn.conv, eo, adj, p.num_hop)
    loss = nce(v, z)
    # one pooling level
    score = [1 / (1 + math.exp(-float(heads.scores[0].weight[0] @ v[i] + heads.scores[0].bias[0]))) for i in range(n)]
    keep = sorted(range(n), key=lambda i: -score[i])[: n // p.down_scale]
    pv, pz = [v[i] * score[i] for i in keep], [z[i] * score[i] for i in keep]
    padj = [[(loops if a == b else float(any(adj[a][m] > 0 and adj[m][b] > 0 for m in range(n)))) for b in keep]
            for a in keep]
    pv, pz = tag(heads.pooled_gnns[0].conv, pv, padj, 1), tag(heads.pooled_gnns[0].conv, pz, padj, 1)
    loss += p.pooling_ratio[1] * nce(pv, pz)
    return loss / 2


@pytest.mark.parametrize("double", [True, False])
def test_layer_loss_matches_naive_per_node_implementation(double):
    torch.manual_seed(3)
    p = GraphCLParams(netF_nc=4, num_patches=8, official_double_self_loop=double)
    method = GraphCL(p)
    heads = LayerGraphHeads(3, 4, p.num_hop, p.pooling_num).double()
    for param in heads.parameters():
        torch.nn.init.normal_(param, 0.0, 0.7)
    src = torch.randn(2, 8, 3, dtype=torch.float64)
    out = src + 0.5 * torch.randn(2, 8, 3, dtype=torch.float64)
    with torch.no_grad():
        got = method.layer_loss(heads, src, out)
        naive = [_naive_layer_loss(heads, src[b], out[b], p) for b in range(2)]
    assert torch.allclose(got, torch.tensor(sum(naive) / 2, dtype=torch.float64), atol=1e-9)


def test_double_self_loop_switch_changes_the_loss():
    torch.manual_seed(3)
    heads = LayerGraphHeads(3, 4, 2, 1)
    src, out = torch.randn(1, 8, 3), torch.randn(1, 8, 3)
    with torch.no_grad():
        a = GraphCL(GraphCLParams(num_patches=8)).layer_loss(heads, src, out)
        b = GraphCL(GraphCLParams(num_patches=8, official_double_self_loop=False)).layer_loss(heads, src, out)
    assert torch.isfinite(a) and torch.isfinite(b) and not torch.allclose(a, b)


# -- the method on images -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def method():
    torch.manual_seed(0)
    m = GraphCL(GraphCLParams(vgg_weights="untrained", num_patches=16))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    m.initialize(TranslationPair(source=x, output=x))
    return m


def _images(batch=2):
    g = torch.Generator().manual_seed(7)
    x = torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1
    y = torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1
    return x, (0.7 * x + 0.1).tanh(), y, (0.7 * y - 0.1).tanh()


def test_pooling_keeps_num_patches_over_down_scale_nodes(method, monkeypatch):
    calls = []
    original = graphcl_module.top_k_pool

    def recording(scores, adj, feats, k):
        calls.append((scores.shape[1], k))
        return original(scores, adj, feats, k)

    monkeypatch.setattr(graphcl_module, "top_k_pool", recording)
    x, fake, y, idt = _images(1)
    pair = TranslationPair(source=x, output=fake, target=y, identity=idt)
    with torch.no_grad():
        method.generator_losses(pair)
    # 3 VGG layers x (translation, identity); 16 sampled patches per layer -> 16 // 4 = 4 kept.
    assert calls == [(16, 4)] * 6
    calls.clear()
    saved = method.params
    method.params = dataclasses.replace(saved, num_patches=32)
    try:
        with torch.no_grad():
            method.generator_losses(pair)
    finally:
        method.params = saved
    # relu3_1 of a 32x32 image has 64 locations (32 sampled); relu4_x have only 16 (all taken).
    assert calls == [(32, 8), (16, 4), (16, 4)] * 2
    params = GraphCLParams(pooling_num=2, pooling_ratio=[1.0, 0.5, 0.5])
    assert [GraphCL(params).pooled_size(level, 256) for level in (1, 2)] == [64, 32]  # 256 // 4, 256 // 8
    assert GraphCL(params).pooled_size(1, 64) == 16  # fewer locations than num_patches: P // 4
    assert GraphCL(params).pooled_size(2, 8) == 2     # never fewer than 2 nodes


def test_gradients_reach_heads_and_output_not_source_or_vgg(method):
    x, fake, y, idt = _images(1)
    source, target = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    output, identity = fake.clone().requires_grad_(True), idt.clone().requires_grad_(True)
    method.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    losses = method.generator_losses(TranslationPair(source=source, output=output,
                                                     target=target, identity=identity))
    assert set(losses) == {"GNN", "GNN_Y"}
    sum(losses.values()).backward()
    assert source.grad is None and target.grad is None
    assert torch.count_nonzero(output.grad) > 0 and torch.count_nonzero(identity.grad) > 0
    assert all(not q.requires_grad and q.grad is None for q in method.vgg.parameters())
    for name, q in method.layer_heads.named_parameters():
        assert q.grad is not None and torch.count_nonzero(q.grad) > 0, name
    method.zero_grad(set_to_none=True)

    # The source side (embedding, adjacency, GNNs) passes no gradient back to source features.
    torch.manual_seed(11)
    feats = [f.detach().requires_grad_(True) for f in method.vgg(x)]
    out_feats = [f.detach().requires_grad_(True) for f in method.vgg(fake)]
    method.gnn_loss(feats, out_feats).backward()
    assert all(f.grad is None for f in feats)
    assert all(torch.count_nonzero(f.grad) > 0 for f in out_feats)
    method.zero_grad(set_to_none=True)


def test_batch_of_two_equals_mean_of_two_batches_of_one(method):
    x, fake, y, idt = _images(2)

    def loss(sl):
        torch.manual_seed(123)
        pair = TranslationPair(source=x[sl], output=fake[sl], target=y[sl], identity=idt[sl])
        return method.generator_losses(pair)

    with torch.no_grad():
        both = loss(slice(0, 2))
        first, second = loss(slice(0, 1)), loss(slice(1, 2))
    for key in ("GNN", "GNN_Y"):
        assert torch.allclose(both[key], 0.5 * (first[key] + second[key]), atol=1e-5)
    assert not torch.allclose(first["GNN"], second["GNN"], atol=1e-4)


def test_identity_weighting_and_lambda(method):
    x, fake, y, idt = _images(1)
    with torch.no_grad():
        torch.manual_seed(5)
        full = method.generator_losses(TranslationPair(source=x, output=fake, target=y, identity=idt))
        torch.manual_seed(5)
        gnn_x = method.gnn_loss(method.vgg(x), method.vgg(fake))
    assert torch.allclose(full["GNN"], 0.5 * 0.1 * gnn_x, atol=1e-6)
    no_idt = GraphCL(dataclasses.replace(method.params, gnn_idt=False))
    assert not no_idt.uses_identity and method.uses_identity


def test_state_dict_round_trip_without_vgg_weights(method):
    state = method.state_dict()
    assert state and not any(k.startswith("vgg.") for k in state)
    method.load_state_dict(state)  # strict: must not ask for the frozen VGG weights
    with pytest.raises(RuntimeError):
        method.load_state_dict({k: v for k, v in state.items() if "embed" not in k})


def test_presets_and_defaults_are_the_official_readme_values():
    readme = {"lambda_GNN": 0.1, "num_hop": 2, "gnn_idt": True, "nonzero_th": 0.1, "pooling_num": 1,
              "pooling_ratio": [1.0, 0.5], "down_scale": 4}
    assert GraphCL.presets["graphcl"] == readme
    defaults = GraphCLParams()
    assert {k: getattr(defaults, k) for k in readme} == readme
    assert (defaults.nce_T, defaults.num_patches, defaults.netF_nc) == (0.07, 256, 256)
    assert defaults.vgg_layers == ["relu3_1", "relu4_1", "relu4_3"]
    assert defaults.official_double_self_loop and defaults.vgg_weights == "imagenet"
    from benchmark.config import find_method
    assert find_method("graphcl") == (GraphCL, "graphcl")
    assert GraphCLParams(pooling_num=2).validate() is not None  # needs a ratio for level 2


