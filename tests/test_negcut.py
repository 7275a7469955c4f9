"""NEGCUT: generated-negatives InfoNCE by hand, the negative generator's adversarial step, gradient
routing between N, the heads and G, the EMA heads, per-image batching, presets and a smoke run."""
import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.config import find_method, suite_from_dict
from benchmark.runner import Runner, expand
from methods.base import AuxiliaryStep, OptimizerDefaults
from tasks.feature_sources import encoder_pair
from methods.negcut import NEGCUT, NEGCUTParams, PairView, generated_negatives_nce, negatives_diversity
from tasks.networks import ResnetGenerator, cut_layer_ids

from conftest import tiny_suite_dict

DEFAULTS = OptimizerDefaults(2e-4, (0.5, 0.999))


def _setup(batch=2, **params):
    torch.manual_seed(0)
    G = ResnetGenerator(3, 3, ngf=8, n_blocks=2)
    layers = cut_layer_ids(2)
    method = NEGCUT(NEGCUTParams(num_patches=16, **params))
    encode = lambda x: G(x, layers, encode_only=True)  # noqa: E731
    x = torch.rand(batch, 3, 16, 16) * 2 - 1
    y = torch.rand(batch, 3, 16, 16) * 2 - 1
    method.initialize(encoder_pair(encode, source=x, output=x))
    method.build_optimizers(DEFAULTS)
    with torch.no_grad():
        out = G(torch.cat([x, y]))
    pair = encoder_pair(encode, source=x, output=out[:batch], target=y, identity=out[batch:])
    return G, method, encode, pair


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _same(module, snapshot):
    return all(torch.equal(p, s) for p, s in zip(module.parameters(), snapshot))


# -- the loss by hand ------------------------------------------------------------------------------
def test_generated_negatives_nce_matches_hand_computation():
    q = torch.tensor([[[0.6, 0.8], [1.0, 0.0]]])
    k = torch.tensor([[[0.0, 1.0], [0.8, 0.6]]])
    n = torch.tensor([[[1.0, 0.0], [0.0, -1.0], [-0.6, 0.8]]])
    tau = 0.5
    # query 0: positive 0.8; negatives q0.n = 0.6, -0.8, -0.36 + 0.64 = 0.28 (no masked entry)
    # query 1: positive 0.8; negatives q1.n = 1.0, 0.0, -0.6
    def ce(pos, negs):
        return -math.log(math.exp(pos / tau) / (math.exp(pos / tau) + sum(math.exp(v / tau) for v in negs)))
    expected = torch.tensor([[ce(0.8, [0.6, -0.8, 0.28]), ce(0.8, [1.0, 0.0, -0.6])]])
    loss = generated_negatives_nce(q, k, n, tau)
    assert loss.shape == (1, 2)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_minibatch_negatives_match_a_naive_loop():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(2, 3, 4), dim=-1)
    k = F.normalize(torch.randn(2, 3, 4), dim=-1)
    n = F.normalize(torch.randn(2, 5, 4), dim=-1)
    pooled = n.reshape(10, 4)
    naive = torch.empty(2, 3)
    for b in range(2):
        for i in range(3):
            pos = torch.exp(q[b, i] @ k[b, i] / 0.07)
            naive[b, i] = -torch.log(pos / (pos + torch.exp(pooled @ q[b, i] / 0.07).sum()))
    assert torch.allclose(generated_negatives_nce(q, k, n, 0.07, negatives_from_minibatch=True), naive, atol=1e-5)
    per_image = generated_negatives_nce(q, k, n, 0.07)
    assert not torch.allclose(per_image, naive, atol=1e-3)
    assert torch.allclose(per_image[1:], generated_negatives_nce(q[1:], k[1:], n[1:], 0.07))


def test_diversity_by_hand():
    n = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.6, 0.8]]])
    # pairs (n0, n2): |1|,|1| ; (n1, n3): |-0.6|, |0.2|  -> mean of 4 values = 2.8 / 4
    assert torch.isclose(negatives_diversity(n), torch.tensor(-0.7))


