"""Drift statistics: how far a live window is from a version's reference (pure numpy/scipy).

Each function compares what the worker aggregated over one window (counts, histograms, a sample
of projected embeddings) with the matching part of the version's `reference.json`. Effect sizes
(PSI, KS distance, MMD) say how large a shift is; p-values say whether a window is big enough
for that shift to be more than noise. `assess` turns both into `ok | warn | drift`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

# A fraction of zero would make PSI infinite: empty bins count as this share instead.
PSI_FLOOR = 1e-4


def _fractions(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("a distribution needs at least one count")
    return counts / total


def psi(reference: Sequence[float], window: Sequence[float], floor: float = PSI_FLOOR) -> float:
    """Population stability index: sum((w - r) * ln(w / r)) over bins, shares floored at `floor`.

    Both arguments are counts or fractions over the same bins. Rules of thumb: < 0.1 stable,
    0.1-0.25 a moderate shift, > 0.25 a large one.
    """
    r = np.maximum(_fractions(reference), floor)
    w = np.maximum(_fractions(window), floor)
    return float(np.sum((w - r) * np.log(w / r)))


def js_distance(reference: Sequence[float], window: Sequence[float]) -> float:
    """Jensen-Shannon distance (base 2): 0 for equal distributions, 1 for disjoint ones."""
    return float(jensenshannon(_fractions(reference), _fractions(window), base=2))


def chi_square_p(reference_counts: Sequence[float], window_counts: Sequence[float]) -> float:
    """p-value of a chi-square test that both count vectors come from one distribution.

    A 2 x k contingency test, so the reference's own sampling noise is taken into account;
    bins empty on both sides are dropped. 1.0 when fewer than two bins are left.
    """
    table = np.vstack([np.asarray(reference_counts, float), np.asarray(window_counts, float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def ks_binned(
    reference_counts: Sequence[float], window_counts: Sequence[float]
) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov distance and p-value from histograms over the same edges.

    The distance is the largest gap between the two cumulative distributions at the bin edges
    (a lower bound of the unbinned one, so the test is conservative); the p-value is the
    asymptotic Kolmogorov distribution at sqrt(n m / (n + m)) * D.
    """
    r = np.asarray(reference_counts, dtype=np.float64)
    w = np.asarray(window_counts, dtype=np.float64)
    n, m = r.sum(), w.sum()
    if n <= 0 or m <= 0:
        raise ValueError("both histograms need at least one count")
    distance = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(w) / m)))
    p_value = float(stats.kstwobign.sf(np.sqrt(n * m / (n + m)) * distance))
    return distance, min(p_value, 1.0)


def histogram_quantiles(
    counts: Sequence[float], edges: Sequence[float], quantiles: Sequence[float]
) -> list[float]:
    """Quantiles of binned values, assuming values spread evenly inside each bin."""
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("quantiles need at least one count")
    cumulative = np.concatenate([[0.0], np.cumsum(counts) / counts.sum()])
    out = []
    for q in quantiles:
        # the first non-empty bin whose right-hand cumulative share reaches q
        i = int(np.argmax((cumulative[1:] >= q) & (counts > 0)))
        inside = (q - cumulative[i]) / (cumulative[i + 1] - cumulative[i])
        out.append(float(edges[i] + min(max(inside, 0.0), 1.0) * (edges[i + 1] - edges[i])))
    return out


@functools.lru_cache(maxsize=4)
def _splits(n: int, m: int, permutations: int, seed: int) -> np.ndarray:
    """[n + m, permutations + 1] 0/1 indicators of the first group: the observed split, then
    random re-splits. Windows of one size reuse them (the same seed gives the same splits), so
    a full window costs one matrix product, not a thousand permutations drawn again."""
    rng = np.random.default_rng(seed)
    first = np.zeros((n + m, permutations + 1), dtype=np.float32)
    first[:n, 0] = 1.0
    for column in range(1, permutations + 1):
        first[rng.permutation(n + m)[:n], column] = 1.0
    first.setflags(write=False)
    return first


PERMUTATION_BLOCK = 64
"""Re-splits evaluated per matrix product when the test may stop early."""


