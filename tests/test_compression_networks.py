"""The GAN-compression networks (tasks/compression/networks.py) against facts of Fast GAN Compression
(mit-han-lab/gan-compression: super_mobile_resnet_generator.py, super_modules.py,
sub_mobile_resnet_generator.py, export.py, configs/resnet_configs.py, base_resnet_distiller.py)."""
import random

import pytest
import torch
from torch import nn

from benchmark.core.errors import ConfigError
from benchmark.core.metrics.macs import count_macs, count_parameters
from tasks.compression.networks import (
    CHANNEL_CHOICES, DistillMappings, MobileResnetGenerator, SuperConv2d, SuperConvTranspose2d,
    SuperMobileResnetBlock, SuperMobileResnetGenerator, SuperSeparableConv2d, _choice_weights, all_configs,
    check_config, config_space_size, decode_config, distill_layer_ids, distillation_loss, encode_config,
    export_subnet, largest_config, sample_config, smallest_config, subnet_macs, teacher_hook_layers)
from tasks.networks import ResnetGenerator, init_weights

PIX2PIX = CHANNEL_CHOICES["pix2pix"]


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    return init_weights(SuperMobileResnetGenerator(ngf=64, n_blocks=9), "normal", 0.02).eval()


@pytest.fixture(scope="module")
def teacher():
    """The teacher's layout at a small width (ngf 16; the layout does not depend on it)."""
    torch.manual_seed(1)
    return init_weights(ResnetGenerator(3, 3, 16, 9, "instance", antialias=False, antialias_up=False),
                        "normal", 0.02).eval()


@pytest.fixture(scope="module")
def small_supernet():
    torch.manual_seed(2)
    return init_weights(SuperMobileResnetGenerator(ngf=16, n_blocks=9), "normal", 0.02).eval()


def sampled_configs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [sample_config(PIX2PIX, g) for _ in range(n)]


# ------------------------------------------------------------------------------------------------
# Configuration space
# ------------------------------------------------------------------------------------------------
def test_official_choice_lists():
    assert CHANNEL_CHOICES["cyclegan"] == ((64, 48, 32, 24, 16),) * 8
    assert PIX2PIX == ((64, 56, 48, 40, 32, 24, 16),) * 8
    assert largest_config(PIX2PIX) == {"channels": [64] * 8}
    assert smallest_config(PIX2PIX) == {"channels": [16] * 8}
    assert config_space_size(CHANNEL_CHOICES["cyclegan"]) == 5 ** 8


def test_all_configs_enumerates_the_space_in_official_order():
    choices = [[2, 1]] + [[3]] * 6 + [[5, 4]]
    configs = [c["channels"] for c in all_configs(choices)]
    assert len(configs) == config_space_size(choices) == 4
    assert configs == [[2] + [3] * 6 + [5], [2] + [3] * 6 + [4], [1] + [3] * 6 + [5], [1] + [3] * 6 + [4]]


@pytest.mark.parametrize("make", [lambda: torch.Generator().manual_seed(3), lambda: random.Random(3)])
def test_sampler_is_seeded_and_draws_from_the_choices(make):
    a = [sample_config(PIX2PIX, g)["channels"] for g in [make()] for _ in range(20)]
    b = [sample_config(PIX2PIX, g)["channels"] for g in [make()] for _ in range(20)]
    assert a == b
    assert all(c in PIX2PIX[i] for channels in a for i, c in enumerate(channels))
    assert len({tuple(ch) for ch in a}) > 1


def test_weighted_sample_weights_as_official():
    # ChannelConfigs.sample: arithmetic starts at (n-1)/(w-1) and adds 1; geometric multiplies by w
    assert _choice_weights(5, 2.0, "arithmetic") == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert _choice_weights(3, 3.0, "geometric") == [1.0, 3.0, 9.0]
    assert _choice_weights(5, 1.0, "arithmetic") is None
    # favours the small widths: with geometric weight 1000 nearly every draw is the smallest
    g = torch.Generator().manual_seed(0)
    drawn = [sample_config(CHANNEL_CHOICES["cyclegan"], g, 1000.0, "geometric")["channels"] for _ in range(5)]
    assert sum(c == 16 for ch in drawn for c in ch) >= 38


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="8 positive ints"):
        check_config({"channels": [16] * 7})
    with pytest.raises(ConfigError, match="channel 2 is 20"):
        check_config({"channels": [16, 16, 20] + [16] * 5}, PIX2PIX)
    with pytest.raises(ConfigError, match="ngf 32"):
        check_config({"channels": [64] * 8}, ngf=32)
    assert decode_config("16_16_32_16_32_64_16_16") == {"channels": [16, 16, 32, 16, 32, 64, 16, 16]}
    assert encode_config(decode_config("16_16_32_16_32_64_16_16")) == "16_16_32_16_32_64_16_16"
    with pytest.raises(ConfigError, match="cannot read"):
        decode_config("16-16")


