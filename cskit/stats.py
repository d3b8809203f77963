"""Small statistics shared by the stages, each tested against a reference implementation.

Proportions (Wilson interval, Newcombe difference, Katz risk ratio), AUC with DeLong's covariance,
a t interval for a mean, Spearman correlation of one or many columns with a 0/1 outcome, and the largest
remainder rounding of points. General estimation (binomial GLM, GEE, score tests) is in
:mod:`cskit.models`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import ndtri

Z975 = float(ndtri(0.975))  # the normal's 97.5% quantile (a 95% interval's half-width in SEs), = norm.ppf(0.975)


def wilson(k: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (Wilson 1927; Newcombe 1998, method 3)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    z = stats.norm.ppf(0.5 + level / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def newcombe_difference(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> tuple[float, float, float]:
    """p1 − p2 with Newcombe's hybrid score interval from the two Wilson intervals (Newcombe 1998, method 10)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, level)
    l2, u2 = wilson(k2, n2, level)
    d = p1 - p2
    return (d, d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def risk_ratio(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> tuple[float, float, float]:
    """p1 / p2 with the Katz log interval (0.5 added to every cell when a count is 0)."""
    if min(k1, k2, n1 - k1, n2 - k2) == 0:
        k1, k2, n1, n2 = k1 + 0.5, k2 + 0.5, n1 + 1, n2 + 1
    rr = (k1 / n1) / (k2 / n2)
    se = np.sqrt(1 / k1 - 1 / n1 + 1 / k2 - 1 / n2)
    z = stats.norm.ppf(0.5 + level / 2)
    return (float(rr), float(rr * np.exp(-z * se)), float(rr * np.exp(z * se)))


def delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of one or more risk scores (rows of ``scores``; higher = more likely y = 1) and their
    covariance by DeLong, DeLong & Clarke-Pearson (1988), with midranks (Sun & Xu 2014)."""
    y = np.asarray(y).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype="float64"))
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    aucs, v10, v01 = [], [], []
    for r in range(len(s)):
        tz = stats.rankdata(np.concatenate([pos[r], neg[r]]))
        tx, ty = stats.rankdata(pos[r]), stats.rankdata(neg[r])
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1 - (tz[m:] - ty) / m)
    cov = np.atleast_2d(np.cov(np.array(v10), ddof=1)) / m + np.atleast_2d(np.cov(np.array(v01), ddof=1)) / n
    return np.array(aucs), cov


def auc_with_ci(y: np.ndarray, risk: np.ndarray, level: float = 0.95) -> dict:
    """AUC of ``risk`` for the binary ``y`` with its DeLong interval (clipped to [0, 1])."""
    auc, cov = delong(y, risk)
    z = stats.norm.ppf(0.5 + level / 2)
    se = float(np.sqrt(cov[0, 0]))
    return {
        "auc": float(auc[0]),
        "ci_low": max(0.0, float(auc[0]) - z * se),
        "ci_high": min(1.0, float(auc[0]) + z * se),
    }


def largest_remainder(weights: np.ndarray, total: int = 100) -> np.ndarray:
    """Integers proportional to ``weights`` that sum to ``total`` exactly (Hamilton's method; ties by order)."""
    w = np.asarray(weights, dtype="float64")
    quota = w / w.sum() * total
    base = np.floor(quota).astype(int)
    order = np.argsort(-(quota - base), kind="stable")
    base[order[: total - base.sum()]] += 1
    return base


def mean_ci(x: np.ndarray) -> dict:
    """Mean of ``x`` with its 95% t interval (n and mean only below two values)."""
    if len(x) < 2:
        return {"n": int(len(x)), "mean": float(x.mean()) if len(x) else None}
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return {
        "n": int(len(x)),
        "mean": float(x.mean()),
        "ci_low": float(x.mean() - half),
        "ci_high": float(x.mean() + half),
    }


def spearman_columns(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column of ``X`` with the 0/1 ``y`` over the rows where the column
    is measured (:func:`spearman_binary` of each column)."""
    events = np.asarray(y) > 0.5
    return np.array([spearman_binary(X[:, j], events) for j in range(X.shape[1])], dtype="float64")


SPEARMAN_SAMPLE = 10_000  # evenly spaced values in which spearman_binary counts the distinct measured ones
# distinct in fewer than this share of that sample's measured values: ranks by hashing, else by sorting (the
# crossover: 0.81-0.90 at 140k values, ~0.96 at 1.4M; lognormal levels, 10% NaN)
SPEARMAN_HASH_BELOW = 0.85


def spearman_binary(x: np.ndarray, events: np.ndarray) -> float:
    """Spearman correlation of ``x`` with the 0/1 outcome whose 1s are ``events`` (a boolean mask over
    ``x`` or the indices of its 1s), over the rows where ``x`` is measured (finite; average ranks for
    ties; NaN when either side is constant). The ranks of a 0/1 variable are an increasing affine
    function of it, so the Pearson correlation of rank(x) with y itself is Spearman's rho.

    Only the events' rank sum is needed, so no rank vector is built: the average rank of a value is
    (number below + number below or equal + 1) / 2; over n values with tie groups of sizes t,
    Σ(rank − mean)² = (n³ − n − Σ(t³ − t)) / 12 (Kendall 1948). The counts below are read by hashing
    (:func:`_hashed_ranks`) when the measured values of an evenly spaced sample of SPEARMAN_SAMPLE are
    distinct in fewer than a share SPEARMAN_HASH_BELOW of them (a count KPI: 2-3x faster than sorting),
    else by sorting (:func:`_sorted_ranks`; a continuous KPI: 3-4x faster than hashing); both give the
    same integers and tie sizes, so the same rho bit for bit. One column at a time: a caller can
    gather, rank and drop each column in turn.
    """
    sample = x[:: max(1, len(x) // SPEARMAN_SAMPLE)]
    sample = sample[np.isfinite(sample)]
    few = len(pd.unique(sample)) < SPEARMAN_HASH_BELOW * len(sample)
    n, hits, twice_rank_sum, ties = (_hashed_ranks if few else _sorted_ranks)(x, events)
    if n < 3 or len(ties) < 2 or hits in (0, n):
        return float("nan")
    ties = ties.astype("float64")
    ab = (twice_rank_sum - hits * (n + 1)) / 2
    aa = (n**3 - n - float((ties**3 - ties).sum())) / 12
    bb = hits * (n - hits) / n
    return ab / np.sqrt(aa * bb)


def _hashed_ranks(x: np.ndarray, events: np.ndarray) -> tuple[int, int, int, np.ndarray]:
    """(measured values n, measured events, twice the events' rank sum, tie sizes by increasing value)
    of :func:`spearman_binary`, the values coded by hashing (``pandas.factorize``, one pass) and only
    the distinct values sorted."""
    # equal values share a code, NaN is -1; the hash table starts small and grows as needed (one sized
    # for every row costs twice as much on a KPI's few thousand distinct values)
    codes, values = pd.factorize(x, size_hint=1024)
    if not np.isfinite(values).all():  # nor is ±inf a measurement
        return _hashed_ranks(np.where(np.isfinite(x), x, np.nan), events)
    order = np.argsort(values)  # the codes by increasing value (the values are distinct)
    counts = np.bincount(codes + 1, minlength=len(values) + 1)[1:]  # rows per code
    ties = counts[order]  # sizes of the tie groups, by increasing value
    below = np.empty_like(counts)
    below[order] = np.cumsum(ties) - ties  # rows below each code's value
    hit = codes[events]
    hit = hit[hit >= 0]
    twice_rank_sum = int(np.bincount(hit, minlength=len(values)) @ (2 * below + counts + 1))
    return int(ties.sum()), len(hit), twice_rank_sum, ties


def _sorted_ranks(x: np.ndarray, events: np.ndarray) -> tuple[int, int, int, np.ndarray]:
    """:func:`_hashed_ranks` read off the sorted values by binary search (the events' values sorted
    too, so the search walks the sorted values once)."""
    n = int(np.count_nonzero(np.isfinite(x)))
    xs = np.sort(x)  # -inf, the measured values, +inf, NaN
    low = int(np.searchsorted(xs, -np.inf, "right"))
    xs = xs[low:low + n]
    starts = np.flatnonzero(xs[1:] != xs[:-1]) + 1  # where each value after the first begins
    ties = np.diff(np.concatenate(([0], starts, [n])))  # sizes of the tie groups
    x1 = x[events]
    x1 = np.sort(x1[np.isfinite(x1)])
    twice_rank_sum = int((np.searchsorted(xs, x1, "left") + np.searchsorted(xs, x1, "right") + 1).sum())
    return n, len(x1), twice_rank_sum, ties
