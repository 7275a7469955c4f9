"""sha256 of weight files, remembered per file state so that an unchanged file is hashed once; and
the sha256 of a JSON-able key (``content_hash``), which names content-addressed caches."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .atomic import atomic_write
from .errors import StorageError, WeightsError

HASH_CACHE_NAME = "sha256_cache.json"
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """Folder for small caches: ``$I2I_BENCH_CACHE_DIR`` or ``~/.cache/i2i-bench``."""
    env = os.environ.get("I2I_BENCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "i2i-bench"


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def read_hash_cache(cache_file: Path) -> dict:
    try:
        with open(cache_file, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_hash_cache(cache_file: Path, data: dict) -> None:
    """Atomically write the hash cache; failures only cost a rehash next time."""
    try:
        with atomic_write(cache_file, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
    except (OSError, StorageError):  # a full disk or quota: atomic_write's StorageError
        pass


def cached_sha256(path: Path, cache_dir: Path | str | None = None) -> str:
    """sha256 of the file at ``path``, remembered in ``<cache_dir>/sha256_cache.json`` keyed by
    (resolved path, size, mtime_ns), so an unchanged file is hashed once. OSError when unreadable."""
    return cached_sha256s([path], cache_dir)[0]


def cached_sha256s(paths: list[Path], cache_dir: Path | str | None = None) -> list[str]:
    """:func:`cached_sha256` of each of ``paths``, the cache file read and written once."""
    cache_file = Path(cache_dir if cache_dir is not None else default_cache_dir()) / HASH_CACHE_NAME
    known = read_hash_cache(cache_file)
    out, new = [], {}
    for path in paths:
        st = Path(path).stat()
        key = str(Path(path).resolve())
        entry = known.get(key)
        if (isinstance(entry, dict) and entry.get("size") == st.st_size
                and entry.get("mtime_ns") == st.st_mtime_ns and isinstance(entry.get("sha256"), str)):
            out.append(entry["sha256"])
            continue
        actual = hash_file(Path(path))
        new[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": actual}
        out.append(actual)
    if new:
        cache = read_hash_cache(cache_file)  # re-read: another process may have added entries
        cache.update(new)
        write_hash_cache(cache_file, cache)
    return out


def verify_sha256(path: Path | str, expected: str, cache_dir: Path | str | None = None,
                  hint: str = "") -> str:
    """Check that the file at ``path`` has sha256 ``expected``; return the hash.

    The file is hashed in 1 MiB chunks.  Verified files are remembered in
    ``<cache_dir>/sha256_cache.json`` keyed by (resolved path, size, mtime_ns), so an unchanged file
    is not rehashed.  A wrong hash raises :class:`WeightsError` naming the file and both hashes.
    """
    path = Path(path)
    expected = expected.lower()
    if path.exists() and not path.is_file():
        raise WeightsError(f"{path}: is not a file; expected a file with sha256 {expected}")
    try:
        actual = cached_sha256(path, cache_dir)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weight file ({exc}); expected a file with "
                           f"sha256 {expected}") from exc
    if actual != expected:
        raise WeightsError(f"{path}: sha256 mismatch; expected {expected}, got {actual}. "
                           "The file is corrupt or not the expected weights; replace it"
                           + (f" ({hint})." if hint else "."))
    return actual


def canonical_json(key) -> str:
    """``key`` (str / int / float / bool / None / lists / dicts with str keys) as canonical JSON:
    sorted keys, no whitespace, ASCII, no NaN; a TypeError / ValueError names what is not JSON-able."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def content_hash(key) -> str:
    """sha256 (hex) of :func:`canonical_json` of ``key``: equal keys, equal hashes, whatever the
    order of their dict entries."""
    return hashlib.sha256(canonical_json(key).encode("utf-8")).hexdigest()


def state_dict_hash(module) -> str:
    """sha256 (hex) of a module's state dict: its keys, dtypes, shapes and values, in key order."""
    import torch
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode("utf-8"))
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
