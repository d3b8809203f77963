"""Improvement potential: the projection against closed forms and a month-by-month loop, scenarios by
hand, and recovery of the simulator's planted truth (``sim.truth.potential``)."""
import math

import numpy as np
import pandas as pd
import pytest

from cskit.catalogue import DEFAULT_CATALOGUE
from cskit.models import Transform
from cskit.potential import (
    Hazard,
    currency_format,
    display_width,
    future_values,
    project,
    scenarios,
)


def cloglog(p):
    return math.log(-math.log1p(-p))


def constant_hazards(per_account: dict[str, list[float]]) -> dict[str, Hazard]:
    """Hazards with a fixed monthly probability per account (X = identity, coef = cloglog(p))."""
    n = len(next(iter(per_account.values())))
    return {
        o: Hazard(np.eye(n), np.array([[cloglog(p) for p in ps]]), np.zeros(1), {}, None)
        for o, ps in per_account.items()
    }


TWO = pd.DataFrame(
    {"account_id": ["a", "b"], "tenure": [5, 11], "contract_type": ["monthly", "annual"], "mrr": [100.0, 200.0]}
)


def test_two_accounts_match_closed_form():
    # a: monthly, p_c = .1, p_e = .2, p_d = .1; b: annual at tenure 11, so its only renewal decision
    # in a 2-month horizon is month 1 (tenure 12), p_c = .3 there and 0 otherwise.
    hz = constant_hazards(
        {"churn": [0.1, 0.3], "expansion": [0.2, 0.2], "downgrade": [0.1, 0.1], "referral": [0.05, 0.05]}
    )
    res = project(hz, [], TWO, np.array([0.5]), np.array([0.25]), np.array([1000.0]), horizon=2, ltv_months=3)
    q = 1 + 0.2 * 0.5 - 0.1 * 0.25  # growth of the expected MRR of a survivor
    geo = lambda r, js: sum(r**j for j in js)  # noqa: E731
    churn = 0.1 * 100 * geo(0.9 * q, range(2)) + 0.3 * 200
    expansion = 0.2 * 0.5 * 0.9 * 100 * geo(0.9 * q, range(2)) + 0.7 * 0.1 * 200 * (1 + q)
    downgrade = 0.1 * 0.25 * 0.9 * 100 * geo(0.9 * q, range(2)) + 0.7 * 0.025 * 200 * (1 + q)
    ltv_a, ltv_b = 100 * geo(0.9 * q, range(1, 4)), 0.7 * 200 * geo(q, range(1, 4))
    new = 0.05 * 1000 * ((0.9 + 0.81) + (0.7 + 0.7))
    t = {k: v[0, 0] for k, v in res.totals.items()}
    assert t["churn"] == pytest.approx(churn, rel=1e-12)
    assert t["expansion"] == pytest.approx(expansion, rel=1e-12)
    assert t["downgrade"] == pytest.approx(downgrade, rel=1e-12)
    assert t["ltv"] == pytest.approx(ltv_a + ltv_b, rel=1e-12)
    assert t["referrals"] == pytest.approx(new, rel=1e-12)
    assert res.churn_prob[0] == pytest.approx([1 - 0.81, 0.3], rel=1e-12)
    assert res.ltv_units[0] == pytest.approx([ltv_a, ltv_b], rel=1e-12)


def loop_projection(lam, mrr, annual, tenure, g_e, g_d, ref_mrr, horizon, ltv_months):
    """docs/architecture.md's sums, written month by month for one account (lam(o, h) = hazard rate)."""
    p = lambda o, h: 1 - math.exp(-lam(o, h))  # noqa: E731
    s, m = 1.0, mrr
    out = dict(churn=0.0, expansion=0.0, downgrade=0.0, new=0.0, ltv=0.0)
    for h in range(1, max(horizon, ltv_months) + 1):
        decision = (not annual) or (tenure + h) % 12 == 0
        s_new = s * (1 - (p("churn", h) if decision else 0.0))
        if h <= horizon:
            out["churn"] += (s - s_new) * m
            out["expansion"] += s_new * p("expansion", h) * g_e * m
            out["downgrade"] += s_new * p("downgrade", h) * g_d * m
            out["new"] += s_new * p("referral", h) * ref_mrr
        m = m * (1 + p("expansion", h) * g_e - p("downgrade", h) * g_d)
        if h <= ltv_months:
            out["ltv"] += s_new * m
        s = s_new
    return out


