"""Every drift statistic against values computed by hand (worked out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker import drift


def test_psi_by_hand() -> None:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 ln 2 + 0.25 ln 1.5
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert drift.psi([50, 50], [25, 75]) == pytest.approx(expected)
    assert drift.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)  # fractions work too
    assert drift.psi([1, 2, 3], [10, 20, 30]) == pytest.approx(0.0)


def test_psi_floors_empty_bins() -> None:
    # window share 0 counts as 1e-4: (1e-4 - 0.5) ln(1e-4 / 0.5) + (1 - 0.5) ln(1 / 0.5)
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2)
    assert drift.psi([5, 5], [0, 10]) == pytest.approx(expected, rel=1e-3)


def test_js_distance_by_hand() -> None:
    # P = (.5, .5), Q = (1, 0), M = (.75, .25)
    # KL(P||M) = .5 log2(.5/.75) + .5 log2(.5/.25); KL(Q||M) = log2(1/.75)
    kl_p = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(2)
    kl_q = math.log2(1 / 0.75)
    assert drift.js_distance([1, 1], [1, 0]) == pytest.approx(math.sqrt((kl_p + kl_q) / 2))
    assert drift.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert drift.js_distance([3, 1], [6, 2]) == pytest.approx(0.0, abs=1e-7)


def test_chi_square_p_by_hand() -> None:
    # [[10, 20], [20, 10]]: every expected cell 15, chi2 = 4 * 25 / 15 = 20/3 on 1 dof,
    # p = P(chi2_1 > 20/3) = erfc(sqrt(20/3 / 2))
    assert drift.chi_square_p([10, 20], [20, 10]) == pytest.approx(math.erfc(math.sqrt(10 / 3)))
    assert drift.chi_square_p([10, 10, 0], [10, 10, 0]) == pytest.approx(1.0)
    assert drift.chi_square_p([10, 0], [10, 0]) == 1.0  # one bin left: nothing to test


def test_ks_binned_by_hand() -> None:
    # CDFs at the edges: (.25, .5, .75, 1) vs (1, 1, 1, 1): D = .75
    # n = m = 4: sqrt(4 * 4 / 8) * .75 = 1.06066; Kolmogorov Q(x) = 2 sum (-1)^(k-1) e^(-2 k^2 x^2)
    distance, p_value = drift.ks_binned([1, 1, 1, 1], [4, 0, 0, 0])
    x = math.sqrt(2) * 0.75
    q = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * x * x) for k in range(1, 50))
    assert distance == pytest.approx(0.75)
    assert p_value == pytest.approx(q)
    assert drift.ks_binned([2, 2], [1, 1]) == (0.0, 1.0)
    with pytest.raises(ValueError):
        drift.ks_binned([0, 0], [1, 1])


def test_histogram_quantiles_interpolate_inside_bins() -> None:
    # half the mass in [1, 2), half in [3, 4): p25 = 1.5, p50 = 2.0 (end of the first), p75 = 3.5
    counts, edges = [0, 10, 0, 10], [0, 1, 2, 3, 4]
    assert drift.histogram_quantiles(counts, edges, [0.25, 0.5, 0.75]) == [1.5, 2.0, 3.5]
    assert drift.histogram_quantiles([4], [0.0, 1.0], [0.1, 0.9]) == pytest.approx([0.1, 0.9])


def test_mmd_by_hand() -> None:
    # x = {0, 0}, y = {1, 1} in one dimension, bandwidth 1: k(0, 1) = e^(-1/2)
    # unbiased MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y) = 1 + 1 - 2 e^(-1/2)
    x = np.array([[0.0], [0.0]])
    y = np.array([[1.0], [1.0]])
    mmd2, p_value = drift.rbf_mmd(x, y, bandwidth=1.0, permutations=50)
    assert mmd2 == pytest.approx(2 - 2 * math.exp(-0.5))
    assert 0 < p_value <= 1


def test_mmd_separates_shifted_samples_and_not_equal_ones() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((300, 8))
    same = rng.standard_normal((200, 8))
    shifted = rng.standard_normal((200, 8)) + 1.0
    _, p_same = drift.rbf_mmd(reference, same, bandwidth=4.0, permutations=200)
    mmd_shift, p_shift = drift.rbf_mmd(reference, shifted, bandwidth=4.0, permutations=200)
    assert p_same > 0.01
    assert p_shift == pytest.approx(1 / 201)
    assert mmd_shift > 0.05


def test_grade_needs_both_effect_and_significance() -> None:
    assert drift.grade(0.5, 0.1, 0.25, p_value=0.5, alpha=0.01) == "ok"  # large but noise
    assert drift.grade(0.05, 0.1, 0.25, p_value=1e-9, alpha=0.01) == "ok"  # real but small
    assert drift.grade(0.15, 0.1, 0.25, p_value=1e-9, alpha=0.01) == "warn"
    assert drift.grade(0.3, 0.1, 0.25, p_value=1e-9, alpha=0.01) == "drift"


def test_assessment_keeps_the_worst_status_and_every_reason() -> None:
    verdict = drift.Assessment()
    verdict.raise_to("drift", "a")
    verdict.raise_to("warn", "b")
    assert verdict.status == "drift"
    assert verdict.reasons == ["drift: a", "warn: b"]


def test_settings_refuse_a_permutation_count_that_cannot_reach_alpha() -> None:
    from pydantic import ValidationError

    from worker.settings import WorkerSettings

    accepted = WorkerSettings(_env_file=None, drift={"permutations": 1000, "alpha": 0.001})
    assert (accepted.drift.permutations, accepted.drift.alpha) == (1000, 0.001)
    with pytest.raises(ValidationError, match="at least 1000"):
        WorkerSettings(_env_file=None, drift={"permutations": 999, "alpha": 0.001})


def test_rbf_mmd_matches_the_textbook_statistic_for_every_split():
    """The one-product form equals the unbiased MMD² written out, split by split (same seed,
    so the same random re-splits)."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(5, 2)) + 0.5
    bandwidth, permutations, seed = 1.3, 40, 11
    pooled = np.vstack([x, y])

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * bandwidth**2))

    def unbiased(first, second):
        n, m = len(first), len(second)
        xx = sum(k(a, b) for i, a in enumerate(first) for j, b in enumerate(first) if i != j)
        yy = sum(k(a, b) for i, a in enumerate(second) for j, b in enumerate(second) if i != j)
        xy = sum(k(a, b) for a in first for b in second)
        return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)

    splits = drift._splits(6, 5, permutations, seed)
    by_hand = [
        unbiased(pooled[splits[:, j] == 1], pooled[splits[:, j] == 0])
        for j in range(permutations + 1)
    ]
    observed, p_value = drift.rbf_mmd(x, y, bandwidth, permutations=permutations, seed=seed)
    assert observed == pytest.approx(by_hand[0], abs=1e-6)
    assert observed == pytest.approx(unbiased(x, y), abs=1e-6)
    expected_p = (sum(v >= by_hand[0] for v in by_hand[1:]) + 1) / (permutations + 1)
    assert p_value == pytest.approx(expected_p)


