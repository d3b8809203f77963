"""Improvement potential: the projection against closed forms and a month-by-month loop, scenarios by
hand, and recovery of the simulator's planted truth (``sim.truth.potential``)."""
import functools
import math

import numpy as np
import pandas as pd
import pytest

from cskit import narrative as N
from cskit.catalogue import CATALOGUE_NAMES, DEFAULT_CATALOGUE
from cskit.excel import currency_format, display_width
from cskit.models import Transform
from cskit.potential import (
    Hazard,
    Scenario,
    active_accounts,
    certain_accounts,
    draw_sample,
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


THREE = pd.DataFrame({"account_id": ["a", "b", "c"], "tenure": [5, 11, 3],
                      "contract_type": ["monthly", "annual", "monthly"], "mrr": [100.0, 200.0, 50.0]})


def test_a_scenario_that_leaves_some_accounts_unchanged_matches_the_month_by_month_loop():
    # KPI k moves account b only (dz = 0 for a and c, e.g. already at its bound): the projection keeps
    # a's and c's baseline entries and projects b alone; two coefficient rows (draws) with different slopes
    p = {"churn": [0.1, 0.3, 0.05], "expansion": [0.2, 0.1, 0.05], "downgrade": [0.1, 0.05, 0.02],
         "referral": [0.05, 0.02, 0.01]}
    beta = {"churn": [-0.5, -0.2], "expansion": [0.3, 0.1], "downgrade": [-0.2, -0.4], "referral": [0.4, 0.0]}
    X = np.column_stack([np.eye(3), np.zeros(3)])
    hz = {o: Hazard(X, np.array([[*(cloglog(q) for q in p[o]), b] for b in beta[o]]), np.zeros(2), {"k": 3}, None)
          for o in p}
    dz = np.array([0.0, 0.8, 0.0])
    sc = Scenario("k", 1.0, 0.1, dz)
    g_e, g_d, ref = np.array([0.5, 0.4]), np.array([0.25, 0.3]), np.array([1000.0, 900.0])
    res = project(hz, [sc], THREE, g_e, g_d, ref, horizon=12, ltv_months=36)
    for row in range(2):
        for s, shift in ((0, np.zeros(3)), (1, dz)):
            total = dict(churn=0.0, expansion=0.0, downgrade=0.0, new=0.0, ltv=0.0)
            for i, acc in THREE.iterrows():
                lam = lambda o, h: -math.log1p(-p[o][i]) * math.exp(beta[o][row] * shift[i])  # noqa: E731,B023
                one = loop_projection(lam, acc.mrr, acc.contract_type == "annual", acc.tenure, g_e[row], g_d[row],
                                      ref[row], 12, 36)
                total = {k: total[k] + one[k] for k in total}
            got = {k: res.totals["referrals" if k == "new" else k][s, row] for k in total}
            assert got == pytest.approx(total, rel=1e-10), (row, s)
    # every account unchanged: the scenario is the baseline, bit for bit
    same = project(hz, [Scenario("k", 1.0, 0.1, np.zeros(3))], THREE, g_e, g_d, ref, horizon=12, ltv_months=36)
    for k, v in same.totals.items():
        assert np.array_equal(v[1], v[0]), k


def test_a_chunk_projected_in_parts_gives_the_same_bits(monkeypatch):
    # 300 accounts in parts of 7 (SUB_ACCOUNTS): tenure-varying hazards, annual renewals, a KPI moving
    # most accounts, one moving a few, contract_months and a scenario left out (reason): every total,
    # churn probability and LTV equal, bit for bit, to the chunk projected at once (one part)
    import cskit.potential as P

    rng = np.random.default_rng(3)
    n = 300
    active = pd.DataFrame({"account_id": np.arange(n), "tenure": rng.integers(0, 30, n).astype(float),
                           "contract_type": rng.choice(["monthly", "annual"], n), "mrr": rng.lognormal(4, 1, n)})
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n), np.zeros(n)])
    t = Transform("log1p", 1.5, 0.8)
    base = {"churn": -4.0, "expansion": -3.0, "downgrade": -4.5, "referral": -5.0}
    hz = {o: Hazard(X, np.array([[b, 0.3, -0.2, 0.1]]), np.array([0.1]), {"k": 1, "j": 2, "contract_months": 3}, t)
          for o, b in base.items()}
    few = np.where(rng.random(n) < 0.2, 0.5, 0.0)
    scen = [Scenario("k", 1.0, 0.1, rng.normal(0.3, 0.1, n)), Scenario("j", 1.0, 0.1, few),
            Scenario("contract_months", 10.0, 1.0, np.zeros(n)), Scenario("x", 1.0, 0.1, np.zeros(n), "zero_mean")]
    args = (hz, scen, active, np.array([0.4]), np.array([0.3]), np.array([500.0]), 12, 36)
    whole = project(*args)
    monkeypatch.setattr(P, "SUB_ACCOUNTS", 7)
    parts = project(*args)
    for k, v in whole.totals.items():
        assert np.array_equal(parts.totals[k], v), k
    assert np.array_equal(parts.churn_prob, whole.churn_prob) and np.array_equal(parts.ltv_units, whole.ltv_units)
    assert whole.totals["ltv"][1, 0] != whole.totals["ltv"][0, 0] and whole.totals["ltv"][4, 0] == 0


