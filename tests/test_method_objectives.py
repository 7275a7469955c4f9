"""Each method's generator objective against its formula written out by hand (plain torch, from the
papers and the official code) on tiny feature maps: every loss weight, the identity terms and their
0.5 / 0.5 split, Hneg-SRC's hardness curriculum, FastCUT's flip back of the output features,
NEGCUT's negative generator objective, F-LSeSim's structure and head losses, GraphCL's graph loss,
and the single-image setting (one patch per image, the batch's patches as negatives).

The methods see a fixed two-layer "encoder" (the image itself and a fixed 1x1 convolution of it),
every location of each map (``num_patches: 0``, no random draw; else the draws are replayed from
the seed) and, where they have projection heads, plain L2 normalisation (``use_mlp: false``) unless
the test is about the heads, so that the expected numbers follow from the formulas alone. The images
are 4 x 5 so that a flip on the wrong axis changes the numbers."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods.base import TranslationPair
from tasks.feature_sources import encoder_pair
from methods.cut import CUT, CUTParams
from methods.flsesim import AttentionHeads, FLSeSim, FLSeSimParams
from methods.graphcl import GraphCL, GraphCLParams, LayerGraphHeads
from methods.hnegsrc import HnegSRC, HnegSRCParams
from methods.negcut import NEGCUT, NEGCUTParams

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (conftest)

TAU = 0.07
ATOL = 1e-5


# -- tiny inputs ------------------------------------------------------------------------------------

class FixedEncoder(nn.Module):
    """Two feature layers: the image (3 channels) and tanh of a fixed 1x1 convolution (4 channels)."""

    def __init__(self):
        super().__init__()
        weight = torch.linspace(-1.0, 1.0, 12).view(4, 3) + torch.eye(4, 3)
        self.register_buffer("weight", weight)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [images, torch.tanh(torch.einsum("oc,bchw->bohw", self.weight, images))]


def image(seed: int, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, 4, 5, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def tiny_pair(progress: float = 0.0, flipped: bool = False, batch: int = 2) -> TranslationPair:
    return encoder_pair(FixedEncoder(), source=image(1, batch), output=image(2, batch),
                           target=image(3, batch), identity=image(4, batch), output_flipped=flipped,
                           progress=progress)


# -- hand-written pieces ----------------------------------------------------------------------------

def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def rows(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> the vectors of every location, (B, H*W, C) in row-major order."""
    return feature_map.flatten(2).transpose(1, 2)


