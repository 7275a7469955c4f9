"""Image sets: indexable uint8 images (3, H, W) with optional per-image label maps (``torch.int64``
(H, W), class ids with ``ignore_index`` for unlabelled pixels), and what those labels mean."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import torch


@dataclass(frozen=True)
class LabelInfo:
    """What the label maps of a side mean."""
    kind: Literal["segmentation", "object_mask"]
    class_names: tuple[str, ...]
    ignore_index: int = 255


class ImageSet:
    """An indexable set of images (uint8, (3, H, W)) with optional label maps."""

    label_info: LabelInfo | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def label(self, index: int) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no labels")

    def name(self, index: int) -> str:
        return f"{index:05d}"

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.stack([self.image(int(i)) for i in indices])

    def labels(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.stack([self.label(int(i)) for i in indices])

    @property
    def has_labels(self) -> bool:
        return self.label_info is not None


class TensorImageSet(ImageSet):
    """Images (and labels) held in memory as tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                 label_info: LabelInfo | None = None, names: Sequence[str] | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images of shape (N, 3, H, W), got "
                             f"{images.dtype} {tuple(images.shape)}")
        self._images = images
        self._labels = labels
        self.label_info = label_info if labels is not None else None
        self._names = list(names) if names is not None else None

    def __len__(self) -> int:
        return self._images.shape[0]

    def image(self, index: int) -> torch.Tensor:
        return self._images[index]

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        return self._images[torch.as_tensor(list(indices), dtype=torch.long)]

    def label(self, index: int) -> torch.Tensor:
        if self._labels is None:
            return super().label(index)
        return self._labels[index]

    def name(self, index: int) -> str:
        return self._names[index] if self._names is not None else super().name(index)


class SubsetImageSet(ImageSet):
    """The images ``indices`` of another image set, in that order (e.g. a held-out part of a
    training split)."""

    def __init__(self, base: ImageSet, indices: Sequence[int]):
        self.base = base
        self.indices = [int(i) for i in indices]
        bad = [i for i in self.indices if not 0 <= i < len(base)]
        if bad:
            raise IndexError(f"subset indices {bad[:5]} are outside the {len(base)} images of the set")
        self.label_info = base.label_info

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, index: int) -> torch.Tensor:
        return self.base.image(self.indices[index])

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        return self.base.images([self.indices[int(i)] for i in indices])

    def label(self, index: int) -> torch.Tensor:
        return self.base.label(self.indices[index])

    def name(self, index: int) -> str:
        return self.base.name(self.indices[index])


class SplitDataset(Protocol):
    """What evaluation code needs of a dataset: its image sets by split and side, and an identity
    string that changes whenever the data would (for cache keys)."""

    @property
    def identity(self) -> str: ...

    def split(self, split: str, side: str) -> ImageSet: ...
