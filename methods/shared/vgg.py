"""A frozen ImageNet VGG16 feature extractor (F-LSeSim and GraphCL use relu3_1, relu4_1, relu4_3).

The ImageNet weights are torchvision's ``vgg16-397923af.pth``, looked for in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``) and in the configured weights folder, and sha256-verified, through
``benchmark.core.weights`` (the table of every pretrained file). Nothing is downloaded. When
the file is absent, a method may opt into an untrained backbone (``vgg_weights: untrained``); the
runs' protocol then says so and every table built from them repeats it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from benchmark.core import weights
from benchmark.core.checkpoint import load_failure
from benchmark.core.errors import WeightsError

VGG16_FILE = weights.WEIGHT_FILES["vgg16"].filename  # "vgg16-397923af.pth"
VGG16_LAYERS = {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13,
                "relu3_3": 15, "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "relu5_1": 25,
                "relu5_2": 27, "relu5_3": 29}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_weight_keys(vgg_weights: str) -> list[str]:
    """What a method with a frozen VGG16 needs: the ImageNet file unless it opted into 'untrained'."""
    return [] if vgg_weights == "untrained" else ["vgg16"]


def vgg16_candidates(weights_dir: Path | None = None) -> list[Path]:
    """Where the file is looked for, in order (benchmark.core.weights' table: the weights folder,
    $I2I_BENCH_WEIGHTS, the torch hub cache)."""
    return weights.candidates("vgg16", weights_dir)


def find_vgg16_weights(weights_dir: Path | None = None) -> Path:
    """The sha256-verified VGG16 file; WeightsError when it is missing or wrong."""
    try:
        return weights.locate("vgg16", weights_dir)
    except WeightsError as exc:
        raise WeightsError(f"{exc} Or set the method option 'vgg_weights: untrained' to run with a "
                           "randomly initialised backbone (reports will say so).") from exc


def backbone_description(weights: str) -> str:
    """How reports name a VGG16 backbone with ``weights`` ('imagenet' or 'untrained')."""
    return "VGG16 (ImageNet)" if weights == "imagenet" else "VGG16 (UNTRAINED: random weights)"


def backbone_notes(vgg: FrozenVGG16 | None, weights: str) -> dict[str, str]:
    """``protocol_notes`` of a method with a VGG16 backbone: the built one's, else what ``weights``
    will give."""
    return {"backbone": vgg.description if vgg is not None else backbone_description(weights)}


class FrozenVGG16(nn.Module):
    """Images in [-1, 1] -> VGG16 feature maps at ``layers`` (names like 'relu3_1'); no gradients
    reach its weights (they are frozen), while gradients do flow back to the input images."""

    def __init__(self, layers: Sequence[str] = ("relu3_1", "relu4_1", "relu4_3"), weights: str = "imagenet",
                 weights_dir: Path | None = None):
        super().__init__()
        unknown = [name for name in layers if name not in VGG16_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG16 layer {unknown[0]!r}; valid: {', '.join(VGG16_LAYERS)}")
        self.layer_names = list(layers)
        self.indices = [VGG16_LAYERS[name] for name in layers]
        features = make_layers(cfgs["D"])[: max(self.indices) + 1]  # VGG16's conv trunk only
        self.pretrained = weights == "imagenet"
        if self.pretrained:
            path = find_vgg16_weights(weights_dir)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                prefix = "features."
                features.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                          if k.startswith(prefix) and int(k.split(".")[1]) < len(features)})
            except Exception as exc:  # noqa: BLE001
                raise WeightsError(f"'{path}' is not a loadable torchvision VGG16 state dict: {load_failure(path, exc)}") from exc
        else:  # torchvision's VGG initialisation, so untrained features have a sensible scale
            for m in features.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        features.requires_grad_(False)
        features.eval()
        # Kept outside the module tree: frozen weights are no part of a method's parameters,
        # optimisers or checkpoints; _apply still moves them with the module (.to(device)).
        object.__setattr__(self, "features", features)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.features._apply(fn)
        return self

    @property
    def description(self) -> str:
        return backbone_description("imagenet" if self.pretrained else "untrained")

    @torch.no_grad()
    def channels(self, images: torch.Tensor) -> list[int]:
        """Channel counts of the feature maps (measured on the first of ``images``)."""
        return [f.shape[1] for f in self(images[:1])]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = ((images + 1) / 2 - self.mean) / self.std
        out, wanted = [], set(self.indices)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out.append(x)
        return [out[sorted(self.indices).index(i)] for i in self.indices]
