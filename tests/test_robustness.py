"""Issue 11, items 3, 6, 7, 8: informative missingness, the onboarding verdict, what the potential calls
credible, and intervals that cover — each against closed forms, statsmodels, or simulated clients with
planted truth (cskit.simulate.Options: mnar_csat, onboarding_proxy, sparse_support)."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from cskit.catalogue import DEFAULT_CATALOGUE
from cskit.loading import client_from_frames
from cskit.models import (
    Design,
    cluster_cov,
    fit_binomial,
    fit_with_missingness,
    informative_missing,
    with_indicators,
)
from cskit.panel import active_rows, build_panel, kpi_columns, recent_values
from cskit.params import Params
from cskit.potential import Scenario, future_months, improvement_potential, scenarios  # noqa: F401
from cskit.simulate import Options, scenario_value, simulate_client
from cskit.triggers import find_triggers

# ---------------------------------------------------------------- the simulator's structures


@functools.lru_cache(maxsize=4)
def client(seed: int, n: int = 2000, months: int = 24, **flags):
    sim = simulate_client(n, months, seed=seed, mc_paths=0, options=Options(**flags))
    params = Params(as_of=sim.as_of, bootstrap=200, seed=seed)
    data = client_from_frames(sim.tables, params)
    return sim, data, build_panel(data), params


def months_before_churn(panel: pd.DataFrame, ahead: int) -> np.ndarray:
    """Rows whose account churns ``ahead`` months later."""
    acc = panel["account_id"].to_numpy()
    out = np.zeros(len(panel), dtype=bool)
    churn = panel["churn"].to_numpy() == 1
    out[:-ahead] = churn[ahead:] & (acc[ahead:] == acc[:-ahead])
    return out


def test_mnar_csat_is_unanswered_before_a_churn():
    sim, data, panel, _ = client(1, mnar_csat=True)
    gap = panel["csat"].isna().to_numpy()
    before = months_before_churn(panel, 1) | months_before_churn(panel, 2)
    assert 0.40 <= gap[before].mean() <= 0.50  # planted 0.45 (+ the 1% blanked at random)
    assert 0.07 <= gap[~before & (panel["churn"] == 0).to_numpy()].mean() <= 0.11  # planted 0.08
    # the hazards used the true values: the truth table is the default one
    eff = sim.truth.effects.set_index(["kpi", "outcome"])
    assert eff.at[("csat", "churn"), "role"] == "driver"


def test_onboarding_proxy_travels_with_usage_and_has_no_effect():
    sim, data, panel, _ = client(2, onboarding_proxy=True)
    eff = sim.truth.effects.set_index(["kpi", "outcome"])
    assert eff.at[("onboarding_completed", "churn"), "beta_unit"] == 0.0
    assert eff.at[("onboarding_completed", "churn"), "role"] == "proxy"
    assert panel[["onboarding_completed", "login_days"]].corr().iloc[0, 1] > 0.2


def test_sparse_support_is_mostly_zero_months():
    sim, data, panel, _ = client(1, sparse_support=True)
    x = panel["support_inquiries"].dropna()
    assert 0.5 <= (x == 0).mean() <= 0.65
    d = sim.truth.design
    assert abs(x.mean() - d["centre"]["support_inquiries"]) < 0.05  # the design constants describe the data
    assert abs(x.std() - d["scale"]["support_inquiries"]) < 0.05


# ---------------------------------------------------------------- shared modelling: indicators, clusters


def _missing_case(seed: int, informative: bool, n: int = 20_000):
    """A binary outcome on x (β = −0.5) where x is missing in 20% of rows; informative: the missing rows
    have log-odds +1 (the months without a value go with the outcome)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    gap = rng.random(n) < 0.2
    eta = -2.5 - 0.5 * x + (1.0 if informative else 0.0) * gap
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    z = np.where(gap, 0.0, x)
    X = np.column_stack([np.ones(n), z])
    return Design(X, ["intercept", "x"], ["x"], {}, {}, missing={"x": gap}), y, x, gap


def test_informative_missingness_is_found_and_modelled():
    design, y, x, gap = _missing_case(0, informative=True)
    new, fit, table = fit_with_missingness(y, design, "logit", 0.05, "y")
    assert table["informative"].tolist() == [True]
    assert new.indicators == ["x"] and new.names[-1] == "missing:x"
    # with the indicator the slope is the complete-case slope (here the truth, −0.5) and the indicator's
    # odds ratio is exp(1) against a month at the mean
    cc = sm.GLM(y[~gap], sm.add_constant(x[~gap]), family=sm.families.Binomial()).fit()
    assert fit.coef[1] == pytest.approx(cc.params[1], abs=0.02)
    assert fit.coef[1] == pytest.approx(-0.5, abs=0.1)
    assert table["effect"].iloc[0] == pytest.approx(np.e, rel=0.15)
    # mean imputation alone attenuates the slope
    assert abs(fit_binomial(y, design.X, link="logit").coef[1]) < abs(fit.coef[1])


