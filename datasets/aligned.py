"""Real paired (aligned) datasets stored in the pix2pix layout::

    root/
      train/   val/      each file one pair: image A (left half) and image B (right half) side by side

as pix2pix's ``datasets/combine_A_and_B.py`` writes them and GAN Compression's
``data/aligned_dataset.py`` reads them. The ``val`` folder is this benchmark's test split: GAN
Compression evaluates on ``--phase val`` (``data/__init__.py``, ``create_eval_dataloader``).

Each file is decoded lazily with PIL on access (converted to RGB), split at half its width, and each
half resized (bicubic) to ``load_size`` x ``load_size`` for the train split (the training task crops
``size`` from both halves at the same position and flips both alike) and to ``size`` x ``size`` for
the test split, as the official eval loader does (``load_size = crop_size``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from benchmark.core.errors import DataError
from benchmark.core.image_io import decode
from benchmark.core.registry import register_dataset

from .base import ImageSet, PairedDataset, Side, Split
from .folders import FolderReader, UnalignedFolder, dataset_folder, files_digest, image_files, square_tensor

ALIGNED_SUBFOLDERS = {"train": "train", "test": "val"}
"""Split -> sub-folder of an aligned dataset (the test split is pix2pix's ``val``)."""
IDENTITY_VERSION = 2


def load_aligned_half(path: Path, half: int, size: int) -> torch.Tensor:
    """Half ``half`` (0: left, 1: right) of the side-by-side pair in ``path``, resized to ``size`` x
    ``size`` (bicubic): uint8 (3, size, size). A DataError names the file when it cannot be decoded
    or its width is odd (the halves would differ in width)."""
    rgb = decode(path)
    width, height = rgb.size
    if width % 2:
        raise DataError(f"image file '{path}' is {width}x{height} pixels: an aligned pair must hold "
                        "image A (left) and image B (right) side by side, two halves of equal width, "
                        "so its width must be even")
    half_width = width // 2
    box = (0, 0, half_width, height) if half == 0 else (half_width, 0, width, height)
    return square_tensor(rgb.crop(box), size)


class AlignedHalfImageSet(ImageSet):
    """One half (0: left = A, 1: right = B) of side-by-side pair files, decoded on access; no labels."""

    def __init__(self, paths: Sequence[Path], half: int, size: int):
        if half not in (0, 1):
            raise ValueError(f"half must be 0 (left) or 1 (right), got {half!r}")
        self.paths, self.half, self.size = list(paths), half, size

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> torch.Tensor:
        return load_aligned_half(self.paths[index], self.half, self.size)

    def name(self, index: int) -> str:
        return self.paths[index].stem


@register_dataset("aligned_folder")
class AlignedFolder(FolderReader, PairedDataset):
    """Real aligned dataset folder (train/val of side-by-side A|B pairs) as used by pix2pix and GAN Compression.

    Train pairs are resized to ``load_size`` (the training task crops ``size``), test (``val``)
    pairs to ``size``; ``max_images`` > 0 keeps only the first pairs (by name) of each folder;
    ``direction: BtoA`` makes the right halves the source side A (GAN Compression's Cityscapes and
    map->satellite runs use it).
    """

    @dataclass
    class Options(UnalignedFolder.Options):
        """The options of ``unaligned_folder`` (size, load_size, max_images, direction,
        segmentation_protocol: 'cut' when the source halves are Cityscapes colour label maps)."""

        def validate(self) -> str | None:
            if not self.root:
                return ("root must name the dataset folder (containing "
                        f"{', '.join(ALIGNED_SUBFOLDERS.values())} of side-by-side A|B images)")
            return super().validate()

    def half(self, side: Side) -> int:
        """The half (0: left, 1: right) holding ``side`` ('A' = source) under ``direction``."""
        left = "A" if self.options.direction == "AtoB" else "B"
        return 0 if side == left else 1

    def files(self, split: Split) -> list[Path]:
        """The pair files of one split (after ``max_images``)."""
        if split not in ALIGNED_SUBFOLDERS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        folder_name = ALIGNED_SUBFOLDERS[split]
        if folder_name not in self._files:
            expected = (f"expected a folder with sub-folders {', '.join(ALIGNED_SUBFOLDERS.values())} "
                        "holding side-by-side A|B images (the pix2pix layout)")
            if not self.options.root:
                raise DataError(f"aligned_folder: no root given; {expected}")
            folder = dataset_folder(self.root, folder_name, expected)
            self._files[folder_name] = image_files(folder, "dataset folder", self.options.max_images)
        return self._files[folder_name]

    def source_files(self) -> list[Path]:
        return [path for split in ALIGNED_SUBFOLDERS for path in self.files(split)]

    def split(self, split: Split, side: Side) -> AlignedHalfImageSet:
        if side not in ("A", "B"):
            raise ValueError(f"side must be 'A' or 'B', got {side!r}")
        size = self.options.load_size if split == "train" else self.options.size
        return AlignedHalfImageSet(self.files(split), self.half(side), size)

    @property
    def identity(self) -> str:
        if self._identity is None:
            files = files_digest([(f"{folder_name}/{path.name}", path) for split, folder_name
                                  in ALIGNED_SUBFOLDERS.items() for path in self.files(split)], self.cache_dir)
            o = self.options
            self._identity = (f"aligned_folder/v{IDENTITY_VERSION}/files={files}/size={o.size},"
                              f"load_size={o.load_size},max_images={o.max_images}"
                              + (",direction=BtoA" if o.direction == "BtoA" else ""))
        return self._identity