def test_column_stack_in_row_blocks_equals_numpy_bit_for_bit():
    from cskit.potential import _column_stack

    rng = np.random.default_rng(8)
    for n in (0, 1, 4095, 4096, 4097, 9000):
        cols = [rng.normal(size=n), np.full(n, -0.0), (rng.random(n) < 0.3).astype(float), rng.normal(size=n) * 1e300]
        cols[0][: n // 3] = np.nan
        got = _column_stack(cols, n)
        want = np.column_stack(cols) if n else np.empty((0, len(cols)))
        assert got.shape == want.shape and np.array_equal(got.view(np.int64), want.view(np.int64)), n


def test_without_a_referral_hazard_the_other_sums_are_unchanged_bit_for_bit():
    hz = constant_hazards({"churn": [0.1, 0.3], "expansion": [0.2, 0.2], "downgrade": [0.1, 0.1],
                           "referral": [0.05, 0.05]})
    args = (TWO, np.array([0.5]), np.array([0.25]), np.array([1000.0]), 12, 36)
    full = project(hz, [], *args)
    part = project({o: h for o, h in hz.items() if o != "referral"}, [], *args)
    assert full.totals["referrals"][0, 0] > 0 and part.totals["referrals"][0, 0] == 0
    for k in ("churn", "expansion", "downgrade", "ltv"):
        assert np.array_equal(part.totals[k], full.totals[k]), k
    assert np.array_equal(part.churn_prob, full.churn_prob) and np.array_equal(part.ltv_units, full.ltv_units)


def test_draw_sample_takes_the_largest_for_certain_and_is_unbiased_and_spread_along_its_key():
    rng0 = np.random.default_rng(5)
    n, size = 400, 60
    mrr = rng0.lognormal(4.0, 1.2, n)
    mrr[7] = mrr.sum() / 20  # worth 3 sampling steps of MRR: taken for certain
    key = rng0.lognormal(3.0, 0.5, n)  # LTV per unit of MRR
    key[11] = 40 * mrr.sum() * key.mean() / mrr[11] / size  # a small account projected to grow far beyond the rest
    active = pd.DataFrame({"mrr": mrr})
    y = rng0.normal(1.0, 0.5, n)  # any per-unit amount; its total Σ MRR · y is what a draw estimates
    certain = certain_accounts(mrr, mrr * key, size)
    assert certain[7] and certain[11] and 2 < certain.sum() < size // 2
    rest = ~certain
    points = size - certain.sum()
    step = mrr[rest].sum() / points
    assert (mrr[rest] < step).all() and (mrr[rest] * key[rest] < (mrr * key)[rest].sum() / points).all()
    expected = np.where(certain, 1.0, points * mrr / mrr[rest].sum())  # each account's chance of being drawn
    order = np.flatnonzero(rest)[np.argsort(key[rest], kind="stable")]
    counts, estimates = [], []
    for seed in range(2000):
        rows, w_money, w_count = draw_sample(active, size, np.random.default_rng(seed), key=key)
        assert len(rows) == size and (np.diff(rows) > 0).all()  # each account once at most
        c = np.bincount(rows, minlength=n)
        counts.append(c)
        assert (c[certain] == 1).all()
        on = certain[rows]
        assert np.array_equal(w_money[on], mrr[rows][on]) and (w_count[on] == 1).all()
        assert w_money[~on] == pytest.approx(np.full((~on).sum(), step))
        assert w_count[~on] == pytest.approx(step / mrr[rows][~on])
        # spread along the key: every run of the rest in key order holds its MRR share of the points, within 1
        assert np.abs(np.cumsum(c[order]) - np.cumsum(expected[order])).max() < 1
        estimates.append(w_money @ y[rows])
    mean = np.mean(counts, axis=0)
    se = np.sqrt(expected * (1 - expected) / len(counts))
    assert np.abs(mean - expected)[rest].max() < 5 * se[rest].max()
    truth = mrr @ y  # Hansen–Hurwitz: unbiased for the all-account total
    assert np.mean(estimates) == pytest.approx(truth, abs=4 * np.std(estimates) / np.sqrt(len(estimates)))
    # up to ``exact`` accounts every account is projected, weights MRR and 1
    rows, w_money, w_count = draw_sample(active, size, rng0, key=key, exact=n)
    assert np.array_equal(rows, np.arange(n)) and np.array_equal(w_money, mrr) and (w_count == 1).all()


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


# ---------------------------------------------------------------- recovery of the planted truth

from cskit.loading import client_from_frames  # noqa: E402
from cskit.panel import build_panel, kpi_columns  # noqa: E402
from cskit.params import Params  # noqa: E402
from cskit.potential import improvement_potential  # noqa: E402
from cskit.simulate import BETA_SD, simulate_client  # noqa: E402

DRIVEN = {
    "churn": ["d_churn", "d_ltv"],
    "expansion": ["d_expansion"],
    "downgrade": ["d_downgrade"],
    "referral": ["d_new"],
}


def run_sim(seed, n=3000, bootstrap=200, **kw):
    sim = simulate_client(n, 24, seed=seed, mc_paths=0)
    params = Params(bootstrap=bootstrap, seed=seed, **kw)
    data = client_from_frames(sim.tables, params)
    panel = build_panel(data)
    return sim, data, panel, params, improvement_potential(panel, data, params, kpi_columns(data))


def driver_cells():
    return [(k, col) for outcome, betas in BETA_SD.items() for k in betas for col in DRIVEN[outcome]]


def noise_kpis(sim):
    eff = sim.truth.effects
    return sorted(set(eff["kpi"]) - set(eff.loc[eff["role"] != "noise", "kpi"]))


@functools.lru_cache(maxsize=2)
def default_run(seed):
    return run_sim(seed)


def study(seeds):
    """Per seed: every planted driver's cell (estimate, interval, truth) and the noise KPIs' cells."""
    drivers, noise = [], []
    for seed in seeds:
        sim, data, panel, params, pot = default_run(seed) if seed in (1, 2) else run_sim(seed)
        truth = sim.truth.potential(params.improvement_pct, params.horizon_months, params.ltv_months).set_index("kpi")
        est = pot.table.set_index("kpi")
        for k, col in driver_cells():
            drivers.append({"seed": seed, "kpi": k, "col": col, "truth": truth.at[k, col], "est": est.at[k, col],
                            "lo": est.at[k, f"{col}_lo"], "hi": est.at[k, f"{col}_hi"]})
        for outcome, cols in DRIVEN.items():
            size = np.mean([abs(truth.at[k, cols[0]]) for k in BETA_SD[outcome]])
            for k in noise_kpis(sim):
                noise.append({"seed": seed, "kpi": k, "col": cols[0], "driver_size": size, "est": est.at[k, cols[0]],
                              "lo": est.at[k, f"{cols[0]}_lo"], "hi": est.at[k, f"{cols[0]}_hi"]})
    d, z = pd.DataFrame(drivers), pd.DataFrame(noise)
    d["covered"] = (d["lo"] <= d["truth"]) & (d["truth"] <= d["hi"])
    d["within_half"] = (d["est"] - d["truth"]).abs() <= 0.5 * d["truth"].abs()
    z["covers_zero"] = (z["lo"] <= 0) & (z["hi"] >= 0)
    return d, z


def describe(d):
    return "\n".join(f"{r.seed} {r.kpi}/{r.col}: {r.est:,.0f} [{r.lo:,.0f}, {r.hi:,.0f}] truth {r.truth:,.0f}"
                     for r in d.itertuples())


@pytest.fixture(scope="module")
def two_seeds():
    return study([1, 2])


def test_planted_drivers_have_the_right_sign(two_seeds):
    d, _ = two_seeds
    assert len(d) == 30
    wrong = d[np.sign(d["est"]) != np.sign(d["truth"])]
    assert wrong.empty, describe(wrong)


def test_planted_drivers_intervals_cover_the_truth_and_estimates_within_half(two_seeds):
    # 15 cells per seed: even exact 95% intervals all cover with probability 0.95^15 = 46%, so the
    # rates are tested. Under exact 95% coverage, P(fewer than 24 of 30 covered) < 0.3%.
    d, _ = two_seeds
    assert d["covered"].sum() >= 24, describe(d[~d["covered"]])
    assert d["within_half"].sum() >= 27, describe(d[~d["within_half"]])


def test_noise_kpis_near_zero(two_seeds):
    _, z = two_seeds
    assert z["kpi"].nunique() >= 10
    for (seed, col), g in z.groupby(["seed", "col"]):
        assert g["est"].abs().mean() < 0.25 * g["driver_size"].iloc[0], (seed, col)
    assert z["covers_zero"].mean() >= 0.85


def test_draws_on_an_mrr_proportional_sample_agree_with_all_accounts(two_seeds):
    sim, data, panel, params, exact = default_run(1)
    assert len(exact.accounts) > 2000
    sampled = improvement_potential(panel, data, params, kpi_columns(data), draw_accounts=1000)
    cols = ["d_ltv", "d_expansion", "d_new", "d_downgrade", "d_churn"]
    pd.testing.assert_frame_equal(sampled.table[cols], exact.table[cols])
    cells = two_seeds[0].query("seed == 1")[["kpi", "col"]].itertuples(index=False)
    e, s = exact.table.set_index("kpi"), sampled.table.set_index("kpi")
    ratio = [(s.at[k, f"{c}_hi"] - s.at[k, f"{c}_lo"]) / (e.at[k, f"{c}_hi"] - e.at[k, f"{c}_lo"]) for k, c in cells]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.1)
    assert min(ratio) > 0.7 and max(ratio) < 1.3


