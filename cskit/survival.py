"""Account lifetimes: Kaplan–Meier curves, median lifetimes and log-rank tests (lifelines).

Choices (docs/methods.md, "Survival"):
- Lifetime T = whole months from the contract's start month to its churn month (the panel's tenure
  in its last row); an account still active at ``as_of`` is censored at its tenure at ``as_of``. So
  S(k) = P(T > k) = share whose contract had not ended by the end of month k — the same event as the
  logo retention of the cohort table.
- Curves: lifelines' product-limit estimate with its default pointwise 95% interval (Greenwood
  variance on the log(−log S) scale, R's ``conf.type = "log-log"``).
- Median lifetime: the first month where S ≤ 0.5; its 95% interval is where the interval's bounds
  cross 0.5 (Brookmeyer & Crowley's inversion as in R ``survfit``). A median that the curve never
  reaches is reported as null ("not reached"), as are bounds that are not reached. Where S = 0 the
  interval is undefined (NaN in ``curves``) and not used for the median's interval.
- S(12), the share still customers 12 months after start, with its interval: a figure that exists
  even when the median is not reached (low-churn clients).
- Log-rank test (``multivariate_logrank_test``) for each grouping with ≥ 2 groups: segment, plan,
  contract_type and onboarding status (onboarding_completed > 0) when the panel has them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import median_survival_times

from cskit.client import ClientData
from cskit.panel import factorize_runs, run_starts
from cskit.params import Params
from cskit.result import StageResult, write_json

GROUPINGS = ["segment", "plan", "contract_type", "onboarding"]
CURVE_COLUMNS = ["group_by", "group", "timeline", "survival", "ci_low", "ci_high"]
MEDIAN_COLUMNS = [
    "group_by", "group", "accounts", "churned", "median", "median_ci_low", "median_ci_high",
    "survival_12m", "survival_12m_ci_low", "survival_12m_ci_high",
]  # fmt: skip
LOGRANK_COLUMNS = ["group_by", "groups", "test_statistic", "degrees_of_freedom", "p_value"]


@dataclass(repr=False)
class Survival(StageResult):
    """KM curves (tidy, for plotting), median lifetimes and log-rank tests."""

    lifetimes: pd.DataFrame
    curves: pd.DataFrame
    medians: pd.DataFrame
    logrank: pd.DataFrame

    def summary_items(self) -> dict:
        overall = self.medians[self.medians["group_by"] == "all"]
        first = overall.iloc[0] if len(overall) else None
        return {"accounts": int(len(self.lifetimes)), "churned": int(self.lifetimes["churned"].sum()),
                "median_months": None if first is None else first.get("median_months"),
                "groupings": int(self.medians["group_by"].nunique()), "logrank_tests": int(len(self.logrank))}

    def to_dict(self) -> dict:
        """survival.json as a dict of its sections, ``kaplan_meier`` and ``logrank``."""
        km: dict = {}
        for r in self.medians.itertuples(index=False):
            km.setdefault(r.group_by, {})[str(r.group)] = {
                "accounts": int(r.accounts),
                "churned": int(r.churned),
                "median_months": _rounded(r.median),
                "median_ci_low": _rounded(r.median_ci_low),
                "median_ci_high": _rounded(r.median_ci_high),
                "survival_12m": _rounded(r.survival_12m),
                "survival_12m_ci_low": _rounded(r.survival_12m_ci_low),
                "survival_12m_ci_high": _rounded(r.survival_12m_ci_high),
            }
        tests = {
            r.group_by: {
                "groups": list(r.groups),
                "test_statistic": _rounded(r.test_statistic, 6),
                "degrees_of_freedom": int(r.degrees_of_freedom),
                "p_value": _rounded(r.p_value, 10),
            }
            for r in self.logrank.itertuples(index=False)
        }
        return {"kaplan_meier": km, "logrank": tests}

    def write(self, results_dir: Path) -> None:
        results_dir = Path(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.to_dict(), results_dir / "survival.json")


def _rounded(x, digits: int = 4):
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def lifetimes(panel: pd.DataFrame) -> pd.DataFrame:
    """One row per account: account_id, duration (months), churned (0/1), entry and its group labels.

    ``entry`` is the tenure at which the account is first seen in the data window (0 unless its contract
    began before the first data month: delayed entry, as in the panel's risk sets); accounts whose whole
    contract lies before the window are not observed and left out.
    """
    columns = [c for c in ("account_id", "tenure", "churn", "months_observed", "segment", "plan", "contract_type",
                           "onboarding_completed") if c in panel]
    rows = _last_rows(panel["account_id"])  # groupby(...).tail(1), each column's rows taken (not the columns' copy)
    last = pd.DataFrame({c: panel[c].iloc[rows].reset_index(drop=True) for c in columns}).set_index("account_id")
    observed = last["months_observed"] if "months_observed" in last else last["tenure"]
    last = last[observed >= 0]
    observed = observed[observed >= 0]
    out = pd.DataFrame({"duration": last["tenure"].astype(np.int64), "churned": last["churn"].astype(np.int64),
                        "entry": (last["tenure"] - observed).clip(lower=0).astype(np.int64)})
    for col in ("segment", "plan", "contract_type"):
        if col in last:
            out[col] = last[col].fillna("(none)").astype(str)
    if "onboarding_completed" in last:
        first = _max_by_account(panel["account_id"], panel["onboarding_completed"]).reindex(out.index)
        out["onboarding"] = np.where(first.isna(), "(unknown)", np.where(first > 0, "completed", "not completed"))
    return out.reset_index()


def _last_rows(ids: pd.Series) -> np.ndarray:
    """Position of each account's last row, in row order: ``groupby(ids).tail(1)`` (a missing id is no
    account)."""
    codes, distinct = factorize_runs(ids.to_numpy())
    last = np.full(len(distinct), -1, dtype=np.int64)
    np.maximum.at(last, codes[codes >= 0], np.flatnonzero(codes >= 0))
    return np.sort(last)


def _max_by_account(ids: pd.Series, values: pd.Series) -> pd.Series:
    """``values.groupby(ids, sort=True).max()`` (NaN skipped; NaN for an account without a value)."""
    if not pd.api.types.is_float_dtype(values.dtype) or isinstance(values.dtype, pd.api.extensions.ExtensionDtype):
        return values.groupby(ids, sort=True).max()
    v, x = ids.to_numpy(), values.to_numpy()
    # each run of an account's rows reduced first (the panel holds them together), then the runs per account:
    # the same sequence of fmax steps per account as row by row
    starts = run_starts(v)
    codes, distinct = pd.factorize(v[starts], sort=True)
    runs = np.fmax.reduceat(x, starts) if len(v) else np.zeros(0)
    out = np.full(len(distinct), np.nan)
    ok = codes >= 0
    np.fmax.at(out, codes[ok], runs[ok])
    return pd.Series(out, index=pd.Index(distinct, name=ids.name), name=values.name)


def compute_survival(panel: pd.DataFrame, data: ClientData, params: Params) -> Survival:
    """Kaplan–Meier overall and by each grouping present (≥ 2 groups), with medians and log-rank tests.

    Parameters
    ----------
    panel, data, params : DataFrame, ClientData, Params
        The common stage signature; only the account × month panel is read (lifetimes and groups).

    Returns
    -------
    Survival
        Lifetimes, tidy KM curves, medians with intervals and log-rank tests (survival.json).

    Examples
    --------
    >>> s = compute_survival(dx.panel, dx.data, dx.params)  # doctest: +SKIP
    >>> s.medians[s.medians["group_by"] == "segment"]  # doctest: +SKIP

    Notes
    -----
    Everything comes from the panel (lifetimes, groups, onboarding status); ``data`` and ``params``
    are taken for the common stage signature.
    """
    life = lifetimes(panel)
    parts = [("all", "all", life)]
    tests = []
    for by in GROUPINGS:
        if by not in life or life[by].nunique() < 2:
            continue
        parts += [(by, g, sub) for g, sub in life.groupby(by, sort=True)]
        tests.append(logrank(life, by))
    fits = [(by, g, km_fit(sub), sub) for by, g, sub in parts]
    curves = pd.concat([_curve(by, g, kmf) for by, g, kmf, _ in fits], ignore_index=True)[CURVE_COLUMNS]
    medians = pd.DataFrame([_median_row(by, g, kmf, sub) for by, g, kmf, sub in fits], columns=MEDIAN_COLUMNS)
    return Survival(
        lifetimes=life,
        curves=curves,
        medians=medians,
        logrank=pd.DataFrame(tests, columns=LOGRANK_COLUMNS),
    )


def km_fit(life: pd.DataFrame) -> KaplanMeierFitter:
    """lifelines' Kaplan–Meier fit on ``duration`` / ``churned`` with a 95% interval; accounts first seen
    after their start (left truncation) enter the risk set at ``entry``.

    lifelines reads the accounts only through its table of counts per month (removed, observed,
    entrance: sums of each account's weight 1), so it is given each distinct (duration, churned, entry)
    once with its number of accounts as weight: the same integer sums, the same table, the same curve
    (as :func:`logrank` does), from a few hundred rows instead of one per account."""
    cols = ["duration", "churned"] + (["entry"] if "entry" in life and life["entry"].any() else [])
    agg = life.groupby(cols, sort=False).size().reset_index(name="accounts")
    return KaplanMeierFitter(alpha=0.05).fit(agg["duration"], event_observed=agg["churned"],
                                             entry=agg["entry"] if "entry" in cols else None,
                                             weights=agg["accounts"].to_numpy(dtype="float64"))


def _interval(kmf: KaplanMeierFitter) -> pd.DataFrame:
    """lifelines' pointwise 95% interval, NaN where S = 0: there Greenwood's variance is infinite and
    the log(−log) interval is undefined (R ``survfit`` gives NA); lifelines reports [0, 0]."""
    ci = kmf.confidence_interval_survival_function_.copy()
    ci[kmf.survival_function_.iloc[:, 0].to_numpy() <= 0] = np.nan
    return ci


def _curve(group_by: str, group, kmf: KaplanMeierFitter) -> pd.DataFrame:
    ci = _interval(kmf)
    return pd.DataFrame(
        {
            "group_by": group_by,
            "group": str(group),
            "timeline": kmf.survival_function_.index.to_numpy(dtype="float64"),
            "survival": kmf.survival_function_.iloc[:, 0].to_numpy(),
            "ci_low": ci.iloc[:, 0].to_numpy(),
            "ci_high": ci.iloc[:, 1].to_numpy(),
        }
    )


def _median_row(group_by: str, group, kmf: KaplanMeierFitter, life: pd.DataFrame) -> dict:
    ci = median_survival_times(_interval(kmf).dropna())
    s12 = survival_at(kmf, 12)
    return {
        "group_by": group_by,
        "group": str(group),
        "accounts": int(len(life)),
        "churned": int(life["churned"].sum()),
        "median": float(kmf.median_survival_time_),
        "median_ci_low": float(ci.iloc[0, 0]),
        "median_ci_high": float(ci.iloc[0, 1]),
        "survival_12m": s12[0],
        "survival_12m_ci_low": s12[1],
        "survival_12m_ci_high": s12[2],
    }


def survival_at(kmf: KaplanMeierFitter, k: int) -> tuple[float, float, float]:
    """S(k) = P(T > k) with its 95% interval; NaN when no account was followed to month k."""
    if kmf.durations.max() < k:
        return (np.nan, np.nan, np.nan)
    sf = kmf.survival_function_.iloc[:, 0]
    at = sf.index[sf.index <= k].max()
    ci = _interval(kmf).loc[at]
    return (float(sf.loc[at]), float(ci.iloc[0]), float(ci.iloc[1]))


def logrank(life: pd.DataFrame, by: str) -> dict:
    """Log-rank test of equal survival across the groups of column ``by``.

    lifelines' test reads the accounts only through its table of counts per group and month, so it
    is given each distinct (group, duration, churned) once with its number of accounts as weight: the
    same table (integer sums; the groups in their order of first appearance, as lifelines takes them),
    so the same statistic, from a few hundred rows instead of one per account."""
    cols = [by, "duration", "churned"]
    agg = life.groupby(cols, sort=False, dropna=False).size().reset_index(name="accounts")
    res = multivariate_logrank_test(agg["duration"], agg[by], agg["churned"],
                                    weights=agg["accounts"].to_numpy(dtype=life["duration"].dtype))
    return {
        "group_by": by,
        "groups": sorted(life[by].astype(str).unique()),
        "test_statistic": float(res.test_statistic),
        "degrees_of_freedom": int(res.degrees_of_freedom),
        "p_value": float(res.p_value),
    }
