"""SaaS metrics against figures computed by hand (seed 001's example, GRR/NRR, NPS, reactivation)."""
import json

import numpy as np
import pandas as pd
import pytest

from cskit.catalogue import build_catalogue
from cskit.client import ClientData
from cskit.metrics import (
    BRIDGE_COLUMNS,
    account_month_mrr,
    compute_metrics,
    mrr_bridge,
    nps_table,
)
from cskit.panel import build_panel
from cskit.params import Params

M = pd.Timestamp


def client(accounts, revenue, as_of, nps=None, static=()):
    """ClientData from {id: (start, churn or None, segment)} and [(id, month, mrr)] rows."""
    acc = pd.DataFrame(
        [
            {"account_id": a, "contract_start": M(s), "churn_date": M(c) if c else pd.NaT, "segment": seg}
            for a, (s, c, seg) in accounts.items()
        ]
    )
    acc["plan"] = "(none)"
    acc["contract_type"] = "monthly"
    for col, values in dict(static).items():
        acc[col] = acc["account_id"].map(values)
    rev = pd.DataFrame(revenue, columns=["account_id", "month", "mrr"])
    rev["month"] = pd.to_datetime(rev["month"])
    rev["mrr"] = rev["mrr"].astype(float)
    rev["product"] = "main"
    return ClientData(
        accounts=acc,
        revenue=rev,
        kpis=pd.DataFrame({"account_id": pd.Series(dtype=str), "month": pd.Series(dtype="datetime64[ns]")}),
        nps=nps,
        events=None,
        as_of=M(as_of),
        catalogue=build_catalogue(),
        static_kpis=list(dict(static)),
    )


def metrics_of(data, **params):
    return compute_metrics(build_panel(data), data, Params(**params))


def row(df, month):
    return df.set_index("month").loc[M(month)]


def seed001():
    """Seed 001: 10 accounts at 50,000 and 10 at 100,000; three of the 100,000 leave after January."""
    accounts, revenue = {}, []
    for i in range(20):
        a = f"a{i:02d}"
        price = 50_000 if i < 10 else 100_000
        leaves = i >= 17
        accounts[a] = ("2024-01-01", "2024-01-31" if leaves else None, "SMB")
        revenue.append((a, "2024-01-01", price))
        if not leaves:
            revenue.append((a, "2024-02-01", price))
    return client(accounts, revenue, "2024-02-01")


def test_seed001_customer_and_revenue_churn():
    m = metrics_of(seed001())
    feb = row(m.rates, "2024-02-01")
    assert feb["accounts_start"] == 20 and feb["churned"] == 3
    assert feb["customer_churn_rate"] == pytest.approx(0.15)  # 3 / 20
    assert feb["revenue_churn_rate_start_base"] == pytest.approx(0.20)  # 300,000 / 1,500,000
    assert feb["revenue_churn_rate_remaining_base"] == pytest.approx(0.25)  # 300,000 / 1,200,000 (seed 001)
    assert feb["gross_revenue_churn"] == pytest.approx(0.20)
    assert feb["net_revenue_churn"] == pytest.approx(0.20)
    assert feb["retention_rate"] == pytest.approx(0.85)
    b = row(m.mrr_bridge, "2024-02-01")
    assert (b["mrr_start"], b["churn"], b["mrr_end"]) == (1_500_000, 300_000, 1_200_000)
    s = m.summary
    assert s["customer_churn_rate"]["value"] == pytest.approx(0.15)  # January has nobody at start
    assert s["revenue_churn_rate_remaining_base"]["value"] == pytest.approx(0.25)
    assert s["arpa"]["value"] == pytest.approx(1_200_000 / 17)
    assert s["ltv_simple"]["value"] == pytest.approx(1_200_000 / 17 / 0.20, abs=1e-5)