@pytest.mark.slow
def test_recovery_over_four_more_seeds():
    d, z = study([3, 4, 5, 6])
    assert (np.sign(d["est"]) == np.sign(d["truth"])).all(), describe(d[np.sign(d["est"]) != np.sign(d["truth"])])
    assert d["covered"].mean() >= 0.85, describe(d[~d["covered"]])
    assert d["within_half"].mean() >= 0.9, describe(d[~d["within_half"]])
    assert z["covers_zero"].mean() >= 0.85


# ---------------------------------------------------------------- the projection equals the simulator's

from cskit import simulate as S  # noqa: E402


def planted_hazards(snap, x):
    """The simulator's planted log-hazards as Hazards: base = η at tenure 0, tenure term log1p."""
    seg = np.array([S.SEGMENTS.index(s) for s in snap["segment"]])
    annual = snap["contract_type"].to_numpy() == "annual"
    out = {}
    for o in ("churn", "expansion", "downgrade", "referral"):
        base = S.eta(o, x, np.zeros(len(snap)), seg, annual)
        out[o] = Hazard(base[:, None], np.ones((1, 1)), np.array([S.TENURE[o]]), {"contract_months": 0},
                        Transform("log1p", 0.0, 1.0))
    return out


def test_projection_of_planted_model_equals_simulator_truth():
    sim = simulate_client(600, 24, seed=5, mc_paths=0)
    snap = sim.truth.snapshot
    truth = sim.truth.potential(10, 12, 36, 0.8).set_index("kpi")
    x0 = {k: snap[k].to_numpy(dtype=float) for k in S.CENTRE}
    g = S.design()
    args = (np.array([g["g_expansion"]]), np.array([g["g_downgrade"]]), np.array([g["first_mrr"]]), 12, 36)
    base = project(planted_hazards(snap, x0), [], snap, *args).totals
    cm = Scenario("contract_months", 0.0, truth.at["contract_months", "improvement"], np.zeros(len(snap)))
    with_cm = project(planted_hazards(snap, x0), [cm], snap, *args).totals
    for k in [*S.CENTRE, "contract_months"]:
        if k == "contract_months":
            scen = {c: v[1, 0] for c, v in with_cm.items()}
        else:
            kpi = DEFAULT_CATALOGUE[k]
            upper = S.FLAG_UPPER.get(k, kpi.upper)
            x1 = dict(
                x0,
                **{k: S.scenario_value(x0[k], sim.truth.recent.get(k), truth.at[k, "improvement"], kpi.lower, upper)},
            )
            scen = {c: v[0, 0] for c, v in project(planted_hazards(snap, x1), [], snap, *args).totals.items()}
        ours = {
            "d_ltv": 0.8 * (scen["ltv"] - base["ltv"][0, 0]),
            "d_expansion": scen["expansion"] - base["expansion"][0, 0],
            "d_new": scen["referrals"] - base["referrals"][0, 0],
            "d_downgrade": scen["downgrade"] - base["downgrade"][0, 0],
            "d_churn": scen["churn"] - base["churn"][0, 0],
        }
        assert ours == pytest.approx(truth.loc[k, list(ours)].astype(float).to_dict(), rel=1e-9, abs=1e-3), k


