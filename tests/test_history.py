"""The health score over time (cskit.history) and "since the last diagnosis" (cskit.changes): the demo's
history reproduces the snapshot exactly, a planted engagement drop is found among the movers with its KPI
named first, the drop check recovers a planted odds ratio and agrees with statsmodels, a diagnosis
compared with itself reports no change, one compared with a run months earlier reports what happened."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cskit import narrative as N
from cskit.changes import beyond_noise, playbook_followup, results_folder, tier_changes
from cskit.errors import CskitError
from cskit.history import change_summary, drop_effect, drop_verdict, find_movers, score_changes
from cskit.pipeline import analyse

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    dx = analyse(dict(client="demo", data=str(ROOT / "data" / "demo"), as_of="2026-06-30", bootstrap=0))
    return dx, dx.write(out / "demo")


def test_demo_history_at_as_of_is_the_snapshot_exactly(demo):
    dx, results = demo
    hist = pd.read_csv(results / "health_history.csv", dtype={"account_id": str})
    snap = pd.read_csv(results / "health_scores.csv", dtype={"account_id": str})
    now = hist[hist["month"] == "2026-06"].reset_index(drop=True)
    assert list(now["account_id"]) == list(snap["account_id"])
    assert (now["score"].to_numpy() == snap["score"].to_numpy()).all()
    assert (now["tier"].to_numpy() == snap["tier"].to_numpy()).all()
    assert sorted(hist["month"].unique()) == [str(p) for p in pd.period_range("2025-07", "2026-06", freq="M")]
    # the points of each row add up to its score (each rounded to 0.01, the score to 0.1)
    pts = hist[[c for c in hist.columns if c.startswith("points_")]].sum(axis=1)
    assert np.abs(pts - hist["score"]).max() < 0.1
    # one row per account and month; every month's accounts are those active then
    assert not hist.duplicated(["account_id", "month"]).any()
    panel = dx.panel
    m = pd.Timestamp("2025-12-01")
    active = panel[(panel["month"] == m) & (panel["churn"] == 0) & (panel["mrr"] > 0)]["account_id"]
    assert sorted(hist.loc[hist["month"] == "2025-12", "account_id"]) == sorted(active)


def test_demo_crm_files_carry_the_company_name(demo):
    _, results = demo
    accounts = pd.read_csv(ROOT / "data" / "demo" / "accounts.csv", dtype={"account_id": str}).set_index("account_id")
    for name in ("health_scores.csv", "health_movers.csv", "playbook.csv"):
        t = pd.read_csv(results / name, dtype={"account_id": str}, keep_default_na=False)
        assert not t["account_id"].duplicated().any(), name
        assert (t["account_name"] == accounts.loc[t["account_id"], "company_name"].to_numpy()).all(), name


def test_history_is_the_same_whatever_months_are_scored_together(demo):
    from cskit.history import score_history

    dx, _ = demo
    model = dx.health.model
    jan, jun = pd.Timestamp("2026-01-01"), pd.Timestamp("2026-06-01")
    both, _ = score_history(dx.panel, model, [jan, jun], horizon=12, lag=1)
    one, _ = score_history(dx.panel, model, [jan], horizon=12, lag=1, fitted_to=jun)
    a = both[both["month"] == jan].reset_index(drop=True)
    # a month's scores use only each account's own values up to that month (and the model's persistence):
    # scoring other months beside it changes nothing, and blanking every KPI after January changes nothing
    pd.testing.assert_frame_equal(a, one)
    later = dx.panel["month"] > jan
    blank = dx.panel.copy()
    for k in model.kpi_names():
        if k != "contract_months":
            blank.loc[later, k] = np.nan
    rows = (blank["month"] == jan).to_numpy() & (blank["churn"] == 0).to_numpy() & (blank["mrr"] > 0).to_numpy()
    from cskit.forecast import kpi_forecasts

    f_full, _ = kpi_forecasts(dx.panel, model.kpi_names(), rows, model.design.transforms, 12, 1)
    f_cut, _ = kpi_forecasts(blank, model.kpi_names(), rows, model.design.transforms, 12, 1)
    assert len(f_full) == len(a)
    # only the persistence estimate (which uses every month) differs; each account's inputs are the same
    from cskit.panel import recent_means

    pd.testing.assert_frame_equal(recent_means(dx.panel, model.kpi_names(), rows),
                                  recent_means(blank, model.kpi_names(), rows))
    assert f_cut.shape == f_full.shape


def test_drop_check_reads_the_cut_scores_score_history_would_make(demo):
    """The validation's scoring at the cut also scores the month alert_months before (Health.cut_scores):
    exactly the validation model's score_history of those two months, and the drop check is the same
    whether it reads them or scores the two months itself."""
    from cskit.history import drop_check, score_history

    dx, _ = demo
    h, p = dx.health, dx.params
    cut = pd.Timestamp(dx.data.as_of) - pd.DateOffset(months=h.validation["horizon_months"])
    before = cut - pd.DateOffset(months=p.alert_months)
    made, _ = score_history(dx.panel, h.cut_model, [before, cut], horizon=h.validation["horizon_months"],
                            lag=p.kpi_lag_months, fitted_to=cut)
    assert set(h.cut_scores["month"]) == {before, cut}
    pd.testing.assert_frame_equal(h.cut_scores, made[["account_id", "month", "score"]])
    kw = dict(horizon=h.validation["horizon_months"], lag=p.kpi_lag_months, months=p.alert_months,
              drop=p.alert_drop)
    assert drop_check(dx.panel, h.cut_model, cut, scores=h.cut_scores, **kw) == \
        drop_check(dx.panel, h.cut_model, cut, **kw)


def _history(rows):
    return pd.DataFrame(rows, columns=["account_id", "month", "score", "tier", "points_a", "points_b", "points_c"])


def test_score_changes_by_hand():
    t0, t1 = pd.Timestamp("2026-03-01"), pd.Timestamp("2026-06-01")
    h = _history([
        ("x", t0, 80.0, "green", 40, 30, 10), ("x", t1, 60.0, "yellow", 25, 34, 1),  # −20: a −15, c −9, b +4
        ("y", t0, 45.0, "yellow", 20, 20, 5), ("y", t1, 41.0, "red", 20, 19.8, 1.2),  # −4, enters red: c −3.8
        ("z", t0, 70.0, "green", 30, 30, 10), ("z", t1, 69.0, "green", 30, 29, 10),   # −1: not a mover
        ("w", t1, 10.0, "red", 5, 5, 0),                                               # new: not scored then
    ])
    v = pd.DataFrame({"account_id": ["x", "x", "y", "y", "z", "z", "w"], "month": [t0, t1, t0, t1, t0, t1, t1],
                      "a": [20.0, 12, 5, 5, 1, 1, 1], "b": [1.0, 2, 3, 3, 1, 1, 1], "c": [9.0, 1, 4, 2, 1, 1, 1]})
    ch = score_changes(h, v, as_of=t1, months=3, drop=15)
    assert list(ch["account_id"]) == ["x", "y", "z"]
    m = find_movers(ch)
    assert list(m["account_id"]) == ["x", "y"]
    x = m.iloc[0]
    assert (x["change"], x["falling"], x["entered_red"]) == (-20.0, True, False)
    assert [x["item_1"], x["item_2"], x["item_3"]] == ["a", "c", "b"]
    assert [x["points_1"], x["points_2"], x["points_3"]] == [-15, -9, 4]
    assert (x["value_then_1"], x["value_now_1"]) == (20.0, 12.0)
    y = m.iloc[1]
    assert (y["falling"], y["entered_red"], y["item_1"], y["item_2"]) == (False, True, "c", "")  # b moved 0.2 < 0.5
    text = N.mover_reason(x.to_dict(), {"a": "Login days", "c": "CSAT", "b": "Support"}, "en")
    assert text == "−20.0 points: Login days −15.0 (20 → 12), CSAT −9.0 (9 → 1), Support +4.0 (1 → 2)"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from cskit.simulate import EngagementDrop, simulate_client, write_client

    folder = tmp_path_factory.mktemp("planted")
    sim = simulate_client(n_accounts=1000, n_months=30, seed=3, mc_paths=0, engagement_drop=EngagementDrop(accounts=25))
    write_client(sim, folder / "data")
    return sim, folder


def test_change_summary_counts_the_falls_its_one_percent_quantile_hides():
    """1,000 accounts of which 5 fell by 20 points and 3 rose by 1: the 1% quantile of the change is 0,
    yet 5 fell (``fell``), all 5 by the alert drop of 15 (``falling``)."""
    change = np.r_[np.full(5, -20.0), np.zeros(992), np.ones(3)]
    s = change_summary(change, drop=15)
    assert (s["accounts"], s["falling"], s["fell"], s["q01"], s["median"]) == (1000, 5, 5, 0.0, 0.0)
    assert change_summary(np.r_[-20.0, -3.0, 0.0, 2.0], drop=15)["fell"] == 2  # a fall short of the drop counts
    assert change_summary(np.zeros(26), drop=15)["fell"] == 0
    assert change_summary(np.array([]), drop=15) == {"accounts": 0, "falling": 0, "fell": 0}


def test_planted_engagement_drop_accounts_are_movers_with_login_days_first(planted):
    """25 accounts' login days drop by 3 SD (≈16 → 1 a month) over the last 3 months. The score forecasts
    churn over the horizon from each account's level, so it moves by only a few points (its 3-month falls
    are rarely 15: the report says so); at alert_drop 3 the planted accounts are found, login days first."""
    sim, folder = planted
    dx = analyse(dict(client="planted", data=str(folder / "data"), bootstrap=0, language="en", alert_drop=3))
    as_of = dx.data.as_of
    hist = dx.history.history
    pts = hist[hist["month"] == as_of - pd.DateOffset(months=3)].set_index("account_id")["points_login_days"]
    now = set(hist.loc[hist["month"] == as_of, "account_id"])
    planted_ids = set(sim.truth.dropped) & now & set(pts.index)
    room = {a for a in planted_ids if pts[a] >= 5}  # at 0 login points there is nothing left to lose
    assert len(room) >= 15
    values = hist[["account_id", "month"]].assign(login_days=np.nan)
    ch = score_changes(hist, values, as_of=as_of, months=3, drop=3).set_index("account_id")
    # the dropped KPI is named first for the planted accounts
    assert (ch.loc[sorted(room), "item_1"] == "login_days").mean() >= 0.9
    movers = dx.history.movers.set_index("account_id")
    found = room & set(movers.index)
    assert len(found) >= 0.6 * len(room)
    assert (movers.loc[sorted(found), "item_1"] == "login_days").all()
    # and they are strongly over-represented among the movers (planted share ≥ 5× their share of accounts)
    share_movers = len(set(movers.index) & planted_ids) / len(movers)
    assert share_movers >= 5 * len(planted_ids) / len(ch)
    assert "login days" in movers.loc[sorted(found)[0], "moved"].lower()


def test_without_the_option_the_simulator_is_unchanged():
    from cskit.simulate import simulate_client

    a = simulate_client(n_accounts=150, n_months=12, seed=2, mc_paths=0)
    b = simulate_client(n_accounts=150, n_months=12, seed=2, mc_paths=0, engagement_drop=None)
    for k in a.tables:
        pd.testing.assert_frame_equal(a.tables[k], b.tables[k])
    assert a.truth.dropped == ()


def _planted_or(c: float, n: int = 20000, seed: int = 1):
    rng = np.random.default_rng(seed)
    level = rng.uniform(0, 100, n)
    change = rng.normal(0, 6, n)
    change[rng.random(n) < 0.15] -= 20  # 15% of accounts fell by ~20 points
    dropped = change <= -15
    eta = -0.5 - 0.3 * level / 10 + c * dropped
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return level, change, y


def test_drop_effect_recovers_a_planted_odds_ratio_and_says_warning():
    level, change, y = _planted_or(np.log(2.0))
    res = drop_effect(level, change, y, drop=15)
    ind = res["indicator"]
    assert ind["ci_low"] < 2.0 < ind["ci_high"]
    assert ind["ci_low"] > 1.5 and res["verdict"] == "warning" and res["basis"] == "indicator"
    assert abs(ind["score_level_odds_ratio"] - np.exp(-0.3)) < 0.03


def test_drop_effect_without_a_planted_effect_adds_no_warning():
    level, change, y = _planted_or(0.0)
    res = drop_effect(level, change, y, drop=15)
    assert res["indicator"]["ci_low"] < 1 < res["indicator"]["ci_high"]
    assert res["verdict"] == "no_added_warning"


def test_drop_effect_under_separation_writes_no_interval_and_prints_no_warning():
    # a fiscal-year client: 3 accounts fell by 15+ points and none churned; the indicator's coefficient
    # runs away, exp(b + z·se) overflowed and "RuntimeWarning: overflow encountered in exp" was printed
    # in the report's HTML
    import warnings

    level, change, y = _planted_or(0.0, n=800, seed=3)
    change = np.where(change <= -15, 0.0, change)
    change[:3], y[:3] = -20.0, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = drop_effect(level, change, y, drop=15)
    assert res["events_dropped"] == 0 and res["indicator"]["status"] == "not_estimable"
    assert res["indicator"]["ci_high"] is None or not np.isfinite(res["indicator"]["ci_high"])


def test_drop_effect_matches_statsmodels_logit():
    import statsmodels.api as sm

    level, change, y = _planted_or(np.log(1.5), n=3000, seed=4)
    res = drop_effect(level, change, y, drop=15)
    X = sm.add_constant(np.column_stack([level / 10, (change <= -15).astype(float)]))
    ref = sm.Logit(y, X).fit(disp=0)
    lo, hi = ref.conf_int()[2]
    assert res["indicator"]["odds_ratio"] == pytest.approx(np.exp(ref.params[2]), rel=1e-6)
    assert res["indicator"]["ci_low"] == pytest.approx(np.exp(lo), rel=1e-5)
    assert res["indicator"]["ci_high"] == pytest.approx(np.exp(hi), rel=1e-5)
    X2 = sm.add_constant(np.column_stack([level / 10, -change / 10]))
    ref2 = sm.Logit(y, X2).fit(disp=0)
    assert res["per_10_points_fall"]["odds_ratio"] == pytest.approx(np.exp(ref2.params[2]), rel=1e-6)
    assert res["events"] == int(y.sum()) and res["events_dropped"] == int(y[change <= -15].sum())


def test_drop_verdict_rule():
    ok = {"status": "fitted"}
    base = {"events_dropped": 10, "alert_drop": 15, "dropped": 40}
    assert drop_verdict(base | {"indicator": ok | {"ci_low": 1.1, "ci_high": 3}})[0] == "warning"
    assert drop_verdict(base | {"indicator": ok | {"ci_low": 0.6, "ci_high": 1.2}})[0] == "no_added_warning"
    assert drop_verdict(base | {"indicator": ok | {"ci_low": 0.8, "ci_high": 2.5}})[0] == "inconclusive"
    few = base | {"events_dropped": 2, "indicator": ok | {"ci_low": 1.1, "ci_high": 3}}
    assert drop_verdict(few | {"per_10_points_fall": ok | {"ci_low": 0.9, "ci_high": 1.1}})[:3:2] == (
        "no_added_warning", "per_10_points_fall")
    assert drop_verdict(few)[0] == "not_estimable"


# ---------------------------------------------------------------- since the last diagnosis


def test_a_diagnosis_compared_with_itself_reports_no_change(demo, tmp_path):
    dx, results = demo
    again = analyse(dict(client="demo", data=str(ROOT / "data" / "demo"), as_of="2026-06-30", bootstrap=0,
                         previous=str(results.parent)))
    again.write(tmp_path / "demo")
    ch = json.loads((tmp_path / "demo" / "results" / "changes.json").read_text(encoding="utf-8"))
    assert ch["no_change"] is True
    assert ch["triggers"] == {"appeared": [], "disappeared": []} and ch["potential"]["moved"] == []
    assert ch["tiers"]["worse"] == ch["tiers"]["better"] == 0 and ch["tiers"]["newly_red"] == []
    assert ch["playbook"]["churned"] == ch["playbook"]["recovered"] == 0
    assert all(m["change"] in (0, None) for m in ch["metrics"].values())
    assert "Nothing changed" in N.changes(ch, {}, "en")
    # the other result files are those of the first run, byte for byte (run.json records the params,
    # which differ by `previous`)
    for f in results.iterdir():
        if f.name == "run.json":
            continue
        assert f.read_bytes() == (tmp_path / "demo" / "results" / f.name).read_bytes(), f.name


def test_previous_may_be_the_folder_being_overwritten(demo, tmp_path):
    import shutil

    _, results = demo
    shutil.copytree(results.parent, tmp_path / "demo")
    dx = analyse(dict(client="demo", data=str(ROOT / "data" / "demo"), as_of="2026-06-30", bootstrap=0,
                      previous=str(tmp_path / "demo")))
    dx.write(tmp_path / "demo")
    assert dx.changes["no_change"] is True


def test_previous_must_be_a_cskit_output_folder(tmp_path):
    with pytest.raises(CskitError, match="does not exist"):
        results_folder(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    with pytest.raises(CskitError, match="not a cskit output folder.*kpi_summary.json"):
        results_folder(tmp_path / "other")


def test_cli_exits_2_on_a_bad_previous(tmp_path):
    params = tmp_path / "p.yaml"
    text = f"client: t\ndata: {ROOT / 'data' / 'demo'}\nprevious: {tmp_path / 'missing'}\n"
    params.write_text(text, encoding="utf-8")
    cli = [sys.executable, "-c", "from cskit.cli import main; main()"]
    r = subprocess.run([*cli, "run", str(params), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "previous" in r.stderr and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_a_run_months_earlier_reports_what_happened_since(planted, tmp_path):
    sim, folder = planted
    data = str(folder / "data")
    as_of = pd.Timestamp(sim.as_of)
    then_m, now_m = (as_of - pd.DateOffset(months=3)).strftime("%Y-%m"), as_of.strftime("%Y-%m")
    early = analyse(dict(client="planted", data=data, bootstrap=0, language="en", as_of=f"{then_m}-28"))
    early.write(tmp_path / "early")
    now = analyse(dict(client="planted", data=data, bootstrap=0, language="en", previous=str(tmp_path / "early")))
    now.write(tmp_path / "now")
    ch = now.changes
    assert (ch["previous_as_of"], ch["as_of"], ch["no_change"]) == (then_m, now_m, False)
    # churned since: exactly the previously scored accounts whose churn_date falls in the three months since
    acc = sim.tables["accounts"].set_index("account_id")
    then = pd.read_csv(tmp_path / "early" / "results" / "health_scores.csv", dtype={"account_id": str})
    month = acc["churn_date"].dropna().str[:7]
    gone = set(month[(month > then_m) & (month <= now_m)].index) & set(then["account_id"])
    assert sum(ch["tiers"]["matrix"][t]["churned"] for t in ("red", "yellow", "green")) == len(gone) > 0
    # the planted drop: those accounts moved to a worse tier far more often than the others
    scored = set(then["account_id"]) - gone
    planted_ids = set(sim.truth.dropped) & scored
    worse = set(ch["tiers"]["worse_accounts"])
    share = lambda ids: len(ids & worse) / len(ids)  # noqa: E731
    assert share(planted_ids) > 2 * share(scored - planted_ids)
    # what became of the accounts the earlier playbook named, recomputed from the two runs' files
    book = pd.read_csv(tmp_path / "early" / "results" / "playbook.csv", dtype={"account_id": str})
    cur = pd.read_csv(tmp_path / "now" / "results" / "health_scores.csv", dtype={"account_id": str})
    tier_now = cur.set_index("account_id")["tier"]
    expect = {}
    for a, t in zip(book["account_id"], book["tier"], strict=True):
        if a in gone:
            expect[a] = "churned"
        elif a not in tier_now.index:
            expect[a] = "not_scored"
        elif tier_now[a] == "red":
            expect[a] = "still_red" if t == "red" else "turned_red"
        else:
            expect[a] = "recovered" if t == "red" else "not_red"
    assert ch["playbook"]["accounts"] == dict(sorted(expect.items()))
    assert ch["playbook"]["recovered"] == sum(v == "recovered" for v in expect.values()) > 0
    # metrics then are the earlier run's headline figures
    summary = json.loads((tmp_path / "early" / "results" / "kpi_summary.json").read_text(encoding="utf-8"))
    assert ch["metrics"]["mrr"]["then"] == summary["mrr"]["value"]
    text = N.changes(ch, N.kpi_labels(now.data.catalogue, "en"), "en")
    assert "Tier migrations" in text and then_m in text


def test_tier_changes_and_playbook_followup_by_hand():
    then = pd.DataFrame({"account_id": ["a", "b", "c", "d", "e"], "tier": ["red", "green", "yellow", "red", "yellow"]})
    now = pd.DataFrame({"account_id": ["a", "b", "c"], "tier": ["yellow", "red", "yellow"]})
    t = tier_changes(then, now, churned={"d"})
    assert (t["worse"], t["better"], t["same"]) == (1, 1, 1)
    assert t["newly_red"] == ["b"] and t["matrix"]["red"]["churned"] == 1 and t["matrix"]["yellow"]["not_scored"] == 1
    book = pd.DataFrame({"account_id": ["a", "d", "b"], "tier": ["red", "red", "green"]})
    f = playbook_followup(book, now, churned={"d"})
    assert f["accounts"] == {"a": "recovered", "b": "turned_red", "d": "churned"}
    assert (f["named"], f["recovered"], f["churned"], f["turned_red"], f["still_red"]) == (3, 1, 1, 1, 0)


def test_tier_mix_and_score_quantiles_by_hand():
    from cskit.history import score_quantiles, tier_mix

    t0, t1 = pd.Timestamp("2026-05-01"), pd.Timestamp("2026-06-01")
    h = pd.DataFrame({"account_id": ["a", "b", "c", "d", "a", "b", "c"], "month": [t0] * 4 + [t1] * 3,
                      "score": [10.0, 50, 70, 90, 20, 40, 60], "tier": ["red", "yellow", "green", "green",
                                                                        "red", "red", "green"]})
    mix = tier_mix(h)
    assert mix[["red", "yellow", "green"]].to_numpy().tolist() == [[1, 1, 2], [2, 0, 1]]
    assert mix["share_green"].tolist() == [0.5, 1 / 3]
    q = score_quantiles(h)
    assert q["q50"].tolist() == [60.0, 40.0] and q["mean"].tolist() == [55.0, 40.0]
    assert q["q25"].tolist() == [40.0, 30.0]  # linear interpolation: 10 + 0.75 × 40; 20 + 0.5 × 20


def test_beyond_noise_by_hand():
    a = {"effect": 1.2, "ci_low": 1.0, "ci_high": 1.44}
    same = {"effect": 1.25, "ci_low": 1.05, "ci_high": 1.49}
    far = {"effect": 2.0, "ci_low": 1.7, "ci_high": 2.35}
    assert not beyond_noise(a, same)
    assert beyond_noise(a, far)
    # by hand: se = log(1.44 / 1.0) / 3.92 = 0.0930, for far log(2.35 / 1.7) / 3.92 = 0.0826;
    # |log 2 − log 1.2| = 0.511 > 1.96 × √(0.0930² + 0.0826²) = 0.244
    assert not beyond_noise(None, far)


def test_report_warns_when_previous_is_another_client(demo):
    from cskit.changes import compare, read_results

    dx, results = demo
    prev = read_results(results) | {"client": "other-client"}
    ch = compare(prev, read_results(results) | {"client": "demo"}, dx.data)
    assert (ch["previous_client"], ch["client"]) == ("other-client", "demo")
    assert "another client (other-client)" in N.changes(ch, {}, "en")
    assert "別のクライアント（other-client）" in N.changes(ch, {}, "ja")
