"""Hneg-SRC: SRC and hardness weights by hand, hDCE gradient, per-image batching, curriculum, presets."""
import math

import pytest
import torch
import torch.nn.functional as F

from tasks.feature_sources import encoder_pair
from methods.hnegsrc import HnegSRC, HnegSRCParams, curriculum_gamma, patch_similarity, relation_jsd
from methods.shared.dce import hardness_weights, patch_hdce
from methods.shared.patches import gather_locations, sample_locations
from tasks.networks import ResnetGenerator, cut_layer_ids


# -- SRC ------------------------------------------------------------------------------------------
def _jsd(a, b):
    m = [(x + y) / 2 for x, y in zip(a, b)]
    kl = lambda p, q: sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))  # noqa: E731
    return 0.5 * kl(a, m) + 0.5 * kl(b, m)


def test_src_two_patches_by_hand():
    # Output patches orthogonal: S^q = I, rows softmax to (e/(e+1), 1/(e+1)) and its mirror.
    # Source patches identical: S^k = all ones, rows softmax to (1/2, 1/2).
    q = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])  # normalised inside
    k = torch.tensor([[[1.0, 0.0], [5.0, 0.0]]])
    a = math.e / (math.e + 1)
    expected = _jsd([a, 1 - a], [0.5, 0.5]) + _jsd([1 - a, a], [0.5, 0.5])  # summed over the matrix
    value = relation_jsd(patch_similarity(q), patch_similarity(k))
    assert value.shape == (1,)
    assert value.item() == pytest.approx(expected, abs=1e-6)
    # Identical relations give zero.
    assert relation_jsd(patch_similarity(k), patch_similarity(k)).item() == pytest.approx(0.0, abs=1e-7)


def test_src_equals_official_column_softmax_kl_sum():
    """The official softmaxes over dim 1 and sums nn.KLDivLoss(reduction='sum', log_target=True)."""
    torch.manual_seed(0)
    q, k = torch.randn(1, 6, 5), torch.randn(1, 6, 5)
    sq, sk = patch_similarity(q), patch_similarity(k)
    p1, p2 = torch.softmax(sq, dim=1), torch.softmax(sk, dim=1)
    m = 0.5 * (p1 + p2)
    kl = torch.nn.KLDivLoss(reduction="sum", log_target=True)
    official = 0.5 * (kl(m.log(), p1.log()) + kl(m.log(), p2.log()))
    assert relation_jsd(sq, sk).item() == pytest.approx(official.item(), rel=1e-5)


# -- hardness weights -----------------------------------------------------------------------------
def test_hardness_weights_by_hand():
    s = torch.tensor([[[1.0, 0.5, -0.2], [0.5, 1.0, 0.1], [-0.2, 0.1, 1.0]]])
    gamma = 0.5
    expected = []
    for i in range(3):
        row = [(-10.0 if j == i else s[0, i, j].item()) / gamma for j in range(3)]
        e = [math.exp(x) for x in row]
        soft = [x / sum(e) for x in e]
        expected.append([x / max(soft) for x in soft])
    w = hardness_weights(s.clone().requires_grad_(True), gamma)
    assert torch.allclose(w, torch.tensor([expected]), atol=1e-6)
    assert not w.requires_grad  # detached
    assert w.max() <= 1 and w.min() > 0
    # Large gamma flattens the weights towards 1.
    flat = hardness_weights(s, 1e4)
    assert torch.allclose(flat, torch.ones_like(flat), atol=2e-3)


# -- hDCE -----------------------------------------------------------------------------------------
def _explicit_hdce(q, k, w, tau):
    """mean_i log( sum_{j != i} exp((w_ij q_i.k_j - q_i.k_i)/tau) + exp((-10 - q_i.k_i)/tau) ), one image."""
    losses = []
    for i in range(q.shape[0]):
        pos = q[i] @ k[i]
        terms = [torch.exp((((-10.0) if j == i else w[i, j] * (q[i] @ k[j])) - pos) / tau) for j in range(q.shape[0])]
        losses.append(torch.log(torch.stack(terms).sum()))
    return torch.stack(losses).mean()


