"""Evaluation shared by the tasks.

* :func:`real_features`: the one place where the Inception features of real images (a dataset
  split's side or domain) are computed and cached, under the key :func:`real_features_key` builds.
  Every task scores FID / KID against real images through it.
* :func:`fid_kid_scores`: FID and KID of test outputs against real features with their small-sample
  statistics (bootstrap intervals, KID's spread over subsets, FID-infinity on small test sets), the
  one place every task's FID / KID test evaluation goes through.
* CUT's translation protocol (the single-modal task): translate test images, score them with FID /
  KID against the target domain's test images (test outputs vs testB), and optional label scores.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from benchmark.core.metrics.fid import FeatureCache, fid_from_features, inception_features
from benchmark.core.metrics.inception import INCEPTION_SHA256
from benchmark.core.metrics.small_sample import (bootstrap_fid, bootstrap_interval, bootstrap_kid, fid_infinity,
                                                 fid_infinity_sizes, kid_subsets)
from datasets.base import ImageSet, UnpairedDataset

from benchmark.core.context import Evaluation, EvaluationConfig, RunContext
from benchmark.core.errors import BenchmarkError
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


def _gathered(local: np.ndarray, count: int, ctx: RunContext) -> np.ndarray:
    """Every rank's shard of features of ``count`` images (``Distributed.shard``), gathered in
    order; ``local`` itself with one process."""
    d = ctx.distributed
    if not d.enabled:
        return local
    return d.gather_shards(torch.from_numpy(local), count, ctx.evaluation.batch_size).numpy()


def sharded_inception_features(images: torch.Tensor, ctx: RunContext) -> np.ndarray:
    """Inception features of ``images`` (uint8, every rank holding all of them): under torchrun each
    rank scores its shard of whole evaluation batches and the features are gathered in order (the
    numbers one process gets); simply ``inception_features`` with one process."""
    ev, d = ctx.evaluation, ctx.distributed
    shard = d.shard(images.shape[0], ev.batch_size)
    features = inception_features(images[shard.start:shard.stop] if d.enabled else images,
                                  resize=ev.fid_resize, device=ctx.device, batch_size=ev.batch_size,
                                  weights_dir=ctx.weights_dir)
    return _gathered(features, images.shape[0], ctx)


def image_set_features(image_set: ImageSet, ctx: RunContext) -> np.ndarray:
    """Inception features of every image of ``image_set``, read and scored in evaluation batches;
    under torchrun each rank scores its shard of whole batches and the shards are gathered in order
    (the numbers one process gets)."""
    ev = ctx.evaluation
    n = len(image_set)
    indices = ctx.distributed.shard(n, ev.batch_size)
    features = inception_features(
        (image_set.images(range(s, min(indices.stop, s + ev.batch_size)))
         for s in range(indices.start, indices.stop, ev.batch_size)),
        resize=ev.fid_resize, device=ctx.device, batch_size=ev.batch_size, weights_dir=ctx.weights_dir)
    return _gathered(features, n, ctx)


def sharded_outputs_and_features(translate: Callable[[torch.Tensor], torch.Tensor], image_set: ImageSet,
                                 count: int, ctx: RunContext, features: bool = True
                                 ) -> tuple[torch.Tensor, np.ndarray | None]:
    """uint8 outputs of ``translate`` on the first ``count`` images of ``image_set`` and their
    Inception features (None without ``features``). Under torchrun each rank translates and scores
    its shard of whole evaluation batches (``Distributed.shard``) and the shards are gathered in
    order: every rank gets all ``count`` outputs and features, each image done once, in the batches
    one process would use."""
    ev, d = ctx.evaluation, ctx.distributed
    shard = d.shard(count, ev.batch_size)
    outputs = translate_set(translate, image_set, shard, ev.batch_size, ctx.device)
    local = (inception_features(outputs, resize=ev.fid_resize, device=ctx.device, batch_size=ev.batch_size,
                                weights_dir=ctx.weights_dir) if features else None)
    if not d.enabled:
        return outputs, local
    gathered = d.gather_shards(outputs, count, ev.batch_size)
    return gathered, (None if local is None else _gathered(local, count, ctx))


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
    if not d.enabled:
        return cache.get_or_compute(key, lambda: image_set_features(image_set, ctx), ctx.log)
    # Under torchrun: rank 0 reads the cache and hands the features to every rank; on a miss every
    # rank scores its shard, and rank 0 stores the gathered features.
    cached = d.broadcast(cache.load(key) if d.is_main else None)
    if cached is not None:
        return cached
    features = image_set_features(image_set, ctx)
    if d.is_main:
        cache.save(key, features)
    return features


def fid_kid_scores(fake: np.ndarray, real: np.ndarray, ev: EvaluationConfig, real_is_test: bool,
                   real_name: str) -> tuple[dict[str, float], dict]:
    """FID and KID x 100 of the output features ``fake`` against ``real`` with their small-sample
    statistics, and the protocol words that say how they were computed.

    * ``KIDx100_std``: the standard deviation (ddof 0, as torchmetrics / torch-fidelity) of KID x 100
      over clean-fid's ``kid_subsets`` subsets (0 when every subset is the whole of both sets).
    * ``FID_ci_low`` / ``FID_ci_high``, ``KIDx100_ci_low`` / ``KIDx100_ci_high`` (when
      ``bootstrap_resamples`` > 0): bootstrap intervals over the test images
      (:mod:`benchmark.core.metrics.small_sample`): the outputs are resampled with replacement and,
      when ``real_is_test`` (the real images are themselves the test split, a sample as small and as
      arbitrary as the outputs), the real images too, independently; a fixed reference set of real
      images (training images) is kept as it is, as a reference statistic would be.
      ``FID_bootstrap_shift``: the bias estimate the FID interval was shifted by.
    * ``FID_inf`` (fewer outputs than ``fid_infinity_below``): FID extrapolated to infinitely many
      samples, the real side subsampled at the same fraction.
    """
    n_fake, n_real = int(fake.shape[0]), int(real.shape[0])
    fid = fid_from_features(fake, real)
    kid, kid_values = kid_subsets(fake, real, num_subsets=ev.kid_subsets, subset_size=ev.kid_subset_size,
                                  seed=ev.kid_seed)
    metrics = {"FID": fid, "KIDx100": 100.0 * kid, "KIDx100_std": float(100.0 * kid_values.std())}
    protocol = {"kid_std": f"std (ddof 0) of KID x 100 over the {ev.kid_subsets} subsets"}
    too_many = n_fake + n_real > ev.bootstrap_max_images
    if ev.bootstrap_resamples and too_many:
        protocol["bootstrap"] = (f"not computed: {n_fake} outputs + {n_real} real images > "
                                 f"bootstrap_max_images {ev.bootstrap_max_images}")
    elif ev.bootstrap_resamples:
        fids = bootstrap_fid(fake, real, ev.bootstrap_resamples, ev.bootstrap_seed, resample_f2=real_is_test)
        kids = bootstrap_kid(fake, real, ev.bootstrap_resamples, ev.bootstrap_seed, resample_f2=real_is_test)
        fid_ci = bootstrap_interval(fid, fids, ev.bootstrap_confidence)
        kid_ci = bootstrap_interval(100.0 * kid, 100.0 * kids, ev.bootstrap_confidence)
        metrics.update({"FID_ci_low": fid_ci.low, "FID_ci_high": fid_ci.high,
                        "FID_bootstrap_shift": fid_ci.shift,
                        "KIDx100_ci_low": kid_ci.low, "KIDx100_ci_high": kid_ci.high})
        resampled = (f"the {n_fake} outputs and, independently, the {n_real} real images ({real_name}, "
                     "a test split)" if real_is_test else
                     f"the {n_fake} outputs (the {n_real} real images, {real_name}, kept fixed as a reference)")
        protocol["bootstrap"] = (
            f"{round(100 * ev.bootstrap_confidence)}% intervals from {ev.bootstrap_resamples} resamples "
            f"(seed {ev.bootstrap_seed}) of {resampled} with replacement: the percentile interval shifted "
            "by the resamples' mean minus the estimate (repeated images alone raise FID and KID); KID's "
            "resamples use all pairs")
    inf, protocol["fid_infinity"] = fid_infinity_scores(
        [(fake, real)], ev, "FID_inf (Chong & Forsyth 2020): least-squares line of FID_N in 1/N at 1/N = 0")
    if inf is not None:
        metrics["FID_inf"] = inf
    if protocol["fid_infinity"] is None:
        del protocol["fid_infinity"]
    return metrics, protocol


def fid_infinity_scores(pairs: list[tuple[np.ndarray, np.ndarray]], ev: EvaluationConfig,
                        what: str) -> tuple[float | None, str | None]:
    """FID-infinity averaged over ``pairs`` of (output features, real features) and its protocol line
    (``what`` first), when fewer outputs than ``fid_infinity_below`` are scored; (None, None) when
    not asked for, (None, why) when the outputs are too few to extrapolate."""
    n_fake = max(int(f.shape[0]) for f, _ in pairs)
    if not (ev.fid_infinity_below and n_fake < ev.fid_infinity_below):
        return None, None
    try:
        sizes = fid_infinity_sizes(n_fake, ev.fid_infinity_points, ev.fid_infinity_min_fraction)
    except BenchmarkError as exc:
        return None, f"not computed ({exc})"
    value = float(np.mean([fid_infinity(f, r, ev.fid_infinity_points, ev.fid_infinity_min_fraction,
                                        ev.fid_infinity_seed, subsample_f2=True).value for f, r in pairs]))
    return value, (f"{what}, N = {sizes[0]}..{sizes[-1]} outputs ({len(sizes)} sizes), each a random subset "
                   f"(seed {ev.fid_infinity_seed}) with the real images subsampled at the same fraction; "
                   f"reported below {ev.fid_infinity_below} outputs")


def mean_fid_statistics(pairs: list[tuple[np.ndarray, np.ndarray]], mean_fid: float, ev: EvaluationConfig,
                        cluster_size: int, prefix: str) -> tuple[dict[str, float], dict]:
    """Small-sample statistics of a FID averaged over pairs of (output features, real features), as
    the multi-modal task's mean over (source, target) domain pairs: ``<prefix>FID_ci_low`` /
    ``_ci_high`` / ``_bootstrap_shift`` (each pair's outputs resampled by source image -- blocks of
    ``cluster_size`` consecutive rows -- independently per pair, from ``default_rng([bootstrap_seed,
    pair])``; the real images, a training split, kept fixed; the interval of the mean over pairs) and
    ``<prefix>FID_inf`` (the mean of the pairs' FID-infinity, which is the extrapolation of the mean:
    the line is linear). ``mean_fid``: the point estimate, the mean of the pairs' FIDs."""
    metrics: dict[str, float] = {}
    protocol: dict = {}
    n_fake = max(int(f.shape[0]) for f, _ in pairs)
    n_real = max(int(r.shape[0]) for _, r in pairs)
    if ev.bootstrap_resamples and n_fake + n_real > ev.bootstrap_max_images:
        protocol["bootstrap"] = (f"not computed: {n_fake} outputs + {n_real} real images > "
                                 f"bootstrap_max_images {ev.bootstrap_max_images}")
    elif ev.bootstrap_resamples:
        values = np.mean([bootstrap_fid(f, r, ev.bootstrap_resamples, [ev.bootstrap_seed, i], resample_f2=False,
                                        cluster_size=cluster_size) for i, (f, r) in enumerate(pairs)], axis=0)
        ci = bootstrap_interval(mean_fid, values, ev.bootstrap_confidence)
        metrics.update({f"{prefix}FID_ci_low": ci.low, f"{prefix}FID_ci_high": ci.high,
                        f"{prefix}FID_bootstrap_shift": ci.shift})
        protocol["bootstrap"] = (
            f"{round(100 * ev.bootstrap_confidence)}% intervals of the FID averaged over pairs from "
            f"{ev.bootstrap_resamples} resamples (seed {ev.bootstrap_seed}) of each pair's source images "
            f"with their {cluster_size} outputs, with replacement, the real (training) images kept fixed: "
            "the percentile interval shifted by the resamples' mean minus the estimate")
    inf, protocol["fid_infinity"] = fid_infinity_scores(
        pairs, ev, "FID_inf (Chong & Forsyth 2020) per pair, averaged: line of FID_N in 1/N at 1/N = 0")
    if inf is not None:
        metrics[f"{prefix}FID_inf"] = inf
    if protocol["fid_infinity"] is None:
        del protocol["fid_infinity"]
    return metrics, protocol


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
    outputs, fake = sharded_outputs_and_features(translate, test_a, count, ctx)
    if real is None:
        real = real_features(dataset, "test", ctx, side="B")
    shown = min(ev.grid_images, count)
    metrics, stats_protocol = fid_kid_scores(fake, real, ev, real_is_test=True, real_name=real_split)
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
                  "real_split": real_split, "kid_subsets": ev.kid_subsets,
                  "kid_subset_size": min(ev.kid_subset_size, count, int(real.shape[0])),
                  "kid_seed": ev.kid_seed, "resolution": list(outputs.shape[-2:]), **stats_protocol,
                  **protocol},
        samples={"input": test_a.images(range(shown)), "output": outputs[:shown]},
    )
