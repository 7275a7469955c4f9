"""Cityscapes segmentation with DRN-D-22 / DRN-D-105 (Yu, Koltun, Funkhouser, "Dilated Residual
Networks", CVPR 2017) for the "FCN scores" of label->photo translation.

The networks are written here from the description in fyu/drn's ``drn.py`` and ``segment.py``
(``DRNSeg``) so that the official Cityscapes checkpoints (``drn_d_22_cityscapes.pth``,
``drn-d-105_ms_cityscapes.pth``: plain state dicts of ``DRNSeg``) load with ``strict=True``:

* ``base``: an ``nn.Sequential`` of the nine DRN-D stages (the classifier's children without its
  avgpool and fc), so keys are ``base.<stage>.<...>``:

  - ``base.0``: conv 7x7 (3->16, no bias), BN, ReLU (``base.0.0.weight``, ``base.0.1.running_mean``);
  - ``base.1`` / ``base.2``: conv 3x3 + BN + ReLU stages of 16 / 32 channels (stride 1 / 2);
  - ``base.3`` ... ``base.6``: residual stages of 64, 128, 256, 512 planes (BasicBlock for D-22,
    Bottleneck x4 for D-105; strides 2, 2, 1, 1; dilations 1, 1, 2, 4), blocks named
    ``conv1/bn1/conv2/bn2[/conv3/bn3]`` with ``downsample.0`` (1x1 conv) / ``downsample.1`` (BN)
    where the shape changes;
  - ``base.7`` / ``base.8``: conv 3x3 + BN + ReLU stages of 512 channels, dilation 2 / 1;

* ``seg``: 1x1 conv to the 19 train ids (with bias);
* ``up``: ``ConvTranspose2d(19, 19, 16, stride=8, padding=4, groups=19, bias=False)`` initialised to
  bilinear interpolation and frozen (it is in the checkpoints too).

The forward pass returns per-pixel log-probabilities at 8x the feature resolution (the input size
for sizes divisible by 8), as ``DRNSeg`` does (its ``LogSoftmax`` over classes).

Two published evaluation protocols (:data:`PROTOCOLS`) are selectable in
:class:`CityscapesSegmenter`:

* ``cut`` (CUT, Hneg-SRC; Hneg-SRC's ``Single-modal/get_mAP.py``): DRN-D-22; translated photos are
  resized with PIL bicubic to 256x128 (W x H), normalised with the Cityscapes mean/std of fyu/drn's
  ``datasets/cityscapes/info.json``, labelled at 256x128 (argmax of the log-probabilities); the
  ground truth is the *colour* label image (the translation's input) resized to 256x128 (PIL's
  default filter, bicubic for RGB) and decoded to the nearest palette colour by L1 distance, the
  void colour (black) giving 255 (ignored).
* ``gan_compression`` (GAN Compression, ``metric/mIoU_score.py``): DRN-D-105; the generated images
  (256x256 in its Cityscapes setting) are fed at their own size, normalised with the same mean/std;
  the log-probabilities (upsampled x8 inside the network) are resized bilinearly to 2048x1024 and
  argmax-ed, against gtFine ``labelTrainIds`` at 2048x1024.

Scores (mIoU, pixel and class accuracy) are computed by :mod:`benchmark.core.metrics.segmentation`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .. import weights
from ..checkpoint import load_failure
from ..errors import BenchmarkError, WeightsError
from ..hashing import cached_sha256

__all__ = [
    "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "CITYSCAPES_VOID_COLOUR", "CITYSCAPES_MEAN",
    "CITYSCAPES_STD", "IGNORE_INDEX", "NUM_CLASSES", "DRN_ARCHS", "DRNSeg", "bilinear_up_kernel",
    "load_drn_checkpoint", "decode_colour_labels", "colourise", "SegProtocol", "PROTOCOLS",
    "CityscapesSegmenter", "resize_log_probs",
]

#: The 19 Cityscapes train ids (0..18), in order.
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)
#: The official colours (cityscapesScripts labels.py), indexed by train id.
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
#: Colour of unlabelled / void pixels in colour label images.
CITYSCAPES_VOID_COLOUR = (0, 0, 0)
NUM_CLASSES = 19
IGNORE_INDEX = 255
#: Mean / std of Cityscapes training images (fyu/drn datasets/cityscapes/info.json; the same values
#: are hard-coded in GAN Compression's metric/mIoU_score.py).
CITYSCAPES_MEAN = (0.29010095242892997, 0.32808144844279574, 0.28696394422942517)
CITYSCAPES_STD = (0.1829540508368939, 0.18656561047509476, 0.18447508988480435)

_STAGE_CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)


# -- the networks ------------------------------------------------------------------------------------

def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (dilated alike) with an identity or projected shortcut."""
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _bn(planes)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, dilated) -> 1x1 (x4 channels) with an identity or projected shortcut."""
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _bn(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + shortcut)


#: arch -> (block type, blocks per stage 1..8)
DRN_ARCHS = {
    "drn_d_22": (BasicBlock, (1, 1, 2, 2, 2, 2, 1, 1)),
    "drn_d_105": (Bottleneck, (1, 1, 3, 4, 23, 3, 1, 1)),
}


def _plain_stage(c_in: int, c_out: int, n: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(n):
        mods += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride if i == 0 else 1,
                           padding=dilation, dilation=dilation, bias=False), _bn(c_out), nn.ReLU()]
    return nn.Sequential(*mods)


def _residual_stage(block, c_in: int, planes: int, n: int, stride: int = 1,
                    dilation: int = 1) -> nn.Sequential:
    c_out = planes * block.expansion
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _bn(c_out))
    blocks = [block(c_in, planes, stride, dilation, downsample)]
    blocks += [block(c_out, planes, 1, dilation) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


def _drn_d_base(arch: str) -> tuple[nn.Sequential, int]:
    block, n = DRN_ARCHS[arch]
    ch = _STAGE_CHANNELS
    stages = [nn.Sequential(nn.Conv2d(3, ch[0], 7, 1, padding=3, bias=False), _bn(ch[0]), nn.ReLU()),
              _plain_stage(ch[0], ch[0], n[0]),
              _plain_stage(ch[0], ch[1], n[1], stride=2)]
    c = ch[1]
    for planes, count, stride, dilation in ((ch[2], n[2], 2, 1), (ch[3], n[3], 2, 1),
                                            (ch[4], n[4], 1, 2), (ch[5], n[5], 1, 4)):
        stages.append(_residual_stage(block, c, planes, count, stride, dilation))
        c = planes * block.expansion
    stages.append(_plain_stage(c, ch[6], n[6], dilation=2))
    stages.append(_plain_stage(ch[6], ch[7], n[7], dilation=1))
    return nn.Sequential(*stages), ch[7]


def bilinear_up_kernel(size: int) -> torch.Tensor:
    """(size, size) kernel of a transposed convolution that interpolates bilinearly."""
    f = math.ceil(size / 2)
    centre = (2 * f - 1 - f % 2) / (2.0 * f)
    k = 1 - torch.abs(torch.arange(size, dtype=torch.float64) / f - centre)
    return torch.outer(k, k).float()


class DRNSeg(nn.Module):
    """DRN-D base + 1x1 classifier + frozen bilinear x8 upsampling; returns log-probabilities."""

    def __init__(self, arch: str = "drn_d_22", num_classes: int = NUM_CLASSES):
        super().__init__()
        if arch not in DRN_ARCHS:
            raise BenchmarkError(f"unknown DRN architecture '{arch}'; known: {', '.join(DRN_ARCHS)}")
        self.arch = arch
        self.base, out_dim = _drn_d_base(arch)
        self.seg = nn.Conv2d(out_dim, num_classes, 1, bias=True)
        self.up = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, padding=4,
                                     output_padding=0, groups=num_classes, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialisation: convs N(0, sqrt(2 / (k*k*out))), BN (1, 0), seg bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1)
                m.bias.zero_()
        self.seg.bias.zero_()
        self.up.weight.copy_(bilinear_up_kernel(16).expand_as(self.up.weight))
        self.up.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.up(self.seg(self.base(x))), dim=1)


def load_drn_checkpoint(model: DRNSeg, path: str | Path) -> None:
    """Load an official ``DRNSeg`` state dict (also accepted: ``{'state_dict': ...}`` and keys with a
    DataParallel ``module.`` prefix) with ``strict=True``; :class:`WeightsError` names what differs."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"{path}: cannot load as a DRN state dict ({load_failure(path, exc)})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{path}: expected a DRNSeg state dict, got {type(state).__name__}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: does not fit {model.arch} (DRNSeg, {NUM_CLASSES} classes): "
                           f"{exc}") from exc