def test_negative_generator_and_instance_vectors_match_naive_formula():
    G, method, encode, pair = _setup(batch=2)
    N, ema = method.negative_generator, method.ema_heads
    feats = encode(pair.source)
    instances = method.instance_vectors(feats)
    for layer, feat in enumerate(feats):
        mlp = ema.mlps[layer]
        for b in range(2):
            rows = mlp(feat[b].reshape(feat.shape[1], -1).T)  # every position, (H*W, 256)
            rows = rows / (rows.norm(dim=1, keepdim=True) + 1e-7)
            assert torch.allclose(instances[layer][b], rows.mean(0), atol=1e-6)
    noise = [torch.randn(2, 3, 64) for _ in feats]
    negatives = N(instances, noise)
    for layer in range(len(feats)):
        lin1, lin2 = N.mlps[layer][0], N.mlps[layer][2]
        for b in range(2):
            for j in range(3):
                inp = torch.cat([instances[layer][b], noise[layer][b, j]])
                out = lin2.weight @ torch.relu(lin1.weight @ inp + lin1.bias) + lin2.bias
                assert torch.allclose(negatives[layer][b, j], out / (out.norm() + 1e-7), atol=1e-6)
    assert lin1.in_features == 256 + 64 and lin1.out_features == 256 and lin2.out_features == 256


# -- the negative generator's adversarial step ------------------------------------------------------
def test_negative_step_increases_the_nce_of_fixed_queries_and_touches_only_N():
    G, method, encode, pair = _setup(batch=2, lambda_MS_neg=0.0)

    def nce():
        torch.manual_seed(11)  # same locations and noise
        with torch.no_grad():
            return method.negative_objective(method.encode_views(pair))[1]

    before = nce()
    heads, ema, gen = _snapshot(method.heads), _snapshot(method.ema_heads), _snapshot(G)
    N = _snapshot(method.negative_generator)
    torch.manual_seed(11)
    logs = method.auxiliary_step(pair).logs
    after = nce()
    assert after > before
    assert logs["N"] == pytest.approx(-before.item(), rel=1e-5)
    assert not _same(method.negative_generator, N)
    assert _same(method.heads, heads) and _same(method.ema_heads, ema) and _same(G, gen)
    assert all(p.grad is None for p in [*G.parameters(), *method.heads.parameters(), *method.ema_heads.parameters()])
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in method.negative_generator.parameters())


def test_negative_objective_with_diversity_decreases_and_counts_both_pairs():
    G, method, encode, pair = _setup(batch=2)  # nce_idt on: source and identity negatives

    def objective():
        torch.manual_seed(5)
        with torch.no_grad():
            return method.negative_objective(method.encode_views(pair))

    loss, nce, div = objective()
    assert torch.isclose(loss, -nce + div)
    torch.manual_seed(5)
    method.auxiliary_step(pair)
    assert objective()[0] < loss
    # 'all' averages the two pairs' diversity terms; 'last' (official) keeps the identity pair's.
    torch.manual_seed(5)
    views = method.encode_views(pair)
    with torch.no_grad():
        negatives = [method.queries_keys_negatives(v, frozen=False, detach=True)[2] for v in views]
        per_view = [torch.stack([negatives_diversity(n) for n in per_layer]).mean() for per_layer in negatives]
        torch.manual_seed(5)
        _, _, div_all = method.negative_objective(method.encode_views(pair))
        method.params.diversity_negatives = "last"
        torch.manual_seed(5)
        _, _, div_last = method.negative_objective(method.encode_views(pair))
    assert torch.isclose(div_all, 0.5 * (per_view[0] + per_view[1]))
    assert torch.isclose(div_last, per_view[1])


