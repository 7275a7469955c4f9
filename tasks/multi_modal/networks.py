"""StarGAN v2 networks and losses (clovaai/stargan-v2, ``core/model.py`` and ``core/solver.py``), plus the
generator of the Hneg-SRC multimodal fork (jcy132/Hneg_SRC, ``Multimodal/core/model_src.py``).

Faithful to the official modules (layer order, widths, instance norms, LeakyReLU 0.2, average-pool
downsampling, nearest upsampling, residuals divided by sqrt(2), AdaIN ``(1 + gamma) * IN(x) + beta``),
with three additions for small CPU configurations and for the patch-wise hook:

* ``dim_in`` (default ``2**14 // img_size`` as officially) and ``max_conv_dim`` (default 512) are
  arguments of every network; the mapping network's hidden width ``hidden_dim`` (officially 512,
  hard-coded) too.
* ``Generator.encode_features(x, points)`` returns the encoder's activations at chosen points
  (0 = after ``from_rgb``, k = after encoder block k), with gradients: the ``encode`` of a method's
  ``TranslationPair``.
* The high-pass / face-landmark path (``w_hpf > 0``, FAN heatmaps) is not implemented: every network
  is the ``w_hpf = 0`` variant used for non-face data (AFHQ, Seasons, Weather).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def default_dim_in(img_size: int) -> int:
    """The official first width, ``2**14 // img_size`` (64 at 256 px, 256 at 64 px, 512 at 32 px)."""
    return 2 ** 14 // img_size


def _log2(img_size: int) -> int:
    n = int(round(math.log2(img_size)))
    if 2 ** n != img_size:
        raise ValueError(f"image size must be a power of two, got {img_size}")
    return n


class ResBlk(nn.Module):
    """Pre-activation residual block: [IN] LReLU conv3x3 [avgpool] [IN] LReLU conv3x3, 1x1 learned
    shortcut when widths differ, sum divided by sqrt(2)."""

    def __init__(self, dim_in: int, dim_out: int, normalize: bool = False, downsample: bool = False):
        super().__init__()
        self.actv = nn.LeakyReLU(0.2)
        self.normalize = normalize
        self.downsample = downsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _shortcut(self, x):
        if self.learned_sc:
            x = self.conv1x1(x)
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return x

    def _residual(self, x):
        if self.normalize:
            x = self.norm1(x)
        x = self.actv(x)
        x = self.conv1(x)
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        x = self.actv(x)
        return self.conv2(x)

    def forward(self, x):
        return (self._shortcut(x) + self._residual(x)) / math.sqrt(2)


