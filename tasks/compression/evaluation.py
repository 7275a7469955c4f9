"""The compression task's scores: the test protocols (Fast GAN Compression's and CUT's) and the
search's score on held-out training images.

* ``gan_compression``: FID against the real images its scripts' statistics stand for, computed here
  from the dataset itself (the official ``real_stat/<data>_<side>.npz`` are downloaded precomputed;
  the code does not record their images): unpaired data every B image, train and test (our reading
  of ``horse2zebra_B.npz``), paired data the test photos (``maps_A`` / ``cityscapes_A``, trained BtoA);
  label scores as the dataset asks (``segmentation_protocol``) or, on synthetic data, the
  synthetic segmenter.
* ``cut``: CUT's protocol, as in the single-modal task (test outputs vs test B, CUT's label scores).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from benchmark.core.context import Evaluation, RunContext
from benchmark.core.errors import ConfigError
from benchmark.core.images import ImageSet
from benchmark.core.metrics.fid import fid_from_features
from benchmark.core.metrics.inception import INCEPTION_SHA256

from ..data import held_out_split
from ..evaluation import (cityscapes_label_scores, count_images, evaluate_translation, fid_kid_scores,
                          label_scores, on_main_rank, real_features, segmentation_protocol,
                          sharded_outputs_and_features)


SEARCH_SPLIT_KEY = 20240
"""The key of the search's draw of held-out images (:func:`tasks.data.held_out_split`)."""


def held_out_indices(n_train: int, count: int) -> list[int]:
    """The training images held out for the search (Fast GAN Compression's ``train2`` meta files):
    ``count`` of ``n_train`` (0 = a tenth, at least 2), drawn with a fixed seed so that every run and
    seed of a suite holds out the same images, as the official fixed meta files do."""
    count = count or max(2, n_train // 10)
    if count >= n_train:
        raise ConfigError(f"search.held_out_images = {count} leaves no training image of the {n_train} "
                          "for the supernet; hold out fewer")
    return held_out_split(n_train, count, SEARCH_SPLIT_KEY)[0]


class CompressionScorer:
    """Scores translations of a dataset under one protocol, with the real features computed once."""

    def __init__(self, dataset, ctx: RunContext, protocol: str, paired: bool):
        self.dataset, self.ctx, self.protocol, self.paired = dataset, ctx, protocol, paired
        self._real: np.ndarray | None = None

    @property
    def real_description(self) -> str:
        if self.protocol == "gan_compression" and not self.paired:
            return "train B + test B (gan-compression's real statistics for unpaired data)"
        return "test B"

    def real(self) -> np.ndarray:
        if self._real is None:
            parts = [real_features(self.dataset, "test", self.ctx, side="B")]
            if self.protocol == "gan_compression" and not self.paired:
                parts.insert(0, real_features(self.dataset, "train", self.ctx, side="B"))
            self._real = np.concatenate(parts)
        return self._real

    # -- the search's score ----------------------------------------------------------------------
    def search_criterion(self, asked: str, held_out: ImageSet) -> str:
        if asked == "auto":
            return "mIoU" if held_out.has_labels and held_out.label_info.kind == "segmentation" else "fid"
        if asked == "mIoU" and not held_out.has_labels:
            raise ConfigError("search.criterion mIoU needs segmentation labels on the training images of "
                              "side A; this dataset has none: use fid")
        return asked

    def search_score(self, translate: Callable[[torch.Tensor], torch.Tensor], held_out: ImageSet,
                     criterion: str) -> float:
        """The score of ``translate`` on every held-out image; under torchrun each rank translates
        its shard and every rank gets the same score (the search's choices stay alike on all)."""
        ctx = self.ctx
        outputs, fake = sharded_outputs_and_features(translate, held_out, len(held_out), ctx,
                                                     features=criterion == "fid")
        if criterion == "fid":
            return fid_from_features(fake, self.real())
        scores, _ = on_main_rank(lambda: label_scores(self.dataset, outputs, held_out, len(held_out), ctx), ctx)
        return scores["mIoU"]

    # -- test ------------------------------------------------------------------------------------
    def score_test(self, translate: Callable[[torch.Tensor], torch.Tensor]) -> Evaluation:
        if self.protocol == "cut":
            return evaluate_translation(translate, self.dataset, self.ctx)
        ev, ctx = self.ctx.evaluation, self.ctx
        test_a = self.dataset.split("test", "A")
        count = count_images(test_a, ev.num_test_images)
        outputs, fake = sharded_outputs_and_features(translate, test_a, count, ctx)  # sharded under torchrun
        real = self.real()
        # the real side is the test split itself for paired data; train B + test B (a reference set) for unpaired
        metrics, stats_protocol = fid_kid_scores(fake, real, ev, real_is_test=self.paired,
                                                 real_name=self.real_description)
        protocol = {}
        seg = segmentation_protocol(self.dataset)
        scores = None
        if ev.label_scores and seg:
            scores = lambda: cityscapes_label_scores(seg, outputs, test_a, count, ctx)  # noqa: E731
        elif ev.label_scores and test_a.has_labels:
            scores = lambda: label_scores(self.dataset, outputs, test_a, count, ctx)  # noqa: E731
        if scores is not None:
            label_metrics, protocol = on_main_rank(scores, ctx)  # rank 0 under torchrun
            metrics.update(label_metrics)
        shown = min(ev.grid_images, count)
        return Evaluation(
            metrics=metrics,
            protocol={"eval_protocol": "gan_compression",
                      "fid_network": f"TF-Inception (pytorch-fid weights, sha256 {INCEPTION_SHA256[:12]})",
                      "fid_resize": ev.fid_resize, "num_outputs": count, "num_real": int(real.shape[0]),
                      "real_split": self.real_description, "kid_subsets": ev.kid_subsets,
                      "kid_subset_size": min(ev.kid_subset_size, count, int(real.shape[0])),
                      "kid_seed": ev.kid_seed, "resolution": list(outputs.shape[-2:]), **stats_protocol,
                      **protocol},
            samples={"input": test_a.images(range(shown)), "output": outputs[:shown]})