def test_bridge_by_hand_with_reactivation_after_a_gap():
    # a: new 100 in Jan, 150 in Feb (+50), gone Mar-Apr (churn 150 in Mar), back at 120 in May.
    # b: new 80 in Feb, down to 30 in Apr (contraction 50). c: 40 in Jan only (churn in Feb).
    # b has two product rows in Mar (60 + 20 = 80: no movement).
    revenue = [
        ("a", "2024-01-01", 100), ("a", "2024-02-01", 150), ("a", "2024-05-01", 120),
        ("b", "2024-02-01", 80), ("b", "2024-03-01", 60), ("b", "2024-03-01", 20),
        ("b", "2024-04-01", 30), ("b", "2024-05-01", 30),
        ("c", "2024-01-01", 40),
    ]  # fmt: skip
    accounts = {
        "a": ("2024-01-01", None, "SMB"),
        "b": ("2024-02-01", None, "SMB"),
        "c": ("2024-01-01", "2024-01-31", "SMB"),
    }
    m = metrics_of(client(accounts, revenue, "2024-05-01"))
    expected = pd.DataFrame(
        {
            "month": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"]),
            "mrr_start": [0, 140, 230, 80, 30],
            "new": [140, 80, 0, 0, 0],
            "expansion": [0, 50, 0, 0, 0],
            "reactivation": [0, 0, 0, 0, 120],
            "contraction": [0, 0, 0, 50, 0],
            "churn": [0, 40, 150, 0, 0],
            "mrr_end": [140, 230, 80, 30, 150],
        }
    ).astype({c: float for c in BRIDGE_COLUMNS[1:]})
    pd.testing.assert_frame_equal(m.mrr_bridge, expected)
    assert m.rates["accounts_start"].tolist() == [0, 2, 2, 1, 1]
    assert m.rates["churned"].tolist() == [0, 1, 1, 0, 0]
    mar = row(m.rates, "2024-03-01")
    assert mar["customer_churn_rate"] == pytest.approx(0.5)
    assert mar["revenue_churn_rate_start_base"] == pytest.approx(150 / 230)
    assert mar["revenue_churn_rate_remaining_base"] == pytest.approx(150 / 80)
    may = row(m.rates, "2024-05-01")
    assert may["net_revenue_churn"] == pytest.approx(-120 / 30)
    assert np.isnan(m.rates["customer_churn_rate"].iloc[0])
    # pooled over the 4 months with a start: (1 + 1) / (2 + 2 + 1 + 1); (40 + 150) / (140 + 230 + 80 + 30)
    assert m.summary["customer_churn_rate"]["value"] == pytest.approx(2 / 6, abs=1e-6)
    assert m.summary["revenue_churn_rate_start_base"]["value"] == pytest.approx(190 / 480, abs=1e-6)
    assert m.summary["gross_revenue_churn"]["value"] == pytest.approx(240 / 480, abs=1e-6)
    assert m.summary["net_revenue_churn"]["value"] == pytest.approx((240 - 50 - 120) / 480, abs=1e-6)
    assert m.summary["customer_churn_rate"]["period"] == "2024-01..2024-05"


