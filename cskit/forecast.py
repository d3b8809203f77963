"""KPI forecasting for the health score: each account's expected KPI path and its forecast error.

A KPI moves within an account as level + AR(1) deviation on the model scale (``Persistence``,
estimated by pooled moments); an account's forecast shrinks its recent mean toward its empirical-Bayes
level month by month (``KpiPath``), with the exact variance of the forecast error
(``forecast_error_var``). ``kpi_forecasts`` gives the health score's features (the expected KPI over
the months that drive the next horizon's churn); ``expected_cloglog`` averages a cloglog hazard over
the forecast error. Methods: docs/methods.md, "Account features".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cskit.panel import RECENT_MONTHS, decides, factorize_runs, recent_means, renewal_cycles

GH_NODES = 20


def ar1_inflation(rho: float, n: np.ndarray) -> np.ndarray:
    """n · Var(mean of n consecutive values of a stationary AR(1) with unit variance) =
    1 + 2 Σ_{j<n} (1 − j/n) ρ^j, in closed form (1 for n ≤ 1)."""
    n = np.maximum(np.asarray(n, dtype="float64"), 1.0)
    if rho <= 0:
        return np.ones_like(n)
    return 1 + 2 * rho / (1 - rho) - 2 * rho * (1 - rho**n) / (n * (1 - rho) ** 2)


@dataclass
class Persistence:
    """How a KPI moves within an account, on the model scale z: z_it = level_i + AR(1) deviation.

    ``rho`` is the lag-1 autocorrelation of the deviations from the account means, pooled over
    accounts and corrected for the downward bias of mean-corrected estimates in short series
    (ρ̂ + (1 + 3ρ̂)/n̄; Marriott & Pope 1954, Kendall 1954). ``var_within`` is the deviations' variance
    (E Σ(z − z̄_i)² = σ²(n_i − f(ρ, n_i)) with f = ``ar1_inflation``), ``var_between`` that of the
    account levels by the method of moments (variance of account means − mean σ² f/n_i, floored at 0),
    ``mean`` the mean of the account means.
    """

    kpi: str
    rho: float
    mean: float
    var_between: float
    var_within: float

    def level(self, n: np.ndarray, account_mean: np.ndarray) -> np.ndarray:
        """Empirical-Bayes account level: the account mean shrunk toward the population mean by its
        reliability var_between / (var_between + var_within · f(ρ, n) / n); n = 0 → population mean."""
        counts = np.asarray(n)
        n = counts.astype("float64")
        # the reliability depends on n alone: for counts, made once per count 0..max and read off (the same
        # values elementwise; a score history's ~10⁶ rows hold a few dozen counts)
        whole = counts.dtype.kind in "iu" and counts.size > 0 and counts.min() >= 0
        u = np.arange(int(counts.max()) + 1, dtype="float64") if whole else n
        noise = self.var_within * ar1_inflation(self.rho, u) / np.maximum(u, 1)
        total = self.var_between + noise
        rel = np.where((u > 0) & (total > 0), self.var_between / np.where(total > 0, total, 1.0), 0.0)
        rel = rel[counts] if whole else rel
        return self.mean + rel * (np.where(n > 0, account_mean, self.mean) - self.mean)

    def weight(self, horizon: int, lag: int) -> float:
        """Weight of the recent deviation in the mean forecast over the months whose KPIs drive the
        next ``horizon`` months' hazards (months as_of + h − lag, h = 1..horizon): mean of ρ^max(h − lag, 0)."""
        steps = np.maximum(np.arange(1, horizon + 1) - lag, 0)
        return float(np.mean(self.rho**steps))


