"""Kaplan–Meier and log-rank against closed forms and published reference output."""
import json

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_waltons
from scipy import stats

from cskit.metrics import cohort_retention
from cskit.params import Params
from cskit.survival import compute_survival, km_fit, lifetimes

# Freireich et al. (1963) 6-MP vs placebo remission times in weeks (Gehan 1965; MASS::gehan).
# R: survdiff(Surv(time, cens) ~ treat, data = gehan) → Chisq = 16.8 on 1 df, p = 4.17e-05
# (fastlogranktest's documented example prints 1.679294e+01 and 4.168809e-05);
# survfit medians: 6-MP 23 weeks, placebo 8 weeks (Kleinbaum & Klein, Survival Analysis, ch. 2).
T_6MP = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
E_6MP = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
T_PLACEBO = [1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17, 22, 23]


def panel_from(durations, events, **groups):
    """A panel with one row per account-month: tenure 0..duration, churn = 1 in the last row if event."""
    rows = []
    for i, (d, e) in enumerate(zip(durations, events)):
        for t in range(int(d) + 1):
            r = {"account_id": f"a{i:04d}", "tenure": t, "churn": int(e and t == d), "mrr": 10.0}
            rows.append(r | {k: v[i] for k, v in groups.items()})
    p = pd.DataFrame(rows)
    p["month"] = [pd.Timestamp("2020-01-01") + pd.DateOffset(months=int(t)) for t in p["tenure"]]
    for col in ("segment", "plan", "contract_type"):
        if col not in p:
            p[col] = "(none)"
    return p


def logrank_closed_form(durations, events, groups):
    """k-group log-rank χ² (Mantel–Haenszel): (O − E)ᵀ V⁻ (O − E) over the first k − 1 groups."""
    t, e, g = np.asarray(durations, float), np.asarray(events, int), np.asarray(groups)
    labels = sorted(set(g))
    o_minus_e = np.zeros(len(labels))
    v = np.zeros((len(labels), len(labels)))
    for time in np.unique(t[e == 1]):
        at_risk = t >= time
        n = at_risk.sum()
        d = ((t == time) & (e == 1)).sum()
        n_j = np.array([(at_risk & (g == lab)).sum() for lab in labels])
        d_j = np.array([((t == time) & (e == 1) & (g == lab)).sum() for lab in labels])
        o_minus_e += d_j - d * n_j / n
        if n > 1:
            p = n_j / n
            v += d * (n - d) / (n - 1) * (np.diag(p) - np.outer(p, p))
    k = len(labels) - 1
    return float(o_minus_e[:k] @ np.linalg.solve(v[:k, :k], o_minus_e[:k])), k


def test_km_product_limit_and_greenwood_loglog_interval_by_hand():
    # durations 1, 2, 2+, 3, 4, 4+, 5+, 6 (+ = still active): at risk 8, 7, 5, 4, 1
    # S(1) = 7/8, S(2) = 7/8·6/7 = 0.75, S(3) = 0.75·4/5 = 0.6, S(4) = 0.6·3/4 = 0.45, S(6) = 0.
    d = [1, 2, 2, 3, 4, 4, 5, 6]
    e = [1, 1, 0, 1, 1, 0, 0, 1]
    s = compute_survival(panel_from(d, e), None, Params())
    c = s.curves[s.curves.group_by == "all"].set_index("timeline")
    assert c.loc[[1.0, 2.0, 3.0, 4.0, 6.0], "survival"].tolist() == pytest.approx([7 / 8, 0.75, 0.6, 0.45, 0.0])
    # Greenwood: V(t) = Σ d/(n(n−d)); log(−log S) interval: S^exp(±1.96·sqrt(V)/log S)
    n_at, deaths = np.array([8, 7, 5, 4]), np.array([1, 1, 1, 1])
    surv = np.cumprod(1 - deaths / n_at)
    v = np.cumsum(deaths / (n_at * (n_at - deaths)))
    z = stats.norm.ppf(0.975)
    lo = surv ** np.exp(-z * np.sqrt(v) / np.log(surv))
    hi = surv ** np.exp(z * np.sqrt(v) / np.log(surv))
    assert c.loc[[1.0, 2.0, 3.0, 4.0], "ci_low"].to_numpy() == pytest.approx(np.minimum(lo, hi))
    assert c.loc[[1.0, 2.0, 3.0, 4.0], "ci_high"].to_numpy() == pytest.approx(np.maximum(lo, hi))
    m = s.medians.set_index("group_by").loc["all"]
    assert (m["accounts"], m["churned"], m["median"]) == (8, 5, 4.0)  # first t with S(t) ≤ 0.5
    # median CI: first t where each bound falls to ≤ 0.5; the upper bound stays above (0.5 not reached)
    times = np.array([1, 2, 3, 4])
    assert m["median_ci_low"] == times[np.argmax(np.minimum(lo, hi) <= 0.5)]
    # S(6) = 0: the interval is undefined there (NaN, as R's NA), so the upper bound never reaches 0.5
    assert np.maximum(lo, hi).min() > 0.5 and np.isinf(m["median_ci_high"])
    assert c.loc[6.0, ["ci_low", "ci_high"]].isna().all()


