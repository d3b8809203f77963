"""Triggers: which KPIs go with churn (RT), contract continuation (CRTT) and expansion (UCT).

One multivariable model per outcome on the account × month panel, every KPI at month t − lag
(``contract_months`` at t: it is the tenure adjustment), adjusted for segment and contract type
(design, transforms and pairwise collinearity from :mod:`cskit.models`; the GLM is
:func:`cskit.models.fit_binomial`, which halves steps that lower the likelihood):

- churn (RT): discrete-time hazard, binomial GLM with the cloglog link on at-risk account-months;
  exp(β) is a hazard ratio per +1 SD.
- renewal (CRTT): 1 − churn on the same decisions (every month for monthly contracts, anniversaries
  for annual ones), a logit GEE clustered by account with an exchangeable working correlation
  (:func:`cskit.models.fit_gee`), falling back to the independence structure when it does not converge; exp(β) is
  the odds ratio of renewing per +1 SD, with cluster-robust (sandwich) intervals.
- expansion (UCT): expansion or cross-sell in month t, binomial GLM with the logit link on paying,
  non-churning account-months after the first; exp(β) is an odds ratio per +1 SD.

Per KPI × outcome: effect, 95% interval, Wald p, Benjamini–Hochberg q within the outcome, Spearman
correlation on the model rows, best lead–lag (0–6 months: the lag with the largest |score z|), the
trigger flag (q < alpha) and the direction. Each outcome states its events and the smallest effect
per SD it could detect at 80% power; below :data:`MIN_EVENTS` it is not fitted. The choices, in plain
words with references, are in ``docs/methods.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests

from cskit.catalogue import build_catalogue
from cskit.errors import CskitError
from cskit.fits import model_rows
from cskit.models import (
    ADJUST,
    CHURN_ADJUST,
    MAX_MISSING,
    MISSING_COLUMNS,
    TRIGGER_LINK,
    Design,
    GEEResult,
    Transform,
    add_informative_indicators,
    annual_rows,
    base_fit,
    design_matrix,
    fit_binomial,
    fit_gee,
    gee_clusters,
    indicator_effects,
    joint_p,
    keep_order,
    kpi_transforms,
    linear_flagged,
    null_design,
    score_terms,
    score_z_from,
    select_terms,
    slope_weights,
    sustained_at,
    sustained_rows,
    zero_missing,
)
from cskit.notices import Notice
from cskit.panel import MIN_EVENTS, outcome_rows
from cskit.parallel import one_blas_thread
from cskit.params import Params
from cskit.result import StageResult
from cskit.sampling import RowSample, case_control, fit_link, link_offset, sampled_notice, uniform_rows
from cskit.season import seasonal_notice
from cskit.season import tested as seasonality_of
from cskit.stats import Z975, spearman_binary

if TYPE_CHECKING:
    from cskit.fits import Fits

SAME_ROWS = (("churn", "renewal"), ("expansion",))
# What a group's triggers are made of (:func:`trigger_part`'s ``steps``), each doable on its own, in any
# process: the models ("model": the keep order, the design, its missingness, curves and segment slopes,
# the fit and the effects), the descriptive pass over all of the group's rows ("columns": counts of
# measured rows, Spearman correlations, shares missing) and the lead-lag score tests ("lead_lag"; with
# the best lag); :func:`combine_triggers` puts them together.
STEPS = ("model", "columns", "lead_lag")
TRIGGER = {"churn": "RT", "renewal": "CRTT", "expansion": "UCT"}
NEVER = Notice("kpi_never_measured", stage="triggers", severity="note")
TRIGGER_OUTCOMES = tuple(TRIGGER)  # the outcomes of cskit.panel.OUTCOMES this stage models
LINK = TRIGGER_LINK
MODEL = {
    "churn": "discrete-time hazard: binomial GLM, cloglog link (hazard ratio)",
    "renewal": "GEE, logit link, clustered by account (odds ratio of renewal)",
    "expansion": "binomial GLM, logit link (odds ratio)",
}
MAX_LEAD_LAG = 6
ROW_BLOCK = 8192  # rows per block of KPIMatrix.row_major (a block of 28 KPIs: 1.8 MB)
POWER = 0.8
GEE_SE_RATIO = 10.0
TENURE = "contract_months"
TABLE_COLUMNS = [
    "kpi", "outcome", "effect", "ci_low", "ci_high", "p_value", "q_value", "spearman", "best_lag", "trigger",
    "direction", "segment", "shape",
]
LEAD_LAG_COLUMNS = ["kpi", "outcome", "lag", "z"]
STRUCTURE_COLUMNS = ["kpi", "kind", "df", "stat", "p_value", "step", "kept", "outcome"]
OUTCOME_COLUMNS = ["outcome", "model", "events", "rows", "accounts", "mde_per_sd", "status", "reason"]
FITTED_ROWS = "fitted_rows"  # drivers_outcomes.csv column after OUTCOME_COLUMNS when a model's rows were sampled


@dataclass(repr=False)
class Triggers(StageResult):
    """The triggers of one client.

    - ``table``: drivers.csv, one row per KPI × outcome (columns :data:`TABLE_COLUMNS`).
    - ``outcomes``: one row per outcome (columns :data:`OUTCOME_COLUMNS`); ``mde_per_sd`` is the
      ratio (HR/OR, > 1) the model could detect at 80% power; its inverse is the protective one.
    - ``details``: the table plus ``coef`` (log effect), ``se``, ``z``, ``mde_per_sd``, ``rows`` (model
      rows with the KPI measured), ``transform`` (identity | log1p), ``note`` (why an effect is empty),
      ``label`` (in params.language) and ``category`` from the KPI catalogue.
    - ``lead_lag``: kpi, outcome, lag, z: the score z of the KPI at t − lag (0–6) in the model of the
      outcome on tenure, segment and contract type (the 連動性 chart).
    - ``transforms``: kpi, transform, mean, sd (of the transformed value: "per SD" means per this SD).
    - ``warnings``: coded notices (:class:`cskit.notices.Notice`): what happened and what to do.
    - ``missing``: drivers_missing.csv, one row per outcome and KPI missing in 5–50% of its model rows
      (columns :data:`cskit.models.MISSING_COLUMNS`): the score test of its missing indicator and, where
      the missingness is informative (q < alpha), the indicator's effect in the model (it is a term there).
    """

    table: pd.DataFrame
    outcomes: pd.DataFrame
    details: pd.DataFrame
    lead_lag: pd.DataFrame
    transforms: pd.DataFrame
    warnings: list[Notice] = field(default_factory=list)
    structure: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=STRUCTURE_COLUMNS))
    seasonality: dict = field(default_factory=dict)  # cskit.season.churn_seasonality of the panel
    missing: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MISSING_COLUMNS))

    def summary_items(self) -> dict:
        fitted = self.outcomes.loc[self.outcomes["status"] == "fitted", "outcome"].tolist()
        pooled = self.table[self.table["segment"] == ""] if "segment" in self.table else self.table
        return {"outcomes_fitted": fitted, "kpis": int(pooled["kpi"].nunique()),
                "triggers": int((pooled["trigger"] != "").sum()), "notices": len(self.warnings)}

    def write(self, results_dir: str | Path) -> None:
        """Write ``drivers.csv``, ``drivers_outcomes.csv`` and ``drivers_missing.csv`` (fixed float format,
        no timestamps)."""
        results_dir = Path(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(results_dir / "drivers.csv", index=False, float_format="%.6g", lineterminator="\n")
        self.outcomes.to_csv(
            results_dir / "drivers_outcomes.csv", index=False, float_format="%.6g", lineterminator="\n"
        )
        self.missing.to_csv(results_dir / "drivers_missing.csv", index=False, float_format="%.6g", lineterminator="\n")


@one_blas_thread()
def find_triggers(panel: pd.DataFrame, params: Params, kpis: list[str], *, fits: Fits | None = None) -> Triggers:
    """RT / CRTT / UCT triggers of ``kpis`` on ``panel`` (see the module docstring for the models).

    Parameters
    ----------
    panel, params, kpis : DataFrame, Params, list of str
        The stage signature (docs/architecture.md; no ``data``: the panel holds all it needs): the
        account × month panel, the run's params and the KPI columns to analyse.
    fits : Fits, optional
        The run's :class:`cskit.fits.Fits` of this panel (same lag and seed): the KPIs' transforms and
        the churn and expansion model rows (``fits.model_rows``: the rows the triggers draw) are taken
        from it and left in it for the stages after (the same values: each is made once per run).

    Returns
    -------
    Triggers
        drivers.csv (``table``: effect, interval, p, q, Spearman, best lag, trigger flag per KPI ×
        outcome), drivers_outcomes.csv (``outcomes``: events, status, reason), lead–lag scores.

    Raises
    ------
    CskitError
        When a KPI asked for is not a column of the panel.

    Examples
    --------
    >>> tr = find_triggers(dx.panel, dx.params, dx.kpis)  # doctest: +SKIP
    >>> tr.table[tr.table["trigger"] != ""]  # doctest: +SKIP
    """
    return combine_triggers([trigger_part(panel, params, kpis, fits=fits)], params, kpis)


@dataclass(repr=False)
class TriggerPart:
    """What :func:`trigger_part` found for some outcome groups (``SAME_ROWS``) and steps (``STEPS``),
    before the joint steps :func:`combine_triggers` takes over all of them: of the "model" step, per
    outcome its ``_one_outcome`` result and the notices it raised (``notices``), per group its
    case-control sample; of the "columns" step, per group :func:`group_columns`; of the "lead_lag" step,
    per group its lead-lag scores (:func:`group_lead_lag`); the KPIs' transforms, those never measured,
    and the churn seasonality test (``season``: in the part of the first group's models only)."""

    results: dict[str, dict]
    notices: dict[str, list[Notice]]
    samples: dict[tuple[str, ...], RowSample]
    transforms: dict[str, Transform]
    never: list[str]
    season: dict | None = None
    columns: dict[tuple[str, ...], dict] = field(default_factory=dict)
    lead_lag: dict[tuple[str, ...], pd.DataFrame] = field(default_factory=dict)


@one_blas_thread()
def trigger_part(panel: pd.DataFrame, params: Params, kpis: list[str], *, groups: tuple = SAME_ROWS,
                 steps: tuple = STEPS, fits: Fits | None = None) -> TriggerPart:
    """The steps ``steps`` (some of :data:`STEPS`) of the outcome groups ``groups`` (some of
    :data:`SAME_ROWS`), without the steps over every outcome (q-values, notices' order, tables):
    :func:`combine_triggers` of parts that make every step of every group once, made in any process and
    in any order, is :func:`find_triggers`' result, the same bytes (``cskit.analyse`` runs each piece
    where a core is free: ``cskit.pipeline``). ``fits`` as for :func:`find_triggers`."""
    _check_columns(panel, kpis)
    lag = params.kpi_lag_months
    kpis = list(dict.fromkeys(kpis))
    model_kpis = [TENURE, *[k for k in kpis if k != TENURE]]
    fits = fits if fits is not None and fits.serves(panel, lag) and fits.seed == params.seed else None
    transforms = fits.transforms(model_kpis) if fits is not None else kpi_transforms(panel, model_kpis)
    Z = KPIMatrix.of(panel, model_kpis, transforms)
    # the panel's own values (KPIMatrix.of); a KPI with a transform has two measured values at least
    never = [k for k in kpis if k not in transforms and np.isnan(Z.columns[k]).all()]
    part = TriggerPart({}, {}, {}, transforms, never)
    for group in [g for g in SAME_ROWS if g in groups]:
        # the group's case-control sample, drawn on its first outcome once for every step
        drawn = fits.rows(group[0]) if fits is not None else model_rows(panel, group[0], lag, seed=params.seed)
        if "model" in steps:
            rs = None
            for outcome in group:
                rows, y = outcome_rows(panel, outcome, lag)
                if rs is None:  # made with the group's first outcome (its y is the one sampled on)
                    rs = RowSet.of(panel, Z, group, rows, y, kpis, model_kpis, transforms, lag, params.seed,
                                   drawn=drawn)
                    part.samples[group] = rs.sample
                part.notices[outcome] = []
                part.results[outcome] = _one_outcome(rs, outcome, y, params, part.notices[outcome])
            del rs  # the group's designs, gathers and fits, released before the next group's
        if "columns" in steps:
            part.columns[group] = group_columns(panel, Z, group, kpis, lag, drawn=drawn)
        if "lead_lag" in steps:
            part.lead_lag[group] = group_lead_lag(panel, Z, group, kpis, transforms, lag, params.seed)
    if SAME_ROWS[0] in groups and "model" in steps:
        # the panel builder's test when kept (cskit.season.remember), as the Fits' own
        part.season = fits.seasonality(MIN_EVENTS) if fits is not None else seasonality_of(panel, MIN_EVENTS)
    return part


def combine_triggers(parts: list[TriggerPart], params: Params, kpis: list[str]) -> Triggers:
    """The :class:`Triggers` of the parts of every outcome group (:func:`trigger_part`; any order): the
    outcomes stacked in :data:`TRIGGER_OUTCOMES` order, Benjamini–Hochberg q within each outcome, the
    notices in the order one call of :func:`find_triggers` gives."""
    kpis = list(dict.fromkeys(kpis))
    results = {o: r for p in parts for o, r in p.results.items()}
    notices = {o: n for p in parts for o, n in p.notices.items()}
    drawn = {g: s for p in parts for g, s in p.samples.items()}
    columns = {g: c for p in parts for g, c in p.columns.items()}
    scores = {g: s for p in parts for g, s in p.lead_lag.items()}
    samples = {g: drawn[g] for g in SAME_ROWS if g in drawn}
    transforms, never = parts[0].transforms, parts[0].never
    season = next(p.season for p in parts if p.season is not None)
    warnings: list[Notice] = []
    rows_out, outcomes_out, lead_lag, dropped, structure, missing = [], [], [], {}, [], []
    choice: dict = {}  # sustained_rows' comparison (the churn group's), for the annual_recent_mean notice
    for outcome in TRIGGER_OUTCOMES:
        group = next(g for g in SAME_ROWS if outcome in g)
        result = _described(results[outcome], outcome, group, columns[group], scores[group], kpis)
        warnings += notices[outcome]
        choice = result.get("sustained", choice)
        rows_out.append(result["rows"])
        outcomes_out.append(result["outcome"])
        lead_lag.append(result["lead_lag"])
        structure.append(result.get("structure", pd.DataFrame()))
        missing.append(result.get("missing", pd.DataFrame(columns=MISSING_COLUMNS)))
        for k, reason in result["dropped"].items():
            dropped.setdefault((k, NEVER if k in never else reason), []).append(outcome)
    missing = _stack(missing, MISSING_COLUMNS)
    warnings[:0] = _sampled_warnings(samples)
    warnings[:0] = _dropped_warnings(dropped) + _transform_warnings(transforms, kpis) + missing_warnings(missing)
    if season["detected"]:
        warnings.insert(0, seasonal_notice(season, "triggers"))
    if choice.get("code") == "annual_recent_mean":
        warnings.append(Notice("annual_recent_mean", stage="triggers", severity="note", months=choice["months"],
                               events=choice["events"], loglik_last_month=choice["loglik_last_month"],
                               loglik_recent_mean=choice["loglik_recent_mean"]))
    details = pd.concat(rows_out, ignore_index=True)
    details = _add_q_and_flags(details, params.alpha)
    order = {k: i for i, k in enumerate(kpis)}
    details = details.assign(
        _o=details["outcome"].map(TRIGGER_OUTCOMES.index), _k=details["kpi"].map(order), _s=details["segment"] != ""
    ).sort_values(["_o", "_k", "_s"], kind="stable").drop(columns=["_o", "_k", "_s"]).reset_index(drop=True)
    structure = _stack(structure, STRUCTURE_COLUMNS)
    warnings += _structure_warnings(details)
    catalogue = build_catalogue(params.kpis, kpis)
    details["label"] = [catalogue[k].label(params.language) for k in details["kpi"]]
    details["category"] = [catalogue[k].category for k in details["kpi"]]
    table = details[TABLE_COLUMNS].reset_index(drop=True)
    columns = OUTCOME_COLUMNS + ([FITTED_ROWS] if any(FITTED_ROWS in o for o in outcomes_out) else [])
    outcomes_out = [o if FITTED_ROWS in o or len(columns) == len(OUTCOME_COLUMNS) else {**o, FITTED_ROWS: o["rows"]}
                    for o in outcomes_out]
    return Triggers(
        table=table,
        outcomes=pd.DataFrame(outcomes_out, columns=columns),
        details=details,
        lead_lag=_stack(lead_lag, LEAD_LAG_COLUMNS),
        transforms=_transform_frame(transforms, kpis),
        warnings=warnings,
        structure=structure,
        seasonality=season,
        missing=missing.reset_index(drop=True),
    )


def _described(result: dict, outcome: str, group: tuple[str, ...], columns: dict, scores: pd.DataFrame,
               kpis: list[str]) -> dict:
    """``_one_outcome``'s ``result`` with what its group's other steps made: per KPI its measured rows
    and Spearman correlation (:func:`group_columns`), its lead-lag scores and best lag (fitted outcomes
    only) and, sampled, the missingness table's shares of all the model rows (:func:`_full_shares`).
    The KPIs' own rows are the first of ``result["rows"]``, in ``kpis`` order (the segment rows after)."""
    frame, n = result["rows"].copy(), len(kpis)
    frame.iloc[:n, frame.columns.get_loc("rows")] = columns["counts"]
    spearman = columns["spearman"]
    frame.iloc[:n, frame.columns.get_loc("spearman")] = spearman if outcome == group[0] else -spearman
    lead_lag = pd.DataFrame(columns=LEAD_LAG_COLUMNS)
    if result["outcome"]["status"] == "fitted":
        lead_lag = scores[scores["outcome"] == outcome].reset_index(drop=True)
        frame.iloc[:n, frame.columns.get_loc("best_lag")] = _best_lag(lead_lag, kpis)
    out = result | {"rows": frame, "lead_lag": lead_lag}
    if "missing" in result and columns["missing"] is not None:  # a fitted model on a sample of the rows
        shares = _full_shares(columns, result["outcome"]["rows"], result["recent_gaps"], kpis)
        out["missing"] = _with_shares(result["missing"], shares)
    return out


def _events(y: np.ndarray) -> int:
    """What an outcome's model learns from: the rarer of its 0/1 classes (renewal's are churn's)."""
    return int(min(y.sum(), len(y) - y.sum()))


def _stack(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _check_columns(panel: pd.DataFrame, kpis: list[str]) -> None:
    need = ["account_id", "tenure", "churn", "at_risk", "mrr_prev", "expansion", "cross_sell", TENURE]
    missing = [c for c in [*need, *kpis] if c not in panel.columns]
    if missing:
        raise CskitError(
            f"The panel lacks the column(s) {', '.join(missing)} needed for the triggers. "
            "Build it with cskit.panel.build_panel and pass KPI names from cskit.panel.kpi_columns."
        )


@dataclass
class RowSet:
    """The model rows an outcome group shares (``SAME_ROWS``: renewal is 1 − churn on the churn rows)
    and what its models need of them alone, computed once for the group (:meth:`once`): the account
    count, the candidates' values on the fitted rows (:meth:`candidates`), the null design, the design
    for a given KPI order, the sustained-usage rows. (What is described of all its rows, and the
    lead-lag scores, are steps of their own: :func:`group_columns`, :func:`group_lead_lag`.)

    Above ``cskit.sampling.SAMPLE_ABOVE`` rows the group's models are fitted on a case-control sample
    of them (``kept``, ``sample``: :func:`cskit.sampling.case_control` on the first outcome's y, once
    for the group), with the sampled likelihood (:meth:`link`); counts, Spearman correlations and
    shares missing stay those of all of ``rows``."""

    panel: pd.DataFrame  # the panel itself (read only: no copy of its columns)
    Z: KPIMatrix
    group: tuple[str, ...]
    rows: np.ndarray  # boolean mask of the group's model rows
    kpis: list[str]
    model_kpis: list[str]
    transforms: dict[str, Transform]
    lag: int
    kept: np.ndarray = None  # boolean mask of the rows the models are fitted on (``rows`` unless sampled)
    sample: RowSample = None  # what the sampling did, for the group's first outcome
    seed: int = 0
    cache: dict = field(default_factory=dict)

    @classmethod
    def of(cls, panel: pd.DataFrame, Z: KPIMatrix, group: tuple[str, ...], rows: np.ndarray, y: np.ndarray,
           kpis: list[str], model_kpis: list[str], transforms: dict[str, Transform], lag: int, seed: int, *,
           drawn: tuple) -> RowSet:
        """The row set of ``group`` on ``rows``, sampled on its first outcome's ``y`` with ``seed``
        (``drawn``: that sample, ``cskit.fits.model_rows``' result)."""
        kept, _, sample = drawn
        return cls(panel, Z, group, rows, kpis, model_kpis, transforms, lag, kept, sample, seed)

    def once(self, key, make, last: bool = False):
        """``cache[key]``, made by ``make()`` the first time it is asked for; with ``last`` (the group's
        last outcome asks), handed over and no longer held here (the caller's reference is the only one)."""
        if last:
            return self.cache.pop(key) if key in self.cache else make()
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def candidates(self, names: list[str]) -> np.ndarray:
        """The values of the KPIs ``names`` at t − lag on the fitted rows, missing → 0 (for
        ``models.keep_order``), laid out as the column selection of the rows × KPIs matrix it replaces
        was (F), or, sampled, its row-and-column selection (C, :meth:`KPIMatrix.row_major`): the same
        bits of r @ Z in the score tests."""
        if self.pick is None:
            return zero_missing(self.Z.at(names, self.lag, self.rows))
        where = self.Z.sources(self.lag, self.rows)
        fit = np.flatnonzero(self.pick)
        return zero_missing(self.Z.row_major(names, tuple(a[fit] for a in where)))

    @property
    def pick(self) -> np.ndarray | None:
        """Which of the group's rows are kept (mask over ``rows``' rows); None when all are."""
        return self.once("pick", lambda: self.kept[self.rows] if self.sample.sampled else None)

    def fitted(self, values: np.ndarray | None) -> np.ndarray | None:
        """``values`` (one per model row, or None) on the fitted rows only."""
        pick = self.pick
        return values if values is None or pick is None else values[pick]

    def sample_of(self, outcome: str) -> RowSample:
        """The sample as seen from ``outcome``'s y: the first outcome's, or its complement (renewal = 1 − churn)."""
        return self.sample if outcome == self.group[0] else self.sample.complement()

    def link(self, outcome: str, name: str | None = None):
        """The link to fit ``outcome``'s y with on the fitted rows: ``name`` (default :data:`LINK` of the
        outcome) itself, or its sampled likelihood (:func:`cskit.sampling.fit_link`)."""
        return fit_link(name or LINK[outcome], self.sample_of(outcome))


def group_columns(panel: pd.DataFrame, Z: KPIMatrix, group: tuple[str, ...], kpis: list[str], lag: int,
                  *, drawn: tuple) -> dict:
    """What is described of the KPIs at t − lag on all of ``group``'s model rows (the "columns" step), in
    one pass over them, one column at a time (never a rows × KPIs matrix of them: 0.3 GB at 100k
    accounts): per KPI its measured rows (``counts``), its Spearman correlation with the group's first
    outcome (``spearman``; the other outcomes' are its negative: ranks of 1 − y reverse those of y) and,
    when the models' rows are a case-control sample (``drawn``: ``cskit.fits.model_rows`` of the first
    outcome), the rows it is missing in (``missing``: of all rows, and of annual contracts', for
    :func:`_full_shares`; None when the models' rows are all of them)."""
    rows, y = outcome_rows(panel, group[0], lag)
    sampled = drawn[2].sampled
    where = Z.sources(lag, rows)
    events = np.flatnonzero(np.asarray(y) > 0.5)  # indices: faster to take than a mask
    annual = np.flatnonzero(annual_rows(panel, where[0])) if sampled and "churn" in group else None
    v, by_index = np.empty(len(y)), KPIMatrix.indexed(where)
    counts, rho, gaps, annual_gaps = [], [], [], []
    for k in kpis:
        Z.gather(k, by_index, v)
        counts.append(np.count_nonzero(np.isfinite(v)))
        rho.append(spearman_binary(v, events))
        if sampled:
            gaps.append(np.count_nonzero(np.isnan(v)))
            annual_gaps.append(np.count_nonzero(np.isnan(v[annual])) if annual is not None else 0)
    return {"counts": np.array(counts, dtype="int64"), "spearman": np.array(rho, dtype="float64"),
            "missing": (np.array(gaps, dtype="int64"), np.array(annual_gaps, dtype="int64")) if sampled else None}


def _one_outcome(rs: RowSet, outcome: str, y: np.ndarray, params: Params, warnings: list[Notice]) -> dict:
    """Fit one outcome's model on its row set; return its KPI rows, its outcome row, lead–lag z and
    dropped KPIs. What depends on the rows alone comes from ``rs`` (computed once for its group);
    Spearman correlations of the group's other outcomes are minus the first outcome's (ranks of 1 − y
    reverse those of y). The group's last outcome takes what it needs out of ``rs`` and drops each
    piece once used (the candidates' values and the null design before its model is built)."""
    panel, group, rows, kpis, model_kpis, transforms = (
        rs.panel, rs.group, rs.rows, rs.kpis, rs.model_kpis, rs.transforms)
    lag, link, last = rs.lag, rs.link(outcome), outcome == rs.group[-1]
    events = _events(y)
    accounts = rs.once("accounts", lambda: _accounts(panel, rows))
    info = {"outcome": outcome, "model": MODEL[outcome], "events": events, "rows": int(rows.sum()),
            "accounts": accounts, "mde_per_sd": np.nan, "status": "fitted", "reason": ""}
    if rs.sample.sampled:
        info[FITTED_ROWS] = rs.sample.kept
    candidates = [k for k in model_kpis if k != TENURE and k in transforms]
    # rows, spearman and best_lag are of the group's other steps, filled in by combine_triggers (_described)
    base = pd.DataFrame({"kpi": kpis, "outcome": outcome, "rows": np.zeros(len(kpis), dtype="int64")})
    base["spearman"] = np.nan
    base["transform"] = [transforms[k].kind if k in transforms else "" for k in kpis]
    base["best_lag"] = np.nan
    if events < MIN_EVENTS:
        info.update(status="not_estimable", reason=Notice(
            "outcome_not_estimable", stage="triggers", outcome=outcome, events=int(events), rows=int(info["rows"]),
            min=MIN_EVENTS))
        warnings.append(Notice("outcome_too_few_events", stage="triggers", outcome=outcome, events=int(events),
                               min=MIN_EVENTS))
        return {"rows": _empty_effects(base, info["reason"]), "outcome": info, "dropped": {}}

    adjust = CHURN_ADJUST if outcome in ("churn", "renewal") else ADJUST
    y_fit = rs.fitted(y)  # y on the fitted rows (all of them unless sampled)
    X0 = rs.once("null", lambda: null_design(panel, rs.kept, transforms, adjust), last)
    Zc = rs.once("candidates", lambda: rs.candidates(candidates), last)
    order = keep_order(y_fit, X0, Zc, candidates, model_kpis, link)
    Zc = X0 = None
    sustained, choice = None, None
    if outcome in ("churn", "renewal"):  # on the fitted rows with their link, as the potential's (cskit.fits)
        sustained, choice = rs.once("sustained", lambda: sustained_rows(
            panel, rs.kept, model_kpis, lag, transforms, link=rs.link(group[0])))
    # sampled: the shares missing are of all the group's rows (combine_triggers, _full_shares), where the
    # recent mean was chosen of its values on the annual rows
    recent = rs.once("recent", lambda: _recent_gaps(rs)) if sustained is not None and rs.pick is not None else None
    seg = rs.once("segment", lambda: panel["segment"].to_numpy()[rs.kept].astype(str) if "segment" in panel else None)
    key = ("model", *order)
    if last:  # the models the group's other outcomes used are not this one's
        for other in [k for k in rs.cache if isinstance(k, tuple) and k[:1] == ("model",) and k != key]:
            del rs.cache[other]
    design, missing, tests, selected, by = rs.once(key, lambda: _model(
        rs, order, y_fit, adjust, sustained, seg, params.alpha, link, outcome), last)
    # the selection's fit is this outcome's model when it was made for it
    fit = _fit(outcome, y_fit, design, panel["account_id"].to_numpy()[rs.kept], warnings, link,
               fitted=selected if by == outcome else None)
    missing = indicator_effects(
        missing.assign(outcome=outcome), design, fit["coef"], np.sqrt(np.clip(np.diag(fit["cov"]), 0, None)))
    crit = norm.ppf(1 - params.alpha / 2) + norm.ppf(POWER)
    srs = rs.once("uniform", lambda: uniform_rows(panel, rs.kept, rs.sample, rs.seed))
    out = _effects(base, design, fit, crit, seg, srs)
    extra = _segment_rows(base, design, fit, crit, seg, srs, rs)
    out = pd.concat([out, extra], ignore_index=True) if len(extra) else out
    reported = out["se"].dropna()
    info["mde_per_sd"] = float(np.exp(crit * reported.median())) if len(reported) else np.nan
    info["model"] = fit["model"]
    dropped = {k: r for k, r in design.dropped.items() if k in kpis}
    out = {"rows": out, "outcome": info, "dropped": dropped, "structure": tests.assign(outcome=outcome),
           "missing": missing, "recent_gaps": recent}
    return out if choice is None else out | {"sustained": choice}


def _model(rs: RowSet, order: list[str], y: np.ndarray, adjust: tuple[str, ...], sustained: np.ndarray | None,
           seg: np.ndarray | None, alpha: float, link: str, outcome: str):
    """The model of the row set's outcomes on the KPI order ``order``, built for ``outcome`` (link
    ``link``): the design, its informative missing indicators (tested on the group's first outcome:
    renewal = 1 − churn, same rows), the selected curves and segment slopes. Returns the extended
    design, the missingness table, the selection's tests, the fit of the extended design and
    ``outcome`` (whose model that fit is). Only the final design is kept."""
    design = design_matrix(rs.panel, rs.kept, order, rs.lag, rs.transforms, adjust=adjust, sustained=sustained)
    first = rs.link(outcome, LINK[rs.group[0]])  # the first outcome's link, for this outcome's y on these rows
    design, missing, fit = _missingness(y, design, first, alpha, rs.group[0])
    ext, tests, ext_fit = _select(y, design, seg, alpha, link, fit if link == first else None)
    return ext, missing, tests, ext_fit, outcome


def _missingness(y: np.ndarray, design: Design, link: str, alpha: float, outcome: str):
    """:func:`cskit.models.add_informative_indicators` at the binomial GLM of ``design``: the design
    (with the informative indicators), the missingness table, and that fit when the design is
    unchanged (the fit the term selection starts from), else None."""
    fit = fit_binomial(y, design.X, link=link, names=design.names)
    new, table = add_informative_indicators(y, design, link, alpha, outcome, fit.coef)
    return new, table, fit if new is design else None


def _select(y: np.ndarray, design: Design, seg: np.ndarray | None, alpha: float, link: str, fit=None):
    """Curves and segment slopes of the flagged KPIs (:func:`cskit.models.linear_flagged`,
    :func:`cskit.models.select_terms`), on the binomial GLM of the group's first outcome (``fit`` of
    ``design`` when already fitted): renewal shares churn's rows and its answer. Returns the extended
    design (``design`` with the selected terms), the tests and its fit."""
    fit = fit if fit is not None else fit_binomial(y, design.X, link=link, names=design.names)
    ext, ext_fit, tests = select_terms(y, design, fit, linear_flagged(design, fit, alpha), seg, alpha,
                                       consume=True)  # the design is _model's own, not read after
    return ext, tests, ext_fit


def _effects(base: pd.DataFrame, design: Design, fit: dict, crit: float, seg: np.ndarray | None,
             srs: np.ndarray | None = None) -> pd.DataFrame:
    """Per KPI: log effect, SE, Wald z and p, exp(effect) with its 95% interval, MDE at 80% power.

    A KPI with a curve or segment slopes (``design.terms``) is reported by its average slope over the
    model rows (:func:`cskit.models.slope_weights`; its SE from the covariance), and its p-value is the
    joint Wald test of all its columns (any effect at all), so that BH judges the KPI as modelled; the
    average slope's own p stays as ``p_slope`` (whether the direction is supported). ``srs``: of a
    case-control sample's rows, those that are a plain random sample of the model rows
    (:func:`cskit.sampling.uniform_rows`), over which the average is taken; None: all rows."""
    coef, cov = fit["coef"], fit["cov"]
    rows = []
    for k in design.kpis:
        j = design.names.index(k)
        extra = design.kpi_terms(k)
        if not extra:
            rows.append({"kpi": k, "coef": coef[j], "se": np.sqrt(max(cov[j, j], 0.0)), "p_joint": np.nan,
                         "shape": "linear"})
            continue
        a = slope_weights(design, k, _among(design.X[:, j], srs), _among(seg, srs))
        rows.append({"kpi": k, "coef": float(a @ coef), "se": float(np.sqrt(max(a @ cov @ a, 0.0))),
                     "p_joint": joint_p(design, coef, cov, k),
                     "shape": "curve" if any(t.kind == "curve" for t in extra) else "linear"})
    est = pd.DataFrame(rows, columns=["kpi", "coef", "se", "p_joint", "shape"])
    out = base.merge(est, on="kpi", how="left")
    out["note"] = [design.dropped.get(k, "") for k in out["kpi"]]
    out["segment"] = ""
    out["shape"] = out["shape"].fillna("")
    out = _wald(out, crit)
    out["p_slope"] = out["p_value"]
    joint = out["p_joint"].notna()
    out.loc[joint, "p_value"] = out.loc[joint, "p_joint"]
    return out.drop(columns="p_joint")


def _segment_rows(base: pd.DataFrame, design: Design, fit: dict, crit: float, seg: np.ndarray | None,
                  srs: np.ndarray | None = None, rs: RowSet | None = None) -> pd.DataFrame:
    """One row per segment for each KPI whose slope differs by segment (terms kind "segment"): the
    KPI's own average slope in that segment's model rows (reference slope + its segment slope; over
    ``srs`` of them when sampled, as :func:`_effects`), and the segment's count of model rows (all of
    ``rs.rows``, not only the fitted ones)."""
    coef, cov = fit["coef"], fit["cov"]
    rows = []
    for k in design.kpis:
        if seg is None or not any(t.kind == "segment" for t in design.kpi_terms(k)):
            continue
        j = design.names.index(k)
        for level in design.adjust_levels["segment"]:
            m = seg == level
            a = slope_weights(design, k, design.X[m if srs is None else m & srs, j], seg[m if srs is None else m & srs])
            count = int(m.sum()) if srs is None else _segment_counts(rs).get(level, 0)
            rows.append({"kpi": k, "segment": level, "coef": float(a @ coef),
                         "se": float(np.sqrt(max(a @ cov @ a, 0.0))), "rows_segment": count})
    if not rows:
        return pd.DataFrame(columns=[*base.columns, "coef", "se", "note", "segment", "shape"])
    est = pd.DataFrame(rows)
    out = base.drop(columns=["rows", "spearman", "best_lag"]).merge(est, on="kpi", how="inner")
    out = out.rename(columns={"rows_segment": "rows"})
    out["spearman"], out["best_lag"] = np.nan, np.nan
    own = {(t.kpi, t.level) for t in design.terms if t.kind == "segment"}
    base = {k: sum((k, lv) not in own for lv in design.adjust_levels["segment"]) for k in out["kpi"]}
    out["note"] = ["effect shared by the segments with too few events for a slope of their own (pooled)"
                   if (k, lv) not in own and base[k] > 1 else
                   "effect within this segment (the KPI's effect differs by segment)"
                   for k, lv in zip(out["kpi"], out["segment"])]
    out["shape"] = ["curve" if any(t.kind == "curve" for t in design.kpi_terms(k)) else "linear" for k in out["kpi"]]
    out = _wald(out, crit)
    out["p_slope"] = out["p_value"]
    return out


def _among(values: np.ndarray | None, srs: np.ndarray | None) -> np.ndarray | None:
    """``values`` (one per fitted row) on the rows of ``srs`` (None: all of them)."""
    return values if values is None or srs is None else values[srs]


def _accounts(panel: pd.DataFrame, rows: np.ndarray) -> int:
    """Accounts with a row among ``rows`` (boolean mask): an account's months are contiguous panel
    rows (as :meth:`KPIMatrix.at` reads them), so each selected row whose account differs from the
    previous selected row's starts one (no hash of every id)."""
    ids = panel["account_id"].to_numpy()[rows]
    return int(len(ids) > 0) + int(np.count_nonzero(ids[1:] != ids[:-1]))


def _segment_counts(rs: RowSet) -> dict[str, int]:
    """Model rows of each segment, over all of the group's rows."""
    return rs.once("segment_counts", lambda: pd.Series(
        rs.panel["segment"].to_numpy()[rs.rows].astype(str)).value_counts().to_dict())


def _recent_gaps(rs: RowSet) -> np.ndarray:
    """Per KPI, the annual rows of the group (all of them) whose recent mean is missing, as
    :func:`cskit.models.design_matrix` reads them where ``models.sustained_rows`` chose the recent mean
    (for :func:`_full_shares`)."""
    idx = np.flatnonzero(rs.rows)
    return np.isnan(sustained_at(rs.panel, rs.kpis, rs.lag, idx[annual_rows(rs.panel, idx)])).sum(axis=0)


def _full_shares(columns: dict, rows: int, recent: np.ndarray | None, kpis: list[str]) -> dict[str, float]:
    """Share of all of the group's ``rows`` model rows in which each KPI is missing: at t − lag (counted
    by :func:`group_columns`), or, where the recent mean was chosen (``recent``: :func:`_recent_gaps`),
    its recent mean on the annual rows. The design's masks, and so the missingness table's shares, are
    the fitted rows' when those are a case-control sample, where the rare class is over-represented."""
    gaps, annual_gaps = columns["missing"]
    if recent is not None:
        gaps = gaps - annual_gaps + recent
    return dict(zip(kpis, (gaps / rows).tolist()))


def _with_shares(table: pd.DataFrame, shares: dict[str, float] | None) -> pd.DataFrame:
    """The missingness table with each KPI's ``share`` over all model rows (:func:`_full_shares`; None:
    the table's own, the fitted rows being all of them)."""
    return table if shares is None or not len(table) else table.assign(share=table["kpi"].map(shares).to_numpy())


def _wald(out: pd.DataFrame, crit: float) -> pd.DataFrame:
    out["z"] = out["coef"] / out["se"]
    out["p_value"] = 2 * norm.sf(np.abs(out["z"]))
    out["effect"] = np.exp(out["coef"])
    out["ci_low"] = np.exp(out["coef"] - Z975 * out["se"])
    out["ci_high"] = np.exp(out["coef"] + Z975 * out["se"])
    out["mde_per_sd"] = np.exp(crit * out["se"])
    return out


def _empty_effects(base: pd.DataFrame, note: str) -> pd.DataFrame:
    out = base.copy()
    for c in ("coef", "se", "z", "p_value", "effect", "ci_low", "ci_high", "mde_per_sd"):
        out[c] = np.nan
    out["note"] = note
    out["segment"], out["shape"] = "", ""
    return out


def _fit(outcome: str, y: np.ndarray, design: Design, groups: np.ndarray, warnings: list[str], link=None, *,
         fitted=None) -> dict:
    """Fit the outcome's model on ``design``; warn on non-convergence (GEE: fall back to independence).
    ``link``: :data:`LINK` of the outcome, or its sampled likelihood on a case-control sample's rows
    (``RowSet.link``; the GEE takes its offset). ``fitted``: the binomial GLM of this outcome on
    ``design`` with ``link``, already fitted (the term selection's: the same fit, not made twice)."""
    link = LINK[outcome] if link is None else link
    if outcome != "renewal":
        fit = fitted if fitted is not None else fit_binomial(y, design.X, link=link, names=design.names)
        if not fit.converged:
            warnings.append(Notice("model_not_converged", stage="triggers", outcome=outcome,
                                   iterations=int(fit.iterations)))
        return {"coef": fit.coef, "se": fit.se, "cov": fit.cov, "model": MODEL[outcome]}
    start = fitted.coef if fitted is not None else fit_binomial(y, design.X, link=link).coef
    clusters = gee_clusters(groups)  # the accounts' sums, made once for both structures
    exch = fit_gee(y, design.X, groups, "exchangeable", start=start, offset=link_offset(link), clusters=clusters)
    indep = fit_gee(y, design.X, groups, "independence", start=start, offset=link_offset(link), clusters=clusters)
    problem = _gee_problem(exch, indep)
    if problem is None:
        return {
            "coef": exch.coef,
            "se": exch.se,
            "cov": exch.cov,
            "model": MODEL[outcome] + f"; exchangeable, rho = {exch.rho:.3f}",
        }
    warnings.append(Notice("gee_fallback", stage="triggers", severity="note", problem=problem))
    return {"coef": indep.coef, "se": indep.se, "cov": indep.cov, "model": MODEL[outcome] + "; independence (fallback)"}


def _gee_problem(exch: GEEResult, indep: GEEResult) -> str | None:
    if not exch.converged:
        return f"did not converge in {exch.iterations} iterations"
    if not np.all(np.isfinite(exch.se)) or not np.isfinite(exch.rho):
        return "gave non-finite standard errors"
    if not -1 / max(exch.max_cluster - 1, 1) < exch.rho < 1:
        return f"gave an impossible correlation (rho = {exch.rho:.3f})"
    ratio = np.max(exch.se[1:] / indep.se[1:]) if len(exch.se) > 1 else 1.0
    if ratio > GEE_SE_RATIO:
        return f"gave standard errors up to {ratio:.0f} times those of the independence fit"
    return None


# ---------------------------------------------------------------------------------------------------
# Lead–lag: score tests of each KPI at lags 0–6 (the score test itself is cskit.models.score_z_from)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KPIMatrix:
    """The KPIs as the models see them, z = (f(x) − mean) / sd of the panel's values (NaN kept; NaN
    throughout for a KPI without a transform), gathered for a lag and a row set (:meth:`at`). The
    transform is applied to the gathered values, not stored for every panel row: it is elementwise, so
    the values are the same bits, and the stage holds no panel-size matrix (1.56M rows × 28 KPIs:
    0.35 GB). Ranks are those of the raw values (f is increasing), so Spearman is computed on it too."""

    columns: dict[str, np.ndarray]  # the panel's own columns (float64 views, no copy)
    transforms: dict[str, Transform]
    tenure: np.ndarray

    @classmethod
    def of(cls, panel: pd.DataFrame, kpis: list[str], transforms: dict[str, Transform]) -> KPIMatrix:
        return cls({k: panel[k].to_numpy(dtype="float64") for k in kpis}, transforms, panel["tenure"].to_numpy())

    def at(self, kpis: list[str], lag: int, rows: np.ndarray, out: np.ndarray | None = None, *,
           filled: bool = False) -> np.ndarray:
        """Values of ``kpis`` at month t − lag for the panel rows ``rows`` (boolean mask), NaN where
        t − lag is before the account's start; ``contract_months`` at t. Same as
        :func:`cskit.panel.add_lags` (panel rows are contiguous
        months per account, so month t − lag of row i is row i − lag), gathering only ``rows``.
        ``out``: an F-ordered matrix of that shape to fill (reused from one lag to the next); with
        ``filled``, missing values are 0 (:func:`cskit.models.zero_missing`, column by column while
        each is in cache)."""
        where = self.indexed(self.sources(lag, rows))
        out = np.empty((len(where[0]), len(kpis)), order="F") if out is None else out  # column by column
        for j, k in enumerate(kpis):
            self.gather(k, where, out[:, j])
            if filled:
                zero_missing(out[:, j])
        return out

    def row_major(self, kpis: list[str], where: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """:meth:`at` of ``kpis`` on the rows of ``where`` (:meth:`sources`), laid out row by row (C
        order), gathered by blocks of rows that stay in cache (not a column-major copy transposed: two
        matrices of fresh memory)."""
        out = np.empty((len(where[0]), len(kpis)))
        buf = np.empty(min(ROW_BLOCK, len(out)))
        for s in range(0, len(out), ROW_BLOCK):
            part, block = tuple(a[s : s + ROW_BLOCK] for a in where), out[s : s + ROW_BLOCK]
            for j, k in enumerate(kpis):
                block[:, j] = self.gather(k, part, buf[: len(block)])
        return out

    def sources(self, lag: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For :meth:`gather`: the panel rows ``rows`` (boolean mask) as indices, the rows their month
        t − lag is read from, and which of them are earlier than ``lag`` months into the account."""
        idx = np.flatnonzero(rows)
        early = self.tenure[idx] < lag
        return idx, np.where(early, idx, idx - lag), early

    @staticmethod
    def indexed(where: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``where`` (:meth:`sources`) with its early rows as indices rather than a mask, for a loop of
        :meth:`gather` over many KPIs: NaN written into the few early rows by index, not by a pass over
        a mask of all of them (0.5 vs 3.4 ms at 1.4M rows, per KPI)."""
        return where[0], where[1], np.flatnonzero(where[2])

    def gather(self, k: str, where: tuple[np.ndarray, np.ndarray, np.ndarray], out: np.ndarray) -> np.ndarray:
        """KPI ``k`` at t − lag on the rows of ``where`` (:meth:`sources`, or :meth:`indexed`), standardised,
        into the contiguous vector ``out``."""
        idx, src, early = where
        if k not in self.transforms:
            out[:] = np.nan
            return out
        # mode "clip": the indices are in range, and "raise" copies through a buffer (3x slower)
        np.take(self.columns[k], idx if k == TENURE else src, out=out, mode="clip")
        self.transforms[k].forward(out, out=out)
        if k != TENURE:
            out[early] = np.nan
        return out


def group_lead_lag(panel: pd.DataFrame, Z: KPIMatrix, group: tuple[str, ...], kpis: list[str],
                   transforms: dict[str, Transform], lag: int, seed: int) -> pd.DataFrame:
    """The "lead_lag" step of ``group``: :func:`lead_lag_scores` of its outcomes, adjusted as their
    models are, when their models are estimated (``MIN_EVENTS`` on the model rows at ``lag``: the
    group's outcomes share their rows and events); else no score (none is reported)."""
    if _events(outcome_rows(panel, group[0], lag)[1]) < MIN_EVENTS:
        return pd.DataFrame(columns=LEAD_LAG_COLUMNS)
    adjust = CHURN_ADJUST if group[0] in ("churn", "renewal") else ADJUST
    return lead_lag_scores(panel, Z, group, kpis, transforms, adjust, seed=seed)


def lead_lag_scores(
    panel: pd.DataFrame, Z: KPIMatrix, outcomes: tuple[str, ...], kpis: list[str], transforms: dict[str, Transform],
    adjust: tuple[str, ...] = ADJUST, *, seed: int = 0,
) -> pd.DataFrame:
    """Score z of every KPI at each lag 0..6 on the same rows (the outcome's rows with tenure ≥ 6, so
    every lag is observed and the |z| are comparable), for each of ``outcomes`` (which share their
    rows and events count, e.g. churn and renewal: each lag is gathered once for all of them).
    ``contract_months`` has no lead–lag (it is the tenure itself): it is left out, and so is a KPI the
    models leave out as rare (``Transform.rare``: too few accounts to test). Above
    ``cskit.sampling.SAMPLE_ABOVE`` rows the tests are made on a case-control sample of them
    (:func:`cskit.sampling.case_control` on the first outcome, ``seed``) with the sampled likelihood.
    """
    rows, y = outcome_rows(panel, outcomes[0], MAX_LEAD_LAG)
    use = [k for k in kpis if k != TENURE and k in transforms and not transforms[k].rare]  # as in the models
    if not use or _events(y) < MIN_EVENTS:
        return pd.DataFrame(columns=LEAD_LAG_COLUMNS)
    kept, _, sample = case_control(panel, rows, y, seed=seed)
    pick = kept[rows] if sample.sampled else slice(None)
    rows = kept
    X0 = null_design(panel, rows, transforms, adjust)
    ys = [y[pick] if outcome == outcomes[0] else outcome_rows(panel, outcome, MAX_LEAD_LAG)[1][pick]
          for outcome in outcomes]
    links = [fit_link(LINK[o], sample if o == outcomes[0] else sample.complement()) for o in outcomes]
    terms = [score_terms(y, base_fit(y, X0, link)) for link, y in zip(links, ys)]
    parts, filled = [], None
    for lag in range(MAX_LEAD_LAG + 1):  # one matrix, refilled lag after lag
        filled = Z.at(use, lag, rows, out=filled, filled=True)
        for outcome, t in zip(outcomes, terms):
            parts.append(pd.DataFrame({"kpi": use, "outcome": outcome, "lag": lag, "z": score_z_from(t, filled)}))
    return pd.concat(parts, ignore_index=True)


def _sampled_warnings(samples: dict[tuple[str, ...], RowSample]) -> list[Notice]:
    """One note (``model_rows_sampled``) per outcome group whose models were fitted on a case-control
    sample of their rows: the rows and events, the rows fitted and the share kept of the common class."""
    return [sampled_notice(sample, stage="triggers", outcomes=list(group))
            for group, sample in samples.items() if sample.sampled]


def _best_lag(lead_lag: pd.DataFrame, kpis: list[str]) -> list[float]:
    """Lag (0–6) with the largest |z|; NaN when there is none or |z| does not depend on the lag
    (a static KPI), ties to the shortest lag."""
    by_kpi: dict[str, list[float]] = {}  # each KPI's z in the table's (lag) order, in one pass
    for k, z in zip(lead_lag["kpi"].tolist(), lead_lag["z"].to_numpy(dtype="float64").tolist()):
        by_kpi.setdefault(k, []).append(z)
    out = []
    for k in kpis:
        z = np.array(by_kpi.get(k, []), dtype="float64")
        if len(z) == 0 or not np.isfinite(z).any() or np.ptp(np.abs(z[np.isfinite(z)])) < 1e-9:
            out.append(np.nan)
        else:
            out.append(float(np.nanargmax(np.abs(z))))
    return out


# ---------------------------------------------------------------------------------------------------
# Multiple testing, warnings
# ---------------------------------------------------------------------------------------------------


def _add_q_and_flags(details: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Benjamini–Hochberg q within each outcome over the KPIs with a p-value (NaN p stays NaN q)."""
    d = details.copy()
    d["q_value"] = np.nan
    for outcome in TRIGGER_OUTCOMES:
        for pooled in (True, False):  # the segment rows are their own family, beside the KPIs'
            ok = (d["outcome"] == outcome) & d["p_value"].notna() & ((d["segment"] == "") == pooled)
            if ok.any():
                d.loc[ok, "q_value"] = multipletests(d.loc[ok, "p_value"].to_numpy(), method="fdr_bh")[1]
    flagged = d["q_value"] < alpha
    d["trigger"] = np.where(flagged, d["outcome"].map(TRIGGER), "")
    d["direction"] = np.where(d["coef"] > 0, "+", np.where(d["coef"] < 0, "-", ""))
    # a curve's direction is its average slope's sign, given only where that slope is itself supported
    # (models.slope_p): the joint test that flags a curve says nothing of which way it goes
    unsure = (d["shape"] == "curve") & ~(d.get("p_slope", pd.Series(np.nan, index=d.index)) < alpha)
    d.loc[unsure, "direction"] = ""
    d["best_lag"] = d["best_lag"].astype("Float64").astype("Int64")
    return d


def _structure_warnings(details: pd.DataFrame) -> list[Notice]:
    """One notice per KPI × outcome whose effect is modelled as curved (``kpi_curve``) or as differing
    by segment (``kpi_segment_effect``, with each segment's own effect)."""
    out = []
    for r in details[(details["shape"] == "curve") & (details["segment"] == "")].itertuples():
        out.append(Notice("kpi_curve", stage="triggers", severity="note", kpi=r.kpi, outcome=r.outcome))
    seg = details[details["segment"] != ""]
    for (kpi, outcome), g in seg.groupby(["kpi", "outcome"], sort=False):
        effects = [{"segment": r.segment, "effect": float(r.effect), "ci_low": float(r.ci_low),
                    "ci_high": float(r.ci_high)} for r in g.itertuples()]
        out.append(Notice("kpi_segment_effect", stage="triggers", severity="note", kpi=kpi, outcome=outcome,
                          effects=effects))
    return out


def _dropped_warnings(dropped: dict[tuple[str, str], list[str]]) -> list[str]:
    return [Notice("kpi_left_out", stage="triggers", severity="note", kpi=k, outcomes=list(outcomes),
                   reason=reason, max_missing=MAX_MISSING)
            for (k, reason), outcomes in dropped.items()]


def missing_warnings(missing: pd.DataFrame) -> list[Notice]:
    """One notice ("missing_informative") per KPI whose missingness is informative for some outcome:
    the share missing and, per outcome, the ratio of a month without a value vs one at the mean."""
    out = []
    hit = missing[missing["informative"].astype(bool)]
    for k, g in hit.groupby("kpi", sort=False):
        effects = [{"outcome": r.outcome, "effect": float(r.effect), "ci_low": float(r.ci_low),
                    "ci_high": float(r.ci_high)} for r in g.itertuples() if np.isfinite(r.effect)]
        out.append(Notice("missing_informative", stage="triggers", kpi=k, share=float(g["share"].max()),
                          effects=effects))
    return out


def _transform_warnings(transforms: dict[str, Transform], kpis: list[str]) -> list[str]:
    logged = [k for k in kpis if k in transforms and transforms[k].kind == "log1p" and k != TENURE]
    if not logged:
        return []
    return [Notice("skewed_kpis", stage="triggers", severity="note", n=len(logged), kpis=logged)]


def _transform_frame(transforms: dict[str, Transform], kpis: list[str]) -> pd.DataFrame:
    rows = [{"kpi": k, "transform": t.kind, "mean": t.mean, "sd": t.sd} for k, t in transforms.items() if k in kpis]
    return pd.DataFrame(rows, columns=["kpi", "transform", "mean", "sd"])