# -- colour label images ------------------------------------------------------------------------------

def _to_channels_last(rgb) -> tuple[torch.Tensor, bool]:
    """(tensor (..., H, W, 3) int32, whether the input was a numpy array)."""
    if isinstance(rgb, np.ndarray):
        if rgb.shape[-1] != 3:
            raise BenchmarkError(f"colour labels: numpy input must be (..., H, W, 3), got {rgb.shape}")
        return torch.from_numpy(np.ascontiguousarray(rgb)).to(torch.int32), True
    t = torch.as_tensor(rgb)
    if t.dim() < 3 or t.shape[-3] != 3:
        raise BenchmarkError(f"colour labels: tensor input must be (..., 3, H, W), got {tuple(t.shape)}")
    return t.movedim(-3, -1).to(torch.int32), False


def decode_colour_labels(rgb, max_distance: int | None = None):
    """Colour label images -> train ids (int64): each pixel takes the palette colour nearest in L1
    distance among the 19 classes and the void colour (black); void gives 255 (ignored), as
    Hneg-SRC's ``color2ids`` (ties go to the lower id). ``max_distance``: pixels farther than that
    from every colour also give 255.

    numpy input is channels-last (..., H, W, 3) and gives a numpy array (..., H, W); a tensor is
    channels-first (..., 3, H, W) and gives a tensor (..., H, W)."""
    x, is_numpy = _to_channels_last(rgb)
    colours = list(CITYSCAPES_PALETTE) + [CITYSCAPES_VOID_COLOUR]
    ids = [*range(NUM_CLASSES), IGNORE_INDEX]
    best = torch.full(x.shape[:-1], IGNORE_INDEX, dtype=torch.int64)
    best_d = torch.full(x.shape[:-1], 1 << 30, dtype=torch.int32)
    for train_id, colour in zip(ids, colours):
        d = (x - torch.tensor(colour, dtype=torch.int32)).abs().sum(-1)
        closer = d < best_d
        best[closer] = train_id
        best_d = torch.where(closer, d, best_d)
    if max_distance is not None:
        best[best_d > max_distance] = IGNORE_INDEX
    return best.numpy() if is_numpy else best


