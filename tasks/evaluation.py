"""Evaluation shared by the tasks.

* :func:`real_features`: the one place where the Inception features of real images (a dataset
  split's side or domain) are computed and cached, under the key :func:`real_features_key` builds.
  Every task scores FID / KID against real images through it.
* CUT's translation protocol (the single-modal task): translate test images, score them with FID /
  KID against the target domain's test images (test outputs vs testB), and optional label scores.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from benchmark.core.metrics.fid import FeatureCache, fid_from_features, inception_features, kid_from_features
from benchmark.core.metrics.inception import INCEPTION_SHA256
from datasets.base import ImageSet, UnpairedDataset

from benchmark.core.context import Evaluation, RunContext
from .data import to_model_range, to_uint8_truncated


def count_images(image_set: ImageSet, limit: int) -> int:
    """How many images of ``image_set`` an evaluation uses: the first ``limit`` (0 = all)."""
    return len(image_set) if limit <= 0 else min(limit, len(image_set))


def translate_set(translate: Callable[[torch.Tensor], torch.Tensor], image_set: ImageSet, count: int,
                  batch_size: int, device: torch.device) -> torch.Tensor:
    """uint8 outputs of ``translate`` on the first ``count`` images of ``image_set``."""
    outputs = []
    for start in range(0, count, batch_size):
        batch = image_set.images(range(start, min(count, start + batch_size)))
        with torch.no_grad():
            outputs.append(to_uint8_truncated(translate(to_model_range(batch, device))))
    return torch.cat(outputs)


def _split_part(side: str | None, domain: str | None) -> str:
    if (side is None) == (domain is None):
        raise TypeError(f"real features: give exactly one of side / domain, got side={side!r}, domain={domain!r}")
    return side if side is not None else domain


def real_features_key(dataset, split: str, image_set: ImageSet, fid_resize: str, *,
                      side: str | None = None, domain: str | None = None) -> dict:
    """The cache key of the real features of ``image_set``, i.e. of ``dataset.split(split, side)``
    or ``dataset.split(split, domain)``: everything the features depend on. Its contents name the
    cache file (a change here makes every task recompute its real features). The part of the split is
    recorded under ``"side"`` (an unpaired dataset's 'A' / 'B': the single-modal task) or
    ``"domain"`` (a multi-domain dataset's domain: the multi-modal task)."""
    _split_part(side, domain)
    part = {"side": side} if side is not None else {"domain": domain}
    return {"dataset": dataset.identity, "split": split, **part,
            "resolution": list(image_set.image(0).shape[-2:]), "resize": fid_resize,
            "network": INCEPTION_SHA256, "count": len(image_set)}


def real_features(dataset, split: str, ctx: RunContext, *, side: str | None = None,
                  domain: str | None = None) -> np.ndarray:
    """Inception features of every image of ``dataset.split(split, side)`` (an unpaired dataset) or
    ``dataset.split(split, domain)`` (a multi-domain dataset) -- exactly one of the two -- computed in
    ``ctx.evaluation.batch_size`` batches and cached in ``<cache_dir>/fid_stats`` under
    :func:`real_features_key`, so every run of a suite scoring against them computes them once."""
    ev = ctx.evaluation
    part = _split_part(side, domain)
    image_set = dataset.split(split, part)
    key = real_features_key(dataset, split, image_set, ev.fid_resize, side=side, domain=domain)
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
                         ctx: RunContext, sources: ImageSet | None = None, real: np.ndarray | None = None,
                         real_split: str = "test B") -> Evaluation:
    """CUT's protocol: the first ``evaluation.num_test_images`` test A images translated, scored
    against test B. ``sources`` and ``real`` (both or neither; the validation split): every image of
    ``sources`` translated and scored against the features ``real`` of the images ``real_split``
    names."""
    ev = ctx.evaluation
    if (sources is None) != (real is None):
        raise TypeError("evaluate_translation: give both sources and real, or neither")
    test_a = dataset.split("test", "A") if sources is None else sources
    count = count_images(test_a, ev.num_test_images) if sources is None else len(sources)
    outputs = translate_set(translate, test_a, count, ev.batch_size, ctx.device)
    fake = inception_features(outputs, resize=ev.fid_resize, device=ctx.device, batch_size=ev.batch_size,
                              weights_dir=ctx.weights_dir)
    if real is None:
        real = real_features(dataset, "test", ctx, side="B")
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
                  "real_split": real_split, "kid_subsets": ev.kid_subsets,
                  "kid_subset_size": min(ev.kid_subset_size, count, int(real.shape[0])),
                  "kid_seed": ev.kid_seed, "resolution": list(outputs.shape[-2:]), **protocol},
        samples={"input": test_a.images(range(shown)), "output": outputs[:shown]},
    )