def cross_entropy_to_first(logits: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[0] per row."""
    return torch.logsumexp(logits, dim=-1) - logits[..., 0]


def off_diagonal_filled(scores: torch.Tensor, fill: float = -10.0) -> torch.Tensor:
    eye = torch.eye(scores.shape[-1], dtype=torch.bool)
    return scores.masked_fill(eye, fill)


def patch_nce(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """CUT's PatchNCE per patch, (B, P): positive q_i.k_i, negatives q_i.k_j of the same image with
    the own entry filled with -10, logits / tau."""
    scores = q @ k.transpose(1, 2)
    positive = scores.diagonal(dim1=1, dim2=2).unsqueeze(-1)
    return cross_entropy_to_first(torch.cat([positive, off_diagonal_filled(scores)], -1) / TAU)


def mean_over_layers(per_layer) -> torch.Tensor:
    return torch.stack(list(per_layer)).mean()


def smooth_l1(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 1, 0.5 * x ** 2, x.abs() - 0.5).mean()


def encoded_rows(images: torch.Tensor) -> list[torch.Tensor]:
    return [rows(f) for f in FixedEncoder()(images)]


def one_patch_per_image(images: torch.Tensor, ids: list[torch.Tensor]) -> list[torch.Tensor]:
    """The single-image task's setting: one location per layer (``ids``), the patches of the whole
    batch pooled as the rows of one (1, B, C) set, so that each patch's negatives are the others."""
    return [r[:, i].reshape(1, -1, r.shape[-1]) for r, i in zip(encoded_rows(images), ids)]


def single_locations(seed: int, draws: int, locations: int = 20) -> list[torch.Tensor]:
    """The locations a method draws after ``torch.manual_seed(seed)`` with ``num_patches: 1``."""
    torch.manual_seed(seed)
    return [torch.randperm(locations)[:1] for _ in range(draws)]


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert torch.allclose(actual, expected, rtol=1e-5, atol=ATOL), (actual.item(), expected.item())


@torch.no_grad()
def well_conditioned(module: nn.Module) -> None:
    """Redraw every weight and bias from N(0, 0.5): with the methods' N(0, 0.02)-scale initialisation
    a projection is nearly constant and its tiny outputs meet the normalisation's epsilon."""
    for p in module.parameters():
        nn.init.normal_(p, 0.0, 0.5)


# -- CUT / FastCUT ---------------------------------------------------------------------------------

def mlp_by_hand(head: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    first, last = head[0], head[2]
    return torch.relu(x @ first.weight.T + first.bias) @ last.weight.T + last.bias


@pytest.mark.parametrize("lambda_nce", [1.0, 2.5])
@pytest.mark.parametrize("use_mlp", [False, True])
def test_cut_objective_is_half_the_patch_nce_of_each_pair_times_lambda(lambda_nce, use_mlp):
    """CUT: 0.5 lambda_NCE NCE(x, G(x)) and 0.5 lambda_NCE NCE(y, G(y)), each the mean over layers
    of the mean per-patch InfoNCE between the projected source (keys) and output (queries) patches."""
    torch.manual_seed(0)
    method = CUT(CUTParams(lambda_NCE=lambda_nce, num_patches=0, use_mlp=use_mlp, netF_nc=8))
    pair = tiny_pair()
    method.initialize(pair)
    with torch.no_grad():
        well_conditioned(method.heads)
        terms = method.generator_losses(pair)

    def project(layer: int, x: torch.Tensor) -> torch.Tensor:
        return unit(mlp_by_hand(method.heads.mlps[layer], x) if use_mlp else x)

    def nce(source, output):
        keys, queries = encoded_rows(source), encoded_rows(output)
        return mean_over_layers(patch_nce(project(l, q), project(l, k)).mean()
                                for l, (q, k) in enumerate(zip(queries, keys)))

    assert set(terms) == {"NCE", "NCE_Y"}
    assert_close(terms["NCE"], 0.5 * lambda_nce * nce(pair.source, pair.output))
    assert_close(terms["NCE_Y"], 0.5 * lambda_nce * nce(pair.target, pair.identity))


def test_fastcut_is_ten_times_nce_without_identity_with_output_features_flipped_back_in_width():
    params = CUTParams(**CUT.presets["fastcut"], num_patches=0, use_mlp=False)
    method = CUT(params)
    assert method.flips_input and not method.uses_identity
    pair = tiny_pair(flipped=True)
    method.initialize(pair)
    with torch.no_grad():
        terms = method.generator_losses(pair)
    keys = encoded_rows(pair.source)
    # G saw the source flipped left-right: its output's features are flipped back along the width.
    queries = [rows(torch.flip(f, dims=[3])) for f in FixedEncoder()(pair.output)]
    expected = 10.0 * mean_over_layers(patch_nce(unit(q), unit(k)).mean() for q, k in zip(queries, keys))
    assert set(terms) == {"NCE"}
    assert_close(terms["NCE"], expected)


def test_sincut_takes_the_other_crops_patches_as_negatives():
    """SinCUT (one patch per crop, negatives from the minibatch): PatchNCE over the B patches of the
    batch, 0.5 lambda_NCE for each pair, fresh locations for the identity pair."""
    params = CUTParams(**CUT.presets["sincut"], num_patches=1, nce_includes_all_negatives_from_minibatch=True,
                       use_mlp=False)
    method = CUT(params)
    pair = tiny_pair(batch=4)
    method.initialize(pair)
    torch.manual_seed(9)
    with torch.no_grad():
        terms = method.generator_losses(pair)
    ids = single_locations(9, draws=4)

    def nce(source, output, layer_ids):
        pairs = zip(one_patch_per_image(output, layer_ids), one_patch_per_image(source, layer_ids))
        return mean_over_layers(patch_nce(unit(q), unit(k)).mean() for q, k in pairs)

    assert_close(terms["NCE"], 0.5 * 4.0 * nce(pair.source, pair.output, ids[:2]))
    assert_close(terms["NCE_Y"], 0.5 * 4.0 * nce(pair.target, pair.identity, ids[2:]))


# -- Hneg-SRC ---------------------------------------------------------------------------------------

def hardness(keys: torch.Tensor, gamma: float) -> torch.Tensor:
    """w_ij = softmax_j(S^k_ij / gamma) / max_j (the own entry filled with -10 first)."""
    k = unit(keys)
    w = torch.softmax(off_diagonal_filled(k @ k.transpose(1, 2)) / gamma, dim=-1)
    return w / w.max(dim=-1, keepdim=True).values


def hdce(q: torch.Tensor, k: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """log( sum_{j != i} exp((w_ij q_i.k_j - q_i.k_i) / tau) + exp((-10 - q_i.k_i) / tau) ), (B, P)."""
    scores = q @ k.transpose(1, 2)
    positive = scores.diagonal(dim1=1, dim2=2).unsqueeze(-1)
    negatives = off_diagonal_filled(scores * weights)
    return torch.logsumexp((negatives - positive) / TAU, dim=-1)


def src_jsd(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """sum over the P x P matrix of JSD(softmax rows of S^q || of S^k), averaged over the images."""
    p_q = torch.softmax(unit(q) @ unit(q).transpose(1, 2), dim=-1)
    p_k = torch.softmax(unit(k) @ unit(k).transpose(1, 2), dim=-1)
    m = (p_q + p_k) / 2
    kl = lambda a: (a * (a / m).log()).sum(dim=(1, 2))  # noqa: E731
    return (0.5 * kl(p_q) + 0.5 * kl(p_k)).mean()


@pytest.mark.parametrize("curriculum, progress, gamma", [
    ({"use_curriculum": False}, 0.6, 2.0),                                     # fixed HDCE_gamma
    ({"use_curriculum": True}, 0.0, 2.0),                                      # the curriculum starts at HDCE_gamma
    ({"use_curriculum": True}, 0.25, 2.0 + (0.5 - 2.0) * 0.25),                # and falls linearly to HDCE_gamma_min
    ({"use_curriculum": True, "step_gamma": True, "step_gamma_progress": 0.5}, 0.25, 2.0 + (0.5 - 2.0) * 0.25),
    ({"use_curriculum": True, "step_gamma": True, "step_gamma_progress": 0.5}, 0.75, 1.0),  # gamma 1 after the step
])
def test_hnegsrc_objective_and_its_hardness_curriculum(curriculum, progress, gamma):
    """0.5 lambda_HDCE hDCE(x, G(x)) + 0.5 lambda_HDCE hDCE(y, G(y)) + lambda_SRC SRC(x, G(x)), each
    averaged over layers; the negatives weighted by the hardness of the key similarity at the
    curriculum's gamma."""
    params = HnegSRCParams(num_patches=0, use_mlp=False, lambda_HDCE=0.3, lambda_SRC=0.7, dce_idt=True,
                           HDCE_gamma=2.0, HDCE_gamma_min=0.5, **curriculum)
    method = HnegSRC(params)
    pair = tiny_pair(progress=progress)
    method.initialize(pair)
    with torch.no_grad():
        terms = method.generator_losses(pair)

    def hdce_of(source, output):
        return mean_over_layers(hdce(unit(q), unit(k), hardness(k, gamma)).mean()
                                for q, k in zip(encoded_rows(output), encoded_rows(source)))

    src = mean_over_layers(src_jsd(unit(q), unit(k))
                           for q, k in zip(encoded_rows(pair.output), encoded_rows(pair.source)))
    assert set(terms) == {"HDCE", "HDCE_Y", "SRC"}
    assert_close(terms["HDCE"], 0.5 * 0.3 * hdce_of(pair.source, pair.output))
    assert_close(terms["HDCE_Y"], 0.5 * 0.3 * hdce_of(pair.target, pair.identity))
    assert_close(terms["SRC"], 0.7 * src)


def test_hnegsrc_compression_preset_sums_its_terms_over_the_layers_without_identity():
    params = HnegSRCParams(**{**HnegSRC.presets["hnegsrc_compression"], "num_patches": 0, "use_mlp": False,
                              "HDCE_gamma": 2.0, "HDCE_gamma_min": 0.5})
    method = HnegSRC(params)
    pair = tiny_pair(progress=0.5)
    method.initialize(pair)
    with torch.no_grad():
        terms = method.generator_losses(pair)
    layers = list(zip(encoded_rows(pair.output), encoded_rows(pair.source)))
    gamma = 2.0 + (0.5 - 2.0) * 0.5
    assert set(terms) == {"HDCE", "SRC"}
    assert_close(terms["HDCE"], 0.1 * sum(hdce(unit(q), unit(k), hardness(k, gamma)).mean() for q, k in layers))
    assert_close(terms["SRC"], 10.0 * sum(src_jsd(unit(q), unit(k)) for q, k in layers))


def test_hnegsrc_single_image_preset_weights_relations_over_the_batchs_patches():
    """Hneg-SRC with one patch per crop: hardness weights, hDCE and SRC over the B x B relations of
    the batch's patches, the identity pair at the same locations."""
    params = HnegSRCParams(**{**HnegSRC.presets["hnegsrc_single"], "num_patches": 1, "use_mlp": False,
                              "nce_includes_all_negatives_from_minibatch": True})
    method = HnegSRC(params)
    pair = tiny_pair(progress=0.5, batch=4)
    method.initialize(pair)
    torch.manual_seed(9)
    with torch.no_grad():
        terms = method.generator_losses(pair)
    ids = single_locations(9, draws=2)
    gamma = 200.0 + (40.0 - 200.0) * 0.5

    def grouped(source, output):
        return list(zip(one_patch_per_image(output, ids), one_patch_per_image(source, ids)))

    def hdce_of(source, output):
        return mean_over_layers(hdce(unit(q), unit(k), hardness(k, gamma)).mean() for q, k in grouped(source, output))

    assert_close(terms["HDCE"], 0.5 * 4.0 * hdce_of(pair.source, pair.output))
    assert_close(terms["HDCE_Y"], 0.5 * 4.0 * hdce_of(pair.target, pair.identity))
    assert_close(terms["SRC"], 10.0 * mean_over_layers(src_jsd(unit(q), unit(k))
                                                      for q, k in grouped(pair.source, pair.output)))


# -- NEGCUT -----------------------------------------------------------------------------------------

def negcut_with_pair(**params):
    torch.manual_seed(0)
    method = NEGCUT(NEGCUTParams(**{"num_patches": 0, "use_mlp": False, "z_dim": 3, "netF_nc": 8, **params}))
    pair = tiny_pair()
    method.initialize(pair)
    well_conditioned(method.negative_generator)
    return method, pair


def generated_negatives(method: NEGCUT, layer: int, source: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """n_j = unit(N_l([v ; e_j])), v the mean over every location of the (EMA-head) source patches."""
    instance = unit(encoded_rows(source)[layer]).mean(dim=1)                       # (B, C)
    inputs = torch.cat([instance.unsqueeze(1).expand(-1, noise.shape[1], -1), noise], dim=-1)
    return unit(mlp_by_hand(method.negative_generator.mlps[layer], inputs))


def nce_with_negatives(q: torch.Tensor, k: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """-log exp(q.k+/tau) / (exp(q.k+/tau) + sum_j exp(q.n_j/tau)), (B, P)."""
    positive = (q * k).sum(-1, keepdim=True)
    return cross_entropy_to_first(torch.cat([positive, q @ n.transpose(1, 2)], -1) / TAU)


def noise_draws(seed: int, sides: int, batch: int = 2, locations: int = 20, z_dim: int = 3):
    """The noise NEGCUT draws after ``torch.manual_seed(seed)``: per compared pair, per layer."""
    torch.manual_seed(seed)
    return [[torch.randn(batch, locations, z_dim) for _ in range(2)] for _ in range(sides)]


def negcut_nce(method, source, output, noise) -> torch.Tensor:
    layers = zip(encoded_rows(output), encoded_rows(source), noise)
    return mean_over_layers(
        nce_with_negatives(unit(q), unit(k), generated_negatives(method, l, source, e)).mean()
        for l, (q, k, e) in enumerate(layers))


@pytest.mark.parametrize("lambda_nce", [1.0, 4.0])
def test_negcut_generator_objective_uses_the_generated_negatives_with_half_weights(lambda_nce):
    method, pair = negcut_with_pair(lambda_NCE=lambda_nce)
    torch.manual_seed(3)
    with torch.no_grad():
        terms = method.generator_losses(pair)
    noise = noise_draws(3, sides=2)
    assert set(terms) == {"NCE", "NCE_Y"}
    assert_close(terms["NCE"], 0.5 * lambda_nce * negcut_nce(method, pair.source, pair.output, noise[0]))
    assert_close(terms["NCE_Y"], 0.5 * lambda_nce * negcut_nce(method, pair.target, pair.identity, noise[1]))


@pytest.mark.parametrize("lambda_ms", [0.5, 2.0])
def test_negcut_negative_generator_maximises_nce_and_the_diversity_of_its_negatives(lambda_ms):
    """N minimises -NCE + lambda_MS * (-mean |n_{1..P/2} - n_{P/2+1..P}|), NCE and diversity averaged
    over the compared pairs (and layers)."""
    method, pair = negcut_with_pair(lambda_MS_neg=lambda_ms)
    views = method.encode_views(pair)
    torch.manual_seed(5)
    with torch.no_grad():
        loss, nce, diversity = method.negative_objective(views)
    noise = noise_draws(5, sides=2)
    sides = [(pair.source, pair.output), (pair.target, pair.identity)]
    expected_nce = torch.stack([negcut_nce(method, s, o, e) for (s, o), e in zip(sides, noise)]).mean()
    spreads = []
    for (source, _), side_noise in zip(sides, noise):
        for layer, e in enumerate(side_noise):
            n = generated_negatives(method, layer, source, e)
            spreads.append(-(n[:, :10] - n[:, 10:]).abs().mean())
    expected_diversity = torch.stack(spreads).mean()
    assert_close(nce, expected_nce)
    assert_close(diversity, expected_diversity)
    assert_close(loss, -expected_nce + lambda_ms * expected_diversity)


def test_negcut_ema_heads_follow_the_heads_with_decay_09():
    method, _ = negcut_with_pair(use_mlp=True)
    before = [p.clone() for p in method.ema_heads.parameters()]
    method.after_generator_step()
    for old, new, current in zip(before, method.ema_heads.parameters(), method.heads.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * current)


# -- F-LSeSim ---------------------------------------------------------------------------------------

def correlation(feature_map: torch.Tensor) -> torch.Tensor:
    """tanh(f_i . f_j / (10 C)) of the spatially centred map, every location against every other."""
    f = rows(feature_map - feature_map.mean(dim=(2, 3), keepdim=True))
    return torch.tanh(f @ f.transpose(1, 2) / feature_map.shape[1] / 10)


def structure(src_map: torch.Tensor, out_map: torch.Tensor) -> torch.Tensor:
    """SmoothL1(1 - cos) of the rows after keeping the entries at or above the (N/4 + 1)-th largest
    of the output's row (zero elsewhere in both)."""
    count = src_map.shape[-1]
    threshold = out_map.sort(dim=-1, descending=True).values[..., int(count / 4)].unsqueeze(-1)
    keep = (out_map >= threshold).float()
    a, b = src_map * keep, out_map * keep
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return smooth_l1(1 - cos)


def spatial(source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    pairs = zip(FixedEncoder()(source), FixedEncoder()(output))
    return mean_over_layers(structure(correlation(s), correlation(o)) for s, o in pairs)


@pytest.mark.parametrize("weights", [{}, {"lambda_spatial": 3.0, "lambda_spatial_idt": 2.0, "lambda_identity": 0.5}])
def test_fsesim_objective_is_the_weighted_structure_losses_and_identity_l1(weights):
    method = FLSeSim(FLSeSimParams(patch_nums=0, vgg_weights="untrained", **weights))
    method.vgg = FixedEncoder()
    pair = tiny_pair()
    with torch.no_grad():
        terms = method.generator_losses(pair)
    p = method.params
    expected = {"G_s": p.lambda_spatial * spatial(pair.source, pair.output)}
    if p.lambda_spatial_idt:
        expected["G_s_idt_B"] = p.lambda_spatial_idt * spatial(pair.target, pair.identity)
    if p.lambda_identity:
        expected["idt_B"] = p.lambda_identity * (pair.identity - pair.target).abs().mean()
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert_close(terms[name], value)


def test_lsesim_heads_contrast_source_and_output_maps_against_the_target_flipped_in_height_and_width():
    """The heads' InfoNCE on L2-normalised learned maps s (x), t (G(x)) and o (y flipped in H and W):
    positive s_i.t_i; negatives s_i.t_j (j != i), s_i.o_j and t_i.o_j."""
    torch.manual_seed(0)
    method = FLSeSim(FLSeSimParams(patch_nums=0, learned_attn=True, T=TAU, vgg_weights="untrained"))
    method.vgg = FixedEncoder()
    method.heads = AttentionHeads([3, 4], init_gain=0.5)
    pair = tiny_pair()
    with torch.no_grad():
        loss = method.head_loss(pair)

    def maps(images):
        return [F.normalize(correlation(head(f)), dim=-1) for head, f in zip(method.heads.convs, FixedEncoder()(images))]

    per_layer = []
    for s, t, o in zip(maps(pair.source), maps(pair.output), maps(torch.flip(pair.target, dims=[2, 3]))):
        st = s @ t.transpose(1, 2)
        positive = st.diagonal(dim1=1, dim2=2).unsqueeze(-1)
        others = st.masked_select(~torch.eye(st.shape[-1], dtype=torch.bool)).view(*st.shape[:2], -1)
        logits = torch.cat([positive, others, s @ o.transpose(1, 2), t @ o.transpose(1, 2)], -1) / TAU
        per_layer.append(cross_entropy_to_first(logits).mean())
    assert_close(loss, mean_over_layers(per_layer))


# -- GraphCL ----------------------------------------------------------------------------------------

def graphcl_method(**params) -> GraphCL:
    torch.manual_seed(0)
    p = GraphCLParams(num_patches=0, netF_nc=6, vgg_weights="untrained", **params)
    method = GraphCL(p)
    method.vgg = FixedEncoder()
    method.layer_heads = nn.ModuleList(LayerGraphHeads(c, p.netF_nc, p.num_hop, p.pooling_num) for c in (3, 4))
    return method


def gnn(conv: nn.Linear, nodes: torch.Tensor, propagation: torch.Tensor, hops: int) -> torch.Tensor:
    """unit(sum_k (P^k X) W_k + b) with DGL's layout: one Linear over [X, P X, ..., P^K X]."""
    stack = [nodes]
    for _ in range(hops):
        stack.append(propagation @ stack[-1])
    return unit(torch.cat(stack, -1) @ conv.weight.T + conv.bias)


def node_loss(v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """PatchNCE with the source nodes as queries plus PatchNCE with the output nodes as queries."""
    return patch_nce(v, z).mean() + patch_nce(z, v).mean()


def graph_level0_loss(method: GraphCL, heads: LayerGraphHeads, source: torch.Tensor, output: torch.Tensor):
    p = method.params
    e_src = unit(source @ heads.embed.weight.T + heads.embed.bias)
    e_out = unit(output @ heads.embed.weight.T + heads.embed.bias)
    adjacency = (e_src @ e_src.transpose(1, 2) > p.nonzero_th).float() + torch.eye(e_src.shape[1])  # two self-loops
    degree = adjacency.sum(dim=1)                                                                    # in-degrees
    propagation = adjacency.transpose(1, 2) / degree.sqrt().unsqueeze(-1) / degree.sqrt().unsqueeze(-2)
    v = gnn(heads.gnn.conv.lin, e_src, propagation, p.num_hop)
    z = gnn(heads.gnn.conv.lin, e_out, propagation, p.num_hop)
    return node_loss(v, z)


def test_graphcl_objective_is_half_lambda_gnn_of_each_pair_of_graph_losses():
    method = graphcl_method(pooling_num=0, lambda_GNN=0.3, num_hop=2, nonzero_th=0.1)
    pair = tiny_pair()
    with torch.no_grad():
        terms = method.generator_losses(pair)

    def graph_loss(source, output):
        layers = zip(method.layer_heads, encoded_rows(source), encoded_rows(output))
        return mean_over_layers(graph_level0_loss(method, h, s, o) for h, s, o in layers)

    assert set(terms) == {"GNN", "GNN_Y"}
    assert_close(terms["GNN"], 0.5 * 0.3 * graph_loss(pair.source, pair.output))
    assert_close(terms["GNN_Y"], 0.5 * 0.3 * graph_loss(pair.target, pair.identity))


def test_graphcl_pooled_level_enters_with_its_ratio_and_the_levels_are_averaged():
    """Per layer (L_0 + r_1 L_1) / 2 with one pooling level: linear in r_1, L_0 / 2 at r_1 = 0."""
    method = graphcl_method(pooling_num=1, num_hop=2, down_scale=4)
    heads = method.layer_heads[1]
    source, output = encoded_rows(image(1))[1], encoded_rows(image(2))[1]

    def layer_loss(ratio):
        method.params.pooling_ratio = [1.0, ratio]
        with torch.no_grad():
            return method.layer_loss(heads, source, output)

    at0, at1, at3 = layer_loss(0.0), layer_loss(1.0), layer_loss(3.0)
    assert_close(2 * at0, graph_level0_loss(method, heads, source, output))
    assert (at1 - at0).abs() > 1e-4
    assert_close(at3 - at0, 3 * (at1 - at0))
