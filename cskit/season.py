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

import copy
import hashlib
import weakref
from types import SimpleNamespace

import numpy as np
import pandas as pd

from cskit.notices import Notice

ALPHA = 0.01  # level of the test of month-of-year effects on churn (11 df; a marked season only)
MIN_SPAN = 24  # months of data needed (two calendar years: each month observed about twice)
NONE = "all"  # the churn_season level when no season is modelled
# the panel columns the test reads (the last only when present: a late data window)
GLM_MODULE = "statsmodels.genmod.generalized_linear_model"  # what the test fits with (imported when it runs)
COLUMNS = ("month", "tenure", "churn", "at_risk", "contract_type", "segment", "months_observed")


def churn_seasonality(panel: pd.DataFrame, min_events: int) -> dict:
    """The month-of-year test on the panel's churn decisions (a dict for result files and notices).

    Keys: ``code`` ("seasonal_churn" when adjusted for, "no_seasonal_churn" when tested and not
    found, "seasonality_not_tested" when the data are too short or have too few churns), ``detected``,
    ``p_value``, ``statistic``, ``df``, ``span_months``, ``events``, ``peak_month`` and ``hazard_ratio``
    (each calendar month's hazard ratio against the average month, geometric mean 1).
    """
    if any(c not in panel for c in COLUMNS[:-1]):
        return {"code": "seasonality_not_tested", "detected": False, "p_value": None, "statistic": None, "df": None,
                "span_months": 0, "events": 0, "peak_month": None, "hazard_ratio": {}, "alpha": ALPHA}
    tenure = _values(panel, "tenure")
    rows = _values(panel, "at_risk", bool) & (tenure >= 1)
    window = np.ones(len(tenure), dtype=bool)
    if "months_observed" in panel:  # a late data window: the months before it hold no churn information
        observed = _values(panel, "months_observed")
        window, rows = observed >= 0, rows & (observed >= 1)
    month = _values(panel, "month", "datetime64[ns]")
    seen = month[window]
    span = int(len(pd.unique(seen[~np.isnat(seen)])))  # distinct months (hashed, not sorted)
    churn = _values(panel, "churn")[rows]
    events = int(churn.sum())
    out = {"code": "seasonality_not_tested", "detected": False, "p_value": None, "statistic": None, "df": None,
           "span_months": span, "events": events, "peak_month": None, "hazard_ratio": {}, "alpha": ALPHA}
    if span < MIN_SPAN or events < min_events or events == int(rows.sum()):
        return out
    cells = _cells(_months(month[rows]), tenure[rows], churn, panel["contract_type"][rows], panel["segment"][rows])
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
    from scipy.stats import chi2

    p = float(chi2.sf(stat, df)) if df else 1.0
    coef = np.r_[0.0, alt.params[-df:]] if df else np.zeros(len(months))
    hr = np.exp(coef - coef.mean())
    out.update(code="seasonal_churn" if p < ALPHA else "no_seasonal_churn", detected=bool(p < ALPHA),
               p_value=p, statistic=float(stat), df=df, peak_month=int(months[int(np.argmax(hr))]),
               hazard_ratio={int(m): round(float(h), 4) for m, h in zip(months, hr)})
    return out


_TESTED: list[tuple] = []  # (weak reference to a panel, its test columns' memory, min_events, the result)


def _memory(panel: pd.DataFrame) -> tuple:
    """Where the panel's test columns (:data:`COLUMNS`) live: their data pointers and lengths (a column
    replaced, or a frame derived from the panel, has other memory)."""
    out = []
    for c in COLUMNS:
        if c in panel:
            values = panel[c].to_numpy()
            out.append((c, values.__array_interface__["data"][0], len(values), str(values.dtype)))
    return tuple(out)


def remember(panel: pd.DataFrame, min_events: int, result: dict) -> None:
    """Keep ``result``, :func:`churn_seasonality` of ``panel``'s test columns with ``min_events``, made
    while the panel was built (``cskit.panel.build_panel``), for :func:`tested` while the panel and
    those columns live: the test is not made twice on the same values (0.7 s at 100k accounts)."""
    live = [e for e in _TESTED if e[0]() is not None and e[0]() is not panel]
    _TESTED[:] = [*live[-1:], (weakref.ref(panel), _memory(panel), min_events, copy.deepcopy(result))]


def tested(panel: pd.DataFrame, min_events: int) -> dict:
    """:func:`churn_seasonality` of ``panel``: the result :func:`remember` kept for this panel (the same
    object, its test columns in the same memory, the same ``min_events``), a copy; else the test made now."""
    for ref, memory, events, result in _TESTED:
        if ref() is panel and events == min_events and memory == _memory(panel):
            return copy.deepcopy(result)
    return churn_seasonality(panel, min_events)


