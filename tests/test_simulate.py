"""The simulator: contract shape, planted rates and correlations, and that its truth is what it says.

The panel used here is rebuilt from the CSV-shaped tables with plain pandas, independently of
cskit.panel, so a recovery check exercises the tables a client would send, not the simulator's state.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from cskit import simulate as S
from cskit.catalogue import CATALOGUE_NAMES, DEFAULT_CATALOGUE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim():
    return S.simulate_client(n_accounts=2000, n_months=24, seed=0)


@pytest.fixture(scope="module")
def panel(sim):
    return build_panel(sim.tables, sim.as_of)


def build_panel(tables: dict, as_of: str) -> pd.DataFrame:
    """Account x month rows from the start month to the churn month (or as_of), with outcomes and KPIs."""
    acc = tables["accounts"]
    last = pd.Period(as_of[:7], "M")
    start = pd.PeriodIndex(acc["contract_start"].str[:7], freq="M")
    churned = acc["churn_date"].notna().to_numpy()
    end = np.where(churned, [(pd.Period(d[:7], "M") - start[0]).n if isinstance(d, str) else 0
                             for d in acc["churn_date"]], 0)
    end = np.where(churned, end, (last - start[0]).n)
    first = np.array([(s - start[0]).n for s in start])
    n = end - first + 1
    rows = pd.DataFrame({
        "account_id": np.repeat(acc["account_id"].to_numpy(), n),
        "tenure": np.concatenate([np.arange(k) for k in n]),
    })
    rows["month"] = [str(p) for p in (start[0] + np.repeat(first, n) + rows["tenure"].to_numpy())]
    rows["churn"] = (np.repeat(churned, n) & (rows["tenure"].to_numpy() == np.repeat(n - 1, n))).astype(int)
    for c in ("segment", "contract_type", "onboarding_completed", "welcome_webinar_attendance"):
        rows[c] = np.repeat(acc[c].to_numpy(), n)

    rev = tables["revenue"]
    mrr = rev.groupby(["account_id", "month"])["mrr"].sum().rename("mrr")
    rows = rows.merge(mrr, on=["account_id", "month"], how="left").fillna({"mrr": 0.0})
    rows["mrr_prev"] = rows.groupby("account_id")["mrr"].shift(1).fillna(0.0)
    new_product = rev.sort_values("month").drop_duplicates(["account_id", "product"])
    new_product = new_product.groupby(["account_id", "month"]).size().rename("new_products")
    rows = rows.merge(new_product, on=["account_id", "month"], how="left").fillna({"new_products": 0})
    rows["cross_sell"] = ((rows["new_products"] > 0) & (rows["tenure"] > 0)).astype(int)
    rows["expansion"] = ((rows["mrr"] > rows["mrr_prev"]) & (rows["mrr_prev"] > 0)).astype(int)
    rows["contraction"] = ((rows["mrr"] > 0) & (rows["mrr"] < rows["mrr_prev"])).astype(int)
    ref = acc.dropna(subset=["referred_by"]).assign(month=lambda d: d["contract_start"].str[:7])
    ref = ref.groupby(["referred_by", "month"]).size().rename("referrals")
    rows = rows.merge(ref.rename_axis(["account_id", "month"]), on=["account_id", "month"], how="left")
    rows["referrals"] = rows["referrals"].fillna(0).astype(int)

    kpis = tables["kpis"].copy()
    if "nps" in tables:
        nps = tables["nps"].assign(month=lambda d: d["date"].str[:7])
        agg = nps.groupby(["account_id", "month"])["score"].agg(["sum", "count"]).reset_index()
        kpis = kpis.merge(agg, on=["account_id", "month"], how="left").fillna({"sum": 0, "count": 0})
        roll = kpis.groupby("account_id")[["sum", "count"]].rolling(12, min_periods=1).sum()
        roll = roll.reset_index(level=0, drop=True)
        kpis["nps"] = (roll["sum"] / roll["count"].where(roll["count"] > 0)).to_numpy()
        kpis = kpis.drop(columns=["sum", "count"])
    rows = rows.merge(kpis, on=["account_id", "month"], how="left")
    return rows


def lagged(panel: pd.DataFrame, cols: list[str], lag: int = 1) -> pd.DataFrame:
    return panel.groupby("account_id")[cols].shift(lag).astype(float)


def at_risk(panel: pd.DataFrame) -> pd.Series:
    return (panel["tenure"] >= 1) & ((panel["contract_type"] == "monthly") | (panel["tenure"] % 12 == 0))


def eligible(panel: pd.DataFrame) -> pd.Series:
    return (panel["tenure"] > 0) & (panel["mrr_prev"] > 0) & (panel["churn"] == 0)


# ---------------------------------------------------------------------------------------------------
# Determinism and the data contract
# ---------------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_files_and_truth(tmp_path):
    a = S.simulate_client(400, 12, seed=3, mc_paths=20)
    b = S.simulate_client(400, 12, seed=3, mc_paths=20)
    c = S.simulate_client(400, 12, seed=4, mc_paths=20)
    for sim, name in ((a, "a"), (b, "b"), (c, "c")):
        sim.write(tmp_path / name)
    for f in ("accounts.csv", "revenue.csv", "kpis.csv", "nps.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()
    pd.testing.assert_frame_equal(a.truth.future, b.truth.future)
    pd.testing.assert_frame_equal(a.truth.effects, b.truth.effects)
    pd.testing.assert_frame_equal(a.truth.potential(), b.truth.potential())
    # the Monte Carlo runs after the tables are drawn: mc_paths never changes them
    d = S.simulate_client(400, 12, seed=3, mc_paths=0)
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], d.tables[name])
    pd.testing.assert_frame_equal(a.truth.future.drop(columns="churn_prob"), d.truth.future.drop(columns="churn_prob"))


def test_without_nps_or_referrals():
    sim = S.simulate_client(300, 12, seed=1, with_nps=False, with_referrals=False, mc_paths=0)
    assert list(sim.tables) == ["accounts", "revenue", "kpis"]
    assert sim.tables["accounts"]["referred_by"].isna().all() and len(sim.tables["accounts"]) == 300
    assert "nps" not in set(sim.truth.effects["kpi"]) and "nps" not in set(sim.truth.potential()["kpi"])
    assert sim.truth.future["churn_prob"].isna().all()


def test_tables_have_the_contract_columns_and_string_keys(sim):
    t = sim.tables
    assert sim.as_of == "2026-06-01"
    assert list(t["accounts"].columns) == [
        "account_id", "company_name", "contract_start", "churn_date", "segment", "plan", "contract_type",
        "referred_by", "health_score", "onboarding_completed", "welcome_webinar_attendance"]
    assert list(t["revenue"].columns) == ["account_id", "month", "mrr", "product"]
    assert list(t["kpis"].columns) == ["account_id", "month"] + S.MONTHLY_KPIS
    assert list(t["nps"].columns) == ["account_id", "date", "score", "role"]
    catalogue = set(CATALOGUE_NAMES)
    assert set(S.MONTHLY_KPIS) | set(S.STATIC_KPIS) == catalogue - {"contract_months"}
    acc = t["accounts"]
    assert acc["account_id"].is_unique and acc["account_id"].str.fullmatch(r"A\d{5}").all()
    for col in ("contract_start", "churn_date"):
        assert acc[col].dropna().map(lambda s: isinstance(s, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", s)).all()
    for name in ("revenue", "kpis"):
        assert t[name]["month"].map(lambda s: isinstance(s, str) and re.fullmatch(r"\d{4}-\d{2}", s)).all()
        assert t[name]["account_id"].isin(acc["account_id"]).all()
    assert t["nps"]["date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert set(acc["segment"]) == {"SMB", "Mid", "Enterprise"} and set(acc["plan"]) == {"Basic", "Pro"}
    assert set(acc["contract_type"]) == {"monthly", "annual"}
    assert acc["company_name"].str.contains("会社").mean() > 0.9
    assert t["revenue"]["month"].max() == sim.as_of[:7] == t["kpis"]["month"].max()


def test_revenue_stops_before_the_churn_month_and_annual_churn_only_at_anniversaries(sim, panel):
    acc = sim.tables["accounts"].set_index("account_id")
    rev = sim.tables["revenue"]
    start = rev["account_id"].map(acc["contract_start"]).str[:7]
    churn = rev["account_id"].map(acc["churn_date"]).str[:7]
    assert (rev["month"] >= start).all()
    assert not (churn.notna() & (rev["month"] >= churn)).any()
    assert (rev["mrr"] > 0).all() and (rev["mrr"] % 1000 == 0).all()
    # every account pays in every month from its start month to the month before churn (or as_of)
    paying = panel[panel["churn"] == 0]
    assert (paying["mrr"] > 0).all()
    assert (panel.loc[panel["churn"] == 1, "mrr"] == 0).all()
    ann = panel[(panel["churn"] == 1) & (panel["contract_type"] == "annual")]
    assert len(ann) > 20 and ((ann["tenure"] % 12 == 0) & (ann["tenure"] > 0)).all()
    assert (panel.loc[panel["churn"] == 1, "tenure"] >= 1).all()
    chd = acc["churn_date"].dropna()
    assert (chd >= acc.loc[chd.index, "contract_start"]).all()


def test_referred_accounts_exist_and_start_after_their_referrer(sim):
    acc = sim.tables["accounts"].set_index("account_id")
    ref = acc["referred_by"].dropna()
    assert 0.03 < len(ref) / len(acc) < 0.15
    assert ref.isin(acc.index).all()
    assert (
        acc.loc[ref.index, "contract_start"].str[:7].to_numpy()
        > acc.loc[ref.to_numpy(), "contract_start"].str[:7].to_numpy()
    ).all()
    # the referrer is still a customer in the month its referral starts
    churn = acc.loc[ref.to_numpy(), "churn_date"].str[:7].reset_index(drop=True)
    started = acc.loc[ref.index, "contract_start"].str[:7].reset_index(drop=True)
    assert (churn.isna() | (started < churn)).all()


def test_kpi_values_respect_their_scales_and_gaps(sim):
    k = sim.tables["kpis"]
    values = k[S.MONTHLY_KPIS].astype(float)
    share_missing = values.isna().mean()
    assert share_missing.between(0.005, 0.015).all()
    for name in S.MONTHLY_KPIS:
        v = values[name].dropna()
        spec = DEFAULT_CATALOGUE[name]
        assert v.min() >= spec.lower and v.max() <= spec.upper, name
        if name not in S.FLOAT_KPIS:
            assert (v == np.round(v)).all(), name
    assert values["licenses"].min() >= 1
    assert values["csat"].dropna().between(1, 5).all()
    both = values[["active_users", "licenses"]].dropna()
    assert (both["active_users"] <= both["licenses"]).all()
    assert values["session_seconds"].skew() > 1
    acc = sim.tables["accounts"]
    assert set(acc["onboarding_completed"]) == {0, 1}
    active = acc["churn_date"].isna()
    assert acc.loc[active, "health_score"].between(0, 100).all() and acc.loc[~active, "health_score"].isna().all()
    nps = sim.tables["nps"]
    assert nps["score"].between(0, 10).all() and set(nps["role"]) == {"decision_maker", "admin", "end_user"}
    assert nps.groupby("role")["score"].mean()["decision_maker"] < nps.groupby("role")["score"].mean()["end_user"]


# ---------------------------------------------------------------------------------------------------
# Planted rates and correlations
# ---------------------------------------------------------------------------------------------------

def test_event_rates_are_realistic(panel):
    monthly = panel[(panel["contract_type"] == "monthly") & (panel["tenure"] >= 1)]
    annual = panel[(panel["contract_type"] == "annual") & (panel["tenure"] > 0) & (panel["tenure"] % 12 == 0)]
    e = panel[eligible(panel)]
    assert 0.015 <= monthly["churn"].mean() <= 0.025
    assert 0.11 <= annual["churn"].mean() <= 0.21  # seeds 0-7: 14-20%, mean 16%; ~430 decisions: SE 1.8 points
    assert 0.025 <= e["expansion"].mean() <= 0.04
    assert 0.01 <= e["contraction"].mean() <= 0.02
    assert 0.2 <= e["cross_sell"].sum() / e["expansion"].sum() <= 0.4
    assert 100 <= (e["referrals"] > 0).sum() <= 400


def test_expansion_and_contraction_sizes_are_the_planted_constants(panel):
    """The truth's projection uses g_e = E[U(0.1, 0.5)] = 0.3 and g_d = E[U(0.1, 0.4)] = 0.25."""
    e = panel[eligible(panel)]
    up = e.loc[e["expansion"] == 1]
    down = e.loc[e["contraction"] == 1]
    g_e = ((up["mrr"] - up["mrr_prev"]) / up["mrr_prev"]).mean()
    g_d = ((down["mrr_prev"] - down["mrr"]) / down["mrr_prev"]).mean()
    assert abs(g_e - 0.3) < 0.015 and abs(g_d - 0.25) < 0.015
    first = panel[panel["tenure"] == 0]
    assert abs(first["mrr"].mean() / S.expected_first_mrr() - 1) < 0.05
    assert S.expected_first_mrr() == pytest.approx(
        0.6 * 16.5 * (0.7 * 3000 + 0.3 * 9000) + 0.3 * 27.5 * (0.5 * 3000 + 0.5 * 9000)
        + 0.1 * 42.5 * (0.2 * 5000 + 0.8 * 14000))