# ------------------------------------------------------------------------------------------------
# Super layers slice the first filters
# ------------------------------------------------------------------------------------------------
def test_super_layers_equal_plain_layers_holding_the_first_filters():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, 8)
    sc = SuperConv2d(6, 7, 3, padding=1)
    ref = nn.Conv2d(5, 4, 3, padding=1)
    ref.weight.data, ref.bias.data = sc.weight[:4, :5].clone(), sc.bias[:4].clone()
    torch.testing.assert_close(sc(x, 4), ref(x), rtol=0, atol=1e-6)

    st = SuperConvTranspose2d(6, 7, 3, stride=2, padding=1, output_padding=1)
    ref_t = nn.ConvTranspose2d(5, 4, 3, stride=2, padding=1, output_padding=1)
    ref_t.weight.data, ref_t.bias.data = st.weight[:5, :4].clone(), st.bias[:4].clone()
    torch.testing.assert_close(st(x, 4), ref_t(x), rtol=0, atol=1e-6)

    ss = SuperSeparableConv2d(6, 7, 3, padding=1)
    dw, pw = ss.conv[0], ss.conv[2]
    manual = nn.functional.conv2d(x, dw.weight[:5], dw.bias[:5], padding=1, groups=5)
    manual = nn.functional.instance_norm(manual)
    manual = nn.functional.conv2d(manual, pw.weight[:4, :5], pw.bias[:4])
    torch.testing.assert_close(ss(x, 4), manual, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="at most 6 -> 7"):
        sc(torch.randn(1, 5, 4, 4), 8)


def test_block_layout_matches_the_official_state_dict():
    block = SuperMobileResnetBlock(8, "reflect", nn.InstanceNorm2d, 0.0)
    kinds = [type(m).__name__ for m in block.conv_block]
    assert kinds == ["ReflectionPad2d", "SuperSeparableConv2d", "InstanceNorm2d", "ReLU", "Dropout",
                     "ReflectionPad2d", "SuperSeparableConv2d", "InstanceNorm2d"]
    assert sorted(block.state_dict()) == sorted(f"conv_block.{i}.conv.{j}.{p}" for i in (1, 6) for j in (0, 2)
                                                for p in ("weight", "bias"))


def test_supernet_layout_and_hook_points(supernet):
    kinds = {i: type(m).__name__ for i, m in enumerate(supernet.model)}
    assert len(supernet.model) == 28
    assert [i for i, k in kinds.items() if k == "SuperConv2d"] == [1, 4, 7, 26]
    assert [i for i, k in kinds.items() if k == "SuperConvTranspose2d"] == [19, 22]
    assert all(kinds[i] == "SuperMobileResnetBlock" for i in range(10, 19))
    assert kinds[9] == "ReLU" and supernet.hook_layers == [9, 12, 15, 18] == distill_layer_ids(9)
    assert count_parameters(supernet) == supernet.subnet_parameter_count(largest_config(PIX2PIX))
    # the official SuperMobileResnetGenerator's state-dict keys
    expected = {f"model.{i}.{p}" for i in (1, 4, 7, 19, 22, 26) for p in ("weight", "bias")}
    expected |= {f"model.{i}.conv_block.{j}.conv.{k}.{p}" for i in range(10, 19) for j in (1, 6) for k in (0, 2)
                 for p in ("weight", "bias")}
    assert set(supernet.state_dict()) == expected
    assert set(export_subnet(supernet, smallest_config(PIX2PIX)).state_dict()) == expected


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------
def test_exported_subnet_has_the_subnet_parameter_count(supernet):
    for config in sampled_configs(6) + [largest_config(PIX2PIX), smallest_config(PIX2PIX)]:
        sub = export_subnet(supernet, config)
        assert isinstance(sub, MobileResnetGenerator)
        assert count_parameters(sub) == supernet.subnet_parameter_count(config), encode_config(config)


@torch.no_grad()
def test_exported_subnet_computes_what_the_supernet_computes(supernet):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 1.2  # some values clamped
    for config in sampled_configs(2, seed=1) + [smallest_config(PIX2PIX)]:
        sub = export_subnet(supernet, config).eval()
        out_super, feats_super = supernet(x, config, layers=supernet.hook_layers)
        out_sub, feats_sub = sub(x, layers=sub.hook_layers)
        torch.testing.assert_close(out_sub, out_super, rtol=0, atol=1e-6)
        for a, b in zip(feats_sub, feats_super):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_subnet_macs_on_the_supernet_equal_the_exported_subnets():
    torch.manual_seed(0)
    net = SuperMobileResnetGenerator(ngf=16, n_blocks=3).eval()
    config = {"channels": [8, 16, 12, 4, 16, 8, 12, 4]}
    sub = export_subnet(net, config)
    macs = subnet_macs(net, config, 16)
    assert macs == count_macs(sub, torch.zeros(1, 3, 16, 16))
    assert macs < subnet_macs(net, {"channels": [16] * 8}, 16)