def test_grr_nrr_by_hand():
    # Base month 2024-01 (12 months before as_of 2025-01). MRR0 = 100 + 200 + 100 + 50 + 100 = 550.
    # a 100 → 150 (+50); b 200 → 120 (−80); c 100 → 0 (churn 100); d 50 → 50;
    # e 100 → gone in Mar, back at 130 by Jan 2025 (+30 point to point); f starts 2024-06 (not in cohort).
    months = pd.date_range("2024-01-01", "2025-01-01", freq="MS").strftime("%Y-%m-%d")
    path = {
        "a": [100] * 6 + [150] * 7,
        "b": [200] * 3 + [120] * 10,
        "c": [100] * 4 + [0] * 9,
        "d": [50] * 13,
        "e": [100] * 2 + [0] * 5 + [130] * 6,
        "f": [0] * 5 + [70] * 8,
    }
    revenue = [(a, m, v) for a, vs in path.items() for m, v in zip(months, vs) if v > 0]
    accounts = {a: ("2024-01-01", None, "SMB") for a in path}
    accounts["c"] = ("2024-01-01", "2024-04-30", "SMB")
    accounts["f"] = ("2024-06-01", None, "SMB")
    m = metrics_of(client(accounts, revenue, "2025-01-01"))
    g = m.grr_nrr
    assert (g["mrr0"], g["expansion"], g["contraction"], g["churn"], g["mrr1"]) == (550, 80, 80, 100, 450)
    assert g["accounts"] == 5 and g["base_month"] == "2024-01"
    assert g["grr"] == pytest.approx(370 / 550)
    assert g["nrr"] == pytest.approx(450 / 550)
    assert m.summary["nrr"]["value"] == pytest.approx(450 / 550, abs=1e-6)
    assert m.summary["grr"]["period"] == "2024-01..2025-01"
    # upsell/cross-sell: paying in Feb 2024..Jan 2025: a, b, c, d, e, f; expansions: a (Jul) only
    # (e's return is a reactivation, f's first month is new) → 1 / 6.
    assert m.summary["upsell_cross_sell_rate"]["value"] == pytest.approx(1 / 6, abs=1e-6)
    assert m.summary["upsell_cross_sell_rate"]["accounts"] == 6


def test_grr_nrr_null_without_a_base_year():
    m = metrics_of(seed001())
    assert m.grr_nrr["grr"] is None and m.summary["nrr"]["value"] is None
    assert "12 months before" in m.summary["nrr"]["note"]


def test_nps_boundaries_segments_and_roles():
    scores = [0, 6, 6, 7, 8, 8, 9, 9, 10, 10]
    ids = ["a", "a", "b", "b", "a", "b", "a", "b", "b", "b"]
    roles = ["admin", "end_user", "admin", "admin", "end_user", None, "admin", "end_user", "admin", "admin"]
    nps = pd.DataFrame({"account_id": ids, "date": M("2024-06-15"), "score": scores, "role": roles})
    old = pd.DataFrame({"account_id": ["a"], "date": [M("2023-06-30")], "score": [0], "role": ["admin"]})
    nps = pd.concat([nps, old], ignore_index=True)  # 12+ months before as_of: left out
    accounts = pd.DataFrame({"account_id": ["a", "b"], "segment": ["Enterprise", "SMB"]})
    t = nps_table(nps, accounts, M("2024-06-01")).set_index(["group_by", "group"])
    # all: promoters 9, 9, 10, 10 (4); detractors 0, 6, 6 (3); passives 7, 8, 8 (3) → 40 − 30 = 10 points
    assert t.loc[("all", "all")][["answers", "promoters", "passives", "detractors"]].tolist() == [10, 4, 3, 3]
    assert t.loc[("all", "all"), "nps"] == pytest.approx(10.0)
    # Enterprise (a): 0, 6, 8, 9 → (1 − 2) / 4 = −25; SMB (b): 6, 7, 8, 9, 10, 10 → (3 − 1) / 6
    assert t.loc[("segment", "Enterprise"), "nps"] == pytest.approx(-25.0)
    assert t.loc[("segment", "SMB"), "nps"] == pytest.approx(100 * 2 / 6)
    # admin: 0, 6, 7, 9, 10, 10 → (3 − 2) / 6; end_user: 6, 8, 9 → 0; (none): 8 → 0
    assert t.loc[("role", "admin"), "nps"] == pytest.approx(100 / 6)
    assert t.loc[("role", "end_user"), "nps"] == pytest.approx(0.0)
    assert t.loc[("role", "(none)"), "answers"] == 1