# -- the generator step ----------------------------------------------------------------------------
@pytest.mark.parametrize("detach_negatives", [False, True])
def test_generator_step_gives_N_no_gradient_and_keeps_N(detach_negatives):
    G, method, encode, pair = _setup(batch=1, nce_idt=False, detach_negatives=detach_negatives)
    source = pair.source.clone().requires_grad_(True)
    output = G(pair.source)
    pair = encoder_pair(encode, source=source, output=output)
    aux = method.auxiliary_step(pair)
    n_grads = [p.grad.clone() for p in method.negative_generator.parameters()]
    n_params = _snapshot(method.negative_generator)
    loss = method.generator_losses(pair, aux.computed)["NCE"]  # as the task calls it
    loss.backward()
    method.optimizers["heads"].step()
    torch.optim.Adam(G.parameters(), lr=1e-3).step()
    # N: no new gradient (its grads are those of its own step) and unchanged by the G step.
    assert all(torch.equal(p.grad, g) for p, g in zip(method.negative_generator.parameters(), n_grads))
    assert _same(method.negative_generator, n_params)
    assert all(p.grad is None for p in method.ema_heads.parameters())
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in method.heads.parameters())
    assert all(p.grad is not None for p in G.parameters() if p.requires_grad)
    # Official: the negatives are a function of the source features, so the loss reaches the
    # source image through them (the keys themselves are detached).
    reached_source = source.grad is not None and torch.count_nonzero(source.grad) > 0
    assert reached_source == (not detach_negatives)


def test_views_of_the_negative_step_give_the_same_generator_loss_as_recomputing():
    G, method, encode, pair = _setup(batch=2)
    aux = method.auxiliary_step(pair)
    assert isinstance(aux, AuxiliaryStep) and set(aux.logs) == {"N", "N_div"}
    views = aux.computed
    assert len(views) == 2 and all(isinstance(v, PairView) for v in views)  # (x, G(x)) and (y, G(y))
    torch.manual_seed(3)
    passed = method.generator_losses(pair, views)
    torch.manual_seed(3)
    fresh = method.generator_losses(pair)  # nothing passed: encodes the pair itself
    assert passed.keys() == fresh.keys() == {"NCE", "NCE_Y"}
    for key in passed:
        assert torch.allclose(passed[key], fresh[key], atol=1e-6)
    # The loss comes from the views passed, not from the pair: another pair's views give its loss.
    swapped = encoder_pair(encode, source=pair.target, output=pair.identity, target=pair.source,
                           identity=pair.output)
    torch.manual_seed(3)
    from_other_views = method.generator_losses(pair, method.encode_views(swapped))
    torch.manual_seed(3)
    other = method.generator_losses(swapped)
    assert torch.allclose(from_other_views["NCE"], other["NCE"], atol=1e-6)
    assert not torch.allclose(from_other_views["NCE"], fresh["NCE"], atol=1e-4)


def test_no_nce_weight_means_no_step_and_no_terms():
    G, method, encode, pair = _setup(batch=1, lambda_NCE=0.0)
    N = _snapshot(method.negative_generator)
    aux = method.auxiliary_step(pair)
    assert aux.logs == {} and aux.computed is None and _same(method.negative_generator, N)
    assert method.generator_losses(pair, aux.computed) == {} and not method.uses_identity


def test_ema_update_equals_its_formula():
    G, method, encode, pair = _setup(batch=1)
    with torch.no_grad():
        for p in method.heads.parameters():
            p.add_(torch.randn_like(p))
    ema, heads = _snapshot(method.ema_heads), _snapshot(method.heads)
    assert not all(torch.equal(a, b) for a, b in zip(ema, heads))  # independent initialisations
    method.after_generator_step()
    for p, e, h in zip(method.ema_heads.parameters(), ema, heads):
        assert torch.allclose(p, 0.9 * e + 0.1 * h, atol=1e-7)