class AdaIN(nn.Module):
    def __init__(self, style_dim: int, num_features: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, num_features * 2)

    def forward(self, x, s):
        h = self.fc(s).view(s.size(0), -1, 1, 1)
        gamma, beta = torch.chunk(h, chunks=2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """Decoder block (``w_hpf = 0``): AdaIN LReLU [up] conv AdaIN LReLU conv, plus the (upsampled,
    learned if widths differ) shortcut, divided by sqrt(2)."""

    def __init__(self, dim_in: int, dim_out: int, style_dim: int = 64, upsample: bool = False):
        super().__init__()
        self.actv = nn.LeakyReLU(0.2)
        self.upsample = upsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _shortcut(self, x):
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.learned_sc:
            x = self.conv1x1(x)
        return x

    def _residual(self, x, s):
        x = self.actv(self.norm1(x, s))
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv1(x)
        x = self.actv(self.norm2(x, s))
        return self.conv2(x)

    def forward(self, x, s):
        return (self._residual(x, s) + self._shortcut(x)) / math.sqrt(2)


class _EncoderDecoder(nn.Module):
    """Shared forward / feature extraction of the two generators."""

    from_rgb: nn.Module
    encode: nn.ModuleList
    decode: nn.ModuleList
    to_rgb: nn.Module
    default_feature_points: list[int]

    @property
    def num_points(self) -> int:
        return len(self.encode) + 1

    def forward(self, x, s):
        x = self.from_rgb(x)
        for block in self.encode:
            x = block(x)
        for block in self.decode:
            x = block(x, s)
        return self.to_rgb(x)

    def encode_features(self, x: torch.Tensor, points: Sequence[int]) -> list[torch.Tensor]:
        """Encoder activations at ``points`` (0 = after from_rgb, k = after encoder block k), in the
        order of ``points``; stops after the deepest point."""
        wanted = set(points)
        bad = [p for p in wanted if not 0 <= p < self.num_points]
        if bad:
            raise ValueError(f"feature points {sorted(bad)} out of range 0..{self.num_points - 1}")
        found = {}
        x = self.from_rgb(x)
        if 0 in wanted:
            found[0] = x
        for k, block in enumerate(self.encode, 1):
            if k > max(wanted):
                break
            x = block(x)
            if k in wanted:
                found[k] = x
        return [found[p] for p in points]


class Generator(_EncoderDecoder):
    """StarGAN v2 generator (``w_hpf = 0``): from_rgb; ``log2(size) - 4`` downsampling ResBlks (IN)
    and 2 bottleneck ResBlks; mirrored AdaIN decoder; to_rgb = IN, LReLU, 1x1 conv."""

    def __init__(self, img_size: int = 256, style_dim: int = 64, max_conv_dim: int = 512,
                 dim_in: int | None = None):
        super().__init__()
        dim_in = dim_in or default_dim_in(img_size)
        self.img_size = img_size
        self.from_rgb = nn.Conv2d(3, dim_in, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.to_rgb = nn.Sequential(nn.InstanceNorm2d(dim_in, affine=True), nn.LeakyReLU(0.2),
                                    nn.Conv2d(dim_in, 3, 1, 1, 0))
        repeat_num = _log2(img_size) - 4
        if repeat_num < 0:
            raise ValueError(f"StarGAN v2 generator needs img_size >= 16, got {img_size}")
        dim_out = dim_in
        for _ in range(repeat_num):
            dim_out = min(dim_in * 2, max_conv_dim)
            self.encode.append(ResBlk(dim_in, dim_out, normalize=True, downsample=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_in, style_dim, upsample=True))
            dim_in = dim_out
        for _ in range(2):
            self.encode.append(ResBlk(dim_out, dim_out, normalize=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_out, style_dim))
        # Hneg-SRC takes its patches where the encoder reaches the bottleneck resolution: the last
        # downsampling block and every bottleneck block.
        self.default_feature_points = list(range(max(1, repeat_num), len(self.encode) + 1))


class ConvBlk(nn.Module):
    """Hneg-SRC fork's ``ConvBlk``: IN, LReLU, 4x4 stride-2 conv (down) or nearest x2, IN, LReLU,
    3x3 conv (up); no residual, no style."""

    def __init__(self, dim_in: int, dim_out: int, downsample: bool = True):
        super().__init__()
        self.actv = nn.LeakyReLU(0.2)
        self.downsample = downsample
        self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
        self.conv1 = nn.Conv2d(dim_in, dim_out, 4, 2, 1) if downsample else nn.Conv2d(dim_in, dim_out, 3, 1, 1)

    def forward(self, x, s=None):
        if not self.downsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv1(self.actv(self.norm1(x)))


class HnegGenerator(_EncoderDecoder):
    """Generator of the Hneg-SRC multimodal fork: 2 ConvBlk downsamplings, 4 IN ResBlks, 4 AdaIN
    ResBlks, 2 ConvBlk upsamplings (style enters the bottleneck only); widths as StarGAN v2."""

    def __init__(self, img_size: int = 256, style_dim: int = 64, max_conv_dim: int = 512,
                 dim_in: int | None = None):
        super().__init__()
        dim_in = dim_in or default_dim_in(img_size)
        _log2(img_size)
        self.img_size = img_size
        self.from_rgb = nn.Conv2d(3, dim_in, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.to_rgb = nn.Sequential(nn.InstanceNorm2d(dim_in, affine=True), nn.LeakyReLU(0.2),
                                    nn.Conv2d(dim_in, 3, 1, 1, 0))
        dim_out = dim_in
        for _ in range(2):
            dim_out = min(dim_in * 2, max_conv_dim)
            self.encode.append(ConvBlk(dim_in, dim_out, downsample=True))
            self.decode.insert(0, ConvBlk(dim_out, dim_in, downsample=False))
            dim_in = dim_out
        for _ in range(4):
            self.encode.append(ResBlk(dim_out, dim_out, normalize=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_out, style_dim))
        # The fork returns the encoder outputs whose spatial size is 64 (at 256 px: the second
        # ConvBlk and the 4 ResBlks); here: the same blocks at any size.
        self.default_feature_points = [2, 3, 4, 5, 6]


class MappingNetwork(nn.Module):
    """z (latent_dim) -> 4 shared Linear+ReLU layers -> per-domain head (3 Linear+ReLU, Linear to style_dim)."""

    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 2, hidden_dim: int = 512):
        super().__init__()
        layers = [nn.Linear(latent_dim, hidden_dim), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, style_dim))
            for _ in range(num_domains))

    def forward(self, z, y):
        h = self.shared(z)
        out = torch.stack([layer(h) for layer in self.unshared], dim=1)  # (B, domains, style_dim)
        return out[torch.arange(y.size(0), device=y.device), y]