def test_cohorts_and_onboarding_by_hand():
    # Jan cohort: x (100, leaves in Mar), y (50 → 80 from Feb). Feb cohort: z (60). as_of Apr.
    accounts = {
        "x": ("2024-01-05", "2024-03-10", "SMB"),
        "y": ("2024-01-20", None, "SMB"),
        "z": ("2024-02-01", None, "Mid"),
    }
    revenue = [("x", m, 100) for m in ["2024-01-01", "2024-02-01", "2024-03-01"]]
    revenue += [("y", "2024-01-01", 50)] + [("y", m, 80) for m in ["2024-02-01", "2024-03-01", "2024-04-01"]]
    revenue += [("z", m, 60) for m in ["2024-02-01", "2024-03-01", "2024-04-01"]]
    data = client(accounts, revenue, "2024-04-01", static={"onboarding_completed": {"x": 0.0, "y": 2.0, "z": np.nan}})
    m = metrics_of(data)
    c = m.cohorts.assign(cohort=m.cohorts["cohort"].dt.strftime("%Y-%m")).set_index(["cohort", "months_since_start"])
    assert c.loc["2024-01", "accounts"].tolist() == [2, 2, 1, 1]  # x's contract ends in month 2
    assert c.loc["2024-01", "retention"].tolist() == [1.0, 1.0, 0.5, 0.5]
    assert c.loc["2024-01", "revenue_retention"].tolist() == pytest.approx([1.0, 180 / 150, 80 / 150, 80 / 150])
    assert c.loc["2024-02", "accounts"].tolist() == [1, 1, 1]
    # onboarding: known for x (0) and y (2) → 1 / 2
    assert m.summary["onboarding_completion_rate"]["value"] == 0.5
    assert m.summary["onboarding_completion_rate"]["accounts"] == 2


