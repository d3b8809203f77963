"""The improvement potential (seed 000's centrepiece table) and each active account's survival-based LTV.

For every KPI k, the scenario moves every account active at ``as_of`` by δ_k = direction ×
improvement_pct% × mean(k) (clipped to the KPI's bounds, never the wrong way) in every future month,
all else unchanged, and projects churn, expansion, downgrade and referrals over the horizon with the
four discrete-time hazard models (binomial GLMs with the cloglog link on account-months, KPIs at
t − lag, tenure and segment adjusted). Each column is scenario − baseline of the sums defined in
docs/architecture.md, "Projection used by the improvement potential". ``contract_months`` is the
tenure itself: its scenario adds δ to the tenure of every future month (the account is treated as δ
months older), while annual renewals stay on the contract's real anniversaries.

Intervals: ``params.bootstrap`` draws of every model's coefficients from a multivariate normal with
the estimated covariance, plus normal draws of the mean relative sizes (g_e, g_d) and of the mean MRR
of a referral; each draw is projected exactly (float32) for every active account, or, beyond
``DRAW_ACCOUNTS`` of them, for an MRR-proportional sample; the 2.5% and 97.5% quantiles of the draws'
scenario − baseline, centred on the exact point estimate, are the 95% interval. Beyond
``DRAW_ACCOUNTS`` the sample has ``DRAW_SAMPLE`` accounts: the few largest (by MRR or baseline LTV) for
certain, the rest drawn systematically along the accounts' baseline LTV per unit of MRR
(:func:`draw_sample`). Details and references: docs/methods.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests

from cskit.catalogue import CATEGORIES, KPI, PHASES
from cskit.client import ClientData
from cskit.errors import CskitError
from cskit.excel import write_potential_xlsx
from cskit.fits import Fits, churn_rows, growth_rows, population_rates
from cskit.models import (
    MISSING_COLUMNS,
    MISSING_PREFIX,
    Design,
    GLMResult,
    Transform,
    cluster_cov,
    expected_indicator,
    fit_with_missingness,
    joint_p,
    linear_flagged,
    select_terms,
    separated_terms,
)
from cskit.narrative import POTENTIAL_CAVEAT, share_kpis
from cskit.notices import Notice
from cskit.panel import (
    MIN_EVENTS,
    OUTCOMES,
    active_rows,
    decides,
    factorize_runs,
    outcome_rows,
    recent_means,
    recent_missing,
    recent_values,
    renewal_cycles,
)
from cskit.parallel import one_blas_thread
from cskit.params import Params
from cskit.result import StageResult
from cskit.sampling import RowSample, sampled_notice
from cskit.stats import Z975

PROJECTED = tuple(o for o in OUTCOMES if o != "renewal")  # renewal is 1 − churn: the churn model covers it
COLUMNS = ("d_ltv", "d_expansion", "d_new", "d_downgrade", "d_churn")
CHUNK_ELEMENTS = 100_000  # entries (draws × accounts) of a chunk of project: its totals are summed in one product
# accounts projected at a time within a chunk (the point estimate's chunk holds up to 100,000 accounts): the
# months' factors of a part (tenure_factor, 36 months × outcome) then fit in a few MB reused part after part,
# where a chunk's would be fresh memory of ~27 MB per outcome at 100k accounts, costly to obtain from the OS
SUB_ACCOUNTS = 8_192
DRAW_ACCOUNTS = 5_000  # active accounts up to which the interval draws are projected for every one of them
DRAW_SAMPLE = 1_000  # beyond, for a sample of this many (draw_sample; docs/methods.md, "Intervals")


@dataclass
class OutcomeModel:
    """One hazard model of the projection; ``fit`` is None when the outcome is not estimable."""

    outcome: str
    rows: int
    events: int
    rate: float
    design: Design | None = None
    fit: GLMResult | None = None
    reason: str = ""
    draw_cov: np.ndarray | None = None
    missing: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MISSING_COLUMNS))
    lag: int = 1
    sample: RowSample | None = None  # the rows fitted (cskit.sampling: all of them, or a case-control sample)

    @property
    def fitted_rows(self) -> int:
        """The model rows the fits used (``rows`` unless a case-control sample of them)."""
        return self.sample.kept if self.sample is not None else self.rows


@dataclass(repr=False)
class Potential(StageResult):
    """The improvement-potential table, the per-account baseline projection, and how they were made.

    ``table``: potential.csv (DESIGN §6). ``accounts``: account_id, mrr, churn_prob (within the
    horizon), ltv (margin × expected revenue over ltv_months) for every account active at as_of.
    ``notes``: why a row or column is empty. ``outcomes``: per model, rows, events, status ("fitted" |
    "not_estimable"), KPIs, reason.
    """

    table: pd.DataFrame
    accounts: pd.DataFrame
    caveat: str
    notes: dict[str, str]
    outcomes: pd.DataFrame
    language: str = "ja"
    currency: str = "JPY"
    improvement_pct: float = 10.0
    models: dict[str, OutcomeModel] = field(default_factory=dict, repr=False)
    phases: list[str] = field(default_factory=list)
    heading: dict = field(default_factory=dict)  # client, as_of, horizon_months, ltv_months: the workbook's title

    def summary_items(self) -> dict:
        ltv = pd.to_numeric(self.table["d_ltv"], errors="coerce")
        best = self.table.loc[ltv.idxmax(), "kpi"] if ltv.notna().any() else None
        fitted = self.outcomes.loc[self.outcomes["status"] == "fitted", "outcome"].tolist()
        return {"kpis": int(len(self.table)), "outcomes_fitted": fitted, "accounts": int(len(self.accounts)),
                "largest_d_ltv": best, "notes": len(self.notes)}

    def write(self, results_dir: str | Path) -> None:
        """Write potential.csv and potential.xlsx (byte-reproducible) into ``results_dir``."""
        results_dir = Path(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(results_dir / "potential.csv", index=False, float_format="%.10g", lineterminator="\n")
        write_potential_xlsx(self, results_dir / "potential.xlsx", amounts=COLUMNS)


# ---------------------------------------------------------------- models


def has_referrals(data: ClientData) -> bool:
    """True when accounts.referred_by names at least one account."""
    acc = data.accounts
    if "referred_by" not in acc:
        return False
    ref = acc["referred_by"].dropna()  # the text test on the distinct values: the same answer, once each
    return bool(len(ref)) and bool((pd.Series(ref.unique()).astype(str).str.strip() != "").any())


def fit_outcome(
    panel: pd.DataFrame,
    outcome: str,
    kpis: list[str],
    transforms: dict[str, Transform],
    lag: int,
    language: str = "en",
    *,
    alpha: float | None = None,
    fits: Fits | None = None,
    seed: int = 0,
) -> OutcomeModel:
    """The cloglog hazard model of ``outcome`` on its rows; intercept-only rate below MIN_EVENTS.

    Rows are :func:`cskit.panel.outcome_rows`: an account's first ``lag`` months are left out (no KPI
    of month t − lag exists there; as all-missing rows they would bend the tenure term). With
    ``alpha``, KPIs' curves and segment-specific slopes are selected as in the triggers
    (:func:`cskit.models.select_terms`) and the projection follows them. A KPI whose missingness is
    informative gets a missing indicator (:func:`cskit.models.fit_with_missingness`, at ``alpha`` or
    0.05); ``draw_cov`` is the covariance clustered by account (:func:`cskit.models.cluster_cov`) that
    the interval draws use. ``fits`` (:class:`cskit.fits.Fits` of this panel): the design, first fit
    and term selection shared with the other models that use them (the expansion, downgrade and
    referral models' one design; the churn model's with the health score's full model). Above
    ``cskit.sampling.SAMPLE_ABOVE`` rows the fits, selection and covariance are those of a case-control
    sample of the rows (``cskit.fits.model_rows``, drawn with ``seed`` or the ``fits``' seed) with its
    sampled link: the population's coefficients; ``rows`` and ``events`` stay the model rows' counts.
    """
    rows, yr = outcome_rows(panel, outcome, lag)
    events = int(yr.sum())
    rate = float(yr.mean()) if len(yr) else 0.0
    model = OutcomeModel(outcome, int(rows.sum()), events, rate, lag=lag)
    if events < MIN_EVENTS:
        model.reason = Notice("potential_few_events", stage="potential", outcome=outcome, events=events,
                              rows=model.rows, min=MIN_EVENTS)
        return model
    fits = fits if fits is not None and fits.serves(panel, lag) else None
    churn = outcome == "churn"
    if fits is not None:
        base = fits.churn(kpis, transforms) if churn else fits.growth(outcome, kpis, transforms)
    else:
        base = churn_rows(panel, kpis, lag, transforms, seed=seed) if churn else \
            growth_rows(panel, outcome, kpis, lag, transforms, seed=seed)
    rows, yr, model.sample = base.rows, base.y, base.sample  # the rows fitted: all, or their sample
    first = fits.churn_fit(kpis) if fits is not None and churn else None
    design, model.fit, model.missing = fit_with_missingness(yr, base.design, base.link,
                                                            0.05 if alpha is None else alpha, outcome, fit=first)
    design = population_rates(design, base)
    if alpha is not None:
        seg = panel["segment"].astype(str).to_numpy()[rows] if "segment" in panel else None
        flagged = linear_flagged(design, model.fit, alpha)
        if first is not None and design is base.design:  # no indicator added: the health score's selection
            design, model.fit, _ = fits.churn_selected(kpis, flagged, seg, alpha)
        else:
            design, model.fit, _ = select_terms(yr, design, model.fit, flagged, seg, alpha)
    if churn and fits is not None:
        fits.unload(kpis)  # the score keeps the fit and selection, not the matrix (rebuilt when asked)
    del base
    model.draw_cov = cluster_cov(model.fit, design.X, yr, panel["account_id"].to_numpy()[rows])
    model.design = replace(design, X=np.empty((0, design.X.shape[1])), missing={})
    separated = separated_terms(model.fit)
    if separated:
        model.reason = Notice("potential_separated", stage="potential", outcome=outcome, terms=list(separated))
    elif not model.fit.converged:
        model.reason = Notice("potential_not_converged", stage="potential", outcome=outcome)
    return model


def relative_sizes(panel: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Mean and standard error of g_e, g_d (relative size of an expansion / contraction event, over
    the events of the expansion and downgrade models) and of the MRR of a month's referrals."""
    out = {}
    for name, outcome, amount in (("g_e", "expansion", "expansion_mrr"), ("g_d", "downgrade", "contraction_mrr")):
        rows, y = outcome_rows(panel, outcome, 0)
        ev = np.flatnonzero(rows)[y == 1]
        ratio = panel[amount].to_numpy()[ev] / panel["mrr_prev"].to_numpy()[ev]
        out[name] = _mean_se(ratio)
    ref = panel["referrals"].to_numpy() > 0
    out["referral_mrr"] = _mean_se(panel["referral_mrr"].to_numpy()[ref])
    return out


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    if len(x) == 0:
        return 0.0, 0.0
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0
    return float(x.mean()), se


# ---------------------------------------------------------------- accounts and scenarios


def active_accounts(panel: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Panel rows at as_of of accounts still active there (churn == 0, mrr > 0)."""
    return panel[active_rows(panel, as_of)].reset_index(drop=True)


def _rows_at(panel: pd.DataFrame, active: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
    """The panel rows of the accounts of ``active`` at as_of (boolean mask)."""
    return (panel["month"] == pd.Timestamp(as_of)).to_numpy() & panel["account_id"].isin(
        active["account_id"]
    ).to_numpy()


def future_values(panel: pd.DataFrame, active: pd.DataFrame, kpis: list[str], as_of: pd.Timestamp, *,
                  rows: np.ndarray | None = None) -> pd.DataFrame:
    """Each active account's future value of each KPI: the mean of its last 3 observed monthly values
    up to as_of (NaN if never observed; :func:`cskit.panel.recent_means`); ``contract_months`` = tenure at as_of.
    ``rows``: the panel rows of ``active``'s accounts at as_of, when known (:func:`cskit.panel.active_rows`
    for :func:`active_accounts`)."""
    rows = _rows_at(panel, active, as_of) if rows is None else rows
    means = recent_means(panel, kpis, rows).set_index("account_id")
    return means.reindex(active["account_id"].to_numpy())[kpis].reset_index(drop=True)


def future_months(
    panel: pd.DataFrame, active: pd.DataFrame, kpis: list[str], as_of: pd.Timestamp, *,
    rows: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The monthly values behind :func:`future_values`: per KPI (not ``contract_months``), each active
    account's last 3 observed values up to as_of, oldest first (accounts × 3, NaN-padded); ``rows`` as there."""
    rows = _rows_at(panel, active, as_of) if rows is None else rows
    monthly = [k for k in kpis if k != "contract_months"]
    values = recent_values(panel, monthly, rows)
    order = pd.Index(panel["account_id"].to_numpy()[rows]).get_indexer(active["account_id"].to_numpy())
    return {k: v[order] for k, v in values.items()}


@dataclass
class Scenario:
    """KPI k's scenario: δ, and per active account the change dz of its standardised value."""

    kpi: str
    mean: float
    delta: float
    dz: np.ndarray
    reason: str = ""
    dz_at_mean: np.ndarray | None = None  # the months' mean raw change applied at the account's value


def scenarios(
    future: pd.DataFrame,
    kpis: list[str],
    catalogue: dict[str, KPI],
    pct: float,
    transforms: dict[str, Transform],
    language: str = "en",
    *,
    months: dict[str, np.ndarray] | None = None,
) -> list[Scenario]:
    """δ_k = direction × pct/100 × mean of the future values over the active accounts (non-missing),
    added to every account, clipped to the KPI's bounds and never moving a value the wrong way.

    With ``months`` (:func:`future_months`), δ is added to each of the account's last 3 observed monthly
    values, each clipped on its own (a month with zero support inquiries cannot fall below zero), and
    dz is the mean of the months' changes on the model scale (log1p is applied to the monthly values
    the models were fitted on, not to their mean); ``dz_at_mean`` is the months' mean raw change applied
    at the account's value, which a KPI with a curve uses (its curve is read at that value). An account
    that never reported the KPI is taken at
    the value the models assume for a missing KPI (z = 0) and moved by δ too. ``contract_months`` gets
    dz = 0: its δ moves the tenure instead.
    """
    months = months or {}
    out = []
    for k in kpis:
        x = future[k].to_numpy(dtype="float64")
        kpi = catalogue.get(k) or KPI(k, k, k, "other")
        mean = float(np.nanmean(x)) if np.isfinite(x).any() else math.nan
        delta = kpi.direction * pct / 100 * mean
        dz = np.zeros(len(x))
        at_mean = None
        reason = ""
        if not np.isfinite(mean):
            reason = Notice("never_measured", stage="potential", severity="note", kpi=k)
        elif delta == 0:
            reason = Notice("zero_mean", stage="potential", severity="note", kpi=k, pct=float(pct))
        elif k in transforms and k != "contract_months":
            t = transforms[k]
            x = np.where(np.isfinite(x), x, t.inverse(0.0))
            fx = t.forward(x)
            dz = at_value = t.forward(_moved(x, delta, kpi)) - fx  # the change on the model scale
            if k in months:
                v = months[k]
                seen = np.isfinite(v)
                count = _row_sums(seen.astype(np.int64), 0)
                n, some = np.maximum(count, 1), count > 0
                v0 = np.where(seen, v, 0.0)
                moved = _moved(v0, delta, kpi)
                per_month = np.where(seen, t.forward(moved) - t.forward(v0), 0.0)
                dz = np.where(some, _row_sums(per_month) / n, at_value)
                # the raw change (as the change at the identity transform: (c − 0) / 1 − (x − 0) / 1 = c − x)
                raw = _row_sums(np.where(seen, moved - v0, 0.0)) / n
                at_mean = np.where(some, t.forward(x + raw) - fx, at_value)
        out.append(Scenario(k, mean, delta, dz, reason, at_mean))
    return out


def _moved(x: np.ndarray, delta: float, kpi: KPI) -> np.ndarray:
    """Values ``x`` moved by δ, clipped to the KPI's bounds, never the wrong way."""
    changed = np.clip(x + delta, kpi.lower, kpi.upper)
    return np.maximum(changed, x) if delta > 0 else np.minimum(changed, x)


def _row_sums(a: np.ndarray, start: float | int = 0.0) -> np.ndarray:
    """``a.sum(axis=1)`` of a few columns (the last months), the same bits: numpy sums so few in order from
    0, which a column at a time also does, without the per-row reduction loop (a tenth of the time)."""
    out = np.full(len(a), start, dtype=a.dtype)
    for j in range(a.shape[1]):
        out += a[:, j]
    return out


# ---------------------------------------------------------------- the projection


@dataclass
class Hazard:
    """One outcome's log-hazard for the active accounts at coefficient rows ``coef`` (B draws):

    log λ(b, i, h) = (X_i · coef_b) + coef_b[k] · dz_ik (scenario k) + cm_b · z_cm(tenure_i + h)
    + coef_b[churn_season = calendar month of as_of + h], with X_i's contract_months and calendar-month
    entries set to 0 (``cm`` is the tenure coefficient; 0 when not in the model; ``season_cols`` maps
    a calendar month 1–12 to its column, none when the model has no calendar month).
    """

    X: np.ndarray  # (N, p)
    coef: np.ndarray  # (B, p)
    cm: np.ndarray  # (B,)
    kpi_cols: dict[str, int]
    cm_transform: Transform | None
    design: Design | None = None
    segment: np.ndarray | None = None

    def change(self, kpi: str, dz: np.ndarray, sl: slice, at_mean: np.ndarray | None = None) -> np.ndarray:
        """Change of the log-hazard (B, n) when ``kpi`` moves by ``dz`` for the accounts ``sl``:
        coef[k] · dz for a linear KPI; along its curve / its segment's slope when it has them, from the
        account's value z0 by ``at_mean`` (the change at z0, :class:`Scenario`) when given."""
        col = self.kpi_cols[kpi]
        if self.design is None or not self.design.kpi_terms(kpi):
            return self.coef[:, [col]] * dz[None, :]
        dz = dz if at_mean is None else at_mean
        z0 = self.X[sl, col]
        seg = None if self.segment is None else self.segment[sl]
        return (self.design.contribution(self.coef, kpi, z0 + dz, seg)
                - self.design.contribution(self.coef, kpi, z0, seg))
    season_cols: dict[int, int] = field(default_factory=dict)
    as_of_month: int = 1
    gaps: np.ndarray | None = None  # (B, 1) missing indicators' expected log-hazard shift in later months
    gaps_first: np.ndarray | None = None  # (B, n) the same in the first ``lag`` months, from each account's share
    lag: int = 1

    def shift(self) -> np.ndarray | float:
        """The missing indicators' part of the log-hazard of months after the first ``lag`` (0 without)."""
        return 0.0 if self.gaps is None else self.gaps


def account_matrix(design: Design, future: pd.DataFrame, active: pd.DataFrame) -> np.ndarray:
    """Design rows of the active accounts' future months: [1, z(KPIs), dummies, missing indicators],
    missing KPIs at z = 0 as in the fit, z(contract_months) = 0 (the tenure factor carries it), missing
    indicators at 0 (their expected part is :func:`missing_shift`'s, added by the Hazard)."""
    cols = [np.ones(len(active))]
    for k in design.kpis:
        z = design.transforms[k].forward(future[k].to_numpy(dtype="float64"))
        cols.append(np.zeros(len(active)) if k == "contract_months" else np.where(np.isfinite(z), z, 0.0))
    for a, levels in design.adjust_levels.items():
        values = active[a].astype(str).to_numpy()
        season = a == "churn_season"  # the future months' calendar enters month by month (season_factor)
        cols.extend(np.zeros(len(active)) if season else (values == v).astype("float64") for v in levels[1:])
    for _ in design.indicators:  # the indicators come before the terms, as in the design: their part is the
        cols.append(np.zeros(len(active)))  # Hazard's expected shift (make_hazard, missing_shift), not a value
    segment = active["segment"].astype(str).to_numpy() if "segment" in active else None
    cols.extend(t.values(cols[1 + design.kpis.index(t.kpi)], segment) for t in design.terms)
    return _column_stack(cols, len(active))


def _column_stack(cols: list[np.ndarray], n: int, step: int = 4096) -> np.ndarray:
    """``np.column_stack(cols)`` (float64), a few thousand rows at a time: the rows' columns copied
    contiguously into a small buffer (columns × rows), then written transposed into their place (the
    same values; a quarter of column_stack's time at 100k accounts)."""
    out = np.empty((n, len(cols)))
    buf = np.empty((len(cols), min(step, n)))
    for lo in range(0, n, step):
        m = min(step, n - lo)
        for j, c in enumerate(cols):
            buf[j, :m] = c[lo:lo + m]
        out[lo:lo + m] = buf[:, :m].T
    return out


def missing_shares(panel: pd.DataFrame, active: pd.DataFrame, kpis: list[str], as_of: pd.Timestamp,
                   n: int = 3) -> pd.DataFrame:
    """Per active account and KPI, the share of its last ``n`` months (up to as_of, within the contract)
    in which the KPI has no value (:func:`cskit.panel.recent_missing`); columns ``missing:<kpi>``."""
    at = (panel["month"] == pd.Timestamp(as_of)).to_numpy()
    order = pd.Index(panel["account_id"].to_numpy()[at]).get_indexer(active["account_id"].to_numpy())
    shares = recent_missing(panel, kpis, at, n)
    return pd.DataFrame({MISSING_PREFIX + k: v[order] for k, v in shares.items()})


def make_hazard(model: OutcomeModel | None, coef: np.ndarray, future: pd.DataFrame, active: pd.DataFrame) -> Hazard:
    """Hazard of ``model`` at coefficient rows ``coef`` (B, p). Not estimable: the observed rate as a
    constant (``coef`` is then (B, 1), the cloglog of the rate); no model: hazard 0."""
    n = len(active)
    if model is None or model.fit is None:
        return Hazard(np.ones((n, 1)), coef, np.zeros(coef.shape[0]), {}, None)
    design = model.design
    kpi_cols = {k: 1 + j for j, k in enumerate(design.kpis)}
    j_cm = kpi_cols.get("contract_months")
    cm = coef[:, j_cm] if j_cm is not None else np.zeros(coef.shape[0])
    segment = active["segment"].astype(str).to_numpy() if "segment" in active else None
    season = {int(n.split("=", 1)[1]): j for j, n in enumerate(design.names) if n.startswith("churn_season=")}
    as_of_month = int(pd.Timestamp(active["month"].iloc[0]).month) if season and len(active) else 1
    gaps, first = missing_shift(design, coef, future)
    return Hazard(account_matrix(design, future, active), coef, cm, kpi_cols, design.transforms.get("contract_months"),
                  design, segment, season, as_of_month, gaps, first, model.lag)


def missing_shift(design: Design, coef: np.ndarray, future: pd.DataFrame
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The informative missing indicators' expected part of the log-hazard per draw (rows of ``coef``):
    Σ_k γ_k · x(γ_k, π) with x = :func:`cskit.models.expected_indicator`, π = the share of the model
    rows without a value (``design.missing_rate``: a future month's gap is not known, only how often
    gaps happen) for the months after the first ``lag``, and each account's share of its last 3 months
    (``future``'s ``missing:<kpi>``, :func:`missing_shares`) for the first ``lag`` months, whose KPI month
    is already observed. Returns ((B, 1), (B, n)), or (None, None) without indicators."""
    if not design.indicators:
        return None, None
    n = len(future)
    late, first = np.zeros((coef.shape[0], 1)), np.zeros((coef.shape[0], n))
    for k in design.indicators:
        g = coef[:, design.indicator_column(k)]
        late[:, 0] += g * expected_indicator(g, design.missing_rate.get(k, 0.0))
        name = MISSING_PREFIX + k
        share = future[name].to_numpy(dtype="float64") if name in future else np.zeros(n)
        first += g[:, None] * expected_indicator(g[:, None], share[None, :])
    return late, first


def rate_coef(model: OutcomeModel | None) -> float:
    """cloglog of the observed rate of a not-estimable outcome (−inf: no events, or no model)."""
    if model is None or model.rate <= 0:
        return -math.inf
    return float(np.log(-np.log1p(-min(model.rate, 1 - 1e-12))))


def tenure_factor(hz: Hazard, tenure: np.ndarray, months: int, delta: float, dtype,
                  out: np.ndarray | None = None) -> np.ndarray:
    """exp(cm_b · z_cm(tenure_i + h + delta)) for h = 1..months: shape (months, B, n) (into ``out``, of
    that shape, when given)."""
    shape = (months, hz.coef.shape[0], len(tenure))
    if hz.cm_transform is None:
        return np.ones(shape, dtype) if out is None else _filled(out, 1.0)
    h = np.arange(1, months + 1)
    whole = tenure.astype(np.int64)
    if len(tenure) == 0 or not np.array_equal(whole, tenure):
        z = hz.cm_transform.forward(tenure[None, :] + h[:, None] + delta).astype(dtype)
        out = np.multiply(hz.cm.astype(dtype)[None, :, None], z[:, None, :], out=out)
        np.clip(out, -60.0, 30.0, out=out)
        return np.exp(out, out=out)
    # whole months: the factor depends on tenure + h only, a few distinct values, each computed once
    # (the same operations on the same numbers, so the same bits) and gathered per account and month
    lo = int(whole.min()) + 1
    steps = np.arange(lo, int(whole.max()) + months + 1)
    z = hz.cm_transform.forward(steps.astype("float64") + delta).astype(dtype)
    table = hz.cm.astype(dtype)[:, None] * z[None, :]
    np.clip(table, -60.0, 30.0, out=table)
    np.exp(table, out=table)
    out = np.empty(shape, dtype) if out is None else out
    for j in range(months):
        np.take(table, whole + (j + 1 - lo), axis=1, out=out[j], mode="clip")  # in range: no bounds check
    return out


def _filled(out: np.ndarray, value: float) -> np.ndarray:
    out.fill(value)
    return out


def project_chunk(
    neg_a: dict[str, np.ndarray],
    factor: dict[str, np.ndarray],
    g_e: np.ndarray,
    g_d: np.ndarray,
    horizon: int,
    ltv_months: int,
) -> dict[str, np.ndarray]:
    """The architecture's projection for a chunk of accounts, per draw (rows) and account, m(0) = 1.

    ``neg_a[o]`` = −exp(log-hazard without the tenure part), (B, n); ``factor[o]`` the tenure
    factor (months, B, n), for churn zero outside annual accounts' anniversaries; g_e, g_d (B, 1).
    The monthly probability is p = 1 − exp(−λ) (cloglog). Returns (B, n) arrays: churn (MRR lost to
    churn), expansion, downgrade (MRR lost), referrals (expected count; 0 without a ``referral``
    entry), ltv (Σ_{h ≤ ltv_months} S(h) m(h), before margin) and surv (S at the horizon).

    Every entry is computed on its own, so the chunk is walked in blocks of BLOCK_BYTES per array
    (:func:`_project_block`): the block's two dozen arrays stay in a core's cache through the months,
    where the whole chunk's would not; the same operations on the same numbers, so the same bits.
    """
    shape, dtype = neg_a["churn"].shape, neg_a["churn"].dtype
    size = int(np.prod(shape))
    flat_a = {o: v.reshape(-1) for o, v in neg_a.items()}
    flat_f = {o: v.reshape(v.shape[0], -1) for o, v in factor.items()}
    flat_g = [np.broadcast_to(g, shape).astype(dtype).reshape(-1) for g in (g_e, g_d)]  # same-shape products
    out = {k: np.zeros(size, dtype) for k in ("churn", "expansion", "downgrade", "referrals", "ltv")}
    out["surv"] = np.ones(size, dtype)
    step = max(1, BLOCK_BYTES // dtype.itemsize)
    for lo in range(0, size, step):
        b = slice(lo, lo + step)
        _project_block({o: v[b] for o, v in flat_a.items()}, {o: v[:, b] for o, v in flat_f.items()},
                       flat_g[0][b], flat_g[1][b], horizon, ltv_months, {k: v[b] for k, v in out.items()})
    return {k: v.reshape(shape) for k, v in out.items()}


BLOCK_BYTES = 64 * 1024  # per array of a block of project_chunk: ~25 of them fit a core's 2 MB L2 cache


def _project_block(neg_a: dict[str, np.ndarray], factor: dict[str, np.ndarray], g_e: np.ndarray, g_d: np.ndarray,
                   horizon: int, ltv_months: int, out: dict[str, np.ndarray]) -> None:
    """:func:`project_chunk` on one block of entries (1-D arrays; ``factor[o]`` months × entries), into
    ``out`` (zeros, surv ones)."""
    shape, dtype = neg_a["churn"].shape, neg_a["churn"].dtype
    neg_cum = np.zeros(shape, dtype)
    s_old, s_new, m = np.ones(shape, dtype), np.empty(shape, dtype), np.ones(shape, dtype)
    pe, pd_, pr, sm, tmp = (np.empty(shape, dtype) for _ in range(5))
    for h in range(max(horizon, ltv_months)):
        np.multiply(neg_a["churn"], factor["churn"][h], out=tmp)
        neg_cum += tmp
        np.exp(neg_cum, out=s_new)
        np.multiply(neg_a["expansion"], factor["expansion"][h], out=pe)
        np.expm1(pe, out=pe)
        pe *= g_e  # −p_e g_e
        np.multiply(neg_a["downgrade"], factor["downgrade"][h], out=pd_)
        np.expm1(pd_, out=pd_)
        pd_ *= g_d  # −p_d g_d
        if h < horizon:
            np.subtract(s_old, s_new, out=tmp)
            tmp *= m
            out["churn"] += tmp
            np.multiply(s_new, m, out=sm)
            np.multiply(sm, pe, out=tmp)
            out["expansion"] -= tmp
            np.multiply(sm, pd_, out=tmp)
            out["downgrade"] -= tmp
            if "referral" in neg_a:  # not projected when its column is empty (no referral model)
                np.multiply(neg_a["referral"], factor["referral"][h], out=pr)
                np.expm1(pr, out=pr)
                pr *= s_new
                out["referrals"] -= pr
            if h == horizon - 1:
                out["surv"][:] = s_new
        np.subtract(pd_, pe, out=tmp)
        tmp += 1
        m *= tmp
        if h < ltv_months:
            np.multiply(s_new, m, out=tmp)
            out["ltv"] += tmp
        s_old, s_new = s_new, s_old


@dataclass
class Projection:
    """Totals per scenario (row 0 = baseline, then one per KPI) and draw (column): each (S + 1, B),
    plus the baseline per-account churn_prob and ltv_units (margin not applied), each (B, N)."""

    totals: dict[str, np.ndarray]
    churn_prob: np.ndarray
    ltv_units: np.ndarray


def project(
    hazards: dict[str, Hazard],
    scen: list[Scenario],
    active: pd.DataFrame,
    g_e: np.ndarray,
    g_d: np.ndarray,
    referral_mrr: np.ndarray,
    horizon: int,
    ltv_months: int,
    dtype=np.float64,
    w_money: np.ndarray | None = None,
    w_count: np.ndarray | None = None,
) -> Projection:
    """Project baseline and every scenario for the accounts of ``active``, chunk by chunk (of
    ``CHUNK_ELEMENTS`` draws × accounts; each chunk's totals summed in one product per scenario), a
    chunk ``SUB_ACCOUNTS`` accounts at a time (every entry is computed on its own: the same bits).

    Totals are Σ_i w_money_i · (amount per unit of starting MRR) for churn, expansion, downgrade and
    ltv, and Σ_i w_count_i · (expected referrals) × ``referral_mrr`` for new revenue. By default
    w_money = each account's MRR at as_of and w_count = 1: plain sums over the accounts; a sample
    passes its estimator's weights instead.
    """
    tenure = active["tenure"].to_numpy(dtype="float64")
    cycle = renewal_cycles(active)
    mrr = active["mrr"].to_numpy(dtype="float64")
    w_money = mrr if w_money is None else w_money
    w_count = np.ones(len(active)) if w_count is None else w_count
    n, months = len(active), max(horizon, ltv_months)
    b = next(iter(hazards.values())).coef.shape[0]
    chunk = max(64, CHUNK_ELEMENTS // b)
    totals = {c: np.zeros((len(scen) + 1, b)) for c in ("churn", "expansion", "downgrade", "referrals", "ltv")}
    churn_prob, ltv_units = np.empty((b, n)), np.empty((b, n))
    ge, gd = g_e.reshape(-1, 1).astype(dtype), g_d.reshape(-1, 1).astype(dtype)
    buffers: dict[str, dict[str, np.ndarray]] = {"base": {}, "moved": {}}  # the factors' memory, chunk after chunk
    # the scenarios projected (a scenario with a reason has no row to fill) and the outcomes each moves
    live = [(s, sc, [o for o, hz in hazards.items() if sc.kpi in hz.kpi_cols])
            for s, sc in enumerate(scen, start=1) if not sc.reason]
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        weights = (w_money[lo:hi], w_count[lo:hi], referral_mrr)
        parts = range(lo, hi, SUB_ACCOUNTS)
        # more than one part: each part's results kept until the chunk's totals are summed in one product,
        # as they would be without parts (the same bits)
        kept = None if len(parts) == 1 else {c: np.empty((len(scen) + 1, b, hi - lo), dtype) for c in totals}
        for part in parts:
            sl = slice(part, min(part + SUB_ACCOUNTS, hi))
            risk = decides(tenure[None, sl] + np.arange(1, months + 1)[:, None], cycle[None, sl])
            log_a = {o: hz.coef @ hz.X[sl].T + hz.shift() for o, hz in hazards.items()}
            neg_a = _neg_exp(log_a, dtype)
            base_factor = _factors(hazards, tenure[sl], months, 0.0, risk, dtype, sl, buffers["base"])
            base = project_chunk(neg_a, base_factor, ge, gd, horizon, ltv_months)
            _keep(totals, kept, 0, base, weights, slice(sl.start - lo, sl.stop - lo))
            churn_prob[:, sl] = 1.0 - base["surv"]
            ltv_units[:, sl] = base["ltv"] * mrr[None, sl]
            for s, sc, moved in live:
                if not moved:
                    res = base
                elif sc.kpi == "contract_months":
                    factor = _factors(hazards, tenure[sl], months, sc.delta, risk, dtype, sl, buffers["moved"])
                    res = project_chunk(neg_a, factor, ge, gd, horizon, ltv_months)
                else:
                    at_mean = None if sc.dz_at_mean is None else sc.dz_at_mean[sl]
                    change = {o: hazards[o].change(sc.kpi, sc.dz[sl], sl, at_mean) for o in moved}
                    res = _moved_projection(neg_a, log_a, change, base, base_factor, ge, gd, horizon, ltv_months)
                _keep(totals, kept, s, res, weights, slice(sl.start - lo, sl.stop - lo))
        if kept is not None:
            for s in [0, *(s for s, _, _ in live)]:
                _add_totals(totals, s, {c: v[s] for c, v in kept.items()}, *weights)
    return Projection(totals, churn_prob, ltv_units)


def _keep(totals: dict[str, np.ndarray], kept: dict[str, np.ndarray] | None, s: int, res: dict[str, np.ndarray],
          weights: tuple, cols: slice) -> None:
    """Scenario ``s``'s results of one part of a chunk: into the totals at once when the part is the whole
    chunk, else into ``kept`` (scenario, draw, account of the chunk), summed when the chunk is done."""
    if kept is None:
        _add_totals(totals, s, res, *weights)
        return
    for c, v in kept.items():
        v[s][:, cols] = res[c]


def _moved_projection(neg_a, log_a, change, base, factor, ge, gd, horizon, ltv_months) -> dict[str, np.ndarray]:
    """A scenario's :func:`project_chunk` with the log-hazards ``log_a`` moved by ``change`` (B, n) per
    outcome moved. When most accounts are left unchanged in every draw and outcome (a KPI already at
    its bound for them, e.g. an onboarding already completed: dz = 0), those keep the baseline's
    entries ``base`` and the others are projected alone (gathering their tenure factors costs about
    what projecting an account does, so below half unchanged every account is projected). Each entry
    is computed on its own (:func:`project_chunk`): the same bits either way."""
    dtype = next(iter(neg_a.values())).dtype
    moves = np.zeros(next(iter(neg_a.values())).shape[1], bool)
    for c in change.values():
        moves |= (c != 0).any(axis=0)
    if not moves.any():
        return base
    if moves.mean() > 0.5:
        # (each change is the caller's temporary: log_a + change written over it, the same sums)
        shifted = dict(neg_a) | _neg_exp({o: np.add(log_a[o], c, out=c) for o, c in change.items()}, dtype, own=True)
        return project_chunk(shifted, factor, ge, gd, horizon, ltv_months)
    cols = np.flatnonzero(moves)
    shifted = {o: v[:, cols] for o, v in neg_a.items()}
    shifted |= _neg_exp({o: log_a[o][:, cols] + c[:, cols] for o, c in change.items()}, dtype, own=True)
    part = project_chunk(shifted, {o: np.take(f, cols, axis=2) for o, f in factor.items()}, ge, gd, horizon,
                         ltv_months)
    out = {k: v.copy() for k, v in base.items()}
    for k, v in part.items():
        out[k][:, cols] = v
    return out


def season_factor(hz: Hazard, months: int, dtype) -> np.ndarray:
    """exp(coef_b[calendar month of as_of + h]) for h = 1..months: shape (months, B, 1) (1 without a season)."""
    out = np.zeros((months, hz.coef.shape[0], 1), dtype)
    for h in range(1, months + 1):
        j = hz.season_cols.get((hz.as_of_month - 1 + h) % 12 + 1)
        if j is not None:
            out[h - 1, :, 0] = hz.coef[:, j]
    return np.exp(out, out=out)


def _factors(hazards: dict[str, Hazard], tenure: np.ndarray, months: int, delta: float, risk: np.ndarray, dtype,
             sl: slice = slice(None), buffers: dict[str, np.ndarray] | None = None):
    """Each outcome's factor of the months (:func:`tenure_factor` × calendar month × the first months'
    own gaps; churn × the renewal decisions ``risk``), (months, B, n). ``buffers``: flat arrays per
    outcome the factors are written into (grown when too small), reused chunk after chunk: written
    afresh, a chunk's factors (tens of MB) would cost each chunk new memory pages."""
    shape = (months, next(iter(hazards.values())).coef.shape[0], len(tenure))
    factor = {o: tenure_factor(hz, tenure, months, delta, dtype,
                               None if buffers is None else _buffer(buffers, o, shape, dtype))
              for o, hz in hazards.items()}
    for o, hz in hazards.items():
        if hz.season_cols:
            factor[o] *= season_factor(hz, months, dtype)
        if hz.gaps_first is not None:  # the first lag months' KPI month is observed: each account's own gaps
            k = min(hz.lag, months)
            factor[o][:k] *= np.exp(hz.gaps_first[:, sl] - hz.gaps).astype(dtype)[None]
    np.multiply(factor["churn"], risk[:, None, :], out=factor["churn"])  # 0 or 1 (no float copy of the mask)
    return factor


def _buffer(buffers: dict[str, np.ndarray], key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous array of ``shape`` on ``buffers[key]``'s memory (a new, larger one when it is too small)."""
    size = int(np.prod(shape))
    if key not in buffers or buffers[key].size < size or buffers[key].dtype != dtype:
        buffers[key] = np.empty(size, dtype)
    return buffers[key][:size].reshape(shape)


def _neg_exp(log_a: dict[str, np.ndarray], dtype, *, own: bool = False) -> dict[str, np.ndarray]:
    """−exp(clip(log-hazard)) of each outcome in ``dtype``, one temporary per outcome (none with ``own``:
    ``log_a``'s arrays are the caller's temporaries, overwritten)."""
    out = {}
    for o, v in log_a.items():
        t = np.clip(v, -60.0, 30.0, out=v if own else None)
        np.exp(t, out=t)
        # negated in t's precision and rounded to dtype on the way out (rounding is symmetric: the same
        # values as negating, then converting)
        out[o] = np.negative(t, out=t if t.dtype == dtype else np.empty(t.shape, dtype), casting="same_kind")
    return out


def _add_totals(
    totals: dict[str, np.ndarray], s: int, res: dict[str, np.ndarray], w_money: np.ndarray, w_count: np.ndarray,
    referral_mrr: np.ndarray,
) -> None:
    for c in ("churn", "expansion", "downgrade", "ltv"):
        totals[c][s] += res[c].astype("float64", copy=False) @ w_money
    totals["referrals"][s] += (res["referrals"].astype("float64", copy=False) @ w_count) * referral_mrr


# ---------------------------------------------------------------- the stage


@one_blas_thread()
def improvement_potential(
    panel: pd.DataFrame, data: ClientData, params: Params, kpis: list[str], *, draw_accounts: int = DRAW_ACCOUNTS,
    draw_sample_size: int = DRAW_SAMPLE, fits: Fits | None = None,
) -> Potential:
    """Improvement potential of every KPI in ``kpis`` (DESIGN §5) with 95% intervals, and the
    baseline churn probability and survival-based LTV of every account active at as_of.

    Parameters
    ----------
    panel, data, params, kpis : DataFrame, ClientData, Params, list of str
        The stage signature (docs/architecture.md): the account × month panel, the loaded client,
        the run's params and the KPI columns to analyse.
    draw_accounts : int, default DRAW_ACCOUNTS
        Active accounts beyond which the interval draws are projected on an MRR-proportional sample.
    draw_sample_size : int, default DRAW_SAMPLE
        The size of that sample (at most ``draw_accounts``).
    fits : Fits, optional
        The run's shared designs and fits of this panel (:class:`cskit.fits.Fits`): the churn model's
        design, first fit and term selection stay in it for the health score's full model. Without
        it the stage keeps its own and releases them on return.

    Returns
    -------
    Potential
        potential.csv / .xlsx (``table``), the per-account projection (``accounts``: churn_prob, ltv),
        the models' ``outcomes`` (status, reason) and the ``notes`` on empty cells.

    Raises
    ------
    CskitError
        When no account is active at as_of, or a KPI asked for is not a column of the panel.

    Examples
    --------
    >>> pot = improvement_potential(dx.panel, dx.data, dx.params, dx.kpis)  # doctest: +SKIP
    >>> pot.table[["kpi", "d_ltv", "d_ltv_lo", "d_ltv_hi"]]  # doctest: +SKIP

    Notes
    -----
    The point estimates are exact sums over all active accounts; the interval draws are projected for
    all of them too up to ``draw_accounts`` active accounts, and beyond on a sample of
    ``min(draw_sample_size, draw_accounts)`` (see :func:`draw_sample`)."""
    at = active_rows(panel, data.as_of)  # one row per account and month: the rows of active's accounts
    active = panel[at].reset_index(drop=True)  # active_accounts
    if active.empty:
        raise CskitError(
            f"potential: no account is active at as_of ({pd.Timestamp(data.as_of):%Y-%m}) with MRR > 0, so "
            "there is nothing to project. Check as_of in the params and the revenue table's last month."
        )
    kpis = list(dict.fromkeys(kpis))
    unknown = [k for k in kpis if k not in panel]
    if unknown:
        raise CskitError(
            f"potential: {len(unknown)} KPI(s) asked for are not columns of the panel: {', '.join(unknown[:5])}. "
            f"Use names from cskit.panel.kpi_columns(data), e.g. {', '.join(k for k in panel.columns[-3:])}."
        )
    model_kpis = list(dict.fromkeys(["contract_months", *kpis]))
    lag = params.kpi_lag_months
    mine = fits is None or not fits.serves(panel, lag)
    fits = Fits(panel, lag, seed=params.seed) if mine else fits
    transforms = fits.transforms(model_kpis)
    fitted: dict[str, OutcomeModel | None] = {}
    for o in sorted(PROJECTED, key=lambda o: o == "churn"):  # the growth models' one design first, then released
        if o == "churn":
            fits.release("growth")
        fitted[o] = None if o == "referral" and not has_referrals(data) else fit_outcome(
            panel, o, model_kpis, transforms, lag, params.language, alpha=params.alpha, fits=fits, seed=params.seed)
    if mine:
        fits.release()
    notes: dict[str, str] = {}
    models: dict[str, OutcomeModel | None] = {}
    for o in PROJECTED:
        models[o] = fitted[o]
        if models[o] is None:
            notes["d_new"] = Notice("no_referrals", stage="potential", severity="note")
        elif models[o].reason:
            notes[_column(o)] = models[o].reason
        if models[o] is not None and models[o].sample is not None and models[o].sample.sampled:
            notes[f"model_rows_sampled:{o}"] = sampled_notice(models[o].sample, stage="potential", outcomes=[o])
    sizes = relative_sizes(panel)
    future = future_values(panel, active, model_kpis, data.as_of, rows=at)
    flagged = sorted({k for m in models.values() if m and m.design for k in m.design.indicators})
    if flagged:
        future = pd.concat([future, missing_shares(panel, active, flagged, data.as_of)], axis=1)
    months = future_months(panel, active, [k for k in kpis if k not in data.static_kpis], data.as_of, rows=at)
    scen = scenarios(future, kpis, data.catalogue, params.improvement_pct, transforms, params.language, months=months)

    point_coef = {o: _point_coef(m) for o, m in models.items()}
    projected = shown(models)
    point = project(
        {o: make_hazard(models[o], c, future, active) for o, c in point_coef.items() if o in projected},
        scen, active, np.array([sizes["g_e"][0]]), np.array([sizes["g_d"][0]]),
        np.array([sizes["referral_mrr"][0]]), params.horizon_months, params.ltv_months,
    )
    draws = None
    if params.bootstrap > 0:
        unit_ltv = point.ltv_units[0] / active["mrr"].to_numpy(dtype="float64")  # the sample's order
        draws = project_draws(models, point_coef, sizes, scen, future, active, params, draw_accounts,
                              sample_size=draw_sample_size, key=unit_ltv)
    table, phases = _potential_table(scen, models, point, draws, data.catalogue, params, notes)
    accounts = pd.DataFrame(
        {
            "account_id": active["account_id"].to_numpy(),
            "mrr": active["mrr"].to_numpy(dtype="float64"),
            "churn_prob": point.churn_prob[0],
            "ltv": params.gross_margin * point.ltv_units[0],
        }
    )
    beyond = growth_beyond_data(panel, accounts, params.ltv_months, params.gross_margin)
    if beyond is not None:
        notes["ltv"] = beyond
    outcomes = pd.DataFrame(
        [
            {
                "outcome": o,
                "rows": m.rows if m else 0,
                "events": m.events if m else 0,
                "fitted_rows": m.fitted_rows if m else 0,
                "status": "fitted" if m and m.fit is not None else "not_estimable",
                "kpis": len(m.design.kpis) if m and m.design else 0,
                "reason": m.reason if m else notes.get("d_new", ""),
            }
            for o, m in models.items()
        ]
    )
    return Potential(
        table, accounts, POTENTIAL_CAVEAT[params.language], notes, outcomes,
        params.language, params.currency, params.improvement_pct,
        {o: m for o, m in models.items() if m is not None}, phases,
        {"client": params.client_name or params.client, "as_of": f"{pd.Timestamp(data.as_of):%Y-%m}",
         "horizon_months": params.horizon_months, "ltv_months": params.ltv_months,
         "rates": share_kpis(data.catalogue)},
    )


def observed_growth(panel: pd.DataFrame) -> float:
    """The largest growth of one account's MRR seen in the data: max over accounts and months of MRR
    divided by the lowest positive MRR of the same account at or before that month (1 without growth).
    ``panel`` in build_panel's order (each account's months together, in time order)."""
    mrr = panel["mrr"].to_numpy(dtype="float64")
    paying = mrr > 0
    if not paying.any():
        return 1.0
    codes, _ = factorize_runs(panel["account_id"].to_numpy()[paying])
    low = pd.Series(mrr[paying]).groupby(codes, sort=False).cummin().to_numpy()
    return float(max(1.0, np.max(mrr[paying] / low)))


def growth_beyond_data(panel: pd.DataFrame, accounts: pd.DataFrame, ltv_months: int, margin: float):
    """The note (code ``ltv_growth_beyond_data``) that some accounts' projected LTV implies MRR growth
    beyond anything the data show, or None. The projection holds each account's KPIs at today's values
    for ``ltv_months`` and compounds its expansions; since S(h) ≤ 1, an LTV above margin × MRR ×
    ltv_months × G (G = :func:`observed_growth`) can only come from a projected MRR of more than G
    times today's in some month: growth no account in the data ever showed. Says how many accounts,
    their share of the total LTV and G; the figures are not changed (read them as upper bounds there)."""
    mrr = accounts["mrr"].to_numpy(dtype="float64")
    ltv = accounts["ltv"].to_numpy(dtype="float64")
    if margin <= 0 or not len(mrr):
        return None
    g = observed_growth(panel)
    over = (mrr > 0) & np.isfinite(ltv) & (ltv > margin * mrr * ltv_months * g)
    if not over.any():
        return None
    total = float(np.nansum(ltv))
    share = float(ltv[over].sum() / total) if total > 0 else float("nan")
    return Notice("ltv_growth_beyond_data", stage="potential", severity="warning", accounts=int(over.sum()),
                  share=share, growth=g, ltv_months=int(ltv_months))


def project_draws(
    models: dict[str, OutcomeModel | None],
    point_coef: dict[str, np.ndarray],
    sizes: dict[str, tuple[float, float]],
    scen: list[Scenario],
    future: pd.DataFrame,
    active: pd.DataFrame,
    params: Params,
    draw_accounts: int,
    *,
    sample_size: int = DRAW_SAMPLE,
    key: np.ndarray | None = None,
) -> Projection:
    """The projection at ``params.bootstrap`` draws of every estimate (float32); column 0 holds the
    estimates themselves, so that intervals are centred on the exact point estimate. On all active
    accounts up to ``draw_accounts`` of them, beyond on :func:`draw_sample`'s ``min(sample_size,
    draw_accounts)`` accounts along ``key`` (the baseline LTV per unit of MRR)."""
    projected = shown(models)
    rng = np.random.default_rng(params.seed)
    b = params.bootstrap
    coef = {o: np.vstack([point_coef[o], _draw_coef(m, point_coef[o], b, rng)]) for o, m in models.items()}
    g = {k: np.r_[mean, np.clip(rng.normal(mean, se, b), 0.0, None)] for k, (mean, se) in sizes.items()}
    rows, w_money, w_count = draw_sample(active, min(sample_size, draw_accounts), rng, key=key, exact=draw_accounts)
    sub, fut = active.iloc[rows].reset_index(drop=True), future.iloc[rows].reset_index(drop=True)
    sub_scen = [replace(sc, dz=sc.dz[rows], dz_at_mean=None if sc.dz_at_mean is None else sc.dz_at_mean[rows])
                for sc in scen]
    return project(
        {o: make_hazard(models[o], c, fut, sub) for o, c in coef.items() if o in projected},
        sub_scen, sub, g["g_e"], g["g_d"], g["referral_mrr"], params.horizon_months, params.ltv_months,
        dtype=np.float32, w_money=w_money, w_count=w_count,
    )


def draw_sample(active: pd.DataFrame, size: int, rng: np.random.Generator, *, key: np.ndarray | None = None,
                exact: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accounts on which the draws are projected, and their weights (w_money, w_count).

    Up to ``exact`` (default ``size``) active accounts: all of them, weights MRR and 1 (exact sums).
    Beyond, ``size`` accounts (docs/methods.md, "Intervals"):

    - every account whose MRR or baseline LTV (MRR × ``key``, the LTV per unit of MRR) is at least one
      sampling step of its measure (Σ over the accounts not yet taken / the points left) is taken
      for certain, weights MRR and 1 (:func:`certain_accounts`): a few accounts projected to grow
      far beyond the rest would otherwise decide the LTV interval by whether the sample holds them;
    - the other points by systematic sampling with probability ∝ MRR (Madow 1949) over the rest in
      the order of ``key`` (stable; the active order without it): laid end to end, each as long as
      its MRR, and points at equal steps of Σ MRR / points from one uniform random start. Each is
      drawn once at most, with probability points × MRR / Σ MRR, and the sample is spread evenly
      along ``key`` (implicit stratification). Hansen–Hurwitz weights (the step for the currency
      amounts, step / MRR for counts) make each draw's totals unbiased estimates of the all-account
      totals.
    """
    mrr = active["mrr"].to_numpy(dtype="float64")
    n = len(mrr)
    if n <= (size if exact is None else exact):
        return np.arange(n), mrr, np.ones(n)
    ltv = None if key is None else mrr * key
    certain = certain_accounts(mrr, ltv, size)
    rest = np.flatnonzero(~certain)
    points = size - int(certain.sum())
    order = rest if key is None else rest[np.argsort(key[rest], kind="stable")]
    ends = np.cumsum(mrr[order])
    step = ends[-1] / points
    drawn = order[np.minimum(np.searchsorted(ends, (rng.random() + np.arange(points)) * step, side="right"),
                             len(order) - 1)]
    rows = np.concatenate([np.flatnonzero(certain), drawn])
    w_money = np.concatenate([mrr[certain], np.full(points, step)])
    w_count = np.concatenate([np.ones(int(certain.sum())), step / mrr[drawn]])
    first = np.argsort(rows, kind="stable")
    return rows[first], w_money[first], w_count[first]


def certain_accounts(mrr: np.ndarray, ltv: np.ndarray | None, size: int) -> np.ndarray:
    """The accounts :func:`draw_sample` takes for certain (boolean mask): MRR or ``ltv`` at least the
    step of the accounts not taken (their sum / the points left), repeated until no account is added
    (each pass lowers the steps); at most half the sample (any fixed set keeps the totals unbiased)."""
    certain = np.zeros(len(mrr), bool)
    while True:
        left = size - int(certain.sum())
        add = mrr >= mrr[~certain].sum() / left
        if ltv is not None:
            add |= ltv >= ltv[~certain].sum() / left
        grown = certain | add
        if grown.sum() == certain.sum() or grown.sum() > size // 2:
            return certain
        certain = grown


def shown(models: dict[str, OutcomeModel | None]) -> list[str]:
    """The outcomes projected: all but a referral model that is not fitted (no referral data, or too
    few referrals), whose column d_new is left empty and which moves nothing else (the LTV and churn
    probability do not depend on referrals), so its hazards are not computed at all."""
    return [o for o, m in models.items() if o != "referral" or (m is not None and m.fit is not None)]


def _column(outcome: str) -> str:
    return {"churn": "d_churn", "expansion": "d_expansion", "downgrade": "d_downgrade", "referral": "d_new"}[outcome]


def _point_coef(model: OutcomeModel | None) -> np.ndarray:
    if model is not None and model.fit is not None:
        return model.fit.coef[None, :].copy()
    return np.array([[rate_coef(model)]])


def _draw_coef(model: OutcomeModel | None, point: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """``b`` draws from N(coef, cov) of a fitted model; the fixed rate otherwise.

    Separated terms (:func:`separated_terms`) are held at their estimate (zero variance); a covariance
    that is not positive semi-definite (an almost singular fit) has its negative eigenvalues set to 0.
    """
    if model is None or model.fit is None:
        return np.repeat(point, b, axis=0)
    fit = model.fit
    cov = fit.cov if model.draw_cov is None else model.draw_cov
    cov = (cov + cov.T) / 2
    held = [fit.names.index(n) for n in separated_terms(fit)]
    cov[held, :] = 0.0
    cov[:, held] = 0.0
    w, v = np.linalg.eigh(cov)
    z = rng.standard_normal((b, len(w)))
    return fit.coef[None, :] + (z * np.sqrt(np.clip(w, 0.0, None))) @ v.T


_MEASURES = {
    "d_ltv": lambda t, margin: margin * t["ltv"],
    "d_expansion": lambda t, margin: t["expansion"],
    "d_new": lambda t, margin: t["referrals"],
    "d_downgrade": lambda t, margin: t["downgrade"],
    "d_churn": lambda t, margin: t["churn"],
}


def _potential_table(
    scen: list[Scenario],
    models: dict[str, OutcomeModel | None],
    point: Projection,
    draws: Projection | None,
    catalogue: dict[str, KPI],
    params: Params,
    notes: dict[str, str],
) -> tuple[pd.DataFrame, list[str]]:
    """potential.csv: one row per KPI, in seed 000's order: by category, then catalogue order; then the
    decision whether the LTV gain is credible (:func:`credible`)."""
    estimable = {o: bool(m and m.fit is not None) for o, m in models.items()}
    empty_col = {
        "d_churn": not estimable["churn"],
        "d_expansion": not estimable["expansion"],
        "d_downgrade": not estimable["downgrade"],
        "d_new": not estimable["referral"],
        "d_ltv": not (estimable["churn"] or estimable["expansion"] or estimable["downgrade"]),
    }
    in_models = {k for m in models.values() if m and m.design for k in m.design.kpis}
    rows = []
    for s, sc in enumerate(scen, start=1):
        kpi = catalogue.get(sc.kpi) or KPI(sc.kpi, sc.kpi, sc.kpi, "other")
        row = {
            "kpi": sc.kpi,
            "label": kpi.label(params.language),
            "category": CATEGORIES.get(kpi.category, CATEGORIES["other"])[params.language],
            "mean": sc.mean,
            "improvement": sc.delta,
        }
        blank_row = bool(sc.reason) or sc.kpi not in in_models
        if sc.reason:
            notes[sc.kpi] = sc.reason
        elif sc.kpi not in in_models:
            notes[sc.kpi] = _dropped_reason(sc.kpi, models)
        for col, f in _MEASURES.items():
            blank = blank_row or empty_col[col]
            row[col] = (
                math.nan
                if blank
                else float(f(point.totals, params.gross_margin)[s, 0] - f(point.totals, params.gross_margin)[0, 0])
            )
            lo = hi = math.nan
            if draws is not None and not blank:
                d = f(draws.totals, params.gross_margin)
                diff = d[s] - d[0]
                lo, hi = row[col] + np.quantile(diff[1:] - diff[0], [0.025, 0.975])
            row[f"{col}_lo"], row[f"{col}_hi"] = float(lo), float(hi)
        row["_phase"] = PHASES.get(kpi.phase, PHASES["after_start"])[params.language]
        row["_cat"] = kpi.category
        rows.append(row)
    cols = ["kpi", "label", "category", "mean", "improvement"]
    for c in COLUMNS:
        cols += [c, f"{c}_lo", f"{c}_hi"]
    table = pd.DataFrame(rows, columns=[*cols, "_phase", "_cat"])
    table = credible(table, models, params.alpha)
    cols += CREDIBLE_COLUMNS
    cats, names = list(CATEGORIES), list(catalogue)
    table["_o1"] = table["_cat"].map(lambda c: cats.index(c) if c in cats else len(cats))
    table["_o2"] = table["kpi"].map(lambda k: names.index(k) if k in names else len(names))
    table = table.sort_values(["_o1", "_o2"], kind="stable")
    phase = table["_phase"].to_numpy()
    return table[cols].reset_index(drop=True), list(phase)


CREDIBLE_COLUMNS = ["models_flagged", "ltv_q_value", "credible"]
LTV_OUTCOMES = ("churn", "expansion", "downgrade")  # the models that move the LTV


def ltv_p_value(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided p of each KPI's LTV gain, from its own 95% percentile interval: the half-width on zero's
    side (point − lower end for a gain, upper end − point for a loss) over 1.96 is the SD of the test, so
    the unadjusted test and the interval the table shows agree (interval clear of zero ⇔ p < 0.05).
    The SD of the draws instead counted a skewed distribution's long far tail against the near side: on a
    fiscal-year client every driver's LTV interval lay above zero (login days 351M [145M, 843M]) while
    its p was ≈ 0.05 and none was credible. Returns (p, SD); NaN where there is no interval."""
    point = table["d_ltv"].to_numpy(dtype="float64")
    lo, hi = (table[c].to_numpy(dtype="float64") for c in ("d_ltv_lo", "d_ltv_hi"))
    sd = np.where(point >= 0, point - lo, hi - point) / Z975
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 2 * norm.sf(np.abs(point / sd))
    return p, sd


def flagged_in_models(models: dict[str, OutcomeModel | None], alpha: float) -> dict[str, list[str]]:
    """Per KPI, the LTV models (churn, expansion, downgrade) in which its effect passes the triggers'
    error control: Benjamini–Hochberg q < alpha over the model's KPIs (Wald p-values; for a KPI with a
    curve or segment slopes the joint Wald test of all its columns, as drivers.csv: the p of its linear
    column alone, beside a spline, says nothing of whether the KPI has an effect)."""
    out: dict[str, list[str]] = {}
    for o in LTV_OUTCOMES:
        m = models.get(o)
        if m is None or m.fit is None or not m.design.kpis:
            continue
        p = m.fit.summary()["p_value"].loc[m.design.kpis].to_numpy(dtype="float64")
        for i, k in enumerate(m.design.kpis):
            if m.design.kpi_terms(k):
                p[i] = joint_p(m.design, m.fit.coef, m.fit.cov, k)
        ok = np.isfinite(p)
        if not ok.any():
            continue
        q = np.full(len(p), np.nan)
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
        for k, qk in zip(m.design.kpis, q):
            if qk < alpha:
                out.setdefault(k, []).append(o)
    return out


def credible(table: pd.DataFrame, models: dict[str, OutcomeModel | None], alpha: float) -> pd.DataFrame:
    """The potential's own decision, written in potential.csv, of which LTV gains the data support:
    ``credible`` when (1) the KPI's effect passes the false-discovery control (BH q < alpha) in at least
    one of the models that move the LTV (``models_flagged``: the same error control as the triggers),
    and (2) its LTV gain is above zero after the same control over the KPIs of the table
    (``ltv_q_value``: BH over the two-sided p of d_ltv from its own interval, ``ltv_p_value``). A KPI
    that no model flags (a noise KPI, a proxy) is never credible, whatever its interval. Without draws nothing is."""
    out = table.copy()
    flags = flagged_in_models(models, alpha)
    out["models_flagged"] = [";".join(flags.get(k, [])) for k in out["kpi"]]
    p, sd = ltv_p_value(out)
    ok = np.isfinite(p) & (sd > 0)
    q = np.full(len(p), np.nan)
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    out["ltv_q_value"] = q
    out["credible"] = (out["models_flagged"] != "") & (q < alpha) & (out["d_ltv"] > 0) & (out["d_ltv_lo"] > 0)
    return out


# The triggers' outcomes that test the effect a potential model's flag stands for (triggers.TRIGGER):
# the downgrade and referral models have none
TRIGGER_TESTS = {"churn": ("churn", "renewal"), "expansion": ("expansion",)}


def confirm_by_triggers(table: pd.DataFrame, drivers: pd.DataFrame) -> pd.DataFrame:
    """potential.csv's ``models_flagged`` and ``credible`` once the triggers' table (``drivers``:
    drivers.csv, with ``kpi``, ``outcome``, ``trigger``) is known: a model's flag stands only where the
    triggers, which test the same effect (``TRIGGER_TESTS``), flag the KPI too (any of their rows for
    it, pooled or per segment); a downgrade flag stands as it is (no trigger tests downgrade). A KPI
    left without a flag is not credible: the report never names as worth improving a KPI the triggers'
    false-discovery control rejects (issue 11 item 7). The triggers run beside the potential (a forked
    child), so ``cskit.pipeline.analyse`` applies this after both."""
    if drivers is None or drivers.empty or "trigger" not in drivers:
        return table
    hit = drivers[drivers["trigger"].fillna("").astype(str) != ""]
    confirmed = set(zip(hit["kpi"], hit["outcome"]))
    out = table.copy()
    kept = []
    for k, flags in zip(out["kpi"], out["models_flagged"].fillna("").astype(str)):
        stay = [o for o in flags.split(";") if o and (o not in TRIGGER_TESTS
                                                       or any((k, t) in confirmed for t in TRIGGER_TESTS[o]))]
        kept.append(";".join(stay))
    out["models_flagged"] = kept
    out["credible"] = out["credible"].astype(bool) & (out["models_flagged"] != "")
    return out


def _dropped_reason(kpi: str, models: dict[str, OutcomeModel | None]) -> Notice:
    reasons = sorted({m.design.dropped[kpi] for m in models.values() if m and m.design and kpi in m.design.dropped})
    return Notice("in_no_model", stage="potential", severity="note", kpi=kpi, reasons=reasons)
