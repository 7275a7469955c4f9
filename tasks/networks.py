"""The CUT / CycleGAN framework's networks, shared by the single-modal, single-image and compression
tasks (the compression teacher is this ResNet). They follow the official CUT code
(taesungp/contrastive-unpaired-translation, ``models/networks.py``) layer for layer.

Defaults are CUT's: ``netG=resnet_9blocks``, ``normG=normD=instance``, antialiased down- and
upsampling (``no_antialias=no_antialias_up=False``), ``netD=basic`` (3-layer PatchGAN),
``init_type=xavier``, ``init_gain=0.02``. Module and attribute names (``model``, ``conv_block``, the
``filt`` buffers) mirror the official ones, so official state dicts load with ``load_state_dict``.

Layer indices of the default (antialiased, two downsamplings) generator, ``G.model[i]``::

    0      ReflectionPad2d(3)                 input_nc x (H+6)
    1-3    Conv7x7(input_nc->ngf), norm, ReLU  ngf      x H
    4-7    Conv3x3 s1 (ngf->2ngf), norm, ReLU, Downsample       (4: 2ngf x H, 7: 2ngf x H/2)
    8-11   Conv3x3 s1 (2ngf->4ngf), norm, ReLU, Downsample      (8: 4ngf x H/2, 11: 4ngf x H/4)
    12 ... 11+n_blocks   ResnetBlock(4ngf)                       4ngf x H/4
    then per upsampling: Upsample, Conv3x3, norm, ReLU; then ReflectionPad2d(3), Conv7x7, Tanh

so CUT's ``nce_layers='0,4,8,12,16'`` are: padded input, the first (stride-1) conv of each
antialiased downsampling block -- taken *before* its blur-pool, hence at H and H/2 --, the output of
ResnetBlock 1 and of ResnetBlock 5 (the middle one of 9). With ``antialias=False`` each downsampling
block has 3 layers instead of 4 and the same indices mean other layers (see ``cut_layer_ids``).

Weight init uses the global torch RNG (as ``torch.nn.init`` does): seed with ``torch.manual_seed``
before building/initialising a network for reproducible weights.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.errors import ConfigError

__all__ = [
    "get_filter", "get_pad_layer", "get_norm_layer", "Downsample", "Upsample", "ResnetBlock",
    "ResnetGenerator", "NLayerDiscriminator", "init_weights", "init_net", "GANLoss", "cut_layer_ids",
]


# --------------------------------------------------------------------------------------------------
# Blur-pool (antialiasing) helpers
# --------------------------------------------------------------------------------------------------
def get_filter(filt_size: int = 3) -> torch.Tensor:
    """2-D binomial blur kernel of side ``filt_size`` (1..7), normalised to sum 1.

    The 1-D taps are row ``filt_size-1`` of Pascal's triangle (3 -> [1, 2, 1], 4 -> [1, 3, 3, 1]);
    the kernel is their outer product divided by its sum.
    """
    if not 1 <= filt_size <= 7:
        raise ValueError(f"filt_size must be in 1..7, got {filt_size}")
    a = torch.tensor([math.comb(filt_size - 1, k) for k in range(filt_size)], dtype=torch.get_default_dtype())
    filt = a[:, None] * a[None, :]
    return filt / filt.sum()


_PAD_LAYERS = {"refl": nn.ReflectionPad2d, "reflect": nn.ReflectionPad2d,
               "repl": nn.ReplicationPad2d, "replicate": nn.ReplicationPad2d, "zero": nn.ZeroPad2d}


def get_pad_layer(pad_type: str) -> type[nn.Module]:
    """Padding module class for 'refl'/'reflect', 'repl'/'replicate' or 'zero'."""
    try:
        return _PAD_LAYERS[pad_type]
    except KeyError:
        raise ConfigError(f"unknown pad type {pad_type!r}; expected one of {sorted(_PAD_LAYERS)}") from None


class Downsample(nn.Module):
    """Antialiased downsampling (blur-pool): pad, then depthwise blur with stride ``stride``.

    Padding is ``(filt_size-1)/2`` (floor left/top, ceil right/bottom) plus ``pad_off``; for the
    default ``filt_size=3``, ``stride=2`` an even H x W input becomes H/2 x W/2.
    """

    def __init__(self, channels: int, pad_type: str = "reflect", filt_size: int = 3, stride: int = 2,
                 pad_off: int = 0):
        super().__init__()
        self.filt_size, self.stride, self.pad_off, self.channels = filt_size, stride, pad_off, channels
        lo, hi = (filt_size - 1) // 2, filt_size // 2  # floor / ceil of (filt_size - 1) / 2
        self.pad_sizes = [lo + pad_off, hi + pad_off, lo + pad_off, hi + pad_off]
        self.register_buffer("filt", get_filter(filt_size)[None, None].repeat(channels, 1, 1, 1))
        self.pad = get_pad_layer(pad_type)(self.pad_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.filt_size == 1:  # plain subsampling
            x = self.pad(x) if self.pad_off else x
            return x[:, :, ::self.stride, ::self.stride]
        return F.conv2d(self.pad(x), self.filt, stride=self.stride, groups=x.shape[1])


class Upsample(nn.Module):
    """Antialiased upsampling: replicate-pad by 1, depthwise transposed conv with the blur kernel
    (scaled by ``stride**2``), then crop, so H x W becomes 2H x 2W (for ``stride=2``)."""

    def __init__(self, channels: int, pad_type: str = "repl", filt_size: int = 4, stride: int = 2):
        super().__init__()
        self.filt_size, self.stride, self.channels = filt_size, stride, channels
        self.filt_odd = filt_size % 2 == 1
        self.pad_size = (filt_size - 1) // 2
        filt = get_filter(filt_size) * stride ** 2
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))
        self.pad = get_pad_layer(pad_type)([1, 1, 1, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(self.pad(x), self.filt, stride=self.stride, padding=1 + self.pad_size,
                                 groups=x.shape[1])[:, :, 1:, 1:]
        return out if self.filt_odd else out[:, :, :-1, :-1]


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------
def get_norm_layer(name: str = "instance") -> Callable[[int], nn.Module]:
    """Factory ``channels -> norm module`` for 'instance' (InstanceNorm2d, no affine, no running
    stats), 'batch' (BatchNorm2d, affine, running stats) or 'none' (Identity)."""
    if name == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if name == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if name == "none":
        return lambda channels: nn.Identity()
    raise ConfigError(f"unknown norm {name!r}; expected 'instance', 'batch' or 'none'")


def _conv_bias(norm: str) -> bool:
    """Official rule: convs followed by a norm layer carry a bias only for instance norm. With
    'none' the official test ``norm_layer.func == nn.InstanceNorm2d`` is also False, so those convs
    have no bias either (a quirk we keep for parameter/state-dict parity)."""
    return norm == "instance"


# --------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------
class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, norm, ReLU, (dropout 0.5), pad, conv3x3, norm](x)."""

    def __init__(self, dim: int, padding_type: str, norm_layer: Callable[[int], nn.Module],
                 use_dropout: bool, use_bias: bool):
        super().__init__()
        if padding_type not in ("reflect", "replicate", "zero"):
            raise ConfigError(f"unknown padding_type {padding_type!r}; expected reflect|replicate|zero")

        def conv() -> list[nn.Module]:
            pad = [] if padding_type == "zero" else [get_pad_layer(padding_type)(1)]
            p = 1 if padding_type == "zero" else 0
            return pad + [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim)]

        layers = conv() + [nn.ReLU(inplace=True)] + ([nn.Dropout(0.5)] if use_dropout else []) + conv()
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CUT's ResNet generator (two downsamplings, ``n_blocks`` residual blocks, two upsamplings),
    all in one ``nn.Sequential`` (``self.model``) so that layer indices match the official ones.

    ReLUs are in-place, as in the official code, and that is observable: a feature requested at a
    layer whose output flows unchanged into a ReLU -- a norm layer, or a conv when ``norm='none'``
    (the Identity passes the same tensor on) -- comes back post-ReLU whenever the forward runs past
    that ReLU (a later layer requested, or ``encode_only=False``). With antialiasing and instance/batch
    norm none of CUT's nce layers (0, 4, 8, 12, 16) is affected; with ``norm='none'`` layers 4 and 8
    are, in the official code and here alike. Without antialiasing index 8 is the norm of the second
    down-sampling block and comes back post-ReLU (docs/fidelity.md, "Feature layers"; the default
    ``feature_layers: null`` picks that block's conv, index 7, instead).
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", antialias: bool = True, antialias_up: bool = True,
                 padding_type: str = "reflect", use_dropout: bool = False):
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        self.n_blocks, self.antialias, self.antialias_up = n_blocks, antialias, antialias_up
        norm_layer, bias = get_norm_layer(norm), _conv_bias(norm)

        model: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, padding=0, bias=bias),
                                  norm_layer(ngf), nn.ReLU(inplace=True)]
        ch = ngf
        for _ in range(2):  # downsampling
            if antialias:
                model += [nn.Conv2d(ch, 2 * ch, 3, stride=1, padding=1, bias=bias), norm_layer(2 * ch),
                          nn.ReLU(inplace=True), Downsample(2 * ch)]
            else:
                model += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1, bias=bias), norm_layer(2 * ch),
                          nn.ReLU(inplace=True)]
            ch *= 2
        model += [ResnetBlock(ch, padding_type, norm_layer, use_dropout, bias) for _ in range(n_blocks)]
        for _ in range(2):  # upsampling
            if antialias_up:
                model += [Upsample(ch), nn.Conv2d(ch, ch // 2, 3, stride=1, padding=1, bias=bias)]
            else:
                model += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1,
                                             bias=bias)]
            model += [norm_layer(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ch, output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor, layers: Sequence[int] = (), encode_only: bool = False):
        """Without ``layers``: the translated image (tanh, in (-1, 1)).

        With ``layers`` (strictly increasing indices into ``self.model``): ``feats[k]`` is the
        activation right after ``self.model[layers[k]]``. ``encode_only=True`` returns ``feats`` and
        stops after the last requested layer; otherwise returns ``(image, feats)``.

        The official code treats -1 specially (it appends ``len(model)`` to the caller's list, which
        never matches a layer, so no feature is added and ``encode_only`` no longer stops early);
        that path is never used by CUT and is rejected here, as are unsorted/duplicate indices (the
        official loop would silently drop features for those).
        """
        layers = [int(i) for i in layers]
        if not layers:
            return self.model(x)
        in_range = all(0 <= i < len(self.model) for i in layers)
        if not in_range or any(a >= b for a, b in zip(layers, layers[1:])):
            raise ValueError(f"layers must be strictly increasing indices in [0, {len(self.model) - 1}], "
                             f"got {layers}")
        wanted, last, feats = set(layers), layers[-1], []
        feat = x
        for i, layer in enumerate(self.model):
            feat = layer(feat)
            if i in wanted:
                feats.append(feat)
            if encode_only and i == last:
                return feats
        return feat, feats

    def features_survive_forward(self, layers: Sequence[int]) -> bool:
        """Whether the activations at ``layers`` that a full pass (``encode_only=False``) returns are
        those ``encode_only=True`` returns: no in-place ReLU overwrites them later in the pass (the
        layer's output flows, through Identity layers, into an in-place ReLU; see the class doc)."""
        for i in layers:
            j = i + 1
            while j < len(self.model) and isinstance(self.model[j], nn.Identity):
                j += 1
            if j < len(self.model) and isinstance(self.model[j], nn.ReLU) and self.model[j].inplace:
                return False
        return True

    @torch.no_grad()
    def encoder_shapes(self, layers: Sequence[int], image_size: int = 64) -> list[tuple[int, int, int]]:
        """(C, H, W) of the features at ``layers`` for an ``image_size``-square input (dummy forward
        in eval mode on the module's device; training mode and BatchNorm statistics are untouched)."""
        p = next(self.parameters())
        conv0 = self.model[1]
        x = torch.zeros(1, conv0.in_channels, image_size, image_size, device=p.device, dtype=p.dtype)
        was_training = self.training
        self.eval()
        try:
            feats = self(x, layers, encode_only=True)
        finally:
            self.train(was_training)
        return [tuple(f.shape[1:]) for f in feats]

    def encoder_channels(self, layers: Sequence[int], image_size: int = 64) -> list[int]:
        """Channel count of each requested layer's feature (what the projection heads need)."""
        return [c for c, _, _ in self.encoder_shapes(layers, image_size)]


def cut_layer_ids(n_blocks: int = 9, antialias: bool = True) -> list[int]:
    """CUT's ``nce_layers='0,4,8,12,16'`` carried over to a generator with ``n_blocks`` blocks.

    Meaning of the official five (9 blocks, antialiased): padded input, the first conv of down block
    1, the first conv of down block 2, the output of ResnetBlock 1, the output of ResnetBlock 5 --
    the middle block, ``(n_blocks + 1) // 2``. For other ``n_blocks`` we keep that meaning: ResnetBlock
    1 and ResnetBlock ``(n_blocks + 1) // 2`` (merged when equal, i.e. for 1 or 2 blocks; dropped when
    there are no blocks). 9 -> [0, 4, 8, 12, 16]; 6 -> [0, 4, 8, 12, 14]; 4 -> [0, 4, 8, 12, 13];
    2 -> [0, 4, 8, 12].

    With ``antialias=False`` (3 layers per down block) the same meaning maps to
    [0, 4, 7, 10, 9 + mid] (official CUT would still use 0,4,8,12,16 there, i.e. other layers).
    """
    if n_blocks < 0:
        raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
    down1, down2, first_block = (4, 8, 12) if antialias else (4, 7, 10)
    ids = [0, down1, down2]
    if n_blocks:
        ids += sorted({first_block, first_block + (n_blocks + 1) // 2 - 1})
    return ids


# --------------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------------
class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator. Kernel 4, padding 1, LeakyReLU(0.2); channels ndf, 2ndf, ... capped at
    8ndf. Each of the ``n_layers`` downsampling steps is a stride-2 conv, or (antialiased, CUT's
    default) a stride-1 conv followed by ``Downsample``. Then a stride-1 conv (with norm) and a
    stride-1 conv to 1 channel. The first and last convs always have a bias and no norm.

    Output side for an S-square input (antialias or not, S divisible by 8): S/8 - 2, e.g.
    256 -> 30, 64 -> 6.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 antialias: bool = True):
        super().__init__()
        norm_layer, bias = get_norm_layer(norm), _conv_bias(norm)
        kw, padw = 4, 1
        stride = 1 if antialias else 2
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kw, stride=stride, padding=padw),
                                nn.LeakyReLU(0.2, inplace=True)]
        if antialias:
            seq.append(Downsample(ndf))
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, kw, stride=stride, padding=padw, bias=bias),
                    norm_layer(ndf * mult), nn.LeakyReLU(0.2, inplace=True)]
            if antialias:
                seq.append(Downsample(ndf * mult))
        prev, mult = mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=padw, bias=bias),
                norm_layer(ndf * mult), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=padw)]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --------------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------------
