"""The dataset contract: an unpaired dataset has train/test splits of two sides, A and B.

Every image is a ``torch.uint8`` tensor of shape (3, H, W). A side may carry per-image label maps
(``torch.int64`` (H, W), class ids with ``ignore_index`` for unlabelled pixels) that evaluation
uses: segmentation labels of label->photo data, object masks (0/1) of object data.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from benchmark.core.images import ImageSet, LabelInfo, TensorImageSet

__all__ = ["ImageSet", "LabelInfo", "TensorImageSet", "UnpairedDataset", "Split", "Side"]

Split = Literal["train", "test"]
Side = Literal["A", "B"]


class UnpairedDataset:
    """Base class of registered datasets. Subclasses set ``Options`` (a dataclass of settings)."""

    Options: ClassVar[type]
    registry_name: ClassVar[str]

    def __init__(self, options, cache_dir):
        self.options = options
        self.cache_dir = cache_dir

    def split(self, split: Split, side: Side) -> ImageSet:
        raise NotImplementedError

    @property
    def identity(self) -> str:
        """A string that changes whenever the data would change (used in metric cache keys)."""
        raise NotImplementedError
