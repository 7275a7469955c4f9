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


def translate_set(translate: Callable[[torch.Tensor], torch.Tensor], image_set: ImageSet, count: int | range,
                  batch_size: int, device: torch.device) -> torch.Tensor:
    """uint8 outputs of ``translate`` on the first ``count`` images of ``image_set`` (or on the images
    of the range ``count``, in batches of ``batch_size`` from its start)."""
    indices = range(count) if isinstance(count, int) else count
    outputs = []
    for start in range(indices.start, indices.stop, batch_size):
        batch = image_set.images(range(start, min(indices.stop, start + batch_size)))
        with torch.no_grad():
            outputs.append(to_uint8_truncated(translate(to_model_range(batch, device))))
    if not outputs:  # an empty shard of a sharded evaluation
        size = image_set.image(0).shape
        return torch.zeros((0, *size), dtype=torch.uint8)
    return torch.cat(outputs)


def sharded_inception_features(images: torch.Tensor, ctx: RunContext) -> np.ndarray:
    """Inception features of ``images`` (uint8, every rank holding all of them): under torchrun each
    rank scores its shard of whole evaluation batches and the features are gathered in order (the
    numbers one process gets); simply ``inception_features`` with one process."""
    ev, d = ctx.evaluation, ctx.distributed
    shard = d.shard(images.shape[0], ev.batch_size)
    features = inception_features(images[shard.start:shard.stop] if d.enabled else images,
                                  resize=ev.fid_resize, device=ctx.device, batch_size=ev.batch_size,
                                  weights_dir=ctx.weights_dir)
    if not d.enabled:
        return features
    return d.gather_shards(torch.from_numpy(features), images.shape[0], ev.batch_size).numpy()


def sharded_outputs_and_features(translate: Callable[[torch.Tensor], torch.Tensor], image_set: ImageSet,
                                 count: int, ctx: RunContext) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 outputs of ``translate`` on the first ``count`` images of ``image_set`` and their
    Inception features. Under torchrun each rank translates and scores its shard of whole evaluation
    batches (``Distributed.shard``) and the shards are gathered in order: every rank gets all
    ``count`` outputs and features, each image done once, in the batches one process would use."""
    ev, d = ctx.evaluation, ctx.distributed
    shard = d.shard(count, ev.batch_size)
    outputs = translate_set(translate, image_set, shard, ev.batch_size, ctx.device)
    features = inception_features(outputs, resize=ev.fid_resize, device=ctx.device, batch_size=ev.batch_size,
                                  weights_dir=ctx.weights_dir)
    if not d.enabled:
        return outputs, features
    return (d.gather_shards(outputs, count, ev.batch_size),
            d.gather_shards(torch.from_numpy(features), count, ev.batch_size).numpy())


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
    ev, d = ctx.evaluation, ctx.distributed
    part = _split_part(side, domain)
    image_set = dataset.split(split, part)
    key = real_features_key(dataset, split, image_set, ev.fid_resize, side=side, domain=domain)
    cache = FeatureCache(ctx.cache_dir / "fid_stats")

    def compute(indices: range) -> np.ndarray:
        return inception_features(
            (image_set.images(range(s, min(indices.stop, s + ev.batch_size)))
             for s in range(indices.start, indices.stop, ev.batch_size)),
            resize=ev.fid_resize, device=ctx.device, batch_size=ev.batch_size,
            weights_dir=ctx.weights_dir)

    if not d.enabled:
        return cache.get_or_compute(key, lambda: compute(range(len(image_set))))
    # Under torchrun: rank 0 reads the cache and hands the features to every rank; on a miss every
    # rank scores its shard, and rank 0 stores the gathered features.
    cached = d.broadcast(cache.load(key) if d.is_main else None)
    if cached is not None:
        return cached
    n = len(image_set)
    local = compute(d.shard(n, ev.batch_size))
    features = d.gather_shards(torch.from_numpy(local), n, ev.batch_size).numpy()
    if d.is_main:
        cache.save(key, features)
    return features


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


def on_main_rank(compute: Callable[[], object], ctx: RunContext):
    """``compute()`` (e.g. label scores, which train or load a cached segmenter), run by rank 0 alone
    under torchrun and its result handed to every rank; simply ``compute()`` with one process."""
    d = ctx.distributed
    if not d.enabled:
        return compute()
    return d.broadcast(compute() if d.is_main else None)


def evaluate_translation(translate: Callable[[torch.Tensor], torch.Tensor], dataset: UnpairedDataset,
                         ctx: RunContext) -> Evaluation:
    ev = ctx.evaluation
    test_a = dataset.split("test", "A")
    count = count_images(test_a, ev.num_test_images)
    outputs, fake = sharded_outputs_and_features(translate, test_a, count, ctx)
    real = real_features(dataset, "test", ctx, side="B")
    kid = kid_from_features(fake, real, num_subsets=ev.kid_subsets,
                            subset_size=ev.kid_subset_size, seed=ev.kid_seed)
    shown = min(ev.grid_images, count)
    metrics = {"FID": fid_from_features(fake, real), "KIDx100": 100.0 * kid}
    protocol = {}
    published_protocol = segmentation_protocol(dataset)
    scores = None
    if ev.label_scores and published_protocol:
        scores = lambda: cityscapes_label_scores(published_protocol, outputs, test_a, count, ctx)  # noqa: E731
    elif ev.label_scores and test_a.has_labels:
        scores = lambda: label_scores(dataset, outputs, test_a, count, ctx)  # noqa: E731
    if scores is not None:
        metrics_labels, protocol = on_main_rank(scores, ctx)
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