def test_gehan_medians_and_logrank_match_published_r_output():
    d = T_6MP + T_PLACEBO
    e = E_6MP + [1] * len(T_PLACEBO)
    g = ["6-MP"] * 21 + ["placebo"] * 21
    s = compute_survival(panel_from(d, e, segment=g), None, Params())
    med = s.medians.set_index(["group_by", "group"])["median"]
    assert med[("segment", "6-MP")] == 23 and med[("segment", "placebo")] == 8
    s12 = s.medians.set_index(["group_by", "group"])["survival_12m"]
    assert s12[("segment", "placebo")] == pytest.approx(4 / 21)  # 15, 17, 22, 23 still in remission
    assert s12[("segment", "6-MP")] == pytest.approx(18 / 21 * 16 / 17 * 14 / 15)  # events at 6, 7, 10
    lr = s.logrank.set_index("group_by").loc["segment"]
    assert lr["test_statistic"] == pytest.approx(16.79294, abs=1e-5)
    assert lr["p_value"] == pytest.approx(4.168809e-05, rel=1e-6)
    assert lr["degrees_of_freedom"] == 1
    assert lr["test_statistic"] == pytest.approx(logrank_closed_form(d, e, g)[0], rel=1e-10)


def test_waltons_median_and_logrank_against_lifelines_docs_and_closed_form():
    # lifelines docs (Introduction to survival analysis / Survival analysis with lifelines):
    # kmf.median_survival_time_ = 56.0; logrank miR-137 vs control: test_statistic 122.25.
    w = load_waltons()
    s = compute_survival(panel_from(w["T"], w["E"], segment=w["group"].tolist()), None, Params())
    assert s.medians.set_index("group_by").loc["all", "median"] == 56.0
    lr = s.logrank.set_index("group_by").loc["segment"]
    assert lr["test_statistic"] == pytest.approx(122.25, abs=0.005)
    assert lr["test_statistic"] == pytest.approx(logrank_closed_form(w["T"], w["E"], w["group"])[0], rel=1e-10)


def test_three_group_logrank_matches_closed_form():
    rng = np.random.default_rng(7)
    g = np.repeat(["Ent", "Mid", "SMB"], 40)
    d = rng.geometric(np.repeat([0.03, 0.06, 0.1], 40)) - 1
    cens = rng.integers(0, 30, size=120)
    e = (d <= cens).astype(int)
    d = np.minimum(d, cens)
    s = compute_survival(panel_from(d, e, segment=list(g)), None, Params())
    lr = s.logrank.set_index("group_by").loc["segment"]
    chi2, k = logrank_closed_form(d, e, g)
    assert lr["degrees_of_freedom"] == k == 2
    assert lr["test_statistic"] == pytest.approx(chi2, rel=1e-10)
    assert lr["p_value"] == pytest.approx(stats.chi2.sf(chi2, 2), rel=1e-8)
    assert list(lr["groups"]) == ["Ent", "Mid", "SMB"]