# -- batching --------------------------------------------------------------------------------------
def test_batch_of_two_equals_two_batches_of_one_with_fixed_noise():
    G, method, encode, pair = _setup(batch=2)
    n_layers = len(cut_layer_ids(2))
    torch.manual_seed(99)
    noise = [torch.randn(2, 16, 64) for _ in range(2 * n_layers)]  # (source, identity) x layers

    def run(sl):
        queue = iter([z[sl] for z in noise] * 2)  # same noise for the N step and the G step
        method.draw_noise = lambda batch, count, device: next(queue)
        part = encoder_pair(encode, source=pair.source[sl], output=pair.output[sl],
                               target=pair.target[sl], identity=pair.identity[sl])
        with torch.no_grad():
            torch.manual_seed(123)  # same sampled locations for every call
            n_loss = method.negative_objective(method.encode_views(part))[0]
            torch.manual_seed(123)
            g_loss = sum(method.generator_losses(part).values())
        return n_loss, g_loss

    both = run(slice(0, 2))
    one, two = run(slice(0, 1)), run(slice(1, 2))
    for i in range(2):
        assert torch.allclose(both[i], 0.5 * (one[i] + two[i]), atol=1e-5)
    method.params.nce_includes_all_negatives_from_minibatch = True
    mixed = run(slice(0, 2))
    assert not torch.allclose(mixed[1], 0.5 * (one[1] + two[1]), atol=1e-4)


def test_noise_comes_from_the_global_torch_rng():
    G, method, encode, pair = _setup(batch=1, nce_idt=False)

    def loss(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return method.generator_losses(pair)["NCE"]

    assert torch.equal(loss(1), loss(1))
    assert not torch.equal(loss(1), loss(2))


# -- options ---------------------------------------------------------------------------------------
def test_presets_and_defaults_are_the_official_ones():
    assert NEGCUT.presets["negcut"] == {}
    assert NEGCUT.presets["fastnegcut"] == {"lambda_NCE": 10.0, "nce_idt": False, "flip_equivariance": True}
    assert find_method("negcut") == (NEGCUT, "negcut") and find_method("fastnegcut") == (NEGCUT, "fastnegcut")
    p = NEGCUTParams()
    assert (p.lambda_NCE, p.nce_idt, p.nce_T, p.num_patches, p.netF_nc, p.lambda_MS_neg, p.z_dim, p.ema_decay) == \
        (1.0, True, 0.07, 256, 256, 1.0, 64, 0.9)
    assert p.lr_N is None and not p.flip_equivariance and not p.nce_includes_all_negatives_from_minibatch
    negcut, fast = NEGCUT(p), NEGCUT(NEGCUTParams(**NEGCUT.presets["fastnegcut"]))
    assert negcut.uses_identity and not negcut.flips_input
    assert not fast.uses_identity and fast.flips_input
    # N's optimiser follows the task's lr (the official --lr_N is unused) unless lr_N is set.
    G, method, encode, pair = _setup(batch=1)
    assert method.optimizers["negative_generator"].param_groups[0]["lr"] == 2e-4
    heads_params = method.optimizers["heads"].param_groups[0]["params"]
    assert {id(q) for q in heads_params} == {id(q) for q in method.heads.parameters()}
    method.params.lr_N = 1e-3
    method.build_optimizers(DEFAULTS)
    assert method.optimizers["negative_generator"].param_groups[0]["lr"] == 1e-3


# -- in the task (bit-exact resume: test_resume.py) -----------------------------------------------------
def test_negcut_in_the_single_modal_task_steps_its_heads_negative_generator_and_ema_heads(tmp_path):
    suite = suite_from_dict(tiny_suite_dict(tmp_path, methods=("negcut",), steps=4), base_dir=tmp_path)
    task = Runner(suite).build_task(expand(suite)[0])
    initial = {k: v.clone() for k, v in task.method.state_dict().items()}
    for _ in range(2):
        values = task.train_step()
        for key in ("NCE", "NCE_Y", "N", "N_div"):
            assert math.isfinite(values[key])
    final = task.method.state_dict()
    for prefix in ("heads.", "ema_heads.", "negative_generator."):
        keys = [k for k in final if k.startswith(prefix)]
        assert keys and all(not torch.equal(final[k], initial[k]) for k in keys if k.endswith("weight"))
    assert set(task.method.optimizers) == {"heads", "negative_generator"}
