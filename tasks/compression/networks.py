"""Networks of the GAN-compression task, following Fast GAN Compression (mit-han-lab/gan-compression;
the copy in jcy132/Hneg_SRC ``Compression/`` is identical in these files):

* ``SuperMobileResnetGenerator``: the once-for-all student (``super_mobile_resnet_9blocks``,
  ``models/modules/resnet_architecture/super_mobile_resnet_generator.py``), a ResNet generator whose
  residual blocks use depthwise-separable convolutions and whose every convolution can run with
  fewer output channels (``models/modules/super_modules.py``: the first filters of the full weight).
* ``MobileResnetGenerator``: one subnet as a static network (the official
  ``SubMobileResnetGenerator``), and ``export_subnet`` copying the sliced weights into it as
  ``export.py`` (``transfer_weight``) does.
* ``CHANNEL_CHOICES`` and the samplers of ``configs/resnet_configs.py`` / ``channel_configs.py``.
* ``DistillMappings`` and ``distillation_loss``: the 1x1 mappings from student to teacher
  activations and the MSE of ``distillers/base_resnet_distiller.py`` / ``supernets/resnet_supernet.py``.

A configuration is ``{"channels": [c0, ..., c7]}`` (8 choices, the official ResNet layout)::

    c0        first 7x7 conv                   c0 channels
    c1        first stride-2 conv              2 * c1
    c2        second stride-2 conv             4 * c2   -- the width of the residual trunk
    c3 c4 c5  inner width of residual blocks 1-3, 4-6, 7-9 (4 * c)
    c6        first transposed conv            2 * c6
    c7        second transposed conv           c7

Layer indices of the supernet (and of the subnet, and of the CycleGAN / pix2pix ResNet-9 teacher
without antialiasing, ``tasks.networks.ResnetGenerator(antialias=False,
antialias_up=False)``), ``model[i]`` for ``n_blocks = 9``::

    0 pad, 1 conv7x7, 2 norm, 3 ReLU, 4-6 stride-2 conv/norm/ReLU, 7-9 stride-2 conv/norm/ReLU,
    10-18 residual blocks, 19-21 and 22-24 transposed conv/norm/ReLU, 25 pad, 26 conv7x7, 27 tanh

The distillation hooks are the official ``model.9, model.12, model.15, model.18``: after the second
down-sampling and after residual blocks 3, 6 and 9 (``distill_layer_ids``).
"""
from __future__ import annotations

import itertools
import random
from typing import Callable, Iterator, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.errors import ConfigError
from benchmark.core.metrics.macs import count_macs
from ..networks import ResnetGenerator, get_norm_layer, init_weights

__all__ = [
    "CHANNEL_CHOICES", "N_CHANNEL_CHOICES", "check_choices", "check_config", "encode_config",
    "decode_config", "sample_config", "sample_layer", "largest_config", "smallest_config",
    "all_configs", "config_space_size",
    "SuperConv2d", "SuperConvTranspose2d", "SeparableConv2d", "SuperSeparableConv2d", "AnyWidthInstanceNorm2d",
    "SuperMobileResnetBlock", "MobileResnetBlock", "SuperMobileResnetGenerator", "MobileResnetGenerator",
    "export_subnet", "subnet_macs", "distill_layer_ids", "student_hook_layers", "teacher_hook_layers",
    "teacher_hook_channels", "DistillMappings", "distillation_loss",
]

Config = Mapping[str, Sequence[int]]
Choices = Sequence[Sequence[int]]
Generator = Union[torch.Generator, random.Random]

# --------------------------------------------------------------------------------------------------
# Configuration space (configs/resnet_configs.py, configs/channel_configs.py)
# --------------------------------------------------------------------------------------------------
N_CHANNEL_CHOICES = 8
CHANNEL_CHOICES: dict[str, tuple[tuple[int, ...], ...]] = {
    "cyclegan": ((64, 48, 32, 24, 16),) * N_CHANNEL_CHOICES,          # 'channels-64-cycleGAN'
    "pix2pix": ((64, 56, 48, 40, 32, 24, 16),) * N_CHANNEL_CHOICES,   # 'channels-64-pix2pix'
}