def colourise(train_ids):
    """Train ids -> palette colours (uint8); ids outside [0, 19) become the void colour. numpy gives
    (..., H, W, 3), a tensor (..., 3, H, W)."""
    is_numpy = isinstance(train_ids, np.ndarray)
    ids = torch.as_tensor(train_ids).to(torch.int64)
    table = torch.tensor(list(CITYSCAPES_PALETTE) + [CITYSCAPES_VOID_COLOUR], dtype=torch.uint8)
    idx = torch.where((ids >= 0) & (ids < NUM_CLASSES), ids, torch.full_like(ids, NUM_CLASSES))
    out = table[idx]
    return out.numpy() if is_numpy else out.movedim(-1, -3)


# -- protocols -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SegProtocol:
    name: str
    arch: str
    weights_key: str
    input_size: tuple[int, int] | None
    """(H, W) the images are resized to (PIL bicubic) before the network; None: as given."""
    output_size: tuple[int, int] | None
    """(H, W) the log-probabilities are resized to (bilinear) before the argmax; None: as computed."""
    labels: str
    notes: str


PROTOCOLS: dict[str, SegProtocol] = {
    "cut": SegProtocol(
        name="cut", arch="drn_d_22", weights_key="drn_d_22_cityscapes", input_size=(128, 256),
        output_size=None,
        labels="colour label images resized to 256x128 (PIL bicubic), nearest palette colour (L1)",
        notes=("CUT / Hneg-SRC protocol (Hneg-SRC Single-modal/get_mAP.py): DRN-D-22, photos resized "
               "to 256x128 (PIL bicubic), Cityscapes mean/std, argmax at 256x128. CUT trained its own "
               "DRN-D-22 at 256x128 and did not release it; Hneg-SRC released one (Google Drive). The "
               "checkpoint used here is whatever file sits at drn_d_22_cityscapes.pth: state its "
               "origin with the numbers.")),
    "gan_compression": SegProtocol(
        name="gan_compression", arch="drn_d_105", weights_key="drn_d_105_cityscapes",
        input_size=None, output_size=(1024, 2048),
        labels="gtFine labelTrainIds at 2048x1024",
        notes=("GAN Compression protocol (metric/mIoU_score.py): DRN-D-105 "
               "(drn-d-105_ms_cityscapes.pth), generated images at their own size (256x256), "
               "Cityscapes mean/std, log-probabilities resized bilinearly to 2048x1024, argmax, "
               "against gtFine trainIds.")),
}


