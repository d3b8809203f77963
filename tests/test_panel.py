"""The account × month panel, checked row by row on a hand-made client."""
import numpy as np
import pandas as pd

from cskit.catalogue import build_catalogue
from cskit.client import ClientData
from cskit.panel import add_lags, build_panel, kpi_columns

M = pd.Timestamp


def _client(nps=True):
    accounts = pd.DataFrame(
        {
            "account_id": ["a", "b", "c", "r"],
            "contract_start": pd.to_datetime(["2024-01-10", "2024-01-01", "2024-02-15", "2024-03-05"]),
            "churn_date": pd.to_datetime([None, "2024-04-20", "2025-06-01", None]),
            "segment": ["SMB", "Mid", "SMB", "SMB"],
            "plan": ["Basic", "Pro", "Basic", "Basic"],
            "contract_type": ["monthly", "monthly", "annual", "monthly"],
            "referred_by": [None, None, None, "a"],
            "onboarding_completed": [1.0, 0.0, 1.0, 0.0],
        }
    )
    revenue = pd.DataFrame(
        {
            "account_id": ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["r"] * 2 + ["a"],
            "month": pd.to_datetime(
                ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"]
                + ["2024-01-01", "2024-02-01", "2024-03-01"]
                + ["2024-02-01", "2024-03-01", "2024-04-01"]
                + ["2024-03-01", "2024-04-01"]
                + ["2024-03-01"]
            ),
            "mrr": [100, 100, 150, 120, 120, 50, 50, 50, 80, 80, 80, 30, 30, 20.0],
            "product": ["main"] * 13 + ["option"],
        }
    )
    kpis = pd.DataFrame(
        {
            "account_id": ["a", "a", "a", "a", "a", "b"],
            "month": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01", "2024-02-01"]),
            "login_days": [1.0, 2.0, 3.0, np.nan, 5.0, 7.0],
        }
    )
    nps_t = pd.DataFrame(
        {
            "account_id": ["a", "a", "b"],
            "date": pd.to_datetime(["2024-01-20", "2024-03-03", "2024-02-10"]),
            "score": [10, 6, 9],
            "role": ["admin", "end_user", "admin"],
        }
    )
    return ClientData(
        accounts=accounts,
        revenue=revenue,
        kpis=kpis,
        nps=nps_t if nps else None,
        events=None,
        as_of=M("2024-05-01"),
        catalogue=build_catalogue(),
        static_kpis=["onboarding_completed"],
    )


def test_rows_span_contract_to_churn_or_as_of():
    p = build_panel(_client())
    counts = p.groupby("account_id").size().to_dict()
    # a: Jan..May (5); b: Jan..Apr churn month (4); c: Feb..May, churn after as_of → active (4); r: Mar..May (3)
    assert counts == {"a": 5, "b": 4, "c": 4, "r": 3}
    b = p[p.account_id == "b"]
    assert b["churn"].tolist() == [0, 0, 0, 1]
    assert b["mrr"].tolist() == [50, 50, 50, 0]
    assert p[p.account_id == "c"]["churn"].sum() == 0
    assert (p.groupby("account_id")["tenure"].apply(lambda s: list(s) == list(range(len(s))))).all()


def test_revenue_movements_and_cross_sell():
    p = build_panel(_client()).set_index(["account_id", "month"])
    a = p.loc["a"]
    assert a["mrr"].tolist() == [100, 100, 170, 120, 120]  # March: 150 main + 20 option
    assert a["mrr_prev"].tolist() == [0, 100, 100, 170, 120]
    assert a["expansion"].tolist() == [0, 0, 1, 0, 0]
    assert a["expansion_mrr"].tolist() == [0, 0, 70, 0, 0]
    assert a["contraction"].tolist() == [0, 0, 0, 1, 0]
    assert a["contraction_mrr"].tolist() == [0, 0, 0, 50, 0]
    assert a["cross_sell"].tolist() == [0, 0, 1, 0, 0]


def test_at_risk_for_annual_only_at_anniversary():
    p = build_panel(_client())
    c = p[p.account_id == "c"]
    assert not c["at_risk"].any()  # tenure 0..3: no anniversary yet
    assert p[p.contract_type == "monthly"]["at_risk"].all()


def test_referrals_counted_at_referrer_in_referee_start_month():
    p = build_panel(_client()).set_index(["account_id", "month"])
    assert p["referrals"].sum() == 1
    assert p.loc[("a", M("2024-03-01")), "referrals"] == 1
    assert p.loc[("a", M("2024-03-01")), "referral_mrr"] == 30


def test_kpis_static_tenure_and_trailing_nps():
    data = _client()
    p = build_panel(data).set_index(["account_id", "month"])
    assert kpi_columns(data) == ["contract_months", "onboarding_completed", "login_days", "nps"]
    assert p.loc["a", "login_days"].tolist()[:3] == [1.0, 2.0, 3.0]
    assert np.isnan(p.loc[("a", M("2024-04-01")), "login_days"])
    assert p.loc["b", "onboarding_completed"].eq(0).all()
    assert p.loc["r", "contract_months"].tolist() == [0, 1, 2]
    # a answered 10 in Jan and 6 in Mar: trailing mean 10 in Jan–Feb, 8 from March on
    assert p.loc["a", "nps"].tolist() == [10, 10, 8, 8, 8]
    assert np.isnan(p.loc[("b", M("2024-01-01")), "nps"]) and p.loc[("b", M("2024-02-01")), "nps"] == 9


def test_nps_window_forgets_after_twelve_months():
    from cskit.panel import _within_account_window_sum

    x = np.array([1.0, 0, 0, 0, 2.0, 0, 0])
    tenure = np.array([0, 1, 2, 3, 0, 1, 2])
    assert _within_account_window_sum(x, tenure, 3).tolist() == [1, 1, 1, 0, 2, 2, 2]


def test_add_lags_never_crosses_accounts():
    p = build_panel(_client())
    lag = add_lags(p, ["login_days"], 1)
    a = lag[p.account_id == "a"]["login_days"].tolist()
    assert np.isnan(a[0]) and a[1:4] == [1.0, 2.0, 3.0]
    b_first = lag[p.account_id == "b"]["login_days"].iloc[0]
    assert np.isnan(b_first)


def test_renewal_cycle_is_read_from_when_contracts_end():
    from cskit.panel import renewal_cycle

    assert renewal_cycle(np.array([12, 24, 12, 12, 36])) == 12
    assert renewal_cycle(np.array([6, 12, 18, 6, 6, 12])) == 6  # 6-month terms filed as "annual"
    assert renewal_cycle(np.array([])) == 12
    assert renewal_cycle(np.array([5, 7, 11, 13, 2])) == 1


def test_six_month_terms_filed_as_annual_are_at_risk_every_six_months():
    data = _client()
    acc = data.accounts.copy()
    acc.loc[acc.account_id == "c", "churn_date"] = pd.Timestamp("2024-08-10")  # tenure 6
    data.accounts = acc
    data.as_of = M("2024-09-01")
    p = build_panel(data)
    c = p[p.account_id == "c"]
    assert c["renewal_cycle"].eq(6).all()
    assert c.loc[c.at_risk, "tenure"].tolist() == [6]
