"""Shared modelling on the account × month panel: KPI transforms, design matrices, binomial GLMs.

Choices (also in docs/methods.md):
- KPIs enter at month t − lag (``contract_months`` at t: it is the tenure adjustment itself).
- A non-negative KPI whose skewness exceeds 2 is modelled as log1p(KPI) (heavy-tailed counts);
  ``contract_months`` always as log1p (hazards fall roughly with log-tenure). Every KPI is then
  standardised by the mean and SD of its (transformed) values over all non-missing panel rows, so a
  coefficient is an effect per +1 SD.
- A missing KPI value is set to the KPI's mean (z = 0); KPIs missing in more than half of the rows,
  or constant, are dropped with a warning. Where a KPI's missingness goes with the outcome given the
  model (score test of its missing indicator, Benjamini–Hochberg over the KPIs missing in ≥ 5% of the
  rows: :func:`informative_missing`), the indicator is added as a term (:func:`with_indicators`), so
  the KPI's own effect is estimated from the months it was measured.
- Collinearity: a KPI whose |Pearson r| with an already kept KPI exceeds 0.9 on the model rows is
  dropped, and the warning names the KPI it travels with (its effect is carried by that one); so is a
  KPI that is a near-linear combination of several kept ones (R² > 0.9, e.g. licenses =
  licenses_basic + licenses_pro), naming the KPIs that carry it.
- Binomial GLMs (cloglog: exp(β) is a hazard ratio for discrete-time hazards; logit: odds ratio) are
  fitted by IRLS in numpy: the panel can hold millions of rows.
- The logit GEE for repeated binary decisions per account (:func:`fit_gee`) and Rao score tests of
  columns added to a fitted null model (:func:`score_terms`, :func:`score_z_from`) are written with
  cluster / column sums for the same reason.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests

from cskit.notices import Notice
from cskit.panel import MIN_EVENTS, RECENT_MONTHS, is_annual
from cskit.sampling import SampledLink, link_name, sampled_mean
from cskit.stats import Z975

# Adjustments of every churn / renewal model: segment, contract type and, where the panel found a
# calendar-month effect on churn (cskit.season), the calendar month (a constant column adds no term).
ADJUST = ("segment", "contract_type")
CHURN_ADJUST = (*ADJUST, "churn_season")
# The link of each outcome's trigger model (cskit.triggers); the shared designs order KPIs with it
TRIGGER_LINK = {"churn": "cloglog", "renewal": "logit", "expansion": "logit"}
SKEW_LIMIT = 2.0
COLLINEAR_R = 0.9
MAX_R2 = 0.9
SEPARATED_COEF = 10.0  # |β| per SD or level beyond which a coefficient is a separation artefact, not an estimate
SEPARATED_SE = 100.0
MAX_MISSING = 0.5
RARE_ACCOUNTS = 10  # a KPI departing from its usual value on fewer accounts is left out of the models
RARE_SAMPLE = 1000  # evenly spaced measured values in which the usual value is looked for
MISSING_MIN_SHARE = 0.05  # a KPI missing in fewer model rows is not tested for informative missingness
MISSING_PREFIX = "missing:"  # design column of a KPI's missing indicator: "missing:csat"
MISSING_COLUMNS = ["kpi", "outcome", "share", "z", "p_value", "q_value", "informative", "effect", "ci_low", "ci_high"]


@dataclass(frozen=True)
class Transform:
    """How a KPI enters a model: ``z = (f(x) − mean) / sd`` with f = identity or log1p."""

    kind: str  # "identity" | "log1p"
    mean: float
    sd: float
    rare: int = 0  # accounts departing from the KPI's usual value, when fewer than RARE_ACCOUNTS (else 0)
    usual: float | None = None  # that usual value (where ``rare``)

    def forward(self, x, out: np.ndarray | None = None):
        """z of the raw values ``x`` (a scalar for a scalar); an array's into ``out`` when given (float64,
        ``x``'s shape, ``x`` itself allowed), else into one new array: the same operations, so the same
        bits, without a temporary per operation."""
        x = np.asarray(x, dtype="float64")
        if x.ndim == 0 and out is None:
            fx = np.log1p(np.maximum(x, 0.0)) if self.kind == "log1p" else x
            return (fx - self.mean) / self.sd
        if self.kind == "log1p":
            out = np.maximum(x, 0.0, out=out)  # a new array when no ``out``: written over from here
            x = np.log1p(out, out=out)
        out = np.subtract(x, self.mean, out=out)
        return np.divide(out, self.sd, out=out)

    def inverse(self, z):
        """The raw value x whose standardised value is ``z`` (``forward(x) == z``; for log1p, x = expm1(f)).
        A float for a scalar ``z``, an array otherwise; ``inverse(0)`` is what the models assume for a
        missing KPI."""
        fx = np.asarray(z, dtype="float64") * self.sd + self.mean
        out = np.expm1(fx) if self.kind == "log1p" else fx
        return float(out) if out.ndim == 0 else out


def kpi_transforms(panel: pd.DataFrame, kpis: list[str]) -> dict[str, Transform]:
    """Transform of each KPI, fitted on all non-missing panel rows (constant KPIs are left out; a KPI
    that departs from its usual value on fewer than RARE_ACCOUNTS accounts carries their number in
    ``rare``, and :func:`design_matrix` leaves it out)."""
    out = {}
    # an account's rows at most (months of tenure it can span)
    span = int(panel["tenure"].max()) + 1 if "tenure" in panel and len(panel) else len(panel)
    for k in kpis:
        x = panel[k].to_numpy(dtype="float64")
        finite = np.isfinite(x)
        x = x if finite.all() else x[finite]  # the same values in the same order; no copy of a complete column
        if len(x) < 2:
            continue
        log, moments = k == "contract_months", None
        if not log and x.min() >= 0:
            moments = _moments(x)
            log = moments[2] > SKEW_LIMIT
        if log:
            fx = np.log1p(x)
            mean = fx.mean()
            sd = float(fx.std(mean=mean))  # numpy's std about the mean given: the same bits, one pass fewer
        elif moments is not None:  # the identity's mean and SD are those the skewness was computed with
            mean, sd = moments[0], float(moments[1])
        else:
            mean = x.mean()
            sd = float(x.std(mean=mean))
        if sd > 1e-12:
            rare, usual = (0, None) if k == "contract_months" else _rare(panel, k, x, span)
            out[k] = Transform("log1p" if log else "identity", float(mean), sd, rare, usual)
    return out


def _rare(panel: pd.DataFrame, k: str, x: np.ndarray, span: int) -> tuple[int, float | None]:
    """(accounts whose KPI ``k`` departs from its usual value, when fewer than RARE_ACCOUNTS, else 0; that
    value). The usual value is the most common of RARE_SAMPLE evenly spaced measured values ``x`` (where it
    matters nearly every row holds it); the departing rows' accounts are counted only when the rows are few
    enough (``span``: an account's rows at most) to come from fewer than RARE_ACCOUNTS accounts."""
    values, counts = np.unique(x[:: max(1, len(x) // RARE_SAMPLE)], return_counts=True)
    usual = float(values[np.argmax(counts)])
    if np.count_nonzero(x != usual) >= RARE_ACCOUNTS * span or "account_id" not in panel:
        return 0, None
    col = panel[k].to_numpy(dtype="float64")
    off = np.flatnonzero(np.isfinite(col) & (col != usual))
    n = len(pd.unique(panel["account_id"].to_numpy()[off]))
    return (n, usual) if n < RARE_ACCOUNTS else (0, None)


def _skewness(x: np.ndarray) -> float:
    return _moments(x)[2]


def _moments(x: np.ndarray) -> tuple[float, float, float]:
    """Mean, SD (ddof 0) and skewness of ``x``; the mean and SD by numpy's own operations (``x.mean()``,
    ``x.std()``: mean, squared deviations, their mean, its root), so the same bits."""
    mean = x.mean()
    d = x - mean
    dd = d * d
    sd = np.sqrt(dd.mean())
    dd *= d  # d*d*d, evaluated as (d*d)*d: ** 3 takes numpy's slow pow
    return mean, sd, (float(dd.mean() / sd**3) if sd > 0 else 0.0)


def _lagged_at(panel: pd.DataFrame, kpis: list[str], lag: int, rows: np.ndarray) -> np.ndarray:
    """The raw KPIs explaining month t (at t − lag; ``contract_months`` at t) on the selected rows only,
    gathered column by column (the panel can hold millions of rows; lagging all of them to keep a few
    is the slow way). Row i − lag is month
    t − lag of the same account because months are contiguous per account."""
    idx = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows)
    early = panel["tenure"].to_numpy()[idx] < lag if lag else np.zeros(len(idx), dtype=bool)
    src = np.where(early, idx, idx - lag)
    first = np.flatnonzero(early)  # the rows without a month t − lag (few: an account's first months)
    out = np.empty((len(idx), len(kpis)), order="F")  # column by column: each KPI's values contiguous
    for j, k in enumerate(kpis):
        x = panel[k].to_numpy(dtype="float64")
        # gathered in place (no temporary); mode "clip": the indices are in range (rows of the panel, and
        # i − lag only where the account has that month), and "raise" with ``out`` copies through a buffer
        np.take(x, idx if k == "contract_months" else src, out=out[:, j], mode="clip")
        if k != "contract_months":
            out[first, j] = np.nan
    return out


def sustained_at(panel: pd.DataFrame, kpis: list[str], lag: int, rows: np.ndarray,
                 n: int = RECENT_MONTHS) -> np.ndarray:
    """Like :func:`_lagged_at`, but each KPI is the mean of its non-missing values over months
    t − lag − n + 1 … t − lag of the same account (the term's recent average); ``contract_months`` at t."""
    idx = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows)
    tenure = panel["tenure"].to_numpy()[idx]
    total = np.zeros((len(idx), len(kpis)))
    count = np.zeros((len(idx), len(kpis)))
    for j in range(n):
        back = lag + j
        ok = tenure >= back
        for c, k in enumerate(kpis):
            if k == "contract_months":
                continue
            x = panel[k].to_numpy(dtype="float64")[np.where(ok, idx - back, idx)]
            seen = ok & np.isfinite(x)
            total[seen, c] += x[seen]
            count[seen, c] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    if "contract_months" in kpis:
        out[:, kpis.index("contract_months")] = panel["contract_months"].to_numpy(dtype="float64")[idx]
    return out


SUSTAINED_MARGIN = 3.0


def annual_rows(panel: pd.DataFrame, idx: np.ndarray) -> np.ndarray:
    """Which of the panel rows ``idx`` (indices) are months of an annual contract (:func:`cskit.panel.is_annual`
    of those rows' values only, not of the whole column)."""
    return is_annual(panel["contract_type"].to_numpy()[idx])


def sustained_rows(panel: pd.DataFrame, rows: np.ndarray, kpis: list[str], lag: int,
                   transforms: dict[str, Transform], *, link="cloglog") -> tuple[np.ndarray | None, dict]:
    """Whether annual renewals are better explained by the term's recent average of each KPI (the mean
    of the last ``RECENT_MONTHS`` months before the decision) than by its last month (docs/methods.md,
    "Sustained usage at annual renewals").

    On the annual contracts' churn decisions among ``rows`` (at least MIN_EVENTS churns), the same
    cloglog hazard (KPIs, tenure, segment) is fitted twice, with the last month's KPIs and with their
    recent means; both have the same parameters, so they are compared by maximised log-likelihood, and
    the recent mean is taken only where it is better by more than ``SUSTAINED_MARGIN`` units (2·Δ > 6,
    "strong" on Kass & Raftery's scale): picking on any difference let chance choose the specification
    and raised the triggers' false-discovery proportion (20-seed study: 0.0505 → below 0.05).

    ``link``: the fits' link (a ``cskit.sampling.SampledLink`` when ``rows`` are a case-control sample).

    Returns (a mask over the selected rows: the annual rows that take the recent
    mean, or None for the last month; the comparison for the result files)."""
    idx = np.flatnonzero(rows)
    annual = annual_rows(panel, idx) if "contract_type" in panel else None
    info = {"code": "annual_last_month", "rows": 0, "events": 0, "loglik_last_month": None,
            "loglik_recent_mean": None, "months": RECENT_MONTHS}
    if annual is None or not annual.any():
        return None, info
    sub = np.zeros(len(panel), dtype=bool)
    sub[idx[annual]] = True
    y = panel["churn"].to_numpy(dtype="float64")[sub]
    info.update(rows=int(sub.sum()), events=int(y.sum()))
    if y.sum() < MIN_EVENTS or y.sum() == len(y):
        return None, info
    last = design_matrix(panel, sub, kpis, lag, transforms, adjust=("segment",))
    recent = design_matrix(panel, sub, last.kpis, lag, transforms, adjust=("segment",), prune=False,
                           sustained=np.ones(int(sub.sum()), dtype=bool))
    ll_last = fit_binomial(y, last.X, link=link).loglik
    ll_recent = fit_binomial(y, recent.X, link=link).loglik
    info.update(loglik_last_month=float(ll_last), loglik_recent_mean=float(ll_recent))
    if ll_recent - ll_last > SUSTAINED_MARGIN:
        info["code"] = "annual_recent_mean"
        return annual, info
    return None, info


@dataclass
class Design:
    """A model matrix: intercept, standardised KPIs, adjustments; and what was dropped and why."""

    X: np.ndarray
    names: list[str]
    kpis: list[str]
    transforms: dict[str, Transform]
    adjust_levels: dict[str, list[str]]
    dropped: dict[str, str] = field(default_factory=dict)
    terms: list[Term] = field(default_factory=list)
    missing: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    indicators: list[str] = field(default_factory=list)
    pooled: dict[str, list[str]] = field(default_factory=dict)  # adjustment levels merged into the reference
    missing_rate: dict[str, float] = field(default_factory=dict)  # share of model rows without a value, per indicator

    def kpi_slice(self) -> slice:
        return slice(1, 1 + len(self.kpis))

    def indicator_column(self, kpi: str) -> int:
        """Column of ``kpi``'s missing indicator (the indicators come last, after the adjustments)."""
        return self.names.index(MISSING_PREFIX + kpi)

    def kpi_terms(self, kpi: str) -> list[Term]:
        """The extra columns (curve, segment slopes) of ``kpi``, in column order."""
        return [t for t in self.terms if t.kpi == kpi]

    def contribution(self, coef: np.ndarray, kpi: str, z: np.ndarray, segment: np.ndarray | None = None) -> np.ndarray:
        """The KPI's part of the linear predictor at standardised values ``z`` (missing → 0, as in the
        fit) for accounts of ``segment``: β·z plus its curve and segment-slope terms. ``coef`` is one
        coefficient vector (p,) or a stack of draws (B, p), giving (B, n)."""
        z = np.where(np.isfinite(z), z, 0.0)
        cols = [self.names.index(kpi), *(self.names.index(t.name) for t in self.kpi_terms(kpi))]
        M = np.column_stack([z, *(t.values(z, segment) for t in self.kpi_terms(kpi))])
        return np.asarray(coef)[..., cols] @ M.T


# ---------------------------------------------------------------------------------------------------
# Curves and segment-specific slopes: extra columns of a KPI, tested after the linear model
# ---------------------------------------------------------------------------------------------------

# Knots of a KPI's restricted cubic spline: Harrell's five quantiles, and two placements that can bend in
# one tail (a threshold near the low or the high end of the values); each has 3 nonlinear columns.
CURVE_QUANTILES = (
    (0.05, 0.275, 0.5, 0.725, 0.95),
    (0.02, 0.05, 0.1, 0.5, 0.95),
    (0.05, 0.5, 0.9, 0.95, 0.98),
)
MIN_SEGMENT_EVENTS = 20
MIN_CURVE_EVENTS = 10  # events (and non-events) between two knots of a tried spline


@dataclass(frozen=True)
class Term:
    """One extra column of a KPI: ``kind`` "curve" (the ``index``-th nonlinear column of a restricted
    cubic spline of z with ``knots``; with a ``level``, that column in segment ``level`` only: the
    segment's own bend beside the base one, :func:`by_segment`) or "segment" (the KPI's extra slope in
    segment ``level``: z × 1[segment = level], beside the reference segment's slope β)."""

    kpi: str
    kind: str
    index: int = 0
    level: str = ""
    knots: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        if self.kind == "curve":
            return f"{self.kpi}:curve{self.index + 1}" + (f":segment={self.level}" if self.level else "")
        return f"{self.kpi}:segment={self.level}"

    def values(self, z: np.ndarray, segment: np.ndarray | None = None, cubes: dict | None = None, *,
               masks: dict | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """The column at standardised values ``z`` (and the rows' ``segment`` for a segment slope);
        ``cubes`` (knot → (z − knot)₊³), when given, is shared by the curve columns of one ``z``, and
        ``masks`` (level → 1[segment = level]) by the columns of the same rows. ``out``: where to write
        it (``z``'s length; else a new array)."""
        z = np.asarray(z, dtype="float64")
        if self.kind == "curve" and not self.level:
            return rcs_column(z, np.asarray(self.knots), self.index, cubes, out=out)
        if segment is None:
            raise ValueError(f"{self.name} needs the accounts' segments")
        if masks is None:
            mask = as_text(segment) == self.level
        elif self.level in masks:
            mask = masks[self.level]
        else:
            mask = masks[self.level] = as_text(segment) == self.level
        if self.kind == "curve":
            return np.multiply(rcs_column(z, np.asarray(self.knots), self.index, cubes), mask, out=out)
        return np.multiply(z, mask, out=out)


def as_text(values: np.ndarray) -> np.ndarray:
    """``values`` as a numpy string array (no copy when they already are one)."""
    values = np.asarray(values)
    return values if values.dtype.kind == "U" else values.astype(str)


def term_columns(terms: list[Term], z: np.ndarray, segment: np.ndarray | None = None,
                 out: np.ndarray | None = None, cubes: dict | None = None, *, masks: dict | None = None) -> np.ndarray:
    """The columns of ``terms`` (all of one KPI, whose standardised values are ``z``) side by side, into
    ``out`` when given; each knot's cube is computed once for all the curve columns (``cubes``: pass
    one dict per ``z`` to share them between calls), each segment's indicator once (``masks``: one dict
    per row set). A strided ``z`` (a column of a row-major design) is read once, into a contiguous copy."""
    out = np.empty((len(z), len(terms))) if out is None else out
    cubes = {} if cubes is None else cubes
    masks = {} if masks is None else masks
    z = np.ascontiguousarray(z, dtype="float64")
    for j, t in enumerate(terms):
        t.values(z, segment, cubes, masks=masks, out=out[:, j])
    return out


def _cube(z: np.ndarray, a: float) -> np.ndarray:
    """(z − a)₊³ (as a product: numpy's ``** 3`` takes the slow general power)."""
    c = np.subtract(z, a)
    np.maximum(c, 0.0, out=c)
    out = c * c
    out *= c
    return out


def rcs_basis(z: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Nonlinear columns of a restricted (natural) cubic spline with ``knots`` t_1 < … < t_k (Harrell
    2015, §2.4.5): for j = 1..k − 2, ((z − t_j)₊³ − (z − t_{k−1})₊³ (t_k − t_j)/(t_k − t_{k−1})
    + (z − t_k)₊³ (t_{k−1} − t_j)/(t_k − t_{k−1})) / (t_k − t_1)²; with z itself the spline is cubic
    between the knots and linear beyond the outer ones."""
    z = np.asarray(z, dtype="float64")
    cubes: dict = {}
    cols = [rcs_column(z, knots, j, cubes) for j in range(len(knots) - 2)]
    return np.column_stack(cols) if cols else np.empty((len(z), 0))


def rcs_column(z: np.ndarray, knots: np.ndarray, j: int, cubes: dict | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """Column ``j`` of :func:`rcs_basis` alone (the same arithmetic, element by element: the same bits),
    without building the other columns; ``cubes`` (knot → (z − knot)₊³ on this ``z``) keeps the cubes
    for the next column of the same values. ``out``: where to write it (``z``'s length; else a new array)."""
    z = np.asarray(z, dtype="float64")
    t = np.asarray(knots, dtype="float64")
    k = len(t)
    cubes = {} if cubes is None else cubes
    for a in (t[j], t[k - 2], t[k - 1]):
        if float(a) not in cubes:
            cubes[float(a)] = _cube(z, a)
    span = t[k - 1] - t[k - 2]
    # a − b·c₁ + d·c₂, then / (t_k − t_1)², written into ``out`` (the same operations: the same bits)
    col = np.multiply(cubes[float(t[k - 2])], (t[k - 1] - t[j]) / span, out=out)
    np.subtract(cubes[float(t[j])], col, out=col)
    col += cubes[float(t[k - 1])] * ((t[k - 2] - t[j]) / span)
    col /= (t[k - 1] - t[0]) ** 2
    return col


def curve_knots(z: np.ndarray, quantiles=CURVE_QUANTILES[0]) -> tuple[float, ...]:
    """Knots at ``quantiles`` of the KPI's measured standardised values; ties (a count that is mostly
    0) are merged; fewer than 3 distinct knots: no curve can be fitted (empty)."""
    return curve_placements(z, (quantiles,))[0]


def curve_placements(z: np.ndarray, placements=CURVE_QUANTILES) -> list[tuple[float, ...]]:
    """:func:`curve_knots` of each knot placement, from one pass over the values (one partial sort for
    all their quantiles: the same knots)."""
    z = z[np.isfinite(z)]
    if len(z) < 10:
        return [() for _ in placements]
    q = np.quantile(z, np.concatenate(placements))
    out, at = [], 0
    for qs in placements:
        knots = np.unique(np.round(q[at : at + len(qs)], 10))
        out.append(tuple(float(v) for v in knots) if len(knots) >= 3 else ())
        at += len(qs)
    return out


def knots_supported(z: np.ndarray, y: np.ndarray, knots: tuple[float, ...], min_events: int = MIN_CURVE_EVENTS) -> bool:
    """Whether every interval between consecutive knots holds ``min_events`` events and as many non-events
    (Harrell 2015, §2.4.6: knots where the data can estimate a bend; about 10 events per parameter).
    A placement with knots packed into a tail the outcome rarely visits is left out: on a survey score
    with a ceiling (csat, 1 and 0 of about 250 churns between its 90%, 95% and 98% quantiles, 4.7 / 4.8 /
    4.9) the high-tail knots fitted a spike of 1,384 on one column, and the projection read the value of "+10% CSAT" as
    −575M against a true +213M. Where the outcome is frequent (a threshold below which churn rises) the
    low tail holds many events and its placement stays."""
    return supported_placements(z, y, [knots], min_events)[0]


def supported_placements(z: np.ndarray, y: np.ndarray, placements: list[tuple[float, ...]],
                         min_events: int = MIN_CURVE_EVENTS) -> list[bool]:
    """:func:`knots_supported` of each knot placement of one ``z``, from one pass over the rows: the rows'
    interval among all the placements' knots together (one search), their counts and events per interval
    (integer sums: the same counts as a mask per interval), and each placement's intervals as runs of
    those."""
    if not placements:
        return []
    z = np.where(np.isfinite(z), z, 0.0)
    edges = np.unique(np.concatenate([np.asarray(k, dtype="float64") for k in placements]))
    cut = np.searchsorted(edges, z, side="right")  # i = between edges i − 1 and i
    rows = np.bincount(cut, minlength=len(edges) + 1)
    events = np.bincount(cut, weights=y, minlength=len(edges) + 1)
    rows_at, events_at = np.concatenate([[0], np.cumsum(rows)]), np.concatenate([[0.0], np.cumsum(events)])
    out = []
    for knots in placements:
        at = np.searchsorted(edges, np.asarray(knots, dtype="float64")) + 1  # the interval right of each knot
        n = rows_at[at[1:]] - rows_at[at[:-1]]
        ev = events_at[at[1:]] - events_at[at[:-1]]
        out.append(bool(np.all(np.minimum(ev, n - ev) >= min_events)))
    return out


def with_terms(design: Design, terms: list[Term], segment: np.ndarray | None, *, consume: bool = False) -> Design:
    """``design`` with the columns of ``terms`` appended (values from the KPIs' own columns). With
    ``consume`` (the caller gives ``design`` up: no other reference to its matrix is used again), a
    matrix that owns its memory is widened in place (:func:`_widen`: no second full-size matrix of
    fresh pages, 0.14 s at 260k rows × 35 columns); ``design`` is then not to be read again."""
    if not terms:
        return design
    n, p = design.X.shape
    old = design.X
    widen = consume and old.flags.owndata and old.base is None and old.flags.c_contiguous and n > 0
    X = old if widen else np.empty((n, p + len(terms)))
    segment = None if segment is None else as_text(segment)
    groups = [(design.names.index(kpi), [p + j for j, t in enumerate(terms) if t.kpi == kpi])
              for kpi in dict.fromkeys(t.kpi for t in terms)]

    def fill(s: int, e: int, rows: np.ndarray) -> None:  # block s..e of X from the old matrix's ``rows``
        block = X[s:e]
        block[:, :p] = rows
        masks: dict = {}  # each segment's indicator on these rows, once for all the KPIs
        for j, cols in groups:
            block[:, cols] = term_columns([terms[c - p] for c in cols], rows[:, j],
                                          None if segment is None else segment[s:e], masks=masks)

    if widen:
        _widen(X, len(terms), fill)
    else:
        for s in range(0, n, BLOCK_ROWS):  # by blocks of rows: each block's old and new columns written while in cache
            e = min(n, s + BLOCK_ROWS)
            fill(s, e, old[s:e])
    return replace(design, X=X, names=[*design.names, *(t.name for t in terms)], terms=[*design.terms, *terms])


def _widen(X: np.ndarray, k: int, fill: Callable[[int, int, np.ndarray], None]) -> None:
    """``X`` (n × p, C order, owning its memory, no other view of it in use) made n × (p + k) in place:
    its buffer grown (realloc: only the added tail is new memory), then each block of rows, from the
    last, is copied out of its old place (source and target overlap) and handed to ``fill(s, e, rows)``,
    which writes rows s..e of the widened ``X`` (row i's new place never lies before its old one, nor
    over a row not yet moved: an earlier row's old place ends where row i's begins)."""
    n, p = X.shape
    X.resize((n, p + k), refcheck=False)  # the first n·p values stay in place, in the old layout
    flat = X.reshape(-1)
    for s in reversed(range(0, n, BLOCK_ROWS)):
        e = min(n, s + BLOCK_ROWS)
        fill(s, e, flat[s * p : e * p].reshape(e - s, p).copy())


def candidate_terms(design: Design, kpi: str, y: np.ndarray, segment: np.ndarray | None, *,
                    own: list[str] | None = None, z: np.ndarray | None = None) -> dict[str, list[list[Term]]]:
    """The terms a KPI's linear effect is tested against, per kind, as alternatives: its spline curve
    (one alternative per distinct knot placement of CURVE_QUANTILES with 3+ knots whose every interval
    holds enough events, :func:`knots_supported`) and its own slopes in
    the segments that have enough events for one (:func:`own_slope_levels`; when the design adjusts for
    2+ segments). ``own``: those segments when already known (:func:`own_slope_levels` reads the
    segments and outcome only, the same for every KPI of a design); ``z``: the KPI's column of
    ``design.X`` when already at hand (e.g. a contiguous copy)."""
    out: dict[str, list[list[Term]]] = {}
    z = design.X[:, design.names.index(kpi)] if z is None else z
    placements = list(dict.fromkeys(k for k in curve_placements(z) if k))
    placements = [k for k, ok in zip(placements, supported_placements(z, y, placements)) if ok]
    if placements:
        out["curve"] = [[Term(kpi, "curve", j, knots=knots) for j in range(len(knots) - 2)] for knots in placements]
    levels = design.adjust_levels.get("segment", [])
    if segment is not None and len(levels) > 1:
        own = own_slope_levels(levels, as_text(segment), y) if own is None else own
        if own:
            out["segment"] = [[Term(kpi, "segment", level=lv) for lv in own]]
    return out


def by_segment(kept: list[Term], alternative: list[Term]) -> list[Term]:
    """The alternative block of a KPI tested once its other kind of term is in (``kept``): a curve
    beside segment slopes is a curve in every segment group, never one pooled bend. With the pooled
    curve's columns and the segment-slope levels among ``kept`` + ``alternative``, the block is
    ``alternative`` plus each curve column again in each slope level (z's spline column ×
    1[segment = level]); so the KPI's part of the linear predictor in a segment group is that group's
    own line and own curve (the base group: β·z + the pooled columns; level s: + its slope and bend).

    Why: a pooled curve beside segment slopes bends the segments where the KPI does nothing by the
    curvature of the one where it acts (QA client, support inquiries raising churn in one segment
    only, linear in the raw count, so curved in log1p: the pooled bend with the other segments'
    slopes near −β gave them an effect of the wrong sign, and the improvement value −1.4M against a
    true +7.4M). Empty extra part when either kind is absent."""
    both = [*kept, *alternative]
    curves = [t for t in both if t.kind == "curve" and not t.level]
    levels = [t.level for t in both if t.kind == "segment"]
    return [*alternative, *(Term(t.kpi, "curve", t.index, level=lv, knots=t.knots) for lv in levels for t in curves)]


def own_slope_levels(levels: list[str], segment: np.ndarray, y: np.ndarray,
                     min_events: int = MIN_SEGMENT_EVENTS) -> list[str]:
    """The segments whose slope is tested on its own: each needs ``min_events`` events and non-events on
    the model rows, and so do the other segments together, whose pooled slope is the base one. When every
    segment has enough, the reference (``levels[0]``, the most frequent) is the base, as in the
    adjustment's coding; otherwise the segments short of events are pooled into the base, and while the
    pool itself is short the own-slope segment with the fewest events joins it. On a mid-size client
    (churns: SMB 150, Mid 70, Enterprise 10) Enterprise alone is too thin a base, so Mid joins it and
    SMB's slope is tested against that of Mid + Enterprise (the old rule left Enterprise in SMB's base
    slope and tested Mid only). The rule reads event counts only, never the KPI, so the test keeps its
    level. Empty: no segment test."""
    codes, names = pd.factorize(segment)  # one hashing pass; each group's counts are sums of the levels'
    counts = dict(zip(names.tolist(), np.bincount(codes, minlength=len(names)).tolist()))
    hits = dict(zip(names.tolist(), np.bincount(codes, weights=y, minlength=len(names)).tolist()))

    def events(group: list[str]) -> int:
        ev = int(round(sum(hits.get(lv, 0.0) for lv in group)))
        return min(ev, sum(counts.get(lv, 0) for lv in group) - ev)

    own = [lv for lv in levels if events([lv]) >= min_events]
    if len(own) == len(levels):
        return own[1:]
    own.sort(key=lambda lv: (-events([lv]), levels.index(lv)))
    while own and events([lv for lv in levels if lv not in own]) < min_events:
        own.pop()
    return sorted(own, key=levels.index)


def score_null(y: np.ndarray, X0: np.ndarray, coef0: np.ndarray, link: str, *, info: np.ndarray | None = None) -> tuple:
    """What every score test against the GLM with design ``X0`` fitted at ``coef0`` shares: the
    working weights w = μ'²/V, the score residuals r = (y − μ)μ'/V and the information X0'WX0 (computed
    once per model, not once per tested block: it is the n × p² part). ``info``: that information when
    already at hand (:attr:`GLMResult.info` of the fit of ``X0`` at ``coef0``: the same weights, the
    same bits), not recomputed."""
    mu, d = mean_and_slope(X0 @ coef0, link)
    w, r = _working(y, mu, d)
    return X0, w, r, weighted_gram(X0, w) if info is None else info


def score_test_block(null: tuple, Z: np.ndarray) -> tuple[float, int]:
    """Rao score statistic (χ², df = columns of ``Z``) for adding the block ``Z`` to the fitted binomial
    GLM of ``null`` (:func:`score_null`): U'I⁻¹U with U = Z'(y − μ)μ'/V and the efficient information
    I = Z'WZ − Z'WX0 (X0'WX0)⁻¹ X0'WZ (Rao 1948; expected information)."""
    X0, w, r, info0 = null
    WZ = Z * w[:, None]
    A = X0.T @ WZ
    info = Z.T @ WZ - A.T @ solve(info0, A)
    U = Z.T @ r
    stat = float(U @ solve(info, U))
    return max(stat, 0.0), Z.shape[1]


def score_test_blocks(null: tuple, blocks: list[tuple[list[Term], np.ndarray]],
                      segment: np.ndarray | None = None) -> list[float]:
    """:func:`score_test_block` of each block (its terms, and the standardised values z of their
    KPI), all in one pass over the rows by blocks of ``SCORE_ROWS``: each block's columns are built a
    few thousand rows at a time (the cubes of a knot once for every block of the same z), so
    neither the columns nor their weighted copies ever exist at full length."""
    X0, w, r, info0 = null
    n, p = X0.shape
    widths = [len(terms) for terms, _ in blocks]
    off = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    A, U = np.zeros((p, off[-1])), np.zeros(off[-1])
    D = [np.zeros((k, k)) for k in widths]
    seg = None if segment is None else as_text(segment)
    rows = min(SCORE_ROWS, n)
    built = np.empty((off[-1], rows))  # the columns built one contiguous row each, then turned row-major
    buf, wbuf = np.empty((rows, off[-1])), np.empty((rows, off[-1]))
    wide = max(widths, default=0)
    own, own_w = np.empty(rows * wide), np.empty(rows * wide)  # one block's columns and their weighted copy
    for s in range(0, n, SCORE_ROWS):
        e = min(n, s + SCORE_ROWS)
        Zt = built[:, : e - s]
        cubes: dict[int, dict] = {}
        values: dict[int, np.ndarray] = {}  # each KPI's z on these rows, contiguous: read once
        masks: dict = {}
        for b, (terms, z) in enumerate(blocks):
            if id(z) not in values:
                values[id(z)] = np.ascontiguousarray(z[s:e], dtype="float64")
            term_columns(terms, values[id(z)], None if seg is None else seg[s:e], out=Zt[off[b] : off[b + 1]].T,
                         cubes=cubes.setdefault(id(z), {}), masks=masks)
        Zc = buf[: e - s]
        Zc[...] = Zt.T
        WZ = np.multiply(Zc, w[s:e, None], out=wbuf[: e - s])
        A += X0[s:e].T @ WZ
        U += r[s:e] @ Zc
        for b, k in enumerate(widths):  # each block's own columns, contiguous (rows × its width): the same product,
            zb = own[: (e - s) * k].reshape(e - s, k)  # written into buffers made once (not two new copies a block)
            zb[...] = Zt[off[b] : off[b + 1]].T
            D[b] += zb.T @ np.multiply(zb, w[s:e, None], out=own_w[: (e - s) * k].reshape(e - s, k))
    P = solve(info0, A)
    out = []
    for b in range(len(blocks)):
        cols = slice(off[b], off[b + 1])
        info = D[b] - A[:, cols].T @ P[:, cols]
        out.append(max(float(U[cols] @ solve(info, U[cols])), 0.0))
    return out


SCORE_ROWS = 16384


def select_terms(
    y: np.ndarray, design: Design, fit: GLMResult, kpis: list[str], segment: np.ndarray | None, alpha: float,
    *, refit=None, consume: bool = False,
) -> tuple[Design, GLMResult, pd.DataFrame]:
    """Is a KPI's effect curved, or different by segment? Forward selection with false-discovery
    control (Benjamini & Gavrilov 2009) over every candidate block (each KPI of ``kpis``: its spline
    curve, its slopes in the other segments; :func:`candidate_terms`; a curve's knot placement is the
    one with the largest score statistic, its p multiplied by the number of placements, Bonferroni):
    at step i the block with the
    smallest score-test p given the model so far is added when p ≤ α_i = iα / (m + 1 − i(1 − α)),
    m = number of blocks, and the model is refitted; the first block that fails stops the selection.
    Once one kind of a KPI is in, its other kind is tested as the KPI's shape within each segment
    group (:func:`by_segment`: curve and slopes together give each group its own line and curve).
    Testing given the blocks already in matters: a proxy's curvature vanishes once its driver's curve
    is in. ``fit``: the GLM of ``design.X`` (its information, :attr:`GLMResult.info`, serves the first
    score tests). ``refit(X, names)`` fits the extended model (default: the binomial GLM with ``fit``'s
    link, from the coefficients of the step before and 0 for the added columns). ``consume``: the caller
    gives ``design`` up (its matrix is not read again), so the first added terms may widen it in place
    (:func:`with_terms`); the later steps' designs, made here, always are (without ``refit``: the
    default fit keeps no reference to a matrix).

    Returns the extended design, its fit, and the table of blocks (kpi, kind, df, stat, p_value at
    the last step the block was tested, step at which it was added or NaN, kept).
    """
    from scipy.stats import chi2

    segment = None if segment is None else as_text(segment)
    levels = design.adjust_levels.get("segment", [])
    own = own_slope_levels(levels, segment, y) if segment is not None and len(levels) > 1 else []
    # the KPI columns stay as terms are added: each read once out of the row-major design, contiguous
    # (copies: never a view of a matrix that a step may widen in place)
    z = {k: np.array(design.X[:, design.names.index(k)], order="C") for k in kpis if k in design.kpis}
    blocks = [(k, kind, alternatives) for k in kpis if k in design.kpis
              for kind, alternatives in candidate_terms(design, k, y, segment, own=own, z=z[k]).items()]
    m = len(blocks)
    chosen: dict[int, list[Term]] = {}
    stats = {j: (np.nan, np.nan) for j in range(m)}
    step = {}
    current, cur_fit = design, fit
    while len(step) < m:
        i = len(step) + 1
        null = score_null(y, current.X, cur_fit.coef, cur_fit.link, info=getattr(cur_fit, "info", None))
        tests = [(j, terms) for j in range(m) if j not in step for terms in blocks[j][2]]
        values = score_test_blocks(null, [(terms, z[blocks[j][0]]) for j, terms in tests], segment)
        del null  # it holds the model's matrix: freed with ``current`` below, before the refit
        for j in dict.fromkeys(j for j, _ in tests):
            alternatives = blocks[j][2]
            best_stat = None
            for (jj, terms), stat in zip(tests, values):
                if jj == j and (best_stat is None or stat > best_stat[0]):
                    best_stat = (stat, min(1.0, len(alternatives) * float(chi2.sf(stat, len(terms)))))
                    chosen[j] = terms
            stats[j] = best_stat
        best = min((j for j in range(m) if j not in step), key=lambda j: (stats[j][1], j))
        if not stats[best][1] <= i * alpha / (m + 1 - i * (1 - alpha)):
            break
        step[best] = i
        give_up = consume if current is design else refit is None  # a design made here is this loop's alone
        current = with_terms(current, chosen[best], segment, consume=give_up)
        for j, (k, kind, alternatives) in enumerate(blocks):  # the KPI's other kind: within each segment
            if j not in step and k == blocks[best][0]:
                blocks[j] = (k, kind, [by_segment(chosen[best], alt) for alt in alternatives])
        cur_fit = (refit(current.X, current.names) if refit else
                   fit_binomial(y, current.X, link=fit.link, names=current.names,  # from the step before
                                start=np.concatenate([cur_fit.coef, np.zeros(len(chosen[best]))])))
    table = pd.DataFrame(
        [{"kpi": k, "kind": kind, "df": len(chosen.get(j, alts[0])), "stat": stats[j][0], "p_value": stats[j][1],
          "step": step.get(j, np.nan), "kept": j in step} for j, (k, kind, alts) in enumerate(blocks)],
        columns=["kpi", "kind", "df", "stat", "p_value", "step", "kept"],
    )
    return current, cur_fit, table


def linear_flagged(
    design: Design, fit: GLMResult, alpha: float, exclude: tuple[str, ...] = ("contract_months",)
) -> list[str]:
    """The KPIs of ``design`` whose linear effect passes Benjamini–Hochberg at ``alpha`` in ``fit``
    (Wald p): the candidates whose shape and segment differences :func:`select_terms` examines. Checking
    only flagged KPIs keeps noise KPIs and proxies out of the second step, where a driver's misfitted
    shape could otherwise leak into them (measured on the simulator: a proxy's curve kept in 3 of 20
    seeds when every KPI was a candidate)."""
    from statsmodels.stats.multitest import multipletests

    ks = [k for k in design.kpis if k not in exclude]
    if not ks:
        return []
    p = fit.summary().loc[ks, "p_value"].to_numpy(dtype="float64")
    q = multipletests(np.nan_to_num(p, nan=1.0), method="fdr_bh")[1]
    return [k for k, qk in zip(ks, q) if qk < alpha]


def joint_p(design: Design, coef: np.ndarray, cov: np.ndarray, kpi: str) -> float:
    """Wald p-value that all of the KPI's columns (its line and its curve / segment slopes) are 0:
    whether the KPI has any effect, as modelled; the plain Wald p of β without extra terms."""
    from scipy.stats import chi2

    cols = [design.names.index(kpi), *(design.names.index(t.name) for t in design.kpi_terms(kpi))]
    b = coef[cols]
    stat = float(b @ np.linalg.lstsq(cov[np.ix_(cols, cols)], b, rcond=None)[0])
    return float(chi2.sf(stat, len(cols)))


def slope_p(design: Design, coef: np.ndarray, cov: np.ndarray, kpi: str, segment: np.ndarray | None = None) -> float:
    """Wald p of the KPI's average slope across its range (:func:`slope_weights`, the effect drivers.csv
    reports): whether the data support a direction. A curve is flagged by the joint test of its columns
    (:func:`joint_p`: any effect), which says nothing of its direction: a non-monotone curve (risk up on both
    sides) has an overwhelming joint test and an average slope ≈ 0, and its sign is then noise (peer client:
    scheduled meetings' up-sell curve, average OR 1.017 per SD, q = 4e-11). drivers.csv gives a curve's
    direction only where this p is below alpha (``triggers._add_q_and_flags``)."""
    j = design.names.index(kpi)
    a = slope_weights(design, kpi, design.X[:, j], segment)
    se = float(np.sqrt(max(a @ cov @ a, 0.0)))
    return float(2 * norm.sf(abs(a @ coef) / se)) if se > 0 else 1.0


def slope_weights(design: Design, kpi: str, z: np.ndarray, segment: np.ndarray | None = None) -> np.ndarray:
    """Weights a (p,) such that a · coef is the KPI's average slope per SD across its range:
    (f(z₉₉) − f(z₁)) / (z₉₉ − z₁), f = the KPI's part of the linear predictor (linear column, curve,
    segment slopes), z₁, z₉₉ its 1st and 99th percentiles over the rows given, averaged over those rows'
    segments. Without extra terms, a picks β itself; for a curve, its sign says whether more of the KPI
    goes with more of the outcome over the range (the direction), whatever the bends in between."""
    a = np.zeros(len(design.names))
    a[design.names.index(kpi)] = 1.0
    terms = design.kpi_terms(kpi)
    z = np.where(np.isfinite(z), z, 0.0)
    lo, hi = np.quantile(z, [0.01, 0.99]) if len(z) else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = float(z.min(initial=0.0)), float(z.max(initial=1.0))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, lo + 0.5
    n = len(z)
    seg = None if segment is None else as_text(segment)
    for t in terms:
        if t.kind == "curve" and not t.level:  # the same value in every row: evaluated once
            up, down = t.values(np.array([hi])), t.values(np.array([lo]))
        else:
            up, down = t.values(np.full(n, hi), seg), t.values(np.full(n, lo), seg)
        a[design.names.index(t.name)] = float(np.mean(up - down) / (hi - lo)) if n else 0.0
    return a


TENURE = "contract_months"


def null_design(panel: pd.DataFrame, rows: np.ndarray, transforms: dict[str, Transform],
                adjust: tuple[str, ...] = ADJUST) -> np.ndarray:
    """[1, z(contract_months), dummies of ``adjust``] on ``rows``: the adjustments alone (the null
    model of the score tests)."""
    return design_matrix(panel, rows, [TENURE], 0, transforms, adjust=adjust, prune=False).X


def keep_order(y: np.ndarray, X0: np.ndarray, Z: np.ndarray, candidates: list[str], kpis: list[str],
               link: str) -> list[str]:
    """The one rule for which KPI of a collinear pair (or a near-linear combination) a model keeps
    (docs/methods.md, "Collinear KPIs: which one is kept"): the order in which :func:`design_matrix`'s
    prunings consider the KPIs. ``contract_months`` first (the tenure adjustment), then ``candidates``
    (``Z``: their standardised values on the model rows, missing → 0) by decreasing |Rao score z| of
    each added alone to the null model ``X0`` of outcome ``y`` (ties in the given order), then the
    other ``kpis`` as given. So the KPI more strongly linked to the outcome is kept, whatever the
    catalogue order, and every stage that fits this outcome on these rows keeps the same one."""
    z = score_z_from(score_terms(y, base_fit(y, X0, link)), Z)
    order = [TENURE, *[candidates[j] for j in np.argsort(-np.abs(np.nan_to_num(z)), kind="stable")]]
    return order + [k for k in kpis if k not in order]


def association_order(panel: pd.DataFrame, rows: np.ndarray, y: np.ndarray, kpis: list[str], lag: int,
                      transforms: dict[str, Transform], adjust: tuple[str, ...], link: str) -> list[str]:
    """:func:`keep_order` of ``kpis`` for outcome ``y`` on the panel ``rows`` (KPIs at t − lag, null
    model: tenure and ``adjust``); ``kpis`` unchanged when ``y`` has fewer than MIN_EVENTS events or
    non-events (no model of it is estimated) or no candidate."""
    candidates = [k for k in kpis if k != TENURE and k in transforms]
    if not candidates or min(y.sum(), len(y) - y.sum()) < MIN_EVENTS or TENURE not in transforms:
        return list(kpis)
    Z = _lagged_at(panel, candidates, lag, rows)
    for j, k in enumerate(candidates):
        Z[:, j] = transforms[k].forward(Z[:, j])
    X0 = null_design(panel, rows, transforms, adjust)
    return keep_order(y, X0, zero_missing(Z), candidates, kpis, link)


def design_matrix(
    panel: pd.DataFrame,
    rows: np.ndarray,
    kpis: list[str],
    lag: int,
    transforms: dict[str, Transform] | None = None,
    adjust: tuple[str, ...] = ("segment", "contract_type"),
    prune: bool = True,
    sustained: np.ndarray | None = None,
    *,
    priority: list[str] | Callable[[], list[str]] | None = None,
) -> Design:
    """Design for the panel rows selected by boolean ``rows``: [1, z(KPIs), dummies of ``adjust``].

    KPIs are lagged (t − lag; ``contract_months`` at t), transformed and standardised (``kpi_transforms`` fitted on the
    whole panel unless given), missing → 0. Categorical adjustments are treatment-coded against their
    most frequent level. With ``prune``, constant, mostly-missing and collinear KPIs are dropped, and
    ``missing`` keeps the missing-value mask (on the rows) of each kept KPI missing in at least
    MISSING_MIN_SHARE of them, for :func:`informative_missing`. ``sustained`` (a mask over the selected
    rows, from :func:`sustained_rows`) gives those rows each KPI's recent mean (:func:`sustained_at`)
    instead of its month t − lag value. ``priority`` (:func:`keep_order`): the order in which the
    collinearity prunings consider the KPIs, the first of a pair being kept (default: ``kpis``' order);
    the columns stay in ``kpis``' order. A callable ``priority`` is called (for that order) only when the
    prunings would depend on it (:func:`_order_matters`): where no KPI can be dropped in any order,
    the keep order's score tests are not made, and the design is the same.
    """
    transforms = transforms if transforms is not None else kpi_transforms(panel, kpis)
    dropped: dict[str, str] = {}
    for k in kpis:
        if k not in transforms:
            dropped[k] = Notice("kpi_constant", stage="models", severity="note")
    use = [k for k in kpis if k in transforms]
    raw = _lagged_at(panel, use, lag, rows)
    if sustained is not None and sustained.any():
        idx = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows)
        raw[sustained] = sustained_at(panel, use, lag, idx[sustained])
    n = len(raw)
    masks: dict[str, np.ndarray] = {}
    if prune:
        for k in use:
            if transforms[k].rare:
                dropped[k] = Notice("kpi_rare", stage="models", severity="note", accounts=transforms[k].rare,
                                    value=transforms[k].usual)
        for j, k in enumerate(use):
            gap = np.isnan(raw[:, j])
            share = float(gap.mean()) if n else 0.0
            if share > MAX_MISSING:
                dropped[k] = Notice("kpi_mostly_missing", stage="models", severity="note", share=share)
            elif share >= MISSING_MIN_SHARE and k != "contract_months":
                masks[k] = gap
        for count, value in value_pairs(use, raw):
            if count not in dropped and value not in dropped:
                dropped[count] = Notice("kpi_value_pair", stage="models", severity="note", value=value)
    Z = raw  # standardised in place, one contiguous column at a time
    for j, k in enumerate(use):
        col = Z[:, j]
        transforms[k].forward(col, out=col)
        np.copyto(col, 0.0, where=~np.isfinite(col))
    keep = [j for j, k in enumerate(use) if k not in dropped]
    dummies: list[np.ndarray] = []
    dummy_names: list[str] = []
    levels: dict[str, list[str]] = {}
    for a in adjust:
        if a not in panel:
            continue
        # the item's values on the rows alone, read from its own column (``panel.loc[rows, items]`` takes
        # the rows of every panel column first: 0.55 s of 17 designs at 100k accounts); one hashing pass:
        # the levels' codes and counts (value_counts' order: by count, ties in order of appearance), each
        # dummy a comparison of integer codes rather than of strings
        codes, uniques = pd.factorize(pd.Series(panel[a].to_numpy()[rows]).astype(str).to_numpy())
        counts = pd.Series(np.bincount(codes, minlength=len(uniques)), index=uniques).sort_values(ascending=False)
        if counts.empty:
            continue
        reference, others = counts.index[0], sorted(counts.index[1:])
        levels[a] = [reference, *others]
        code = {v: c for c, v in enumerate(uniques)}
        for v in others:
            dummies.append(codes == code[v])
            dummy_names.append(f"{a}={v}")
    X = np.empty((n, 1 + len(keep) + len(dummies)))  # the one full-size matrix, filled in place
    gram = prune and n and keep
    G = np.zeros((X.shape[1], X.shape[1])) if gram else None
    for s in range(0, n, BLOCK_ROWS):  # by blocks of rows: column-major Z into the row-major X
        b = X[s : s + BLOCK_ROWS]
        _fill_rows(b, Z, keep, dummies, s, min(n, s + BLOCK_ROWS))
        if gram:  # while the block is in cache: its part of X'X
            G += b.T @ b
    if gram:
        # one Gram matrix of [1, KPIs, dummies] serves both prunings: pairwise correlations and the
        # regressions of each KPI on those kept before it
        pos = {j: c for c, j in enumerate(keep, start=1)}  # KPI → its column of G
        base = [0, *range(1 + len(pos), G.shape[0])]
        if callable(priority):  # the order asked for only where a pruning would depend on it
            kpi_cols = [pos[j] for j in keep]
            priority = priority() if _order_matters(G, n, kpi_cols, [use[j] for j in keep], base) else None
        rank = {k: i for i, k in enumerate(priority or [])}
        first = sorted(keep, key=lambda j: rank.get(use[j], len(rank)))  # stable: kpis' order otherwise
        first = _prune_collinear(G, n, first, use, dropped, cols=[pos[j] for j in first])
        stay = _prune_dependent_gram(G, n, [pos[j] for j in first], [use[j] for j in first], base, dropped)
        cols = [0, *(pos[j] for j in keep if j in first and pos[j] in stay), *base[1:]]
        keep = [j for j in keep if j in first and pos[j] in stay]
        del b  # no view of X is left: it is shrunk in place
        X = _compact(X, cols)
    kept = [use[j] for j in keep]
    masks = {k: m for k, m in masks.items() if k in kept} if prune else {}
    return Design(X, ["intercept", *kept, *dummy_names], kept, {k: transforms[k] for k in kept}, levels, dropped,
                  missing=masks)


def _fill_rows(out: np.ndarray, Z: np.ndarray, keep: list[int], dummies: list[np.ndarray], s: int, e: int) -> None:
    """Rows s..e of the design [1, Z[:, keep], dummies] into ``out`` (of e − s rows); each run of
    consecutive ``keep`` columns is copied by one assignment (a block transposed at once, not column by
    column)."""
    out[:, 0] = 1.0
    c = 1
    for j, k in _runs(keep):
        out[:, c : c + k] = Z[s:e, j : j + k]
        c += k
    for c, d in enumerate(dummies, start=1 + len(keep)):
        out[:, c] = d[s:e]


def _runs(cols: list[int]) -> list[tuple[int, int]]:
    """``cols`` as runs of consecutive integers: (first, length) each."""
    out: list[tuple[int, int]] = []
    for j in cols:
        if out and out[-1][0] + out[-1][1] == j:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((j, 1))
    return out


def _order_matters(G: np.ndarray, n: int, cols: list[int], labels: list[str], base: list[int]) -> bool:
    """Whether the collinearity prunings of :func:`design_matrix` (on the Gram matrix ``G`` over ``n``
    rows; KPI columns ``cols`` named ``labels``, adjustments ``base``) could drop a KPI in some order:
    a pair with |r| > COLLINEAR_R (:func:`_prune_collinear`'s r, element by element the same in any
    order), or a KPI with R² > MAX_R2 on the adjustments and *all* the other KPIs (in any order it is
    regressed on a subset of those, whose R² is not larger; a margin of 1e-6 covers rounding). False:
    every order keeps every KPI."""
    if len(cols) >= 2:
        mean = G[0, cols] / n
        C = G[np.ix_(cols, cols)] - n * np.outer(mean, mean)
        sd = np.sqrt(np.clip(np.diag(C), 0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.clip(np.nan_to_num(C / np.outer(sd, sd)), -1, 1)
        np.fill_diagonal(r, 0.0)
        if np.any(np.abs(r) > COLLINEAR_R):
            return True
    for c, name in zip(cols, labels):
        if name == "contract_months":
            continue  # always kept
        others = [*base, *(o for o in cols if o != c)]
        b = np.linalg.lstsq(G[np.ix_(others, others)], G[others, c], rcond=None)[0]
        tss = G[c, c] - n * (G[0, c] / n) ** 2
        if not tss > 0 or 1 - (G[c, c] - G[others, c] @ b) / tss > MAX_R2 - 1e-6:
            return True
    return False


def _compact(X: np.ndarray, cols: list[int]) -> np.ndarray:
    """``X[:, cols]`` (``cols`` increasing) written over ``X``'s own memory by blocks of rows (row i's
    new place never lies past its old one, nor past a later row's), then the buffer shrunk to it: no
    second full-size matrix. ``X`` must own its memory, with no other view of it in use."""
    n, p = X.shape
    if len(cols) == p:
        return X
    k = len(cols)
    flat = X.reshape(-1)
    for s in range(0, n, BLOCK_ROWS):
        e = min(n, s + BLOCK_ROWS)
        flat[s * k : e * k] = X[s:e][:, cols].reshape(-1)  # a copy of the block first: source and target overlap
    del flat
    X.resize((n, k), refcheck=False)  # keeps the first n·k values in place (realloc), drops the rest
    return X


def _gram_of(n: int, fill, p: int) -> np.ndarray:
    """X'X of an n × p matrix that ``fill(s, e, out)`` writes a block of rows of at a time (never held
    whole)."""
    G = np.zeros((p, p))
    buf = np.empty((min(BLOCK_ROWS, n), p))
    for s in range(0, n, BLOCK_ROWS):
        b = buf[: min(BLOCK_ROWS, n - s)]
        fill(s, s + len(b), b)
        G += b.T @ b
    return G


VALUE_SUFFIXES = ("_value", "_amount", "_sum", "_total", "_revenue", "_mrr")
PAIR_AGREEMENT = 0.99


def value_pairs(names: list[str], raw: np.ndarray) -> list[tuple[str, str]]:
    """(count, value) pairs among KPIs: ``X`` and ``X_value`` (or _amount, _sum, _total, _revenue,
    _mrr) that are zero in the same rows (≥ 99% of the rows where both are measured, with some zeros):
    the number of some events and their summed value. Entered together, the count given the value is
    the inverse of the mean event size, which the model then credits with the curvature or the size
    effect the value leaves over (the peer client's won-deal count got OR 0.67 for up-sell beside its
    value's 2.21); the value carries both the events and their size, so it stands for the pair."""
    out = []
    for j, k in enumerate(names):
        for suffix in VALUE_SUFFIXES:
            if k + suffix not in names:
                continue
            v = raw[:, names.index(k + suffix)]
            c = raw[:, j]
            both = np.isfinite(c) & np.isfinite(v)
            if both.sum() < 10:
                continue
            zc, zv = c[both] == 0, v[both] == 0
            if zc.mean() >= 0.01 and np.mean(zc == zv) >= PAIR_AGREEMENT:
                out.append((k, k + suffix))
    return out


def prune_dependent(design: Design, max_r2: float = MAX_R2) -> Design:
    """Drop KPIs that are (near-)linear combinations of KPIs kept before them.

    :func:`cskit.models.design_matrix` drops a KPI that travels with *one* other (|r| > 0.9); a KPI
    can also be the sum or mix of several (licenses = licenses_basic + licenses_pro). In the design's
    KPI order, each KPI is regressed on the intercept, the adjustments and the KPIs kept so far; it is
    dropped when R² > ``max_r2`` (variance inflation > 10), naming the kept KPIs that carry it.
    (:func:`design_matrix` applies the same rule to its Gram matrix, before building the design.)
    """
    X, names = design.X, design.names
    n_kpi = len(design.kpis)
    if len(X) == 0 or n_kpi == 0:
        return design
    G = _gram_of(len(X), lambda s, e, out: np.copyto(out, X[s:e]), X.shape[1])
    dropped = dict(design.dropped)
    base = [0, *range(1 + n_kpi, X.shape[1])]
    keep = sorted([*base, *_prune_dependent_gram(G, len(X), list(range(1, 1 + n_kpi)), names[1 : 1 + n_kpi], base,
                                                 dropped, max_r2)])
    kpis = [names[j] for j in keep if 1 <= j <= n_kpi]
    return Design(X[:, keep], [names[j] for j in keep], kpis, {k: design.transforms[k] for k in kpis},
                  design.adjust_levels, dropped, design.terms,
                  missing={k: m for k, m in design.missing.items() if k in kpis})


def _prune_dependent_gram(G: np.ndarray, n: int, cols: list[int], labels: list[str], base: list[int],
                          dropped: dict[str, str], max_r2: float = MAX_R2) -> list[int]:
    """:func:`prune_dependent`'s rule on the Gram matrix ``G`` (over ``n`` rows, column 0 the
    intercept): each KPI column of ``cols`` (in order; ``labels`` its names) regressed on the columns
    ``base`` (intercept, adjustments) and the KPI columns kept before it. Returns the kept ``cols``."""
    kept = list(base)
    out = []
    for c, name in zip(cols, labels):
        if name == "contract_months":
            kept.append(c)
            out.append(c)
            continue
        b = np.linalg.lstsq(G[np.ix_(kept, kept)], G[kept, c], rcond=None)[0]
        tss = G[c, c] - n * (G[0, c] / n) ** 2
        r2 = 1 - (G[c, c] - G[kept, c] @ b) / tss if tss > 0 else 1.0
        if r2 <= max_r2:
            kept.append(c)
            out.append(c)
            continue
        partners = sorted(
            ((abs(coef), labels[cols.index(g)]) for coef, g in zip(b, kept) if g not in base), reverse=True
        )[:3]
        dropped[name] = Notice("kpi_near_linear", stage="models", severity="note",
                               carriers=[p for _, p in partners], r2=float(r2))
    return out


def informative_missing(design: Design, y: np.ndarray, coef: np.ndarray, link: str, alpha: float,
                        outcome: str = "") -> pd.DataFrame:
    """Is a KPI's missingness associated with the outcome, given the rest of the model (``coef`` on
    ``design.X``)? For each KPI of ``design.missing`` (missing in 5–50% of the rows), the Rao score z of
    its missing indicator added to the model *without the KPI itself* (refitted by one Fisher step from
    ``coef``: asymptotically the refit); Benjamini–Hochberg q over those KPIs; ``informative`` =
    q < alpha. Leaving the KPI out makes the null exact under missingness at random given the other
    columns (with it, mean-imputed gaps of a strong KPI differ from "a month at the mean" by convexity).
    Mean imputation alone is then biased (the missing months are not average months), so
    the caller adds the informative indicators (:func:`with_indicators`) and refits. Columns
    :data:`MISSING_COLUMNS` (effect and interval are filled by :func:`indicator_effects`)."""
    cand = [k for k in design.kpis if k in design.missing and k not in design.indicators]
    if not cand or not len(y):
        return pd.DataFrame(columns=MISSING_COLUMNS)
    Zm = np.column_stack([design.missing[k].astype("float64") for k in cand])
    z = np.empty(len(cand))
    X = design.X
    for i, k in enumerate(cand):
        # the model without column k, read off the full design (its coefficient held at 0, its row and
        # column of the information left out): no copy of the design per KPI
        keep = np.array([c for c in range(X.shape[1]) if design.names[c] != k])
        b = np.zeros(X.shape[1])
        b[keep] = coef[keep]
        mu, d = mean_and_slope(X @ b, link)
        info, grad = weighted_gram(X, *_working(y, mu, d))
        b[keep] += solve(info[np.ix_(keep, keep)], grad[keep])
        mu, d = mean_and_slope(X @ b, link)
        w, u = _working(y, mu, d)
        zk = Zm[:, i]
        A = weighted_cross(X, w, zk[:, None])[keep, 0]
        var = float(zk @ (w * zk) - A @ solve(weighted_gram(X, w)[np.ix_(keep, keep)], A))
        z[i] = float(u @ zk) / np.sqrt(var) if var > 1e-12 * len(y) else np.nan
    p = 2 * norm.sf(np.abs(z))
    ok = np.isfinite(p)
    q = np.full(len(p), np.nan)
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    out = pd.DataFrame({"kpi": cand, "outcome": outcome, "share": Zm.mean(axis=0), "z": z, "p_value": p,
                        "q_value": q})
    out["informative"] = out["q_value"] < alpha
    out["effect"] = out["ci_low"] = out["ci_high"] = np.nan
    return out[MISSING_COLUMNS]


def with_indicators(design: Design, kpis: list[str]) -> Design:
    """``design`` with a missing indicator column (1 = not measured at t − lag) for each of ``kpis``,
    after the adjustments; an indicator identical to one already in (KPIs missing in the same months)
    is not repeated: that one carries it. The KPI's gaps are filled with its linear prediction from the
    other columns (least squares on the rows where it was measured) instead of its mean: otherwise KPIs
    that travel with it (a survey score and NPS) would carry its effect in the gaps and take part of it
    from the measured months too (the bias of the plain indicator method; Jones 1996)."""
    cols, names, added = [], [], []
    have = [design.missing[k] for k in design.indicators]
    for k in kpis:
        m = design.missing[k]
        if any(np.array_equal(m, h) for h in have):
            continue
        have.append(m)
        cols.append(m.astype("float64"))
        names.append(MISSING_PREFIX + k)
        added.append(k)
    if not added:
        return design
    p = design.X.shape[1]
    X = np.empty((len(design.X), p + len(cols)))
    X[:, :p] = design.X
    for j, c in enumerate(cols, start=p):
        X[:, j] = c
    for k in added:  # the gaps take the value the other columns predict (regression imputation)
        j, gap = design.names.index(k), design.missing[k]
        others = [c for c in range(p) if c != j]
        b = np.linalg.lstsq(X[~gap][:, others], X[~gap, j], rcond=None)[0]
        X[gap, j] = X[gap][:, others] @ b
    return replace(design, X=X, names=[*design.names, *names], indicators=[*design.indicators, *added],
                   missing_rate=design.missing_rate | {k: float(design.missing[k].mean()) for k in added})


def expected_indicator(gamma, rate: float):
    """The value of a missing indicator (coefficient ``gamma`` on the log-hazard) in a future month whose
    KPI is missing with probability ``rate``: x with exp(γ·x) = E[exp(γ·I)] = 1 − rate + rate·e^γ, so that
    γ·x is the expected hazard's shift (a hazard is convex in I: plugging the share itself in, exp(γ·rate),
    understates it, by 1.9 / 1.26 for a 10% gap rate with HR 10; churn probabilities 0.10 against a true
    0.15 on the MNAR look-alike). → ``rate`` as γ → 0. Works on arrays of γ (draws)."""
    g = np.asarray(gamma, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = np.log1p(rate * np.expm1(g)) / g
    out = np.where(np.abs(g) > 1e-12, x, rate)
    return float(out) if out.ndim == 0 else out


def indicator_effects(table: pd.DataFrame, design: Design, coef: np.ndarray, se: np.ndarray) -> pd.DataFrame:
    """Fill ``effect`` (exp of the indicator's coefficient: the hazard or odds ratio of a month without
    a value against one at the KPI's mean) and its 95% interval for the indicators in ``design``."""
    out = table.copy()
    for i, k in zip(out.index, out["kpi"]):
        if k in design.indicators:
            j = design.indicator_column(k)
            b, s = float(coef[j]), float(se[j])
            out.loc[i, ["effect", "ci_low", "ci_high"]] = np.exp(
                [b, b - Z975 * s, b + Z975 * s]
            )
    return out


def add_informative_indicators(y: np.ndarray, design: Design, link: str, alpha: float, outcome: str = "",
                               coef: np.ndarray | None = None) -> tuple[Design, pd.DataFrame]:
    """Test the missingness of ``design.missing``'s KPIs (:func:`informative_missing`, at the fit
    ``coef``, fitted here when not given) and add the indicators of the informative ones. Returns the
    design (the same object when none is) and the missingness table."""
    if not design.missing or not len(y):
        return design, pd.DataFrame(columns=MISSING_COLUMNS)
    if coef is None:
        coef = fit_binomial(y, design.X, link=link).coef
    table = informative_missing(design, y, coef, link, alpha, outcome)
    flagged = list(table.loc[table["informative"].astype(bool), "kpi"])
    return (with_indicators(design, flagged) if flagged else design), table


def fit_with_missingness(y: np.ndarray, design: Design, link: str, alpha: float, outcome: str = "",
                         *, fit: "GLMResult | None" = None) -> tuple[Design, "GLMResult", pd.DataFrame]:
    """Fit the binomial GLM on ``design``; where a KPI's missingness is informative
    (:func:`informative_missing`), add its indicator and refit. Returns the design, the fit and the
    missingness table (one row per tested KPI, effects of the added indicators filled). ``fit``: the
    GLM already fitted on ``design`` (shared by another model, ``cskit.fits``), not refitted."""
    fit = fit_binomial(y, design.X, link=link, names=design.names) if fit is None else fit
    new, table = add_informative_indicators(y, design, link, alpha, outcome, fit.coef)
    if new is not design:
        fit = fit_binomial(y, new.X, link=link, names=new.names)
        table = indicator_effects(table, new, fit.coef, fit.se)
    return new, fit, table


def cluster_cov(fit: "GLMResult", X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Cluster-robust (sandwich) covariance of a binomial GLM fit, clustered by ``groups`` (accounts):
    A⁻¹ (Σ_g s_g s_gᵀ) A⁻¹ with A the expected information and s_g the score summed over the cluster's
    rows, times G / (G − 1) (the usual small-sample factor; Liang & Zeger 1986, Cameron & Miller 2015).
    ``fit`` is the GLM fitted on ``X`` (its :attr:`GLMResult.info` is A when present).
    Rows of one account are repeated months: when the model leaves out something lasting about the
    account, its months are not independent and the model-based covariance is too small."""
    mu, d = mean_and_slope(X @ fit.coef, fit.link)
    v = mu * (1 - mu)
    codes, sizes = _cluster_codes(groups)
    S = sp.csr_matrix((np.ones(len(y)), (codes, np.arange(len(y)))), shape=(len(sizes), len(y)))
    ug = _scaled(S, (y - mu) * d / v) @ X  # the clusters' score sums, without the n × p score rows
    g = len(sizes)
    # the expected information at the estimate: the fit's own (the same weights on the same X, the same
    # bits), computed only for a fit that does not carry it
    bread = inverse(fit.info if fit.info is not None else weighted_gram(X, d * d / v))
    return bread @ (ug.T @ ug) @ bread * (g / max(g - 1, 1))


def _prune_collinear(G: np.ndarray, n: int, keep: list[int], names: list[str], dropped: dict[str, str],
                     cols: list[int] | None = None) -> list[int]:
    """Drop each KPI of ``keep`` (in this order) whose |Pearson r| with one kept before it exceeds
    COLLINEAR_R; r from the Gram matrix ``G`` of [1, KPIs, …] over ``n`` rows, ``cols`` the columns of
    G of ``keep`` (default 1, 2, …)."""
    if len(keep) < 2:
        return keep
    cols = list(range(1, 1 + len(keep))) if cols is None else cols
    mean = G[0, cols] / n
    C = G[np.ix_(cols, cols)] - n * np.outer(mean, mean)
    sd = np.sqrt(np.clip(np.diag(C), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip(np.nan_to_num(C / np.outer(sd, sd)), -1, 1)
    kept: list[int] = []
    for a, j in enumerate(keep):
        partner = next((b for b in kept if abs(r[a, keep.index(b)]) > COLLINEAR_R), None)
        if partner is None:
            kept.append(j)
        else:
            dropped[names[j]] = Notice("kpi_collinear", stage="models", severity="note", partner=names[partner],
                                       r=float(r[a, keep.index(partner)]))
    return kept


class _Fit:
    """What a fit with a covariance ``cov`` of its coefficients offers: their standard errors."""

    cov: np.ndarray

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov), 0, None))


@dataclass
class GLMResult(_Fit):
    """A fitted binomial GLM: coefficients, their covariance, and the data summary."""

    coef: np.ndarray
    cov: np.ndarray
    names: list[str]
    link: str
    n: int
    events: int
    converged: bool
    iterations: int
    loglik: float
    info: np.ndarray | None = field(default=None, repr=False, compare=False)  # X'WX at coef (cov⁻¹)

    def summary(self) -> pd.DataFrame:
        from scipy.stats import norm

        z = self.coef / self.se
        return pd.DataFrame(
            {"coef": self.coef, "se": self.se, "z": z, "p_value": 2 * norm.sf(np.abs(z))}, index=self.names
        )


def mean_and_slope(eta: np.ndarray, link) -> tuple[np.ndarray, np.ndarray]:
    """Mean μ (clipped inside (0, 1)) and dμ/dη for the cloglog or logit link; for a
    :class:`cskit.sampling.SampledLink` the kept rows' mean and slope (``sampling.sampled_mean``)."""
    if isinstance(link, SampledLink):
        mu, d = mean_and_slope(eta, link.name)
        mu, d = sampled_mean(mu, d, link.offset)  # new arrays: clipped in place
        return np.clip(mu, 1e-12, 1 - 1e-12, out=mu), np.maximum(d, 1e-300, out=d)
    # the same operations as mu = −expm1(−exp(η)), d = exp(η − exp(η)) (cloglog) or mu = 1 / (1 + exp(−η)),
    # d = mu (1 − mu) (logit), written into two arrays (the same bits, no temporary per operation)
    if link == "cloglog":
        d = np.clip(eta, -40, 3.5)
        e = np.exp(d)
        mu = np.negative(e)
        np.expm1(mu, out=mu)
        np.negative(mu, out=mu)
        np.subtract(d, e, out=d)
        np.exp(d, out=d)
    else:
        mu = np.clip(eta, -40, 40)
        np.negative(mu, out=mu)
        np.exp(mu, out=mu)
        np.add(1.0, mu, out=mu)
        np.divide(1.0, mu, out=mu)
        d = np.subtract(1, mu)
        np.multiply(mu, d, out=d)
    np.clip(mu, 1e-12, 1 - 1e-12, out=mu)
    np.maximum(d, 1e-300, out=d)
    return mu, d


def fit_binomial(
    y: np.ndarray,
    X: np.ndarray,
    link: str = "cloglog",
    names: list[str] | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
    start: np.ndarray | None = None,
) -> GLMResult:
    """Maximum-likelihood binomial GLM (link "cloglog" or "logit", or a :class:`cskit.sampling.SampledLink`:
    that link's population model fitted on a case-control sample by its exact likelihood); covariance
    = inverse expected information.

    Fisher scoring from the intercept-only fit (or from ``start``: a nearby model's coefficients, e.g.
    the fit before a column was added, with 0 for the new column); a step that lowers the
    log-likelihood is halved until it does not (a full cloglog step from the null can overshoot into
    the flat region where it never comes back), and the fit stops, unconverged, when no step helps.
    Converged when the log-likelihood changes by less than ``tol`` (relative). Under
    (quasi-)separation (an outcome that never or always happens in one group) the likelihood levels
    off while a coefficient runs away: any slope beyond ±``SEPARATED_COEF`` (per SD, or for a 0/1
    dummy: no real effect is that large) makes ``converged=False``, and the huge SEs say so too.
    """
    y = np.asarray(y, dtype="float64")
    n, p = X.shape
    if start is None:
        ybar = np.clip(y.mean(), 1e-6, 1 - 1e-6)
        beta = np.zeros(p)
        if isinstance(link, SampledLink):  # the population's rate behind the sample's: odds shifted back
            ybar = 1.0 / (1.0 + (1.0 - ybar) / ybar * np.exp(link.offset))
        beta[0] = np.log(-np.log1p(-ybar)) if link_name(link) == "cloglog" else np.log(ybar / (1 - ybar))
    else:
        beta = np.array(start, dtype="float64")
    mu, d = mean_and_slope(X @ beta, link)  # at the current beta: the accepted step's, reused
    rest = np.subtract(1, y)
    ll = _loglik_at(y, mu, rest)
    converged, it = False, 0
    for it in range(1, max_iter + 1):  # noqa: B007  (the count is returned)
        step = solve(*weighted_gram(X, *_working(y, mu, d)))
        t, ll_new = 1.0, -np.inf
        while t > 1e-8:
            mu_new, d_new = mean_and_slope(X @ (beta + t * step), link)
            ll_new = _loglik_at(y, mu_new, rest)
            if ll_new >= ll - 1e-12 * abs(ll):
                break
            t /= 2
        if ll_new < ll - 1e-12 * abs(ll):
            break
        beta, mu, d = beta + t * step, mu_new, d_new
        done = abs(ll_new - ll) < tol * (abs(ll) + 1)
        ll = ll_new
        if done:
            converged = True
            break
    slopes = [j for j in range(1, p) if not (names and ":curve" in names[j])]  # spline columns have no scale
    if np.any(np.abs(beta[slopes]) > SEPARATED_COEF):
        converged = False  # (quasi-)separation: the likelihood levels off while a coefficient runs away
    info = weighted_gram(X, d * d / (mu * (1 - mu)))
    return GLMResult(beta, inverse(info), names or [f"x{j}" for j in range(p)], link, n, int(y.sum()), converged,
                     it, ll, info)


BLOCK_ROWS = 4096  # rows per block of the cross-products: the blocks' temporaries stay in cache


def weighted_gram(X: np.ndarray, w: np.ndarray, u: np.ndarray | None = None):
    """X' diag(w) X for weights w ≥ 0, summed over blocks of rows as (√w X)_b' (√w X)_b (a symmetric
    product: half the work of a general one, and no n × p temporary: the panel can hold millions of
    rows). With ``u``, also X'u from the same pass over X: (X'WX, X'u)."""
    n, p = X.shape
    out = np.zeros((p, p))
    grad = np.zeros(p)
    root = np.sqrt(w)
    buf = np.empty((min(BLOCK_ROWS, n), p))
    for s in range(0, n, BLOCK_ROWS):
        x = X[s : s + BLOCK_ROWS]
        b = np.multiply(x, root[s : s + BLOCK_ROWS, None], out=buf[: len(x)])
        out += b.T @ b
        if u is not None:
            grad += u[s : s + BLOCK_ROWS] @ x
    return out if u is None else (out, grad)


def weighted_cross(X: np.ndarray, w: np.ndarray, Z: np.ndarray, diagonal: bool = False):
    """X' diag(w) Z, summed over blocks of rows (no n × k temporary); with ``diagonal``, also the
    diagonal of Z' diag(w) Z (each column's Σ w z²) from the same pass: (X'WZ, diag)."""
    n = len(X)
    out = np.zeros((X.shape[1], Z.shape[1]))
    diag = np.zeros(Z.shape[1])
    buf = np.empty((min(BLOCK_ROWS, n), Z.shape[1]))
    for s in range(0, n, BLOCK_ROWS):
        z = Z[s : s + BLOCK_ROWS]
        b = np.multiply(z, w[s : s + BLOCK_ROWS, None], out=buf[: len(z)])
        out += X[s : s + BLOCK_ROWS].T @ b
        if diagonal:
            diag += np.einsum("ij,ij->j", b, z)
    return (out, diag) if diagonal else out


def separated_terms(fit: GLMResult) -> list[str]:
    """Terms whose estimate is not a real estimate: |β| > SEPARATED_COEF (a hazard ratio above e^10 per SD
    or level) or a non-finite or huge SE: the signature of (quasi-)complete separation, e.g. a group
    whose every model row has the same outcome. The intercept is not checked (rare events have a
    very negative one), nor are a spline's curve columns (":curve" terms: their coefficients have no
    scale of their own, so large values and SEs are usual there)."""
    se = fit.se
    return [
        n
        for n, b, s in zip(fit.names[1:], fit.coef[1:], se[1:])
        if ":curve" not in n
        and (not (np.isfinite(b) and np.isfinite(s)) or abs(b) > SEPARATED_COEF or s > SEPARATED_SE)
    ]


def separated_levels(design: Design, y: np.ndarray) -> dict[str, list[str]]:
    """Adjustment items (``design.adjust_levels``) with a level whose model rows all have the event or
    all have not (complete separation, read off the data: its coefficient is not estimable, the fit
    only reports a large number), with those levels. :func:`separated_terms` reads the same off a fit."""
    out: dict[str, list[str]] = {}
    for item, levels in design.adjust_levels.items():
        ref = np.ones(len(y), dtype=bool)
        for lv in levels[1:]:
            m = design.X[:, design.names.index(f"{item}={lv}")] > 0
            ref &= ~m
            if y[m].sum() in (0, m.sum()):
                out.setdefault(item, []).append(lv)
        if y[ref].sum() in (0, ref.sum()):
            out.setdefault(item, []).append(levels[0])
    return out


POOLED_ITEMS = ("segment",)  # account-context items whose separated levels join the reference level


def pool_separated(design: Design, y: np.ndarray, items: tuple[str, ...] = POOLED_ITEMS) -> Design:
    """``design`` with each separated level of ``items`` (:func:`separated_levels`: its model rows all
    have the event or none has) merged into the item's reference level: its dummy column is dropped, so
    its accounts are modelled as the reference's (docs/methods.md, "Separated account-context levels").

    A separated level has no maximum-likelihood coefficient: the fit runs it to −∞ (or +∞) and reports a
    large number, and every probability projected from it is ≈ 0 (or 1): QA thin client, 6 Corporate
    accounts with 0 churns in 12 months got churn_prob 2e-10 against a true 0.28. Its data say only that
    its rate is not far above (below) the others', so it takes the reference level's. The reference level
    itself is never merged (nothing to merge it into); contract type is not in ``items`` (a term contract
    decides only at renewals, which ``cskit.panel.renewal_evidence`` handles). ``design.pooled`` names the
    merged levels per item; the design is returned unchanged when there is none."""
    sep = separated_levels(design, y)
    merge = {a: [lv for lv in sep.get(a, []) if lv != design.adjust_levels[a][0]] for a in items if a in sep}
    merge = {a: lvs for a, lvs in merge.items() if lvs}
    if not merge:
        return design
    drop = [design.names.index(f"{a}={lv}") for a, lvs in merge.items() for lv in lvs]
    keep = [j for j in range(len(design.names)) if j not in drop]
    levels = {a: [lv for lv in lvs if lv not in merge.get(a, [])] for a, lvs in design.adjust_levels.items()}
    return replace(design, X=design.X[:, keep], names=[design.names[j] for j in keep], adjust_levels=levels,
                   pooled={**design.pooled, **merge})


def _working(y: np.ndarray, mu: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The IRLS weights w = d² / V and score residuals u = (y − μ) d / V, V = μ(1 − μ), written into
    three arrays (the same operations, so the same bits, as the expressions)."""
    v = np.subtract(1, mu)
    np.multiply(mu, v, out=v)
    w = np.multiply(d, d)
    np.divide(w, v, out=w)
    u = np.subtract(y, mu)
    np.multiply(u, d, out=u)
    np.divide(u, v, out=u)
    return w, u


def _loglik_at(y: np.ndarray, mu: np.ndarray, rest: np.ndarray | None = None) -> float:
    """Binomial log-likelihood at the (clipped) means ``mu``; ``rest``: 1 − y, when already at hand (a
    fit's every step reads it)."""
    # y·log(μ) + (1 − y)·log1p(−μ), written into two arrays (the same bits, no temporary per operation)
    a = np.log(mu)
    np.multiply(y, a, out=a)
    b = np.negative(mu)
    np.log1p(b, out=b)
    np.multiply(np.subtract(1, y) if rest is None else rest, b, out=b)
    return float(np.sum(np.add(a, b, out=a)))


def solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a⁻¹ b``; least squares when ``a`` is singular."""
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, b, rcond=None)[0]


def inverse(a: np.ndarray) -> np.ndarray:
    """``a⁻¹``; the pseudo-inverse when ``a`` is singular."""
    try:
        return np.linalg.inv(a)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(a)


@dataclass
class GEEResult(_Fit):
    """A logit GEE fit: coefficients, robust (sandwich) and naive covariances, working correlation."""

    coef: np.ndarray
    cov: np.ndarray
    cov_naive: np.ndarray
    rho: float
    structure: str
    converged: bool
    iterations: int
    max_cluster: int


def fit_gee(
    y: np.ndarray, X: np.ndarray, groups: np.ndarray, structure: str = "exchangeable",
    max_iter: int = 100, tol: float = 1e-7, start: np.ndarray | None = None, *, offset: float = 0.0,
    clusters: tuple | None = None,
) -> GEEResult:
    """Binomial GEE with the logit link, clustered by ``groups`` (Liang & Zeger 1986).

    The same estimator as statsmodels' ``GEE(..., Binomial(), Exchangeable())`` (scale fixed at 1 for
    the binomial, ρ by the moment estimator with ddof = number of columns, robust sandwich covariance
    without small-sample correction), written with cluster sums so it runs on millions of rows: for an
    exchangeable R, R⁻¹ = (I − c 11ᵀ)/(1 − ρ) with c = ρ/(1 − ρ + nρ). ``structure="independence"``
    fixes ρ = 0: the logistic GLM with cluster-robust standard errors. The iterations start from
    ``start``, by default the logistic GLM fit (pass it when fitting both structures). ``offset``: the
    log-odds shift of a case-control sample's rows (``cskit.sampling``; for the logit link the sampled
    mean is the population's with this offset on η), 0 on full data. ``clusters``: :func:`gee_clusters`
    of ``groups`` when already made (two structures fitted on the same rows share them).
    """
    y = np.asarray(y, dtype="float64")
    X = np.ascontiguousarray(X, dtype="float64")  # the cluster sums below are sparse × dense row-major products
    sizes, S = gee_clusters(groups) if clusters is None else clusters
    n, p = X.shape
    pairs = float((sizes * (sizes - 1) / 2).sum())
    link = SampledLink("logit", offset) if offset else "logit"
    beta = fit_binomial(y, X, link=link).coef if start is None else np.asarray(start, dtype="float64")
    rho, converged, it = 0.0, False, 0
    for it in range(1, max_iter + 1):  # noqa: B007  (the count is returned)
        r, sd = _pearson(y, X, beta, offset)
        if structure == "exchangeable" and pairs > p:
            phi = float(r @ r) / (n - p)
            rs = S @ r
            rho = float(((rs * rs).sum() - r @ r) / 2 / phi / (pairs - p))
        gram, grad = weighted_gram(X, sd * sd, sd * r)
        if rho == 0.0:  # independence: c = 0, the cluster terms are zeros (the GLM's score and information)
            score, info = grad, gram
        else:
            c = rho / (1 - rho + sizes * rho)
            Gs = _scaled(S, sd) @ X  # cluster sums of the rows of G = diag(sd) X, without G itself
            score = (grad - Gs.T @ (c * (S @ r))) / (1 - rho)
            info = (gram - Gs.T @ (Gs * c[:, None])) / (1 - rho)
        step = solve(info, score)
        beta = beta + step
        if not np.all(np.isfinite(beta)):
            break
        if np.max(np.abs(step) / (1 + np.abs(beta))) < tol:
            converged = True
            break
    r, sd = _pearson(y, X, beta, offset)
    if rho == 0.0:  # as above: the cluster-correlation terms vanish
        info, u = weighted_gram(X, sd * sd), _scaled(S, sd * r) @ X
    else:
        c = rho / (1 - rho + sizes * rho)
        Gs = _scaled(S, sd) @ X
        info = (weighted_gram(X, sd * sd) - Gs.T @ (Gs * c[:, None])) / (1 - rho)
        u = (_scaled(S, sd * r) @ X - Gs * (c * (S @ r))[:, None]) / (1 - rho)
    bread = inverse(info)
    cov = bread @ (u.T @ u) @ bread
    return GEEResult(beta, cov, bread, rho, structure, converged, it, int(sizes.max()))


def gee_clusters(groups: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
    """The clusters :func:`fit_gee` sums over: their sizes and the cluster-sum matrix S (cluster × row,
    one 1 per row; clusters numbered in sorted order of the ids)."""
    codes, sizes = _cluster_codes(groups)
    n = len(codes)
    return sizes, sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(len(sizes), n))


def _scaled(S: sp.csr_matrix, w: np.ndarray) -> sp.csr_matrix:
    """The cluster-sum matrix ``S`` (one 1 per row of the data) with row i's 1 replaced by w_i:
    ``_scaled(S, w) @ X`` = ``S @ (w[:, None] * X)`` without the n × p product."""
    out = S.copy()
    out.data = w[S.indices]
    return out


def _cluster_codes(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster of each row, numbered in sorted order of the ids (hashing, not sorting, the rows), and
    the cluster sizes."""
    codes, _ = pd.factorize(np.asarray(groups), sort=True)
    return codes, np.bincount(codes).astype("float64")


def _pearson(y: np.ndarray, X: np.ndarray, beta: np.ndarray, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Pearson residuals and the standard deviations A^{1/2} for the logit link (the standardised
    derivative rows are diag(sd) X); ``offset`` is added to η (a case-control sample's)."""
    eta = X @ beta
    if offset:
        eta += offset
    mu = 1.0 / (1.0 + np.exp(-np.clip(eta, -40, 40)))
    sd = np.sqrt(np.clip(mu * (1 - mu), 1e-15, None))
    return (y - mu) / sd, sd


def base_fit(y: np.ndarray, X0: np.ndarray, link: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The null model of the score tests: design ``X0``, fitted means μ and slopes dμ/dη."""
    mu, d = mean_and_slope(X0 @ fit_binomial(y, X0, link=link).coef, link)
    return X0, mu, d


def score_z(y: np.ndarray, base: tuple[np.ndarray, np.ndarray, np.ndarray], Z: np.ndarray) -> np.ndarray:
    """Rao score z of each column of ``Z`` added alone to the fitted null model ``base`` (see
    :func:`base_fit`); NaN in Z is set to 0 (the mean, as in the main model). The sign is the
    direction of the association; z² is the score chi-square (Rao 1948), with the expected information.
    """
    return score_z_from(score_terms(y, base), zero_missing(np.array(Z, dtype="float64")))


def zero_missing(Z: np.ndarray) -> np.ndarray:
    """``Z`` with NaN set to 0 (the KPI's mean), in place."""
    np.copyto(Z, 0.0, where=~np.isfinite(Z))
    return Z


def score_terms(y: np.ndarray, base: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple:
    """What the score tests on one null model share, whatever the tested columns: working residuals
    r = (y − μ) μ' / V, weights w = μ'² / V, X0 and the null information X0ᵀW X0."""
    X0, mu, d = base
    w, r = _working(y, mu, d)
    return r, w, X0, weighted_gram(X0, w)


def score_z_from(terms: tuple, Z: np.ndarray) -> np.ndarray:
    """Rao score z of each column of ``Z`` added alone to the fitted null model of :func:`score_terms`
    (the sign is the direction of the association; z² is the score chi-square, Rao 1948, with the
    expected information), for a ``Z`` without NaN (:func:`zero_missing`) (one pass per term, no n × k
    temporaries)."""
    r, w, X0, info = terms
    A, zwz = weighted_cross(X0, w, Z, diagonal=True)
    var = zwz - (A * solve(info, A)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 1e-12 * len(r), (r @ Z) / np.sqrt(np.clip(var, 1e-300, None)), np.nan)
