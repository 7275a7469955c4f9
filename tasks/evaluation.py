"""Translation evaluation shared by tasks: translate test images, score them with FID / KID against
the target domain's test images (CUT's protocol: test outputs vs testB)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from benchmark.core.metrics.fid import FeatureCache, fid_from_features, inception_features, kid_from_features
from benchmark.core.metrics.inception import INCEPTION_SHA256
from datasets.base import ImageSet, UnpairedDataset

from benchmark.core.context import Evaluation, RunContext
from .data import to_model_range, to_uint8


def _count(image_set: ImageSet, limit: int) -> int:
    return len(image_set) if limit <= 0 else min(limit, len(image_set))


def translate_set(translate: Callable[[torch.Tensor], torch.Tensor], image_set: ImageSet, count: int,
                  batch_size: int, device: torch.device) -> torch.Tensor:
    """uint8 outputs of ``translate`` on the first ``count`` images of ``image_set``."""
    outputs = []
    for start in range(0, count, batch_size):
        batch = image_set.images(range(start, min(count, start + batch_size)))
        with torch.no_grad():
            outputs.append(to_uint8(translate(to_model_range(batch, device))))
    return torch.cat(outputs)


def real_features(dataset: UnpairedDataset, split: str, side: str, ctx: RunContext) -> np.ndarray:
    """Inception features of a dataset side, cached under a key of everything they depend on."""
    ev = ctx.evaluation
    image_set = dataset.split(split, side)
    first = image_set.image(0)
    key = {"dataset": dataset.identity, "split": split, "side": side,
           "resolution": list(first.shape[-2:]), "resize": ev.fid_resize,
           "network": INCEPTION_SHA256, "count": len(image_set)}
    cache = FeatureCache(ctx.cache_dir / "fid_stats")
    return cache.get_or_compute(key, lambda: inception_features(
        (image_set.images(range(s, min(len(image_set), s + ev.batch_size)))
         for s in range(0, len(image_set), ev.batch_size)),
        resize=ev.fid_resize, device=ctx.device, batch_size=ev.batch_size,
        weights_dir=ctx.weights_dir))


def segmentation_protocol(dataset: UnpairedDataset) -> str:
    """The published segmentation protocol a dataset's options ask for ('' = none): the name of a
    :data:`benchmark.core.metrics.drn.PROTOCOLS` entry, for real Cityscapes label->photo folders."""
    return getattr(dataset.options, "segmentation_protocol", "") or ""


def cityscapes_label_scores(protocol: str, outputs: torch.Tensor, test_a: ImageSet, count: int,
                            ctx: RunContext) -> tuple[dict[str, float], dict]:
    """Cityscapes "FCN scores" of label->photo outputs under a published protocol: a pretrained DRN
    labels the outputs, the ground truth is the input itself (colour label images, decoded to the
    nearest palette colour)."""
    from benchmark.core.metrics.drn import CITYSCAPES_CLASSES, IGNORE_INDEX, CityscapesSegmenter
    from benchmark.core.segmenters import score_predictions
    from datasets.base import LabelInfo

    segmenter = CityscapesSegmenter(protocol, ctx.weights_dir, ctx.device, ctx.cache_dir)
    labels = segmenter.prepare_labels(test_a.images(range(count)))
    predictions = segmenter.predict(outputs, ctx.evaluation.batch_size)
    info = LabelInfo("segmentation", tuple(CITYSCAPES_CLASSES), IGNORE_INDEX)
    scores = score_predictions(info, predictions, labels)
    return ({k: v for k, v in scores.items() if isinstance(v, (int, float))},
            {"segmenter": segmenter.description})


def label_scores(dataset: UnpairedDataset, outputs: torch.Tensor, test_a: ImageSet, count: int,
                 ctx: RunContext) -> tuple[dict[str, float], dict]:
    """How well a segmenter trained on real target-domain images recovers the input's labels from the
    outputs (mIoU / pixAcc / clsAcc, or the object-mask IoU). The segmenter is seeded with 0, not the
    run's seed, so that every run is scored by the same network."""
    from benchmark.core.segmenters import get_segmenter, score_translation

    segmenter = get_segmenter(dataset, "B", ctx.cache_dir / "segmenters", ctx.device, seed=0, log=ctx.log)
    scores = score_translation(segmenter, outputs, test_a.labels(range(count)))
    ceiling = {k: round(v, 1) for k, v in segmenter.ceiling.items() if isinstance(v, (int, float))}
    return ({k: v for k, v in scores.items() if isinstance(v, (int, float))},
            {"segmenter": segmenter.description,
             "segmenter_ceiling": ", ".join(f"{k} {v}" for k, v in ceiling.items())})


def evaluate_translation(translate: Callable[[torch.Tensor], torch.Tensor], dataset: UnpairedDataset,
                         ctx: RunContext) -> Evaluation:
    ev = ctx.evaluation
    test_a = dataset.split("test", "A")
    count = _count(test_a, ev.num_test_images)
    outputs = translate_set(translate, test_a, count, ev.batch_size, ctx.device)
    fake = inception_features(outputs, resize=ev.fid_resize, device=ctx.device, batch_size=ev.batch_size,
                              weights_dir=ctx.weights_dir)
    real = real_features(dataset, "test", "B", ctx)
    kid = kid_from_features(fake, real, num_subsets=ev.kid_subsets,
                            subset_size=ev.kid_subset_size, seed=ev.kid_seed)
    shown = min(ev.grid_images, count)
    metrics = {"FID": fid_from_features(fake, real), "KIDx100": 100.0 * kid}
    protocol = {}
    published_protocol = segmentation_protocol(dataset)
    if ev.label_scores and published_protocol:
        metrics_labels, protocol = cityscapes_label_scores(published_protocol, outputs, test_a, count, ctx)
        metrics.update(metrics_labels)
    elif ev.label_scores and test_a.has_labels:
        metrics_labels, protocol = label_scores(dataset, outputs, test_a, count, ctx)
        metrics.update(metrics_labels)
    return Evaluation(
        metrics=metrics,
        protocol={"fid_network": f"TF-Inception (pytorch-fid weights, sha256 {INCEPTION_SHA256[:12]})",
                  "fid_resize": ev.fid_resize, "num_outputs": count, "num_real": int(real.shape[0]),
                  "real_split": "test B", "kid_subsets": ev.kid_subsets,
                  "kid_subset_size": min(ev.kid_subset_size, count, int(real.shape[0])),
                  "kid_seed": ev.kid_seed, "resolution": list(outputs.shape[-2:]), **protocol},
        samples={"input": test_a.images(range(shown)), "output": outputs[:shown]},
    )
