"""Seasonality of churn: is there a calendar-month (fiscal-period) effect the churn models must adjust for?

A churn shock in one calendar month (the fiscal year's end, budget reviews) that no KPI explains makes
any KPI with the same season (a campaign, a seasonal workload) look like a churn trigger. The test
(docs/methods.md, "Seasonality of churn"): on the churn decisions at risk (the panel's ``at_risk``
rows after the first month of each contract), a grouped discrete-time hazard (binomial GLM, cloglog)
of churn on the renewal stratum (monthly, or a term contract's type × the calendar month it started:
its renewal month, :func:`renewal_strata`), segment, log1p(tenure) and a linear calendar-time trend (so that a drift
over a window of unequal calendar years does not pass for a season), with and without the 11
calendar-month terms; likelihood-ratio χ² test. With at least
``MIN_SPAN`` months of data (two calendar years, counted inside the data window: a late window's
months before its first data month do not count) and the models' event floor
(``cskit.panel.MIN_EVENTS``) of churns, a p-value
below ``ALPHA`` makes the panel's ``churn_season`` column the calendar month, which every churn and
renewal model then adjusts for (``cskit.models.CHURN_ADJUST``); otherwise it is one constant level
and no model changes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy.stats import chi2

from cskit.notices import Notice

ALPHA = 0.01  # level of the test of month-of-year effects on churn (11 df; a marked season only)
MIN_SPAN = 24  # months of data needed (two calendar years: each month observed about twice)
NONE = "all"  # the churn_season level when no season is modelled


def churn_seasonality(panel: pd.DataFrame, min_events: int) -> dict:
    """The month-of-year test on the panel's churn decisions (a dict for result files and notices).

    Keys: ``code`` ("seasonal_churn" when adjusted for, "no_seasonal_churn" when tested and not
    found, "seasonality_not_tested" when the data are too short or have too few churns), ``detected``,
    ``p_value``, ``statistic``, ``df``, ``span_months``, ``events``, ``peak_month`` and ``hazard_ratio``
    (each calendar month's hazard ratio against the average month, geometric mean 1).
    """
    need = ("month", "tenure", "churn", "at_risk", "contract_type", "segment")
    if any(c not in panel for c in need):
        return {"code": "seasonality_not_tested", "detected": False, "p_value": None, "statistic": None, "df": None,
                "span_months": 0, "events": 0, "peak_month": None, "hazard_ratio": {}, "alpha": ALPHA}
    rows = panel["at_risk"].to_numpy(dtype=bool) & (panel["tenure"].to_numpy() >= 1)
    window = np.ones(len(panel), dtype=bool)
    if "months_observed" in panel:  # a late data window: the months before it hold no churn information
        window = panel["months_observed"].to_numpy() >= 0
        rows &= panel["months_observed"].to_numpy() >= 1
    sub = panel.loc[rows, ["month", "tenure", "churn", "contract_type", "segment"]]
    sub = sub.assign(stratum=renewal_strata(sub))
    span = int(panel.loc[window, "month"].nunique())
    events = int(sub["churn"].sum())
    out = {"code": "seasonality_not_tested", "detected": False, "p_value": None, "statistic": None, "df": None,
           "span_months": span, "events": events, "peak_month": None, "hazard_ratio": {}, "alpha": ALPHA}
    if span < MIN_SPAN or events < min_events or events == len(sub):
        return out
    first = sub["month"].min()
    t = (sub["month"].dt.year - first.year) * 12 + sub["month"].dt.month - first.month
    cells = (
        sub.assign(cal=sub["month"].dt.month, t=t, n=1)
        .groupby(["t", "cal", "stratum", "segment", "tenure"], sort=True, observed=True)
        .agg(k=("churn", "sum"), n=("n", "sum"))
        .reset_index()
    )
    trend = cells["t"].to_numpy(dtype="float64") / 12.0
    base = [np.ones(len(cells)), np.log1p(cells["tenure"].to_numpy(dtype="float64")), trend]
    for col in ("stratum", "segment"):
        levels = sorted(cells[col].astype(str).unique())
        base += [(cells[col].astype(str) == lv).to_numpy(dtype="float64") for lv in levels[1:]]
    months = sorted(cells["cal"].unique())
    season = [(cells["cal"] == m).to_numpy(dtype="float64") for m in months[1:]]
    y = np.column_stack([cells["k"], cells["n"] - cells["k"]]).astype("float64")
    null, alt = _fit(y, np.column_stack(base)), _fit(y, np.column_stack(base + season))
    if null is None or alt is None:
        return out
    stat = max(0.0, 2 * (alt.llf - null.llf))
    df = len(season)
    p = float(chi2.sf(stat, df)) if df else 1.0
    coef = np.r_[0.0, alt.params[-df:]] if df else np.zeros(len(months))
    hr = np.exp(coef - coef.mean())
    out.update(code="seasonal_churn" if p < ALPHA else "no_seasonal_churn", detected=bool(p < ALPHA),
               p_value=p, statistic=float(stat), df=df, peak_month=int(months[int(np.argmax(hr))]),
               hazard_ratio={int(m): round(float(h), 4) for m, h in zip(months, hr)})
    return out


def renewal_strata(rows: pd.DataFrame) -> np.ndarray:
    """Each row's stratum for the season test: "monthly", or a non-monthly contract's type with the
    calendar month its contract started (its renewal month). A term contract decides only at its
    anniversaries, so its decisions fall in the calendar month it started (and that month + c for a
    c-month cycle): when many contracts start in one month (the data's first month, a fiscal year),
    the renewal hazard itself would pass for a season. Within a stratum only the calendar months of
    its own decisions differ, so the season is read from what is left (the monthly contracts' months,
    a shorter cycle's two renewal months)."""
    kind = rows["contract_type"].astype(str).to_numpy()
    started = (rows["month"].dt.month.to_numpy() - 1 - rows["tenure"].to_numpy()) % 12 + 1
    return np.where(kind == "monthly", "monthly", np.char.add(np.char.add(kind.astype(str), ":"),
                                                              started.astype(str)))


def seasonal_notice(result: dict, stage: str) -> Notice:
    """The coded notice that churn was adjusted for the calendar month (code ``seasonal_churn``)."""
    peak = result["peak_month"]
    return Notice("seasonal_churn", stage=stage, severity="note", peak_month=peak,
                  hazard_ratio=result["hazard_ratio"].get(peak), p_value=result["p_value"], df=result["df"])


def _fit(y: np.ndarray, X: np.ndarray):
    link = sm.families.links.CLogLog()
    try:
        res = sm.GLM(y, X, family=sm.families.Binomial(link=link)).fit(maxiter=100, tol=1e-10)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        return None
    return res if np.isfinite(res.llf) else None


def season_column(panel: pd.DataFrame, result: dict) -> np.ndarray:
    """The panel's ``churn_season``: the calendar month ("01"–"12") where seasonality was detected,
    else the constant :data:`NONE` (a single level: no model term)."""
    if not result["detected"]:
        return np.full(len(panel), NONE, dtype=object)
    return panel["month"].dt.strftime("%m").to_numpy(dtype=object)
