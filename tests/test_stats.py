"""sdcaff.stats against scipy's own tests and intervals, plus the edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from sdcaff import stats

A = {(1, 0): 70.1, (1, 1): 68.4, (1, 2): 72.9, (2, 0): 69.0, (2, 1): 71.5, (2, 2): 66.2, (3, 0): 74.0}
B = {(1, 0): 67.3, (1, 1): 68.9, (1, 2): 70.2, (2, 0): 66.1, (2, 1): 69.8, (2, 2): 66.0, (3, 1): 50.0}
SHARED = sorted(set(A) & set(B))


def test_interval_matches_scipy_t_interval():
    values = [62.5, 60.4, 61.8, 70.1, 66.0]
    got = stats.interval(values, confidence=0.9)
    sem = np.std(values, ddof=1) / math.sqrt(len(values))
    low, high = sps.t.interval(0.9, len(values) - 1, loc=np.mean(values), scale=sem)
    assert got.n == 5
    assert got.mean == pytest.approx(np.mean(values))
    assert got.std == pytest.approx(np.std(values, ddof=1))
    assert (got.low, got.high) == (pytest.approx(low), pytest.approx(high))


def test_interval_edge_cases():
    single = stats.interval([55.0])
    assert (single.mean, single.std, single.n, single.low, single.high) == (55.0, None, 1, None, None)
    flat = stats.interval([3.0, 3.0, 3.0])
    assert (flat.std, flat.low, flat.high) == (0.0, 3.0, 3.0)
    with pytest.raises(ValueError):
        stats.interval([])
    with pytest.raises(ValueError):
        stats.interval([1.0, float("nan")])


def test_paired_with_zero_ratio_is_the_plain_paired_t_test():
    got = stats.paired(A, B, test_train_ratio=0.0)
    ref = sps.ttest_rel([A[u] for u in SHARED], [B[u] for u in SHARED])
    assert got.n == len(SHARED) == 6
    assert got.t == pytest.approx(ref.statistic)
    assert got.p_t == pytest.approx(ref.pvalue)
    assert got.mean_diff == pytest.approx(np.mean([A[u] - B[u] for u in SHARED]))


def test_paired_correction_shrinks_t_by_the_nadeau_bengio_factor():
    plain = stats.paired(A, B, 0.0)
    corrected = stats.paired(A, B, 0.25)
    n = plain.n
    assert corrected.t == pytest.approx(plain.t * math.sqrt((1 / n) / (1 / n + 0.25)))
    assert corrected.p_t > plain.p_t
    assert corrected.p_t == pytest.approx(2 * sps.t.sf(abs(corrected.t), n - 1))


def test_paired_wilcoxon_matches_scipy_exact():
    got = stats.paired(A, B, 0.25)
    ref = sps.wilcoxon([A[u] - B[u] for u in SHARED], method="exact")
    assert got.p_wilcoxon == pytest.approx(ref.pvalue)


def test_paired_sign_follows_a_minus_b():
    assert stats.paired(A, B, 0.1).t > 0
    assert stats.paired(B, A, 0.1).t < 0


def test_paired_edge_cases():
    none = stats.paired({(1, 0): 1.0}, {(2, 0): 1.0}, 0.2)
    assert none == stats.Paired(0, None, None, None, None, None)
    one = stats.paired({(1, 0): 3.0}, {(1, 0): 1.0}, 0.2)
    assert one == stats.Paired(1, 2.0, None, None, None, None)
    same = stats.paired({(1, 0): 5.0, (1, 1): 6.0}, {(1, 0): 5.0, (1, 1): 6.0}, 0.2)
    assert (same.mean_diff, same.std_diff, same.t, same.p_t, same.p_wilcoxon) == (0.0, 0.0, None, None, None)


def test_split_ratio_is_the_mean_of_per_unit_ratios():
    units = [{"n": 10, "n_train": 40}, {"n": 20, "n_train": 40}]
    assert stats.split_ratio(units) == pytest.approx(0.375)
    with pytest.raises(ValueError):
        stats.split_ratio([{"n": 10}])