def check_choices(choices: Choices, ngf: int | None = None) -> list[list[int]]:
    """``choices`` as a list of 8 non-empty lists of positive ints (each at most ``ngf`` if given)."""
    if isinstance(choices, str):
        raise ConfigError(f"channel choices {choices!r}: expected a list of {N_CHANNEL_CHOICES} lists of "
                          f"ints; the official sets are CHANNEL_CHOICES[{sorted(CHANNEL_CHOICES)}]")
    out = [list(c) for c in choices]
    if len(out) != N_CHANNEL_CHOICES or any(not c for c in out):
        raise ConfigError(f"channel choices must be {N_CHANNEL_CHOICES} non-empty lists (one per layer), got {choices!r}")
    for c in out:
        if any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in c):
            raise ConfigError(f"channel choices must be positive ints, got {c!r}")
        if ngf is not None and max(c) > ngf:
            raise ConfigError(f"channel choice {max(c)} exceeds the supernet's ngf {ngf}")
    return out


def check_config(config: Config, choices: Choices | None = None, ngf: int | None = None) -> list[int]:
    """The channel list of ``config`` after checking its form ({'channels': 8 positive ints}), that
    each value is one of ``choices`` (if given) and at most ``ngf`` (if given)."""
    if not isinstance(config, Mapping) or "channels" not in config:
        raise ConfigError(f"a subnet configuration must be {{'channels': [{N_CHANNEL_CHOICES} ints]}}, got {config!r}")
    channels = list(config["channels"])
    if len(channels) != N_CHANNEL_CHOICES or any(
            not isinstance(c, int) or isinstance(c, bool) or c <= 0 for c in channels):
        raise ConfigError(f"config channels must be {N_CHANNEL_CHOICES} positive ints, got {channels!r}")
    if ngf is not None and max(channels) > ngf:
        raise ConfigError(f"config {encode_config(config)} asks for {max(channels)} channels; "
                          f"the supernet has ngf {ngf}")
    if choices is not None:
        for i, (c, allowed) in enumerate(zip(channels, check_choices(choices))):
            if c not in allowed:
                raise ConfigError(f"config {encode_config(config)}: channel {i} is {c}, expected one of {allowed}")
    return channels


def encode_config(config: Config) -> str:
    """'64_48_32_...' as the official ``encode_config`` (the memo key of the search)."""
    return "_".join(str(int(c)) for c in config["channels"])


def decode_config(text: str) -> dict[str, list[int]]:
    try:
        channels = [int(c) for c in text.split("_")]
    except ValueError:
        raise ConfigError(f"cannot read a subnet configuration from {text!r}; expected e.g. "
                          "'16_16_32_16_32_64_16_16'") from None
    config = {"channels": channels}
    check_config(config)
    return config


def _choice_weights(n: int, weighted_sample: float, strategy: str) -> list[float] | None:
    """Official ``ChannelConfigs.sample`` weights: none for ``weighted_sample <= 1.0001``; else
    arithmetic ``(n-1)/(w-1) + i`` or geometric ``w**i`` for the i-th choice (choices are listed
    from large to small, so both favour the smaller widths)."""
    if weighted_sample <= 1.0001:
        return None
    if strategy == "arithmetic":
        start = (n - 1) / (weighted_sample - 1)
        return [start + i for i in range(n)]
    if strategy == "geometric":
        return [weighted_sample ** i for i in range(n)]
    raise ConfigError(f"unknown weight strategy {strategy!r}; expected 'arithmetic' or 'geometric'")


def _draw(options: Sequence[int], generator: Generator, weights: Sequence[float] | None = None) -> int:
    if isinstance(generator, random.Random):
        return generator.choices(options, weights=weights)[0] if weights else generator.choice(options)
    if isinstance(generator, torch.Generator):
        if weights is None:
            index = int(torch.randint(len(options), (1,), generator=generator))
        else:
            index = int(torch.multinomial(torch.tensor(weights, dtype=torch.float64), 1, generator=generator))
        return options[index]
    raise TypeError(f"generator must be a torch.Generator or random.Random, got {type(generator).__name__}")


def sample_config(choices: Choices, generator: Generator, weighted_sample: float = 1.0,
                  weight_strategy: str = "arithmetic") -> dict[str, list[int]]:
    """One configuration, each channel drawn independently from its choices (uniformly, or with the
    official ``weighted_sample`` / ``weight_strategy`` weights)."""
    choices = check_choices(choices)
    return {"channels": [_draw(c, generator, _choice_weights(len(c), weighted_sample, weight_strategy))
                         for c in choices]}