def _official_style_hdce(q, k, w, tau):
    """The official trick: value = plain cross entropy, gradient of mean logsumexp via exp(v - v.detach())."""
    pos = (q * k).sum(-1, keepdim=True)
    neg = (q @ k.T) * w
    neg = neg.masked_fill(torch.eye(q.shape[0], dtype=torch.bool), -10.0)
    v = torch.logsumexp((neg - pos) / tau, dim=1)
    ce = F.cross_entropy(torch.cat([pos, neg], 1) / tau, torch.zeros(q.shape[0], dtype=torch.long), reduction="none")
    return (torch.exp(v - v.detach()).mean() - 1 + ce.detach()).mean(), ce.mean()


def test_hdce_gradient_equals_explicit_formula_and_values():
    torch.manual_seed(0)
    q0 = F.normalize(torch.randn(4, 3), dim=-1)
    k = F.normalize(torch.randn(4, 3), dim=-1)
    w = hardness_weights(k @ k.T, 0.7)
    tau = 0.5

    def grad(fn):
        q = q0.clone().requires_grad_(True)
        value = fn(q)
        (g,) = torch.autograd.grad(value, q)
        return value.detach(), g

    v_ref, g_ref = grad(lambda q: _explicit_hdce(q, k, w, tau))
    v_dce, g_dce = grad(lambda q: patch_hdce(q[None], k[None], w[None], tau, "dce").mean())
    v_off, g_off = grad(lambda q: patch_hdce(q[None], k[None], w[None], tau, "official").mean())
    v_trick, g_trick = grad(lambda q: _official_style_hdce(q, k, w, tau)[0])
    assert torch.allclose(g_dce, g_ref, atol=1e-6)
    assert torch.allclose(g_off, g_ref, atol=1e-6)
    assert torch.allclose(g_trick, g_ref, atol=1e-6)
    assert v_dce.item() == pytest.approx(v_ref.item(), abs=1e-6)
    assert v_off.item() == pytest.approx(v_trick.item(), abs=1e-6)  # the official monitored value
    assert v_off.item() != pytest.approx(v_dce.item(), abs=1e-3)


def test_hdce_key_is_detached():
    torch.manual_seed(1)
    q = F.normalize(torch.randn(1, 5, 4), dim=-1).requires_grad_(True)
    k = F.normalize(torch.randn(1, 5, 4), dim=-1).requires_grad_(True)
    patch_hdce(q, k, None, 0.07).mean().backward()
    assert k.grad is None and torch.count_nonzero(q.grad) > 0


# -- curriculum -----------------------------------------------------------------------------------
def test_gamma_schedule():
    p = HnegSRCParams(**HnegSRC.presets["hnegsrc"])
    assert [curriculum_gamma(p, x) for x in (0.0, 0.5, 1.0)] == pytest.approx([50.0, 30.0, 10.0])
    city = HnegSRCParams(**HnegSRC.presets["hnegsrc_city"])
    assert curriculum_gamma(city, 0.0) == pytest.approx(50.0)
    assert curriculum_gamma(city, 0.49) == pytest.approx(50.0 - 40.0 * 0.49)
    assert curriculum_gamma(city, 0.5) == 1.0 and curriculum_gamma(city, 1.0) == 1.0
    # Without the curriculum gamma is constant, and step_gamma alone does nothing (as officially).
    plain = HnegSRCParams(HDCE_gamma=7.0, HDCE_gamma_min=2.0, step_gamma=True)
    assert [curriculum_gamma(plain, x) for x in (0.0, 0.6, 1.0)] == [7.0, 7.0, 7.0]


def test_presets_and_defaults_follow_official_readme_and_options():
    assert HnegSRC.presets["hnegsrc"] == {
        "dce_idt": True, "lambda_HDCE": 0.1, "lambda_SRC": 0.05, "use_curriculum": True,
        "HDCE_gamma": 50.0, "HDCE_gamma_min": 10.0}
    assert HnegSRC.presets["hnegsrc_city"] == {
        "dce_idt": True, "lambda_HDCE": 0.1, "lambda_SRC": 0.1, "use_curriculum": True,
        "HDCE_gamma": 50.0, "HDCE_gamma_min": 10.0, "step_gamma": True, "step_gamma_progress": 0.5}
    d = HnegSRCParams()
    assert (d.lambda_HDCE, d.lambda_SRC, d.HDCE_gamma, d.HDCE_gamma_min, d.nce_T, d.num_patches, d.netF_nc) == \
        (1.0, 1.0, 1.0, 1.0, 0.07, 256, 256)
    assert not (d.dce_idt or d.use_curriculum or d.step_gamma or d.flip_equivariance or d.no_Hneg)
    assert HnegSRC(HnegSRCParams(**HnegSRC.presets["hnegsrc"])).uses_identity
    assert not HnegSRC(d).uses_identity
    assert HnegSRCParams(HDCE_gamma=0.0).validate() is not None