def random_revenue(seed, n_accounts=60, n_months=18):
    """Random MRR paths with gaps, up/downgrades, several product rows and fractional amounts."""
    rng = np.random.default_rng(seed)
    months = pd.date_range("2023-01-01", periods=n_months, freq="MS")
    rows = []
    for i in range(n_accounts):
        start = rng.integers(0, n_months)
        level = rng.choice([9.99, 50.0, 120.5, 1000.0])
        for t in range(start, n_months):
            if rng.random() < 0.15:
                continue
            level = level * rng.choice([1.0, 1.0, 1.3, 0.7])
            for product in range(rng.integers(1, 3)):
                rows.append((f"r{i}", months[t].strftime("%Y-%m-%d"), round(level / (product + 1), 2)))
    return pd.DataFrame(rows, columns=["account_id", "month", "mrr"]).assign(month=lambda d: pd.to_datetime(d["month"]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bridge_identity_and_totals_on_random_revenue(seed):
    rev = random_revenue(seed)
    as_of = M("2024-06-01")
    b = mrr_bridge(account_month_mrr(rev, as_of), as_of)
    cents = (b[BRIDGE_COLUMNS[1:]] * 100).round().astype(np.int64)
    lhs = cents["mrr_start"] + cents["new"] + cents["expansion"] + cents["reactivation"]
    assert (lhs - cents["contraction"] - cents["churn"] == cents["mrr_end"]).all()
    totals = rev.groupby("month")["mrr"].sum().reindex(b["month"], fill_value=0.0)
    assert np.allclose(b["mrr_end"].to_numpy(), totals.to_numpy(), rtol=0, atol=1e-6)
    assert (b["mrr_start"].iloc[1:].to_numpy() == b["mrr_end"].iloc[:-1].to_numpy()).all()
    assert (b[["new", "expansion", "reactivation", "contraction", "churn"]] >= 0).all().all()


def test_write_is_byte_reproducible(tmp_path):
    data = seed001()
    for d in ("one", "two"):
        metrics_of(data).write(tmp_path / d)
    for name in ("mrr_bridge.csv", "cohorts.csv", "kpi_summary.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    lines = (tmp_path / "one" / "mrr_bridge.csv").read_text().splitlines()
    assert lines[0] == ",".join(BRIDGE_COLUMNS)
    assert lines[2] == "2024-02,1500000.00,0.00,0.00,0.00,0.00,300000.00,1200000.00"
    assert (tmp_path / "one" / "cohorts.csv").read_text().splitlines()[0] == (
        "cohort,months_since_start,accounts,retention,revenue_retention"
    )
    summary = json.loads((tmp_path / "one" / "kpi_summary.json").read_text(encoding="utf-8"))
    assert summary["ltv_survival"]["value"] is None
    assert all({"value", "definition", "period"} <= set(v) for v in summary.values())


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_bridge_on_simulated_clients(seed, tmp_path):
    from cskit.loading import client_from_frames
    from cskit.simulate import simulate_client

    sim = simulate_client(n_accounts=250, n_months=24, seed=seed, mc_paths=0)
    data = client_from_frames(sim.tables, Params(as_of=sim.as_of))
    panel = build_panel(data)
    m = compute_metrics(panel, data, Params())
    m.write(tmp_path)
    # the simulator bills nothing in the churn month: revenue-based churn = contract churn, month by month
    contract = panel.groupby("month")["churn"].sum().reindex(m.rates["month"], fill_value=0)
    assert m.rates["churned"].tolist() == contract.tolist()
    csv = pd.read_csv(tmp_path / "mrr_bridge.csv", dtype=str)
    cents = {c: csv[c].str.replace(".", "", regex=False).astype(np.int64) for c in BRIDGE_COLUMNS[1:]}
    lhs = cents["mrr_start"] + cents["new"] + cents["expansion"] + cents["reactivation"]
    assert (lhs - cents["contraction"] - cents["churn"] == cents["mrr_end"]).all()
    rev = sim.tables["revenue"].assign(month=lambda d: d["month"].astype(str).str[:7])
    totals = rev.groupby("month")["mrr"].sum()
    assert dict(zip(csv["month"], cents["mrr_end"])) == {k: int(round(v * 100)) for k, v in totals.items()}
    # every account's first paid month is a "new" movement: Σ new = Σ first-month MRR
    first = rev.sort_values("month").groupby(["account_id", "month"])["mrr"].sum().groupby(level=0).first()
    assert m.mrr_bridge["new"].sum() == pytest.approx(first.sum())


def test_bridge_and_rates_on_the_demo_client():
    from pathlib import Path

    from cskit.pipeline import load

    root = Path(__file__).resolve().parents[1]
    data = load(root / "params" / "demo.yaml", base=root)
    m = compute_metrics(build_panel(data), data, Params())
    b = m.mrr_bridge
    cents = (b[BRIDGE_COLUMNS[1:]] * 100).round().astype(np.int64)
    lhs = cents["mrr_start"] + cents["new"] + cents["expansion"] + cents["reactivation"]
    assert (lhs - cents["contraction"] - cents["churn"] == cents["mrr_end"]).all()
    raw = pd.read_csv(root / "data" / "demo" / "revenue.csv", dtype={"account_id": str})
    totals = raw.groupby(raw["month"].str[:7])["mrr"].sum()
    assert dict(zip(b["month"].dt.strftime("%Y-%m"), cents["mrr_end"])) == {
        k: round(v * 100) for k, v in totals.items()
    }
    # Σ churned = paid runs (consecutive paid months of an account) that end before the last month
    paid = raw[raw["mrr"] > 0].assign(m=lambda d: pd.PeriodIndex(d["month"].str[:7], freq="M"))
    last = paid["m"].max()
    ends = sum(
        1 for _, ms in paid.groupby("account_id")["m"] for x in set(ms) if x + 1 not in set(ms) and x < last
    )
    assert m.rates["churned"].sum() == ends


def test_customers_from_before_the_revenue_history_are_the_opening_balance_not_new():
    # x started in 2023 (before the data), y in the first data month: only y's 70 is new business
    rev = pd.DataFrame(
        {
            "account_id": ["x", "y", "x", "y"],
            "month": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-02-01", "2024-02-01"]),
            "mrr": [100.0, 70.0, 120.0, 70.0],
        }
    )
    as_of = pd.Timestamp("2024-02-01")
    b = mrr_bridge(account_month_mrr(rev, as_of), as_of, opening=["x"])
    assert b.loc[0, ["mrr_start", "new", "mrr_end"]].tolist() == [100.0, 70.0, 170.0]
    assert b.loc[1, ["mrr_start", "expansion", "mrr_end"]].tolist() == [170.0, 20.0, 190.0]