# ---------------------------------------------------------------- result files

from openpyxl import load_workbook  # noqa: E402


@pytest.fixture(scope="module")
def small():
    return run_sim(3, n=500, bootstrap=20)


def test_write_is_byte_reproducible_and_formatted_like_seed_000(small, tmp_path):
    sim, data, panel, params, pot = small
    again = improvement_potential(panel, data, params, kpi_columns(data))
    pot.write(tmp_path / "a")
    again.write(tmp_path / "b")
    for name in ("potential.csv", "potential.xlsx"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    csv = pd.read_csv(tmp_path / "a" / "potential.csv")
    expected = ["kpi", "label", "category", "mean", "improvement"]
    for c in ("d_ltv", "d_expansion", "d_new", "d_downgrade", "d_churn"):
        expected += [c, f"{c}_lo", f"{c}_hi"]
    assert list(csv.columns) == expected + ["models_flagged", "ltv_q_value", "credible"]
    assert csv["kpi"].tolist()[:27] == CATALOGUE_NAMES  # seed 000's row order
    wb = load_workbook(tmp_path / "a" / "potential.xlsx")
    ws = wb["改善ポテンシャル"]
    # the title block: client, as-of month, horizon, currency, improvement %
    assert ws["A1"].value == f"改善ポテンシャル（KPIを平均の10%改善した場合の増分）: {params.client}"
    assert ws["A2"].value == (f"分析基準月 {pd.Timestamp(data.as_of):%Y-%m}｜投影期間 12か月（LTVは36か月）｜通貨 JPY｜"
                              "改善幅 各KPIの平均の10%")
    # the HTML report's column names, seed 000's layout (phase and category merged down the rows)
    assert [c.value for c in ws[4]] == ["取引フェーズ", "カテゴリ", "KPI", "平均", "改善幅（10%）", "LTV増分",
                                        "拡大MRR増分", "紹介新規MRR増分", "ダウングレード損失の変化", "解約損失の変化"]
    assert ws.freeze_panes == "D5"
    n = len(pot.table)
    merged = {str(r) for r in ws.merged_cells.ranges}
    assert f"A5:A{n + 4}" in merged  # one phase for every KPI
    assert "B5:B9" in merged  # 契約状況: contract_months + the four license counts
    assert ws["B5"].value == "契約状況" and ws["C5"].value.startswith("契約月数（参考")
    for row in range(5, n + 5):  # an amount is grey exactly when its interval crosses zero
        r = pot.table.iloc[row - 5]
        cell = ws.cell(row=row, column=6)
        assert cell.number_format == '"¥"#,##0;-"¥"#,##0'
        assert cell.value == pytest.approx(r["d_ltv"]) or (cell.value is None and np.isnan(r["d_ltv"]))
        crosses = r["d_ltv_lo"] <= 0 <= r["d_ltv_hi"]
        assert (cell.font.color is not None and cell.font.color.rgb == "FFA6A6A6") == bool(crosses), r["kpi"]
    rates = {k for k in pot.table["kpi"] if k in ("active_user_rate", "newsletter_open_rate")}
    for row in range(5, n + 5):
        if pot.table.iloc[row - 5]["kpi"] in rates:
            assert ws.cell(row=row, column=4).number_format == "0.0%"
            assert ws.cell(row=row, column=5).value == pytest.approx(100 * pot.table.iloc[row - 5]["improvement"])
    assert rates
    assert ws.column_dimensions["C"].width >= display_width("ウェルカムウェビナー参加数")
    below = [ws.cell(row=r, column=1).value for r in range(n + 5, ws.max_row + 1)]
    assert pot.caveat in below and "因果" in pot.caveat
    assert any(line and line.startswith("灰色の斜体の金額は95%区間がゼロをまたぎ") for line in below)
    # printed landscape, one page wide, the header on every page
    assert ws.page_setup.orientation == "landscape" and ws.sheet_properties.pageSetUpPr.fitToPage
    assert ws.page_setup.fitToWidth in (None, 1) and ws.page_setup.fitToHeight == 0  # (Excel's default is 1)
    assert ws.print_title_rows == "$4:$4"


def test_english_headers_and_no_interval_without_bootstrap(tmp_path):
    sim, data, panel, params, pot = run_sim(4, n=400, bootstrap=0, language="en", currency="USD")
    assert pot.table.filter(regex="_(lo|hi)$").isna().all().all()
    assert pot.table["d_churn"].notna().sum() >= 20
    assert "not proven causes" in pot.caveat
    pot.write(tmp_path)
    ws = load_workbook(tmp_path / "potential.xlsx")["Improvement potential"]
    assert ws["A4"].value == "Phase" and ws["F4"].value == "LTV gain" and ws["C4"].value == "KPI"
    assert ws["F5"].number_format == '"$"#,##0;-"$"#,##0'
    assert ws["B5"].value == "Contract"
    assert ws["A2"].value.startswith("Analysis month ") and "currency USD" in ws["A2"].value


def test_without_referral_data_new_revenue_is_empty_with_a_reason(small):
    sim, data, panel, params, pot = small
    data.accounts = data.accounts.assign(referred_by=pd.NA)
    no_ref = improvement_potential(panel, data, params, ["contract_months", "csat", "login_days"])
    assert no_ref.table["d_new"].isna().all() and no_ref.table["d_new_lo"].isna().all()
    assert "referred_by" in no_ref.notes["d_new"]
    assert no_ref.table["d_churn"].notna().all()


def test_accounts_frame_is_the_baseline_projection(small):
    sim, data, panel, params, pot = small
    acc = pot.accounts
    assert list(acc.columns) == ["account_id", "mrr", "churn_prob", "ltv"]
    as_of = panel[panel["month"] == data.as_of]
    assert set(acc["account_id"]) == set(as_of.loc[(as_of["churn"] == 0) & (as_of["mrr"] > 0), "account_id"])
    assert acc["churn_prob"].between(0, 1).all()
    # accounts more likely to churn keep fewer months of their MRR
    months_kept = acc["ltv"] / acc["mrr"]
    assert months_kept.corr(acc["churn_prob"], method="spearman") < -0.5
    assert (months_kept > 0).all()


def test_outcome_with_too_few_events_and_constant_kpi_are_left_empty_with_reasons(small):
    sim, data, panel, params, pot = small
    changed = panel.assign(contraction=0, faq_views=1.0)
    res = improvement_potential(changed, data, params, ["contract_months", "login_days", "faq_views", "csat"])
    t = res.table.set_index("kpi")
    assert t["d_downgrade"].isna().all() and t["d_downgrade_lo"].isna().all()
    assert "0件" in N.notice(res.notes["d_downgrade"], "ja")
    assert res.notes["d_downgrade"].code == "potential_few_events"
    assert t.loc["faq_views", ["d_ltv", "d_churn", "d_expansion"]].isna().all()
    assert "FAQ" in N.notice(res.notes["faq_views"], "ja", N.kpi_labels(data.catalogue, "ja"))
    assert t.loc["login_days", ["d_ltv", "d_churn", "d_expansion"]].notna().all()
    assert res.outcomes.set_index("outcome").at["downgrade", "status"] == "not_estimable"


def test_future_values_equal_the_simulators_snapshot(small):
    sim, data, panel, params, pot = small
    active = active_accounts(panel, data.as_of)
    fv = future_values(panel, active, kpi_columns(data), data.as_of)
    snap = sim.truth.snapshot.set_index("account_id").reindex(active["account_id"]).reset_index(drop=True)
    assert fv["contract_months"].tolist() == snap["tenure"].astype(float).tolist()
    for k in ["login_days", "csat", "support_inquiries", "active_users", "community_posts", "nps"]:
        seen = fv[k].notna()
        assert seen.mean() > 0.8  # nps: accounts not yet surveyed have none
        np.testing.assert_allclose(fv.loc[seen, k], snap.loc[seen, k], rtol=1e-12)


# ---------------------------------------------------------------- separation and the external client


from cskit.models import GLMResult, separated_terms  # noqa: E402
from cskit.potential import OutcomeModel, _draw_coef  # noqa: E402


def test_separated_terms_are_named_and_held_fixed_in_the_draws():
    cov = np.diag([0.01, 0.0025, 1e12])
    fit = GLMResult(np.array([-3.0, 0.2, 40.0]), cov, ["intercept", "csat", "contract_type=annual"], "cloglog",
                    1000, 50, True, 30, -100.0)
    assert separated_terms(fit) == ["contract_type=annual"]
    model = OutcomeModel("churn", 1000, 50, 0.05, None, fit)
    draws = _draw_coef(model, fit.coef[None, :], 4000, np.random.default_rng(0))
    assert (draws[:, 2] == 40.0).all()
    assert draws[:, 1].std() == pytest.approx(0.05, rel=0.05)
    assert draws[:, 0].mean() == pytest.approx(-3.0, abs=0.01)




def test_external_client_runs_without_warnings_and_points_lie_in_their_intervals(peer):
    import warnings

    from cskit.pipeline import load

    params = Params(client="crm6", data=str(peer), bootstrap=100)
    data = load(params)
    panel = build_panel(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pot = improvement_potential(panel, data, params, kpi_columns(data))
    t = pot.table.dropna(subset=["d_ltv"])
    assert len(t) >= 25
    for col in ("d_ltv", "d_churn", "d_expansion"):
        assert ((t[f"{col}_lo"] <= t[col]) & (t[col] <= t[f"{col}_hi"])).all(), col
    # its 6- and 12-month terms are loaded as annual; 15 of their 21 churns fall at tenure 6, the rest are
    # mid-term exits (4, 5, 9): the panel reads a 6-month cycle, and the churn model is not separated
    # (164 decisions at tenure 6 with 15 churns; no term held fixed, no note)
    assert panel.loc[panel.contract_type == "annual", "renewal_cycle"].eq(6).all()
    assert "d_churn" not in pot.notes
    assert pot.table["d_new"].isna().all() and "referred_by" in pot.notes["d_new"]


def test_unknown_kpi_names_are_a_message_not_a_traceback(small):
    from cskit.errors import CskitError

    sim, data, panel, params, pot = small
    with pytest.raises(CskitError, match="login_dayz"):
        improvement_potential(panel, data, params, ["login_dayz", "csat"])


@pytest.mark.parametrize("seed", [1, 2])
def test_segment_only_driver_is_credited_in_its_segment_only(seed):
    """Support inquiries raise churn in SMB only (simulator option): the churn model keeps support ×
    segment (seed 1; on seed 2 the difference misses the forward selection's threshold), and the
    improvement value is within 2.5× of the simulator's true potential, which counts the SMB accounts'
    churn only (issue 11 item 2's check), churn MRR within 1.75× (measured 1.32× and 1.41×; a pooled slope,
    crediting every segment, gives 2.30× on seed 1)."""
    sim = simulate_client(3000, 24, seed=seed, mc_paths=0, segment_only=[("support_inquiries", "SMB")])
    params = Params(as_of=sim.as_of, bootstrap=0)
    data = client_from_frames(sim.tables, params)
    pot = improvement_potential(build_panel(data), data, params, kpi_columns(data))
    est = pot.table.set_index("kpi").loc["support_inquiries"]
    truth = sim.truth.potential().set_index("kpi").loc["support_inquiries"]
    for col in ("d_churn", "d_ltv"):
        assert 1 / 2.5 <= est[col] / truth[col] <= 2.5, (col, est[col], truth[col])
    assert 1 / 1.75 <= est["d_churn"] / truth["d_churn"] <= 1.75
    if seed == 1:
        assert any(t.kind == "segment" and t.kpi == "support_inquiries" for t in pot.models["churn"].design.terms)


def test_the_ltv_test_inverts_the_interval_the_table_shows():
    from scipy.stats import norm

    from cskit.potential import ltv_p_value

    # a skewed interval clear of zero (a fiscal-year client's login days: 351M [145M, 843M]), a gain whose
    # interval just reaches zero, a loss, and a KPI without an interval
    t = pd.DataFrame({"d_ltv": [351.0, 100.0, -50.0, np.nan], "d_ltv_lo": [145.0, 0.0, -90.0, np.nan],
                      "d_ltv_hi": [843.0, 150.0, -30.0, np.nan]})
    p, sd = ltv_p_value(t)
    assert p[0] == pytest.approx(2 * norm.sf(351 / (206 / 1.959964)), rel=1e-6) and p[0] < 0.001
    assert p[1] == pytest.approx(0.05, rel=1e-6)  # the interval's end at zero: p exactly 0.05
    assert sd[2] == pytest.approx(20 / 1.959964, rel=1e-6)  # a loss: the upper half-width
    assert np.isnan(p[3])


def test_a_curve_kpi_is_flagged_in_its_model_by_the_joint_test_of_its_columns():
    # CS-site visits with a curve in the expansion model: the linear column of a spline basis alone is far
    # from significant while the KPI's columns together are (drivers.csv's joint Wald test); the potential
    # must count it as flagged, as the triggers do (before: not flagged, so never credible)
    from cskit.models import Design, GLMResult, Term, joint_p
    from cskit.potential import OutcomeModel, flagged_in_models

    terms = [Term("x1", "curve", j, knots=np.array([-1.6, -0.6, 0.0, 0.6, 1.6])) for j in range(3)]
    names = ["intercept", "x1", "x2", *(t.name for t in terms)]
    design = Design(np.zeros((1, len(names))), names, ["x1", "x2"], {}, {}, terms=terms)
    coef = np.array([-3.0, 0.01, 0.02, 0.9, -0.5, 0.3])
    cov = np.diag([0.01, 0.04, 0.04, 0.01, 0.01, 0.01])
    fit = GLMResult(coef, cov, names, "logit", 1000, 100, True, 5, -300.0)
    m = OutcomeModel("expansion", 1000, 100, 0.1, design=design, fit=fit)
    assert fit.summary().loc["x1", "p_value"] > 0.9 and joint_p(design, coef, cov, "x1") < 1e-10
    assert flagged_in_models({"expansion": m}, 0.05) == {"x1": ["expansion"]}


def test_the_stages_sum_on_one_blas_thread_whatever_the_caller_set():
    """A data scientist calling a stage in JupyterLab with BLAS on every core gets cskit run's sums: the
    stage runs with BLAS limited to one thread (observed inside the projection), and the caller's own
    setting is back afterwards. (potential.csv moved by ~3e-7 relative between 1 and 2 OpenBLAS threads.)"""
    from threadpoolctl import threadpool_info, threadpool_limits

    import cskit.potential as P

    sim = simulate_client(300, 14, seed=3, mc_paths=0)
    params = Params(as_of=sim.as_of, bootstrap=5)
    data = client_from_frames(sim.tables, params)
    panel = build_panel(data)
    seen = []
    inner = P.project

    def spy(*args, **kwargs):
        seen.append({d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"})
        return inner(*args, **kwargs)

    with threadpool_limits(limits=2, user_api="blas"):
        before = {d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"}
        P.project = spy
        try:
            P.improvement_potential(panel, data, params, kpi_columns(data))
        finally:
            P.project = inner
        after = {d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"}
    assert seen and all(s == {1} for s in seen), seen
    assert after == before, (before, after)


def test_an_ltv_that_needs_more_growth_than_the_data_ever_show_is_said():
    """observed_growth by hand (each account's MRR over its lowest positive MRR so far; the largest: A's
    30 / 10 = 3, not its 30 / 40 drop nor B's fall); an LTV above margin × MRR × months × 3 is only
    possible with a projected MRR above 3× today's, so that account is named with its share of the LTV."""
    from cskit.notices import Notice
    from cskit.potential import growth_beyond_data, observed_growth

    months = pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01"] * 2)
    panel = pd.DataFrame({"account_id": ["A"] * 3 + ["B"] * 3, "month": months,
                          "mrr": [10.0, 30.0, 20.0, 50.0, 0.0, 40.0]})
    assert observed_growth(panel) == 3.0
    accounts = pd.DataFrame({"account_id": ["A", "B", "C"], "mrr": [20.0, 40.0, 10.0],
                             "ltv": [0.8 * 20 * 12 * 3 - 1, 0.8 * 40 * 12 * 3 + 1, 50.0]})
    note = growth_beyond_data(panel, accounts, 12, 0.8)
    assert isinstance(note, Notice) and note.code == "ltv_growth_beyond_data"
    assert note.values["accounts"] == 1 and note.values["growth"] == 3.0
    assert note.values["share"] == pytest.approx(accounts["ltv"][1] / accounts["ltv"].sum())
    for language in ("ja", "en"):
        text = N.notice_text(note.code, note.values, language, {})
        assert "3.0" in text and "12" in text and "Glyph" not in text
    capped = accounts.assign(ltv=accounts["ltv"].clip(upper=0.8 * 10 * 12 * 3))
    assert growth_beyond_data(panel, capped, 12, 0.8) is None
