"""SaaS metrics (DESIGN §5): MRR bridge, churn rates, GRR/NRR, upsell rate, ARPA, simple LTV, NPS, cohorts.

Choices (docs/methods.md gives them in full, with references):
- The MRR bridge and the monthly rates follow ChartMogul's conventions on the **revenue table** alone:
  MRR per account-month is the sum of its revenue rows (a missing account-month is 0). A month in
  which an account's MRR goes from > 0 to 0 is a churn, and a later return to > 0 a reactivation, even
  when the contract table says the account never left. Amounts are summed in whole hundredths of the
  currency unit (int64), so ``mrr_start + new + expansion + reactivation − contraction − churn ==
  mrr_end`` holds exactly, in hundredths.
- The customer churn rate counts an account as churned in the month its MRR goes to 0, out of the
  accounts paying at the start of that month (= in the previous month): an account that starts and
  stops in the same month is in neither count (ChartMogul).
- Trailing-12-month rates pool the 12 months (Σ numerators / Σ denominators): a monthly rate
  weighted by exposure, not a mean of monthly rates.
- GRR/NRR compare, account by account, the MRR of the accounts paying 12 months before ``as_of``
  with their MRR at ``as_of`` (point-to-point): expansion = Σ increases, contraction = Σ decreases
  still > 0, churn = Σ MRR₀ of accounts at 0.
- Cohorts (logo and revenue retention) use the panel, i.e. contracts: cohort = contract start month;
  an account is retained at month k if its contract had not ended by the end of month k — the same
  event as Kaplan–Meier's S(k) in ``cskit.survival``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cskit.client import ClientData
from cskit.notices import Notice
from cskit.panel import factorize_runs, month_index, month_start
from cskit.params import Params
from cskit.result import StageResult, write_json
from cskit.season import as_text

BRIDGE_COLUMNS = ["month", "mrr_start", "new", "expansion", "reactivation", "contraction", "churn", "mrr_end"]
MOVEMENTS = ["new", "expansion", "reactivation", "contraction", "churn"]
RATE_COLUMNS = [
    "month",
    "accounts_start",
    "churned",
    "customer_churn_rate",
    "revenue_churn_rate_start_base",
    "revenue_churn_rate_remaining_base",
    "gross_revenue_churn",
    "net_revenue_churn",
    "retention_rate",
]
COHORT_COLUMNS = ["cohort", "months_since_start", "accounts", "retention", "revenue_retention"]
NPS_COLUMNS = ["group_by", "group", "answers", "promoters", "passives", "detractors", "nps"]
WINDOW = 12


@dataclass(repr=False)
class Metrics(StageResult):
    """The SaaS metrics of one client. Money in the client's currency; rates as fractions (0.15 = 15%)."""

    mrr_bridge: pd.DataFrame
    rates: pd.DataFrame
    cohorts: pd.DataFrame
    nps: pd.DataFrame
    grr_nrr: dict
    summary: dict = field(default_factory=dict)

    def summary_items(self) -> dict:
        value = {k: (self.summary.get(k) or {}).get("value") for k in ("mrr", "paying_accounts", "grr", "nrr")}
        return {"months": len(self.mrr_bridge), **value,
                "customer_churn_rate": (self.summary.get("customer_churn_rate") or {}).get("value")}

    def write(self, results_dir: Path) -> None:
        """Write mrr_bridge.csv, cohorts.csv and kpi_summary.json (byte-reproducible)."""
        results_dir = Path(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        bridge = self.mrr_bridge.assign(month=_month_text(self.mrr_bridge["month"]))
        bridge.to_csv(results_dir / "mrr_bridge.csv", index=False, float_format="%.2f", lineterminator="\n")
        cohorts = self.cohorts.assign(cohort=_month_text(self.cohorts["cohort"]))
        cohorts.to_csv(results_dir / "cohorts.csv", index=False, float_format="%.6f", lineterminator="\n")
        write_json(self.summary, results_dir / "kpi_summary.json")


def compute_metrics(panel: pd.DataFrame, data: ClientData, params: Params) -> Metrics:
    """All SaaS metrics of DESIGN §5 except the survival-based LTV (the pipeline adds ``ltv_survival``).

    Parameters
    ----------
    panel, data, params : DataFrame, ClientData, Params
        The stage signature (docs/architecture.md): the account × month panel, the loaded client and
        the run's params.

    Returns
    -------
    Metrics
        MRR bridge, rates, cohorts, NPS, GRR / NRR and the headline ``summary`` (kpi_summary.json).

    Examples
    --------
    >>> m = compute_metrics(dx.panel, dx.data, dx.params)  # doctest: +SKIP
    >>> m.summary["mrr"]["value"]  # doctest: +SKIP
    """
    am = account_month_mrr(data.revenue, data.as_of)
    first = int(am["mi"].min()) if len(am) else _mi(data.as_of)
    opening = data.accounts.loc[month_index(data.accounts["contract_start"]) < first, "account_id"]
    moves = revenue_movements(am, data.as_of)  # (the bridge's and the rates')
    bridge = mrr_bridge(am, data.as_of, opening=opening, moves=moves)
    rates = monthly_rates(am, bridge, moves=moves)
    grr_nrr = grr_nrr_trailing(am, data.as_of)
    cohorts = cohort_retention(panel, data.as_of)
    nps = nps_table(data.nps, data.accounts, data.as_of)
    summary = _summary(panel, data, params, am, bridge, rates, grr_nrr, nps)
    return Metrics(mrr_bridge=bridge, rates=rates, cohorts=cohorts, nps=nps, grr_nrr=grr_nrr, summary=summary)


def _mi(month) -> int:
    return int(month_index(pd.Series([pd.Timestamp(month)]))[0])


def account_month_mrr(revenue: pd.DataFrame, as_of) -> pd.DataFrame:
    """MRR per account and month up to ``as_of``: account_id, mi (months since 1970-01), cents (> 0).

    Revenue rows of the same account-month are summed (products); amounts in whole hundredths.
    """
    mi = month_index(revenue["month"])
    cents = np.rint(revenue["mrr"].to_numpy(dtype="float64") * 100).astype(np.int64)
    ids = as_text(revenue["account_id"])  # (the loader's ids are text already)
    keep = (mi >= 0) & (mi <= _mi(as_of))
    if not keep.any():
        df = pd.DataFrame({"account_id": ids[keep], "mi": mi[keep], "cents": cents[keep]})
        return df.groupby(["account_id", "mi"], sort=True, as_index=False)["cents"].sum()
    # sum by account (in id order) and month: integer codes, one stable sort, exact integer sums
    codes, distinct = factorize_runs(ids[keep] if not keep.all() else ids, sort=True)
    months, cents = (mi[keep], cents[keep]) if not keep.all() else (mi, cents)
    low, span = int(months.min()), int(months.max() - months.min()) + 1
    key = codes.astype(np.int64) * span + (months - low)
    if not (key[1:] >= key[:-1]).all():  # (the loader's order is the key's)
        order = np.argsort(key, kind="stable")
        key, cents = key[order], cents[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    total = np.add.reduceat(cents, starts)
    paid = total > 0  # (kept before the frame is made: one frame, not a filtered copy of it)
    starts, total = (starts[paid], total[paid]) if not paid.all() else (starts, total)
    return pd.DataFrame({"account_id": np.asarray(distinct, dtype=object)[key[starts] // span],
                         "mi": key[starts] % span + low, "cents": total})


def revenue_movements(am: pd.DataFrame, as_of) -> pd.DataFrame:
    """One row per MRR movement: account_id, mi, kind (new|expansion|reactivation|contraction|churn), cents.

    ``am`` is :func:`account_month_mrr`'s result. A churn is dated the first month with 0 MRR after a
    paid month, and only up to ``as_of``; a later paid month of the same account is a reactivation.
    """
    acc = am["account_id"].to_numpy()
    mi = am["mi"].to_numpy()
    cents = am["cents"].to_numpy()
    same_prev = np.r_[False, acc[1:] == acc[:-1]]
    consecutive = same_prev & (np.r_[-10, mi[:-1]] == mi - 1)
    prev = np.where(consecutive, np.r_[0, cents[:-1]], 0)
    kinds = [
        ("new", ~same_prev, cents),
        ("reactivation", same_prev & ~consecutive, cents),
        ("expansion", consecutive & (cents > prev), cents - prev),
        ("contraction", consecutive & (cents < prev), prev - cents),
    ]
    frames = [pd.DataFrame({"account_id": acc[m], "mi": mi[m], "kind": k, "cents": v[m]}) for k, m, v in kinds]
    next_consecutive = np.r_[consecutive[1:], False]
    stops = ~next_consecutive & (mi + 1 <= _mi(as_of))
    frames.append(pd.DataFrame({"account_id": acc[stops], "mi": mi[stops] + 1, "kind": "churn", "cents": cents[stops]}))
    return pd.concat(frames, ignore_index=True)


def mrr_bridge(am: pd.DataFrame, as_of, opening=None, moves: pd.DataFrame | None = None) -> pd.DataFrame:
    """Monthly MRR bridge from the first month with revenue to ``as_of`` (money as float).

    Computed in hundredths, so start + new + expansion + reactivation − contraction − churn == end
    exactly (in hundredths), and end == the revenue total of the month. ``opening``: accounts that were
    customers before the revenue history begins (contract_start earlier); their MRR in the first month
    is the opening balance (``mrr_start``), not new business. ``moves``: :func:`revenue_movements` of
    ``am`` and ``as_of``, when already made.
    """
    last = _mi(as_of)
    months = np.arange(int(am["mi"].min()) if len(am) else last, last + 1)
    moves = revenue_movements(am, as_of) if moves is None else moves
    cents = moves.pivot_table(index="mi", columns="kind", values="cents", aggfunc="sum", fill_value=0)
    cents = cents.reindex(index=months, columns=MOVEMENTS, fill_value=0).astype(np.int64)
    end = am.groupby("mi")["cents"].sum().reindex(months, fill_value=0).to_numpy(dtype=np.int64)
    cents["mrr_end"] = end
    start = np.r_[0, end[:-1]]
    if opening is not None and len(am):
        first = am[(am["mi"] == months[0]) & am["account_id"].isin(set(map(str, opening)))]["cents"].sum()
        start[0] = first
        cents.loc[months[0], "new"] -= first
    cents["mrr_start"] = start
    out = cents[BRIDGE_COLUMNS[1:]] / 100.0
    out.columns.name = None
    out.insert(0, "month", month_start(months))
    return out.reset_index(drop=True)


def monthly_rates(am: pd.DataFrame, bridge: pd.DataFrame, moves: pd.DataFrame | None = None) -> pd.DataFrame:
    """Customer and revenue churn rates per month of the bridge (NaN where nothing was paying at start).

    ``accounts_start`` = accounts paying in the previous month; ``churned`` = those at 0 this month.
    ``moves``: :func:`revenue_movements` of ``am`` up to the bridge's last month, when already made.
    """
    months = month_index(bridge["month"])
    if moves is None:
        moves = revenue_movements(am, month_start(months[-1:])[0])
    paying = am.groupby("mi").size().reindex(months, fill_value=0).to_numpy()
    accounts_start = np.r_[0, paying[:-1]]
    churned = moves[moves["kind"] == "churn"].groupby("mi").size().reindex(months, fill_value=0).to_numpy()
    out = pd.DataFrame({"month": bridge["month"], "accounts_start": accounts_start, "churned": churned})
    out = pd.concat([out, _rate_columns(accounts_start, churned, bridge)], axis=1)
    return out[RATE_COLUMNS]


def _ratio(num, den):
    num = np.asarray(num, dtype="float64")
    den = np.asarray(den, dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _rate_columns(accounts_start, churned, b: pd.DataFrame) -> pd.DataFrame:
    start, churn, contraction = b["mrr_start"].to_numpy(), b["churn"].to_numpy(), b["contraction"].to_numpy()
    gained = b["expansion"].to_numpy() + b["reactivation"].to_numpy()
    customer = _ratio(churned, accounts_start)
    return pd.DataFrame(
        {
            "customer_churn_rate": customer,
            "revenue_churn_rate_start_base": _ratio(churn, start),
            "revenue_churn_rate_remaining_base": _ratio(churn, start - churn),
            "gross_revenue_churn": _ratio(churn + contraction, start),
            "net_revenue_churn": _ratio(churn + contraction - gained, start),
            "retention_rate": 1.0 - customer,
        },
        index=b.index,
    )


def trailing_rates(rates: pd.DataFrame, bridge: pd.DataFrame, as_of, window: int = WINDOW) -> dict:
    """The monthly rates pooled over the last ``window`` months to ``as_of`` (Σ numerators / Σ denominators)."""
    mi = month_index(bridge["month"])
    sel = (mi > _mi(as_of) - window) & (mi <= _mi(as_of))
    r, b = rates[sel], bridge[sel]
    sums = pd.DataFrame({c: [b[c].sum()] for c in BRIDGE_COLUMNS[1:]})
    pooled = _rate_columns(np.array([r["accounts_start"].sum()]), np.array([r["churned"].sum()]), sums)
    return {c: float(pooled[c].iloc[0]) for c in pooled.columns} | {"months": int(sel.sum())}


def grr_nrr_trailing(am: pd.DataFrame, as_of, window: int = WINDOW) -> dict:
    """GRR and NRR over the ``window`` months to ``as_of`` on the accounts paying at ``as_of − window``.

    Point-to-point per account: MRR₀ at as_of − window, MRR₁ at as_of; expansion = Σ max(MRR₁ − MRR₀, 0),
    contraction = Σ (MRR₀ − MRR₁) where 0 < MRR₁ < MRR₀, churn = Σ MRR₀ where MRR₁ = 0.
    GRR = (MRR₀ − contraction − churn)/MRR₀; NRR = (MRR₀ + expansion − contraction − churn)/MRR₀.
    Returns the components (money), ``accounts``, ``base_month`` and ``grr``/``nrr`` (None when no
    account paid at as_of − window).
    """
    base_mi = _mi(as_of) - window
    m0 = am[am["mi"] == base_mi].set_index("account_id")["cents"]
    m1 = am[am["mi"] == _mi(as_of)].set_index("account_id")["cents"].reindex(m0.index, fill_value=0)
    d = (m1 - m0).to_numpy()
    m1v = m1.to_numpy()
    cents = {
        "mrr0": int(m0.sum()),
        "expansion": int(d[d > 0].sum()),
        "contraction": int(-d[(d < 0) & (m1v > 0)].sum()),
        "churn": int(m0.to_numpy()[m1v == 0].sum()),
        "mrr1": int(m1v.sum()),
    }
    out = {k: v / 100.0 for k, v in cents.items()}
    out["accounts"] = int(len(m0))
    out["base_month"] = _month_text(month_start([base_mi]))[0]
    if cents["mrr0"] == 0:
        return out | {"grr": None, "nrr": None}
    out["grr"] = (cents["mrr0"] - cents["contraction"] - cents["churn"]) / cents["mrr0"]
    out["nrr"] = (cents["mrr0"] + cents["expansion"] - cents["contraction"] - cents["churn"]) / cents["mrr0"]
    return out


def cohort_retention(panel: pd.DataFrame, as_of) -> pd.DataFrame:
    """Logo and revenue retention by contract-start month × months since start (long format).

    ``accounts`` = cohort accounts whose contract had not ended by the end of month k;
    ``retention`` = accounts / cohort size; ``revenue_retention`` = MRR in month k of those accounts /
    MRR of the whole cohort in its start month (NaN when that is 0). Only months up to ``as_of``.
    """
    as_of = _mi(as_of)
    p = panel  # its columns read as they are (no copy of them)
    cohort = month_index(p["month"]) - p["tenure"].to_numpy()
    df = pd.DataFrame(
        {"cohort": cohort, "k": p["tenure"].to_numpy(), "alive": p["churn"].to_numpy() == 0, "mrr": p["mrr"].to_numpy()}
    )
    df = df[df["cohort"] + df["k"] <= as_of]
    size = df[df["k"] == 0].groupby("cohort").size()
    base = df[df["k"] == 0].groupby("cohort")["mrr"].sum()
    alive = df[df["alive"]]
    g = alive.groupby(["cohort", "k"]).agg(accounts=("alive", "size"), mrr=("mrr", "sum"))
    full = pd.MultiIndex.from_tuples(
        [(c, k) for c in size.index for k in range(as_of - c + 1)], names=["cohort", "k"]
    )
    g = g.reindex(full, fill_value=0).reset_index()
    cohorts = g["cohort"].to_numpy()
    out = pd.DataFrame(
        {
            "cohort": month_start(cohorts),
            "months_since_start": g["k"].to_numpy(dtype=np.int64),
            "accounts": g["accounts"].to_numpy(dtype=np.int64),
            "retention": _ratio(g["accounts"], size.reindex(cohorts).to_numpy()),
            "revenue_retention": _ratio(g["mrr"], base.reindex(cohorts).to_numpy()),
        }
    )
    return out[COHORT_COLUMNS]


def nps_table(nps: pd.DataFrame | None, accounts: pd.DataFrame, as_of, window: int = WINDOW) -> pd.DataFrame:
    """NPS of the answers given in the ``window`` months to ``as_of``: overall, by segment, by role.

    NPS = 100 × (promoters (9–10) − detractors (0–6)) / answers, in points; passives are 7–8.
    """
    if nps is None or nps.empty:
        return pd.DataFrame(columns=NPS_COLUMNS)
    mi = month_index(nps["date"])
    answers = nps[(mi > _mi(as_of) - window) & (mi <= _mi(as_of))]
    segment = accounts.set_index("account_id")["segment"] if "segment" in accounts else pd.Series(dtype=object)
    frame = pd.DataFrame(
        {
            "score": pd.to_numeric(answers["score"]).to_numpy(),
            "segment": answers["account_id"].map(segment).fillna("(none)").astype(str).to_numpy(),
            "role": (answers["role"] if "role" in answers else pd.Series("(none)", index=answers.index))
            .fillna("(none)")
            .astype(str)
            .to_numpy(),
        }
    )
    rows = [_nps_row("all", "all", frame["score"])]
    for by in ("segment", "role"):
        for group, scores in frame.groupby(by, sort=True)["score"]:
            rows.append(_nps_row(by, group, scores))
    return pd.DataFrame(rows, columns=NPS_COLUMNS)


def _nps_row(group_by: str, group: str, scores: pd.Series) -> dict:
    n = int(len(scores))
    promoters = int((scores >= 9).sum())
    detractors = int((scores <= 6).sum())
    value = 100.0 * (promoters - detractors) / n if n else np.nan
    return {
        "group_by": group_by,
        "group": group,
        "answers": n,
        "promoters": promoters,
        "passives": n - promoters - detractors,
        "detractors": detractors,
        "nps": value,
    }


def upsell_rate(panel: pd.DataFrame, as_of, window: int = WINDOW) -> tuple[float | None, int]:
    """Share of accounts paying in any of the last ``window`` months with an expansion or cross-sell then.

    Returns (rate or None, number of accounts in the denominator).
    """
    mi = month_index(panel["month"])
    rows = (mi > _mi(as_of) - window) & (mi <= _mi(as_of)) & (panel["mrr"].to_numpy() > 0)
    if not rows.any():
        return None, 0
    event = panel["expansion"].to_numpy()[rows] == 1
    if "cross_sell" in panel:
        event |= panel["cross_sell"].to_numpy()[rows] == 1
    codes, accounts = factorize_runs(panel["account_id"].to_numpy()[rows])  # (groupby(account).any())
    ok = codes >= 0
    per_account = np.bincount(codes[ok], weights=event[ok], minlength=len(accounts)) > 0
    return float(pd.Series(per_account).mean()), int(len(per_account))


def onboarding_rate(panel: pd.DataFrame, data: ClientData) -> tuple[float | None, int]:
    """Share of accounts with ``onboarding_completed`` > 0 among those where it is known.

    From the accounts table (static KPI) when there; else an account counts as onboarded if its
    monthly ``onboarding_completed`` was ever > 0. Returns (rate or None, accounts counted).
    """
    if "onboarding_completed" in data.accounts:
        values = pd.to_numeric(data.accounts["onboarding_completed"], errors="coerce").dropna()
    elif "onboarding_completed" in panel:
        values = panel.groupby("account_id")["onboarding_completed"].max().dropna()
    else:
        return None, 0
    if values.empty:
        return None, 0
    return float((values > 0).mean()), int(len(values))


def _month_text(months) -> list[str]:
    return [m.strftime("%Y-%m") for m in pd.to_datetime(pd.Series(months))]


def _period(first: int, last: int) -> str:
    a, b = _month_text(pd.Series(month_start([first, last])))
    return a if a == b else f"{a}..{b}"


def _note(code: str, **values) -> Notice:
    """Why a headline figure is empty (kept as the entry's ``note``; words in cskit.narrative)."""
    return Notice(code, stage="metrics", severity="note", **values)


def _entry(value, definition: str, period: str, note: str | None = None, **extra) -> dict:
    """One headline figure; floats rounded to 6 decimals, counts kept as integers, NaN/inf → null."""
    if value is not None and not np.isfinite(value):
        value = None
    if isinstance(value, (int, np.integer)):
        value = int(value)
    elif value is not None:
        value = round(float(value), 6)
    out = {"value": value, "definition": definition, "period": period}
    if value is None and note:
        out["note"] = note  # its English words; the code (and values) let the report word it in Japanese
        if isinstance(note, Notice):
            out["note_code"] = note.code
            if note.values:
                out["note_values"] = note.values
    return out | extra


def _summary(panel, data, params, am, bridge, rates, grr_nrr, nps) -> dict:
    as_of = _mi(data.as_of)
    t = trailing_rates(rates, bridge, data.as_of)
    first = int(month_index(bridge["month"]).min())
    t12 = _period(max(first, as_of - WINDOW + 1), as_of)
    now = _period(as_of, as_of)
    at_as_of = am[am["mi"] == as_of]
    mrr = at_as_of["cents"].sum() / 100.0
    paying = int(len(at_as_of))
    arpa = mrr / paying if paying else None
    churn_rate = t["revenue_churn_rate_start_base"]
    ltv_ok = arpa is not None and np.isfinite(churn_rate) and churn_rate > 0
    ltv = arpa * params.gross_margin / churn_rate if ltv_ok else None
    upsell, upsell_n = upsell_rate(panel, data.as_of)
    onboard, onboard_n = onboarding_rate(panel, data)
    base = _period(as_of - WINDOW, as_of)
    short = _note("metric_needs_base_month", month=str(grr_nrr["base_month"]))
    s = {
        "mrr": _entry(mrr, "mrr", now),
        "arr": _entry(12 * mrr, "arr", now),
        "paying_accounts": _entry(paying, "paying_accounts", now),
        "arpa": _entry(arpa, "arpa", now, _note("metric_no_paying_at_as_of")),
        "customer_churn_rate": _entry(t["customer_churn_rate"], "customer_churn_rate", t12, _note("metric_no_paying")),
        "retention_rate": _entry(t["retention_rate"], "retention_rate", t12, _note("metric_no_paying")),
        "revenue_churn_rate_start_base": _entry(
            churn_rate, "revenue_churn_rate_start_base", t12, _note("metric_no_mrr")
        ),
        "revenue_churn_rate_remaining_base": _entry(
            t["revenue_churn_rate_remaining_base"], "revenue_churn_rate_remaining_base", t12, _note("metric_no_mrr")
        ),
        "gross_revenue_churn": _entry(t["gross_revenue_churn"], "gross_revenue_churn", t12, _note("metric_no_mrr")),
        "net_revenue_churn": _entry(t["net_revenue_churn"], "net_revenue_churn", t12, _note("metric_no_mrr")),
        "grr": _entry(grr_nrr["grr"], "grr", base, short, accounts=grr_nrr["accounts"]),
        "nrr": _entry(grr_nrr["nrr"], "nrr", base, short, accounts=grr_nrr["accounts"]),
        "upsell_cross_sell_rate": _entry(
            upsell, "upsell_cross_sell_rate", t12, _note("metric_no_paying"), accounts=upsell_n
        ),
        "onboarding_completion_rate": _entry(
            onboard, "onboarding_completion_rate", now, _note("metric_no_onboarding"), accounts=onboard_n
        ),
        "ltv_simple": _entry(ltv, "ltv_simple", t12, _note("metric_ltv_unbounded")),
        "ltv_survival": _entry(None, "ltv_survival", now, _note("metric_ltv_pending")),
    }
    answered = _period(as_of - WINDOW + 1, as_of)
    for row in nps.itertuples(index=False):
        key = "nps" if row.group_by == "all" else f"nps.{row.group_by}.{row.group}"
        s[key] = _entry(row.nps, "nps", answered, _note("nps_no_answers"), answers=int(row.answers))
    if nps.empty:
        s["nps"] = _entry(None, "nps", answered, _note("nps_no_table"), answers=0)
    return s