def test_missing_at_random_is_not_flagged():
    flagged = 0
    for seed in range(10):
        design, y, _, _ = _missing_case(seed, informative=False)
        coef = fit_binomial(y, design.X, link="logit").coef
        flagged += int(informative_missing(design, y, coef, "logit", 0.05)["informative"].iloc[0])
    assert flagged <= 2  # a level-0.05 test: P(3 or more of 10) < 0.012


def test_the_missingness_score_test_is_statsmodels_score_test_without_the_kpi():
    design, y, _, gap = _missing_case(3, informative=True, n=5000)
    coef = fit_binomial(y, design.X, link="logit").coef
    z = informative_missing(design, y, coef, "logit", 0.05)["z"].iloc[0]
    null = sm.GLM(y, design.X[:, [0]], family=sm.families.Binomial()).fit()  # the model without the KPI
    stat = null.score_test(exog_extra=gap.astype(float)[:, None])[0]
    assert z**2 == pytest.approx(float(np.squeeze(stat)), rel=0.01)  # one Fisher step instead of the refit


def test_identical_indicators_are_not_repeated():
    design, y, _, gap = _missing_case(1, informative=True, n=2000)
    both = Design(np.column_stack([design.X, design.X[:, 1]]), ["intercept", "x", "w"], ["x", "w"], {}, {},
                  missing={"x": gap, "w": gap})
    assert with_indicators(both, ["x", "w"]).indicators == ["x"]


def test_cluster_covariance_is_statsmodels_cluster_robust():
    rng = np.random.default_rng(4)
    accounts = np.repeat(np.arange(400), 12)
    frailty = rng.normal(0, 0.8, 400)[accounts]
    x = rng.standard_normal(len(accounts)) + 0.5 * frailty
    eta = -3 + 0.4 * x + frailty
    y = (rng.random(len(x)) < 1 - np.exp(-np.exp(eta))).astype(float)
    X = sm.add_constant(x)
    g = 400
    # logit (canonical link: expected = observed information, as statsmodels' bread) to 1e-6
    logit = fit_binomial(y, X, link="logit")
    ref = sm.GLM(y, X, family=sm.families.Binomial()).fit(
        cov_type="cluster", cov_kwds={"groups": accounts, "use_correction": False})
    assert cluster_cov(logit, X, y, accounts) == pytest.approx(np.asarray(ref.cov_params()) * g / (g - 1), rel=1e-6)
    # cloglog: statsmodels' bread is the observed information, ours the expected one: within 3%
    fit = fit_binomial(y, X, link="cloglog")
    ref = sm.GLM(y, X, family=sm.families.Binomial(sm.families.links.CLogLog())).fit(
        cov_type="cluster", cov_kwds={"groups": accounts, "use_correction": False})
    assert cluster_cov(fit, X, y, accounts) == pytest.approx(np.asarray(ref.cov_params()) * g / (g - 1), rel=0.03)


# ---------------------------------------------------------------- the scenario's floor


def test_a_zero_month_is_not_pushed_below_zero():
    sim, data, panel, _ = client(1, sparse_support=True)
    rows = active_rows(panel, pd.Timestamp(data.as_of))
    active = panel[rows].reset_index(drop=True)
    months = future_months(panel, active, ["support_inquiries"], data.as_of)["support_inquiries"]
    seen = np.isfinite(months).any(axis=1)
    months = months[seen]  # (an account without any value is moved from the models' neutral value)
    future = pd.DataFrame({"support_inquiries": np.nanmean(months, axis=1)})
    kpi = DEFAULT_CATALOGUE["support_inquiries"]
    from cskit.models import Transform
    ident = Transform("identity", 0.0, 1.0)
    (sc,) = scenarios(future, ["support_inquiries"], DEFAULT_CATALOGUE, 10, {"support_inquiries": ident},
                      months={"support_inquiries": months})
    # the kit's change equals the simulator's month-by-month rule, coded independently
    want = scenario_value(future["support_inquiries"].to_numpy(), months, sc.delta, kpi.lower, kpi.upper)
    assert sc.dz == pytest.approx(want - future["support_inquiries"].to_numpy(), abs=1e-12)
    zeros = (months == 0).all(axis=1)
    assert zeros.sum() > 50 and (sc.dz[zeros] == 0).all()  # three zero months: nothing to reduce
    assert sc.dz.mean() > sc.delta * 0.8  # far less than a full −δ on average (δ < 0)
    # the snapshot's recent values are the kit's last 3 observed months
    recent = sim.truth.recent["support_inquiries"]
    snap = sim.truth.snapshot["account_id"]
    pick = pd.Index(snap).get_indexer(active["account_id"][seen])
    np.testing.assert_array_equal(np.nan_to_num(recent[pick], nan=-1), np.nan_to_num(months, nan=-1))