def sample_layer(choices: Choices, layer: int, generator: Generator) -> int:
    """One value for channel ``layer``, uniformly (official ``sample_layer``, used by mutation)."""
    return _draw(list(choices[layer]), generator)


def largest_config(choices: Choices) -> dict[str, list[int]]:
    return {"channels": [max(c) for c in check_choices(choices)]}


def smallest_config(choices: Choices) -> dict[str, list[int]]:
    return {"channels": [min(c) for c in check_choices(choices)]}


def all_configs(choices: Choices) -> Iterator[dict[str, list[int]]]:
    """Every configuration, in the official order (first channel slowest)."""
    for channels in itertools.product(*check_choices(choices)):
        yield {"channels": list(channels)}


def config_space_size(choices: Choices) -> int:
    size = 1
    for c in check_choices(choices):
        size *= len(c)
    return size


# --------------------------------------------------------------------------------------------------
# Layers whose width is chosen per call (models/modules/super_modules.py)
# --------------------------------------------------------------------------------------------------
def _check_width(layer: nn.Module, in_channels: int, out_channels: int, max_in: int, max_out: int) -> None:
    if not (0 < in_channels <= max_in and 0 < out_channels <= max_out):
        raise ValueError(f"{type(layer).__name__}: asked for {in_channels} -> {out_channels} channels; "
                         f"it holds at most {max_in} -> {max_out}")


class SuperConv2d(nn.Conv2d):
    """A convolution run with the first ``x.shape[1]`` input and the first ``out_channels`` output
    filters of its weight (all of them when ``out_channels`` is None)."""

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        out_channels = self.out_channels if out_channels is None else out_channels
        _check_width(self, x.shape[1], out_channels, self.in_channels, self.out_channels)
        weight = self.weight[:out_channels, :x.shape[1]]  # (out, in, k, k)
        bias = None if self.bias is None else self.bias[:out_channels]
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class SuperConvTranspose2d(nn.ConvTranspose2d):
    """A transposed convolution run with the first input and output channels of its weight
    (``weight`` is (in, out, k, k)); the output padding is the module's own (no ``output_size``)."""

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        out_channels = self.out_channels if out_channels is None else out_channels
        _check_width(self, x.shape[1], out_channels, self.in_channels, self.out_channels)
        weight = self.weight[:x.shape[1], :out_channels]
        bias = None if self.bias is None else self.bias[:out_channels]
        return F.conv_transpose2d(x, weight, bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)