def test_lifetimes_from_contract_dates_and_groupings():
    from test_metrics import client  # the same hand-made client builder

    accounts = {
        "a": ("2024-01-15", "2024-04-03", "SMB"),  # churns in month 3 of its life
        "b": ("2024-02-01", None, "SMB"),  # active at as_of 2024-06: censored at 4
        "c": ("2024-06-10", "2024-06-20", "Mid"),  # starts and ends in June: T = 0
        "d": ("2023-12-01", None, "Mid"),  # censored at 6
    }
    revenue = [(a, "2024-06-01", 10) for a in "bd"] + [("d", "2023-12-01", 10)]  # the data window opens 2023-12
    data = client(accounts, revenue, "2024-06-01", static={"onboarding_completed": {"a": 0, "b": 1, "c": 0, "d": 3}})
    from cskit.panel import build_panel

    life = lifetimes(build_panel(data)).set_index("account_id")
    assert life["duration"].to_dict() == {"a": 3, "b": 4, "c": 0, "d": 6}
    assert life["churned"].to_dict() == {"a": 1, "b": 0, "c": 1, "d": 0}
    assert life["onboarding"].to_dict() == {
        "a": "not completed",
        "b": "completed",
        "c": "not completed",
        "d": "completed",
    }
    s = compute_survival(build_panel(data), data, Params())
    assert set(s.logrank["group_by"]) == {"segment", "onboarding"}  # plan and contract_type have 1 group
    # by onboarding: a (3, churn) and c (0, churn) → not completed: S(0) = 1/2, S(3) = 0
    c = s.curves[(s.curves.group_by == "onboarding") & (s.curves.group == "not completed")].set_index("timeline")
    assert c.loc[[0.0, 3.0], "survival"].tolist() == [0.5, 0.0]


def test_cohort_logo_retention_equals_km_for_one_complete_cohort():
    rng = np.random.default_rng(3)
    d = rng.integers(0, 12, size=50)
    e = (rng.random(50) < 0.7).astype(int)
    d = np.where(e == 1, d, 11)  # every non-churner observed to month 11 (as_of): one complete cohort
    p = panel_from(d, e)
    km = compute_survival(p, None, Params()).curves.set_index("timeline")["survival"]
    coh = cohort_retention(p, pd.Timestamp("2020-12-01")).set_index("months_since_start")["retention"]
    km_at = km.reindex(np.arange(12.0)).ffill().fillna(1.0)
    assert coh.to_numpy() == pytest.approx(km_at.to_numpy())


def test_write_dict_of_sections_reproducible(tmp_path):
    s = compute_survival(panel_from(T_PLACEBO, [1] * 21, segment=["x"] * 10 + ["y"] * 11), None, Params())
    s.write(tmp_path / "a")
    s.write(tmp_path / "b")
    assert (tmp_path / "a" / "survival.json").read_bytes() == (tmp_path / "b" / "survival.json").read_bytes()
    out = json.loads((tmp_path / "a" / "survival.json").read_text(encoding="utf-8"))
    assert set(out) == {"kaplan_meier", "logrank"}
    assert out["kaplan_meier"]["all"]["all"]["median_months"] == 8.0
    assert out["kaplan_meier"]["all"]["all"]["median_ci_low"] == 4.0


def test_accounts_seen_only_from_a_late_data_window_enter_the_curve_late():
    """Left truncation: with data from 2024-03, d (since 2023-12) is first seen at tenure 3 and a (ended
    2024-02) is never seen; Kaplan–Meier with delayed entry (by hand below) must not count d at risk
    before month 3."""
    from test_metrics import client

    from cskit.panel import build_panel, data_window

    accounts = {
        "a": ("2024-01-15", "2024-02-03", "SMB"),  # ended before the window: not observed
        "b": ("2024-03-01", "2024-05-03", "SMB"),  # churns at tenure 2
        "c": ("2024-03-10", None, "SMB"),  # censored at 3
        "d": ("2023-12-01", "2024-05-20", "SMB"),  # enters at 3, churns at 5
        "e": ("2023-12-01", None, "SMB"),  # enters at 3, censored at 6
    }
    revenue = [(a, "2024-03-01", 10) for a in "bcde"] + [(a, "2024-06-01", 10) for a in "ce"]
    data = client(accounts, revenue, "2024-06-01")
    life = lifetimes(build_panel(data)).set_index("account_id")
    assert list(life.index) == ["b", "c", "d", "e"]
    assert life["entry"].to_dict() == {"b": 0, "c": 0, "d": 3, "e": 3}
    kmf = km_fit(life.reset_index())
    # month 2: at risk b, c (d, e not yet seen) → S = 1/2; month 5: at risk d, e → S = 1/2 · 1/2
    s = kmf.survival_function_["KM_estimate"]
    assert s.loc[2.0] == pytest.approx(0.5) and s.loc[5.0] == pytest.approx(0.25)
    w = data_window(data)
    assert w["code"] == "left_truncation" and w["first_month"] == "2024-03"
    assert w["started_before_window"] == 3 and w["ended_before_window"] == 1 and not w["only_active_listed"]
