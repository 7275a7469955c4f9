"""Multi-domain datasets (StarGAN v2's setting): several domains, each with train and val images.

The contract, ``MultiDomainDataset``: ``.domains`` (names, in label order), ``.split(split, domain)``
-> ``ImageSet`` for ``split`` in ``('train', 'val')``, ``.identity`` (changes whenever the data would
change; used in metric cache keys). Images are ``torch.uint8`` (3, size, size) at the dataset's
resolution; a set may carry label maps (``ImageSet.label_info``), which the multi-modal task uses for
its structure score.

``multidomain_folder`` reads the folder-per-domain layout of StarGAN v2, Seasons, Weather and AFHQ::

    root/
      train/<domain>/...   val/<domain>/...     image files: jpg, jpeg, png, bmp, webp (any case)

Domains are the sub-folders of ``train/``, sorted by name (the official ``ImageFolder`` /
``sorted(os.listdir)`` order, which fixes the label of each domain); ``val/`` must have the same
sub-folders. Files are found recursively (the official ``listdir`` uses ``rglob``), sorted by path,
decoded lazily with PIL, converted to RGB and resized (bicubic) to ``size`` x ``size``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from benchmark.core.errors import DataError
from benchmark.core.registry import register_dataset
from benchmark.core.settings import path_setting

from .base import Dataset, ImageSet
from .folders import FolderImageSet, dataset_folder, files_digest, image_files

MultiSplit = Literal["train", "val"]
SPLITS: tuple[str, ...] = ("train", "val")
IDENTITY_VERSION = 2


class MultiDomainDataset(Dataset):
    """Base class of registered multi-domain datasets (kind 'multi_domain')."""

    kind: ClassVar[str] = "multi_domain"

    @property
    def domains(self) -> list[str]:
        """Domain names; the position of a name is its label (``y``)."""
        raise NotImplementedError

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def split(self, split: MultiSplit, domain: str | int) -> ImageSet:
        raise NotImplementedError

    @property
    def size(self) -> int:
        """Image side length (every image is size x size)."""
        return int(self.split("val", self.domains[0]).image(0).shape[-1])

    def domain_name(self, domain: str | int) -> str:
        """Name of a domain given by name or label, with an error naming the valid ones."""
        names = self.domains
        if isinstance(domain, int) and not isinstance(domain, bool):
            if not 0 <= domain < len(names):
                raise ValueError(f"domain label {domain} out of range 0..{len(names) - 1} ({', '.join(names)})")
            return names[domain]
        if domain not in names:
            raise ValueError(f"unknown domain {domain!r}; domains: {', '.join(names)}")
        return str(domain)

    @staticmethod
    def check_split(split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@register_dataset("multidomain_folder")
class MultiDomainFolder(MultiDomainDataset):
    """Real multi-domain dataset in folder-per-domain layout: root/train/<domain>/, root/val/<domain>/
    (StarGAN v2's AFHQ and CelebA-HQ, Hneg-SRC's Seasons and Weather).

    ``domains`` (optional) picks and orders domains; by default every sub-folder of ``train/``,
    sorted by name. ``max_images`` > 0 keeps only the first images (by path) of each folder.
    """

    @dataclass
    class Options:
        root: str = path_setting()
        size: int = 256
        domains: list[str] | None = None
        max_images: int = 0

        def validate(self) -> str | None:
            if not self.root:
                return "root must name the dataset folder (containing train/<domain>/ and val/<domain>/)"
            if not isinstance(self.size, int) or not 16 <= self.size <= 2048:
                return f"size must be an integer between 16 and 2048, got {self.size!r}"
            if self.max_images < 0:
                return f"max_images must be 0 (all) or a positive integer, got {self.max_images!r}"
            if self.domains is not None and (len(self.domains) < 2 or len(set(self.domains)) != len(self.domains)):
                return f"domains must list at least two distinct names, got {self.domains!r}"
            return None

    def __init__(self, options, cache_dir):
        super().__init__(options, cache_dir)
        self._domains: list[str] | None = None
        self._files: dict[tuple[str, str], list[Path]] = {}
        self._identity: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.options.root).expanduser()

    def _split_dir(self, split: str) -> Path:
        expected = "expected a folder with sub-folders train/<domain>/ and val/<domain>/"
        return dataset_folder(self.root, split, expected)

    @property
    def domains(self) -> list[str]:
        if self._domains is None:
            train = self._split_dir("train")
            found = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
            if self.options.domains is not None:
                missing = [d for d in self.options.domains if d not in found]
                if missing:
                    raise DataError(f"domain folder '{train / missing[0]}' does not exist (domains "
                                    f"named in the config: {', '.join(self.options.domains)}; found: "
                                    f"{', '.join(found) or 'none'})")
                found = list(self.options.domains)
            if len(found) < 2:
                raise DataError(f"dataset folder '{train}' has {len(found)} domain sub-folder(s) "
                                f"({', '.join(found) or 'none'}); expected at least two, one per domain")
            val = self._split_dir("val")
            for d in found:
                if not (val / d).is_dir():
                    raise DataError(f"domain folder '{val / d}' does not exist; every domain of "
                                    f"'{train}' needs a folder in '{val}'")
            self._domains = found
        return self._domains

    def files(self, split: MultiSplit, domain: str | int) -> list[Path]:
        self.check_split(split)
        name = self.domain_name(domain)
        key = (split, name)
        if key not in self._files:
            folder = self._split_dir(split) / name
            self._files[key] = image_files(folder, "domain folder", self.options.max_images, recursive=True)
        return self._files[key]

    def source_files(self) -> list[Path]:
        return [path for split in SPLITS for d in self.domains for path in self.files(split, d)]

    def split(self, split: MultiSplit, domain: str | int) -> FolderImageSet:
        return FolderImageSet(self.files(split, domain), self.options.size)

    @property
    def size(self) -> int:
        return self.options.size

    @property
    def identity(self) -> str:
        if self._identity is None:
            files = files_digest([(f"{split}/{d}/{path.name}", path) for split in SPLITS for d in self.domains
                                  for path in self.files(split, d)], self.cache_dir)
            o = self.options
            self._identity = (f"multidomain_folder/v{IDENTITY_VERSION}/domains={','.join(self.domains)}/files={files}/"
                              f"size={o.size},max_images={o.max_images}")
        return self._identity
