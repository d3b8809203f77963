"""The simulator's raw events log (``cskit simulate --events``): a log whose aggregation by
:data:`EVENTS_KPIS` gives back the simulated KPI table exactly.

For each account-month of the KPI table, the events reproduce six usage KPIs: ``login_days`` distinct
local days with a ``login`` (one to three logins on each), ``active_users`` distinct users opening the
app (``app_open``), ``session_seconds`` the sum of the ``session`` events' seconds, and three counts
(``cs_site_visit``; ``manual_view`` or ``manual_open``; ``support_ticket``). Timestamps are UTC
instants whose local dates (in ``timezone``) fall inside the contract: on or after contract_start,
on or before churn_date. A KPI the table can't reach inside the contract is brought within reach
first (``login_days`` at most the contract's days in that month) and an empty KPI cell becomes 0 (a
log has no "not measured" month): :func:`events_client` returns that adjusted KPI table beside the
log, and the rest of the client is unchanged.
"""
from __future__ import annotations

import calendar
import datetime as dt
import zoneinfo

import numpy as np
import pandas as pd

EVENTS_KPIS = {
    "login_days": {"event": "login", "agg": "active_days"},
    "active_users": {"event": "app_open", "agg": "distinct_users"},
    "session_seconds": {"event": "session", "agg": "sum"},
    "cs_site_visits": {"event": "cs_site_visit", "agg": "count"},
    "manual_views": {"event": ["manual_view", "manual_open"], "agg": "count"},
    "support_inquiries": {"event": "support_ticket", "agg": "count"},
}
SEED_OFFSET = 7919  # the log's own random stream: the rest of the client is untouched


def events_client(tables: dict[str, pd.DataFrame], *, seed: int = 0, timezone: str = "Asia/Tokyo",
                  bad_rows: bool = True) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """(the tables to write: kpis without the events KPIs, plus ``events``; the full KPI table the log
    reproduces). ``bad_rows`` plants a few rows the loader must exclude and count: 3 of an unknown
    account, 2 after as_of, 2 before their account's contract_start."""
    rng = np.random.default_rng(seed + SEED_OFFSET)
    accounts, kpis = tables["accounts"], tables["kpis"].copy()
    zone = zoneinfo.ZoneInfo(timezone)
    start = dict(zip(accounts["account_id"], pd.to_datetime(accounts["contract_start"])))
    churn = dict(zip(accounts["account_id"], pd.to_datetime(accounts["churn_date"])))
    for k in EVENTS_KPIS:
        kpis[k] = kpis[k].astype("Float64").fillna(0).astype(float)
    parts = []
    for i, row in enumerate(kpis[["account_id", "month", *EVENTS_KPIS]].itertuples(index=False)):
        days = _contract_days(pd.Timestamp(row.month + "-01"), start[row.account_id], churn[row.account_id])
        kpis.loc[i, "login_days"] = min(row.login_days, len(days))
        parts.append(_month_events(row.account_id, days, kpis.loc[i, list(EVENTS_KPIS)].to_dict(), rng))
    ev = pd.DataFrame([e for p in parts for e in p], columns=["account_id", "user_id", "local", "event", "value"])
    if bad_rows:
        ev = pd.concat([ev, _bad_rows(accounts, kpis, rng)], ignore_index=True)
    utc = [t.replace(tzinfo=zone).astimezone(dt.UTC) for t in ev.pop("local")]
    ev.insert(2, "ts", pd.DatetimeIndex(utc).as_unit("us"))
    ev = ev.sort_values(["ts", "account_id", "event"], kind="stable").reset_index(drop=True)
    ev["value"] = ev["value"].astype(float)
    written = dict(tables)
    written["kpis"] = kpis.drop(columns=list(EVENTS_KPIS))
    written["events"] = ev
    return written, kpis


def _contract_days(month: pd.Timestamp, start: pd.Timestamp, churn: pd.Timestamp) -> list[dt.date]:
    n = calendar.monthrange(month.year, month.month)[1]
    days = [dt.date(month.year, month.month, d) for d in range(1, n + 1)]
    return [d for d in days if d >= start.date() and (pd.isna(churn) or d <= churn.date())]


def _at(day: dt.date, rng: np.random.Generator) -> dt.datetime:
    """A local time on ``day``; one in four in the first minutes after midnight (the zone's day boundary)."""
    second = int(rng.integers(0, 600)) if rng.random() < 0.25 else int(rng.integers(0, 86400))
    return dt.datetime(day.year, day.month, day.day) + dt.timedelta(seconds=second)


def _month_events(account: str, days: list[dt.date], kpi: dict, rng: np.random.Generator) -> list[tuple]:
    out = []

    def pick(k: int) -> list[dt.date]:
        return [days[j] for j in rng.integers(0, len(days), k)]

    login = sorted(rng.choice(len(days), int(kpi["login_days"]), replace=False))
    for j in login:
        for _ in range(int(rng.integers(1, 4))):
            out.append((account, f"{account}-u{int(rng.integers(1, 6))}", _at(days[j], rng), "login", np.nan))
    for u, d in enumerate(pick(int(kpi["active_users"]))):
        out.append((account, f"{account}-u{u + 1}", _at(d, rng), "app_open", np.nan))
    total = int(kpi["session_seconds"])
    if total > 0:
        n = int(rng.integers(1, 6))
        cuts = np.sort(rng.integers(0, total + 1, n - 1))
        for secs, d in zip(np.diff(np.concatenate([[0], cuts, [total]])), pick(n)):
            out.append((account, f"{account}-u1", _at(d, rng), "session", float(secs)))
    for kpi_name, names in (("cs_site_visits", ["cs_site_visit"]), ("manual_views", ["manual_view", "manual_open"]),
                            ("support_inquiries", ["support_ticket"])):
        for d in pick(int(kpi[kpi_name])):
            out.append((account, f"{account}-u{int(rng.integers(1, 6))}", _at(d, rng),
                        names[int(rng.integers(0, len(names)))], np.nan))
    return out


def _bad_rows(accounts: pd.DataFrame, kpis: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    last = pd.Period(kpis["month"].max(), "M")
    after = (last + 1).to_timestamp() + pd.Timedelta(days=3, hours=12)
    late = accounts.loc[pd.to_datetime(accounts["contract_start"]) > pd.Timestamp(kpis["month"].min() + "-01")
                        + pd.Timedelta(days=40), ["account_id", "contract_start"]].head(2)
    rows = [(f"ZZ{i}", "ghost", dt.datetime(2025, 3, 1 + i, 12), "login", np.nan) for i in range(3)]
    rows += [(accounts["account_id"].iloc[i], "u1", after.to_pydatetime(), "login", np.nan) for i in range(2)]
    rows += [(a, "u1", (pd.Timestamp(s) - pd.Timedelta(days=20)).to_pydatetime(), "login", np.nan)
             for a, s in late.itertuples(index=False)]
    del rng
    return pd.DataFrame(rows, columns=["account_id", "user_id", "local", "event", "value"])