def _trunk(img_size: int, dim_in: int, max_conv_dim: int) -> tuple[list[nn.Module], int]:
    """conv3x3, log2(size) - 2 downsampling ResBlks, LReLU, 4x4 conv, LReLU (style encoder / D)."""
    blocks: list[nn.Module] = [nn.Conv2d(3, dim_in, 3, 1, 1)]
    dim_out = dim_in
    for _ in range(_log2(img_size) - 2):
        dim_out = min(dim_in * 2, max_conv_dim)
        blocks.append(ResBlk(dim_in, dim_out, downsample=True))
        dim_in = dim_out
    blocks += [nn.LeakyReLU(0.2), nn.Conv2d(dim_out, dim_out, 4, 1, 0), nn.LeakyReLU(0.2)]
    return blocks, dim_out


class StyleEncoder(nn.Module):
    def __init__(self, img_size: int = 256, style_dim: int = 64, num_domains: int = 2,
                 max_conv_dim: int = 512, dim_in: int | None = None):
        super().__init__()
        blocks, dim_out = _trunk(img_size, dim_in or default_dim_in(img_size), max_conv_dim)
        self.shared = nn.Sequential(*blocks)
        self.unshared = nn.ModuleList(nn.Linear(dim_out, style_dim) for _ in range(num_domains))

    def forward(self, x, y):
        h = self.shared(x).view(x.size(0), -1)
        out = torch.stack([layer(h) for layer in self.unshared], dim=1)
        return out[torch.arange(y.size(0), device=y.device), y]


class Discriminator(nn.Module):
    """Multi-task discriminator: the style-encoder trunk, then a 1x1 conv to one logit per domain;
    returns the logit of domain ``y`` for each image."""

    def __init__(self, img_size: int = 256, num_domains: int = 2, max_conv_dim: int = 512,
                 dim_in: int | None = None):
        super().__init__()
        blocks, dim_out = _trunk(img_size, dim_in or default_dim_in(img_size), max_conv_dim)
        blocks.append(nn.Conv2d(dim_out, num_domains, 1, 1, 0))
        self.main = nn.Sequential(*blocks)

    def forward(self, x, y):
        out = self.main(x).view(x.size(0), -1)
        return out[torch.arange(y.size(0), device=y.device), y]


# -- initialisation, EMA, losses (core/utils.py, core/solver.py) ----------------------------------

def he_init(module: nn.Module) -> None:
    """``core/utils.py he_init``: Kaiming-normal (fan_in, relu) weights and zero biases for every
    Conv2d and Linear (apply with ``net.apply(he_init)``)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.constant_(module.bias, 0)


@torch.no_grad()
def moving_average(model: nn.Module, model_ema: nn.Module, beta: float = 0.999) -> None:
    """``ema = lerp(param, ema, beta) = param + beta * (ema - param)`` for every parameter."""
    for param, param_ema in zip(model.parameters(), model_ema.parameters()):
        param_ema.copy_(torch.lerp(param, param_ema, beta))


def adv_loss(logits: torch.Tensor, target: int) -> torch.Tensor:
    """Non-saturating adversarial loss: binary cross entropy with logits against all-``target``."""
    if target not in (0, 1):
        raise ValueError(f"target must be 0 or 1, got {target}")
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def r1_reg(d_out: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
    """Zero-centred gradient penalty on real images: 0.5 * sum of squared gradients of ``sum(d_out)``
    w.r.t. each image, averaged over the batch (``create_graph`` so that it trains D)."""
    grad = torch.autograd.grad(outputs=d_out.sum(), inputs=x_in, create_graph=True,
                               retain_graph=True, only_inputs=True)[0]
    return 0.5 * grad.pow(2).reshape(x_in.size(0), -1).sum(1).mean(0)


def diversity_weight(initial: float, step: int, ds_iter: int) -> float:
    """lambda_ds used at (0-based) iteration ``step``: the official code subtracts
    ``initial / ds_iter`` after every iteration while it is positive, i.e.
    ``initial * (1 - step / ds_iter)``, 0 from ``step = ds_iter`` on (closed form, no float drift)."""
    if ds_iter < 1:
        raise ValueError(f"ds_iter must be >= 1, got {ds_iter}")
    return max(0.0, initial * (1.0 - step / ds_iter))