# -- the method on a generator ----------------------------------------------------------------------
def _setup(batch=2, **params):
    torch.manual_seed(0)
    G = ResnetGenerator(3, 3, ngf=8, n_blocks=2)
    layers = cut_layer_ids(2)
    method = HnegSRC(HnegSRCParams(**{"num_patches": 16, **params}))
    encode = lambda x: G(x, layers, encode_only=True)  # noqa: E731
    x = torch.rand(batch, 3, 32, 32) * 2 - 1
    y = torch.rand(batch, 3, 32, 32) * 2 - 1
    method.initialize(encoder_pair(encode, source=x, output=x))
    return G, method, encode, x, y


def test_gradients_reach_output_identity_and_heads_not_source_or_target():
    G, method, encode, x, y = _setup(**HnegSRC.presets["hnegsrc"])
    source, target = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    out = G(torch.cat([x, y]))
    fake, idt = out[:2].detach().requires_grad_(True), out[2:].detach().requires_grad_(True)
    pair = encoder_pair(encode, source=source, output=fake, target=target, identity=idt, progress=0.3)
    terms = method.generator_losses(pair)
    assert set(terms) == {"HDCE", "HDCE_Y", "SRC"}
    sum(terms.values()).backward()
    assert source.grad is None or torch.count_nonzero(source.grad) == 0
    assert target.grad is None or torch.count_nonzero(target.grad) == 0
    assert torch.count_nonzero(fake.grad) > 0 and torch.count_nonzero(idt.grad) > 0
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in method.heads.parameters())


def test_src_alone_trains_heads_through_the_output_only():
    G, method, encode, x, y = _setup(lambda_HDCE=0.0)
    source = x.clone().requires_grad_(True)
    fake = G(x).detach().requires_grad_(True)
    terms = method.generator_losses(encoder_pair(encode, source=source, output=fake))
    assert set(terms) == {"SRC"}
    terms["SRC"].backward()
    assert source.grad is None and torch.count_nonzero(fake.grad) > 0
    assert all(torch.count_nonzero(p.grad) > 0 for p in method.heads.parameters())


def test_batch_of_two_equals_mean_of_two_batches_of_one():
    G, method, encode, x, y = _setup(**HnegSRC.presets["hnegsrc_city"])
    with torch.no_grad():
        out = G(torch.cat([x, y]))
        fake, idt = out[:2], out[2:]

    def terms(sl):
        torch.manual_seed(123)  # same sampled locations for every call
        pair = encoder_pair(encode, source=x[sl], output=fake[sl], target=y[sl], identity=idt[sl],
                               progress=0.25)
        return method.generator_losses(pair)

    with torch.no_grad():
        both, one, two = terms(slice(0, 2)), terms(slice(0, 1)), terms(slice(1, 2))
    for name in ("HDCE", "HDCE_Y", "SRC"):
        assert torch.allclose(both[name], 0.5 * (one[name] + two[name]), atol=1e-5), name
    assert not torch.allclose(one["SRC"], two["SRC"], atol=1e-6)  # the images do differ


