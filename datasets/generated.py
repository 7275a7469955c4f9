"""What the procedurally generated datasets share: their options checked when the dataset is built,
an identity made of the generator's version and every option, and the generated arrays kept in one
``.npz`` file of the cache folder, generated again when that file is missing, unreadable or holds
arrays of other shapes."""
from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np

from benchmark.core.atomic import atomic_write
from benchmark.core.errors import ConfigError


class GeneratedArrays:
    """Mixin, before the dataset base class: ``generate()`` returns every array (uint8) and
    ``_expected_shapes()`` their shapes; the dataset reads them through :meth:`_load`."""

    GENERATOR_VERSION: ClassVar[int]
    """Raised whenever the generator would draw other images: the identity (and cache file) changes."""

    def __init__(self, options, cache_dir):
        super().__init__(options, Path(cache_dir))
        problem = options.validate()
        if problem:
            raise ConfigError(f"dataset {self.registry_name}: {problem}")
        self._arrays: dict[str, np.ndarray] | None = None

    @property
    def identity(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(dataclasses.asdict(self.options).items()))
        return f"{self.registry_name}/generator-v{self.GENERATOR_VERSION}/{opts}"

    @property
    def cache_path(self) -> Path:
        digest = hashlib.sha256(self.identity.encode()).hexdigest()[:16]
        return self.cache_dir / f"{self.registry_name}-{digest}.npz"

    def generate(self) -> dict[str, np.ndarray]:
        """Every array of the dataset, freshly generated (no cache)."""
        raise NotImplementedError

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def _read_cache(self) -> dict[str, np.ndarray] | None:
        if not self.cache_path.is_file():
            return None
        try:
            with np.load(self.cache_path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
            return None  # unreadable or truncated: regenerate and overwrite
        shapes = self._expected_shapes()
        if set(arrays) != set(shapes) or any(arrays[k].shape != shapes[k] or arrays[k].dtype != np.uint8
                                             for k in shapes):
            return None
        return arrays

    def _write_cache(self, arrays: dict[str, np.ndarray]) -> None:
        with atomic_write(self.cache_path) as f:
            np.savez(f, **arrays)

    def _load(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            arrays = self._read_cache()
            if arrays is None:
                arrays = self.generate()
                self._write_cache(arrays)
            self._arrays = arrays
        return self._arrays