def test_recent_values_are_the_months_behind_recent_means():
    p = pd.DataFrame({"account_id": list("aaaabb"), "tenure": [0, 1, 2, 3, 0, 1], "x": [1, np.nan, 3, 4, np.nan, 5.0]})
    v = recent_values(p, ["x"], np.ones(6, dtype=bool))["x"]
    np.testing.assert_array_equal(np.nan_to_num(v, nan=-1), [[-1, -1, 1], [-1, -1, 1], [-1, 1, 3], [1, 3, 4],
                                                            [-1, -1, -1], [-1, -1, 5]])


# ---------------------------------------------------------------- triggers and potential on the MNAR client


@functools.lru_cache(maxsize=2)
def mnar_potential(seed: int):
    sim = simulate_client(3000, 24, seed=seed, mc_paths=0, options=Options(mnar_csat=True, sparse_support=True))
    params = Params(bootstrap=200, seed=seed)
    data = client_from_frames(sim.tables, params)
    panel = build_panel(data)
    return sim, data, panel, params, improvement_potential(panel, data, params, kpi_columns(data))


def test_triggers_report_the_informative_gap():
    sim, data, panel, params = client(1, mnar_csat=True)
    tr = find_triggers(panel, params, kpi_columns(data))
    m = tr.missing.set_index(["kpi", "outcome"])
    assert bool(m.at[("csat", "churn"), "informative"]) and m.at[("csat", "churn"), "effect"] > 1.5
    assert not m.xs("nps", level="kpi")["informative"].any()  # nps is missing for new accounts: not informative
    assert [n.code for n in tr.warnings].count("missing_informative") == 1
    csat = tr.details.set_index(["kpi", "outcome"]).loc[("csat", "churn")]
    assert csat["trigger"] == "RT" and csat["effect"] < 1


def test_the_mnar_drivers_value_is_recovered():
    # measured (seeds 1, 2): 0.74 and 0.86 of the truth with the indicator; −0.26 on seed 1 with mean
    # imputation alone (the client: 0.52–0.69)
    ratios = []
    for seed in (1, 2):
        sim, data, panel, params, pot = mnar_potential(seed)
        assert "csat" in pot.models["churn"].design.indicators
        truth = sim.truth.potential(params.improvement_pct, params.horizon_months, params.ltv_months).set_index("kpi")
        est = pot.table.set_index("kpi")
        ratios.append(est.at["csat", "d_ltv"] / truth.at["csat", "d_ltv"])
        assert est.at["csat", "d_ltv_lo"] <= truth.at["csat", "d_ltv"] <= est.at["csat", "d_ltv_hi"], seed
    assert np.mean(ratios) >= 0.75 and min(ratios) >= 0.6, ratios


def test_no_noise_or_proxy_is_called_credible():
    for seed in (1, 2):
        sim, data, panel, params, pot = mnar_potential(seed)
        eff = sim.truth.effects
        role = eff.groupby("kpi")["role"].agg(lambda r: "driver" if (r == "driver").any() else r.iloc[0])
        t = pot.table.set_index("kpi")
        named = t.index[t["credible"].astype(bool)]
        assert all(role.get(k) == "driver" for k in named if k != "contract_months"), (seed, list(named))
        assert {"login_days", "support_inquiries", "cs_site_visits"} <= set(named) or len(named) >= 4, (
            seed,
            list(named),
        )
        # the stage's decision is stricter than "interval above zero", never looser
        assert not (t["credible"].astype(bool) & ~(t["d_ltv_lo"] > 0)).any()


# ---------------------------------------------------------------- the onboarding verdict


@functools.lru_cache(maxsize=4)
def onboarding_of(seed: int, proxy: bool) -> dict:
    from cskit.health import design_health_score

    sim = simulate_client(2000, 30, seed=seed, mc_paths=0, options=Options(onboarding_proxy=proxy))
    params = Params(as_of=sim.as_of)
    data = client_from_frames(sim.tables, params)
    panel = build_panel(data)
    h = design_health_score(panel, data, params, kpi_columns(data))
    return {"check": h.onboarding, "codes": [getattr(w, "code", "") for w in h.warnings]}


