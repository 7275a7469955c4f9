"""LPIPS (Zhang et al. 2018) through the ``lpips`` package: AlexNet trunk, version 0.1, the linear
layers calibrated on human judgements -- the LPIPS that StarGAN v2 and the multi-modal papers report.

Nothing is downloaded. ``lpips.LPIPS(pretrained=True, pnet_rand=False)`` would fetch torchvision's
AlexNet from the internet; instead the network is built with ``pnet_rand=True`` (random trunk), the
linear layers come from the file bundled in the lpips wheel (``lpips/weights/v0.1/alex.pth``, passed
as ``model_path``), and the ImageNet AlexNet ``features`` are loaded into the trunk from the
sha256-verified ``alexnet-owt-7be5be79.pth`` that :func:`benchmark.core.weights.locate` finds (weights
folder, ``$I2I_BENCH_WEIGHTS``, torch hub cache). Without that file, ``backbone='untrained'`` keeps a
seeded random trunk: the object then says so (``.untrained``, ``.description``) and its values are
not comparable with published LPIPS.

Diversity (:func:`lpips_diversity`) follows StarGAN v2's protocol: for each input, the mean LPIPS
over every pair of its outputs (10 outputs -> 45 pairs), averaged over inputs.
"""
from __future__ import annotations

import itertools
import threading
import warnings
from pathlib import Path
from typing import Literal, Sequence

import torch

from .. import weights
from ..checkpoint import load_failure
from ..errors import BenchmarkError, WeightsError

__all__ = ["LPIPSMetric", "get_lpips", "lpips_distance", "lpips_diversity", "pair_indices",
           "load_alexnet_features"]

Backbone = Literal["imagenet", "untrained"]

# lpips.pretrained_networks.alexnet keeps torchvision's AlexNet ``features`` modules under their
# original indices, split into five slices: slice1 = 0-1, slice2 = 2-4, slice3 = 5-7, slice4 = 8-9,
# slice5 = 10-11; the convolutions are features.0, .3, .6, .8 and .10.
_ALEX_CONVS = (0, 3, 6, 8, 10)
_UNTRAINED_SEED = 0

_lock = threading.Lock()
_memo: dict[tuple, "LPIPSMetric"] = {}


def _lpips_version() -> str:
    try:
        from importlib.metadata import version
        return version("lpips")
    except Exception:  # noqa: BLE001
        return "?"