# ------------------------------------------------------------------------------------------------
# Teacher layout, hooks and distillation
# ------------------------------------------------------------------------------------------------
def test_teacher_has_the_official_layout_and_hooks(teacher):
    """CycleGAN's ResNet-9: model.N indices as official; each block's convs at conv_block.1 and .5
    (CycleGAN's layout; gan-compression's own ResnetBlock always holds a Dropout, so its second conv
    is conv_block.6 there)."""
    expected = {f"model.{i}.{p}" for i in (1, 4, 7, 19, 22, 26) for p in ("weight", "bias")}
    expected |= {f"model.{i}.conv_block.{j}.{p}" for i in range(10, 19) for j in (1, 5) for p in ("weight", "bias")}
    assert set(teacher.state_dict()) == expected
    assert teacher_hook_layers(teacher) == [9, 12, 15, 18]
    assert isinstance(teacher.model[9], nn.ReLU) and teacher.model[7].stride == (2, 2)
    assert isinstance(teacher.model[19], nn.ConvTranspose2d)
    with pytest.raises(ConfigError, match="antialias=False"):
        teacher_hook_layers(ResnetGenerator(3, 3, 8, 9, "instance"))


def test_hook_activation_shapes(small_supernet, teacher):
    x = torch.randn(2, 3, 32, 32)
    config = {"channels": [16, 4, 12, 16, 8, 4, 12, 16]}
    with torch.no_grad():
        _, s_feats = small_supernet(x, config, layers=small_supernet.hook_layers)
        _, t_feats = teacher(x, teacher_hook_layers(teacher))
        mapped = DistillMappings.between(small_supernet, teacher)(s_feats)
    assert [tuple(f.shape) for f in s_feats] == [(2, 4 * 12, 8, 8)] * 4  # the trunk: 4 * c2
    assert [tuple(f.shape) for f in t_feats] == [(2, 4 * 16, 8, 8)] * 4
    assert [f.shape for f in mapped] == [f.shape for f in t_feats]


def test_distillation_loss_is_the_sum_of_per_hook_mse():
    s = [torch.full((2, 3, 2, 2), 1.0), torch.full((2, 3, 2, 2), 3.0)]
    t = [torch.zeros(2, 3, 2, 2), torch.full((2, 3, 2, 2), 1.0)]
    total, per_hook = distillation_loss(s, t)
    assert [float(v) for v in per_hook] == [1.0, 4.0]
    assert float(total) == 5.0
    with pytest.raises(ValueError, match="differ"):
        distillation_loss([torch.zeros(1, 2, 2, 2)], [torch.zeros(1, 3, 2, 2)])


def test_distillation_gradients_reach_student_and_mappings_never_the_teacher():
    torch.manual_seed(0)
    student = init_weights(SuperMobileResnetGenerator(ngf=8, n_blocks=3), "normal", 0.02)
    teacher = init_weights(ResnetGenerator(3, 3, 16, 3, "instance", antialias=False, antialias_up=False),
                           "normal", 0.02)  # requires_grad left on: the loss itself must detach
    mappings = DistillMappings.between(student, teacher)
    config = {"channels": [4, 6, 6, 8, 4, 6, 8, 8]}
    x = torch.randn(2, 3, 16, 16)
    _, s_feats = student(x, config, layers=student.hook_layers)
    _, t_feats = teacher(x, teacher_hook_layers(teacher))
    total, _ = distillation_loss(mappings(s_feats), t_feats)
    total.backward()

    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mappings.parameters())
    last_hook = student.hook_layers[-1]
    for i, module in enumerate(student.model):
        for name, p in module.named_parameters():
            if i <= last_hook:
                assert p.grad is not None and p.grad.abs().sum() > 0, (i, name)
            else:  # up-sampling and output layers lie after the last hook
                assert p.grad is None, (i, name)
    # only the configured slice is used: the trunk conv's filters beyond 4 * c2 get no gradient
    trunk_conv = student.model[7]
    assert trunk_conv.weight.grad[4 * 6:].abs().sum() == 0 and trunk_conv.weight.grad[:4 * 6].abs().sum() > 0
    # the mappings' input slice follows the student width: columns beyond 4 * c2 untouched
    assert all(m.weight.grad[:, 4 * 6:].abs().sum() == 0 for m in mappings.maps)


def test_batch_of_two_equals_two_batches_of_one(small_supernet):
    x = torch.randn(2, 3, 16, 16)
    config = {"channels": [8, 12, 4, 16, 8, 12, 4, 8]}
    with torch.no_grad():
        both = small_supernet(x, config)
        one_by_one = torch.cat([small_supernet(x[:1], config), small_supernet(x[1:], config)])
    torch.testing.assert_close(both, one_by_one, rtol=1e-4, atol=5e-5)  # float32 conv algorithms differ


def test_unsupported_settings_are_errors():
    with pytest.raises(ConfigError, match="instance"):
        SuperMobileResnetGenerator(ngf=8, norm="batch")
    with pytest.raises(ConfigError, match="n_blocks >= 3"):
        SuperMobileResnetGenerator(ngf=8, n_blocks=2)
    with pytest.raises(ConfigError, match="ngf 8"):
        SuperMobileResnetGenerator(ngf=8, n_blocks=3)(torch.zeros(1, 3, 8, 8), {"channels": [16] * 8})
