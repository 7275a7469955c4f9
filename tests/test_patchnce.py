"""PatchNCE (CUT) computed by hand, key detachment and per-image batching."""
import math

import torch

from tasks.feature_sources import encoder_pair
from methods.cut import CUT, CUTParams
from methods.shared.nce import patch_nce
from tasks.networks import ResnetGenerator, cut_layer_ids


def test_patch_nce_matches_hand_computation():
    q = torch.tensor([[[0.6, 0.8], [1.0, 0.0]]])
    k = torch.tensor([[[0.0, 1.0], [0.8, 0.6]]])
    tau = 0.5
    # query 0: positive q0.k0 = 0.8; negatives: own entry -10, q0.k1 = 0.48 + 0.48 = 0.96
    # query 1: positive q1.k1 = 0.8; negatives: q1.k0 = 0.0, own entry -10
    expected0 = -math.log(math.exp(0.8 / tau) / (math.exp(0.8 / tau) + math.exp(-10 / tau) + math.exp(0.96 / tau)))
    expected1 = -math.log(math.exp(0.8 / tau) / (math.exp(0.8 / tau) + math.exp(0.0 / tau) + math.exp(-10 / tau)))
    loss = patch_nce(q, k, tau)
    assert loss.shape == (1, 2)
    assert torch.allclose(loss, torch.tensor([[expected0, expected1]]), atol=1e-6)


def test_batch_of_two_equals_two_batches_of_one_with_per_image_negatives():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(2, 5, 4), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(2, 5, 4), dim=-1)
    both = patch_nce(q, k)
    separate = torch.cat([patch_nce(q[:1], k[:1]), patch_nce(q[1:], k[1:])])
    assert torch.allclose(both, separate, atol=1e-6)
    # With negatives from the whole minibatch the images interact, so the values must differ.
    mixed = patch_nce(q, k, negatives_from_minibatch=True)
    assert not torch.allclose(mixed, separate, atol=1e-4)


def _cut_setup(batch=2, **params):
    torch.manual_seed(0)
    G = ResnetGenerator(3, 3, ngf=8, n_blocks=2)
    layers = cut_layer_ids(2)
    method = CUT(CUTParams(num_patches=16, **params))
    encode = lambda x: G(x, layers, encode_only=True)  # noqa: E731
    x = torch.rand(batch, 3, 32, 32) * 2 - 1
    y = torch.rand(batch, 3, 32, 32) * 2 - 1
    method.initialize(encoder_pair(encode, source=x, output=x))
    return G, method, encode, x, y


def test_keys_get_no_gradient_and_heads_do():
    G, method, encode, x, y = _cut_setup(nce_idt=False)
    source = x.clone().requires_grad_(True)
    output = G(x)
    output.retain_grad()
    loss = method.generator_losses(encoder_pair(encode, source=source, output=output))["NCE"]
    loss.backward()
    assert source.grad is None or torch.count_nonzero(source.grad) == 0
    assert torch.count_nonzero(output.grad) > 0
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in method.heads.parameters())


def test_cut_loss_batch_of_two_equals_mean_of_two_batches_of_one():
    G, method, encode, x, y = _cut_setup(nce_idt=True)
    with torch.no_grad():
        out = G(torch.cat([x, y]))
        fake, idt = out[:2], out[2:]

    def loss(sl):
        torch.manual_seed(123)  # same sampled locations for every call
        pair = encoder_pair(encode, source=x[sl], output=fake[sl], target=y[sl], identity=idt[sl])
        return sum(method.generator_losses(pair).values())

    with torch.no_grad():
        both = loss(slice(0, 2))
        singles = 0.5 * (loss(slice(0, 1)) + loss(slice(1, 2)))
    assert torch.allclose(both, singles, atol=1e-5)


def test_cut_identity_term_and_fastcut_preset():
    assert CUT.presets["fastcut"] == {"lambda_NCE": 10.0, "nce_idt": False, "flip_equivariance": True}
    cut = CUT(CUTParams())
    fast = CUT(CUTParams(**CUT.presets["fastcut"]))
    assert cut.uses_identity and not cut.flips_input
    assert not fast.uses_identity and fast.flips_input
    defaults = CUTParams()
    assert (defaults.nce_T, defaults.num_patches, defaults.netF_nc, defaults.lambda_NCE) == (0.07, 256, 256, 1.0)


def test_locations_are_drawn_on_the_cpu_rng_and_placed_on_the_features_device():
    from methods.shared.patches import sample_locations

    feats = [torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 4, 4)]
    torch.manual_seed(5)
    ids = sample_locations(feats, 10)
    torch.manual_seed(5)
    expected = [torch.randperm(64)[:10], torch.randperm(16)[:10]]
    assert all(torch.equal(a, b) for a, b in zip(ids, expected))
    if torch.cuda.is_available():  # every device samples the same locations under one seed
        torch.manual_seed(5)
        on_gpu = sample_locations([f.cuda() for f in feats], 10)
        assert all(g.is_cuda and torch.equal(g.cpu(), a) for g, a in zip(on_gpu, ids))