def load_alexnet_features(trunk: torch.nn.Module, state_dict: dict, source: str = "state dict") -> None:
    """Load torchvision AlexNet ``features.*`` tensors into an ``lpips`` AlexNet trunk (strict)."""
    target = {}
    for slice_name, part in trunk.named_children():
        for index, _ in part.named_children():
            for p in ("weight", "bias"):
                if f"features.{index}.{p}" in state_dict:
                    target[f"{slice_name}.{index}.{p}"] = state_dict[f"features.{index}.{p}"]
    expected = {f"features.{i}.{p}" for i in _ALEX_CONVS for p in ("weight", "bias")}
    have = {k for k in state_dict if k.startswith("features.")}
    if have != expected or len(target) != len(expected):
        raise WeightsError(f"{source}: not a torchvision AlexNet state dict (features keys "
                           f"{sorted(have)}; expected {sorted(expected)})")
    try:
        trunk.load_state_dict(target, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{source}: AlexNet features do not fit the LPIPS trunk: {exc}") from exc


class LPIPSMetric:
    """LPIPS v0.1 (AlexNet) on ``device``; ``backbone='untrained'`` opts into a random trunk."""

    def __init__(self, device: torch.device | str | None = None,
                 weights_dir: str | Path | None = None, backbone: Backbone = "imagenet",
                 cache_dir: str | Path | None = None, batch_size: int = 32):
        if backbone not in ("imagenet", "untrained"):
            raise BenchmarkError(f"LPIPS backbone must be 'imagenet' or 'untrained', got {backbone!r}")
        import lpips  # the package; imported here so the benchmark runs without it until LPIPS is used

        self.device = torch.device(device if device is not None
                                   else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.untrained = backbone == "untrained"
        linear = weights.locate("lpips_alex_linear", weights_dir, cache_dir)
        alex_path = None if self.untrained else weights.locate("alexnet", weights_dir, cache_dir)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(_UNTRAINED_SEED)  # a reproducible random trunk when untrained
            # torchvision warns that lpips passes the deprecated 'pretrained' argument
            warnings.simplefilter("ignore", UserWarning)
            net = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True,
                              model_path=str(linear), verbose=False)
        if alex_path is not None:
            try:
                state = torch.load(alex_path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001
                raise WeightsError(f"{alex_path}: cannot load as a torchvision AlexNet state dict "
                                   f"({load_failure(alex_path, exc)})") from exc
            load_alexnet_features(net.net, state, str(alex_path))
        net.eval().requires_grad_(False)
        self.net = net.to(self.device)
        self.files = {"linear": str(linear), "alexnet": str(alex_path) if alex_path else None}
        if self.untrained:
            self.description = ("LPIPS v0.1 with an UNTRAINED AlexNet trunk (random weights, seed "
                                f"{_UNTRAINED_SEED}; lpips {_lpips_version()} linear "
                                "layers): values are NOT comparable with published LPIPS")
        else:
            wf = weights.WEIGHT_FILES["alexnet"]
            self.description = (f"LPIPS v0.1, AlexNet ({wf.filename}, sha256 {wf.sha256[:12]}) + "
                                f"linear layers of lpips {_lpips_version()}")

    # -- inputs ----------------------------------------------------------------------------------
    @staticmethod
    def _prepare(images: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise BenchmarkError(f"LPIPS: {name} must be a tensor of shape (N, 3, H, W), got "
                                 f"{getattr(images, 'shape', type(images))}")
        if images.dtype == torch.uint8:
            return images.float() / 127.5 - 1.0
        if not images.dtype.is_floating_point:
            raise BenchmarkError(f"LPIPS: {name} must be uint8 or float in [-1, 1], got {images.dtype}")
        if images.numel() and (images.min() < -1.001 or images.max() > 1.001):
            raise BenchmarkError(f"LPIPS: float {name} must lie in [-1, 1]; got "
                                 f"[{images.min().item():.3f}, {images.max().item():.3f}]")
        return images.float()

    # -- metrics ---------------------------------------------------------------------------------
    @torch.no_grad()
    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS between corresponding images: float32 (N,) on the CPU."""
        x, y = self._prepare(x, "x"), self._prepare(y, "y")
        if x.shape != y.shape:
            raise BenchmarkError(f"LPIPS: x and y must have the same shape, got {tuple(x.shape)} "
                                 f"and {tuple(y.shape)}")
        out = []
        for s in range(0, x.shape[0], self.batch_size):
            a = x[s:s + self.batch_size].to(self.device)
            b = y[s:s + self.batch_size].to(self.device)
            out.append(self.net(a, b).reshape(-1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    __call__ = distance

    @torch.no_grad()
    def diversity(self, groups, return_per_group: bool = False):
        """Mean over groups of the mean pairwise LPIPS within each group (StarGAN v2's diversity).

        ``groups``: a tensor (G, K, 3, H, W) or a sequence of (K_g, 3, H, W) tensors (K_g >= 2)."""
        per_group = []
        for g, group in enumerate(groups):
            k = group.shape[0] if isinstance(group, torch.Tensor) else len(group)
            if k < 2:
                raise BenchmarkError(f"LPIPS diversity: group {g} has {k} output(s); need >= 2")
            i, j = (torch.tensor(v, dtype=torch.long) for v in zip(*pair_indices(k)))
            per_group.append(self.distance(group[i], group[j]).double().mean().item())
        if not per_group:
            raise BenchmarkError("LPIPS diversity: no groups given")
        mean = sum(per_group) / len(per_group)
        return (mean, per_group) if return_per_group else mean


def pair_indices(k: int) -> list[tuple[int, int]]:
    """Every unordered pair (i < j) of ``k`` outputs: k (k - 1) / 2 of them (45 for 10)."""
    return list(itertools.combinations(range(k), 2))


def get_lpips(device: torch.device | str | None = None, weights_dir: str | Path | None = None,
              backbone: Backbone = "imagenet", cache_dir: str | Path | None = None) -> LPIPSMetric:
    """A memoised :class:`LPIPSMetric` per (device, weights_dir, backbone)."""
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    key = (str(dev), str(weights_dir or ""), backbone)
    with _lock:
        if key not in _memo:
            _memo[key] = LPIPSMetric(dev, weights_dir, backbone, cache_dir)
        return _memo[key]


def lpips_distance(x: torch.Tensor, y: torch.Tensor, *, metric: LPIPSMetric | None = None,
                   device=None, weights_dir=None, backbone: Backbone = "imagenet") -> torch.Tensor:
    """LPIPS between corresponding uint8 or [-1, 1] images (N, 3, H, W): float32 (N,)."""
    metric = metric or get_lpips(device, weights_dir, backbone)
    return metric.distance(x, y)


def lpips_diversity(groups: torch.Tensor | Sequence[torch.Tensor], *, metric: LPIPSMetric | None = None,
                    device=None, weights_dir=None, backbone: Backbone = "imagenet",
                    return_per_group: bool = False):
    """Mean pairwise LPIPS within each group of outputs, averaged over groups (StarGAN v2)."""
    metric = metric or get_lpips(device, weights_dir, backbone)
    return metric.diversity(groups, return_per_group=return_per_group)
