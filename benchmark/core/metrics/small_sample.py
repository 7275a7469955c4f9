"""Small-sample statistics of FID and KID: bootstrap confidence intervals over test images, KID's
spread over its subsets, and FID-infinity (Chong & Forsyth, CVPR 2020).

FID on a few hundred images is slow with the textbook formula (a 2048 x 2048 ``sqrtm`` per value) and
a bootstrap needs hundreds of values, so :class:`FidOnSubsets` computes FID on index multisets of two
fixed feature sets through their Gram matrices.  With ``X`` (n x d) and ``Y`` (m x d) the centred
features of the two sides and ``S_x = X^T X / (n - 1)``, ``S_y = Y^T Y / (m - 1)``::

    eig(S_x S_y) \\ {0} = eig(X Y^T Y X^T) \\ {0} / ((n - 1)(m - 1)),  X Y^T Y X^T = A A^T,  A = X Y^T,

so ``tr sqrt(S_x S_y) = ||X Y^T||_* / sqrt((n - 1)(m - 1))`` (the nuclear norm: the sum of the
singular values of the n x m matrix ``A``), and ``A`` is the doubly centred block of the cross Gram
matrix ``F_x F_y^T`` -- no d x d matrix at all.  A resample that holds an image ``w`` times enters
with weight ``w`` (``A`` shrinks to the distinct images, rows and columns scaled by ``sqrt(w)``), so a
bootstrap resample costs one SVD of about (0.63 n) x (0.63 m).  The traces and the mean difference
come from the Gram matrices too.

Bootstrap intervals (:func:`bootstrap_interval`): resampling with replacement repeats images, and a
sample with repeats has fewer distinct images, which by itself raises FID (its bias grows like 1/N)
and KID (a repeated image pairs with itself).  The resampled values therefore sit above the point
estimate by about that bias, often by more than their spread.  The interval is the percentile
interval of the resampled values shifted by the bootstrap's bias estimate (their mean minus the
point estimate): it measures how much the score moves with the choice of test images, around the
number reported.  Both the shift and the raw percentiles are returned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BenchmarkError

__all__ = [
    "FidOnSubsets",
    "Interval",
    "bootstrap_fid",
    "bootstrap_kid",
    "bootstrap_interval",
    "kid_subsets",
    "fid_infinity",
    "FidInfinity",
    "fid_infinity_sizes",
]


def _features(f, name: str) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise BenchmarkError(f"{name}: features have shape {f.shape}; expected a 2-D array with at least "
                             "2 rows (N, D)")
    if not np.isfinite(f).all():
        raise BenchmarkError(f"{name}: features contain NaN or inf; expected finite values")
    return f


def _pair(f1, f2, what: str) -> tuple[np.ndarray, np.ndarray]:
    f1, f2 = _features(f1, f"{what} f1"), _features(f2, f"{what} f2")
    if f1.shape[1] != f2.shape[1]:
        raise BenchmarkError(f"{what}: feature dimensions differ ({f1.shape[1]} vs {f2.shape[1]}); "
                             "expected features from the same network")
    return f1, f2


def _counts(index, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The distinct entries of an index multiset into ``n`` rows and how often each occurs."""
    index = np.asarray(index, dtype=np.int64).ravel()
    if index.size < 2:
        raise BenchmarkError(f"FID on a subset: {name} selects {index.size} rows; expected at least 2")
    if index.min() < 0 or index.max() >= n:
        raise BenchmarkError(f"FID on a subset: {name} holds an index outside 0..{n - 1}")
    return np.unique(index, return_counts=True)