def resize_log_probs(log_probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) scores to (H, W): half-pixel centres, no antialiasing, which
    for upsampling equals the per-channel PIL ``BILINEAR`` resize of GAN Compression's
    ``resize_4d_tensor``."""
    if tuple(log_probs.shape[-2:]) == tuple(size):
        return log_probs
    return F.interpolate(log_probs, size=size, mode="bilinear", align_corners=False)


def _pil_resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, *size) with PIL bicubic, image by image."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = []
    for img in images.cpu():
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        out.append(torch.from_numpy(np.array(pil.resize((size[1], size[0]), Image.BICUBIC))).permute(2, 0, 1))
    return torch.stack(out)


class CityscapesSegmenter:
    """A DRN Cityscapes segmenter following one published protocol (``'cut'`` or
    ``'gan_compression'``); the checkpoint comes from :func:`benchmark.core.weights.locate`."""

    num_classes = NUM_CLASSES
    ignore_index = IGNORE_INDEX
    class_names = CITYSCAPES_CLASSES

    def __init__(self, protocol: Literal["cut", "gan_compression"] = "cut",
                 weights_dir: str | Path | None = None, device: torch.device | str | None = None,
                 cache_dir: str | Path | None = None):
        if protocol not in PROTOCOLS:
            raise BenchmarkError(f"unknown Cityscapes protocol '{protocol}'; known: {', '.join(PROTOCOLS)}")
        self.protocol = PROTOCOLS[protocol]
        self.device = torch.device(device if device is not None
                                   else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.checkpoint = weights.locate(self.protocol.weights_key, weights_dir, cache_dir)
        net = DRNSeg(self.protocol.arch)
        load_drn_checkpoint(net, self.checkpoint)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.register_normalisation()
        # The file's hash, not only its name: its hash is not published, so scores from two different
        # files of that name would otherwise read as one protocol.
        digest = cached_sha256(self.checkpoint, cache_dir)[:12]
        self.description = (f"{self.protocol.arch} ({self.checkpoint.name}, sha256 {digest}), protocol "
                            f"'{self.protocol.name}': {self.protocol.notes}")

    def register_normalisation(self) -> None:
        self.mean = torch.tensor(CITYSCAPES_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(CITYSCAPES_STD, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def log_probs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> the network's log-probabilities (N, 19, h, w), after the protocol's
        input resize, before its output resize."""
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
                or images.shape[1] != 3:
            raise BenchmarkError(f"Cityscapes segmenter: expected uint8 images (N, 3, H, W), got "
                                 f"{getattr(images, 'dtype', type(images))} "
                                 f"{tuple(getattr(images, 'shape', ()))}")
        if self.protocol.input_size is not None:
            images = _pil_resize_images(images, self.protocol.input_size)
        x = (images.to(self.device, torch.float32) / 255.0 - self.mean) / self.std
        return self.net(x)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Train ids, int64 (N, H, W) on the CPU, of uint8 photos (N, 3, H, W): (128, 256) for
        'cut', (1024, 2048) for 'gan_compression'."""
        out = []
        for s in range(0, images.shape[0], batch_size):
            lp = self.log_probs(images[s:s + batch_size])
            if self.protocol.output_size is not None:  # one image at a time: 19 x 2048 x 1024 floats
                out += [resize_log_probs(lp[i:i + 1], self.protocol.output_size).argmax(1).cpu()
                        for i in range(lp.shape[0])]
            else:
                out.append(lp.argmax(1).cpu())
        if not out:
            h, w = self.protocol.output_size or self.protocol.input_size or images.shape[-2:]
            return torch.zeros((0, h, w), dtype=torch.int64)
        return torch.cat(out).to(torch.int64)

    def prepare_labels(self, labels) -> torch.Tensor:
        """Ground truth in the protocol's form, int64 (N, H, W): for 'cut', colour label images
        uint8 (N, 3, H, W) resized to 256x128 (PIL bicubic) and decoded; for 'gan_compression',
        train-id maps (N, 1024, 2048) checked and returned."""
        labels = torch.as_tensor(labels)
        if self.protocol.name == "cut":
            if labels.dtype != torch.uint8 or labels.dim() != 4 or labels.shape[1] != 3:
                raise BenchmarkError(f"'cut' protocol: expected colour label images uint8 (N, 3, H, W), "
                                     f"got {labels.dtype} {tuple(labels.shape)}")
            return decode_colour_labels(_pil_resize_images(labels, self.protocol.input_size))
        if labels.dim() != 3 or tuple(labels.shape[-2:]) != self.protocol.output_size:
            raise BenchmarkError(f"'gan_compression' protocol: expected train-id maps (N, 1024, 2048), "
                                 f"got {tuple(labels.shape)}")
        return labels.to(torch.int64)
