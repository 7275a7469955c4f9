"""Small-sample statistics of FID / KID: the Gram/nuclear-norm FID against the
textbook sqrtm formula, KID's per-subset values against clean-fid, bootstrap intervals (contain the
estimate, shrink with N, reproducible under a seed) and FID-infinity, on random Gaussian features
(no Inception network needed)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from benchmark.core.context import EvaluationConfig
from benchmark.core.errors import BenchmarkError, ConfigError
from benchmark.core.metrics.fid import fid_from_features, kid_from_features
from benchmark.core.metrics.small_sample import (FidOnSubsets, bootstrap_fid, bootstrap_interval, bootstrap_kid,
                                                 fid_infinity, fid_infinity_sizes, kid_subsets)
from benchmark.core.settings import build
from tasks.evaluation import fid_kid_scores


def gaussian(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return shift + scale * rng.standard_normal((n, d))


def textbook_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr sqrtm(S1 S2), the full d x d computation."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


# -- the exact identity behind the fast FID ---------------------------------------------------

@pytest.mark.parametrize("n1, n2, d", [(12, 20, 32), (40, 30, 8), (7, 7, 5)])
def test_nuclear_norm_fid_equals_sqrtm_formula(n1, n2, d):
    f1, f2 = gaussian(n1, d, 1, scale=1.3), gaussian(n2, d, 2, shift=0.4)
    scorer = FidOnSubsets(f1, f2)
    expected = textbook_fid(f1, f2)
    assert scorer.fid() == pytest.approx(expected, rel=1e-6)
    assert scorer.fid() == pytest.approx(fid_from_features(f1, f2, reduce=False), rel=1e-6)
    rng = np.random.default_rng(3)
    for _ in range(3):  # bootstrap-like index multisets with repeats, and plain subsets
        i1, i2 = rng.integers(0, n1, n1), rng.integers(0, n2, n2)
        assert scorer.fid(i1, i2) == pytest.approx(textbook_fid(f1[i1], f2[i2]), rel=1e-6)
        j1 = rng.permutation(n1)[: max(2, n1 // 2)]
        assert scorer.fid(j1, None) == pytest.approx(textbook_fid(f1[j1], f2), rel=1e-6)


def test_trace_sqrt_is_nuclear_norm_of_cross_product():
    x = gaussian(9, 16, 4)
    y = gaussian(13, 16, 5)
    xc, yc = x - x.mean(0), y - y.mean(0)
    s1, s2 = xc.T @ xc / 8, yc.T @ yc / 12
    by_sqrtm = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    by_svd = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt(8 * 12)
    assert by_svd == pytest.approx(by_sqrtm, rel=1e-6)


def test_fid_on_subsets_rejects_bad_input():
    with pytest.raises(BenchmarkError, match="dimensions differ"):
        FidOnSubsets(np.zeros((4, 3)), np.zeros((4, 2)))
    scorer = FidOnSubsets(gaussian(5, 3, 0), gaussian(5, 3, 1))
    with pytest.raises(BenchmarkError, match="outside 0..4"):
        scorer.fid([0, 5], None)
    with pytest.raises(BenchmarkError, match="at least 2"):
        scorer.fid([1], None)


# -- KID's spread over subsets ------------------------------------------------------------------

def test_kid_subsets_mean_is_clean_fids_kid_bit_for_bit():
    f1, f2 = gaussian(30, 16, 1), gaussian(45, 16, 2, shift=0.3)
    kid, values = kid_subsets(f1, f2, num_subsets=7, subset_size=20, seed=5)
    assert kid == kid_from_features(f1, f2, num_subsets=7, subset_size=20, seed=5)
    assert values.shape == (7,) and values.std() > 0  # different subsets, different values
    assert values.mean() == pytest.approx(kid, rel=1e-12)


def test_kid_subsets_equal_when_every_subset_is_the_whole_of_both_sets():
    f1, f2 = gaussian(12, 8, 1), gaussian(12, 8, 2)
    kid, values = kid_subsets(f1, f2, num_subsets=5, subset_size=1000, seed=0)
    assert np.allclose(values, kid, rtol=1e-10, atol=0)


def test_bootstrap_kid_is_the_all_pairs_unbiased_mmd_of_the_resample():
    f1, f2 = gaussian(10, 6, 1), gaussian(10, 6, 2)
    kid, _ = kid_subsets(f1, f2, num_subsets=1, subset_size=1000)
    # one subset of equal-sized sets = all pairs; a resample that happens to be the identity gives it
    values = bootstrap_kid(f1, f2, resamples=1, seed=0, resample_f2=False)
    rng = np.random.default_rng(0)
    i1 = rng.integers(0, 10, 10)
    d = 6
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    x = f1[i1]
    kxx, kyy, kxy = k(x, x), k(f2, f2), k(x, f2)
    by_hand = ((kxx.sum() - np.trace(kxx)) / 90 + (kyy.sum() - np.trace(kyy)) / 90 - 2 * kxy.mean())
    assert values[0] == pytest.approx(by_hand, rel=1e-10)
    assert kid == pytest.approx((k(f1, f1).sum() - np.trace(k(f1, f1))) / 90
                                + (kyy.sum() - np.trace(kyy)) / 90 - 2 * k(f1, f2).mean(), rel=1e-10)


# -- bootstrap intervals ------------------------------------------------------------------------

def _fid_interval(n: int, seed: int = 0, resamples: int = 100):
    f1, f2 = gaussian(n, 16, 10 + n, shift=0.5), gaussian(n, 16, 20 + n)
    estimate = fid_from_features(f1, f2)
    return bootstrap_interval(estimate, bootstrap_fid(f1, f2, resamples, seed, resample_f2=True), 0.9)


def _kid_interval(n: int, seed: int = 0, resamples: int = 100):
    f1, f2 = gaussian(n, 16, 10 + n, shift=0.5), gaussian(n, 16, 20 + n)
    kid, _ = kid_subsets(f1, f2, num_subsets=10)
    return bootstrap_interval(kid, bootstrap_kid(f1, f2, resamples, seed, resample_f2=True), 0.9)


@pytest.mark.parametrize("interval", [_fid_interval, _kid_interval])
def test_bootstrap_interval_contains_estimate_and_shrinks_with_n(interval):
    small, large = interval(30), interval(300)
    for ci in (small, large):
        assert ci.low < ci.estimate < ci.high
        assert ci.high - ci.low == pytest.approx(ci.raw_high - ci.raw_low)
    assert (large.high - large.low) < 0.5 * (small.high - small.low)


def test_bootstrap_shift_is_the_upward_bias_of_repeated_images():
    """Resampling with replacement repeats images, which alone raises FID: the raw percentiles of
    two samples of one distribution sit above the estimate, and the shift brings them back."""
    f1, f2 = gaussian(40, 32, 1), gaussian(40, 32, 2)
    estimate = fid_from_features(f1, f2)
    ci = bootstrap_interval(estimate, bootstrap_fid(f1, f2, 100, 0, resample_f2=True), 0.95)
    assert ci.shift > 0 and ci.raw_low > estimate  # the raw interval misses the estimate entirely
    assert ci.low < estimate < ci.high


def test_bootstrap_same_seed_same_interval_other_seed_other():
    a, b, c = _fid_interval(30, seed=7), _fid_interval(30, seed=7), _fid_interval(30, seed=8)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_bootstrap_keeps_a_reference_set_fixed():
    f1, f2 = gaussian(20, 8, 1), gaussian(30, 8, 2)
    fixed = bootstrap_fid(f1, f2, 20, 0, resample_f2=False)
    rng = np.random.default_rng(0)
    first = rng.integers(0, 20, 20)
    assert fixed[0] == pytest.approx(fid_from_features(f1[first], f2), rel=1e-6)


def test_bootstrap_interval_rejects_bad_input():
    with pytest.raises(BenchmarkError, match="confidence level"):
        bootstrap_interval(1.0, np.arange(5.0), 1.5)
    with pytest.raises(BenchmarkError, match="at least 2 finite"):
        bootstrap_interval(1.0, np.array([1.0, np.nan]), 0.9)


# -- FID-infinity -------------------------------------------------------------------------------

def test_fid_infinity_sizes_follow_the_official_linspace():
    assert fid_infinity_sizes(50000, 15, 0.1) == np.linspace(5000, 50000, 15).astype("int32").tolist()
    assert fid_infinity_sizes(120, 15, 0.1)[0] == 12 and fid_infinity_sizes(120, 15, 0.1)[-1] == 120
    with pytest.raises(BenchmarkError, match="fewer than two"):
        fid_infinity_sizes(2, 15, 0.1)


def test_fid_infinity_of_one_distribution_is_near_zero_while_small_n_fid_is_not():
    d = 16
    f1, f2 = gaussian(600, d, 1), gaussian(600, d, 2)
    inf = fid_infinity(f1, f2, points=15, min_fraction=0.1, seed=0)
    small = fid_from_features(f1[:60], f2[:60])
    assert small > 1.5  # about d (1/60 + 1/60) from the covariance noise alone
    assert abs(inf.value) < 0.1 * small
    assert abs(inf.value) < abs(fid_from_features(f1, f2))  # better than FID on every image
    assert inf.sizes[0] == 60 and inf.sizes[-1] == 600 and len(inf.fids) == 15


def test_fid_infinity_recovers_the_true_distance_of_two_gaussians():
    d, shift = 16, 0.5
    f1, f2 = gaussian(600, d, 3, shift=shift), gaussian(600, d, 4)
    true_fid = d * shift ** 2  # N(shift, I) vs N(0, I): ||mu1 - mu2||^2, equal covariances
    inf = fid_infinity(f1, f2, seed=1)
    assert abs(inf.value - true_fid) < 0.5 * abs(fid_from_features(f1[:60], f2[:60]) - true_fid)
    assert inf.value == pytest.approx(true_fid, abs=0.6)


def test_fid_infinity_is_reproducible_under_its_seed():
    f1, f2 = gaussian(100, 8, 1), gaussian(100, 8, 2)
    assert fid_infinity(f1, f2, seed=3) == fid_infinity(f1, f2, seed=3)
    assert fid_infinity(f1, f2, seed=3).value != fid_infinity(f1, f2, seed=4).value


# -- settings and the shared evaluation path ----------------------------------------------------

@pytest.mark.parametrize("key, value, words", [
    ("bootstrap_resamples", 5, "bootstrap_resamples must be 0"),
    ("bootstrap_confidence", 1.0, "bootstrap_confidence must be in"),
    ("fid_infinity_below", -1, "fid_infinity_below must be >= 0"),
    ("fid_infinity_points", 1, "fid_infinity_points must be >= 2"),
    ("fid_infinity_min_fraction", 0.0, "fid_infinity_min_fraction must be in"),
    ("bootstrap_sed", 1, "unknown key 'bootstrap_sed'.*bootstrap_seed"),
])
def test_evaluation_settings_are_validated(key, value, words):
    with pytest.raises(ConfigError, match=words):
        build(EvaluationConfig, {key: value}, "evaluation")


def test_fid_kid_scores_report_intervals_std_and_fid_infinity():
    f1, f2 = gaussian(60, 16, 1, shift=0.3), gaussian(70, 16, 2)
    ev = build(EvaluationConfig, {"bootstrap_resamples": 50, "kid_subsets": 10, "fid_infinity_below": 100})
    metrics, protocol = fid_kid_scores(f1, f2, ev, real_is_test=True, real_name="test B")
    assert metrics["FID"] == fid_from_features(f1, f2)
    assert metrics["KIDx100"] == 100 * kid_from_features(f1, f2, num_subsets=10, subset_size=1000, seed=0)
    assert metrics["FID_ci_low"] < metrics["FID"] < metrics["FID_ci_high"]
    assert metrics["KIDx100_ci_low"] < metrics["KIDx100"] < metrics["KIDx100_ci_high"]
    assert metrics["KIDx100_std"] > 0  # 60 of the 70 real images per subset
    assert "FID_inf" in metrics and metrics["FID_inf"] < metrics["FID"]
    assert "50 resamples" in protocol["bootstrap"] and "independently, the 70 real" in protocol["bootstrap"]
    assert "N = 6..60" in protocol["fid_infinity"]
    again, _ = fid_kid_scores(f1, f2, ev, real_is_test=True, real_name="test B")
    assert again == metrics
    # not a small test set, no intervals asked for: FID and KID alone (and KID's spread)
    ev_off = build(EvaluationConfig, {"bootstrap_resamples": 0, "kid_subsets": 10, "fid_infinity_below": 60})
    metrics_off, protocol_off = fid_kid_scores(f1, f2, ev_off, real_is_test=False, real_name="train B")
    assert set(metrics_off) == {"FID", "KIDx100", "KIDx100_std"}
    assert metrics_off["FID"] == metrics["FID"] and "bootstrap" not in protocol_off


# -- the report ---------------------------------------------------------------------------------

def test_report_cells_show_the_interval_after_the_value():
    from benchmark.report.per_dataset import summary_table
    from benchmark.report.results import results_table

    def record(seed, fid, low, high, kid=None):
        metrics = {"FID": fid, "FID_ci_low": low, "FID_ci_high": high, "FID_bootstrap_shift": 3.0,
                   "KIDx100": 1.5, "KIDx100_std": 0.25, "FID_inf": fid - 10}
        return {"task": "single_modal", "dataset": "h2z", "method": "cut", "seed": seed, "metrics": metrics}

    one = summary_table(results_table([record(0, 45.3, 41.2, 49.8)]), ["cut"])
    assert one.loc["cut", "FID"] == "45.30 [41.20, 49.80]"
    assert one.loc["cut", "KIDx100"] == "1.50"  # no KID bounds in these records: no brackets
    assert list(one.columns) == ["FID", "FID_inf", "KIDx100", "KIDx100_std", "seeds"]
    two = summary_table(results_table([record(0, 45.3, 41.2, 49.8), record(1, 47.3, 43.2, 51.8)]), ["cut"])
    assert two.loc["cut", "FID"] == "46.30 ± 1.41 [42.20, 50.80]"  # bounds averaged over seeds