def test_onboarding_that_only_travels_with_usage_is_not_called_a_driver():
    res = onboarding_of(4, True)
    o = res["check"]
    assert o["verdict_unadjusted"] == "driver"  # the raw difference would call it one (the test can fail)
    assert o["verdict"] != "driver"
    assert o["adjusted"]["status"] == "fitted" and o["hazard_model"]["ci_low"] < 1 < o["hazard_model"]["ci_high"]
    assert "onboarding_confounded" in res["codes"]


def test_onboarding_with_its_own_effect_is_a_driver():
    o = onboarding_of(4, False)["check"]  # planted: −0.3 per SD of the flag, HR 0.52 onboarded vs not
    assert o["verdict"] == "driver"
    assert o["adjusted"]["ci_high"] < 0 and o["hazard_model"]["ci_high"] < 1
    assert 0.35 < o["hazard_model"]["hazard_ratio"] < 0.8


def test_onboarding_own_hazard_is_the_churn_hazard_on_every_at_risk_month():
    """Issue 11 (e): the onboarding check's own-hazard condition is the churn hazard the triggers, the
    potential and the score fit (cskit.fits.churn_rows), on every at-risk month: the trigger table's
    figure. A fiscal-year client (term-end churn dates, April starts), seed 7: it used to be refitted on
    the months up to the validation cut only, which on such a client hold one April of annual renewals
    (QA client: 0.84 [0.56, 1.26] beside the trigger table's 0.61 [0.47, 0.78] per step of the flag).
    The planted effect, −0.3 per design SD of the flag (0.46), is a hazard ratio of 0.52."""
    from cskit.fits import churn_rows
    from cskit.health import design_health_score

    sim = simulate_client(1200, 30, seed=7, start="2024-04", annual_share=0.6, mc_paths=0,
                          options=Options(term_end_dates=True, fiscal_year_start=4))
    params = Params(as_of=sim.as_of)
    data = client_from_frames(sim.tables, params)
    panel = build_panel(data)
    kpis = kpi_columns(data)
    h = design_health_score(panel, data, params, kpis)
    hz = h.onboarding["hazard_model"]
    # by hand: the shared churn design on all at-risk months, its onboarding coefficient per step 0 → 1
    m = churn_rows(panel, kpis, params.kpi_lag_months)
    fit = fit_binomial(m.y, m.design.X, link="cloglog")
    j = m.design.names.index("onboarding_completed")
    step = 1 / m.design.transforms["onboarding_completed"].sd
    assert m.design.transforms["onboarding_completed"].kind == "identity"
    assert hz["hazard_ratio"] == pytest.approx(np.exp(fit.coef[j] * step), rel=1e-9)
    assert hz["ci_high"] == pytest.approx(np.exp((fit.coef[j] + 1.959963984540054 * fit.se[j]) * step), rel=1e-9)
    assert hz["ci_low"] < np.exp(-0.3 / 0.46) < hz["ci_high"] < 1
    # the trigger table's RT row for onboarding (per SD there) says the same to a few percent
    tr = find_triggers(panel, params, kpis)
    row = tr.details.set_index(["kpi", "outcome", "segment"]).loc[("onboarding_completed", "churn", "")]
    sd = tr.transforms.set_index("kpi").at["onboarding_completed", "sd"]
    assert hz["hazard_ratio"] == pytest.approx(np.exp(row["coef"] / sd), rel=0.05)
    assert hz["ci_high"] == pytest.approx(np.exp((row["coef"] + 1.959963984540054 * row["se"]) / sd), rel=0.05)


@pytest.mark.slow
def test_onboarding_verdict_over_seeds():
    assert all(onboarding_of(seed, True)["check"]["verdict"] != "driver" for seed in (1, 2, 3))
    assert all(onboarding_of(seed, False)["check"]["verdict"] == "driver" for seed in (1, 2))


# ---------------------------------------------------------------- intervals that cover