def estimate_persistence(kpi: str, z: np.ndarray, account: np.ndarray, *,
                         deviations: dict[str, np.ndarray] | None = None) -> Persistence | None:
    """``Persistence`` of one KPI from its model-scale values ``z`` (NaN = missing) on panel rows sorted by
    account and month (``account`` = integer codes). None when the KPI never varies within an account
    (a static KPI: its value is its forecast). ``deviations`` (a dict) receives the within-account
    deviations z − z̄_i (NaN where z is missing): what :func:`deviation_correlation` correlates."""
    ok = np.isfinite(z)
    na = int(account.max()) + 1 if len(account) else 0
    seen_at = account[ok]  # (the accounts of the values seen: once, for their counts and sums)
    n = np.bincount(seen_at, minlength=na).astype("float64")
    mean_i = np.bincount(seen_at, z[ok], minlength=na) / np.maximum(n, 1)
    d = np.where(ok, z - mean_i[account], 0.0)
    ss = float(np.sum(d**2))
    many = n > 1
    if not many.any() or ss <= 1e-12 * max(ok.sum(), 1):
        return None
    if deviations is not None:  # (not a static KPI's: nothing correlates them)
        deviations[kpi] = np.where(ok, d, np.nan)
    pair = (account[1:] == account[:-1]) & ok[1:] & ok[:-1]  # each row and the one before it both seen
    raw = float(np.sum(d[1:] * d[:-1] * pair) / ss)
    nbar = float(np.average(n[many], weights=n[many]))
    rho = float(np.clip(raw + (1 + 3 * raw) / nbar, 0.0, 0.99))
    f = ar1_inflation(rho, n)
    var_within = ss / float(np.sum((n - f)[many]))
    seen = n > 0
    var_between = max(0.0, float(np.var(mean_i[seen], ddof=1) - np.mean(var_within * f[seen] / n[seen])))
    return Persistence(kpi, rho, float(np.mean(mean_i[seen])), var_between, var_within)


def forecast_error_var(p: Persistence, n: np.ndarray, steps: np.ndarray, recent: int = RECENT_MONTHS) -> np.ndarray:
    """Variance of the error of ``KpiPath.at`` under the ``Persistence`` model, per account (rows: its
    number of observed months ``n``) and step s = max(h − lag, 0) (columns: ``steps``).

    With z_t = μ + b + u_t (b ~ N(0, σ²_b), u a stationary AR(1) with variance σ²_w and coefficient ρ),
    the forecast of z at step s after the last observed month t is μ + (1 − ρ^s) r (z̄ − μ) + ρ^s (z̄_3 − μ)
    (z̄ = mean of the n observed values, z̄_3 = of the last min(3, n), r = the reliability of
    ``Persistence.level``), so the error is c·b + Σ_j a_j u_j with c = 1 − (1 − ρ^s) r − ρ^s, a = −(1 − ρ^s) r / n
    on every observed month, −ρ^s / min(3, n) more on the last three, +1 on month t + s. Its variance is
    c² σ²_b + a' Γ a, Γ_ij = σ²_w ρ^|t_i − t_j| — exact, treating the observed months as consecutive.
    n = 0 (forecast = μ): σ²_b + σ²_w.
    """
    n = np.asarray(n, dtype=int)
    steps = np.asarray(steps, dtype=int)
    counts, which = np.unique(n, return_inverse=True)
    out = np.empty((len(counts), len(steps)))  # one row per number of observed months, then spread
    for i, m in enumerate(counts):
        at = i
        if m <= 0:
            out[at] = p.var_between + p.var_within
            continue
        noise = p.var_within * float(ar1_inflation(p.rho, np.array([m]))[0]) / m
        total = p.var_between + noise
        r = p.var_between / total if total > 0 else 0.0
        k = min(recent, m)
        row = []
        # Γ over the observed months and month t + s: the observed block is the same for every step, only
        # the last row and column (lags m − 1 + s − j) are filled per step (the same values as built whole)
        cov = np.empty((m + 1, m + 1))
        lags = np.arange(m)
        cov[:m, :m] = p.var_within * p.rho ** np.abs(lags[:, None] - lags[None, :])
        cov[m, m] = p.var_within * p.rho**0
        a = np.empty(m + 1)
        for s in steps:
            g = p.rho**s
            cov[m, :m] = cov[:m, m] = p.var_within * p.rho ** (m - 1 + s - lags)
            a[:m] = -(1 - g) * r / m
            a[m] = 1.0
            a[m - k : m] -= g / k
            c = 1 - (1 - g) * r - g
            row.append(c * c * p.var_between + a @ cov @ a)
        out[at] = np.maximum(np.array(row), 0.0)
    return out[which.reshape(-1)]