def _values(panel, name: str, dtype=None) -> np.ndarray:
    """Column ``name`` of a frame, or of a dict of arrays (the panel's columns before it is framed)."""
    column = panel[name]
    return column.to_numpy(dtype=dtype) if hasattr(column, "to_numpy") else np.asarray(column, dtype=dtype)


def _months(dates: np.ndarray) -> np.ndarray:
    """Months since 1970-01 of datetime64[ns] values (``astype("datetime64[M]")``; by the panel's table of
    days when none is NaT)."""
    from cskit.panel import month_index  # (the panel imports this module)

    return dates.astype("datetime64[M]").astype(np.int64) if np.isnat(dates).any() else month_index(dates)


def renewal_strata(rows: pd.DataFrame) -> np.ndarray:
    """Each row's stratum for the season test: "monthly", or a non-monthly contract's type with the
    calendar month its contract started (its renewal month). A term contract decides only at its
    anniversaries, so its decisions fall in the calendar month it started (and that month + c for a
    c-month cycle): when many contracts start in one month (the data's first month, a fiscal year),
    the renewal hazard itself would pass for a season. Within a stratum only the calendar months of
    its own decisions differ, so the season is read from what is left (the monthly contracts' months,
    a shorter cycle's two renewal months)."""
    month = rows["month"].to_numpy(dtype="datetime64[ns]").astype("datetime64[M]").astype(np.int64)
    return _strata(rows["contract_type"], month, rows["tenure"].to_numpy())


def _strata(contract_type: pd.Series, month: np.ndarray, tenure: np.ndarray) -> np.ndarray:
    """:func:`renewal_strata` of rows given as arrays (``month``: months since 1970-01)."""
    codes, strata = _strata_codes(contract_type, month, tenure)
    return strata[codes] if len(strata) else np.array([], dtype=str)


