"""Health score: statistics vs textbook values and independent methods; toy cases by hand; recovery on
the simulator (the score ranks future churn almost as well as the true probability)."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cskit.health import (
    ScoreModel,
    auc_with_ci,
    delong,
    kpi_points,
    largest_remainder,
    newcombe_difference,
    playbook,
    recent_means,
    risk_ratio,
    wilson,
)
from cskit.models import Design, Transform


# ---------------------------------------------------------------- statistics vs references


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_newcombe_1998_table(k, n, lo, hi):
    # Newcombe (1998) Stat Med 17:857, Table I, method 3 (score interval)
    assert wilson(k, n) == pytest.approx((lo, hi), abs=5e-5)


@pytest.mark.parametrize("k1, n1, k2, n2, lo, hi", [(56, 70, 48, 80, 0.0524, 0.3339), (9, 10, 3, 10, 0.1705, 0.8090)])
def test_difference_interval_matches_newcombe_1998_method_10(k1, n1, k2, n2, lo, hi):
    # Newcombe (1998) Stat Med 17:873, Table II, method 10 (hybrid score)
    d, l, h = newcombe_difference(k1, n1, k2, n2)
    assert d == pytest.approx(k1 / n1 - k2 / n2)
    assert (l, h) == pytest.approx((lo, hi), abs=5e-5)


def test_risk_ratio_katz_interval_by_hand():
    rr, lo, hi = risk_ratio(10, 100, 20, 100)
    se = np.sqrt(1 / 10 - 1 / 100 + 1 / 20 - 1 / 100)
    assert rr == pytest.approx(0.5)
    assert (lo, hi) == pytest.approx((0.5 * np.exp(-1.959964 * se), 0.5 * np.exp(1.959964 * se)), rel=1e-6)


def test_auc_equals_mann_whitney_u_with_ties():
    rng = np.random.default_rng(11)
    y = rng.binomial(1, 0.3, 500)
    risk = np.round(rng.normal(size=500) + 0.8 * y, 1)  # rounding makes ties
    u = stats.mannwhitneyu(risk[y == 1], risk[y == 0]).statistic
    assert auc_with_ci(y, risk)["auc"] == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)


def test_delong_covariance_matches_pairwise_structural_components():
    rng = np.random.default_rng(5)
    y = rng.binomial(1, 0.4, 120).astype(bool)
    a = rng.normal(size=120) + y
    b = 0.5 * a + rng.normal(size=120)
    aucs, cov = delong(y, np.vstack([a, b]))

    def components(s):
        psi = (s[y][:, None] > s[~y][None, :]) + 0.5 * (s[y][:, None] == s[~y][None, :])
        return psi.mean(axis=1), psi.mean(axis=0), psi.mean()

    (va, wa, ta), (vb, wb, tb) = components(a), components(b)
    m, n = y.sum(), (~y).sum()
    ref = np.cov(np.vstack([va, vb])) / m + np.cov(np.vstack([wa, wb])) / n
    assert aucs == pytest.approx([ta, tb], abs=1e-12)
    assert cov == pytest.approx(ref, abs=1e-12)


def test_largest_remainder_sums_exactly():
    assert list(largest_remainder(np.array([1.0, 1.0, 1.0]))) == [34, 33, 33]
    w = np.random.default_rng(2).exponential(size=17)
    pts = largest_remainder(w)
    assert pts.sum() == 100
    assert np.all(np.abs(pts - w / w.sum() * 100) < 1)


# ---------------------------------------------------------------- toy cases by hand


def test_recent_means_takes_last_three_observed_values_of_the_same_account():
    panel = pd.DataFrame(
        {
            "account_id": ["a"] * 5 + ["b"] * 3,
            "tenure": [0, 1, 2, 3, 4, 0, 1, 2],
            "contract_months": [0.0, 1, 2, 3, 4, 0, 1, 2],
            "k": [1.0, np.nan, 3.0, 5.0, 7.0, np.nan, np.nan, 10.0],
        }
    )
    rows = np.array([False, True, False, False, True, True, False, True])
    got = recent_means(panel, ["contract_months", "k"], rows)
    assert list(got["account_id"]) == ["a", "a", "b", "b"]
    assert list(got["contract_months"]) == [1, 4, 0, 2]
    np.testing.assert_allclose(got["k"], [1.0, 5.0, np.nan, 10.0])


def _toy_model():
    """Two KPIs on identity scales: 'usage' (60 points, more is healthier, full at 10, none at 0) and
    'tickets' (40 points, less is healthier, full at 0, none at 4)."""
    tr = {"usage": Transform("identity", 0.0, 1.0), "tickets": Transform("identity", 0.0, 1.0)}
    design = Design(np.zeros((1, 3)), ["intercept", "usage", "tickets"], ["usage", "tickets"], tr, {})
    weights = pd.DataFrame(
        {
            "kpi": ["usage", "tickets"],
            "points": [60, 40],
            "coefficient": [-0.5, 0.4],
            "direction": ["+", "-"],
            "z_lo": [0.0, 0.0],
            "z_hi": [10.0, 4.0],
        }
    )
    return ScoreModel(fit=None, design=design, weights=weights, lag=1, red_below=40, green_from=70)


def test_points_and_playbook_gaps_by_hand():
    model = _toy_model()
    frame = pd.DataFrame(
        {
            "account_id": ["g1", "g2", "g3", "r1", "r2", "y1"],
            "usage": [10.0, 8.0, 9.0, 2.0, 9.0, 6.0],
            "tickets": [0.0, 1.0, 0.5, 1.0, 4.0, 2.0],
        }
    )
    pts = kpi_points(model, frame)
    # usage: 60 × u/10; tickets: 40 × (1 − t/4)
    np.testing.assert_allclose(pts["usage"], [60, 48, 54, 12, 54, 36])
    np.testing.assert_allclose(pts["tickets"], [40, 30, 35, 30, 0, 20])
    frame["score"] = pts.sum(axis=1)
    frame["tier"] = ["green", "green", "green", "red", "red", "yellow"]
    pb = playbook(model, frame)
    # green medians: usage 9 → 54 points; tickets 0.5 → 35 points
    # r1 (score 42): usage gap 54 − 12 = 42, tickets gap 35 − 30 = 5
    # r2 (score 54): tickets gap 35 − 0 = 35, usage gap 54 − 54 = 0 → not named
    assert list(pb.columns) == ["account_id", "score", "tier", "kpi_1", "gap_1", "kpi_2", "gap_2"]
    assert list(pb["account_id"]) == ["r1", "r2"]
    assert list(pb["kpi_1"]) == ["usage", "tickets"]
    np.testing.assert_allclose(pb["gap_1"], [42, 35])
    assert pb.loc[0, "kpi_2"] == "tickets" and pb.loc[0, "gap_2"] == pytest.approx(5)
    assert pb.loc[1, "kpi_2"] == "" and np.isnan(pb.loc[1, "gap_2"])
