"""The single-image task's evaluation: translate the whole source image once (the official test:
``preprocess='none'``, one image) and score the output.

* ``SIFID`` (:mod:`benchmark.core.metrics.sifid`): output vs the *target* image; lower = the
  output's early-layer Inception statistics (local colours and textures) are closer to the target's.
* ``structure`` (:mod:`benchmark.core.metrics.structure`): output vs the *source* image, the
  correlation of their luminance edge maps after a Gaussian blur of ``structure_sigma`` pixels;
  higher = the output keeps the source's layout (where its edges are), whatever the colours.
* ``LPIPS`` (:mod:`benchmark.core.metrics.lpips_metric`): output vs the source; lower = closer to the
  input in a learned perceptual space (content and appearance both count, so a translation that
  changes the style well cannot reach 0; read it together with SIFID). With an untrained AlexNet
  trunk (``lpips_backbone: untrained``) the value is a random-feature distance, and the report says so.

The generator injects noise; the evaluation draws it from a CPU generator seeded with the run's seed
(inside ``torch.random.fork_rng``), so the evaluation of a checkpoint is reproducible and leaves the
training RNG untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from benchmark.core.context import Evaluation, RunContext
from benchmark.core.errors import BenchmarkError
from benchmark.core.metrics.inception import INCEPTION_SHA256
from benchmark.core.metrics.sifid import describe_layer, sifid
from benchmark.core.metrics.structure import edge_correlation

from ..data import to_model_range, to_uint8_truncated


@dataclass
class SingleImageEvalSettings:
    sifid_channels: int = 192
    structure_sigma: float = 2.0
    lpips: bool = True
    lpips_backbone: str = "imagenet"


def translate_image(translate: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                    device: torch.device, seed: int) -> torch.Tensor:
    """uint8 (1, 3, H, W) output of ``translate`` on one uint8 (3, H, W) image, with the generator's
    noise drawn from the CPU generator seeded with ``seed`` (``tensor2im``'s truncating conversion)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        return to_uint8_truncated(translate(to_model_range(image[None], device)))


def score_single_image(output: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
                       settings: SingleImageEvalSettings, ctx: RunContext) -> tuple[dict[str, float], dict]:
    """The metrics of one uint8 (1, 3, H, W) ``output`` of the uint8 (3, H, W) ``source``, with the
    protocol facts to report."""
    if output.shape[-2:] != source.shape[-2:]:
        raise BenchmarkError(f"single-image evaluation: the output {tuple(output.shape[-2:])} must have the "
                             f"source's size {tuple(source.shape[-2:])}")
    metrics = {"SIFID": sifid(output[0], target, settings.sifid_channels, ctx.device, ctx.weights_dir),
               "structure": float(edge_correlation(output, source[None], settings.structure_sigma)[0])}
    protocol = {"sifid": describe_layer(settings.sifid_channels) + f" (sha256 {INCEPTION_SHA256[:12]}), "
                         "output vs target",
                "structure": f"Pearson correlation of Sobel edge magnitudes of the luminance after a "
                             f"Gaussian blur (sigma {settings.structure_sigma:g} px), output vs source",
                "resolution": list(output.shape[-2:]), "target_resolution": list(target.shape[-2:])}
    if settings.lpips:
        from benchmark.core.metrics.lpips_metric import get_lpips
        metric = get_lpips(ctx.device, ctx.weights_dir, settings.lpips_backbone, ctx.cache_dir)
        metrics["LPIPS"] = float(metric.distance(output, source[None])[0])
        protocol["lpips"] = metric.description + ", output vs source"
    return metrics, protocol


def evaluate_single_image(translate: Callable[[torch.Tensor], torch.Tensor] | None, dataset,
                          settings: SingleImageEvalSettings, ctx: RunContext) -> Evaluation:
    """Translate the source image (``translate=None``: the source itself, the ``identity`` row) and
    score it; samples: the source, the target and the output, at full resolution."""
    source, target = dataset.image("A"), dataset.image("B")
    if translate is None:
        output = source[None].clone()
    else:
        output = translate_image(translate, source, ctx.device, ctx.seed)
    metrics, protocol = score_single_image(output, source, target, settings, ctx)
    protocol["source"], protocol["target"] = dataset.describe("A"), dataset.describe("B")
    if translate is not None:
        protocol["eval_noise"] = f"generator noise seeded with the run's seed ({ctx.seed})"
    return Evaluation(metrics=metrics, protocol=protocol,
                      samples={"input": source[None], "target": target[None], "output": output})