def init_weights(net: nn.Module, init_type: str = "xavier", gain: float = 0.02) -> nn.Module:
    """Official ``init_weights``: every module whose class name contains 'Conv' or 'Linear' and that
    has a weight gets ``normal(0, gain)`` | ``xavier_normal(gain)`` | ``kaiming_normal(a=0, fan_in)``
    (gain unused, as official) | ``orthogonal(gain)``, and a zero bias; ``BatchNorm2d`` gets weight
    ``normal(1, gain)`` and zero bias. Blur buffers and affine-free InstanceNorm are untouched.
    Uses the global torch RNG: call ``torch.manual_seed`` first for reproducibility.
    """
    inits = {
        "normal": lambda w: nn.init.normal_(w, 0.0, gain),
        "xavier": lambda w: nn.init.xavier_normal_(w, gain=gain),
        "kaiming": lambda w: nn.init.kaiming_normal_(w, a=0, mode="fan_in"),
        "orthogonal": lambda w: nn.init.orthogonal_(w, gain=gain),
    }
    if init_type not in inits:
        raise ConfigError(f"unknown init_type {init_type!r}; expected one of {sorted(inits)}")

    @torch.no_grad()
    def init_module(m: nn.Module) -> None:
        name = type(m).__name__
        weight = getattr(m, "weight", None)
        if weight is not None and ("Conv" in name or "Linear" in name):
            inits[init_type](weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif "BatchNorm2d" in name:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(init_module)
    return net


def init_net(net: nn.Module, init_type: str = "xavier", gain: float = 0.02,
             device: torch.device | str | None = None) -> nn.Module:
    """Move ``net`` to ``device`` (if given) and initialise it with ``init_weights``."""
    if device is not None:
        net.to(device)
    return init_weights(net, init_type, gain)


# --------------------------------------------------------------------------------------------------
# Adversarial loss
# --------------------------------------------------------------------------------------------------
class GANLoss(nn.Module):
    """Adversarial objectives on raw discriminator outputs (no sigmoid in D).

    * ``lsgan``: MSE against a target map of ``real_label``/``fake_label`` (1/0) shaped like the
      prediction (CUT's default ``gan_mode``).
    * ``vanilla``: BCE-with-logits against the same targets.
    * ``nonsaturating``: ``softplus(-pred)`` for real targets, ``softplus(pred)`` for fake.
    * ``wgangp``: ``-mean(pred)`` for real, ``mean(pred)`` for fake (gradient penalty is separate).
    * ``hinge`` (not in the official code): D: ``relu(1 - pred)`` real / ``relu(1 + pred)`` fake;
      G (``for_discriminator=False``): ``-mean(pred)``.

    Every mode returns a scalar mean. (The official ``nonsaturating`` returns the per-sample means,
    shape (B,), and CUT calls ``.mean()`` on it -- the same number.)
    """

    MODES = ("lsgan", "vanilla", "nonsaturating", "wgangp", "hinge")

    def __init__(self, mode: str = "lsgan", target_real_label: float = 1.0, target_fake_label: float = 0.0):
        super().__init__()
        if mode not in self.MODES:
            raise ConfigError(f"unknown gan mode {mode!r}; expected one of {self.MODES}")
        self.mode = mode
        self.register_buffer("real_label", torch.tensor(target_real_label))
        self.register_buffer("fake_label", torch.tensor(target_fake_label))

    def target_tensor(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        label = self.real_label if target_is_real else self.fake_label
        return label.to(prediction.dtype).expand_as(prediction)

    def forward(self, prediction: torch.Tensor, target_is_real: bool,
                for_discriminator: bool = True) -> torch.Tensor:
        if self.mode == "lsgan":
            return F.mse_loss(prediction, self.target_tensor(prediction, target_is_real))
        if self.mode == "vanilla":
            target = self.target_tensor(prediction, target_is_real)
            return F.binary_cross_entropy_with_logits(prediction, target)
        if self.mode == "nonsaturating":
            return F.softplus(-prediction if target_is_real else prediction).mean()
        if self.mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        # hinge
        if not for_discriminator:
            return -prediction.mean()
        return F.relu(1.0 - prediction).mean() if target_is_real else F.relu(1.0 + prediction).mean()