class SeparableConv2d(nn.Module):
    """Depthwise k x k conv, InstanceNorm (no affine), pointwise 1x1 conv; both convs with a bias
    (official ``mobile_modules.SeparableConv2d`` with its defaults)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 0):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                      groups=in_channels, bias=True),
            nn.InstanceNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 1, stride=1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class AnyWidthInstanceNorm2d(nn.InstanceNorm2d):
    """InstanceNorm2d without affine parameters or running statistics for a layer whose width changes
    per call: the same computation (``F.instance_norm``), without PyTorch's warning that the input
    width differs from ``num_features``."""

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=False, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, eps=self.eps)


class SuperSeparableConv2d(SeparableConv2d):
    """``SeparableConv2d`` run on the first ``x.shape[1]`` depthwise filters and the first
    ``out_channels`` pointwise filters."""

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:  # type: ignore[override]
        depthwise, norm, pointwise = self.conv
        in_channels = x.shape[1]
        out_channels = pointwise.out_channels if out_channels is None else out_channels
        _check_width(self, in_channels, out_channels, depthwise.in_channels, pointwise.out_channels)
        x = F.conv2d(x, depthwise.weight[:in_channels], depthwise.bias[:in_channels], depthwise.stride,
                     depthwise.padding, depthwise.dilation, in_channels)
        x = F.instance_norm(x, eps=norm.eps)  # the (affine-free) norm, at this call's width
        return F.conv2d(x, pointwise.weight[:out_channels, :in_channels], pointwise.bias[:out_channels])


# --------------------------------------------------------------------------------------------------
# Residual blocks and generators
# --------------------------------------------------------------------------------------------------
def _padding(padding_type: str) -> tuple[list[nn.Module], int]:
    """(padding modules, conv padding) for one 3x3 conv, as the official ``build_conv_block``."""
    if padding_type == "reflect":
        return [nn.ReflectionPad2d(1)], 0
    if padding_type == "replicate":
        return [nn.ReplicationPad2d(1)], 0
    if padding_type == "zero":
        return [], 1
    raise ConfigError(f"unknown padding_type {padding_type!r}; expected reflect|replicate|zero")


def _block_layers(dim: int, inner: int, padding_type: str, norm_layer: Callable[[int], nn.Module],
                  dropout: float, separable: type[SeparableConv2d]) -> list[nn.Module]:
    """pad, sep-conv dim->inner, norm, ReLU, Dropout, pad, sep-conv inner->dim, norm (the Dropout is
    always there, as official, so state-dict keys match: conv_block.1 and conv_block.6)."""
    pad1, p = _padding(padding_type)
    pad2, _ = _padding(padding_type)
    return [*pad1, separable(dim, inner, 3, padding=p), norm_layer(inner), nn.ReLU(True), nn.Dropout(dropout),
            *pad2, separable(inner, dim, 3, padding=p), norm_layer(dim)]


class SuperMobileResnetBlock(nn.Module):
    """x + block(x) with the inner width (first separable conv's output) chosen per call."""

    def __init__(self, dim: int, padding_type: str, norm_layer: Callable[[int], nn.Module], dropout: float):
        super().__init__()
        self.conv_block = nn.Sequential(*_block_layers(dim, dim, padding_type, norm_layer, dropout,
                                                       SuperSeparableConv2d))

    def forward(self, x: torch.Tensor, inner_channels: int) -> torch.Tensor:
        h, first = x, True
        for module in self.conv_block:
            if isinstance(module, SuperSeparableConv2d):
                h = module(h, inner_channels if first else x.shape[1])
                first = False
            else:
                h = module(h)
        return x + h


class MobileResnetBlock(nn.Module):
    """Static block: x + block(x), ``dim -> inner -> dim`` (official ``MobileResnetBlock`` of the
    sub_mobile generator)."""

    def __init__(self, dim: int, inner: int, padding_type: str, norm_layer: Callable[[int], nn.Module],
                 dropout: float):
        super().__init__()
        self.conv_block = nn.Sequential(*_block_layers(dim, inner, padding_type, norm_layer, dropout,
                                                       SeparableConv2d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _block_groups(n_blocks: int) -> list[range]:
    """Indices into ``model`` of the three block groups sharing channels c3, c4, c5: sizes
    n//3, n//3, the rest (official ``n_blocks1/2/3``); blocks start at index 10."""
    n1 = n_blocks // 3
    sizes = [n1, n1, n_blocks - 2 * n1]
    starts = [10, 10 + n1, 10 + 2 * n1]
    return [range(s, s + k) for s, k in zip(starts, sizes)]


def distill_layer_ids(n_blocks: int = 9) -> list[int]:
    """The official distillation hook points ``model.9, 12, 15, 18`` for ``n_blocks`` blocks: after
    the second down-sampling (index 9, its ReLU) and after the last block of each of the three
    block groups. 9 -> [9, 12, 15, 18]; 6 -> [9, 11, 13, 15]; 3 -> [9, 10, 11, 12]."""
    if n_blocks < 3:
        raise ConfigError(f"the mobile ResNet supernet needs n_blocks >= 3 (three block groups with their own "
                          f"channel choice), got {n_blocks}")
    return [9] + [g[-1] for g in _block_groups(n_blocks)]


student_hook_layers = distill_layer_ids


def _norm_and_bias(norm: str, any_width: bool = False) -> tuple[Callable[[int], nn.Module], bool]:
    """(norm layer factory, conv bias) for 'instance' or 'none'; ``any_width`` for the supernet."""
    if norm not in ("instance", "none"):
        raise ConfigError(f"the mobile ResNet (super)net supports norm 'instance' (the official setting) or "
                          f"'none', got {norm!r}: batch norm statistics cannot be sliced per subnet")
    factory = AnyWidthInstanceNorm2d if norm == "instance" and any_width else get_norm_layer(norm)
    return factory, norm == "instance"  # official: conv bias iff instance norm


def _dropout_rate(dropout: float | bool) -> float:
    rate = 0.5 if dropout is True else float(dropout)
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"dropout must be a rate in [0, 1) (or a bool: True = 0.5), got {dropout!r}")
    return rate


def _forward_layers(model: nn.Sequential, x: torch.Tensor, layers: Sequence[int], encode_only: bool,
                    apply: Callable[[int, nn.Module, torch.Tensor], torch.Tensor]):
    """Run ``model`` layer by layer with ``apply(i, module, x)``; collect the output of each layer in
    ``layers`` (strictly increasing). Returns the output; ``(output, feats)`` with layers;
    ``feats`` alone with ``encode_only`` (stopping after the last requested layer)."""
    layers = [int(i) for i in layers]
    if layers and (not all(0 <= i < len(model) for i in layers) or any(a >= b for a, b in zip(layers, layers[1:]))):
        raise ValueError(f"layers must be strictly increasing indices in [0, {len(model) - 1}], got {layers}")
    if encode_only and not layers:
        raise ValueError("encode_only=True needs at least one layer")
    wanted, feats = set(layers), []
    for i, module in enumerate(model):
        x = apply(i, module, x)
        if i in wanted:
            feats.append(x)
            if encode_only and i == layers[-1]:
                return feats
    return (x, feats) if layers else x


class SuperMobileResnetGenerator(nn.Module):
    """The once-for-all mobile ResNet generator (official ``SuperMobileResnetGenerator``, 9 blocks):
    full widths ngf, 2ngf, 4ngf (trunk and block inner width), 2ngf, ngf; ``forward(x, config)``
    runs the subnet ``config`` (see the module docstring for what each of the 8 channels sets).
    The input is clamped to [-1, 1] as official. Weights are PyTorch's default until
    ``tasks.networks.init_weights`` is applied (official: normal, gain 0.02)."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: float | bool = 0.0, padding_type: str = "reflect"):
        super().__init__()
        self.hook_layers = distill_layer_ids(n_blocks)
        norm_layer, bias = _norm_and_bias(norm, any_width=True)
        rate = _dropout_rate(dropout)
        self.input_nc, self.output_nc, self.ngf, self.n_blocks = input_nc, output_nc, ngf, n_blocks
        self.norm, self.dropout, self.padding_type = norm, rate, padding_type
        model: list[nn.Module] = [nn.ReflectionPad2d(3), SuperConv2d(input_nc, ngf, 7, padding=0, bias=bias),
                                  norm_layer(ngf), nn.ReLU(True)]
        for mult in (1, 2):
            model += [SuperConv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                      norm_layer(ngf * mult * 2), nn.ReLU(True)]
        model += [SuperMobileResnetBlock(4 * ngf, padding_type, norm_layer, rate) for _ in range(n_blocks)]
        for mult in (4, 2):
            model += [SuperConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                                           bias=bias),
                      norm_layer(ngf * mult // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), SuperConv2d(ngf, output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)
        self._groups = _block_groups(n_blocks)
        self.use_bias = bias

    @property
    def hook_channels(self) -> list[int]:
        """Largest width of the activation at each hook (the trunk: 4 * ngf)."""
        return [4 * self.ngf] * len(self.hook_layers)

    def widths(self, config: Config) -> dict[int, int]:
        """Output channels of every width-chosen layer (index into ``model``) under ``config``; for a
        residual block, its inner width."""
        c = check_config(config, ngf=self.ngf)
        n = self.n_blocks
        widths = {1: c[0], 4: 2 * c[1], 7: 4 * c[2]}
        for group, indices in enumerate(self._groups):
            widths.update({i: 4 * c[3 + group] for i in indices})
        widths.update({10 + n: 2 * c[6], 13 + n: c[7], 17 + n: self.output_nc})
        return widths

    def forward(self, x: torch.Tensor, config: Config, layers: Sequence[int] = (), encode_only: bool = False):
        """The translated image of subnet ``config``; with ``layers``, also the activations after
        ``model[i]`` for each i (``(image, feats)``, or ``feats`` with ``encode_only``)."""
        widths = self.widths(config)
        return _forward_layers(self.model, x.clamp(-1, 1), layers, encode_only,
                               lambda i, m, h: m(h, widths[i]) if i in widths else m(h))

    def subnet_parameter_count(self, config: Config) -> int:
        """Parameters the subnet ``config`` uses, counted from the widths alone (independently of
        any module): what its exported ``MobileResnetGenerator`` holds."""
        c = check_config(config, ngf=self.ngf)

        def conv(cin: int, cout: int, k: int, bias: bool) -> int:
            return cout * cin * k * k + (cout if bias else 0)

        def separable(cin: int, cout: int) -> int:  # depthwise 3x3 + bias, pointwise 1x1 + bias
            return conv(1, cin, 3, True) + conv(cin, cout, 1, True)

        b, trunk = self.use_bias, 4 * c[2]
        count = conv(self.input_nc, c[0], 7, b) + conv(c[0], 2 * c[1], 3, b) + conv(2 * c[1], trunk, 3, b)
        for group, indices in enumerate(self._groups):
            inner = 4 * c[3 + group]
            count += len(indices) * (separable(trunk, inner) + separable(inner, trunk))
        return count + conv(trunk, 2 * c[6], 3, b) + conv(2 * c[6], c[7], 3, b) + conv(c[7], self.output_nc, 7, True)


class MobileResnetGenerator(nn.Module):
    """One subnet of the supernet as a static network (official ``SubMobileResnetGenerator``): the
    same module names and layer indices, each layer built at its configured width."""

    def __init__(self, config: Config, input_nc: int = 3, output_nc: int = 3, n_blocks: int = 9,
                 norm: str = "instance", dropout: float | bool = 0.0, padding_type: str = "reflect"):
        super().__init__()
        c = check_config(config)
        self.config = {"channels": list(c)}
        self.hook_layers = distill_layer_ids(n_blocks)
        norm_layer, bias = _norm_and_bias(norm)
        rate = _dropout_rate(dropout)
        trunk = 4 * c[2]
        model: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, c[0], 7, padding=0, bias=bias),
                                  norm_layer(c[0]), nn.ReLU(True),
                                  nn.Conv2d(c[0], 2 * c[1], 3, stride=2, padding=1, bias=bias),
                                  norm_layer(2 * c[1]), nn.ReLU(True),
                                  nn.Conv2d(2 * c[1], trunk, 3, stride=2, padding=1, bias=bias),
                                  norm_layer(trunk), nn.ReLU(True)]
        for group, indices in enumerate(_block_groups(n_blocks)):
            model += [MobileResnetBlock(trunk, 4 * c[3 + group], padding_type, norm_layer, rate) for _ in indices]
        model += [nn.ConvTranspose2d(trunk, 2 * c[6], 3, stride=2, padding=1, output_padding=1, bias=bias),
                  norm_layer(2 * c[6]), nn.ReLU(True),
                  nn.ConvTranspose2d(2 * c[6], c[7], 3, stride=2, padding=1, output_padding=1, bias=bias),
                  norm_layer(c[7]), nn.ReLU(True),
                  nn.ReflectionPad2d(3), nn.Conv2d(c[7], output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor, layers: Sequence[int] = (), encode_only: bool = False):
        """As ``SuperMobileResnetGenerator.forward`` for this network's configuration."""
        return _forward_layers(self.model, x.clamp(-1, 1), layers, encode_only, lambda i, m, h: m(h))


@torch.no_grad()
def export_subnet(supernet: SuperMobileResnetGenerator, config: Config) -> MobileResnetGenerator:
    """The subnet ``config`` as a ``MobileResnetGenerator`` holding copies of the supernet's sliced
    weights (official ``export.py``: every conv / transposed conv of the subnet takes
    ``weight[:a, :b, :c, :d]`` and ``bias[:a]`` of the supernet module with the same name), on the
    supernet's device and dtype, in its train/eval mode."""
    check_config(config, ngf=supernet.ngf)
    sub = MobileResnetGenerator(config, supernet.input_nc, supernet.output_nc, supernet.n_blocks, supernet.norm,
                                supernet.dropout, supernet.padding_type)
    p = next(supernet.parameters())
    sub.to(device=p.device, dtype=p.dtype)
    source = dict(supernet.named_modules())
    copied: set[str] = set()
    for name, module in sub.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        parent = source.get(name)
        if not isinstance(parent, type(module)) or parent.weight.dim() != module.weight.dim():
            raise RuntimeError(f"export_subnet: the supernet has no {type(module).__name__} named {name!r}")
        if any(s > t for s, t in zip(module.weight.shape, parent.weight.shape)):
            raise ConfigError(f"export_subnet: layer {name} needs weight {tuple(module.weight.shape)}, larger "
                              f"than the supernet's {tuple(parent.weight.shape)}")
        module.weight.copy_(parent.weight[tuple(slice(0, s) for s in module.weight.shape)])
        copied.add(f"{name}.weight")
        if module.bias is not None:
            module.bias.copy_(parent.bias[:module.bias.shape[0]])
            copied.add(f"{name}.bias")
    missing = [n for n, _ in sub.named_parameters() if n not in copied]
    if missing:
        raise RuntimeError(f"export_subnet: parameters not copied from the supernet: {missing}")
    return sub.train(supernet.training)


class _FixedConfig(nn.Module):
    """The supernet with one configuration bound, so that it traces with a tensor input only."""

    def __init__(self, supernet: SuperMobileResnetGenerator, config: Config):
        super().__init__()
        self.supernet, self.config = supernet, {"channels": list(config["channels"])}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, self.config)


def subnet_macs(supernet: SuperMobileResnetGenerator, config: Config, image_size: int | tuple[int, int] = 256) -> int:
    """MACs of subnet ``config`` on one ``image_size`` image, counted by torchprofile on the supernet
    run with ``config`` as the official search does (``TestModel.profile``)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    p = next(supernet.parameters())
    x = torch.zeros(1, supernet.input_nc, h, w, device=p.device, dtype=p.dtype)
    return count_macs(_FixedConfig(supernet, config), x)


# --------------------------------------------------------------------------------------------------
# Distillation (distillers/base_resnet_distiller.py, supernets/resnet_supernet.py)
# --------------------------------------------------------------------------------------------------
def teacher_hook_layers(teacher: ResnetGenerator) -> list[int]:
    """The hook indices in the teacher, which must have the CycleGAN / pix2pix layout (stride-2
    down-sampling convs, ``antialias=False``): there they name the same points as in the student."""
    if not isinstance(teacher, ResnetGenerator):
        raise ConfigError(f"the teacher must be a ResnetGenerator, got {type(teacher).__name__}")
    if teacher.antialias:
        raise ConfigError("the teacher must be built with antialias=False (the CycleGAN / pix2pix ResNet layout); "
                          "with CUT's antialiased down-sampling the hook indices 9, 12, 15, 18 name other layers")
    return distill_layer_ids(teacher.n_blocks)


def teacher_hook_channels(teacher: ResnetGenerator) -> list[int]:
    """Width of the teacher's activation at each hook (4 * its ngf)."""
    layers = teacher_hook_layers(teacher)
    return [4 * teacher.model[1].out_channels] * len(layers)


class DistillMappings(nn.Module):
    """One 1x1 ``SuperConv2d`` per hook from the student's activation to the teacher's width
    (official ``netA``: ``SuperConv2d(student_ngf * 4, teacher_ngf * 4, 1)``, bias, init normal
    with gain 0.02). Its input slice follows the student activation's width, which depends on the
    sampled configuration (4 * c2); its output is always the teacher's full width."""

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 init_type: str | None = "normal", init_gain: float = 0.02):
        super().__init__()
        student_channels, teacher_channels = list(student_channels), list(teacher_channels)
        if len(student_channels) != len(teacher_channels) or not student_channels:
            raise ConfigError(f"DistillMappings needs one student and one teacher width per hook, got "
                              f"{student_channels} and {teacher_channels}")
        self.maps = nn.ModuleList(SuperConv2d(s, t, 1) for s, t in zip(student_channels, teacher_channels))
        if init_type is not None:
            init_weights(self, init_type, init_gain)

    @classmethod
    def between(cls, student: SuperMobileResnetGenerator, teacher: ResnetGenerator, **kwargs) -> "DistillMappings":
        return cls(student.hook_channels, teacher_hook_channels(teacher), **kwargs)

    def forward(self, student_feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(student_feats) != len(self.maps):
            raise ValueError(f"DistillMappings: got {len(student_feats)} student activations, expected {len(self.maps)}")
        return [m(f) for m, f in zip(self.maps, student_feats)]


def distillation_loss(mapped_student: Sequence[torch.Tensor],
                      teacher_feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Official ``calc_distill_loss``: per hook ``F.mse_loss(mapped student, teacher)`` (mean over all
    elements of the batch), summed over the hooks. Teacher activations are detached. Returns
    ``(total, per-hook losses)``; the task multiplies by ``lambda_distill``."""
    if len(mapped_student) != len(teacher_feats) or not teacher_feats:
        raise ValueError(f"distillation_loss: {len(mapped_student)} student vs {len(teacher_feats)} teacher activations")
    losses = []
    for k, (s, t) in enumerate(zip(mapped_student, teacher_feats)):
        if s.shape != t.shape:
            raise ValueError(f"distillation_loss: hook {k}: mapped student activation {tuple(s.shape)} and teacher "
                             f"activation {tuple(t.shape)} differ (same input size and teacher width expected)")
        losses.append(F.mse_loss(s, t.detach()))
    return torch.stack(losses).sum(), losses
