"""Recovery on simulated clients with structures of real client data (issue 11: renewal terms as clients
record them, seasonality, sustained usage at annual renewals, thin data, late data windows).

Each test plants the structure with a :class:`cskit.simulate.Options` switch and asserts that every stage
recovers the simulator's truth (``Truth.future``: true churn probabilities; ``Truth.potential()``: true
improvement values; ``Truth.effects``: the roles of the KPIs). Seeds and sizes are fixed; the figures
measured on more seeds are in docs/methods.md.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
import pytest

from cskit.health import design_health_score
from cskit.loading import client_from_frames
from cskit.panel import build_panel, kpi_columns, outcome_rows
from cskit.params import Params
from cskit.potential import improvement_potential
from cskit.simulate import Options, simulate_client
from cskit.stats import auc_with_ci
from cskit.triggers import find_triggers

# A Japanese fiscal-year client: annual terms from 1 April, churn dated the term's last day (03-31), a
# churn shock at the fiscal year's end (March) unrelated to any KPI, and a noise KPI that peaks in February.
FISCAL = Options(term_end_dates=True, fiscal_year_start=4, season_month=3, season_shock=1.2,
                 seasonal_kpi="case_study_views", seasonal_peak=3.0)
SEASON = Options(season_month=3, season_shock=1.2, seasonal_kpi="case_study_views", seasonal_peak=3.0)
LATE = Options(window_start=15, active_only=True)


@functools.lru_cache(maxsize=None)
def client(options: Options, seed: int, n: int = 2000, months: int = 30, mc_paths: int = 100):
    sim = simulate_client(n, months, seed=seed, start="2023-04", mc_paths=mc_paths, options=options)
    params = Params(as_of=sim.as_of, horizon_months=12, bootstrap=0)
    data = client_from_frames(sim.tables, params)
    return sim, params, data, build_panel(data), kpi_columns(data)


def churn_flags(sim, table) -> dict[str, str]:
    """The KPIs flagged for churn (pooled rows), with their planted role."""
    role = sim.truth.effects.query("outcome == 'churn'").set_index("kpi")["role"]
    c = table[(table["outcome"] == "churn") & (table["segment"] == "")]
    return {k: role.get(k, "tenure") for k in c.loc[c["q_value"] < 0.05, "kpi"]}


def annual_mean(frame, sim) -> tuple[float, float]:
    """Mean estimated and true churn probability of the annual accounts active at as_of."""
    acc = sim.tables["accounts"].set_index("account_id")["contract_type"]
    f = sim.truth.future.merge(frame, on="account_id", suffixes=("_true", ""))
    a = f[f["account_id"].map(acc) == "annual"]
    return float(a["churn_prob"].mean()), float(a["churn_prob_true"].mean())


# ---------------------------------------------------------------- renewal terms (item 1) and seasons (item 4)


@pytest.fixture(scope="module")
def fiscal():
    sim, params, data, panel, kpis = client(FISCAL, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        triggers = find_triggers(panel, params, kpis)
        health = design_health_score(panel, data, params, kpis)
        potential = improvement_potential(panel, data, params, kpis)
    return sim, panel, triggers, health, potential


def test_fiscal_year_panel_reads_term_end_churns_at_the_april_anniversary(fiscal):
    sim, panel, *_ = fiscal
    annual = panel[panel["contract_type"] == "annual"]
    assert annual["renewal_cycle"].eq(12).all()
    churned = annual[annual["churn"] == 1]
    assert (churned["tenure"] % 12 == 0).mean() > 0.9 and churned["month"].dt.month.eq(4).mean() > 0.9
    assert panel["churn_season"].nunique() == 12  # the March shock is detected: calendar month adjusted


def test_fiscal_year_triggers_find_the_drivers_and_no_noise_kpi(fiscal):
    sim, _, triggers, *_ = fiscal
    flags = churn_flags(sim, triggers.table)
    assert {"login_days", "csat", "support_inquiries", "onboarding_completed"} <= set(flags)
    assert not [k for k, r in flags.items() if r in ("noise", "proxy")], flags
    assert triggers.seasonality["detected"] and triggers.seasonality["peak_month"] == 3
    assert "seasonal_churn" in {getattr(w, "code", "") for w in triggers.warnings}


def test_fiscal_year_health_score_is_near_the_oracle_and_annual_risk_is_right(fiscal):
    sim, _, _, health, _ = fiscal
    f = sim.truth.future.merge(health.scores, on="account_id", suffixes=("_true", ""))
    auc = lambda r: auc_with_ci(f["churned"].to_numpy(), np.asarray(r))["auc"]  # noqa: E731
    assert auc(-f["score"]) >= 0.93 * auc(f["churn_prob_true"])
    est, true = annual_mean(health.scores, sim)
    assert abs(est / true - 1) < 0.3, (est, true)  # was 0.009 vs 0.16 with the renewal cycle lost
    role = sim.truth.effects.query("outcome == 'churn'").set_index("kpi")["role"]
    pointed = [k for k, p in zip(health.weights["kpi"], health.weights["points"]) if p > 0]
    assert not [k for k in pointed if role.get(k) in ("noise", "proxy")], pointed
    assert health.validation_json()["seasonality"]["detected"]
    contract = health.weights.set_index("kpi")["points"].get("contract_type", 0)
    assert contract <= 10


def test_fiscal_year_potential_projects_annual_renewals_at_their_anniversary(fiscal):
    sim, _, _, _, potential = fiscal
    est, true = annual_mean(potential.accounts, sim)
    assert abs(est / true - 1) < 0.3, (est, true)


def test_a_seasonal_noise_kpi_is_a_trigger_only_without_the_calendar_adjustment():
    """March shock + a noise KPI peaking in February: adjusted for the calendar month, the KPI is not a
    trigger; the same data with the adjustment switched off flag it (the test can fail)."""
    sim, params, data, panel, kpis = client(SEASON, 1, mc_paths=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adjusted = churn_flags(sim, find_triggers(panel, params, kpis).table)
        naive = churn_flags(sim, find_triggers(panel.assign(churn_season="all"), params, kpis).table)
    assert "case_study_views" not in adjusted and {"login_days", "csat", "support_inquiries"} <= set(adjusted)
    assert "case_study_views" in naive


def test_the_season_test_is_made_once_for_the_triggers_and_the_score():
    """A planted March shock: the run's Fits tests the season once (the triggers, then the health score
    read it) and each gets the test churn_seasonality makes on the panel, as its own copy."""
    from cskit.fits import Fits
    from cskit.panel import MIN_EVENTS
    from cskit.season import churn_seasonality

    sim, params, data, panel, kpis = client(SEASON, 1, mc_paths=0)
    fits = Fits(panel, params.kpi_lag_months, seed=params.seed)
    alone = churn_seasonality(panel, MIN_EVENTS)
    assert alone["detected"] and alone["peak_month"] == 3
    first = fits.seasonality(MIN_EVENTS)
    assert first == alone
    first["hazard_ratio"].clear()
    assert fits.seasonality(MIN_EVENTS) == alone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert find_triggers(panel, params, kpis, fits=fits).seasonality == alone


def test_the_season_test_counts_months_inside_the_data_window_only():
    """A window of 18 data months on contracts begun up to 18 months earlier: the panel spans 36 months
    but the data only 18, fewer than the two calendar years the test needs, so no season is tested (the
    panel's span let an 18-month window with 11 month terms call churn seasonal on a null client)."""
    from cskit.season import MIN_SPAN, churn_seasonality

    sim = simulate_client(600, 36, seed=3, mc_paths=0, options=Options(window_start=18, active_only=True))
    data = client_from_frames(sim.tables, Params(as_of=sim.as_of, bootstrap=0))
    panel = build_panel(data)
    assert panel["month"].nunique() == 36
    r = churn_seasonality(panel, 20)
    assert r["span_months"] == 18 < MIN_SPAN and r["code"] == "seasonality_not_tested"
    assert (panel["churn_season"] == "all").all()


def test_renewal_strata_put_term_contracts_by_the_month_they_started():
    import pandas as pd

    from cskit.season import renewal_strata

    rows = pd.DataFrame({"month": pd.to_datetime(["2025-04-01", "2025-04-01", "2025-10-01", "2026-01-01"]),
                         "tenure": [12, 3, 6, 13], "contract_type": ["annual", "monthly", "annual", "annual"]})
    assert list(renewal_strata(rows)) == ["annual:4", "monthly", "annual:4", "annual:12"]


@pytest.mark.parametrize("seed", [2, 3])
def test_fiscal_year_renewals_all_in_april_are_not_a_season(seed):
    """60% annual contracts, all renewing in April (fiscal year from 1 April, churn dated 03-31), no
    calendar effect planted: the renewal hazard is not read as an April season (measured p 0.42–0.97
    on seeds 51–53, and p = 0.85 on the QA fiscal-year client)."""
    from cskit.season import churn_seasonality

    sim = simulate_client(1200, 30, seed=seed, start="2024-04", annual_share=0.6, mc_paths=0,
                          options=Options(term_end_dates=True, fiscal_year_start=4))
    data = client_from_frames(sim.tables, Params(as_of=sim.as_of, bootstrap=0))
    r = churn_seasonality(build_panel(data), 20)
    assert r["code"] == "no_seasonal_churn", r


def test_six_month_terms_filed_as_annual_do_not_make_contract_type_the_score():
    """The peer client's case on the simulator: "annual" contracts on 6-month terms. The panel reads a
    6-month cycle, the score's context value counts two decisions a year, and the annual accounts'
    12-month churn probability follows the truth."""
    sim, params, data, panel, kpis = client(Options(annual_terms=(6,)), 2)
    assert panel.loc[panel["contract_type"] == "annual", "renewal_cycle"].eq(6).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        health = design_health_score(panel, data, params, kpis)
    assert health.weights.set_index("kpi")["points"].get("contract_type", 0) <= 10
    est, true = annual_mean(health.scores, sim)
    assert abs(est / true - 1) < 0.3, (est, true)
    annual = [c for c in health.context if c["item"] == "contract_type" and c["level"] == "annual"]
    assert annual and annual[0]["decisions_in_horizon"] == 2.0


def test_peer_client_contract_type_no_longer_takes_half_the_score(peer):
    from cskit.pipeline import load

    params = Params(client="crm6", data=str(peer), bootstrap=0, horizon_months=6)
    data = load(params)
    panel = build_panel(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        health = design_health_score(panel, data, params, kpi_columns(data))
    assert health.weights.set_index("kpi")["points"].get("contract_type", 0) <= 10  # was 52 of 100


# Fiscal-year clients as the QA built them (1,200 accounts × 30 months from April, 60% annual, term-end
# churn dates, April starts), with a noise KPI that peaks in March, the month whose KPIs every April
# renewal is decided on (lag 1), and no churn shock: the seasonal pattern is confounded with the renewal
# month and nothing else.
FISCAL_NOISE = Options(term_end_dates=True, fiscal_year_start=4, season_month=4, season_shock=0.0,
                       seasonal_kpi="case_study_views")
FISCAL_SEEDS = range(300, 310)


@pytest.fixture(scope="module")
def fiscal_seeds() -> pd.DataFrame:
    out = []
    for seed in FISCAL_SEEDS:
        sim = simulate_client(1200, 30, seed=seed, start="2024-04", annual_share=0.6, mc_paths=0,
                              options=FISCAL_NOISE)
        params = Params(as_of=sim.as_of)
        data = client_from_frames(sim.tables, params)
        t = find_triggers(build_panel(data), params, kpi_columns(data)).table
        role = sim.truth.effects[["kpi", "outcome", "role"]]
        t = t[(t["segment"] == "") & (t["kpi"] != "contract_months")].merge(role, on=["kpi", "outcome"], how="left")
        out.append(t.assign(seed=seed))
    return pd.concat(out, ignore_index=True)


@pytest.mark.slow
def test_fiscal_year_clients_flag_noise_kpis_at_the_false_discovery_rate_only(fiscal_seeds):
    """Issue 11 (QA gap c): on fiscal-year clients a noise KPI was flagged for churn in about half the
    runs. Measured (docs/methods.md, "Noise KPIs on fiscal-year clients"): it is the false-discovery
    rate's own share, the same as on the default simulator, not a leak of the fiscal year: no KPI is
    flagged repeatedly, and the KPI that peaks before every April renewal is not flagged (with the
    renewal cycle read as "every month", the item-1 failure, its churn z is 3–6 in every seed). Over 10
    seeds: the false-discovery proportion among the flagged churn and renewal KPIs is at most alpha, every
    planted churn driver is flagged with its sign in at least 85% of the seed × outcome fits, no noise KPI
    is flagged in more than 2 seeds, the seasonal one in at most 1."""
    d = fiscal_seeds[fiscal_seeds["outcome"].isin(["churn", "renewal"])]
    flagged = d[d["trigger"] != ""]
    fdp = flagged.groupby(["seed", "outcome"])["role"].agg(lambda r: (r != "driver").mean())
    fdp = fdp.reindex(pd.MultiIndex.from_product([FISCAL_SEEDS, ["churn", "renewal"]]), fill_value=0.0)
    assert fdp.mean() <= 0.05, fdp[fdp > 0].to_dict()
    drivers = d[d["role"] == "driver"]
    sign = np.where(drivers["outcome"] == "churn", np.where(drivers["kpi"] == "support_inquiries", "+", "-"),
                    np.where(drivers["kpi"] == "support_inquiries", "-", "+"))
    hit = (drivers["trigger"] != "") & (drivers["direction"] == sign)
    assert len(drivers) == 4 * 2 * len(FISCAL_SEEDS)
    assert hit.mean() >= 0.85, hit.groupby(drivers["kpi"]).mean().to_dict()
    noise = flagged[flagged["role"] != "driver"].groupby("kpi")["seed"].nunique()
    assert (noise <= 2).all(), noise.to_dict()
    assert noise.get("case_study_views", 0) <= 1, noise.to_dict()


# ---------------------------------------------------------------- late data windows (item 11)


def test_late_window_with_only_active_accounts_exported():
    """Half the accounts started before the first data month and the export lists only the accounts
    active in the window: delayed entry keeps the churn probability and the triggers right, and the late
    window is reported (quality.json data_window, coded notice)."""
    sim, params, data, panel, kpis = client(LATE, 0)
    w = data.quality.data_window
    assert w["code"] == "left_truncation" and w["only_active_listed"] and w["share_started_before_window"] > 0.4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        health = design_health_score(panel, data, params, kpis)
        flags = churn_flags(sim, find_triggers(panel, params, kpis).table)
    f = sim.truth.future.merge(health.scores, on="account_id", suffixes=("_true", ""))
    assert abs(f["churn_prob"].mean() / f["churn_prob_true"].mean() - 1) < 0.15
    assert not [k for k, r in flags.items() if r in ("noise", "proxy")], flags
    assert {"login_days", "csat", "support_inquiries"} <= set(flags)
    rows, _ = outcome_rows(panel, "churn", params.kpi_lag_months)
    assert (panel.loc[rows, "months_observed"] >= params.kpi_lag_months).all()


# ---------------------------------------------------------------- sustained usage (item 9)


def test_annual_renewals_on_the_terms_average_are_modelled_on_it():
    """Annual renewals decided on the 3-month mean of the churn KPIs: the likelihood criterion picks the
    mean for annual decisions (and the last month on the default process), and the usage drivers'
    improvement values move toward the truth."""
    from cskit.models import kpi_transforms, sustained_rows

    def choice(options, seed):
        sim = simulate_client(3000, 30, seed=seed, annual_share=0.7, mc_paths=0, options=options)
        params = Params(as_of=sim.as_of, bootstrap=0)
        data = client_from_frames(sim.tables, params)
        panel = build_panel(data)
        kpis = kpi_columns(data)
        rows, _ = outcome_rows(panel, "churn", 1)
        return sim, params, data, panel, kpis, sustained_rows(panel, rows, kpis, 1, kpi_transforms(panel, kpis))

    *_, (_, default) = choice(Options(), 0)
    assert default["code"] == "annual_last_month"
    sim, params, data, panel, kpis, (mask, info) = choice(Options(recent_mean_annual=True), 1)
    assert info["code"] == "annual_recent_mean" and mask is not None
    truth = sim.truth.potential(10, 12, 36).set_index("kpi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kit = improvement_potential(panel, data, params, kpis).table.set_index("kpi")
    drivers = ["login_days", "csat", "support_inquiries"]
    err = np.mean([abs(np.log(kit.at[k, "d_ltv"] / truth.at[k, "d_ltv"])) for k in drivers])
    # the same fit on the last month only (measured: mean |log ratio| 0.53 on this seed, 0.32 with the mean)
    assert err < 0.45, {k: kit.at[k, "d_ltv"] / truth.at[k, "d_ltv"] for k in drivers}


# ---------------------------------------------------------------- thin data and the score (item 10)


def test_thin_clients_give_no_score_points_to_noise():
    """150 accounts × 20 months: 18–35 churns for 27 KPIs (fewer than 10 per KPI). Holm's family-wise
    control on the joint fit and on each KPI's own score test keeps noise and proxies out of the score in
    every seed (with BH on the joint fit alone, seed 7 gave the noise KPI licenses 42 points); a seed
    without a supported KPI gets a score of account context only, and says so."""
    from cskit.health import fit_score_model

    bases = []
    for seed in range(12):
        sim = simulate_client(150, 20, seed=seed, mc_paths=0)
        data = client_from_frames(sim.tables, Params(as_of=sim.as_of, bootstrap=0))
        panel = build_panel(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fit_score_model(panel, kpi_columns(data), 1)
        role = sim.truth.effects.query("outcome == 'churn'").set_index("kpi")["role"]
        pointed = model.weights.loc[model.weights["points"] > 0, "kpi"]
        assert not [k for k in pointed if role.get(k) in ("noise", "proxy")], (seed, list(pointed))
        if model.basis == "context_only":
            assert "score_context_only" in {getattr(w, "code", "") for w in model.warnings}
        bases.append(model.basis)
    assert "kpis" in bases and "context_only" in bases  # both regimes occur at this size


def test_a_noise_count_carried_by_three_extreme_churners_gets_no_thin_score_points():
    """200 accounts × 18 months, 28 churns: three churners hold the three most extreme values of the noise
    count community_visits (joint Wald p 2e-5, own score test p 3e-4: 31 points before); its normal
    scores show no link, so it gets none."""
    from cskit.health import CONTEXT_KPIS, _fit_model, fit_score_model, screen_q

    sim = simulate_client(200, 18, seed=31, mc_paths=0)
    data = client_from_frames(sim.tables, Params(as_of=sim.as_of, bootstrap=0))
    panel = build_panel(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit_score_model(panel, kpi_columns(data), 1)
        full = _fit_model(panel, kpi_columns(data), 1, 12)
    assert "community_visits" not in set(model.weights.loc[model.weights["points"] > 0, "kpi"])
    _, y = outcome_rows(panel, "churn", 1)
    tested = [k for k in full.design.kpis if k not in CONTEXT_KPIS]
    q = dict(zip(tested, screen_q(full.design, y, tested)))
    assert q["community_visits"] >= 0.05 and full.fit.summary().at["community_visits", "p_value"] < 1e-3


@pytest.mark.parametrize("seed, months", [(6, 12), (6, 20)])
def test_term_contracts_without_renewals_seen_get_no_churn_probability(seed, months):
    """150 accounts: in 12 months no annual account reaches its first anniversary, in 20 only a few
    dozen do with under 10 churns. The data cannot tell the renewal churn probability (before: 0.02 for
    annual accounts against a true 0.16 at 12 months, 0.54–1.47× the truth at 20 months over seeds
    3–8): the annual accounts' churn_prob is empty, contract type earns no points, the coded notice and
    the result files say so, and the monthly accounts keep theirs."""
    from cskit.narrative import not_estimated

    sim = simulate_client(150, months, seed=seed, mc_paths=0)
    params = Params(as_of=sim.as_of, horizon_months=12, bootstrap=0)
    data = client_from_frames(sim.tables, params)
    panel = build_panel(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        health = design_health_score(panel, data, params, kpi_columns(data))
    r = health.validation_json()["renewals"]
    assert r["code"] == "renewal_not_observed" and not r["estimable"] and r["churns"] < r["min_events"]
    assert (r["decisions"] == 0) == (months == 12)
    kind = health.scores["account_id"].map(sim.tables["accounts"].set_index("account_id")["contract_type"])
    assert health.scores.loc[kind == "annual", "churn_prob"].isna().all() and (kind == "annual").sum() > 10
    assert health.scores.loc[kind == "monthly", "churn_prob"].notna().all()
    assert "contract_type" not in set(health.weights["kpi"])
    assert [w.code for w in health.warnings].count("renewal_not_observed") == 1
    assert "not estimable" in not_estimated(pd.DataFrame(), pd.DataFrame(), health.validation_json(), "en")


def test_renewals_seen_keep_the_term_contracts_probability():
    """The same check passes the demo-sized default client (hundreds of renewals): nothing is blanked."""
    from cskit.panel import renewal_evidence

    sim, params, data, panel, kpis = client(Options(), 0, n=600, months=30, mc_paths=0)
    r = renewal_evidence(panel, 1)
    assert r["estimable"] and r["code"] == "renewals_observed" and r["churns"] >= r["min_events"], r
    # the count is of the model's renewal rows: annual, at risk, tenure a positive multiple of 12
    rows, _ = outcome_rows(panel, "churn", 1)
    dec = rows & (panel["contract_type"] == "annual").to_numpy() & (panel["tenure"] % 12 == 0).to_numpy()
    assert r["decisions"] == int(dec.sum()) and r["churns"] == int(panel.loc[dec, "churn"].sum())
