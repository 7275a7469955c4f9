"""The dataset contract: an unpaired dataset has train/test splits of two sides, A and B.

Every image is a ``torch.uint8`` tensor of shape (3, H, W). A side may carry per-image label maps
(``torch.int64`` (H, W), class ids with ``ignore_index`` for unlabelled pixels) that evaluation
uses: segmentation labels of label->photo data, object masks (0/1) of object data.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from benchmark.core.images import ImageSet, LabelInfo, TensorImageSet

__all__ = ["DATASET_KINDS", "ImageSet", "LabelInfo", "TensorImageSet", "UnpairedDataset", "Split", "Side"]

Split = Literal["train", "test"]
Side = Literal["A", "B"]


DATASET_KINDS = {
    "unpaired": "train/test splits of two unaligned sides A and B (UnpairedDataset)",
    "multi_domain": "train/val splits of several named domains (datasets.multidomain.MultiDomainDataset)",
}
"""The kinds of data a dataset class declares (``kind``) and a task accepts (``Task.dataset_kinds``)."""


class UnpairedDataset:
    """Base class of registered datasets. Subclasses set ``Options`` (a dataclass of settings)."""

    Options: ClassVar[type]
    registry_name: ClassVar[str]
    kind: ClassVar[str] = "unpaired"
    """What the data look like (a key of :data:`DATASET_KINDS`); tasks declare the kinds they accept."""

    @classmethod
    def required_weights(cls, options) -> list[str]:
        """Keys of :data:`benchmark.core.weights.WEIGHT_FILES` that runs on this dataset need."""
        return []

    def __init__(self, options, cache_dir):
        self.options = options
        self.cache_dir = cache_dir

    def split(self, split: Split, side: Side) -> ImageSet:
        raise NotImplementedError

    @property
    def identity(self) -> str:
        """A string that changes whenever the data would change (used in metric cache keys)."""
        raise NotImplementedError
