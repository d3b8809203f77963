"""Data-driven health score: model, points, tiers, out-of-time validation, and the stage that adds the
playbook and touch model (:mod:`cskit.playbook`) and the onboarding check (:mod:`cskit.checks`)
(DESIGN §5 "Health score" … "Onboarding check"; methods in docs/methods.md). The KPI forecasts behind
the score's features are :mod:`cskit.forecast`.

The score is built from a discrete-time churn hazard (binomial GLM with the cloglog link on the
at-risk account-months, KPIs at t − lag, tenure, segment and contract type; ``cskit.models``). Each
KPI's part of the linear predictor is turned into points: a KPI earns 0 points at the unhealthy end of
its range (5th or 95th percentile of its panel values) and its full points at the healthy end, linearly
on the model's scale in between; an account-context item (segment, contract type) earns its level's
points, from the level's part of cloglog P(churn within the horizon). All points sum to 100, so the
score is the model's linear predictor rescaled to 0–100 (higher = healthier), and a client can type it
into a CS platform. ``churn_prob`` is P(churn within the horizon) with each future month's hazard averaged
over the KPIs' forecast errors around their expected paths.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines.utils import concordance_index
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cskit.checks import hazard_own_effect, onboarding_check, onboarding_covariates
from cskit.client import ClientData
from cskit.errors import CskitError
from cskit.fits import Fits, ModelRows, churn_rows, model_rows, population_rates
from cskit.forecast import KpiPath, deviation_correlation, expected_cloglog, kpi_forecasts
from cskit.models import (
    CHURN_ADJUST,
    MISSING_PREFIX,
    Design,
    GLMResult,
    add_informative_indicators,
    base_fit,
    expected_indicator,
    fit_binomial,
    joint_p,
    linear_flagged,
    score_z,
    select_terms,
    separated_levels,
    slope_weights,
    with_indicators,
    with_terms,
)
from cskit.notices import Notice, records
from cskit.panel import (
    MIN_EVENTS,
    active_rows,
    annual_cycle,
    decides,
    outcome_rows,
    recent_means,
    recent_missing,
    renewal_cycles,
    renewal_evidence,
)
from cskit.parallel import one_blas_thread
from cskit.params import Params
from cskit.playbook import PLAYBOOK_COLUMNS, playbook, touch_model
from cskit.result import StageResult, six_digits, write_csv, write_json
from cskit.sampling import RowSample, sampled_notice
from cskit.season import as_text
from cskit.stats import Z975, auc_with_ci, delong, largest_remainder, wilson

RANGE_QUANTILES = (0.05, 0.95)
RED_RISK = 2.0
GREEN_RISK = 1.0
ADJUST = CHURN_ADJUST  # segment, contract type, and the calendar month where churn is seasonal
CONTEXT_KPIS = ("contract_months",)
NO_POINTS = ("churn_season",)  # adjustments every account shares in a future month: no score points
TIERS = ("red", "yellow", "green")
LEFT_OUT_MIN_POINTS = 5
LEFT_OUT_MAX_RHO = 0.2
EPV = 10  # churn events per variable (Peduzzi et al. 1996)
# Fewest churn events for a score at all: a model of the account context (segment, contract type, tenure)
# at EPV events; KPI points need the models' floor MIN_EVENTS (docs/methods.md, "Event floors").
MIN_SCORE_EVENTS = EPV
TIER_MIN_ACCOUNTS = 10  # accounts a tier needs out of time for its churn rate to enter the tier-order verdict
WEIGHT_COLUMNS = ["kpi", "points", "coefficient", "direction", "scale", "value_at_0_points",
                  "value_at_full_points", "levels"]
SCORE_COLUMNS = ["account_id", "score", "tier", "churn_prob", "account_name"]


class NotEstimable(CskitError):
    """The score's churn model cannot be fitted on these data: ``code`` is "too_few_events" (fewer than
    MIN_SCORE_EVENTS churn events in the at-risk months, with their count in ``events``) or
    "no_usable_kpi" (no KPI and no account context item varies).
    A CskitError, so a caller that does not expect it still gets a message, never a traceback."""

    def __init__(self, message: str, code: str, events: int):
        super().__init__(message)
        self.code = code
        self.events = events


# ---------------------------------------------------------------- the model and its points


@dataclass
class ScoreModel:
    """A fitted health model: the GLM, its design, the points table and the tier cut-points.

    ``weights`` has one row per score item: the KPIs (including ``contract_months``, the tenure) and
    the account-context items (``segment``, ``contract_type``: scale "category"); ``context`` holds the
    points of each level of a context item.
    """

    fit: GLMResult
    design: Design
    weights: pd.DataFrame
    lag: int
    warnings: list[str] = field(default_factory=list)
    red_below: float = float("nan")
    green_from: float = float("nan")
    base_rate: float = float("nan")
    forecast: pd.DataFrame = field(default_factory=pd.DataFrame)
    # each KPI's Persistence (None: static) on the panel the model was fitted on, from the scoring at its
    # month (score_at): scoring other months of that panel (cskit.history) reads it, not estimates it again
    persistence: dict = field(default_factory=dict)
    context: dict[str, dict[str, float]] = field(default_factory=dict)
    context_table: list[dict] = field(default_factory=list)
    basis: str = "kpis"  # "kpis" | "context_only" (no KPI the data support: segment, contract type, tenure)
    basis_reason: str | None = None  # "too_few_events" | "no_supported_kpi" when context only
    renewals: dict = field(default_factory=dict)  # cskit.panel.renewal_evidence on the rows fitted
    slopes: dict[str, float] = field(default_factory=dict)  # a curved KPI's average slope (survival_curves)
    sample: RowSample | None = None  # the rows fitted: all the at-risk months, or their case-control sample

    def kpi_names(self) -> list[str]:
        """The score's KPI items (not the account-context items)."""
        return [k for k in self.weights["kpi"] if k in self.design.transforms]

    def actionable_kpis(self) -> list[str]:
        """KPIs a CSM can move (the playbook's): every KPI item but the tenure."""
        return [k for k in self.kpi_names() if k not in CONTEXT_KPIS]

    def kpi_points(self, features: pd.DataFrame) -> pd.DataFrame:
        """Points each account earns on each KPI item (a missing KPI counts as the panel mean, z = 0) and on
        each informative missing indicator (``missing:<kpi>``: by the share of its recent months without a
        value, ``features[missing:<kpi>]``, or 1 / 0 by whether ``features[kpi]`` is empty)."""
        out = {}
        for _, w in self.weights.iterrows():
            if w.get("scale") == "missing":  # a KPI's missing indicator: points by the share of months answered
                kpi = w["kpi"].removeprefix(MISSING_PREFIX)
                share = (features[w["kpi"]] if w["kpi"] in features else features[kpi].isna()).to_numpy(dtype="float64")
                u = np.clip(share, 0.0, 1.0)
                out[w["kpi"]] = w["points"] * (1.0 - u if w["direction"] == "-" else u)
                continue
            if w["kpi"] not in self.design.transforms:
                continue
            z = self.design.transforms[w["kpi"]].forward(features[w["kpi"]].to_numpy(dtype="float64"))
            z = np.where(np.isfinite(z), z, 0.0)
            if self.design.kpi_terms(w["kpi"]):  # a curve or segment slopes: points follow the fitted part
                seg = features["segment"].astype(str).to_numpy() if "segment" in features else None
                f = self.design.contribution(self.fit.coef, w["kpi"], np.clip(z, w["z_lo"], w["z_hi"]), seg)
                share = (w["f_worst"] - f) / (w["f_worst"] - w["f_best"])
                out[w["kpi"]] = w["points"] * np.clip(share, 0.0, 1.0)
                continue
            u = np.clip((z - w["z_lo"]) / (w["z_hi"] - w["z_lo"]), 0.0, 1.0)
            out[w["kpi"]] = w["points"] * (u if w["direction"] == "+" else 1.0 - u)
        return pd.DataFrame(out, index=features.index)

    def context_points(self, features: pd.DataFrame) -> pd.DataFrame:
        """Points each account earns on each account-context item (its level's points; a level the model
        did not see counts as the item's reference level, which is how the model treats it)."""
        out = {}
        for item, levels in self.context.items():
            ref = self.design.adjust_levels[item][0]
            out[item] = _level_values(features[item], levels, levels[ref])
        return pd.DataFrame(out, index=features.index)

    def score(self, features: pd.DataFrame, points: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> np.ndarray:
        """Health score 0–100 (higher = healthier): the sum of the KPI and account-context points
        (``points``: ``kpi_points`` and ``context_points`` of ``features`` when already made)."""
        kpi, context = points if points is not None else (self.kpi_points(features), self.context_points(features))
        return _row_sums(kpi) + _row_sums(context)


def _level_values(column: pd.Series, levels: dict[str, float], default: float) -> np.ndarray:
    """``column.astype(str).map(levels).fillna(default)`` as float64: each row's level's value, ``default``
    for a level not in ``levels`` (or valued NaN there), looked up once per distinct level (its codes,
    pd.factorize, of the labels as text: :func:`cskit.season.as_text`), not row by row."""
    codes, uniques = pd.factorize(as_text(column))
    values = np.array([levels.get(u, np.nan) for u in uniques], dtype="float64")
    values[np.isnan(values)] = default
    return values[codes]


def _row_sums(frame: pd.DataFrame) -> np.ndarray:
    """``frame.sum(axis=1).to_numpy()`` of a frame of float columns: pandas' own sum of its values (the same
    array, so the same floats), without the NaN mask it makes first; where a row holds a NaN (its sum is NaN)
    pandas' sum, which skips it."""
    total = frame.values.sum(axis=1, dtype="float64")
    if np.isnan(total).any():
        return frame.sum(axis=1).to_numpy()
    return total


def fit_score_model(panel: pd.DataFrame, kpis: list[str], lag: int, alpha: float = 0.05,
                    horizon: int = 12, *, fits: Fits | None = None, seed: int = 0) -> ScoreModel:
    """The score model (:func:`select_score_model`) without its design's matrix: once fitted, nothing
    reads the model rows again (a curved KPI's slope is kept in ``slopes``), so the millions of rows are
    not held by the Health result for the rest of the run."""
    model = select_score_model(panel, kpis, lag, alpha, horizon, fits=fits, seed=seed)
    lean = replace(model.design, X=np.empty((0, model.design.X.shape[1])), missing={})
    return replace(model, design=lean)


def select_score_model(panel: pd.DataFrame, kpis: list[str], lag: int, alpha: float = 0.05,
                       horizon: int = 12, *, fits: Fits | None = None, seed: int = 0) -> ScoreModel:
    """Fit the churn hazard on all ``kpis`` (segment, contract type and any calendar season adjusted),
    keep the KPIs linked to churn (Benjamini–Hochberg q < alpha) and the tenure (``contract_months``,
    account context, kept whatever its q), refit on them and turn the coefficients into points.

    No point goes to a KPI the data cannot support: below the models' event floor
    (``cskit.panel.MIN_EVENTS``, the triggers' too) no KPI is tested at all, and when none passes the
    FDR control none is kept; the score is then one of account context only (segment, contract type,
    tenure; ``basis`` "context_only") and a notice says so.

    Before the KPIs are tested, their curves and segment-specific slopes are selected on the full
    model (:func:`cskit.models.select_terms`, as in the triggers); a KPI with such terms is tested by the
    joint Wald test of its columns (:func:`cskit.models.joint_p`) and keeps its terms in the score.

    ``fits`` (:class:`cskit.fits.Fits` of this panel): the full model's design, fit and term selection
    are the improvement potential's churn model's, shared, not made again.

    Above ``cskit.sampling.SAMPLE_ABOVE`` at-risk months every fit, test and selection here is made on
    their case-control sample (``cskit.fits.model_rows``, drawn with ``seed``, or the ``fits``' seed) with
    its sampled link: the population's coefficients, so points and probabilities read them as before."""
    fits = fits if fits is not None and fits.serves(panel, lag) else None
    seed = fits.seed if fits is not None else seed
    drawn = fits.rows("churn") if fits is not None else model_rows(panel, "churn", lag, seed=seed)
    rows, y, sample = drawn  # the rows every fit below is made on
    if sample.events < MIN_EVENTS:
        context_kpis = [k for k in kpis if k in CONTEXT_KPIS]
        return _context_only(panel, context_kpis, lag, horizon, "too_few_events", sample.events, alpha, seed=seed,
                             drawn=drawn)
    cycle = annual_cycle(panel)
    full = _fit_model(panel, kpis, lag, horizon, fits=fits, alpha=alpha, seed=seed, points=False,  # points if the score
                      cycle=cycle, drawn=drawn)
    tested = [k for k in full.design.kpis if k not in CONTEXT_KPIS]
    context = [k for k in full.design.kpis if k in CONTEXT_KPIS]
    seg = panel["segment"].astype(str).to_numpy()[rows] if "segment" in panel else None
    flagged = linear_flagged(full.design, full.fit, alpha, CONTEXT_KPIS)
    if fits is not None and not full.design.indicators:  # with an indicator the design is not the shared one
        ext, ext_fit, _ = fits.churn_selected(kpis, flagged, seg, alpha, matrix=False)
    else:
        ext, ext_fit, _ = select_terms(y, full.design, full.fit, flagged, seg, alpha)
    s = full.fit.summary().loc[tested]
    p = s["p_value"].to_numpy(dtype="float64")
    if ext.terms:
        p = np.array([joint_p(ext, ext_fit.coef, ext_fit.cov, k) for k in tested])
    thin = bool(tested) and full.fit.events < EPV * len(tested)
    method = "holm" if thin else "fdr_bh"
    q = multipletests(np.nan_to_num(p, nan=1.0), method=method)[1] if tested else np.array([])
    if thin:
        # fewer than EPV churns per KPI: the joint fit is overfitted and its p-values too small, and one
        # false KPI is a large share of a 2–3 KPI score; so a KPI must pass Holm's family-wise control
        # (not only the FDR) and also stand on its own (score test on the account-context model, Holm)
        q = np.maximum(q, screen_q(full.design, y, tested, method, link=full.fit.link))
    keep = [k for k, qk in zip(tested, q) if qk < alpha]
    if not keep:
        model = _context_only(panel, context, lag, horizon, "no_supported_kpi", int(full.fit.events), alpha,
                              seed=seed, drawn=drawn)
        model.warnings = full.warnings + model.warnings
        model.design.dropped.update(full.design.dropped)
        for k, qk in zip(tested, q):
            model.design.dropped[k] = Notice("kpi_not_linked", stage="health", severity="note", q=float(qk),
                                             alpha=alpha)
        return model
    terms = [t for t in ext.terms if t.kpi in keep]
    if len(keep) == len(tested) and not terms:
        return with_points(panel, full)
    model = _fit_model(panel, [k for k in full.design.kpis if k in keep or k in context], lag, horizon, terms=terms,
                       indicators=[k for k in full.design.indicators if k in keep], transforms=full.design.transforms,
                       seed=seed, cycle=cycle, renewals=dict(full.renewals), drawn=drawn,
                       base=fits.churn(kpis) if fits is not None else None)
    model.warnings = full.warnings + model.warnings
    model.design.dropped.update(full.design.dropped)
    for k, qk in zip(tested, q):
        if k not in keep:
            model.design.dropped[k] = Notice("kpi_not_linked", stage="health", severity="note", q=float(qk),
                                             alpha=alpha)
    for k in dict.fromkeys(t.kpi for t in terms):
        model.warnings.append(Notice("score_kpi_shape", stage="health", severity="note", kpi=k,
                                     kinds=sorted({t.kind for t in terms if t.kpi == k})))
    return model


def screen_q(design: Design, y: np.ndarray, kpis: list[str], method: str = "holm", *, link="cloglog") -> np.ndarray:
    """Adjusted p-values (``method`` of statsmodels' multipletests) of each KPI's Rao score test added
    alone to the model of the account context (intercept, tenure, segment, contract type, season): the
    check a KPI must also pass when the joint fit has too few events per KPI to trust its Wald p-values.

    Each KPI is tested on its values and on their normal scores (ranks over the model rows, Φ⁻¹((r − ½)/n)),
    and the larger p counts: with a few dozen churns, three churners with the three most extreme values of
    a noise count gave its linear score test p = 0.0003, while a KPI truly linked to churn shows the link
    in its ranks too. ``link``: the fits' (a ``cskit.sampling.SampledLink`` on a case-control sample)."""
    ctx = [j for j, n in enumerate(design.names) if n == "intercept" or n in CONTEXT_KPIS or "=" in n]
    base = base_fit(y, design.X[:, ctx], link)
    cols = design.X[:, [design.names.index(k) for k in kpis]]
    normal = stats.norm.ppf((stats.rankdata(cols, axis=0) - 0.5) / max(len(cols), 1))
    p = np.maximum(*(2 * stats.norm.sf(np.abs(np.nan_to_num(score_z(y, base, x), nan=0.0))) for x in (cols, normal)))
    return multipletests(p, method=method)[1]


def _context_only(panel: pd.DataFrame, kpis: list[str], lag: int, horizon: int, reason: str, events: int,
                  alpha: float, *, seed: int = 0, drawn: tuple | None = None) -> ScoreModel:
    """The score of account context only (segment, contract type, tenure): no KPI points. With fewer than
    EPV churns per term, the tenure slope is kept only when its Wald p < ``alpha`` (:func:`flat_in_tenure`)."""
    model = _fit_model(panel, kpis, lag, horizon, context_only=True, indicators=[], seed=seed, drawn=drawn)
    flat = flat_in_tenure(model.fit, alpha)
    if flat is not None:
        model = _fit_model(panel, [k for k in kpis if k != "contract_months"], lag, horizon, context_only=True,
                           indicators=[], seed=seed, drawn=drawn)
        model.warnings.append(flat)
    model.basis, model.basis_reason = "context_only", reason
    model.warnings.append(Notice("score_context_only", stage="health", reason_code=reason, events=events,
                                 min_events=MIN_EVENTS, alpha=alpha))
    return model


def flat_in_tenure(fit: GLMResult, alpha: float) -> Notice | None:
    """The note that the context-only score's hazard is taken flat in tenure, or None to keep the slope.

    ``churn_prob`` carries the tenure slope to tenures beyond those fitted (every account is a year
    older at the end of a 12-month horizon). Fitted on few churns, the slope is noise that this
    extrapolation amplifies: QA thin client (150 accounts, 12 months of data, 12 churns), slope +0.40
    per SD (SE 0.42, p = 0.33) against a truly falling hazard, mean churn_prob 2.1× the truth for the
    monthly accounts. So with fewer than EPV churns per term (Peduzzi et al. 1996) and p ≥ ``alpha`` the
    slope is left out (the potential, below the models' floor, uses a flat rate too); kept when it is
    the only term (nothing else to fit)."""
    names = list(fit.names)
    if "contract_months" not in names or len(names) <= 2 or fit.events >= EPV * (len(names) - 1):
        return None
    p = float(fit.summary().loc["contract_months", "p_value"])
    if p < alpha:
        return None
    return Notice("score_tenure_flat", stage="health", severity="note", events=int(fit.events),
                  terms=len(names) - 1, p_value=p, alpha=alpha, epv=EPV)


def _fit_model(panel: pd.DataFrame, kpis: list[str], lag: int, horizon: int, terms=(),
               context_only: bool = False, fits: Fits | None = None, *, alpha: float = 0.05,
               indicators: list[str] | None = None, transforms: dict | None = None, seed: int = 0,
               points: bool = True, cycle: int | None = None, renewals: dict | None = None,
               drawn: tuple | None = None, base: ModelRows | None = None) -> ScoreModel:
    """The score's churn hazard on ``kpis`` (with ``terms``). A KPI whose missingness is informative
    (:func:`cskit.models.informative_missing`, the triggers' and the potential's test, at ``alpha``) gets
    its missing indicator, as in those models; ``indicators`` (the KPIs flagged in the full model) skips
    the test and adds theirs. ``transforms``: the KPIs' transforms on ``panel`` when already fitted.
    The rows are ``cskit.fits.churn_rows``' (a case-control sample above its threshold, ``seed``;
    ``drawn``: ``cskit.fits.model_rows`` when already drawn), every fit with their link. ``points=False``:
    no points yet (:func:`with_points` adds them). ``cycle``, ``renewals``: ``annual_cycle(panel)`` and
    ``renewal_evidence(panel, lag)`` when already made. ``base``: the full model's rows and design (``Fits.churn``
    of every KPI) of which the refit on ``kpis`` takes its columns (:func:`kept_columns`), not a design of its own."""
    if fits is not None:
        m = fits.churn(kpis)
    elif base is not None and not base.design.terms and not base.design.indicators:
        m = kept_columns(base, kpis)
    else:
        m = churn_rows(panel, kpis, lag, transforms, seed=seed, drawn=drawn)
    y, design = m.y, m.design
    if indicators is None:
        if design.kpis and y.sum() >= MIN_EVENTS:
            first = fits.churn_fit(kpis).coef if fits is not None else None
            design, _ = add_informative_indicators(y, design, m.link, alpha, "churn", first)
    elif indicators:
        design = with_indicators(design, [k for k in indicators if k in design.missing])
    design = population_rates(design, m)
    if terms:
        seg = panel["segment"].astype(str).to_numpy()[m.rows] if "segment" in panel else None
        design = with_terms(design, [t for t in terms if t.kpi in design.kpis], seg)
    if y.sum() < (MIN_SCORE_EVENTS if context_only else MIN_EVENTS):
        raise NotEstimable(
            f"Health score: table 'accounts' has only {int(y.sum())} churned accounts in the months used "
            f"(at least {MIN_SCORE_EVENTS} are needed to learn what predicts churn). Provide a longer history "
            "(more months of revenue and KPIs) or more accounts.",
            "too_few_events", int(y.sum()),
        )
    if not design.kpis and not (context_only and design.X.shape[1] > 1):
        raise NotEstimable(
            "Health score: no usable KPI (all constant, mostly missing or collinear): "
            f"{design.dropped}. Check the 'kpis' table.",
            "no_usable_kpi", int(y.sum()),
        )
    shared = fits is not None and design.names == m.design.names  # no term added: the shared first fit
    fit = fits.churn_fit(kpis) if shared else fit_binomial(y, design.X, link=m.link, names=design.names)
    values, table = context_values(design, fit, horizon, annual_cycle(panel) if cycle is None else cycle)
    warnings = []
    renewals = renewal_evidence(panel, lag) if renewals is None else renewals
    if not renewals["estimable"]:  # the term contracts' renewal hazard is not in the data: no points, no probability
        values.pop("contract_type", None)
    for item in separated_levels(design, y):
        if item in NO_POINTS or (item == "contract_type" and not renewals["estimable"]):
            continue  # a calendar month without churn: no points either way; renewals: said above
        values.pop(item, None)
        warnings.append(Notice("context_item_separated", stage="health", item=item,
                               levels=list(separated_levels(design, y)[item])))
    for item, levels in design.pooled.items():  # merged into the reference level (models.pool_separated)
        churns = int(y[np.isin(panel[item].astype(str).to_numpy()[m.rows], levels)].sum())
        warnings.append(Notice("context_level_pooled", stage="health", item=item, levels=list(levels),
                               reference=design.adjust_levels[item][0],
                               kind="no_churn" if churns == 0 else "all_churn"))
    model = ScoreModel(fit, design, pd.DataFrame(), lag, warnings=warnings, context=values, context_table=table,
                       renewals=renewals, slopes=curve_slopes(design, fit), sample=m.sample)
    return with_points(panel, model) if points else model


def kept_columns(m: ModelRows, kpis: list[str]) -> ModelRows:
    """The refit's rows and design after the KPI selection: ``m`` (the full model's, ``cskit.fits.churn_rows``)
    with its columns of ``kpis`` (a subset of its KPIs, in its order) and of every adjustment. The same rows,
    transforms, sustained-usage rows and collinearity pruning as the model the KPIs were selected in
    (docs/methods.md, "Selecting KPIs"): a subset of KPIs that passed the full model's prunings passes
    them again, so the refit's own design would be these columns, built a second time."""
    d = m.design
    names = ["intercept", *kpis, *d.names[1 + len(d.kpis):]]
    X = d.X.take([d.names.index(n) for n in names], axis=1)  # a copy, C-ordered as design_matrix makes it
    design = replace(d, X=X, names=names, kpis=list(kpis), transforms={k: d.transforms[k] for k in kpis},
                     dropped={}, missing={k: v for k, v in d.missing.items() if k in kpis})
    return m.shared(design)


def with_points(panel: pd.DataFrame, model: ScoreModel) -> ScoreModel:
    """The model of ``_fit_model(points=False)`` with its points (:func:`_points`), from the levels'
    horizon values it holds in ``context`` until then: the full model's points (a quantile pass over
    every KPI's panel values) are made only when it is the score."""
    weights, context = _points(panel, model.design, model.fit, model.context)
    for rec in model.context_table:
        rec["points"] = context.get(rec["item"], {}).get(rec["level"])
    return replace(model, weights=weights, context=context)


def _sampled(model: ScoreModel) -> bool:
    """Whether ``model`` was fitted on a case-control sample of its rows (``cskit.sampling``)."""
    return model.sample is not None and model.sample.sampled


def renewal_notice(renewals: dict) -> Notice:
    """The coded notice that the term contracts' churn probability at renewal cannot be told from the
    data (``cskit.panel.renewal_evidence``: too few renewal decisions observed)."""
    return Notice("renewal_not_observed", stage="health", accounts=renewals["accounts"], cycle=renewals["cycle"],
                  decisions=renewals["decisions"], churns=renewals["churns"], renewals=renewals["renewals"],
                  min_events=renewals["min_events"])


def curve_slopes(design: Design, fit: GLMResult) -> dict[str, float]:
    """Each curved KPI's average slope per SD over its 1st–99th percentiles on the model rows
    (``models.slope_weights``): how far its forecast error moves the linear predictor."""
    out = {}
    for k in design.kpis:
        if len(design.X) and design.kpi_terms(k) and all(t.kind == "curve" for t in design.kpi_terms(k)):
            out[k] = float(slope_weights(design, k, design.X[:, design.names.index(k)]) @ fit.coef)
    return out


def context_values(design: Design, fit: GLMResult, horizon: int,
                   cycle: int = 12) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Each account-context level's part of cloglog P(churn within ``horizon``), relative to the item's
    reference level (docs/methods.md, "Points").

    With the KPIs held constant, cloglog P(churn within H) = KPI part + log Σ_h exp(level terms of
    month h) over the months h in which the account can churn. A segment level adds its coefficient;
    a contract type adds its coefficient + log(expected number of churn decisions in the horizon):
    H for monthly contracts, H/c for annual ones, c = their renewal cycle read by the panel
    (``cskit.panel.renewal_cycle``: they decide at renewals only).
    """
    coef = dict(zip(fit.names, fit.coef))
    values, table = {}, []
    for item, levels in design.adjust_levels.items():
        if len(levels) < 2 or item in NO_POINTS:
            continue
        v = {}
        for lv in levels:
            beta = float(coef.get(f"{item}={lv}", 0.0))
            decisions = (horizon / cycle if lv == "annual" else float(horizon)) if item == "contract_type" else 1.0
            v[lv] = beta + float(np.log(decisions))
            table.append({"item": item, "level": lv, "coefficient": beta, "decisions_in_horizon": decisions,
                          "horizon_value": v[lv]})
        values[item] = v
    return values, table


def _points(panel: pd.DataFrame, design: Design, fit: GLMResult,
            context: dict[str, dict[str, float]]) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Points per item, scaled to sum to 100: a KPI's raw weight is |β| × its 5–95% spread on the model
    scale; a context item's is the spread of its levels' values (``context_values``: highest- minus
    lowest-risk level). A level earns the item's points × (highest-risk value − its value) / spread."""
    recs = []
    for j, k in enumerate(design.kpis, start=1):
        tr = design.transforms[k]
        z = tr.forward(panel[k].to_numpy(dtype="float64"))
        z = z[np.isfinite(z)]
        lo, hi = np.quantile(z, RANGE_QUANTILES)
        if hi <= lo:
            lo, hi = z.min(), z.max()
        if design.kpi_terms(k):
            recs.append(_shaped_points(design, fit, k, lo, hi))
            continue
        beta = float(fit.coef[j])
        recs.append({"kpi": k, "coefficient": beta, "z_lo": lo, "z_hi": hi, "raw": abs(beta) * (hi - lo),
                     "direction": "+" if beta < 0 else "-", "scale": tr.kind, "levels": "",
                     "value_at_0_points": tr.inverse(lo if beta < 0 else hi),
                     "value_at_full_points": tr.inverse(hi if beta < 0 else lo)})
    for k in design.indicators:  # informative missingness: a share of months without a value, 0 to 1
        gamma = float(fit.coef[design.indicator_column(k)])
        recs.append({"kpi": MISSING_PREFIX + k, "coefficient": gamma, "z_lo": 0.0, "z_hi": 1.0, "raw": abs(gamma),
                     "direction": "-" if gamma > 0 else "+", "scale": "missing", "levels": "",
                     "value_at_0_points": 1.0 if gamma > 0 else 0.0, "value_at_full_points": 0.0 if gamma > 0 else 1.0})
    for item, v in context.items():
        spread = max(v.values()) - min(v.values())
        if spread <= 0:
            continue
        recs.append({"kpi": item, "coefficient": spread, "z_lo": np.nan, "z_hi": np.nan, "raw": spread,
                     "direction": "level", "scale": "category", "levels": "",
                     "value_at_0_points": np.nan, "value_at_full_points": np.nan})
    w = pd.DataFrame(recs)
    w["points"] = largest_remainder(w["raw"].to_numpy())
    levels = {}
    for i, r in w[w["scale"] == "category"].iterrows():
        v = context[r["kpi"]]
        worst, spread = max(v.values()), r["coefficient"]
        levels[r["kpi"]] = {lv: float(round(r["points"] * (worst - x) / spread, 1)) for lv, x in v.items()}
        order = sorted(levels[r["kpi"]].items(), key=lambda t: (t[1], t[0]))
        w.loc[i, "levels"] = "; ".join(f"{lv}={_points_text(pt)}" for lv, pt in order)
    w = w.sort_values(["points", "kpi"], ascending=[False, True], kind="stable").reset_index(drop=True)
    for c in ("f_worst", "f_best"):
        if c not in w:
            w[c] = np.nan
    return w[WEIGHT_COLUMNS + ["z_lo", "z_hi", "f_worst", "f_best"]], levels


CURVE_GRID = 201


def _shaped_points(design: Design, fit: GLMResult, k: str, lo: float, hi: float) -> dict:
    """The points record of a KPI with a curve or segment slopes: f = its part of the linear predictor
    on a grid of its 5–95% range (per segment level when its slope differs by segment); its raw weight
    is max f − min f (the spread the KPI can move, as |β| × range for a line); an account earns its
    points × (max f − f(z, segment)) / spread, so a value past a threshold (flat curve) earns as much
    as any other value past it, and a segment where the KPI does nothing gives everyone the same."""
    grid = np.linspace(lo, hi, CURVE_GRID)
    levels = design.adjust_levels.get("segment", [None]) if any(
        t.level for t in design.kpi_terms(k)) else [None]
    f = np.vstack([design.contribution(fit.coef, k, grid, None if lv is None else np.full(len(grid), lv))
                   for lv in levels])
    worst, best = float(f.max()), float(f.min())
    tr = design.transforms[k]
    w_col = np.unravel_index(int(np.argmax(f)), f.shape)[1]
    b_col = np.unravel_index(int(np.argmin(f)), f.shape)[1]
    kinds = sorted({t.kind for t in design.kpi_terms(k)})
    slope = float(np.mean(f[:, -1] - f[:, 0]))
    return {"kpi": k, "coefficient": slope / (hi - lo), "z_lo": lo, "z_hi": hi,
            "raw": worst - best, "direction": "+" if slope < 0 else "-", "scale": tr.kind,
            "levels": " + ".join(kinds), "value_at_0_points": tr.inverse(grid[w_col]),
            "value_at_full_points": tr.inverse(grid[b_col]), "f_worst": worst, "f_best": best}


def _points_text(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def survival_curves(model: ScoreModel, base: pd.DataFrame, features: pd.DataFrame, months: int,
                    paths: dict[str, KpiPath] | None = None, corr: pd.DataFrame | None = None) -> np.ndarray:
    """S_i(h), h = 1..months, for accounts with ``base`` (tenure, contract_type, segment) and KPIs on
    their expected paths (``paths``, month by month) or, for KPIs without a path, held at ``features``
    (the forecast means); tenure moves; annual accounts can churn only at renewals (``renewal_cycle``).

    The KPIs of a future month are not known, only forecast: month h's hazard is averaged over
    η_h ~ Normal(x_h'β, Σ_kl β_k β_l c_kl s_k s_l), s_k² = the forecast-error variance of KPI k
    (``KpiPath.error_var``), c = ``corr`` (identity when None), by Gauss–Hermite quadrature
    (``expected_cloglog``). S(h) = Π (1 − E p_h), the marginal average per month (docs/methods.md).
    """
    d = model.design
    paths = paths or {}
    coef = dict(zip(d.names, model.fit.coef))
    # a curved KPI's forecast error moves η by its average slope, not by its line's β
    coef |= model.slopes or curve_slopes(d, model.fit)
    uncertain = [k for k in d.names if k in paths]
    c = np.eye(len(uncertain)) if corr is None else (
        corr.reindex(index=uncertain, columns=uncertain).fillna(0.0).to_numpy())
    np.fill_diagonal(c, 1.0)
    b = np.array([coef[k] for k in uncertain])
    tenure = base["tenure"].to_numpy(dtype="float64")
    cycle = renewal_cycles(base)

    memo: dict[str, np.ndarray] = {}

    def column(name: str, h: int) -> np.ndarray:
        if name == "intercept":
            return np.ones(len(base))
        if name == "contract_months":
            return d.transforms[name].forward(tenure + h)
        if name in paths:
            return paths[name].at(h, model.lag)
        if name.startswith(MISSING_PREFIX):  # a missing indicator: its expected part of the log-hazard, from the
            kpi = name.removeprefix(MISSING_PREFIX)  # account's recent share while the KPI month is observed (h ≤ lag),
            rate = (features[name].to_numpy(dtype="float64") if h <= model.lag  # then how often gaps happen
                    else d.missing_rate.get(kpi, 0.0))
            return np.broadcast_to(expected_indicator(coef[name], rate), (len(base),)).astype("float64")
        if name in d.transforms:
            return d.transforms[name].forward(features[name].to_numpy(dtype="float64"))
        term = next((t for t in d.terms if t.name == name), None)
        if term is not None:
            seg = base["segment"].astype(str).to_numpy() if "segment" in base else None
            z = column(term.kpi, h)
            return term.values(np.where(np.isfinite(z), z, 0.0), seg)
        a, v = name.split("=", 1)
        if a == "churn_season":  # the calendar month of future month h
            if "calendar" not in memo:  # the rows' calendar months, read once for every month and dummy
                memo["calendar"] = base["month"].dt.month.to_numpy()
            return ((memo["calendar"] - 1 + h) % 12 + 1 == int(v)).astype("float64")
        return (base[a].astype(str).to_numpy() == v).astype("float64")

    def moves(name: str) -> bool:  # whether column(name, h) depends on h (in column's order of cases)
        if name == "intercept":
            return False
        if name == "contract_months" or name in paths or name.startswith(MISSING_PREFIX):
            return True
        if name in d.transforms:
            return False
        term = next((t for t in d.terms if t.name == name), None)
        return moves(term.kpi) if term is not None else name.split("=", 1)[0] == "churn_season"

    # one design of the months' columns, C-ordered as column_stack makes it (the same X @ β): the columns
    # the same in every month are filled once, the others overwritten month by month
    X = np.empty((len(base), len(d.names)))
    moving = []
    for j, n in enumerate(d.names):
        if moves(n):
            moving.append((j, n))
        else:
            X[:, j] = column(n, 1)
    X[~np.isfinite(X)] = 0.0
    S = np.ones(len(base))
    out = np.empty((len(base), months))
    sds = [np.sqrt(paths[k].error_vars(months, model.lag)) for k in uncertain]
    for h in range(1, months + 1):
        for j, n in moving:
            x = column(n, h)
            X[:, j] = np.where(np.isfinite(x), x, 0.0)
        sd = np.column_stack([v[:, h - 1] for v in sds]) if uncertain else None
        var = np.einsum("ik,kl,il->i", sd * b, c, sd * b) if uncertain else np.zeros(len(base))
        p = expected_cloglog(X @ model.fit.coef, var)
        p = np.where(decides(tenure + h, cycle), p, 0.0)
        S = S * (1 - p)
        out[:, h - 1] = S
    return out


def tier_cutpoints(scores: np.ndarray, churn_prob: np.ndarray) -> dict[str, float]:
    """Cut-points on the score (``red_below``, ``green_from``) and the ``base_rate``: green from the
    score at which a typical account's churn probability equals the base rate (mean probability), red
    below the score at which it is twice the base rate.

    "Typical" is the least-squares line of cloglog(probability) on score over the scored accounts: with
    the cloglog hazard, cloglog P(churn within H) is linear in the KPI linear predictor, hence in the score.
    """
    if not len(churn_prob):
        return {"red_below": 0.0, "green_from": 0.0, "base_rate": float("nan")}
    base = float(np.mean(churn_prob))
    c = np.log(-np.log1p(-np.clip(churn_prob, 1e-9, 1 - 1e-9)))
    if np.ptp(scores) <= 0:
        return {"red_below": 0.0, "green_from": 0.0, "base_rate": base}
    slope, icept = np.polyfit(scores, c, 1)

    def at(p: float) -> float:
        return (np.log(-np.log1p(-min(p, 1 - 1e-9))) - icept) / slope

    red = float(np.clip(np.round(at(RED_RISK * base)), 0, 100)) if slope < 0 else 0.0
    green = float(np.clip(np.round(at(GREEN_RISK * base)), 0, 100)) if slope < 0 else 0.0
    return {"red_below": red, "green_from": max(green, red), "base_rate": base}


_TIER_NAMES = np.array(["red", "yellow", "green"], dtype=object)


def tiers(model: ScoreModel, scores: np.ndarray) -> np.ndarray:
    """Each score's tier: "red" below ``red_below``, "green" from ``green_from``, "yellow" between (an
    object array of the names, as a frame's column holds them: no conversion of a string array)."""
    which = np.where(scores < model.red_below, 0, np.where(scores >= model.green_from, 2, 1))
    return _TIER_NAMES[which]


# ---------------------------------------------------------------- scoring the accounts active at a month


@dataclass
class Scored:
    frame: pd.DataFrame  # account_id, tenure, contract_type, segment, KPI features, score, tier, churn_prob
    model: ScoreModel
    also: pd.DataFrame | None = None  # score_at(also=): account_id, month, score of the accounts active then


def score_rows(past: pd.DataFrame, model: ScoreModel, rows: np.ndarray, horizon: int, lag: int,
               paths: dict[str, KpiPath] | None = None, *, persistence: dict | None = None,
               points: list | None = None, deviations: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The score ``model`` gives the selected rows of ``past`` (the panel up to the scoring month): each
    KPI's forecast from the account's values up to its row (``kpi_forecasts``), the row's context
    (tenure, contract type, segment) and the score (0.1 points). One rule for the snapshot
    (:func:`score_at`) and the score history (``cskit.history``). Returns (frame, forecast parameters).
    ``persistence``: the KPIs' persistence on ``past`` (``forecast.kpi_paths``), read and filled; ``points``
    (a list) receives the rows' ``kpi_points`` and ``context_points`` the score is the sum of; ``deviations``
    (a dict) the KPIs' within-account deviations where their persistence is estimated (``forecast.kpi_paths``)."""
    feats, forecast = kpi_forecasts(past, model.kpi_names(), rows, model.design.transforms, horizon, lag, paths,
                                    persistence=persistence, deviations=deviations)
    frame = feats  # a frame of its own (kpi_forecasts'): the rows' context joins it column by column, not copied
    for c in ("tenure", "contract_type", "segment", "renewal_cycle", "month"):
        frame[c] = past[c].to_numpy()[rows]
    for k, share in recent_missing(past, model.design.indicators, rows).items():
        frame[MISSING_PREFIX + k] = share
    pts = (model.kpi_points(frame), model.context_points(frame))
    if points is not None:
        points.extend(pts)
    frame["score"] = np.round(model.score(frame, pts), 1)
    return frame, forecast


def months_upto(panel: pd.DataFrame, month: pd.Timestamp, columns: list[str] | None = None) -> pd.DataFrame:
    """The panel rows up to ``month`` (index 0..n−1): the panel itself, not a copy, when it has no later
    row (``month`` = as_of: a copy of millions of rows saved); else a copy of those rows, of ``columns``
    only when given (those a reader needs, e.g. :func:`scoring_columns`)."""
    later = (panel["month"] > month).to_numpy()
    if not later.any() and panel.index.equals(pd.RangeIndex(len(panel))):
        return panel
    if columns is not None:
        return renumbered(panel.loc[~later, columns])
    return renumbered(panel.take(np.flatnonzero(~later)))


def renumbered(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (a fresh copy: a take or a selection) with the index 0..n−1, set in place:
    ``reset_index(drop=True)`` would copy every column again (a second copy of millions of rows)."""
    frame.index = pd.RangeIndex(len(frame))
    return frame


SCORED_CONTEXT = ("account_id", "month", "tenure", "churn", "mrr", "contract_type", "segment", "renewal_cycle")


def scoring_columns(panel: pd.DataFrame, model: ScoreModel) -> list[str]:
    """The columns of ``panel`` that :func:`score_rows` reads to score rows with ``model`` (and
    ``panel.active_rows`` to select them): the rows' context and the model's KPIs and indicators."""
    wanted = dict.fromkeys([*SCORED_CONTEXT, *model.kpi_names(), *model.design.indicators])
    return [c for c in wanted if c in panel]


def score_at(panel: pd.DataFrame, kpis: list[str], lag: int, month: pd.Timestamp, horizon: int,
             alpha: float = 0.05, *, fits: Fits | None = None, seed: int = 0,
             also: pd.Timestamp | None = None) -> Scored:
    """Fit on the panel rows up to ``month`` and score the accounts active at ``month`` (``fits``: the
    run's shared fits, used when ``month`` leaves the panel whole; ``seed``: the case-control samples'
    otherwise). The fit may use a sample of the rows; the scores and probabilities are every account's.

    ``also`` (an earlier month): the model's scores of the accounts active then too (``Scored.also``),
    from the same pass over the panel: what ``cskit.history.score_history`` of this model at
    [``also``, ``month``] gives (each row's score reads its own account's months only), for the drop check."""
    past = months_upto(panel, month)
    model = fit_score_model(past, kpis, lag, alpha, horizon, fits=fits, seed=seed)
    rows = active_rows(past, month)
    extra = active_rows(past, also) if also is not None and pd.Timestamp(also) != pd.Timestamp(month) else None
    extra = extra if extra is not None and extra.any() else None
    paths: dict[str, KpiPath] = {}
    persistence: dict = {}
    deviations: dict = {}  # made with the KPIs' persistence, correlated below (deviation_correlation)
    if extra is None:
        frame, forecast = score_rows(past, model, rows, horizon, lag, paths, persistence=persistence,
                                     deviations=deviations)
        earlier = None
    else:  # one scoring of both months' rows (in panel order), split: the rows of ``month`` go on below
        both, forecast = score_rows(past, model, rows | extra, horizon, lag, paths, persistence=persistence,
                                    deviations=deviations)
        at = rows[rows | extra]
        frame = renumbered(both.take(np.flatnonzero(at)))
        earlier = both.loc[~at, ["account_id", "month", "score"]]
        earlier = renumbered(by_account(earlier))
        paths = {k: path.subset(at) for k, path in paths.items()}
        del both
    base = frame[["tenure", "contract_type", "segment", "renewal_cycle", "month"]]
    corr = deviation_correlation(past, list(paths), model.design.transforms, deviations=deviations)
    del deviations
    frame["churn_prob"] = 1 - survival_curves(model, base, frame, horizon, paths, corr)[:, -1]
    if not model.renewals.get("estimable", True):  # not a finding: the data hold too few renewals
        frame.loc[frame["contract_type"].astype(str).to_numpy() != "monthly", "churn_prob"] = np.nan
    known = np.isfinite(frame["churn_prob"].to_numpy())
    cut = tier_cutpoints(frame["score"].to_numpy()[known], frame["churn_prob"].to_numpy()[known])
    model = replace(model, forecast=forecast, persistence=persistence, **cut)  # a completed one; the fit unchanged
    frame["tier"] = tiers(model, frame["score"].to_numpy())
    return Scored(renumbered(by_account(frame)), model, earlier)


def by_account(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame.sort_values("account_id", kind="stable")``: ``frame`` itself when its rows are in that order
    already (the panel's rows are sorted by account: no sort of the ids, no copy of the columns)."""
    if frame["account_id"].is_monotonic_increasing:
        return frame
    return frame.sort_values("account_id", kind="stable")


# ---------------------------------------------------------------- validation


VALIDATION_HORIZONS = (6, 3)  # shorter out-of-time checks, in this order, when the data do not hold the horizon's


def validation_horizon(panel: pd.DataFrame, as_of: pd.Timestamp, horizon: int, lag: int) -> int:
    """Months ahead the out-of-time check predicts: ``horizon`` when the at-risk months up to
    as_of − horizon hold at least MIN_EVENTS churns (the floor below which no KPI gets points), else
    the first of VALIDATION_HORIZONS (shorter than ``horizon``) for which they do, else ``horizon`` (and
    the check reports itself not estimable). The peer client's data span 12 months: a 12-month check
    would fit on nothing (cut before the first month); a 6-month one fits on the first 6 months (~300
    churns) and checks the next 6 (docs/methods.md, "Out-of-time validation")."""
    rows, y = outcome_rows(panel, "churn", lag)
    month = panel["month"].to_numpy()[rows]
    for h in (horizon, *(h for h in VALIDATION_HORIZONS if h < horizon)):
        cut = np.datetime64(pd.Timestamp(as_of) - pd.DateOffset(months=h))
        if y[month <= cut].sum() >= MIN_EVENTS:
            return h
    return horizon


def outcome_after(panel: pd.DataFrame, accounts: pd.Series, month: pd.Timestamp, horizon: int) -> pd.DataFrame:
    """For each account: churned within ``horizon`` months after ``month`` (event) and months to churn
    (censored at the horizon), from the panel's churn rows."""
    ch = panel.loc[panel["churn"] == 1, ["account_id", "month"]]
    gap = (ch["month"].dt.year - month.year) * 12 + ch["month"].dt.month - month.month
    when = pd.Series(gap.to_numpy(), index=ch["account_id"].to_numpy())
    t = accounts.map(when).to_numpy(dtype="float64")
    event = (t >= 1) & (t <= horizon)
    return pd.DataFrame({"event": event.astype(int), "time": np.where(event, t, horizon)})


def rate_table(group: pd.Series, event: np.ndarray, order: list, name: str) -> pd.DataFrame:
    """Churn rate with Wilson 95% interval per group."""
    recs = []
    for g in order:
        m = (group == g).to_numpy()
        k, n = int(event[m].sum()), int(m.sum())
        lo, hi = wilson(k, n)
        recs.append({name: g, "n": n, "churned": k, "churn_rate": k / n if n else np.nan, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(recs)


def deciles(values: np.ndarray) -> np.ndarray:
    """Decile 1..10 of ``values`` (1 = lowest); ties broken by position for a deterministic split."""
    ranks = stats.rankdata(values, method="ordinal")
    return np.minimum(10, (ranks - 1) * 10 // len(values) + 1).astype(int)


HARRELL_GROUPS = 64  # distinct exit times up to which harrell_c counts the pairs by time group


def harrell_c(time: np.ndarray, score: np.ndarray, event: np.ndarray) -> float:
    """Harrell's concordance index of ``score`` (higher = longer survival) with the exit ``time`` and
    ``event`` flag: lifelines' ``concordance_index``, its pairs counted by exit-time group with sorted
    searches instead of its binary tree one account at a time (the same counts, so the same float).

    An account that churned at time τ is compared with every account that churned before τ (correct
    when that one's score is lower, half when equal), an account censored at τ with every account that
    churned at or before τ (Harrell et al. 1996); C = (correct + ties / 2) / pairs. The validation's
    times are months 1..horizon, a few groups; with more than HARRELL_GROUPS distinct times lifelines'
    own routine counts them."""
    t, s, e = (np.asarray(a, dtype="float64").ravel() for a in (time, score, event))
    if not (t.shape == s.shape == e.shape):
        raise ValueError("time, score and event must have the same length")
    if np.isnan(t).any() or np.isnan(s).any() or np.isnan(e).any():
        raise ValueError("NaNs detected in inputs, please correct or drop.")
    times = np.unique(t)
    if len(times) > HARRELL_GROUPS:
        return concordance_index(t, s, e)
    died = e.astype(bool)
    correct, tied, pairs = np.int64(0), np.int64(0), np.int64(0)
    pool = np.empty(0)  # scores of the accounts that churned before the current time, sorted
    for tau in times:
        at = t == tau
        gone = at & died
        for group in (gone, at & ~died):  # the churned first, then the censored (compared with those too)
            if group.any() and len(pool):
                x = s[group]
                lo, hi = np.searchsorted(pool, x, "left"), np.searchsorted(pool, x, "right")
                correct += np.int64(lo.sum())
                tied += np.int64((hi - lo).sum())
                pairs += np.int64(len(pool) * len(x))
            if group is gone and gone.any():
                pool = np.sort(np.concatenate([pool, s[gone]]))
    if pairs == 0:
        raise ZeroDivisionError("No admissable pairs in the dataset.")
    return (correct + tied / 2) / pairs


def validate(frame: pd.DataFrame, out: pd.DataFrame, client_score: pd.Series | None) -> dict:
    """AUC (DeLong CI), concordance, churn by tier and decile, calibration, and the client's score beside."""
    y, t = out["event"].to_numpy(), out["time"].to_numpy()
    s, p = frame["score"].to_numpy(), frame["churn_prob"].to_numpy()
    known = np.isfinite(p)  # accounts with a churn probability (not the term contracts without renewals seen)
    res = {
        "n_accounts": int(len(y)),
        "n_churned": int(y.sum()),
        "observed_rate": float(y.mean()) if len(y) else None,
        "predicted_rate": float(p[known].mean()) if known.any() else None,
    }
    if not known.all():  # the churn probability's checks are on the accounts that have one
        res["with_churn_prob"] = {"n_accounts": int(known.sum()), "n_churned": int(y[known].sum()),
                                  "observed_rate": float(y[known].mean()) if known.any() else None}
    if y.sum() == 0 or y.sum() == len(y):
        res["status"] = "not_estimable"
        res["reason"] = "no churn (or only churn) in the validation window: AUC is undefined"
        res["reason_code"] = "no_churn_contrast"
        return res
    res["status"] = "fitted"
    res["score"] = {
        **auc_with_ci(y, -s),
        "concordance": float(harrell_c(t, s, y)),
    }
    yk, pk = y[known], p[known]
    res["churn_prob_auc"] = auc_with_ci(yk, pk) if 0 < yk.sum() < len(yk) else None
    res["by_tier"] = rate_table(frame["tier"], y, list(TIERS), "tier").to_dict("records")
    dec = pd.Series(deciles(s))
    res["by_decile"] = rate_table(dec, y, list(range(1, 11)), "decile").to_dict("records")
    pdec = pd.Series(deciles(pk)) if len(pk) else pd.Series([], dtype=int)
    cal = rate_table(pdec, yk, list(range(1, 11)), "decile")
    cal.insert(2, "predicted", [float(pk[(pdec == d).to_numpy()].mean()) if (pdec == d).any() else np.nan
                                for d in range(1, 11)])
    res["calibration"] = cal.rename(columns={"churn_rate": "observed"}).to_dict("records")
    res["verdicts"] = verdicts(res)
    if client_score is not None:
        c = client_score.to_numpy(dtype="float64")
        ok = np.isfinite(c)
        res["client_score"] = _client_validation(y[ok], t[ok], s[ok], c[ok])
    return res


def _client_validation(y: np.ndarray, t: np.ndarray, s: np.ndarray, c: np.ndarray) -> dict:
    out = {"n_accounts": int(len(y)), "n_churned": int(y.sum())}
    if y.sum() == 0 or y.sum() == len(y):
        out["status"] = "not_estimable"
        out["reason"] = (
            "accounts.health_score is missing for every account that churned in the validation window "
            "(it looks like a snapshot of the active accounts only): it cannot be validated out of time. "
            "Provide the score as it was at the start of the window to compare."
            if y.sum() == 0 else "every scored account churned: AUC is undefined"
        )
        out["reason_code"] = "client_score_snapshot" if y.sum() == 0 else "client_score_all_churned"
        return out
    out["status"] = "fitted"
    out.update(auc_with_ci(y, -c))
    out["concordance"] = float(harrell_c(t, c, y))
    dec = pd.Series(deciles(c))
    out["by_decile"] = rate_table(dec, y, list(range(1, 11)), "decile").to_dict("records")
    aucs, cov = delong(y, np.vstack([-s, -c]))
    diff = float(aucs[0] - aucs[1])
    se = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    out["auc_difference"] = {
        "ours_minus_client": diff,
        "ci_low": diff - Z975 * se,
        "ci_high": diff + Z975 * se,
        "p_value": float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else None,
    }
    d = out["auc_difference"]
    out["verdict"] = ("ours_better" if d["ci_low"] > 0 else "client_better" if d["ci_high"] < 0
                      else "not_distinguishable")
    return out


def verdicts(res: dict) -> dict:
    """What the out-of-time validation says, decided here so the report only words it:

    - ``auc``: "above_chance" when the AUC's 95% interval lies above 0.5, else "not_distinguishable";
    - ``calibration``: "adequate" when the mean predicted churn lies inside the observed rate's Wilson
      95% interval, else "under_predicts" / "over_predicts";
    - ``tier_order``: read among the tiers of at least TIER_MIN_ACCOUNTS accounts (a red tier of 2
      accounts, none churned, says nothing of the order), listed in ``tiers_compared`` (red, yellow,
      green order; empty when fewer than two qualify), each against the next one listed (red against
      green when yellow is too small): "not_ordered" when a riskier tier churned no more than the next,
      the first such pair in ``tier_pair``; else "ordered" when all three were compared,
      "ordered_among_compared" when two were (the order of those two only), "not_estimable" when
      fewer than two tiers qualify.
    """
    out = {"auc": "above_chance" if res["score"]["ci_low"] > 0.5 else "not_distinguishable"}
    basis = res.get("with_churn_prob", res)
    lo, hi = wilson(basis["n_churned"], basis["n_accounts"])
    pred = res["predicted_rate"]
    out["calibration"] = ("not_estimable" if pred is None else "under_predicts" if pred < lo
                          else "over_predicts" if pred > hi else "adequate")
    rate = {r["tier"]: r["churn_rate"] for r in res["by_tier"] if r["n"] >= TIER_MIN_ACCOUNTS}
    seen = [t for t in TIERS if t in rate]
    seen = seen if len(seen) >= 2 else []
    wrong = [[a, b] for a, b in zip(seen, seen[1:]) if rate[a] <= rate[b]]
    out["tier_order"] = ("not_estimable" if not seen else "not_ordered" if wrong
                         else "ordered" if len(seen) == len(TIERS) else "ordered_among_compared")
    out["tier_pair"] = wrong[0] if wrong else None
    out["tiers_compared"] = seen
    return out


def left_out_kpis(frame: pd.DataFrame, weights: pd.DataFrame, client_score: pd.Series) -> list[dict]:
    """KPIs with ≥ LEFT_OUT_MIN_POINTS points whose |Spearman ρ| with the client's score is below
    LEFT_OUT_MAX_RHO: they matter for churn but the client's score barely moves with them."""
    c = client_score.to_numpy(dtype="float64")
    recs = []
    for _, w in weights.iterrows():
        x = frame[w["kpi"]].to_numpy(dtype="float64")
        ok = np.isfinite(x) & np.isfinite(c)
        rho = float(stats.spearmanr(x[ok], c[ok])[0]) if ok.sum() > 2 and np.ptp(x[ok]) > 0 else float("nan")
        recs.append({"kpi": w["kpi"], "points": int(w["points"]), "spearman_with_client_score": rho,
                     "left_out": bool(w["points"] >= LEFT_OUT_MIN_POINTS and not abs(rho) >= LEFT_OUT_MAX_RHO)})
    return recs


# ---------------------------------------------------------------- the stage


@dataclass(repr=False)
class Health(StageResult):
    """Everything the health stage produces (DESIGN §6 files via ``write``)."""

    weights: pd.DataFrame  # WEIGHT_COLUMNS: one row per KPI and per account-context item
    scores: pd.DataFrame  # account_id, score, tier, churn_prob
    cutpoints: dict
    validation: dict
    playbook: pd.DataFrame
    onboarding: dict | None
    touch: pd.DataFrame
    features: pd.DataFrame
    dropped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    forecast: pd.DataFrame = field(default_factory=pd.DataFrame)  # per-KPI forecast parameters at as_of
    context: list[dict] = field(default_factory=list)  # per context level: coefficient, horizon value, points
    status: str = "fitted"  # "fitted" | "not_estimable" (then every table is empty and ``reason`` says why)
    reason: str | None = None
    reason_code: str | None = None  # NotEstimable.code
    churn_events: int | None = None  # churn events in the at-risk months, when not estimable
    model: ScoreModel | None = field(default=None, repr=False)  # the score model fitted at as_of
    cut_model: ScoreModel | None = field(default=None, repr=False)  # the out-of-time validation's model
    # its scores at the cut and alert_months before (account_id, month, score; by month, then account_id):
    # the drop check's (cskit.history.drop_check), made with the cut's own scoring
    cut_scores: pd.DataFrame | None = field(default=None, repr=False)
    score_basis: dict = field(default_factory=dict)  # basis "kpis" | "context_only", why, events, floor
    seasonality: dict = field(default_factory=dict)  # cskit.season.churn_seasonality: calendar adjustment
    renewals: dict = field(default_factory=dict)  # cskit.panel.renewal_evidence: term renewals observed

    @property
    def estimable(self) -> bool:
        return self.status == "fitted"

    def summary_items(self) -> dict:
        score = self.validation.get("score") or {}
        kpis = self.weights.loc[self.weights["scale"] != "category", "kpi"].tolist() if len(self.weights) else []
        tiers = self.scores["tier"].value_counts() if len(self.scores) else {}
        return {"status": self.status, "accounts": int(len(self.scores)), "kpis": kpis,
                "red": int(tiers.get("red", 0)), "green": int(tiers.get("green", 0)),
                "auc_out_of_time": score.get("auc"), "notices": len(self.warnings)}

    def validation_json(self) -> dict:
        head = {"status": self.status, "reason": self.reason}
        if not self.estimable:
            head |= {"reason_code": self.reason_code, "churn_events": self.churn_events, "min_events": MIN_SCORE_EVENTS}
        return head | {
            "score_basis": self.score_basis,
            "renewals": self.renewals,
            "seasonality": self.seasonality,
            "cutpoints": self.cutpoints,
            "validation": self.validation,
            "onboarding": self.onboarding,
            "touch_model": self.touch.to_dict("records"),
            "dropped_kpis": self.dropped,
            "context_items": self.context,
            "kpi_forecast": self.forecast.to_dict("records"),
            "warnings": records(self.warnings),
        }

    def write(self, results_dir: Path) -> None:
        results_dir = Path(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        write_csv(self.weights[WEIGHT_COLUMNS], results_dir / "health_weights.csv")
        write_csv(self.scores, results_dir / "health_scores.csv")
        write_json(six_digits(self.validation_json()), results_dir / "health_validation.json")


def not_estimable_health(problem: NotEstimable, horizon: int) -> Health:
    """The health stage's result when its churn model cannot be fitted: status "not_estimable", the
    reason, and every table empty with its usual columns (so the result files keep their headers)."""
    weights = pd.DataFrame(columns=WEIGHT_COLUMNS)
    return Health(
        weights=weights,
        scores=pd.DataFrame(columns=SCORE_COLUMNS),
        cutpoints={},
        validation={"status": "not_estimable", "reason": str(problem), "horizon_months": horizon},
        playbook=pd.DataFrame(columns=PLAYBOOK_COLUMNS),
        onboarding=None,
        touch=_EMPTY_TOUCH.copy(),
        features=pd.DataFrame(columns=SCORE_COLUMNS),
        status="not_estimable",
        reason=str(problem),
        reason_code=problem.code,
        churn_events=problem.events,
    )


def cut_scores(then: Scored | None) -> pd.DataFrame | None:
    """The validation model's scores at its cut and at ``score_at``'s ``also`` month (account_id, month,
    score), sorted by month, then account_id, as ``cskit.history.score_history`` orders its rows."""
    if then is None:
        return None
    parts = [then.frame[["account_id", "month", "score"]]]
    if then.also is not None:
        parts.insert(0, then.also)
    return pd.concat(parts, ignore_index=True)


LTV_LATER = "later"  # design_health_score(ltv=LTV_LATER): the touch model is add_touch's, later
POTENTIAL_LTV = "potential stage (survival-weighted margin × MRR over ltv_months)"
_EMPTY_TOUCH = pd.DataFrame(columns=["touch", "n", "ltv_total", "ltv_median", "score_median"])


def add_touch(health: Health, ltv: pd.DataFrame) -> Health:
    """``health`` with its touch model on the potential's LTV (``Potential.accounts``: account_id, ltv):
    what ``design_health_score(..., ltv=ltv)`` gives, for a Health designed with ``ltv=LTV_LATER``. A
    Health that is not estimable, or already has its touch model, is returned as it is."""
    if not health.estimable or "ltv_source" in health.cutpoints:
        return health
    v = health.features["account_id"].map(ltv.set_index("account_id")["ltv"])
    touch, _ = touch_model(health.features, health.model.kpi_names(), v)
    return replace(health, touch=touch, cutpoints=health.cutpoints | {"ltv_source": POTENTIAL_LTV})


@one_blas_thread()
def design_health_score(
    panel: pd.DataFrame, data: ClientData, params: Params, kpis: list[str], *,
    ltv: pd.DataFrame | str | None = None, fits: Fits | None = None,
) -> Health:
    """The data-driven health score of the accounts active at ``data.as_of`` with its out-of-time
    validation, playbook, onboarding check and touch model (docs/methods.md).

    Parameters
    ----------
    panel, data, params, kpis : DataFrame, ClientData, Params, list of str
        The stage signature (docs/architecture.md): the account × month panel, the loaded client,
        the run's params and the KPI columns to analyse.
    ltv : DataFrame or "later", optional
        ``Potential.accounts`` (account_id, ltv): the touch model's LTV; without it the score model's
        own survival curves give it; ``LTV_LATER`` ("later") leaves the touch model to
        :func:`add_touch`, called once the potential's LTV is known (``cskit.analyse`` runs this stage
        beside the potential, in another process: the same result).
    fits : Fits, optional
        The run's shared designs and fits of this panel (:class:`cskit.fits.Fits`): the score's full
        model at as_of is the potential's churn model; the stage is its last user and releases it.

    Returns
    -------
    Health
        health_weights.csv, health_scores.csv, playbook.csv and health_validation.json; ``status``
        "fitted" or "not_estimable" with the ``reason``.

    Examples
    --------
    >>> h = design_health_score(dx.panel, dx.data, dx.params, dx.kpis, ltv=dx.potential.accounts)  # doctest: +SKIP
    >>> h.weights[["kpi", "points", "direction"]]  # doctest: +SKIP

    When the churn model cannot be fitted on the data up to as_of (fewer than MIN_SCORE_EVENTS churn events,
    or no usable KPI) the stage does not stop the diagnosis: it returns a Health with status
    "not_estimable", the reason, and empty tables (:func:`not_estimable_health`)."""
    H, lag, as_of = params.horizon_months, params.kpi_lag_months, pd.Timestamp(data.as_of)
    # without the run's fits (the stage alone, or in cskit.parallel's child) its own: the score's full model
    # and the onboarding check's hazard are one churn design and first fit, built once (the same results)
    fits = fits if fits is not None and fits.serves(panel, lag) else Fits(panel, lag, seed=params.seed)
    try:
        now = score_at(panel, kpis, lag, as_of, H, params.alpha, fits=fits, seed=params.seed)
        # the onboarding check's own-hazard condition: the same churn hazard, on every at-risk month
        hazard = hazard_own_effect(panel, kpis, lag, fits=fits, seed=params.seed) \
            if "onboarding_completed" in panel else None
    except NotEstimable as e:
        return not_estimable_health(e, H)
    finally:
        fits.release("churn")  # no later model uses the churn design
    model = now.model
    warnings = list(dict.fromkeys(model.warnings))  # the full and the refitted model can say the same
    if not model.renewals.get("estimable", True):
        warnings.append(renewal_notice(model.renewals))
    if _sampled(model):
        warnings.append(sampled_notice(model.sample, stage="health", outcomes=["churn"], model="score"))
    frame = now.frame
    scores = frame[["account_id", "score", "tier", "churn_prob"]].copy()
    scores["account_name"] = scores["account_id"].map(data.account_names()).fillna("").to_numpy()

    accounts = data.accounts.set_index("account_id")
    client = "health_score" in accounts and accounts["health_score"].notna().any()
    Hv = validation_horizon(panel, as_of, H, lag)  # shorter than H only when the data are too short for H
    cut = as_of - pd.DateOffset(months=Hv)
    validation: dict = {"cut": cut, "horizon_months": Hv, "fitted_on": f"at-risk months up to {cut:%Y-%m}"}
    if Hv < H:
        validation["score_horizon_months"] = H
        warnings.append(Notice("score_validated_shorter", stage="health", severity="note", horizon=H,
                               validation_horizon=Hv, cut=f"{cut:%Y-%m}", first=f"{panel['month'].min():%Y-%m}"))
    onboarding = None
    before = months_upto(panel, cut)  # one copy of the months up to the cut, for the score
    try:  # the cut's full model and its first fit built once too (its own Fits, of the months up to the cut)
        then = score_at(before, kpis, lag, cut, Hv, params.alpha, fits=Fits(before, lag, seed=params.seed),
                        seed=params.seed, also=cut - pd.DateOffset(months=params.alert_months))
    except CskitError as e:
        then = None
        validation.update(status="not_estimable", reason=str(e))
        warnings.append(Notice("score_not_validated", stage="health", cut=f"{cut:%Y-%m}", reason=str(e),
                               reason_code=getattr(e, "code", ""), events=getattr(e, "events", None)))
    if then is not None:
        out = outcome_after(panel, then.frame["account_id"], cut, Hv)
        cs = then.frame["account_id"].map(accounts["health_score"]) if client else None
        validation.update(validate(then.frame, out, cs))
        validation["cutpoints_at_cut"] = {"red_below": then.model.red_below, "green_from": then.model.green_from}
        if _sampled(then.model):  # the rows counted above are all the cut's; the fit used a sample of them
            validation["model_rows"] = then.model.sample.record()
            warnings.append(sampled_notice(then.model.sample, stage="health", outcomes=["churn"],
                                           model="validation", cut=f"{cut:%Y-%m}"))
        if "onboarding_completed" in panel:
            done = recent_means(panel, ["onboarding_completed"], active_rows(panel, cut)).set_index("account_id")
            cohort = then.frame[["account_id"]].join(done, on="account_id")
            covariates = onboarding_covariates(panel, then.frame, kpis, cut, transforms=fits.transforms(kpis))
            onboarding = onboarding_check(panel, model, cohort, out, Hv, covariates=covariates, hazard=hazard,
                                          persistence=model.persistence)  # the score's, on this very panel
            warnings += onboarding.pop("notices", [])
    del before  # released: nothing below reads the months up to the cut
    if client:
        cs_now = frame["account_id"].map(accounts["health_score"])
        kpi_rows = model.weights[model.weights["kpi"].isin(model.kpi_names())]
        validation["left_out_kpis"] = left_out_kpis(frame, kpi_rows, cs_now)

    if ltv is not None:  # the potential's LTV (now or later): add_touch's
        v, ltv_source = None, None
    else:
        base = frame[[c for c in ("tenure", "contract_type", "segment", "renewal_cycle", "month") if c in frame]]
        life = survival_curves(model, base, frame, params.ltv_months).sum(axis=1)
        mrr = frame["account_id"].map(panel.loc[active_rows(panel, as_of)].set_index("account_id")["mrr"])
        v = mrr * life * params.gross_margin
        ltv_source = "margin × MRR at as_of × expected months alive over ltv_months (health model)"
    touch = _EMPTY_TOUCH.copy() if v is None else touch_model(frame, model.kpi_names(), v)[0]

    _, y = outcome_rows(panel, "churn", lag)
    basis = {"basis": model.basis, "reason_code": model.basis_reason, "churn_events": int(y.sum()),
             "min_events": MIN_EVENTS, "alpha": params.alpha,
             "kpis_with_points": [k for k in model.kpi_names() if k not in CONTEXT_KPIS]}
    if _sampled(model):  # churn_events counts every at-risk month; the fit used a case-control sample
        basis["model_rows"] = model.sample.record()
    cutpoints = {"red_below": model.red_below, "green_from": model.green_from, "base_rate": model.base_rate,
                 "rule": f"green: churn risk ≤ {GREEN_RISK:g}× base rate; red: > {RED_RISK:g}× base rate"}
    if ltv_source is not None:
        cutpoints["ltv_source"] = ltv_source
    health = Health(
        weights=model.weights.drop(columns=["z_lo", "z_hi", "f_worst", "f_best"]),
        scores=scores,
        cutpoints=cutpoints,
        validation=validation,
        playbook=playbook(model, frame, static=data.static_kpis),
        onboarding=onboarding,
        touch=touch,
        features=frame,
        dropped=dict(model.design.dropped),
        warnings=warnings,
        forecast=model.forecast,
        context=model.context_table,
        model=model,
        cut_model=then.model if then is not None else None,
        cut_scores=cut_scores(then),
        score_basis=basis,
        seasonality=fits.seasonality(MIN_EVENTS),  # the triggers' test of this panel, when they ran first
        renewals=model.renewals,
    )
    return add_touch(health, ltv) if isinstance(ltv, pd.DataFrame) else health