@dataclass
class KpiPath:
    """One KPI's expected path for the scored accounts, on the model scale z: the value that drives the
    hazard of month as_of + h is level + ρ^max(h − lag, 0) · (recent − level) (``level`` = the
    empirical-Bayes account level, ``recent`` = the last-3-month mean, NaN → level). With ``n`` (each
    account's number of observed months) and ``persistence``, ``error_var`` gives the variance of the
    true value around that forecast (``forecast_error_var``); without them the path is taken as known."""

    level: np.ndarray
    recent: np.ndarray
    rho: float
    n: np.ndarray | None = None
    persistence: Persistence | None = None

    def at(self, h: int, lag: int) -> np.ndarray:
        return self.level + self.rho ** max(h - lag, 0) * (self.recent - self.level)

    def subset(self, keep: np.ndarray) -> KpiPath:
        """The path of the accounts ``keep`` selects (a boolean mask or positions over these accounts)."""
        return KpiPath(self.level[keep], self.recent[keep], self.rho, None if self.n is None else self.n[keep],
                       self.persistence)

    def error_var(self, h: int, lag: int) -> np.ndarray:
        return self.error_vars(h, lag)[:, h - 1]

    def error_vars(self, months: int, lag: int) -> np.ndarray:
        """``error_var`` of every future month h = 1..months at once, (accounts × months): one
        ``forecast_error_var`` call, not one per month."""
        if self.n is None or self.persistence is None:
            return np.zeros((len(self.level), months))
        return forecast_error_var(self.persistence, self.n, np.maximum(np.arange(1, months + 1) - lag, 0))