def test_tenure_varying_hazards_match_month_by_month_loop():
    # log λ = a_o,i + γ_o · (log1p(tenure + h) − 1.5) / 0.8
    t = Transform("log1p", 1.5, 0.8)
    a = {"churn": [-3.0, -1.0], "expansion": [-2.5, -2.0], "downgrade": [-3.5, -3.0], "referral": [-4.0, -3.0]}
    gamma = {"churn": -0.4, "expansion": 0.2, "downgrade": 0.1, "referral": -0.3}
    hz = {
        o: Hazard(np.eye(2), np.array([a[o]]), np.array([gamma[o]]), {}, t)
        for o in a
    }
    res = project(hz, [], TWO, np.array([0.3]), np.array([0.2]), np.array([50_000.0]), horizon=12, ltv_months=36)
    total = dict(churn=0.0, expansion=0.0, downgrade=0.0, new=0.0, ltv=0.0)
    for i, row in TWO.iterrows():
        lam = lambda o, h: math.exp(a[o][i] + gamma[o] * float(t.forward(row.tenure + h)))  # noqa: E731,B023
        one = loop_projection(lam, row.mrr, row.contract_type == "annual", row.tenure, 0.3, 0.2, 50_000.0, 12, 36)
        total = {k: total[k] + one[k] for k in total}
    got = {k: res.totals["referrals" if k == "new" else k][0, 0] for k in total}
    assert got == pytest.approx(total, rel=1e-10)


def test_float32_draw_kernel_agrees_with_float64():
    hz = constant_hazards(
        {"churn": [0.02, 0.3], "expansion": [0.05, 0.04], "downgrade": [0.01, 0.02], "referral": [0.01, 0.01]}
    )
    args = (hz, [], TWO, np.array([0.3]), np.array([0.25]), np.array([1000.0]), 12, 36)
    f64, f32 = project(*args), project(*args, dtype=np.float32)
    for k in f64.totals:
        assert f32.totals[k][0, 0] == pytest.approx(f64.totals[k][0, 0], rel=1e-5)


def test_scenarios_direction_bounds_and_missing_values():
    future = pd.DataFrame(
        {
            "active_user_rate": [0.5, 0.98, np.nan],  # bounds [0, 1]
            "support_inquiries": [4.0, 2.0, 0.0],  # direction down
            "login_days": [10.0, 20.0, 30.0],
        }
    )
    tr = {
        "active_user_rate": Transform("identity", 0.6, 0.2),
        "support_inquiries": Transform("log1p", 1.0, 0.5),
        "login_days": Transform("identity", 16.0, 6.0),
    }
    sc = {s.kpi: s for s in scenarios(future, list(future), DEFAULT_CATALOGUE, 10, tr)}
    aur = sc["active_user_rate"]
    assert aur.mean == pytest.approx(0.74) and aur.delta == pytest.approx(0.074)
    # 0.5 → 0.574; 0.98 → 1.0 (clipped); missing → the model's neutral value 0.6 → 0.674
    assert aur.dz == pytest.approx([0.074 / 0.2, 0.02 / 0.2, 0.074 / 0.2])
    si = sc["support_inquiries"]
    assert si.mean == pytest.approx(2.0) and si.delta == pytest.approx(-0.2)
    # 4 → 3.8, 2 → 1.8 on log1p; 0 stays at its lower bound 0
    assert si.dz == pytest.approx([(np.log(4.8) - np.log(5)) / 0.5, (np.log(2.8) - np.log(3)) / 0.5, 0.0])
    ld = sc["login_days"]
    assert ld.delta == pytest.approx(2.0)
    # 30 + 2 is clipped to the 31-day bound
    assert ld.dz == pytest.approx([2 / 6, 2 / 6, 1 / 6])


def test_future_values_mean_of_last_three_observed_months():
    months = pd.date_range("2025-01-01", periods=5, freq="MS")
    panel = pd.DataFrame(
        {
            "account_id": ["a"] * 5 + ["b"] * 2,
            "month": list(months) + list(months[3:]),
            "tenure": [0, 1, 2, 3, 4, 0, 1],
            "contract_months": [0.0, 1, 2, 3, 4, 0, 1],
            "csat": [1.0, 2.0, np.nan, 4.0, 5.0, np.nan, np.nan],
        }
    )
    active = panel[panel["month"] == months[-1]].reset_index(drop=True)
    fv = future_values(panel, active, ["contract_months", "csat"], months[-1])
    assert fv["csat"].iloc[0] == pytest.approx((2 + 4 + 5) / 3)  # the gap in month 3 is skipped
    assert np.isnan(fv["csat"].iloc[1])
    assert fv["contract_months"].tolist() == [4.0, 1.0]


def test_currency_format_and_japanese_width():
    assert currency_format("JPY") == '"¥"#,##0;-"¥"#,##0'
    assert currency_format("USD") == '"$"#,##0;-"$"#,##0'
    assert currency_format("CHF") == '#,##0" CHF";-#,##0" CHF"'
    assert display_width("契約月数") == 8
    assert display_width("LTV") == 3
