"""F-LSeSim: correlation maps and losses by hand, gradient routing, batching, jitter, presets, smoke."""
import copy
import dataclasses
import math

import pytest
import torch
import torchvision.transforms as T

from benchmark.config import suite_from_dict
from benchmark.runner import Runner, expand
from methods.base import OptimizerDefaults
from tasks.feature_sources import encoder_pair
from methods.flsesim import (FLSeSim, FLSeSimParams, PairFeatures, color_jitter, correlation_map, map_nce,
                             structure_loss, window_key_ids)
from tasks.networks import ResnetGenerator

from conftest import tiny_suite_dict

# A 2-channel 3x3 feature map with easy numbers.
FEAT = torch.tensor([[[1., 2., 0.], [0., 4., 2.], [3., 0., 6.]],
                     [[0., 1., 1.], [2., 0., 3.], [1., 1., 0.]]]).unsqueeze(0)


def _naive_map(feat, ids, patch_size, use_norm=False):
    """Loop implementation of the official PatchSim on one image."""
    _, c, h, w = feat.shape
    f = feat[0] - feat[0].mean(dim=(1, 2), keepdim=True)
    rows = []
    for q in ids:
        r, col = divmod(int(q), w)
        if patch_size < h and patch_size < w:
            top = min(max(r - patch_size // 2, 0), h - patch_size)
            left = min(max(col - patch_size // 2, 0), w - patch_size)
            keys = [(i, j) for i in range(top, top + patch_size) for j in range(left, left + patch_size)]
        else:
            keys = [(i, j) for i in range(h) for j in range(w)]
        row = []
        for i, j in keys:
            a, b = f[:, r, col], f[:, i, j]
            if use_norm:
                row.append(float(a @ b / (a.norm().clamp_min(1e-12) * b.norm().clamp_min(1e-12))))  # F.normalize
            else:
                row.append(math.tanh(float(a @ b) / c / 10))
        rows.append(row)
    return torch.tensor(rows).unsqueeze(0)


def test_correlation_map_by_hand_centring_and_scaling():
    # Channel means: (1+2+0+0+4+2+3+0+6)/9 = 2 and (0+1+1+2+0+3+1+1+0)/9 = 1.
    # Centred features at (0,0): (-1, -1); at (1,1): (2, -1); at (2,2): (4, -1).
    ids = torch.tensor([0, 4])  # queries (0,0) and (1,1), whole-map keys (patch_size 64 >= 3)
    sim = correlation_map(FEAT, ids, patch_size=64, use_norm=False)
    assert sim.shape == (1, 2, 9)
    # (0,0).(1,1) = -2 + 1 = -1, / C = 2 -> -0.5, tanh(-0.05); (1,1).(2,2) = 8 + 1 = 9 -> tanh(0.45)
    assert sim[0, 0, 4].item() == pytest.approx(math.tanh(-0.05), abs=1e-6)
    assert sim[0, 1, 8].item() == pytest.approx(math.tanh(0.45), abs=1e-6)
    assert torch.allclose(sim, _naive_map(FEAT, ids, 64), atol=1e-6)
    cos = correlation_map(FEAT, ids, patch_size=64, use_norm=True)
    # cosine of (2,-1) and (4,-1): 9 / (sqrt(5) sqrt(17))
    assert cos[0, 1, 8].item() == pytest.approx(9 / math.sqrt(5 * 17), abs=1e-6)
    assert torch.allclose(cos, _naive_map(FEAT, ids, 64, use_norm=True), atol=1e-6)


def test_correlation_map_windows_are_clamped_at_the_borders():
    # patch_size 2 on a 3x3 map: the window starts at clamp(pos - 1, 0, 1) in each direction.
    assert window_key_ids(torch.tensor([0]), 3, 3, 2).tolist() == [[0, 1, 3, 4]]   # corner (0,0)
    assert window_key_ids(torch.tensor([8]), 3, 3, 2).tolist() == [[4, 5, 7, 8]]   # corner (2,2)
    assert window_key_ids(torch.tensor([4]), 3, 3, 2).tolist() == [[0, 1, 3, 4]]   # centre: 1 - 1 = 0
    assert window_key_ids(torch.tensor([5]), 3, 3, 2).tolist() == [[1, 2, 4, 5]]   # (1,2): left 1
    ids = torch.tensor([0, 4, 5, 8, 6])
    sim = correlation_map(FEAT, ids, patch_size=2, use_norm=False)
    assert sim.shape == (1, 5, 4)
    assert torch.allclose(sim, _naive_map(FEAT, ids, 2), atol=1e-6)
    # A window as large as the map falls back to whole-map keys.
    assert correlation_map(FEAT, ids, patch_size=3, use_norm=False).shape == (1, 5, 9)


def test_window_rows_on_non_square_maps_and_official_switch():
    feat = torch.randn(1, 3, 2, 4)
    # id 3 of a 2x4 map is row 0, col 3; a 1x1 window is the query itself.
    assert window_key_ids(torch.tensor([3]), 2, 4, 1).tolist() == [[3]]
    # The official code takes row = id // height = 1, col = id % height = 1: key 1 * 4 + 1 = 5.
    assert window_key_ids(torch.tensor([3]), 2, 4, 1, official_rows=True).tolist() == [[5]]
    own = correlation_map(feat, torch.tensor([3]), patch_size=1, use_norm=False)
    centred = feat[0] - feat[0].mean(dim=(1, 2), keepdim=True)
    f3 = centred[:, 0, 3]
    assert own.item() == pytest.approx(math.tanh(float(f3 @ f3) / 3 / 10), abs=1e-6)


def test_cos_structure_loss_keeps_top_quarter_by_hand():
    tgt = torch.tensor([[[0.9, 0.1, 0.5, 0.7, -0.2, 0.3, 0.0, 0.6]]])
    src = torch.tensor([[[0.8, 0.9, 0.1, 0.4, 0.5, -0.3, 0.2, 0.6]]])
    # N = 8, num = 2: keep entries >= the 3rd largest of tgt (0.6): positions 0, 3, 7.
    s, t = [0.8, 0.4, 0.6], [0.9, 0.7, 0.6]
    dot = sum(a * b for a, b in zip(s, t))
    cos = dot / (math.sqrt(sum(a * a for a in s)) * math.sqrt(sum(b * b for b in t)))
    # default (use_norm off): SmoothL1(1, cos) = 0.5 (1 - cos)^2 as |1 - cos| < 1
    assert structure_loss(src, tgt, "cos", use_norm=False).item() == pytest.approx(0.5 * (1 - cos) ** 2, rel=1e-5)
    assert structure_loss(src, tgt, "cos", use_norm=True).item() == pytest.approx(1 - cos, rel=1e-5)
    # 'l1': L1 of the masked maps scaled by N / num = 4, averaged over the 8 entries.
    l1 = sum(abs(4 * a - 4 * b) for a, b in zip(s, t)) / 8
    assert structure_loss(src, tgt, "l1", use_norm=True).item() == pytest.approx(l1, rel=1e-5)
    # Without the mask the value would differ (the mask matters).
    full_cos = torch.nn.functional.cosine_similarity(src, tgt, dim=-1).item()
    assert abs(full_cos - cos) > 1e-2


def test_map_nce_matches_a_naive_loop():
    torch.manual_seed(0)
    s, t, o = torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    tau = 0.07
    got = map_nce(s, t, o, tau)
    n = torch.nn.functional.normalize
    for b in range(2):
        sb, tb, ob = n(s[b], dim=-1), n(t[b], dim=-1), n(o[b], dim=-1)
        for i in range(3):
            logits = [float(sb[i] @ tb[j]) / tau for j in range(3)]
            logits += [float(sb[i] @ ob[j]) / tau for j in range(3)]
            logits += [float(tb[i] @ ob[j]) / tau for j in range(3)]
            expected = -logits[i] + math.log(sum(math.exp(x) for x in logits))
            assert got[b, i].item() == pytest.approx(expected, rel=1e-4)


@pytest.fixture(scope="module")
def initialized():
    """One initialised method per preset (building a VGG16 is the slow part); tests use copies."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    out = {}
    for preset in ("fsesim", "lsesim"):
        method = FLSeSim(FLSeSimParams(**{**FLSeSim.presets[preset], "vgg_weights": "untrained"}))
        method.initialize(encoder_pair(lambda z: [z], source=x, output=x, target=x))
        out[preset] = method
    return out


@pytest.fixture
def make_method(initialized):
    def make(preset="fsesim", batch=2, size=16, **params):
        torch.manual_seed(0)
        G = ResnetGenerator(3, 3, ngf=8, n_blocks=2)
        method = copy.deepcopy(initialized[preset])
        method.params = dataclasses.replace(method.params, **params)
        method.build_optimizers(OptimizerDefaults(1e-4, (0.5, 0.999)))
        x = torch.rand(batch, 3, size, size) * 2 - 1
        y = torch.rand(batch, 3, size, size) * 2 - 1
        encode = lambda z: G(z, [0], encode_only=True)  # noqa: E731
        return G, method, encode, x, y
    return make


def test_vgg_frozen_and_generator_gets_gradient(make_method):
    G, method, encode, x, y = make_method("fsesim")
    assert "heads" not in method.optimizers and method.heads is None
    fake = G(x)
    loss = method.generator_losses(encoder_pair(encode, source=x, output=fake, target=y))["G_s"]
    loss.backward()
    vgg_params = list(method.vgg.features.parameters())
    assert len(vgg_params) == 20  # the conv weights and biases up to relu4_3
    assert all(not p.requires_grad and p.grad is None for p in vgg_params)
    assert all(p.grad is not None for p in G.parameters())
    assert sum(float(p.grad.abs().sum()) for p in G.parameters()) > 0
    assert method.protocol_notes() == {"backbone": "VGG16 (UNTRAINED: random weights)"}


def test_lsesim_head_step_trains_only_heads_and_generator_loss_gives_heads_no_gradient(make_method):
    G, method, encode, x, y = make_method("lsesim")
    assert set(method.optimizers) == {"attn"}  # never stepped with the generator
    heads_before = [p.detach().clone() for p in method.heads.parameters()]
    vgg_before = [p.detach().clone() for p in method.vgg.features.parameters()]
    fake = G(x)
    pair = encoder_pair(encode, source=x, output=fake, target=y)
    aux = method.auxiliary_step(pair)
    assert math.isfinite(aux.logs["spatial"])
    assert all(p.grad is None for p in G.parameters())  # G(x) was detached for the heads' loss
    assert all(not torch.equal(a, b) for a, b in zip(heads_before, method.heads.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(vgg_before, method.vgg.features.parameters()))
    method.optimizers["attn"].zero_grad(set_to_none=True)
    loss = method.generator_losses(pair, aux.computed)["G_s"]  # as the task calls it
    loss.backward()
    assert all(p.grad is None for p in method.heads.parameters())
    assert all(p.grad is None for p in method.vgg.features.parameters())
    assert sum(float(p.grad.abs().sum()) for p in G.parameters() if p.grad is not None) > 0


def test_generator_loss_uses_the_updated_heads_and_features_of_the_head_step_match_fresh_ones(make_method):
    G, method, encode, x, y = make_method("lsesim")
    with torch.no_grad():
        fake = G(x)
    pair = encoder_pair(encode, source=x, output=fake, target=y)
    torch.manual_seed(2)
    before = method.generator_losses(pair)["G_s"]
    torch.manual_seed(1)
    aux = method.auxiliary_step(pair)
    assert isinstance(aux.computed, PairFeatures)
    torch.manual_seed(2)
    passed = method.generator_losses(pair, aux.computed)["G_s"]  # the features of auxiliary_step
    torch.manual_seed(2)
    fresh = method.generator_losses(pair)["G_s"]  # recomputes them
    assert torch.allclose(passed, fresh, atol=1e-6)
    assert not torch.allclose(before, fresh, atol=1e-6)
    # The loss comes from the features passed: those of another pair give that pair's loss.
    torch.manual_seed(2)
    from_other = method.generator_losses(pair, method.pair_features(y, fake))["G_s"]
    torch.manual_seed(2)
    other = method.generator_losses(encoder_pair(encode, source=y, output=fake, target=y))["G_s"]
    assert torch.allclose(from_other, other, atol=1e-6)
    assert not torch.allclose(from_other, fresh, atol=1e-4)


def test_fsesim_has_no_head_step(make_method):
    G, method, encode, x, y = make_method("fsesim")
    aux = method.auxiliary_step(encoder_pair(encode, source=x, output=G(x), target=y))
    assert aux.logs == {} and aux.computed is None


@pytest.mark.parametrize("preset", ["fsesim", "lsesim"])
def test_batch_of_two_equals_two_batches_of_one(make_method, preset):
    G, method, encode, x, y = make_method(preset, size=32, augment=False, patch_size=4, patch_nums=6)
    with torch.no_grad():
        fake = G(x)

    def losses(sl):
        pair = encoder_pair(encode, source=x[sl], output=fake[sl], target=y[sl])
        torch.manual_seed(3)
        g = method.generator_losses(pair)["G_s"]
        torch.manual_seed(3)
        h = method.head_loss(pair) if method.heads is not None else g
        return g, h

    with torch.no_grad():
        both = losses(slice(0, 2))
        one, two = losses(slice(0, 1)), losses(slice(1, 2))
    for k in range(2):
        assert torch.allclose(both[k], 0.5 * (one[k] + two[k]), atol=1e-6)
    assert not torch.allclose(one[0], two[0], atol=1e-4)


def test_identity_terms(make_method):
    G, method, encode, x, y = make_method("fsesim", lambda_spatial_idt=2.0, lambda_identity=0.5)
    assert method.uses_identity and not make_method("fsesim")[1].uses_identity
    with torch.no_grad():
        out = G(torch.cat([x, y]))
        pair = encoder_pair(encode, source=x, output=out[:2], target=y, identity=out[2:])
        torch.manual_seed(4)
        terms = method.generator_losses(pair)
        torch.manual_seed(4)
        method.spatial_loss(x, out[:2])  # same random draws as the G_s term
        idt_spatial = method.spatial_loss(y, out[2:])
    assert set(terms) == {"G_s", "G_s_idt_B", "idt_B"}
    assert torch.allclose(terms["G_s_idt_B"], 2.0 * idt_spatial)
    assert torch.allclose(terms["idt_B"], 0.5 * (y - out[2:]).abs().mean())


def test_color_jitter_matches_torchvision_per_image_with_torch_rng():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    torch.manual_seed(7)
    ours = color_jitter(x)
    torch.manual_seed(7)
    jitter = T.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.3)
    ref = torch.stack([jitter((img + 1) / 2) for img in x]) * 2 - 1
    assert torch.allclose(ours, ref, atol=1e-6)
    assert not torch.allclose(ours, x, atol=1e-2)
    torch.manual_seed(7)
    assert torch.equal(color_jitter(x), ours)  # deterministic given the global torch RNG
    assert ours.min() >= -1 and ours.max() <= 1


def test_presets_and_defaults_are_the_official_values(make_method):
    d = FLSeSimParams()
    assert (d.lambda_spatial, d.patch_nums, d.patch_size, d.loss_mode, d.use_norm, d.T) == \
        (10.0, 256, 64, "cos", False, 0.07)
    assert d.attn_layers == ["relu3_1", "relu4_1", "relu4_3"]
    assert (d.learned_attn, d.augment, d.lambda_spatial_idt, d.lambda_identity) == (False, False, 0.0, 0.0)
    assert FLSeSim.presets == {"fsesim": {}, "lsesim": {"learned_attn": True, "augment": True, "patch_size": 32}}
    assert FLSeSim.task_defaults == {"lr": 1e-4, "pool_size": 50}
    assert FLSeSimParams(augment=True).validate() is not None
    _, method, _, _, _ = make_method("lsesim", batch=1)
    # Heads: C -> max(32, C // 4) -> same, on relu3_1 (256), relu4_1 and relu4_3 (512).
    widths = [(conv[0].in_channels, conv[0].out_channels, conv[2].out_channels) for conv in method.heads.convs]
    assert widths == [(256, 64, 64), (512, 128, 128), (512, 128, 128)]


def _suite(tmp_path, name, preset, steps=4):
    method = {"name": preset, "params": {"vgg_weights": "untrained"}}
    d = tiny_suite_dict(tmp_path / name, methods=(method,), steps=steps)
    suite = suite_from_dict(d, base_dir=tmp_path)
    return suite, expand(suite)[0]


def test_only_the_learned_variant_checkpoints_modules_and_never_the_frozen_vgg(tmp_path):
    """LSeSim's heads are the method's state; FSeSim has none; the frozen VGG16 is rebuilt, not saved
    (training and resume: test_runner.py's registry smoke test, test_resume.py)."""
    for preset in ("lsesim", "fsesim"):
        suite, run = _suite(tmp_path, preset, preset)
        state = Runner(suite).build_task(run).method.state_dict()
        assert not any(k.startswith("vgg.") for k in state)
        assert any(k.startswith("heads.") for k in state) == (preset == "lsesim")


@pytest.mark.parametrize("weights,text", [("imagenet", "VGG16 (ImageNet)"),
                                          ("untrained", "VGG16 (UNTRAINED: random weights)")])
def test_vgg_methods_name_their_backbone_before_it_is_built(weights, text):
    from methods.graphcl import GraphCL, GraphCLParams
    assert FLSeSim(FLSeSimParams(vgg_weights=weights)).protocol_notes() == {"backbone": text}
    assert GraphCL(GraphCLParams(vgg_weights=weights)).protocol_notes() == {"backbone": text}