def test_one_patch_per_image_is_finite():
    G, method, encode, x, y = _setup(num_patches=1, dce_idt=True)
    out = G(torch.cat([x, y]))
    pair = encoder_pair(encode, source=x, output=out[:2], target=y, identity=out[2:])
    terms = method.generator_losses(pair)
    total = sum(terms.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in G.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(torch.count_nonzero(g) > 0 for g in grads)
    assert terms["SRC"].item() == pytest.approx(0.0, abs=1e-7)  # one relation: nothing to compare


def test_negatives_from_minibatch_treat_the_batch_as_one_image():
    """SinCUT's setting (one patch per image, negatives from the minibatch): every term is computed on
    the (1, B*P) grouping, with a proper B*P diagonal (the hardness weights are not all masked)."""
    G, method, encode, x, y = _setup(batch=3, num_patches=1, nce_includes_all_negatives_from_minibatch=True,
                                     lambda_HDCE=2.0, lambda_SRC=3.0, HDCE_gamma=0.1)
    with torch.no_grad():
        fake = G(x)
        torch.manual_seed(9)
        terms = method.generator_losses(encoder_pair(encode, source=x, output=fake))
        torch.manual_seed(9)
        ids = sample_locations(encode(fake), 1)
        qs = [q.reshape(1, -1, q.shape[-1]) for q in method.heads(gather_locations(encode(fake), ids))]
        ks = [k.reshape(1, -1, k.shape[-1]) for k in method.heads(gather_locations(encode(x), ids))]
        ws = [hardness_weights(patch_similarity(k), 0.1) for k in ks]
        hdce = 2.0 * torch.stack([patch_hdce(q, k, w).mean() for q, k, w in zip(qs, ks, ws)]).mean()
        src = 3.0 * torch.stack([relation_jsd(patch_similarity(q), patch_similarity(k)).mean()
                                 for q, k in zip(qs, ks)]).mean()
    assert qs[0].shape[:2] == (1, 3)
    assert not torch.allclose(ws[0], torch.ones_like(ws[0]))
    assert torch.allclose(terms["HDCE"], hdce, atol=1e-6) and torch.allclose(terms["SRC"], src, atol=1e-6)
    assert terms["SRC"] > 0


def test_identity_term_reuses_the_output_locations():
    """The official draws one set of locations (on fake_B) for all four feature sets: with the target
    pair equal to the source pair, HDCE_Y must equal HDCE."""
    G, method, encode, x, y = _setup(dce_idt=True)
    with torch.no_grad():
        fake = G(x)
        terms = method.generator_losses(encoder_pair(encode, source=x, output=fake, target=x, identity=fake))
    assert torch.allclose(terms["HDCE"], terms["HDCE_Y"], atol=1e-6)


def test_no_hneg_and_gamma_change_the_loss():
    G, method, encode, x, y = _setup()
    with torch.no_grad():
        fake = G(x)

    def hdce(m, progress=0.0):
        torch.manual_seed(3)
        return m.generator_losses(encoder_pair(encode, source=x, output=fake, progress=progress))["HDCE"]

    with torch.no_grad():
        base = hdce(method)
        method.params.no_Hneg = True
        plain = hdce(method)
        method.params.no_Hneg = False
        method.params.use_curriculum, method.params.HDCE_gamma, method.params.HDCE_gamma_min = True, 50.0, 0.1
        early, late = hdce(method, 0.0), hdce(method, 1.0)
    assert not torch.allclose(base, plain) and not torch.allclose(early, late)


# -- the compression header (jcy132/Hneg_SRC Compression/) ------------------------------------------
def test_compression_preset_builds_the_official_supermlp_header():
    """``SuperMLP(fs * 4, ft * 4)`` on hooks as wide as 4 x the teacher's ngf, initialised by
    ``init_net``: normal(0, 0.02) weights, zero biases; the other presets keep CUT's header."""
    params = HnegSRCParams(**HnegSRC.presets["hnegsrc_compression"])
    assert (params.head_width, params.head_init, params.hardness_needs_src) == ("features", "normal", True)
    torch.manual_seed(0)
    heads = HnegSRC(params).projection_heads([64, 64])            # a teacher of ngf 16: hooks 64 wide
    first, last = heads.mlps[0][0], heads.mlps[0][2]
    assert (first.in_features, first.out_features, last.out_features) == (64, 64, 64)
    weights = torch.cat([m.weight.flatten() for m in heads.modules() if isinstance(m, torch.nn.Linear)])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001   # not xavier's 0.0035
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in heads.modules() if isinstance(m, torch.nn.Linear))
    cut_header = HnegSRC(HnegSRCParams(**HnegSRC.presets["hnegsrc"])).projection_heads([64])
    assert cut_header.mlps[0][0].out_features == 256
    assert abs(cut_header.mlps[0][0].weight.std().item() - 0.02 * math.sqrt(2 / (64 + 256))) < 3e-4


@pytest.mark.parametrize("needs_src, uniform", [(True, True), (False, False)])
def test_lambda_src_zero_drops_the_hardness_weights_only_where_the_compression_code_does(needs_src, uniform):
    G, method, encode, x, y = _setup(lambda_SRC=0.0, hardness_needs_src=needs_src, HDCE_gamma=0.5)
    with torch.no_grad():
        fake = G(x)

    def hdce(no_hneg):
        method.params.no_Hneg = no_hneg
        torch.manual_seed(3)
        return method.generator_losses(encoder_pair(encode, source=x, output=fake))["HDCE"]

    with torch.no_grad():
        weighted, plain = hdce(False), hdce(True)
    assert torch.equal(weighted, plain) == uniform