def rbf_mmd(
    reference: np.ndarray,
    window: np.ndarray,
    bandwidth: float,
    permutations: int = 200,
    seed: int = 0,
    stop_after: int | None = None,
) -> tuple[float, float]:
    """Unbiased squared maximum mean discrepancy with an RBF kernel, and its permutation p-value.

    `reference` [n, d] and `window` [m, d] are samples in the same (projected) space; the
    kernel is exp(-|x - y|^2 / (2 bandwidth^2)). The p-value is the share of random re-splits
    of the pooled rows whose MMD is at least the observed one (with the +1 correction).

    With `stop_after` = h the test is Besag and Clifford's sequential one (Biometrika 78, 1991):
    it stops at the h-th re-split that reaches the observed MMD², after L re-splits, with the
    valid p-value h / L. A window like its reference stops after a few dozen re-splits instead of
    all of them; one that could be significant runs them all and gets the usual p-value.
    """
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(window, dtype=np.float64)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("MMD needs at least two rows on each side")
    if bandwidth <= 0:
        raise ValueError("bandwidth must be positive")
    pooled = np.vstack([x, y])
    squared = np.sum(pooled**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    kernel = np.exp(-distances / (2.0 * bandwidth**2))
    np.fill_diagonal(kernel, 0.0)
    statistic = _SplitStatistic(kernel, n, m)
    first = _splits(n, m, permutations, seed)
    block = permutations if stop_after is None else PERMUTATION_BLOCK
    mmd2 = statistic(first[:, : 1 + block])
    observed, reached = float(mmd2[0]), 0
    for start in range(1, permutations + 1, block):
        values = mmd2[1:] if start == 1 else statistic(first[:, start : start + block])
        hits = np.flatnonzero(values >= observed)
        if stop_after is not None and reached + len(hits) >= stop_after:
            tested = start + int(hits[stop_after - reached - 1])
            return observed, stop_after / tested
        reached += len(hits)
    return observed, (reached + 1) / (permutations + 1)


class _SplitStatistic:
    """MMD² of the splits marked by 0/1 columns, one matrix product for a block of them.

    With a = one column (the rows of the first group), K the kernel and r = K·1, the three sums
    are aᵀKa, aᵀr - aᵀKa and 1ᵀr - 2aᵀr + aᵀKa. The product runs in float32 (half the time of
    float64): it moves MMD² by ~1e-6, far below any threshold, and the observed split and its
    re-splits alike."""

    def __init__(self, kernel: np.ndarray, n: int, m: int) -> None:
        self.kernel = kernel.astype(np.float32)
        self.row_sums = kernel.sum(axis=1)
        self.total = float(self.row_sums.sum())
        self.n, self.m = n, m

    def __call__(self, first: np.ndarray) -> np.ndarray:
        n, m = self.n, self.m
        within = np.einsum("ij,ij->j", first, self.kernel @ first).astype(np.float64)
        to_all = self.row_sums @ first
        within_first = within / (n * (n - 1))
        across = (to_all - within) / (n * m)
        within_other = (self.total - 2.0 * to_all + within) / (m * (m - 1))
        return within_first + within_other - 2.0 * across


@dataclass(frozen=True)
class Thresholds:
    """Effect sizes that make a figure `warn` or `drift`, and the significance it needs."""

    psi_warn: float = 0.1
    psi_drift: float = 0.25
    ks_warn: float = 0.1
    ks_drift: float = 0.2
    mmd_warn: float = 0.02
    mmd_drift: float = 0.05
    deadletter_warn: float = 0.05
    deadletter_drift: float = 0.25
    alpha: float = 0.001
    """A shift counts only when its test's p-value is below this (noise in small windows)."""


@dataclass
class Assessment:
    """The overall status and, for every figure past a threshold, why."""

    status: str = "ok"
    reasons: list[str] = field(default_factory=list)

    _ORDER = {"ok": 0, "warn": 1, "drift": 2}

    def raise_to(self, status: str, reason: str) -> None:
        self.reasons.append(f"{status}: {reason}")
        if self._ORDER[status] > self._ORDER[self.status]:
            self.status = status


def grade(value: float, warn: float, drift: float, p_value: float, alpha: float) -> str:
    """`drift`, `warn` or `ok` for an effect size `value` whose test gave `p_value`."""
    if p_value >= alpha:
        return "ok"
    if value >= drift:
        return "drift"
    return "warn" if value >= warn else "ok"