class FidOnSubsets:
    """FID of sub-multisets of two feature sets ``f1`` (n1 x d) and ``f2`` (n2 x d), exactly, through
    their Gram matrices (see the module docstring): :meth:`fid` ``(i1, i2)`` equals
    ``fid_from_features(f1[i1], f2[i2])`` to rounding.  Building costs one (n1 + n2)^2 x d product;
    each value one SVD of (distinct rows of i1) x (distinct rows of i2)."""

    def __init__(self, f1, f2):
        f1, f2 = _pair(f1, f2, "FID")
        centre = np.concatenate([f1, f2]).mean(axis=0)  # FID is translation invariant; this keeps
        self.f1, self.f2 = f1 - centre, f2 - centre     # the Gram entries small (less cancellation)
        self.n1, self.n2, self.dim = f1.shape[0], f2.shape[0], f1.shape[1]
        self._grams = None

    def fid(self, i1=None, i2=None) -> float:
        """FID of ``f1[i1]`` against ``f2[i2]`` (index arrays, repeats allowed; None = every row)."""
        u1, w1 = _counts(np.arange(self.n1) if i1 is None else i1, self.n1, "i1")
        u2, w2 = _counts(np.arange(self.n2) if i2 is None else i2, self.n2, "i2")
        if self.dim < min(len(u1), len(u2)):
            return self._fid_in_feature_space(u1, w1, u2, w2)
        if self._grams is None:
            self._grams = (self.f1 @ self.f1.T, self.f2 @ self.f2.T, self.f1 @ self.f2.T)
        k11, k22, k12 = (g[np.ix_(a, b)] for g, a, b in zip(self._grams, (u1, u2, u1), (u1, u2, u2)))
        return _fid_from_grams(k11, k22, k12, w1, w2)

    def _fid_in_feature_space(self, u1, w1, u2, w2) -> float:
        """More distinct rows than dimensions (small feature vectors): ``||X Y^T||_* = ||R_x R_y^T||_*``
        with ``R`` the d x d triangular factors of the weighted centred features."""
        n, m = float(w1.sum()), float(w2.sum())
        mu1, mu2 = w1 @ self.f1[u1] / n, w2 @ self.f2[u2] / m
        x = np.sqrt(w1)[:, None] * (self.f1[u1] - mu1)
        y = np.sqrt(w2)[:, None] * (self.f2[u2] - mu2)
        nuclear = np.linalg.svd(np.linalg.qr(x, mode="r") @ np.linalg.qr(y, mode="r").T, compute_uv=False).sum()
        diff = mu1 - mu2
        return float(diff @ diff + (x * x).sum() / (n - 1.0) + (y * y).sum() / (m - 1.0)
                     - 2.0 * nuclear / np.sqrt((n - 1.0) * (m - 1.0)))


def _fid_from_grams(k11, k22, k12, w1, w2) -> float:
    """FID from the Gram blocks of the distinct rows of both sides and their multiplicities."""
    n, m = float(w1.sum()), float(w2.sum())
    p1, p2 = w1 / n, w2 / m                          # weights of the means
    r1, r2 = k11 @ p1, k22 @ p2                      # <f_u, mean>
    mm11, mm22 = p1 @ r1, p2 @ r2                    # |mean|^2
    c12 = k12 @ p2                                   # <f1_u, mean2>
    c21 = p1 @ k12                                   # <mean1, f2_v>
    mm12 = p1 @ c12                                  # <mean1, mean2>
    mean_term = mm11 + mm22 - 2.0 * mm12
    trace1 = (w1 @ np.diag(k11) - n * mm11) / (n - 1.0)
    trace2 = (w2 @ np.diag(k22) - m * mm22) / (m - 1.0)
    cross = k12 - c12[:, None] - c21[None, :] + mm12   # <f1_u - mean1, f2_v - mean2>
    cross = np.sqrt(w1)[:, None] * cross * np.sqrt(w2)[None, :]
    nuclear = np.linalg.svd(cross, compute_uv=False).sum()
    return float(mean_term + trace1 + trace2 - 2.0 * nuclear / np.sqrt((n - 1.0) * (m - 1.0)))


# --------------------------------------------------------------------------------------------
# KID
# --------------------------------------------------------------------------------------------