def test_proxies_track_their_driver_and_noise_does_not(sim, panel):
    cols = S.MONTHLY_KPIS + S.STATIC_KPIS + ["nps"]
    r = panel[cols].astype(float).corr()
    for proxy, driver in (("session_seconds", "login_days"), ("manual_views", "cs_site_visits"), ("nps", "csat")):
        assert 0.6 <= r.at[proxy, driver] <= 0.75, (proxy, r.at[proxy, driver])
    eff = sim.truth.effects
    for outcome in ("churn", "expansion", "downgrade", "referral"):
        e = eff[eff["outcome"] == outcome].set_index("kpi")
        drivers = list(e.index[e["role"] == "driver"])
        closest = r.loc[:, drivers].drop(index=drivers).abs().max(axis=1)
        assert (closest[e.index[e["role"] == "proxy"]] >= 0.6).all(), outcome
        assert (closest[e.index[e["role"] == "noise"]] < 0.6).all(), outcome


def test_beta_sd_is_beta_unit_times_the_empirical_sd(sim, panel):
    eff = sim.truth.effects
    assert len(eff) == 27 * 5 and eff.groupby("outcome").size().eq(27).all()
    sd = panel[S.MONTHLY_KPIS + S.STATIC_KPIS + ["nps"]].astype(float).std()
    np.testing.assert_allclose(eff["sd"], sd[eff["kpi"]].to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(eff["beta_sd"], eff["beta_unit"] * sd[eff["kpi"]].to_numpy(), rtol=1e-10)
    churn = eff[eff["outcome"] == "churn"].set_index("kpi")
    renewal = eff[eff["outcome"] == "renewal"].set_index("kpi")
    np.testing.assert_array_equal(renewal["beta_unit"], -churn["beta_unit"])
    assert (renewal["role"] == churn["role"]).all()
    assert churn.at["login_days", "beta_unit"] == pytest.approx(-0.5 / S.SCALE["login_days"])
    assert (eff.loc[eff["role"] != "driver", "beta_unit"] == 0).all()
    assert set(eff["link"]) == {"cloglog"}
    assert (
        churn.at["nps", "role"] == "proxy"
        and eff.set_index(["kpi", "outcome"]).at[("nps", "expansion"), "role"] == "noise"
    )


# ---------------------------------------------------------------------------------------------------
# The planted hazards are what a correctly specified model recovers from the tables
# ---------------------------------------------------------------------------------------------------

@dataclass
class Fit:
    params: pd.Series
    bse: pd.Series


def newton_cloglog(X: pd.DataFrame, y: pd.Series) -> Fit:
    """Binomial GLM with the cloglog link by IRLS; SEs from the expected information, as
    statsmodels' GLM reports them (checked against it below). X'WX is formed with einsum: threaded
    BLAS on a shared 2-core machine made statsmodels' own fit 20x slower."""
    x, yv = X.to_numpy(float), y.to_numpy(float)
    eta = np.log(-np.log1p(-(yv + 0.5) / 2))  # the usual GLM start, mu = (y + 1/2) / 2
    beta = np.zeros(x.shape[1])
    for _ in range(100):
        mu = np.clip(-np.expm1(-np.exp(eta)), 1e-12, 1 - 1e-12)
        dmu = np.exp(eta - np.exp(eta))
        w = dmu**2 / (mu * (1 - mu))
        info = np.einsum("ij,ik->jk", x * w[:, None], x)
        new = np.linalg.solve(info, np.einsum("ij,i->j", x, w * (eta + (yv - mu) / dmu)))
        eta = np.einsum("ij,j->i", x, new)
        done = np.max(np.abs(new - beta)) < 1e-10
        beta = new
        if done:
            break
    mu = np.clip(-np.expm1(-np.exp(eta)), 1e-12, 1 - 1e-12)
    w = np.exp(eta - np.exp(eta)) ** 2 / (mu * (1 - mu))
    info = np.einsum("ij,ik->jk", x * w[:, None], x)
    se = np.sqrt(np.diag(np.linalg.inv(info)))
    return Fit(pd.Series(beta, index=X.columns), pd.Series(se, index=X.columns))


def fit_cloglog(panel: pd.DataFrame, rows: pd.Series, y: pd.Series, kpis: list[str], annual: bool = False) -> Fit:
    """Cloglog GLM on lagged KPIs standardised by their SD on the fitted rows, log1p(tenure), segment
    dummies (and contract type for churn): the planted model's own form."""
    x = lagged(panel, [k for k in kpis if k not in S.STATIC_KPIS])
    for k in S.STATIC_KPIS:
        if k in kpis:
            x[k] = panel[k].astype(float)
    x = x[rows]
    x = (x - x.mean()) / x.std()
    x["log1p_tenure"] = np.log1p(panel.loc[rows, "tenure"])
    x["mid"] = (panel.loc[rows, "segment"] == "Mid").astype(float)
    x["enterprise"] = (panel.loc[rows, "segment"] == "Enterprise").astype(float)
    if annual:
        x["annual"] = (panel.loc[rows, "contract_type"] == "annual").astype(float)
    ok = x.notna().all(axis=1)
    return newton_cloglog(sm.add_constant(x[ok]), y[rows][ok])


def test_the_fitting_instrument_agrees_with_statsmodels(panel):
    rows = at_risk(panel) & (panel["account_id"] < "A00600")
    kpis = ["login_days", "csat", "support_inquiries", "onboarding_completed", "faq_views"]
    ours = fit_cloglog(panel, rows, panel["churn"], kpis, annual=True)
    x = lagged(panel, kpis[:3] + ["faq_views"])
    x["onboarding_completed"] = panel["onboarding_completed"].astype(float)
    x = x[rows][kpis]
    x = (x - x.mean()) / x.std()
    x["log1p_tenure"] = np.log1p(panel.loc[rows, "tenure"])
    x["mid"] = (panel.loc[rows, "segment"] == "Mid").astype(float)
    x["enterprise"] = (panel.loc[rows, "segment"] == "Enterprise").astype(float)
    x["annual"] = (panel.loc[rows, "contract_type"] == "annual").astype(float)
    ok = x.notna().all(axis=1)
    ref = sm.GLM(panel.loc[rows, "churn"][ok].astype(float), sm.add_constant(x[ok]),
                 family=sm.families.Binomial(sm.families.links.CLogLog())).fit(tol=1e-12)
    np.testing.assert_allclose(ours.params, ref.params[ours.params.index], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.bse, ref.bse[ours.params.index], rtol=1e-5)


OUTCOME_ROWS = {
    "churn": (at_risk, lambda p: p["churn"], True),
    "expansion": (eligible, lambda p: p["expansion"], False),
    "downgrade": (eligible, lambda p: p["contraction"], False),
    "referral": (eligible, lambda p: (p["referrals"] > 0).astype(int), False),
}


def test_planted_effects_are_recovered_by_a_multivariable_cloglog_fit(sim, panel):
    """All 25 KPIs at once (licenses_basic left out: licenses = basic + pro exactly). Measured over seeds
    0-7: z = (estimate - truth) / SE has mean 0.0 and SD 1.0-1.1 for drivers, proxies and noise alike."""
    kpis = [k for k in S.MONTHLY_KPIS if k != "licenses_basic"] + S.STATIC_KPIS
    eff = sim.truth.effects
    z_all = []
    for outcome, (rows_of, y_of, annual) in OUTCOME_ROWS.items():
        fit = fit_cloglog(panel, rows_of(panel), y_of(panel), kpis, annual)
        truth = eff[eff["outcome"] == outcome].set_index("kpi")["beta_sd"][kpis]
        z = (fit.params[kpis] - truth) / fit.bse[kpis]
        for k in S.BETA_SD[outcome]:
            assert abs(z[k]) < 3.5, (outcome, k, fit.params[k], truth[k])
            assert np.sign(fit.params[k]) == np.sign(truth[k]) and abs(fit.params[k] / fit.bse[k]) > 3, (outcome, k)
        tenure_z = (fit.params["log1p_tenure"] - S.TENURE[outcome]) / fit.bse["log1p_tenure"]
        assert abs(tenure_z) < 3.5, (outcome, fit.params["log1p_tenure"])
        if annual:
            gap = S.INTERCEPT["churn_annual"] - S.INTERCEPT["churn_monthly"]
            assert abs(fit.params["annual"] - gap) < 3.5 * fit.bse["annual"]
        z_all += list(z.drop(list(S.BETA_SD[outcome])))
    z_all = np.asarray(z_all)
    assert np.mean(np.abs(z_all) > 3) <= 0.03
    assert 0.8 < np.std(z_all) < 1.3


def test_options_plant_a_segment_only_effect_and_a_threshold():
    """segment_only: support inquiries' churn term acts in SMB only; login_threshold: churn falls with
    login days up to the threshold and is flat above. A cloglog fit on the tables with the planted form
    (support × SMB, support × other segments, max(0, 5 − login days), login days above 5) recovers it."""
    sim = S.simulate_client(3000, 24, seed=2, mc_paths=0, segment_only=[("support_inquiries", "SMB")],
                            login_threshold=5)
    panel = build_panel(sim.tables, sim.as_of)
    rows = at_risk(panel)
    x = lagged(panel, ["login_days", "csat", "support_inquiries"])
    smb = (panel["segment"] == "SMB").to_numpy()
    d = sim.truth.design
    X = pd.DataFrame(
        {
            "below": np.maximum(0, 5 - x["login_days"]),
            "above": np.maximum(0, x["login_days"] - 5) / 6.9,
            "csat": (x["csat"] - d["centre"]["csat"]) / d["scale"]["csat"],
            "support_smb": np.where(smb, x["support_inquiries"] - 2.0, 0.0) / 1.8,
            "support_other": np.where(smb, 0.0, x["support_inquiries"] - 2.0) / 1.8,
            "onboarding": (panel["onboarding_completed"] - 0.7) / 0.46,
            "log1p_tenure": np.log1p(panel["tenure"]),
            "mid": (panel["segment"] == "Mid").astype(float),
            "enterprise": (panel["segment"] == "Enterprise").astype(float),
            "annual": (panel["contract_type"] == "annual").astype(float),
        }
    )[rows]
    ok = X.notna().all(axis=1)
    fit = newton_cloglog(sm.add_constant(X[ok]), panel["churn"][rows][ok])
    planted = {"below": S.THRESHOLD_SLOPE, "above": 0.0, "csat": -0.35, "support_smb": 0.35, "support_other": 0.0}
    for k, b in planted.items():
        assert abs(fit.params[k] - b) < 3.5 * fit.bse[k], (k, fit.params[k], fit.bse[k])
    assert fit.params["support_smb"] / fit.bse["support_smb"] > 4 and fit.params["below"] / fit.bse["below"] > 4
    eff = sim.truth.effects.set_index(["kpi", "outcome"])
    assert eff.loc[("support_inquiries", "churn"), "segment"] == "SMB"
    assert eff.loc[("login_days", "churn"), "shape"] == "threshold"
    assert eff.loc[("csat", "churn"), ["segment", "shape"]].tolist() == ["", "linear"]


def test_true_potential_of_a_segment_only_driver_counts_its_segment_only(monkeypatch):
    """The true Δ of support inquiries under segment_only = the default process's Δ on the SMB accounts
    + on the other accounts the Δ of a process without support's churn term (its downgrade term stays),
    on the same snapshot and the same δ (10% of the mean over all active accounts)."""
    sim = S.simulate_client(800, 18, seed=4, mc_paths=0, segment_only=[("support_inquiries", "SMB")])
    snap = sim.truth.snapshot
    only = S.true_potential(snap, options=sim.truth.options).set_index("kpi").loc["support_inquiries"]
    delta = -0.1 * snap["support_inquiries"].mean()

    def change(part):
        x = {k: part[k].to_numpy(float) for k in S.CENTRE}
        moved = dict(x, support_inquiries=np.clip(x["support_inquiries"] + delta, 0, None))
        base, scen = S._project(part, x, 0.0, 12, 36, 1.0), S._project(part, moved, 0.0, 12, 36, 1.0)
        return {c: scen[c] - base[c] for c in base}

    smb = change(snap[snap["segment"] == "SMB"])
    monkeypatch.setitem(S.BETA_SD["churn"], "support_inquiries", 0.0)
    other = change(snap[snap["segment"] != "SMB"])
    for c in ("ltv", "churn", "downgrade", "expansion"):
        assert only[f"d_{c}"] == pytest.approx(smb[c] + other[c], rel=1e-9, abs=1e-6), c
    assert only["d_churn"] < 0


def test_nps_is_a_proxy_of_csat_with_no_effect_of_its_own(panel):
    rows = at_risk(panel) & panel.groupby("account_id")["nps"].shift(1).notna()
    alone = fit_cloglog(panel, rows, panel["churn"], ["nps"], annual=True)
    assert alone.params["nps"] / alone.bse["nps"] < -3
    kpis = ["nps", "csat", "login_days", "support_inquiries", "onboarding_completed"]
    both = fit_cloglog(panel, rows, panel["churn"], kpis, annual=True)
    assert abs(both.params["nps"] / both.bse["nps"]) < 2.5
    assert both.params["csat"] / both.bse["csat"] < -2


# ---------------------------------------------------------------------------------------------------
# The future: realised churn and its true probability
# ---------------------------------------------------------------------------------------------------

def test_future_covers_the_active_accounts(sim):
    fut = sim.truth.future
    acc = sim.tables["accounts"]
    assert list(fut.columns) == ["account_id", "mrr", "churned", "churn_prob"]
    assert set(fut["account_id"]) == set(acc.loc[acc["churn_date"].isna(), "account_id"])
    last = sim.tables["revenue"].loc[lambda r: r["month"] == sim.as_of[:7]].groupby("account_id")["mrr"].sum()
    assert (fut.set_index("account_id")["mrr"] == last.reindex(fut["account_id"]).to_numpy()).all()
    assert fut["churn_prob"].between(0, 1).all() and set(fut["churned"]) == {0, 1}


def test_churn_prob_matches_realised_churn_over_seeds(sim):
    futures = [sim.truth.future] + [S.simulate_client(2000, 24, seed=s).truth.future for s in (1, 2)]
    fut = pd.concat(futures, ignore_index=True)
    p, y = fut["churn_prob"].to_numpy(), fut["churned"].to_numpy()
    se = np.sqrt((p * (1 - p)).sum()) / len(p)
    assert abs(y.mean() - p.mean()) < 3 * se
    # calibration by quintile of the true probability
    q = pd.qcut(p, 5, labels=False)
    for k in range(5):
        pk, yk = p[q == k], y[q == k]
        assert abs(yk.mean() - pk.mean()) < 3.5 * np.sqrt((pk * (1 - pk)).sum()) / len(pk) + 1e-3, k
    assert p[q == 4].mean() > 3 * p[q == 0].mean()


@pytest.mark.parametrize("lag", [1, 2])
def test_churn_prob_is_the_closed_form_when_the_horizon_is_the_lag(lag):
    """With horizon = lag the KPIs that drive the horizon's hazards are all observed by as_of: no
    randomness is left, and churn_prob must equal 1 - prod_h (1 - p_h) computed from the tables."""
    sim = S.simulate_client(600, 18, seed=9, horizon_months=lag, lag=lag, mc_paths=5)
    d = sim.truth.design
    acc = sim.tables["accounts"].set_index("account_id")
    kpis = (
        sim.tables["kpis"].set_index(["account_id", "month"])[["login_days", "csat", "support_inquiries"]].astype(float)
    )
    fut = sim.truth.future.set_index("account_id")
    a = acc.loc[fut.index]
    last = pd.Period(sim.as_of[:7], "M")
    tenure0 = np.array([(last - pd.Period(s[:7], "M")).n for s in a["contract_start"]])
    annual = (a["contract_type"] == "annual").to_numpy()
    survival = np.ones(len(fut))
    complete = np.ones(len(fut), bool)
    for h in range(1, lag + 1):
        month = str(last + h - lag)
        x = kpis.reindex(pd.MultiIndex.from_arrays([fut.index, [month] * len(fut)]))
        tenure = tenure0 + h
        eta = np.where(annual, d["intercept"]["churn_annual"], d["intercept"]["churn_monthly"])
        eta = (
            eta + d["tenure"]["churn"] * np.log(1 + tenure) + a["segment"].map(d["segment_effect"]["churn"]).to_numpy()
        )
        for k, b in d["beta_sd"]["churn"].items():
            v = a[k].to_numpy(float) if k == "onboarding_completed" else x[k].to_numpy()
            eta = eta + b * (v - d["centre"][k]) / d["scale"][k]
        decides = (tenure >= lag) & (~annual | (tenure % 12 == 0))
        complete &= ~decides | x.notna().all(axis=1).to_numpy()
        survival *= np.where(decides, np.exp(-np.exp(np.where(decides, eta, 0.0))), 1.0)
    assert complete.sum() > 300 and (survival[complete] < 1).sum() > 300
    np.testing.assert_allclose(fut["churn_prob"].to_numpy()[complete], 1 - survival[complete], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# The true improvement potential
# ---------------------------------------------------------------------------------------------------

def test_potential_signs_and_exact_zeros(sim):
    pot = sim.truth.potential().set_index("kpi")
    eff = sim.truth.effects
    assert list(pot.index) == CATALOGUE_NAMES + ["nps"]
    cols = ["d_ltv", "d_expansion", "d_new", "d_downgrade", "d_churn"]
    for k in S.BETA_SD["churn"]:
        assert pot.at[k, "d_churn"] < 0 and pot.at[k, "d_ltv"] > 0, k
    for k in S.BETA_SD["expansion"]:
        assert pot.at[k, "d_expansion"] > 0 and pot.at[k, "d_ltv"] > 0, k
    for k in S.BETA_SD["downgrade"]:
        assert pot.at[k, "d_downgrade"] < 0 and pot.at[k, "d_ltv"] > 0, k
    for k in S.BETA_SD["referral"]:
        assert pot.at[k, "d_new"] > 0, k
    assert pot.at["contract_months", "d_churn"] < 0
    driven = set(eff.loc[eff["role"] == "driver", "kpi"])
    others = [k for k in pot.index if k not in driven and k != "contract_months"]
    assert len(others) == 27 - 8
    assert (pot.loc[others, cols] == 0).all().all()
    # a driver of one outcome only moves that outcome (and LTV, churn loss through the MRR path)
    assert pot.at["cs_site_visits", "d_new"] == 0 and pot.at["login_days", "d_new"] != 0


def _last3(kpis: pd.DataFrame, account: str, col: str) -> float:
    v = kpis.loc[kpis["account_id"] == account, col].dropna().astype(float)
    return float(v.tail(3).mean())


def test_potential_equals_a_plain_loop_over_accounts_and_months():
    """An independent, account-by-account, month-by-month version of the projection."""
    sim = S.simulate_client(150, 15, seed=5, mc_paths=0)
    d = sim.truth.design
    acc = sim.tables["accounts"].set_index("account_id")
    kpis = sim.tables["kpis"]
    last = pd.Period(sim.as_of[:7], "M")
    active = list(acc.index[acc["churn_date"].isna()])
    mrr = sim.tables["revenue"].loc[lambda r: r["month"] == sim.as_of[:7]].groupby("account_id")["mrr"].sum()
    drivers = sorted({k for b in d["beta_sd"].values() for k in b})
    x = {a: {k: (float(acc.at[a, k]) if k in S.STATIC_KPIS else _last3(kpis, a, k)) for k in drivers} for a in active}
    snap = sim.truth.snapshot.set_index("account_id")
    for a in active:
        for k in drivers:
            assert snap.at[a, k] == pytest.approx(x[a][k]), (a, k)
    H, L = 12, 36

    def hazard(outcome, xa, tenure, seg, ann):
        e = (
            d["intercept"][outcome]
            if outcome != "churn"
            else d["intercept"]["churn_annual" if ann else "churn_monthly"]
        )
        e += d["tenure"][outcome] * np.log1p(tenure) + d["segment_effect"][outcome][seg]
        e += sum(b * (xa[k] - d["centre"][k]) / d["scale"][k] for k, b in d["beta_sd"][outcome].items())
        return 1 - np.exp(-np.exp(e))

    def totals(xs, shift=0.0):
        out = dict.fromkeys(["ltv", "expansion", "new", "downgrade", "churn"], 0.0)
        for a in active:
            ten0 = (last - pd.Period(acc.at[a, "contract_start"][:7], "M")).n
            seg, ann = acc.at[a, "segment"], acc.at[a, "contract_type"] == "annual"
            s, m = 1.0, float(mrr[a])
            for h in range(1, L + 1):
                ten = ten0 + h
                pc = hazard("churn", xs[a], ten + shift, seg, ann) if (not ann or ten % 12 == 0) else 0.0
                pe, pd_, pr = (hazard(o, xs[a], ten + shift, seg, ann) for o in ("expansion", "downgrade", "referral"))
                s_new = s * (1 - pc)
                if h <= H:
                    out["churn"] += (s - s_new) * m
                    out["expansion"] += s_new * pe * d["g_expansion"] * m
                    out["downgrade"] += s_new * pd_ * d["g_downgrade"] * m
                    out["new"] += s_new * pr * d["first_mrr"]
                m = m * (1 + pe * d["g_expansion"] - pd_ * d["g_downgrade"])
                out["ltv"] += s_new * m
                s = s_new
        return out

    base = totals(x)
    pot = sim.truth.potential(10, H, L, 1.0).set_index("kpi")
    for k in ("login_days", "support_inquiries", "active_user_rate", "community_posts", "onboarding_completed"):
        spec = DEFAULT_CATALOGUE[k]
        delta = spec.direction * 0.1 * np.mean([x[a][k] for a in active])
        upper = 1.0 if k == "onboarding_completed" else spec.upper  # a 0/1 flag stays within [0, 1]

        def moved(a, k=k, delta=delta, spec=spec, upper=upper):
            if k in S.STATIC_KPIS:
                return min(max(x[a][k] + delta, spec.lower), upper)
            months = kpis.loc[kpis["account_id"] == a, k].dropna().astype(float).tail(3)
            return x[a][k] + float(np.mean([min(max(v + delta, spec.lower), upper) - v for v in months]))

        xs = {a: dict(x[a], **{k: moved(a)}) for a in active}
        scen = totals(xs)
        for c in base:
            assert pot.at[k, f"d_{c}"] == pytest.approx(scen[c] - base[c], rel=1e-7, abs=1e-6), (k, c)
    tenure_mean = np.mean([(last - pd.Period(acc.at[a, "contract_start"][:7], "M")).n for a in active])
    scen = totals(x, shift=0.1 * tenure_mean)
    assert pot.at["contract_months", "d_churn"] == pytest.approx(scen["churn"] - base["churn"], rel=1e-7)


# ---------------------------------------------------------------------------------------------------
# The demo client and the command line
# ---------------------------------------------------------------------------------------------------

def test_demo_data_is_what_the_documented_command_writes(tmp_path):
    demo = ROOT / "data" / "demo"
    readme = (demo / "README.md").read_text(encoding="utf-8")
    assert "python -m cskit.simulate --accounts 1200 --months 30 --seed 7 --start 2024-01 --out data/demo" in readme
    args = "--accounts 1200 --months 30 --seed 7 --start 2024-01".split() + ["--out", str(tmp_path)]
    assert S.main(args) == 0
    total = 0
    for f in ("accounts.csv", "revenue.csv", "kpis.csv", "nps.csv"):
        assert (tmp_path / f).read_bytes() == (demo / f).read_bytes(), f
        total += (demo / f).stat().st_size
    assert total < 5_000_000
    rev = pd.read_csv(demo / "revenue.csv", dtype=str)
    acc = pd.read_csv(demo / "accounts.csv", dtype={"account_id": str})
    assert rev["month"].max() == "2026-06" and acc["contract_start"].min().startswith("2024-01")
    assert len(acc) == 1425 and len(rev) == 24880


def test_options_for_seasons_terms_and_late_windows_change_only_what_they_say():
    opts = S.Options(season_month=3, season_shock=1.0, seasonal_kpi="case_study_views", annual_terms=(6,),
                     window_start=10, active_only=True)
    sim = S.simulate_client(800, 30, seed=2, start="2023-04", mc_paths=0, options=opts)
    t = sim.tables
    first = "2024-02"  # month index 10 from 2023-04
    assert t["revenue"]["month"].min() == first and t["kpis"]["month"].min() == first
    assert (t["nps"]["date"].str[:7] >= first).all()
    acc = t["accounts"]
    assert not (acc["churn_date"].notna() & (acc["churn_date"].str[:7] < first)).any()  # active-only export
    assert (acc["contract_start"].str[:7] < first).mean() > 0.4
    # the seasonal noise KPI peaks in February (the month before the shock), by about exp(0.5 × 1.5)
    k = t["kpis"].assign(m=t["kpis"]["month"].str[5:7])
    means = k.groupby("m")["case_study_views"].mean()
    assert means["02"] > 1.7 * means.drop("02").max()
    # 6-month terms: annual churns at multiples of 6 months; March churns well above other months' rate
    churned = acc[acc["churn_date"].notna()]
    tenure = (pd.to_datetime(churned["churn_date"]).dt.to_period("M")
              - pd.to_datetime(churned["contract_start"]).dt.to_period("M")).apply(lambda p: p.n)
    assert (tenure[churned["contract_type"] == "annual"] % 6 == 0).all()
    assert sim.truth.design["season_month"] == 3 and (sim.truth.snapshot["term_months"].isin([1, 6])).all()


def test_command_line_structure_flags_reach_the_options(tmp_path):
    """``python -m cskit.simulate`` with the renewal, season, sustained-usage and late-window flags
    writes exactly what simulate_client writes with the same Options."""
    S.main(["--accounts", "150", "--months", "26", "--seed", "4", "--start", "2023-04", "--term-end-dates",
            "--fiscal-year-start", "4", "--season-month", "3", "--season-shock", "1.2", "--seasonal-kpi",
            "case_study_views", "--seasonal-peak", "3", "--recent-mean-annual", "--annual-terms", "12", "6",
            "--window-start", "6", "--active-only", "--out", str(tmp_path / "cli")])
    opts = S.Options(term_end_dates=True, fiscal_year_start=4, season_month=3, season_shock=1.2,
                     seasonal_kpi="case_study_views", seasonal_peak=3.0, recent_mean_annual=True,
                     annual_terms=(12, 6), window_start=6, active_only=True)
    S.simulate_client(150, 26, seed=4, start="2023-04", mc_paths=0, options=opts).write(tmp_path / "api")
    for name in ("accounts", "revenue", "kpis", "nps"):
        assert (tmp_path / "cli" / f"{name}.csv").read_bytes() == (tmp_path / "api" / f"{name}.csv").read_bytes()