def test_sequential_mmd_stops_at_the_hth_resplit_reaching_the_observed_value():
    """Besag-Clifford: p = h / L where L is the re-split at which the h-th one reaches the
    observed MMD²; the re-splits are the full test's, so L is worked out from its values."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(20, 3))
    bandwidth, permutations, seed, h = 2.0, 300, 7, 5
    splits = drift._splits(30, 20, permutations, seed)
    full = drift._SplitStatistic(_kernel(np.vstack([x, y]), bandwidth), 30, 20)(splits)
    reaching = np.flatnonzero(full[1:] >= full[0]) + 1
    assert len(reaching) >= h  # the samples are alike: the test must be able to stop early
    observed, p_value = drift.rbf_mmd(
        x, y, bandwidth, permutations=permutations, seed=seed, stop_after=h
    )
    assert observed == pytest.approx(full[0])
    assert p_value == pytest.approx(h / reaching[h - 1])


def test_sequential_mmd_of_a_shifted_window_runs_every_resplit():
    rng = np.random.default_rng(6)
    reference, shifted = rng.normal(size=(100, 4)), rng.normal(size=(80, 4)) + 1.5
    full = drift.rbf_mmd(reference, shifted, 3.0, permutations=500, seed=1)
    early = drift.rbf_mmd(reference, shifted, 3.0, permutations=500, seed=1, stop_after=20)
    assert early == pytest.approx(full)
    assert early[1] == pytest.approx(1 / 501)


def _kernel(pooled: np.ndarray, bandwidth: float) -> np.ndarray:
    squared = np.sum((pooled[:, None, :] - pooled[None, :, :]) ** 2, axis=2)
    kernel = np.exp(-squared / (2 * bandwidth**2))
    np.fill_diagonal(kernel, 0.0)
    return kernel
