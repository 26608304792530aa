"""Quality cuts (sigma68 / outlier rate against completeness) with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from rail.deepz.metrics import sigma68
from rail.deepz.quality_cuts import (binned_scores, completeness_curves, odds_from_ensemble, prefix_percentiles,
                                     select_by_completeness)


@pytest.mark.parametrize("n", [1, 2, 7, 50, 1001])
def test_prefix_percentiles_equal_numpy_on_every_prefix(n):
    rng = np.random.default_rng(n)
    values = rng.normal(size=n)
    values[: n // 3] = np.round(values[: n // 3], 1)  # ties
    order = rng.permutation(n)
    k = np.unique(np.r_[1, n, rng.integers(1, n + 1, size=12)])
    q = np.array([0.0, 15.865, 50.0, 84.135, 100.0, 37.2])
    expected = np.array([np.percentile(values[order[:kk]], q) for kk in k])
    np.testing.assert_allclose(prefix_percentiles(values, order, k, q), expected, rtol=0, atol=1e-14)
    # memory blocks of one subset at a time give the same answer
    np.testing.assert_allclose(prefix_percentiles(values, order, k, q, block_elements=1), expected, atol=1e-14)


def test_outlier_rate_with_a_perfect_ranking():
    """10 % outliers, ranked last by the quality quantity: none survive until completeness > 0.9."""
    n = 1000
    zspec = np.linspace(0.1, 2.0, n)
    zphot = zspec.copy()
    bad = np.arange(n) % 10 == 0
    zphot[bad] += 0.5 * (1 + zspec[bad])
    rank = np.where(bad, 0.1, 0.9)
    c = completeness_curves(zphot, zspec, rank, completeness=np.array([0.5, 0.9, 0.95, 1.0]))
    np.testing.assert_array_equal(c.n_kept, [500, 900, 950, 1000])
    np.testing.assert_allclose(c.outlier_rate, [0.0, 0.0, 50 / 950, 0.1])
    assert c.sigma68[0] == 0.0 and c.sigma68[1] == 0.0
    assert c.threshold[1] == 0.9 and c.threshold[2] == 0.1
    # lower-is-better ranking with the quantity negated gives the same curves
    c2 = completeness_curves(zphot, zspec, -rank, completeness=np.array([0.5, 0.9, 0.95, 1.0]),
                             higher_is_better=False)
    np.testing.assert_allclose(c2.outlier_rate, c.outlier_rate)


def test_sigma68_of_gaussian_errors_ranked_by_width():
    """Two populations with dz ~ N(0, 0.01) and N(0, 0.05): the 50 % best by (known) width have sigma68
    near 0.01, the whole sample the mixture's value, and the full-sample point equals metrics.sigma68."""
    rng = np.random.default_rng(3)
    n = 40_000
    zspec = rng.uniform(0.0, 2.0, n)
    width = np.where(np.arange(n) < n // 2, 0.01, 0.05)
    zphot = zspec + width * (1 + zspec) * rng.normal(size=n)
    c = completeness_curves(zphot, zspec, width, completeness=np.array([0.25, 0.5, 1.0]), higher_is_better=False)
    assert c.sigma68[0] == pytest.approx(0.01, rel=0.05)
    assert c.sigma68[1] == pytest.approx(0.01, rel=0.05)
    assert c.sigma68[2] == pytest.approx(sigma68(zphot, zspec), abs=1e-14)
    assert c.bias[2] == pytest.approx(np.median((zphot - zspec) / (1 + zspec)), abs=1e-14)
    # random ranking: flat curve (within noise)
    flat = completeness_curves(zphot, zspec, rng.uniform(size=n), completeness=np.array([0.3, 1.0]))
    assert flat.sigma68[0] == pytest.approx(flat.sigma68[1], rel=0.05)


def test_curves_match_a_brute_force_loop_and_nan_ranks_are_worst():
    rng = np.random.default_rng(5)
    n = 537
    zspec = rng.uniform(0, 3, n)
    zphot = zspec + rng.standard_t(2, n) * 0.05 * (1 + zspec)
    rank = rng.uniform(size=n)
    rank[::17] = np.nan
    comp = np.linspace(0.05, 1.0, 20)
    c = completeness_curves(zphot, zspec, rank, completeness=comp)
    key = np.where(np.isnan(rank), -np.inf, rank)
    order = np.argsort(-key, kind="stable")
    dz = (zphot - zspec) / (1 + zspec)
    for i, cc in enumerate(comp):
        k = int(np.ceil(cc * n - 1e-9))
        kept = dz[order[:k]]
        p16, p84 = np.percentile(kept, [15.865, 84.135])
        assert c.sigma68[i] == pytest.approx(0.5 * (p84 - p16), abs=1e-14)
        assert c.outlier_rate[i] == pytest.approx(np.mean(np.abs(kept) > 0.15), abs=1e-14)
    assert np.isnan(c.threshold[-1])  # the full sample includes the NaN-ranked galaxies
    assert c.as_dict()["n_kept"][-1] == n
    assert c.at(0.5)["n_kept"] == int(np.ceil(0.5 * n))


def test_select_by_completeness_and_errors():
    rank = np.array([0.2, 0.9, np.nan, 0.5, 0.9])
    np.testing.assert_array_equal(select_by_completeness(rank, 0.4), [False, True, False, False, True])
    np.testing.assert_array_equal(select_by_completeness(rank, 0.2, higher_is_better=False),
                                  [True, False, False, False, False])
    with pytest.raises(ValueError):
        completeness_curves(np.zeros(3), np.zeros(3), np.zeros(3), completeness=np.array([0.0]))
    with pytest.raises(ValueError):
        completeness_curves(np.zeros(3), np.zeros(3), np.zeros(4))


def test_odds_from_ensemble_of_gaussians():
    """ODDS of N(mu, s) around mu with window w(1 + mu) is erf(w (1 + mu) / (s sqrt 2))."""
    import qp
    from scipy.special import erf

    mu = np.array([0.5, 1.0, 2.0])
    s = np.array([0.02, 0.1, 0.5])
    ens = qp.Ensemble(qp.stats.norm, data=dict(loc=mu[:, None], scale=s[:, None]))
    expected = erf(0.06 * (1 + mu) / (s * np.sqrt(2)))
    np.testing.assert_allclose(odds_from_ensemble(ens, mu, 0.06, chunk=2), expected, rtol=1e-6)


def test_binned_scores():
    zspec = np.repeat([0.5, 1.5], 100)
    zphot = zspec.copy()
    zphot[100:110] += 1.0  # 10 % outliers in the second bin only
    res = binned_scores(zspec, zphot, zspec, bins=np.array([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(res["count"], [100, 100])
    np.testing.assert_allclose(res["outlier_rate"], [0.0, 0.1])
    assert res["sigma68"][0] == 0.0
    assert np.allclose(res["center"], [0.5, 1.5])
    sparse = binned_scores(zspec[:3], zphot[:3], zspec[:3], bins=np.array([0.0, 1.0, 2.0]))
    assert np.all(np.isnan(sparse["sigma68"]))
