"""The dataset contract: an unpaired dataset has train/test splits of two sides, A and B; a paired
dataset has the same splits and sides, with image i of side A and image i of side B corresponding.

Every image is a ``torch.uint8`` tensor of shape (3, H, W). A side may carry per-image label maps
(``torch.int64`` (H, W), class ids with ``ignore_index`` for unlabelled pixels) that evaluation
uses: segmentation labels of label->photo data, object masks (0/1) of object data.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from benchmark.core.images import ImageSet, LabelInfo, TensorImageSet

__all__ = ["DATASET_KINDS", "Dataset", "ImageSet", "LabelInfo", "TensorImageSet", "UnpairedDataset",
           "PairedDataset", "Split", "Side"]

Split = Literal["train", "test"]
Side = Literal["A", "B"]


DATASET_KINDS = {
    "unpaired": "train/test splits of two unaligned sides A and B (UnpairedDataset)",
    "paired": ("train/test splits of two aligned sides A and B, image i of A corresponding to image i "
               "of B (PairedDataset)"),
    "multi_domain": "train/val splits of several named domains (datasets.multidomain.MultiDomainDataset)",
    "single_image": "one image per side, A (source) and B (target) (datasets.single_image.SingleImageDataset)",
}
"""The kinds of data a dataset class declares (``kind``) and a task accepts (``Task.dataset_kinds``)."""


class Dataset:
    """Base class of registered datasets of every kind. Subclasses set ``Options`` (a dataclass of
    settings) and ``kind``."""

    Options: ClassVar[type]
    registry_name: ClassVar[str]
    kind: ClassVar[str]
    """What the data look like (a key of :data:`DATASET_KINDS`); tasks declare the kinds they accept."""

    @classmethod
    def required_weights(cls, options) -> list[str]:
        """Keys of :data:`benchmark.core.weights.WEIGHT_FILES` that runs on this dataset need."""
        return []

    def __init__(self, options, cache_dir):
        self.options = options
        self.cache_dir = Path(cache_dir)

    @property
    def identity(self) -> str:
        """A string that changes whenever the data would change (used in metric cache keys)."""
        raise NotImplementedError

    def source_files(self) -> list[Path]:
        """Every image file the runs read (``plan`` decodes each before any training); [] for data
        made in memory. A folder that is missing or empty raises a DataError, as in a run."""
        return []


class UnpairedDataset(Dataset):
    """Base class of unpaired two-sided datasets (kind 'unpaired')."""

    kind: ClassVar[str] = "unpaired"

    def split(self, split: Split, side: Side) -> ImageSet:
        raise NotImplementedError


class PairedDataset(UnpairedDataset):
    """Base class of paired (aligned) two-sided datasets (kind 'paired'): the :class:`UnpairedDataset`
    API (``split(split, side)``), with image i of side A and image i of side B of a split showing the
    same scene (pix2pix's aligned data), so both sides of a split have the same length and, per index,
    the same image size. Tasks that ignore the alignment can train on it as unpaired data."""

    kind: ClassVar[str] = "paired"