def deviation_correlation(panel: pd.DataFrame, kpis: list[str], transforms: dict, *,
                          deviations: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Correlation between KPIs of their within-account deviations z − z̄_i on the model scale (pairwise
    over the rows where both are observed; 0 when undefined). It stands in for the correlation of the
    KPIs' forecast errors, which are mostly future within-account deviations. ``deviations``: those of
    :func:`estimate_persistence` on this panel with these transforms, when already made (the same values)."""
    given = deviations or {}
    account = factorize_runs(panel["account_id"].to_numpy())[0] if any(k not in given for k in kpis) else None
    dev = {}
    for k in kpis:
        if k in given:
            dev[k] = given[k]
            continue
        z = transforms[k].forward(panel[k].to_numpy(dtype="float64"))
        ok = np.isfinite(z)
        n = np.bincount(account[ok], minlength=account.max() + 1)
        mean = np.bincount(account[ok], z[ok], minlength=account.max() + 1) / np.maximum(n, 1)
        dev[k] = z - mean[account]
    out = np.eye(len(kpis))
    for i, a in enumerate(kpis):
        for j in range(i):
            b = kpis[j]
            ok = np.isfinite(dev[a]) & np.isfinite(dev[b])
            sa, sb = np.sqrt(np.sum(dev[a][ok] ** 2)), np.sqrt(np.sum(dev[b][ok] ** 2))
            c = float(np.sum(dev[a][ok] * dev[b][ok]) / (sa * sb)) if sa > 0 and sb > 0 else 0.0
            out[i, j] = out[j, i] = c
    return pd.DataFrame(out, index=kpis, columns=kpis)
GAUSS_HERMITE = np.polynomial.hermite.hermgauss(GH_NODES)


def expected_cloglog(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """E[1 − exp(−exp(η))] for η ~ Normal(mean, var), by Gauss–Hermite quadrature with GH_NODES nodes."""
    x, w = GAUSS_HERMITE
    mean, sd = np.asarray(mean, dtype="float64"), np.sqrt(2 * np.maximum(var, 0.0))
    eta = np.empty(np.broadcast_shapes(mean.shape, np.shape(sd)) + x.shape)  # one (… × nodes) array, in place:
    np.multiply(np.asarray(sd)[..., None], x, out=eta)  # mean + sd·x, then 1 − exp(−exp(η)) = −expm1(−exp(η))
    eta += mean[..., None]  # step by step (the same operations on the same values as the expression, no
    np.minimum(eta, 50.0, out=eta)  # temporary per step)
    np.exp(eta, out=eta)
    np.negative(eta, out=eta)
    np.expm1(eta, out=eta)
    # the last sign change after the weighted sum, on one value per row instead of one per node: the sum of the
    # negated terms is the negated sum, bit for bit (rounding is symmetric), and 0.0 − s keeps a zero sum +0.0
    return (0.0 - eta @ w) / np.sqrt(np.pi)


def kpi_paths(panel: pd.DataFrame, kpis: list[str], rows: np.ndarray, transforms: dict,
              recent: pd.DataFrame | None = None, *, persistence: dict[str, Persistence | None] | None = None,
              deviations: dict[str, np.ndarray] | None = None) -> tuple[dict[str, KpiPath], dict[str, Persistence]]:
    """``KpiPath`` of every KPI that varies within accounts (not ``contract_months``), for the selected
    panel rows, and its ``Persistence`` (estimated on the panel rows given).

    ``persistence``: the KPIs' ``estimate_persistence`` on this very panel with these transforms, when
    already made (None for a static KPI): read for the KPIs it holds, and given the ones estimated here.
    ``deviations``: receives the within-account deviations of the KPIs estimated here (``estimate_persistence``)."""
    recent = recent_means(panel, kpis, rows) if recent is None else recent
    known = {} if persistence is None else persistence
    account = None
    pos = np.flatnonzero(rows)
    start = pos - panel["tenure"].to_numpy()[pos]  # the account's first row
    count, total = np.zeros(len(panel) + 1, dtype="int64"), np.zeros(len(panel) + 1)
    paths, pers = {}, {}
    for k in kpis:
        tr = transforms.get(k)
        if k == "contract_months" or tr is None:
            continue
        z = tr.forward(panel[k].to_numpy(dtype="float64"))
        if k not in known:
            account = factorize_runs(panel["account_id"].to_numpy())[0] if account is None else account
            known[k] = estimate_persistence(k, z, account, deviations=deviations)
        p = known[k]
        if p is None:
            continue
        ok = np.isfinite(z)
        np.cumsum(ok, out=count[1:])
        np.cumsum(np.where(ok, z, 0.0), out=total[1:])
        n = count[pos + 1] - count[start]
        own = (total[pos + 1] - total[start]) / np.maximum(n, 1)
        m = p.level(n, own)
        zr = tr.forward(recent[k].to_numpy(dtype="float64"))
        paths[k] = KpiPath(m, np.where(np.isfinite(zr), zr, m), p.rho, n.astype(int), p)
        pers[k] = p
    return paths, pers


def decision_months(panel: pd.DataFrame, rows: np.ndarray, horizon: int) -> np.ndarray:
    """For the selected rows, a (rows × horizon) 0/1 matrix of the months h = 1..horizon after the row
    in which the account can churn: all for monthly contracts, the renewal months (tenure + h a multiple
    of the panel's renewal cycle, ``cskit.panel.decides``) for annual ones (all months when the horizon
    holds none). Without a ``contract_type`` column every account is monthly."""
    patterns, which = decision_patterns(panel, rows, horizon)
    return patterns[which]


def decision_patterns(panel: pd.DataFrame, rows: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decision_months` as its distinct rows and each selected row's (``patterns[which]`` is the
    matrix): a row's decision months depend only on its renewal cycle and its tenure modulo the cycle,
    so they are made once per (cycle, phase), not once per row."""
    n = int(np.count_nonzero(rows)) if rows.dtype == bool else len(rows)
    h = np.arange(1, horizon + 1)
    if "contract_type" not in panel:
        return np.ones((1, horizon)), np.zeros(n, dtype="int64")
    cols = [c for c in ("tenure", "renewal_cycle", "contract_type") if c in panel]  # what renewal_cycles reads
    sub = pd.DataFrame({c: panel[c].to_numpy()[rows] for c in cols})
    tenure, cycle = sub["tenure"].to_numpy(dtype="int64"), renewal_cycles(sub)
    if n and (cycle.min() < 1 or tenure.min() < 0):  # not a (cycle, phase) table: row by row
        at = decides(tenure[:, None] + h[None, :], cycle[:, None])
        return np.where(at.any(axis=1, keepdims=True), at, True).astype("float64"), np.arange(n)
    which, keys = pd.factorize(cycle * (int(cycle.max(initial=1)) + 1) + tenure % cycle)  # (cycle, phase)
    first = np.zeros(len(keys), dtype="int64")
    first[which] = np.arange(n)  # a row of each (cycle, phase)
    # (tenure + h) % cycle == 0 depends on tenure % cycle only: the first row's tenure stands for its phase
    at = decides(tenure[first][:, None] + h[None, :], cycle[first][:, None])
    return np.where(at.any(axis=1, keepdims=True), at, True).astype("float64"), which.astype("int64")


def kpi_forecasts(panel: pd.DataFrame, kpis: list[str], rows: np.ndarray, transforms: dict, horizon: int,
                  lag: int, paths: dict[str, KpiPath] | None = None, *,
                  persistence: dict[str, Persistence | None] | None = None,
                  deviations: dict[str, np.ndarray] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each KPI's expected value over the months that drive the next ``horizon`` months' churn, for the
    selected panel rows, and the per-KPI forecast parameters (docs/methods.md, "Account features").

    On the model scale z: forecast = m + w · (z_recent − m), m = the account's empirical-Bayes level
    from its values up to the row, z_recent = its last-3-month mean, w = the mean of ρ^max(h − lag, 0)
    over the months h = 1..horizon in which the account can churn (``decision_months``): every month
    for a monthly contract (``Persistence.weight``, reported as ``weight_recent``), the anniversaries
    for an annual one (its KPI at the renewal decision is what counts). Static KPIs and
    ``contract_months`` keep their ``recent_means`` value; layout as ``recent_means``.
    The KPIs' ``KpiPath`` go into ``paths`` when a dict is given (the exact churn probability uses them);
    ``persistence`` and ``deviations`` are :func:`kpi_paths`'.
    """
    out = recent_means(panel, kpis, rows)
    found, pers = kpi_paths(panel, kpis, rows, transforms, out, persistence=persistence, deviations=deviations)
    patterns, which = decision_patterns(panel, rows, horizon)
    steps = np.maximum(np.arange(1, horizon + 1) - lag, 0)
    recs = []
    for k, path in found.items():
        tr, p = transforms[k], pers[k]
        w = p.weight(horizon, lag)
        wi = ((patterns * p.rho**steps).sum(axis=1) / patterns.sum(axis=1))[which]  # per pattern, not per row
        out[k] = tr.inverse(path.level + wi * (path.recent - path.level))
        recs.append({"kpi": k, "rho": p.rho, "weight_recent": w, "population_mean": tr.inverse(p.mean),
                     "var_between": p.var_between, "var_within": p.var_within, "scale": tr.kind})
    if paths is not None:
        paths.update(found)
    cols = ["kpi", "rho", "weight_recent", "population_mean", "var_between", "var_within", "scale"]
    return out, pd.DataFrame(recs, columns=cols)