def _strata_codes(contract_type: pd.Series, month: np.ndarray, tenure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each row's stratum as its rank among the sorted distinct strata, those strata): from the few
    (contract type, start month) labels, with no text made per row."""
    from cskit.panel import factorize_runs  # (the panel imports this module)

    kind, kinds = factorize_runs(as_text(contract_type))  # (an account's rows together: a few runs each)
    if not len(kinds):
        return np.zeros(0, dtype=np.int64), np.array([], dtype=str)
    started = (month - tenure) % 12 + 1  # (month − tenure) % 12: the start's calendar month − 1
    labels = np.array([["monthly" if k == "monthly" else f"{k}:{m}" for m in range(13)] for k in kinds], dtype=str)
    strata, rank = np.unique(labels, return_inverse=True)  # sorted; the same label, the same rank
    return rank.reshape(labels.shape)[kind, started], strata


def as_text(labels: pd.Series) -> np.ndarray:
    """``labels.astype(str)`` as an array; labels that are all text already are taken as they are (no
    conversion of every row; the rule every reader of labels as text follows)."""
    labels = labels if isinstance(labels, pd.Series) else pd.Series(np.asarray(labels), copy=False)
    values = labels.to_numpy()
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values
    return labels.astype(str).to_numpy()


def _cells(month: np.ndarray, tenure: np.ndarray, churn: np.ndarray, contract_type: pd.Series,
           segment: pd.Series) -> pd.DataFrame:
    """The test's grouped rows: churns ``k`` of ``n`` decisions per calendar time ``t`` (months since the
    first), calendar month ``cal``, renewal stratum, segment and tenure, sorted by those keys (strata and
    segments in their sorted order; a row without a segment is left out, as pandas' groupby does)."""
    stratum, strata = _strata_codes(contract_type, month, tenure)
    from cskit.panel import factorize_runs  # (the panel imports this module)

    seg, segments = (factorize_runs(np.asarray(segment), sort=True)
                     if not isinstance(segment.dtype, pd.CategoricalDtype) else pd.factorize(segment, sort=True))
    ok = seg >= 0
    t = month - month.min() if len(month) else month
    if not ok.any() or tenure[ok].min() < 0:
        return _cells_by_groupby(month, t, stratum, strata, seg, segments, tenure, churn, ok)
    # one integer key per row, in the groupby's order (t, then cal: a function of t, stratum, segment,
    # tenure); its distinct values hashed, the few cells sorted
    every = bool(ok.all())  # (every row has a segment: no row left out, no copy of the columns)
    t_, stratum_, seg_, tenure_ = (x if every else x[ok] for x in (t, stratum, seg, tenure))
    sizes = [int(x.max()) + 1 for x in (t_, stratum_, seg_, tenure_)]
    if np.prod([float(z) for z in sizes]) >= 2.0**62:
        return _cells_by_groupby(month, t, stratum, strata, seg, segments, tenure, churn, ok)
    key = ((t_ * sizes[1] + stratum_) * sizes[2] + seg_) * sizes[3] + tenure_
    codes, uniq = pd.factorize(key)
    order = np.argsort(uniq)
    k = np.bincount(codes, weights=churn if every else churn[ok], minlength=len(uniq))[order].astype(np.int64)
    n = np.bincount(codes, minlength=len(uniq))[order].astype(np.int64)
    key = uniq[order]
    key, ten = np.divmod(key, sizes[3])
    key, sg = np.divmod(key, sizes[2])
    tt, st = np.divmod(key, sizes[1])
    return pd.DataFrame({"t": tt.astype(t.dtype), "cal": ((tt + month.min()) % 12 + 1).astype(np.int32),
                         "stratum": np.asarray(strata, dtype=object)[st],
                         "segment": np.asarray(segments, dtype=object)[sg], "tenure": ten.astype(tenure.dtype),
                         "k": k, "n": n})


def _cells_by_groupby(month, t, stratum, strata, seg, segments, tenure, churn, ok) -> pd.DataFrame:
    """:func:`_cells` by pandas' groupby (keys too wide for one integer, negative tenures)."""
    keys = pd.DataFrame({"t": t, "cal": (month % 12 + 1).astype(np.int32), "stratum": stratum,
                         "segment": seg, "tenure": tenure, "churn": churn, "n": 1})
    cells = (
        keys.loc[ok]
        .groupby(["t", "cal", "stratum", "segment", "tenure"], sort=True)
        .agg(k=("churn", "sum"), n=("n", "sum"))
        .reset_index()
    )
    cells["stratum"] = np.asarray(strata, dtype=object)[cells["stratum"].to_numpy()]
    cells["segment"] = np.asarray(segments, dtype=object)[cells["segment"].to_numpy()]
    return cells


def seasonal_notice(result: dict, stage: str) -> Notice:
    """The coded notice that churn was adjusted for the calendar month (code ``seasonal_churn``)."""
    peak = result["peak_month"]
    return Notice("seasonal_churn", stage=stage, severity="note", peak_month=peak,
                  hazard_ratio=result["hazard_ratio"].get(peak), p_value=result["p_value"], df=result["df"])


def _fit(y: np.ndarray, X: np.ndarray):
    """The cloglog binomial GLM's log-likelihood and coefficients (``llf``, ``params``; None when it fails).
    The panel, the triggers and the health score each ask for the same test: a fit is kept by its exact
    inputs (bytes of ``y`` and ``X``) and given again, not recomputed."""
    key = hashlib.sha256(b"%r%r" % (y.shape, X.shape) + y.tobytes() + X.tobytes()).digest()
    if key in _FITS:
        return _FITS[key]
    # here: the loader, the panel and the CLI's check import this module; statsmodels' GLM alone (not
    # statsmodels.api: ~0.26 s more of imports, beside the loader, holding the interpreter)
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    link = families.links.CLogLog()
    try:
        res = GLM(y, X, family=families.Binomial(link=link)).fit(maxiter=100, tol=1e-10)
        fit = SimpleNamespace(llf=float(res.llf), params=np.asarray(res.params)) if np.isfinite(res.llf) else None
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        fit = None
    while len(_FITS) >= 8:
        _FITS.pop(next(iter(_FITS)))
    _FITS[key] = fit
    return fit


_FITS: dict[bytes, SimpleNamespace | None] = {}


def season_column(panel: pd.DataFrame, result: dict) -> np.ndarray:
    """The panel's ``churn_season``: the calendar month ("01"–"12") where seasonality was detected,
    else the constant :data:`NONE` (a single level: no model term). ``panel``: a frame, or a dict of its
    columns' arrays."""
    month = _values(panel, "month", "datetime64[ns]")
    if not result["detected"]:
        out = np.empty(len(month), dtype=object)
        out[:] = NONE  # one string shared by every row (np.full makes a string object per row: 60 bytes each)
        return out
    calendar = month.astype("datetime64[M]").astype(np.int64) % 12
    calendar[np.isnat(month)] = 12
    return np.array([f"{m:02d}" for m in range(1, 13)] + [np.nan], dtype=object)[calendar]
