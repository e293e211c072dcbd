"""Statistics over (seed, fold) units: t intervals and paired tests that respect shared training data."""

from __future__ import annotations

import dataclasses
import math
from typing import Hashable, Mapping, Sequence

import numpy as np
from scipy import stats as sps

Unit = tuple[int, int]  # (seed, fold): one trained model scored on one test fold


@dataclasses.dataclass(frozen=True)
class Interval:
    mean: float
    std: float | None  # sample std (ddof 1); None for a single unit
    n: int
    low: float | None  # Student-t confidence interval of the mean; None for a single unit
    high: float | None


@dataclasses.dataclass(frozen=True)
class Paired:
    n: int  # units both sides have
    mean_diff: float | None  # mean of a - b; None when no unit is shared
    std_diff: float | None  # sample std of a - b; None for n < 2
    t: float | None  # corrected resampled t (Nadeau & Bengio 2003); None when undefined
    p_t: float | None  # two-sided p of t with n - 1 degrees of freedom
    p_wilcoxon: float | None  # exact two-sided Wilcoxon signed-rank p; None when no difference is non-zero


def interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Returns mean, sample std and the Student-t confidence interval of the mean of `values`."""
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        raise ValueError("interval of no values")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"interval of non-finite values: {x.tolist()}")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, None, 1, None, None)
    std = float(x.std(ddof=1))
    if std == 0.0:
        # scipy's t.interval returns nan for a zero scale; every unit agreeing means a zero-width interval.
        return Interval(mean, 0.0, int(x.size), mean, mean)
    low, high = sps.t.interval(confidence, x.size - 1, loc=mean, scale=std / math.sqrt(x.size))
    return Interval(mean, std, int(x.size), float(low), float(high))


def paired(a: Mapping[Hashable, float], b: Mapping[Hashable, float], test_train_ratio: float) -> Paired:
    """Returns the corrected resampled t-test and the Wilcoxon signed-rank test of a - b on shared units."""
    shared = sorted(set(a) & set(b))
    d = np.array([float(a[u]) - float(b[u]) for u in shared], dtype=float)
    n = int(d.size)
    if n == 0:
        return Paired(0, None, None, None, None, None)
    mean = float(d.mean())
    if n < 2:
        return Paired(n, mean, None, None, None, None)
    std = float(d.std(ddof=1))
    t = p_t = None
    if std > 0.0:
        # Folds of one seed share most of their training data, so the units are correlated and the
        # plain paired t-test is too liberal: Nadeau & Bengio inflate the variance of the mean from
        # var/n to var * (1/n + n_test/n_train). A ratio of 0 gives back the plain paired t-test.
        t = mean / math.sqrt(std**2 * (1.0 / n + test_train_ratio))
        p_t = float(2.0 * sps.t.sf(abs(t), n - 1))
    p_w = None
    if np.any(d != 0.0):
        p_w = float(sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="exact").pvalue)
    return Paired(n, mean, std, t, p_t, p_w)


def split_ratio(per_fold: Sequence[Mapping]) -> float:
    """Returns the mean over units of n (test rows) / n_train (train rows), the Nadeau-Bengio ratio."""
    ratios = [float(u["n"]) / float(u["n_train"]) for u in per_fold if u.get("n_train")]
    if not ratios:
        raise ValueError("no per_fold unit records n_train")
    return float(np.mean(ratios))


def adjust_bh(p_values: Sequence[float]) -> list[float]:
    """Returns Benjamini-Hochberg adjusted p-values (false discovery rate), in the order given."""
    if not p_values:
        return []
    return [float(p) for p in sps.false_discovery_control(np.asarray(p_values, dtype=float), method="bh")]
