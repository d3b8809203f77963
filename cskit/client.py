"""The loaded client: its tables in canonical form, and the count of every row read, used or excluded."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cskit.catalogue import KPI
from cskit.notices import Notice, records
from cskit.result import write_json


@dataclass
class Quality:
    """Rows read, used and excluded per table and reason, plus the loader's coded notices
    (``warnings``: :class:`cskit.notices.Notice`, written as records to ``results/quality.json``).

    Invariant, per table: ``read == used + sum(excluded.values())``.
    """

    tables: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    data_window: dict = field(default_factory=dict)  # cskit.panel.data_window: left truncation
    renewals: dict = field(default_factory=dict)  # cskit.panel.renewal_evidence: term renewals observed

    def read(self, table: str, n: int) -> None:
        self.tables[table] = {"read": int(n), "used": int(n), "excluded": {}}

    def exclude(self, table: str, reason: str, n: int) -> None:
        if n <= 0:
            return
        t = self.tables[table]
        t["excluded"][reason] = t["excluded"].get(reason, 0) + int(n)
        t["used"] -= int(n)

    def warn(self, notice: "Notice | str") -> None:
        """Record a coded notice (cskit.notices.Notice) of the loader."""
        self.warnings.append(notice)

    def is_consistent(self) -> bool:
        return all(t["read"] == t["used"] + sum(t["excluded"].values()) for t in self.tables.values())

    def to_dict(self) -> dict:
        out = {"tables": self.tables, "warnings": records(self.warnings)}
        if self.data_window:
            out["data_window"] = self.data_window
        if self.renewals:
            out["renewals"] = self.renewals
        return out

    def write(self, path: Path) -> None:
        write_json(self.to_dict(), path)


@dataclass
class ClientData:
    """A client's tables after loading and validation (see docs/architecture.md for the exact columns).

    - ``accounts``: account_id (str), contract_start, churn_date (datetime64, NaT = active), segment,
      plan, contract_type ("monthly"|"annual"), referred_by (str or NA), health_score (float or NA),
      plus numeric static KPI columns (those listed in ``static_kpis``) and, when the data name the
      accounts, ``account_name`` (str; see ``loading.NAME_COLUMNS``).
    - ``revenue``: account_id, month (datetime64, first day of month), mrr (float >= 0), product (str).
    - ``kpis``: account_id, month, one float column per KPI (NaN = not measured).
    - ``nps``: account_id, date, score (int 0-10), role (str or NA); or None.
    - ``events``: account_id, user_id, ts, event, value; or None.
    """

    accounts: pd.DataFrame
    revenue: pd.DataFrame
    kpis: pd.DataFrame
    nps: pd.DataFrame | None
    events: pd.DataFrame | None
    as_of: pd.Timestamp  # first day of the analysis month
    catalogue: dict[str, KPI]
    static_kpis: list[str]
    quality: Quality = field(default_factory=Quality)

    def __repr__(self) -> str:
        tables = ", ".join(f"{n}={len(t)}" for n in ("accounts", "revenue", "kpis", "nps", "events")
                           if (t := getattr(self, n)) is not None)
        return f"ClientData(as_of={pd.Timestamp(self.as_of):%Y-%m}, {tables}, kpis_in_catalogue={len(self.catalogue)})"

    def account_names(self) -> pd.Series:
        """account_id → the account's readable name (``accounts.account_name``, empty text when the data
        have none), for the CRM-ready result files."""
        acc = self.accounts
        names = acc["account_name"] if "account_name" in acc else pd.Series("", index=acc.index, dtype=object)
        return pd.Series(names.fillna("").astype(str).to_numpy(), index=acc["account_id"].to_numpy())