def kid_subsets(f1, f2, num_subsets: int = 100, subset_size: int = 1000,
                seed: int = 0) -> tuple[float, np.ndarray]:
    """clean-fid's KID (``cleanfid.fid.kernel_distance``) and the raw KID of each of its random
    subsets: the same draws from numpy's global RNG seeded with ``seed`` (restored afterwards) and the
    same arithmetic, so the first value is bit-identical to clean-fid's.  clean-fid returns only the
    mean; the per-subset values give KID's spread over subsets.  When both sets hold at most
    ``subset_size`` images and equally many, every subset is the whole of both sets and the values are
    all equal (spread 0)."""
    f1, f2 = _pair(f1, f2, "KID")
    if not isinstance(num_subsets, int) or num_subsets < 1:
        raise BenchmarkError(f"KID: num_subsets {num_subsets!r}; expected a positive int")
    if not isinstance(subset_size, int) or subset_size < 2:
        raise BenchmarkError(f"KID: subset_size {subset_size!r}; expected an int >= 2")
    n = f1.shape[1]
    m = min(f1.shape[0], f2.shape[0], subset_size)
    terms = np.empty(num_subsets)
    total = 0
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        for s in range(num_subsets):
            x = f2[np.random.choice(f2.shape[0], m, replace=False)]
            y = f1[np.random.choice(f1.shape[0], m, replace=False)]
            a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
            b = (x @ y.T / n + 1) ** 3
            terms[s] = (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
            total += terms[s]
    finally:
        np.random.set_state(state)
    return float(total / num_subsets / m), terms / m


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


# --------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval of ``estimate``: ``low``/``high``, the bias-shifted percentile
    interval; ``shift``: mean of the resampled values minus the estimate (the bootstrap's bias
    estimate, subtracted); ``raw_low``/``raw_high``: the unshifted percentiles."""
    estimate: float
    low: float
    high: float
    shift: float
    raw_low: float
    raw_high: float
    level: float
    resamples: int


def bootstrap_interval(estimate: float, values: np.ndarray, level: float) -> Interval:
    """The interval of ``estimate`` from resampled ``values`` at confidence ``level`` (see the module
    docstring): percentiles (1 - level)/2 and (1 + level)/2 of ``values``, shifted by
    ``mean(values) - estimate``."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2 or not np.isfinite(values).all():
        raise BenchmarkError(f"bootstrap: {values.size} resampled values (finite: "
                             f"{bool(np.isfinite(values).all())}); expected at least 2 finite values")
    if not 0.0 < level < 1.0:
        raise BenchmarkError(f"bootstrap: confidence level {level!r}; expected a number in (0, 1)")
    raw_low, raw_high = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    shift = float(values.mean() - estimate)
    return Interval(float(estimate), float(raw_low - shift), float(raw_high - shift), shift,
                    float(raw_low), float(raw_high), float(level), int(values.size))


def _resample(rng: np.random.Generator, n: int, cluster_size: int = 1) -> np.ndarray:
    """Indices of a resample with replacement of ``n`` rows, drawn as ``n / cluster_size`` clusters of
    consecutive rows (e.g. the outputs of one source image)."""
    if cluster_size == 1:
        return rng.integers(0, n, size=n)
    clusters = rng.integers(0, n // cluster_size, size=n // cluster_size)
    return (clusters[:, None] * cluster_size + np.arange(cluster_size)[None, :]).ravel()


def bootstrap_fid(f1, f2, resamples: int, seed: int | list[int], resample_f2: bool,
                  cluster_size: int = 1) -> np.ndarray:
    """FID of ``resamples`` bootstrap resamples: ``f1`` (the generated images) drawn with replacement
    to its own size, and ``f2`` (the real images) too when ``resample_f2``, independently; one
    ``numpy.random.default_rng(seed)`` stream, f1's draw first in every resample.  ``cluster_size``
    > 1: f1's rows come in blocks of that many consecutive rows that are resampled together (several
    outputs of one source image are not independent samples)."""
    scorer = FidOnSubsets(f1, f2)
    if cluster_size < 1 or scorer.n1 % cluster_size:
        raise BenchmarkError(f"bootstrap: {scorer.n1} generated rows do not split into clusters of "
                             f"{cluster_size}; expected a divisor of the number of rows")
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for b in range(resamples):
        i1 = _resample(rng, scorer.n1, cluster_size)
        i2 = _resample(rng, scorer.n2) if resample_f2 else None
        out[b] = scorer.fid(i1, i2)
    return out


def bootstrap_kid(f1, f2, resamples: int, seed: int, resample_f2: bool) -> np.ndarray:
    """Raw KID of ``resamples`` bootstrap resamples (drawn as :func:`bootstrap_fid` draws them, from
    the same seed, so FID's and KID's resamples are the same images): the unbiased MMD^2 with
    clean-fid's cubic kernel over all pairs of the resample, which is what clean-fid's subset average
    estimates (and equals it when both sets fit in one subset and are equally large)."""
    f1, f2 = _pair(f1, f2, "KID")
    k11, k22, k12 = _poly_kernel(f1, f1), _poly_kernel(f2, f2), _poly_kernel(f1, f2)
    n1, n2 = f1.shape[0], f2.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for b in range(resamples):
        i1 = _resample(rng, n1)
        i2 = _resample(rng, n2) if resample_f2 else np.arange(n2)
        u1, w1 = np.unique(i1, return_counts=True)
        u2, w2 = np.unique(i2, return_counts=True)
        a11 = w1 @ k11[np.ix_(u1, u1)] @ w1 - w1 @ np.diag(k11)[u1]  # pairs of positions i != j
        a22 = w2 @ k22[np.ix_(u2, u2)] @ w2 - w2 @ np.diag(k22)[u2]
        a12 = w1 @ k12[np.ix_(u1, u2)] @ w2
        out[b] = a11 / (n1 * (n1 - 1)) + a22 / (n2 * (n2 - 1)) - 2.0 * a12 / (n1 * n2)
    return out


# --------------------------------------------------------------------------------------------
# FID-infinity
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FidInfinity:
    """FID extrapolated to infinitely many samples: ``value`` (the intercept of the least-squares
    line FID_N = value + slope / N), the sizes N of the generated side, the FID_N values."""
    value: float
    slope: float
    sizes: tuple[int, ...]
    fids: tuple[float, ...]


def fid_infinity_sizes(n: int, points: int, min_fraction: float) -> list[int]:
    """The official code's ``np.linspace(5000, num_im, num_points).astype('int32')`` scaled to ``n``
    images: ``points`` sizes evenly spaced from ``min_fraction * n`` (its 5000 of 50000: 0.1) to ``n``,
    truncated to ints, at least 2 each, repeats dropped."""
    if not isinstance(points, int) or points < 2:
        raise BenchmarkError(f"FID-infinity: {points!r} points; expected an int >= 2 (a line needs two)")
    if not 0.0 < min_fraction < 1.0:
        raise BenchmarkError(f"FID-infinity: min_fraction {min_fraction!r}; expected a number in (0, 1)")
    sizes = sorted({max(2, int(s)) for s in np.linspace(min_fraction * n, n, points)})
    if len(sizes) < 2:
        raise BenchmarkError(f"FID-infinity: {n} images give fewer than two distinct sample sizes; "
                             "expected more images")
    return sizes


def fid_infinity(f1, f2, points: int = 15, min_fraction: float = 0.1, seed: int = 0,
                 subsample_f2: bool = True) -> FidInfinity:
    """FID-infinity of ``f1`` (generated) against ``f2`` (real), after Chong & Forsyth: FID_N at the
    sizes :func:`fid_infinity_sizes` gives, a least-squares line in 1/N, its value at 1/N = 0.

    As the official code (``calculate_FID_infinity``), each FID_N takes the first N of a fresh random
    permutation of the generated features (a seeded ``numpy.random.default_rng(seed)`` stream; the
    official code draws its generator's latents from a Sobol sequence, which has no counterpart when
    the outputs are translations of fixed test images).  The official reference statistics come from
    50,000 real images; ours are often a small test set whose own 1/N bias would stay in the
    intercept, so with ``subsample_f2`` the real side is subsampled at the same fraction N / n1 in each
    draw (both biases are then linear in 1/N and both vanish at 1/N = 0)."""
    scorer = FidOnSubsets(f1, f2)
    sizes = fid_infinity_sizes(scorer.n1, points, min_fraction)
    rng = np.random.default_rng(seed)
    fids = []
    for size in sizes:
        i1 = rng.permutation(scorer.n1)[:size]
        i2 = None
        if subsample_f2:
            i2 = rng.permutation(scorer.n2)[:max(2, int(round(size * scorer.n2 / scorer.n1)))]
        fids.append(scorer.fid(i1, i2))
    x = 1.0 / np.asarray(sizes, dtype=np.float64)
    slope, intercept = np.polyfit(x, np.asarray(fids), 1)
    return FidInfinity(float(intercept), float(slope), tuple(sizes), tuple(float(f) for f in fids))