@pytest.mark.slow
def test_intervals_cover_the_true_potential_over_seeds():
    """Every planted driver's LTV gain (8 a seed: churn, expansion, downgrade and referral drivers) on the
    sparse-count client, seeds 3–6: the 95% intervals (draws from the account-clustered covariance,
    month-by-month scenario) cover the simulator's true potential. Measured: 7, 8, 7 of 8 (seeds 3–5)."""
    covered, per_seed = [], {}
    for seed in (3, 4, 5, 6):
        sim = simulate_client(3000, 24, seed=seed, mc_paths=0, options=Options(sparse_support=True))
        params = Params(bootstrap=200, seed=seed)
        data = client_from_frames(sim.tables, params)
        panel = build_panel(data)
        est = improvement_potential(panel, data, params, kpi_columns(data)).table.set_index("kpi")
        truth = sim.truth.potential(params.improvement_pct, params.horizon_months, params.ltv_months).set_index("kpi")
        eff = sim.truth.effects
        drivers = sorted(set(eff.loc[eff["role"] == "driver", "kpi"]))
        hits = [bool(est.at[k, "d_ltv_lo"] <= truth.at[k, "d_ltv"] <= est.at[k, "d_ltv_hi"]) for k in drivers]
        per_seed[seed] = sum(hits)
        covered += hits
        named = [k for k in est.index[est["credible"].astype(bool)] if k not in drivers and k != "contract_months"]
        assert not named, (seed, named)
    # 32 cells: under exact 95% coverage, P(fewer than 27 covered) < 2%
    assert sum(covered) >= 27 and min(per_seed.values()) >= 6, per_seed


def test_the_new_notices_are_worded_in_both_languages():
    from cskit import narrative as N
    from cskit.notices import Notice

    n = Notice("missing_informative", stage="triggers", kpi="csat", share=0.104,
               effects=[{"outcome": "churn", "effect": 8.03, "ci_low": 6.56, "ci_high": 9.83}])
    en, ja = N.notice(n, "en"), N.notice(n.to_dict(), "ja", {"csat": "顧客満足度"})
    assert "'csat' is missing in 10% of the model rows" in en and "churn 8.03 [6.56, 9.83]" in en
    assert "顧客満足度は対象月の10%で未記入" in ja and "解約 8.03 [6.56, 9.83]" in ja
    for code in ("onboarding_confounded", "onboarding_unadjusted_only"):
        m = Notice(code, stage="health", severity="note", reason="9 onboarded accounts")
        assert "onboarding" in N.notice(m, "en") and "オンボード" in N.notice(m, "ja")


# ---------------------------------------------------------------- informative gaps in the score and the projections


def test_expected_indicator_gives_the_expected_hazard_of_a_gap():
    """exp(γ·x) = E[exp(γ·I)] = 1 − π + π·e^γ for I ~ Bernoulli(π), by hand; → π as γ → 0; 0 and 1 exact."""
    from cskit.models import expected_indicator

    for g in (-2.0, 0.5, 2.3):
        for pi in (0.0, 0.1, 0.45, 1.0):
            assert np.exp(g * expected_indicator(g, pi)) == pytest.approx(1 - pi + pi * np.exp(g), rel=1e-12)
    assert expected_indicator(0.0, 0.3) == 0.3
    assert expected_indicator(2.3, 0.1) > 0.1  # convexity: more than the share itself
    draws = expected_indicator(np.array([[1.0], [2.0]]), np.array([[0.0, 0.5, 1.0]]))
    half = [np.log1p(0.5 * np.expm1(1.0)), np.log1p(0.5 * np.expm1(2.0)) / 2]
    np.testing.assert_allclose(draws, [[0, half[0], 1], [0, half[1], 1]])


def test_the_health_score_keeps_an_informative_gap_and_ranks_churn_better():
    """MNAR csat (seed 1, 2,000 accounts): the score keeps csat and its missing indicator as an item of its
    own, and ranks the next 12 months' churn (realised in the simulator's future) better than mean
    imputation did. Measured: AUC 0.653 (mean imputation 0.612); mean churn probability 0.188 against a
    realised 0.147 and a true 0.150 (0.164 with mean imputation; 0.150 with the share plugged in as a value,
    which understated the QA look-alikes' by a third: 0.100 vs a true 0.148)."""
    from cskit.health import design_health_score
    from cskit.stats import auc_with_ci

    sim, data, panel, params = client(1, mnar_csat=True)
    h = design_health_score(panel, data, params, kpi_columns(data))
    w = h.weights.set_index("kpi")
    assert w.at["missing:csat", "scale"] == "missing" and w.at["missing:csat", "direction"] == "-"
    assert w.at["missing:csat", "points"] >= 5 and w.at["csat", "direction"] == "+"
    assert "missing:csat" not in set(h.playbook[["kpi_1", "kpi_2"]].stack())  # a warning sign, not a lever
    f = h.scores.merge(sim.truth.future[["account_id", "churned"]], on="account_id")
    auc = auc_with_ci(f["churned"].to_numpy(), -f["score"].to_numpy())["auc"]
    assert auc >= 0.64, auc
    assert abs(f["churn_prob"].mean() / f["churned"].mean() - 1) < 0.3, (f["churn_prob"].mean(), f["churned"].mean())
