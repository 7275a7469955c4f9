"""Networks of the single-image task (SinCUT): the StyleGAN2-style generator and discriminator that CUT's
single-image model uses (taesungp/contrastive-unpaired-translation, ``models/stylegan_networks.py``
with ``netG=netD='stylegan2'``, ``stylegan2_G_num_downsampling=1``, ``ngf=10``, ``ndf=8``,
``crop_size=64``), written from that code's equations.

Building blocks (rosinality's StyleGAN2 port, as the official file):

* equalised learning rate: every conv / linear stores N(0, 1) weights and multiplies them by
  ``1 / sqrt(fan_in)`` at run time (``EqualConv2d``, ``EqualLinear``); no other initialisation (the
  official ``init_net`` skips 'stylegan2' networks);
* ``FusedLeakyReLU``: ``leaky_relu(x + b, 0.2) * sqrt(2)`` with a learned per-channel bias b;
* ``Blur``: a [1, 3, 3, 1] x [1, 3, 3, 1] / 64 FIR filter with explicit padding (``upfirdn2d`` with
  up = down = 1), before every strided conv and after the transposed conv;
* ``ResBlock``: ``(conv2(conv1(x)) + skip(x)) / sqrt(2)``, where conv2 and the skip downsample by 2
  (blur, then stride 2) when asked, and the skip is the identity when neither shape changes.

Generator (``StyleGAN2Generator``) for a ``crop_size`` crop, channel table ``ch[r]`` of resolution r
with multiplier ``ngf / 32`` (ngf 10: ch[64] = 80, ch[32] = 160)::

    encoder.convs: 0 Identity (the input image)
                   1 ConvLayer 1x1 3 -> ch[crop]
                   2 .. 1+n_down   ResBlock ch[r] -> ch[r/2], downsampling
                   then n_blocks // 2 ResBlocks at the bottleneck
    decoder.convs: n_blocks // 2 ResBlocks, then per downsampling a StyledConv 3x3 with a 2x
                   transposed conv, noise injection and FusedLeakyReLU, then ConvLayer 1x1 -> 3
                   (with its FusedLeakyReLU: the output is not squashed by a tanh)

so SinCUT's ``nce_layers='0,2,4'`` are: the input image, the output of the downsampling ResBlock
(160 x H/2 x W/2) and of the second bottleneck ResBlock. The StyledConv has no style input (the
modulation is a constant 1), so its weight is only demodulated.

Discriminator (``StyleGAN2Discriminator``, netD 'stylegan2'): channel table with multiplier
``ndf / 64`` capped at 384; ConvLayer 1x1 3 -> ch[crop], a downsampling ResBlock per resolution down
to 4 x 4, ConvLayer 3x3, then EqualLinear(ch[4] * 16 -> ch[4], fused lrelu), EqualLinear(ch[4] -> 1):
one logit per crop, for ``crop_size`` x ``crop_size`` inputs only.

Device-agnostic, unlike the official code, which builds the constant style with ``.cuda()``. The
injected noise is drawn from the global CPU torch generator and moved to the device, so that a run
is seeded and resumable on any device (the official draws it on the device).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.errors import ConfigError

BLUR_KERNEL = (1, 3, 3, 1)
SQRT2 = math.sqrt(2.0)


def blur_kernel(taps: Sequence[int] = BLUR_KERNEL) -> torch.Tensor:
    """The 2-D FIR kernel: outer product of ``taps`` normalised to sum 1 (``make_kernel``), in the
    default dtype (as the parameters are made)."""
    k = torch.tensor(taps, dtype=torch.get_default_dtype())
    k = k[None, :] * k[:, None]
    return k / k.sum()


def generator_channels(ngf: int) -> dict[int, int]:
    """Channels per resolution of the StyleGAN2 encoder/decoder (``channel_multiplier = ngf / 32``,
    rounded, capped at 512 up to 32 x 32)."""
    m = ngf / 32
    table = {4: 4096, 8: 2048, 16: 1024, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    return {r: (min(512, int(round(c * m))) if r <= 32 else int(round(c * m))) for r, c in table.items()}


def discriminator_channels(ndf: int) -> dict[int, int]:
    """Channels per resolution of the StyleGAN2 discriminator (``channel_multiplier = ndf / 64``,
    truncated, capped at 384 up to 32 x 32)."""
    m = ndf / 64
    table = {4: 4096, 8: 2048, 16: 1024, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    return {r: (min(384, int(c * m)) if r <= 32 else int(c * m)) for r, c in table.items()}


def crop_resolution(crop_size: int) -> int:
    """The power of two nearest to ``crop_size`` (``2 ** rint(log2(min(load_size, crop_size)))``)."""
    return 2 ** int(round(math.log2(crop_size)))


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2) -> torch.Tensor:
    return F.leaky_relu(x + bias, negative_slope) * SQRT2


class FusedLeakyReLU(nn.Module):
    """``leaky_relu(x + bias, 0.2) * sqrt(2)``, bias (1, C, 1, 1) initialised to 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class ScaledLeakyReLU(nn.Module):
    """``leaky_relu(x, 0.2) * sqrt(2)`` (no bias)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 0.2) * SQRT2


class Blur(nn.Module):
    """Depthwise FIR filtering with the blur kernel after padding (``pad[0]`` before, ``pad[1]`` after,
    on both axes), times ``gain`` (4 after a 2x transposed conv)."""

    def __init__(self, pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.pad = pad
        self.register_buffer("kernel", blur_kernel() * gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p0, p1 = self.pad
        channels = x.shape[1]
        weight = torch.flip(self.kernel, [0, 1])[None, None].expand(channels, 1, -1, -1)
        return F.conv2d(F.pad(x, [p0, p1, p0, p1]), weight, groups=channels)


class EqualConv2d(nn.Module):
    """Conv with N(0, 1) weights scaled by ``1 / sqrt(in * k * k)`` at run time; optional zero bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear with N(0, 1) weights scaled by ``1 / sqrt(in)`` (lr_mul 1); with ``activation`` the bias
    enters a fused leaky ReLU instead of the linear map."""

    def __init__(self, in_dim: int, out_dim: int, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1.0 / math.sqrt(in_dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias)
        return F.linear(x, self.weight * self.scale, bias=self.bias)


class ConvLayer(nn.Sequential):
    """[Blur (when downsampling)], EqualConv2d (stride 2 when downsampling, else 'same' padding),
    [FusedLeakyReLU (bias) | ScaledLeakyReLU (no bias)] when ``activate``. The conv carries a bias
    only when there is no activation to hold it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            p = (len(BLUR_KERNEL) - 2) + (kernel_size - 1)
            layers.append(Blur(((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride, padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels) if bias else ScaledLeakyReLU())
        super().__init__(*layers)


class ResBlock(nn.Module):
    """``(conv2(conv1(x)) + skip(x)) / sqrt(2)``; conv1 3x3 in -> in, conv2 3x3 in -> out (downsampling
    when asked), skip a bias-free 1x1 (downsampling) or the identity."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = True):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=downsample)
        if in_channels != out_channels or downsample:
            self.skip = ConvLayer(in_channels, out_channels, 1, downsample=downsample, activate=False, bias=False)
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class UpsamplingConv2d(nn.Module):
    """The official ``ModulatedConv2d(upsample=True)`` with no style (modulation 1): demodulated
    weight ``w / sqrt(sum_{in,k,k} w^2 + 1e-8)`` with ``w = weight / sqrt(in * k * k)``, a 2x
    transposed conv (stride 2, no padding), then a blur (gain 4) that trims the result to 2H x 2W.
    The weight keeps the official shape (1, out, in, k, k)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        p = (len(BLUR_KERNEL) - 2) - (kernel_size - 1)
        self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.scale * self.weight[0]                                       # (out, in, k, k)
        w = w * torch.rsqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        out = F.conv_transpose2d(x, w.transpose(0, 1), stride=2, padding=0)  # (B, out, 2H + 1, 2W + 1)
        return self.blur(out)


NoiseDraw = Callable[[tuple[int, int, int, int]], torch.Tensor]
"""Draws the (CPU) noise of a given (B, 1, H, W) shape."""


class NoiseInjection(nn.Module):
    """``x + weight * noise``, weight (1,) initialised to 0, noise N(0, 1) of shape (B, 1, H, W) drawn
    from the global CPU generator (seeded and checkpointed by the runner) and moved to x's device.
    ``draw``, when set (:meth:`StyleGAN2Generator.noise_drawn_by`), draws it instead."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.draw: NoiseDraw | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        noise = torch.randn(b, 1, h, w) if self.draw is None else self.draw((b, 1, h, w))
        return x + self.weight * noise.to(device=x.device, dtype=x.dtype)


class StyledConv(nn.Module):
    """The decoder's upsampling layer: UpsamplingConv2d, noise injection, FusedLeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, inject_noise: bool = True):
        super().__init__()
        self.inject_noise = inject_noise
        self.conv = UpsamplingConv2d(in_channels, out_channels, 3)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.inject_noise:
            out = self.noise(out)
        return self.activate(out)


# --------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------
class StyleGAN2Encoder(nn.Module):
    def __init__(self, ngf: int, crop_size: int, n_downsampling: int, n_blocks: int):
        super().__init__()
        ch = generator_channels(ngf)
        res = crop_resolution(crop_size)
        convs: list[nn.Module] = [nn.Identity(), ConvLayer(3, ch[res], 1)]
        for _ in range(n_downsampling):
            convs.append(ResBlock(ch[res], ch[res // 2], downsample=True))
            res //= 2
        convs += [ResBlock(ch[res], ch[res], downsample=False) for _ in range(n_blocks // 2)]
        self.convs = nn.Sequential(*convs)
        self.bottleneck_resolution = res


class StyleGAN2Decoder(nn.Module):
    def __init__(self, ngf: int, crop_size: int, n_downsampling: int, n_blocks: int, inject_noise: bool = True):
        super().__init__()
        ch = generator_channels(ngf)
        res = crop_resolution(crop_size) // 2 ** n_downsampling
        convs: list[nn.Module] = [ResBlock(ch[res], ch[res], downsample=False) for _ in range(n_blocks // 2)]
        for _ in range(n_downsampling):
            convs.append(StyledConv(ch[res], ch[res * 2], inject_noise))
            res *= 2
        convs.append(ConvLayer(ch[res], 3, 1))
        self.convs = nn.Sequential(*convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class StyleGAN2Generator(nn.Module):
    """SinCUT's generator (``netG='stylegan2'``); fully convolutional, so it translates the whole
    image at test time. Image sides must be divisible by ``2 ** n_downsampling``."""

    def __init__(self, ngf: int = 10, crop_size: int = 64, n_downsampling: int = 1, n_blocks: int = 6,
                 inject_noise: bool = True):
        super().__init__()
        if n_downsampling < 0 or n_blocks < 0:
            raise ConfigError(f"n_downsampling and n_blocks must be >= 0, got {n_downsampling}, {n_blocks}")
        if crop_resolution(crop_size) // 2 ** n_downsampling < 4:
            raise ConfigError(f"crop_size {crop_size} is too small for {n_downsampling} downsamplings "
                              "(the bottleneck must be at least 4 x 4)")
        self.n_downsampling = n_downsampling
        self.encoder = StyleGAN2Encoder(ngf, crop_size, n_downsampling, n_blocks)
        self.decoder = StyleGAN2Decoder(ngf, crop_size, n_downsampling, n_blocks, inject_noise)

    @property
    def num_encoder_layers(self) -> int:
        return len(self.encoder.convs)

    @contextmanager
    def noise_drawn_by(self, draw: NoiseDraw) -> Iterator[None]:
        """Within the block, every noise injection takes its noise from ``draw`` (e.g. this process's
        rows of the noise of a batch shared by several processes); afterwards from the global RNG."""
        injections = [m for m in self.modules() if isinstance(m, NoiseInjection)]
        for m in injections:
            m.draw = draw
        try:
            yield
        finally:
            for m in injections:
                m.draw = None

    def features_survive_forward(self, layers: Sequence[int]) -> bool:
        """The encoder's activations a full pass returns are those ``encode_only=True`` returns: no
        layer of this generator works in place."""
        return True

    def forward(self, x: torch.Tensor, layers: Sequence[int] = (), encode_only: bool = False):
        """Without ``layers``: the translated image. With ``layers`` (strictly increasing indices
        into ``encoder.convs``): ``encode_only=True`` returns their outputs (the encoder stops after
        the last one; the official runs it to the end, with the same values); otherwise
        ``(image, features)``."""
        layers = [int(i) for i in layers]
        n = self.num_encoder_layers
        if any(not 0 <= i < n for i in layers) or any(a >= b for a, b in zip(layers, layers[1:])):
            raise ValueError(f"layers must be strictly increasing indices in [0, {n - 1}], got {layers}")
        if x.shape[-1] % 2 ** self.n_downsampling or x.shape[-2] % 2 ** self.n_downsampling:
            raise ValueError(f"image sides must be divisible by {2 ** self.n_downsampling}, got "
                             f"{tuple(x.shape[-2:])}")
        feats, wanted = [], set(layers)
        feat = x
        for i, layer in enumerate(self.encoder.convs):
            feat = layer(feat)
            if i in wanted:
                feats.append(feat)
            if encode_only and layers and i == layers[-1]:
                return feats
        if encode_only:
            return feats
        image = self.decoder(feat)
        return (image, feats) if layers else image


# --------------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------------
class StyleGAN2Discriminator(nn.Module):
    """SinCUT's discriminator (``netD='stylegan2'``): one logit (B, 1) per ``crop_size`` crop."""

    def __init__(self, ndf: int = 8, crop_size: int = 64):
        super().__init__()
        ch = discriminator_channels(ndf)
        size = crop_resolution(crop_size)
        if size < 8:
            raise ConfigError(f"crop_size {crop_size} is too small for the StyleGAN2 discriminator (>= 8)")
        self.size = size
        convs: list[nn.Module] = [ConvLayer(3, ch[size], 1)]
        in_channels = ch[size]
        for i in range(int(math.log2(size)), 2, -1):
            convs.append(ResBlock(in_channels, ch[2 ** (i - 1)]))
            in_channels = ch[2 ** (i - 1)]
        self.convs = nn.Sequential(*convs)
        self.final_conv = ConvLayer(in_channels, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 4 * 4, ch[4], activation=True),
                                          EqualLinear(ch[4], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"the discriminator takes {self.size} x {self.size} crops, got {tuple(x.shape[-2:])}")
        out = self.final_conv(self.convs(x))
        return self.final_linear(out.flatten(1))


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------
def r1_penalty(real_pred: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """SinCUT's ``R1_loss`` without the weight: ``0.5 * mean_b sum |d sum(D(x)) / d x_b|^2`` (the
    gradient with a graph, so the penalty trains D). ``real_images`` must require gradients."""
    grad, = torch.autograd.grad(real_pred.sum(), real_images, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()
