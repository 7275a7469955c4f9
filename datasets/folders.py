"""Real unpaired datasets stored as CUT/CycleGAN folders::

    root/
      trainA/  trainB/  testA/  testB/      image files: jpg, jpeg, png, bmp, webp (any case)

Images are decoded lazily on access (:func:`benchmark.core.image_io.decode`: RGB, 8 bits) and resized (bicubic) to
``load_size`` x ``load_size`` for the train split (the training task random-crops them to ``size``)
and to ``size`` x ``size`` for the test split.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image

from benchmark.core.errors import DataError
from benchmark.core.hashing import cached_sha256s
from benchmark.core.image_io import decode
from benchmark.core.registry import register_dataset
from benchmark.core.settings import path_setting
from benchmark.core.weights import SEGMENTATION_PROTOCOL_WEIGHTS

from .base import ImageSet, Side, Split, UnpairedDataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SUBFOLDERS = ("trainA", "trainB", "testA", "testB")
IDENTITY_VERSION = 2


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files directly in ``folder``, or anywhere under it when ``recursive`` (sorted by path;
    hidden files, and with ``recursive`` hidden folders, skipped)."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates
                  if p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and p.is_file())


def dataset_folder(root: Path, name: str, expected: str) -> Path:
    """``root / name`` of a dataset laid out in sub-folders; a DataError naming the missing root or
    folder and the ``expected`` layout."""
    if not root.is_dir():
        raise DataError(f"dataset root '{root}' does not exist or is not a folder; {expected} "
                        "(`python -m benchmark data list`: where the public datasets come from)")
    folder = root / name
    if not folder.is_dir():
        raise DataError(f"dataset folder '{folder}' does not exist; {expected}")
    return folder


def files_digest(files: Sequence[tuple[str, Path]], cache_dir: Path) -> str:
    """A digest of each file's place in the dataset (e.g. ``trainA/0001.jpg``) and of its content
    (sha256, each file hashed once per cache folder: ``benchmark.core.hashing``), not of where the
    folder lies: the same images under another root give the same identity, an image changed in
    place (same name, even the same size) another."""
    try:
        hashes = cached_sha256s([path for _, path in files], cache_dir)
    except OSError as exc:
        raise DataError(f"cannot read image file '{exc.filename}' ({exc.strerror}); expected a readable image file")
    digest = hashlib.sha256()
    for (place, _), sha in zip(files, hashes):
        digest.update(f"{place}\0{sha}\n".encode())
    return digest.hexdigest()[:16]


def image_files(folder: Path, what: str = "dataset folder", max_images: int = 0,
                recursive: bool = False) -> list[Path]:
    """The image files of ``folder`` (``list_images``), only the first ``max_images`` when > 0; a
    DataError naming the folder (``what`` says which one it is) when it is missing or holds none."""
    if not folder.is_dir():
        raise DataError(f"{what} '{folder}' does not exist")
    paths = list_images(folder, recursive)
    if not paths:
        raise DataError(f"{what} '{folder}' contains no images; expected files ending in "
                        f"{', '.join(IMAGE_EXTENSIONS)}")
    return paths[:max_images] if max_images else paths


def load_image(path: Path, size: int) -> torch.Tensor:
    """Decode ``path`` as RGB, resize to ``size`` x ``size`` (bicubic): uint8 (3, size, size)."""
    return square_tensor(decode(path), size)


def square_tensor(rgb: Image.Image, size: int) -> torch.Tensor:
    """An RGB PIL image resized to ``size`` x ``size`` (bicubic) as uint8 (3, size, size)."""
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class FolderImageSet(ImageSet):
    """Image files decoded on access; no labels."""

    def __init__(self, paths: Sequence[Path], size: int):
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> torch.Tensor:
        return load_image(self.paths[index], self.size)

    def name(self, index: int) -> str:
        return self.paths[index].stem


class FolderReader:
    """What the readers of image folders share (mixed in before their dataset base class): the
    root folder, the caches of file lists and of the identity, and the DRN checkpoint their
    segmentation protocol needs."""

    @classmethod
    def required_weights(cls, options) -> list[str]:
        """The Cityscapes DRN checkpoint of the segmentation protocol, when one is set."""
        return [SEGMENTATION_PROTOCOL_WEIGHTS[options.segmentation_protocol]] if options.segmentation_protocol else []

    def __init__(self, options, cache_dir):
        super().__init__(options, Path(cache_dir))
        self._files: dict[str, list[Path]] = {}
        self._identity: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.options.root).expanduser()


@register_dataset("unaligned_folder")
class UnalignedFolder(FolderReader, UnpairedDataset):
    """Real unaligned dataset folder (trainA/trainB/testA/testB) as used by CUT and CycleGAN.

    Train images are resized to ``load_size`` (the training task random-crops ``size``), test
    images to ``size``; ``max_images`` > 0 keeps only the first images (by name) of each folder.
    """

    @dataclass
    class Options:
        root: str = path_setting()
        size: int = 256
        load_size: int = 286
        max_images: int = 0
        direction: Literal["AtoB", "BtoA"] = "AtoB"
        """'BtoA': translate the B folders into the A folders (CUT's ``--direction BtoA``, as its
        Cityscapes label->photo runs use: there trainA holds photos, trainB label maps)."""
        segmentation_protocol: Literal["", "cut"] = ""
        """'cut': the source side (A, or B with BtoA) holds Cityscapes colour label maps; outputs are
        then scored with DRN-D-22 under CUT's protocol (mIoU / pixAcc / clsAcc)."""

        def validate(self) -> str | None:
            if not self.root:
                return ("root must name the dataset folder (containing "
                        f"{', '.join(SUBFOLDERS)})")
            if not isinstance(self.size, int) or not 16 <= self.size <= 2048:
                return f"size must be an integer between 16 and 2048, got {self.size!r}"
            if not isinstance(self.load_size, int) or not self.size <= self.load_size <= 4096:
                return (f"load_size must be an integer between size ({self.size}) and 4096, "
                        f"got {self.load_size!r}")
            if not isinstance(self.max_images, int) or self.max_images < 0:
                return f"max_images must be 0 (all) or a positive integer, got {self.max_images!r}"
            return None



    def folder_side(self, side: Side) -> Side:
        """The folder letter holding ``side`` ('A' = source) under ``direction``."""
        if self.options.direction == "BtoA" and side in ("A", "B"):
            return "B" if side == "A" else "A"
        return side

    def files(self, split: Split, side: Side) -> list[Path]:
        """The image files of one split/side (source 'A', target 'B'; after ``max_images``)."""
        key = f"{split}{self.folder_side(side)}"
        if key not in SUBFOLDERS:
            raise ValueError(f"split must be 'train' or 'test' and side 'A' or 'B', "
                             f"got {split!r}, {side!r}")
        return self.folder_files(key)

    def folder_files(self, key: str) -> list[Path]:
        """The image files of sub-folder ``key`` (one of SUBFOLDERS), after ``max_images``."""
        if key not in self._files:
            expected = f"expected a folder with sub-folders {', '.join(SUBFOLDERS)}"
            if not self.options.root:
                raise DataError(f"unaligned_folder: no root given; {expected}")
            folder = dataset_folder(self.root, key, expected)
            self._files[key] = image_files(folder, "dataset folder", self.options.max_images)
        return self._files[key]

    def source_files(self) -> list[Path]:
        return [path for key in SUBFOLDERS for path in self.folder_files(key)]

    def split(self, split: Split, side: Side) -> FolderImageSet:
        size = self.options.load_size if split == "train" else self.options.size
        return FolderImageSet(self.files(split, side), size)

    @property
    def identity(self) -> str:
        if self._identity is None:
            files = files_digest([(f"{key}/{path.name}", path) for key in SUBFOLDERS
                                  for path in self.folder_files(key)], self.cache_dir)
            o = self.options
            self._identity = (f"unaligned_folder/v{IDENTITY_VERSION}/files={files}/size={o.size},"
                              f"load_size={o.load_size},max_images={o.max_images}"
                              + (",direction=BtoA" if o.direction == "BtoA" else ""))
        return self._identity
