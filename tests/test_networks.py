"""Tests of the CUT-framework networks (tasks/networks.py) against facts of the official
CUT code (taesungp/contrastive-unpaired-translation, models/networks.py)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.errors import ConfigError
from tasks.networks import (
    Downsample, GANLoss, NLayerDiscriminator, ResnetBlock, ResnetGenerator, Upsample, cut_layer_ids,
    get_filter, get_norm_layer, init_weights)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def gen9():
    torch.manual_seed(0)
    return init_weights(ResnetGenerator(), "xavier", 0.02).eval()


@pytest.fixture(scope="module")
def x64():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_generator_output_shape_and_range(gen9, x64):
    with torch.no_grad():
        y = gen9(x64)
    assert y.shape == x64.shape
    assert y.abs().max() < 1 and y.std() > 0  # tanh output, not constant


def test_generator_layer_sequence_and_param_count(gen9):
    # 4 stem + 2x4 antialiased down + 9 blocks + 2x4 antialiased up + pad/conv/tanh = 32 layers
    assert len(gen9.model) == 32
    types = [type(m) for m in gen9.model]
    assert types[:12] == [nn.ReflectionPad2d, nn.Conv2d, nn.InstanceNorm2d, nn.ReLU,
                          nn.Conv2d, nn.InstanceNorm2d, nn.ReLU, Downsample,
                          nn.Conv2d, nn.InstanceNorm2d, nn.ReLU, Downsample]
    assert types[12:21] == [ResnetBlock] * 9
    assert types[21:] == ([Upsample, nn.Conv2d, nn.InstanceNorm2d, nn.ReLU] * 2
                          + [nn.ReflectionPad2d, nn.Conv2d, nn.Tanh])
    norm = gen9.model[2]
    assert not norm.affine and not norm.track_running_stats
    # 9408+64 + 73728+128 + 294912+256 + 9*2*(589824+256) + 294912+128 + 73728+64 + 9408+3 (instance
    # norm -> every conv has a bias); the "11.38M" of the CycleGAN/CUT ResNet-9 generator
    assert n_params(gen9) == 11_378_179
    # the parameter count does not depend on the (parameter-free) antialiasing choice
    assert n_params(ResnetGenerator(antialias=False, antialias_up=False)) == 11_378_179
    # batch norm: no conv biases (official use_bias rule) but 2 affine params per channel
    normed = 64 + 128 + 256 + 9 * 2 * 256 + 128 + 64  # channels of the 23 norm layers
    assert n_params(ResnetGenerator(norm="batch")) == 11_378_179 - normed + 2 * normed  # 11,383,427


def test_nce_layer_indices_9_blocks(gen9, x64):
    """CUT's nce_layers 0,4,8,12,16. In the official antialiased generator index 4 is the stride-1
    conv that *starts* down block 1 (before its blur-pool), so it is at full resolution, and index 8
    (start of down block 2) is at H/2; only the residual blocks are at H/4."""
    layers = [0, 4, 8, 12, 16]
    assert [type(gen9.model[i]) for i in layers] == [nn.ReflectionPad2d, nn.Conv2d, nn.Conv2d,
                                                      ResnetBlock, ResnetBlock]
    blocks = [i for i, m in enumerate(gen9.model) if isinstance(m, ResnetBlock)]
    assert blocks.index(12) == 0 and blocks.index(16) == 4  # ResnetBlock 1 and 5 (of 9)
    assert gen9.encoder_shapes(layers, 64) == [(3, 70, 70), (128, 64, 64), (256, 32, 32),
                                               (256, 16, 16), (256, 16, 16)]
    assert gen9.encoder_channels(layers) == [3, 128, 256, 256, 256]
    with torch.no_grad():
        feats = gen9(x64, layers, encode_only=True)
    # layer 0 is just the reflection-padded input
    assert torch.equal(feats[0], F.pad(x64, (3, 3, 3, 3), mode="reflect"))


def test_cut_layer_ids():
    assert cut_layer_ids(9) == [0, 4, 8, 12, 16]
    assert cut_layer_ids(6) == [0, 4, 8, 12, 14]
    assert cut_layer_ids(4) == [0, 4, 8, 12, 13]
    assert cut_layer_ids(2) == [0, 4, 8, 12]  # block 1 is also the middle one: deduplicated
    assert cut_layer_ids(0) == [0, 4, 8]
    assert cut_layer_ids(9, antialias=False) == [0, 4, 7, 10, 14]
    for n in (2, 4):
        g = ResnetGenerator(ngf=8, n_blocks=n)
        ids = cut_layer_ids(n)
        assert [type(g.model[i]) for i in ids[3:]] == [ResnetBlock] * len(ids[3:])
        assert g.encoder_shapes(ids, 32)[1:3] == [(16, 32, 32), (32, 16, 16)]
    g = ResnetGenerator(ngf=8, n_blocks=9, antialias=False)
    ids = cut_layer_ids(9, antialias=False)
    assert [type(g.model[i]) for i in ids] == [nn.ReflectionPad2d, nn.Conv2d, nn.Conv2d,
                                               ResnetBlock, ResnetBlock]
    assert g.encoder_shapes(ids, 32)[1:3] == [(16, 16, 16), (32, 8, 8)]


def test_encode_only_matches_manual_prefix(x64):
    torch.manual_seed(0)
    g = init_weights(ResnetGenerator(ngf=8, n_blocks=4), "normal", 0.2).eval()
    layers = cut_layer_ids(4) + [17, 25]  # + first up-conv and the last conv (before tanh)
    with torch.no_grad():
        feats = g(x64, layers, encode_only=True)
        assert len(feats) == len(layers)
        for i, f in zip(layers, feats):
            assert torch.allclose(f, g.model[:i + 1](x64), atol=1e-6), i
        # official in-place ReLU quirk: a feature taken at a norm layer (18) that feeds a ReLU comes
        # back rectified, unlike model[:19] run by hand, whenever the forward goes on past it
        f18 = g(x64, [18, 25], encode_only=True)[0]
        assert torch.allclose(f18, g.model[:20](x64), atol=1e-6)
        assert not torch.allclose(f18, g.model[:19](x64), atol=1e-3)
        out, feats2 = g(x64, layers)
        assert torch.allclose(out, g(x64), atol=1e-6)
        assert len(feats2) == len(layers) and all(torch.equal(a, b) for a, b in zip(feats, feats2))
    # encode_only stops right after the last requested layer
    calls = []
    handles = [g.model[i].register_forward_hook(lambda *a, i=i: calls.append(i)) for i in (25, 26)]
    with torch.no_grad():
        g(x64, [4, 25], encode_only=True)
        assert calls == [25]
        g(x64, [4, 25])
        assert calls == [25, 25, 26]
    for h in handles:
        h.remove()
    for bad in ([4, 0], [0, 0], [-1], [len(g.model)]):
        with pytest.raises(ValueError):
            g(x64, bad, encode_only=True)


def test_blur_filter_and_downsample():
    a = torch.tensor([1.0, 2.0, 1.0])
    assert torch.equal(get_filter(3), torch.outer(a, a) / 16)
    b = torch.tensor([1.0, 3.0, 3.0, 1.0])
    assert torch.allclose(get_filter(4), torch.outer(b, b) / 64)
    down = Downsample(5)
    assert down.filt.shape == (5, 1, 3, 3) and isinstance(down.pad, nn.ReflectionPad2d)
    x = torch.full((2, 5, 16, 12), 0.7)
    y = down(x)
    assert y.shape == (2, 5, 8, 6) and torch.allclose(y, x[:, :, ::2, ::2])
    # and it low-passes: a checkerboard (Nyquist) is strongly damped, unlike plain subsampling
    board = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1
    assert down(board.expand(1, 5, 16, 16)).abs().max() < 0.5


def test_upsample_constant_and_size():
    up = Upsample(4)
    assert up.filt.shape == (4, 1, 4, 4) and torch.allclose(up.filt.sum((2, 3)), torch.full((4, 1), 4.0))
    y = up(torch.full((1, 4, 5, 7), -0.3))
    assert y.shape == (1, 4, 10, 14) and torch.allclose(y, torch.full_like(y, -0.3))


def test_discriminator_shape_and_params():
    """Antialiased PatchGAN on 64x64: conv k4 s1 p1 64->63, blur-pool 63->32; 32->31->16; 16->15->8;
    conv k4 s1 p1 8->7; final conv 7->6. So a 6x6 map (S/8 - 2; 30x30 for 256x256 inputs)."""
    torch.manual_seed(0)
    d = init_weights(NLayerDiscriminator(), "xavier", 0.02)
    assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    assert d(torch.randn(1, 3, 128, 128)).shape == (1, 1, 14, 14)
    assert NLayerDiscriminator(antialias=False)(torch.randn(1, 3, 64, 64)).shape == (1, 1, 6, 6)
    assert sum(isinstance(m, Downsample) for m in d.modules()) == 3
    # 3136 + 131200 + 524544 + 2097664 + 8193 (instance norm -> biases everywhere)
    assert n_params(d) == 2_764_737


def test_init_weights_xavier_and_batchnorm():
    torch.manual_seed(0)
    g = init_weights(ResnetGenerator(n_blocks=2, norm="batch"), "xavier", 0.02)
    conv = g.model[12].conv_block[1]  # 256 -> 256, 3x3
    fan = 256 * 9
    assert math.isclose(conv.weight.std().item(), 0.02 * math.sqrt(2 / (fan + fan)), rel_tol=0.02)
    assert abs(conv.weight.mean().item()) < 1e-5
    assert conv.weight.abs().max() > 4 * conv.weight.std()  # normal tails: not xavier_uniform
    last = g.model[-2]  # 64 -> 3, 7x7, the only conv with a bias under batch norm
    assert last.bias is not None and torch.count_nonzero(last.bias) == 0
    assert conv.bias is None
    bn = g.model[2]
    assert isinstance(bn, nn.BatchNorm2d) and torch.count_nonzero(bn.bias) == 0
    assert abs(bn.weight.mean().item() - 1) < 0.01 and 0.01 < bn.weight.std().item() < 0.03
    # instance norm: every conv has a zero bias; the blur buffers are untouched
    g2 = init_weights(ResnetGenerator(ngf=8, n_blocks=1), "normal", 0.02)
    convs = [m for m in g2.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is not None and torch.count_nonzero(c.bias) == 0 for c in convs)
    assert torch.equal(g2.model[7].filt[0, 0], get_filter(3))
    for kind in ("kaiming", "orthogonal"):
        init_weights(g2, kind)
    with pytest.raises(ConfigError):
        init_weights(g2, "uniform")


def test_gan_losses_by_hand():
    pred = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])  # (1, 1, 2, 2)
    ls = GANLoss("lsgan")
    assert math.isclose(ls(pred, True).item(), ((0.5 - 1) ** 2 + 4 + 1 + 1) / 4)
    assert math.isclose(ls(pred, False).item(), (0.25 + 1 + 4 + 0) / 4)
    v = [0.5, -1.0, 2.0, 0.0]
    sp = lambda t: math.log1p(math.exp(t))  # noqa: E731
    assert math.isclose(GANLoss("vanilla")(pred, True).item(), sum(sp(-t) for t in v) / 4, rel_tol=1e-6)
    assert math.isclose(GANLoss("vanilla")(pred, False).item(), sum(sp(t) for t in v) / 4, rel_tol=1e-6)
    assert math.isclose(GANLoss("nonsaturating")(pred, True).item(), sum(sp(-t) for t in v) / 4, rel_tol=1e-6)
    assert math.isclose(GANLoss("wgangp")(pred, True).item(), -0.375)
    hinge = GANLoss("hinge")
    assert math.isclose(hinge(pred, True).item(), (0.5 + 2 + 0 + 1) / 4)
    assert math.isclose(hinge(pred, False).item(), (1.5 + 0 + 3 + 1) / 4)
    assert math.isclose(hinge(pred, True, for_discriminator=False).item(), -0.375)
    with pytest.raises(ConfigError):
        GANLoss("relativistic")


def test_norm_layers():
    inst = get_norm_layer("instance")(8)
    assert isinstance(inst, nn.InstanceNorm2d) and not inst.affine and not inst.track_running_stats
    bn = get_norm_layer("batch")(8)
    assert isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.track_running_stats
    assert isinstance(get_norm_layer("none")(8), nn.Identity)
    # official quirk: with norm='none' the convs before the (identity) norm have no bias
    g = ResnetGenerator(ngf=8, n_blocks=1, norm="none")
    assert g.model[1].bias is None and g.model[-2].bias is not None
    with pytest.raises(ConfigError):
        get_norm_layer("group")
