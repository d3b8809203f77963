"""The designs and fits more than one model uses, computed once per run and released after (issue 14).

Two stages fit the same churn hazard: the improvement potential's churn model and the health score's
full model at ``as_of`` are one cloglog GLM on the same rows (``panel.outcome_rows(panel, "churn",
lag)``, KPIs at t − lag with ``contract_months`` first, ``models.CHURN_ADJUST``, the sustained-usage
rows of ``models.sustained_rows``): they share its design, its first fit and, where the potential adds
no missing indicator, the selection of its curves and segment slopes. The potential's expansion,
downgrade and referral models have the same rows, so one design serves the three.

Above ``cskit.sampling.SAMPLE_ABOVE`` model rows an outcome's model is fitted on a case-control sample
of them (:func:`model_rows`: every rare-class row, a hashed share of the others, drawn with the run's
seed), with the sampled likelihood's link (``ModelRows.link``): the same population coefficients, the
sample's information. The growth outcomes then each have their own sample, so their designs are no
longer one; each is built, fitted and released in turn.

A :class:`Fits` belongs to one panel and is passed explicitly: ``cskit.pipeline.analyse`` makes it,
hands it to the potential and the health stage, and releases it after; a stage called without one
builds its own designs, with the same result (every function here is deterministic in its inputs).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from cskit.models import (
    ADJUST,
    CHURN_ADJUST,
    TRIGGER_LINK,
    Design,
    GLMResult,
    Transform,
    association_order,
    design_matrix,
    fit_binomial,
    kpi_transforms,
    pool_separated,
    select_terms,
    sustained_rows,
    with_terms,
)
from cskit.panel import outcome_rows
from cskit.sampling import RowSample, SampledLink, case_control, fit_link, population_mean
from cskit.season import tested as seasonality_of

GROWTH = ("expansion", "downgrade", "referral")  # outcomes with the same model rows (panel.outcome_rows)


@dataclass
class ModelRows:
    """One design on an outcome's model rows: the rows fitted (mask over the panel: all the model rows,
    or their case-control sample, :func:`model_rows`), their 0/1 outcome, the KPI transforms and the
    design (``models.design_matrix``); ``fit`` is its first cloglog fit once made. ``sample`` says what
    was kept of how many rows and events; ``link`` is what every fit on these rows uses ("cloglog", or
    its ``cskit.sampling.SampledLink`` on a sample)."""

    rows: np.ndarray
    y: np.ndarray
    transforms: dict[str, Transform]
    design: Design
    fit: GLMResult | None = None
    selected: dict = field(default_factory=dict)  # (kpis, alpha) → select_terms' result
    sample: RowSample | None = None
    link: str | SampledLink = "cloglog"
    made: tuple | None = None  # churn_rows' (sustained mask, keep order): what a rebuild of the design reuses

    def shared(self, design: Design, y: np.ndarray | None = None) -> ModelRows:
        """A caller's view of these rows with its own ``design`` (and outcome ``y``)."""
        return ModelRows(self.rows, self.y if y is None else y, self.transforms, design, sample=self.sample,
                         link=self.link)


def model_rows(panel: pd.DataFrame, outcome: str, lag: int, *, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, RowSample]:
    """The rows an ``outcome`` model is fitted on: ``panel.outcome_rows``, thinned by
    ``sampling.case_control`` above its threshold (hashed with ``seed``, params.seed). Returns the
    rows (mask over the panel), their outcome and the :class:`cskit.sampling.RowSample`."""
    rows, y = outcome_rows(panel, outcome, lag)
    return case_control(panel, rows, y, seed=seed)


def population_rates(design: Design, m: ModelRows) -> Design:
    """``design`` (built on ``m``'s rows) with each missing indicator's ``missing_rate`` the model rows'
    share, not the sample's (``sampling.population_mean``): the projections read it as how often a
    future month has no value. The same design when nothing was sampled."""
    if m.sample is None or not m.sample.sampled or not design.indicators:
        return design
    rates = {k: population_mean(design.missing[k], m.y, m.sample) for k in design.indicators if k in design.missing}
    return replace(design, missing_rate=design.missing_rate | rates)


def churn_rows(panel: pd.DataFrame, kpis: list[str], lag: int,
               transforms: dict[str, Transform] | None = None, *, seed: int = 0,
               drawn: tuple | None = None, made: tuple | None = None) -> ModelRows:
    """The churn hazard's design on the at-risk rows: KPIs ``kpis`` (transforms fitted on the panel
    unless given), tenure, segment, contract type and season (``CHURN_ADJUST``), each annual
    renewal's KPIs as their recent mean where ``sustained_rows`` says so; a segment without churn (or
    with only churn) on these rows is merged into the reference segment (``models.pool_separated``). Of
    a collinear pair the design keeps the KPI more strongly linked to churn (``models.association_order``),
    as the triggers' churn model does. Rows, order and fits are those of the case-control sample above
    its threshold (:func:`model_rows`, ``seed``; ``drawn``: its result when already drawn), each fit with
    the sample's link. The keep order is made only where a pruning depends on it (``design_matrix``'s
    callable ``priority``). ``made``: (sustained-rows mask, keep order: a :func:`once`) of an earlier call
    on the same inputs (``ModelRows.made``), so a rebuilt design skips the fits and score tests that
    decide them."""
    rows, y, sample = model_rows(panel, "churn", lag, seed=seed) if drawn is None else drawn
    link = fit_link("cloglog", sample)
    transforms = kpi_transforms(panel, kpis) if transforms is None else transforms
    if made is None:
        made = (sustained_rows(panel, rows, kpis, lag, transforms, link=link)[0],
                once(lambda: association_order(panel, rows, y, kpis, lag, transforms, CHURN_ADJUST,
                                               fit_link(TRIGGER_LINK["churn"], sample))))
    sustained, priority = made
    design = design_matrix(panel, rows, kpis, lag, transforms=transforms, adjust=CHURN_ADJUST, sustained=sustained,
                           priority=priority)
    return ModelRows(rows, y, transforms, pool_separated(design, y), sample=sample, link=link, made=made)


def growth_rows(panel: pd.DataFrame, outcome: str, kpis: list[str], lag: int,
                transforms: dict[str, Transform] | None = None, *, seed: int = 0,
                priority: list[str] | Callable[[], list[str]] | None = None, drawn: tuple | None = None) -> ModelRows:
    """The design of an expansion, downgrade or referral model on its rows (``ADJUST``, no sustained
    rows); unsampled, the three share rows and design, only ``y`` differs. Of a collinear pair the
    design keeps the KPI the triggers' expansion model keeps (``models.association_order`` on
    expansion's rows, or its case-control sample, with its trigger link): expansion is the one growth
    outcome the triggers test. Sampled (:func:`model_rows`, ``seed``), each outcome has its own rows.
    ``priority``: that order when already made (:func:`growth_priority`); ``drawn``: the outcome's
    :func:`model_rows` when already drawn."""
    rows, y, sample = model_rows(panel, outcome, lag, seed=seed) if drawn is None else drawn
    transforms = kpi_transforms(panel, kpis) if transforms is None else transforms
    if priority is None:  # made only where a pruning depends on it (design_matrix)
        priority = once(lambda: growth_priority(panel, kpis, lag, transforms, seed=seed,
                                                rows=(rows, y, sample) if outcome == GROWTH[0] else None))
    design = design_matrix(panel, rows, kpis, lag, transforms=transforms, adjust=ADJUST, priority=priority)
    return ModelRows(rows, y, transforms, design, sample=sample, link=fit_link("cloglog", sample))


def growth_priority(panel: pd.DataFrame, kpis: list[str], lag: int, transforms: dict[str, Transform], *,
                    seed: int = 0, rows: tuple | None = None) -> list[str]:
    """The growth designs' collinear keep order: ``models.association_order`` of the expansion model on
    its rows (``rows``: :func:`model_rows` of expansion when already drawn), with its trigger link."""
    kept, y, sample = model_rows(panel, GROWTH[0], lag, seed=seed) if rows is None else rows
    return association_order(panel, kept, y, kpis, lag, transforms, ADJUST, fit_link(TRIGGER_LINK[GROWTH[0]], sample))


class Fits:
    """Designs and fits of one panel, kept while a later model still needs them.

    ``churn(kpis)`` and ``growth(outcome, kpis)`` give a :class:`ModelRows` (built once per KPI list;
    the growth design once for its three outcomes, with each outcome's own ``y``, when none of them is
    sampled; a sampled growth outcome's design is its own and not kept); ``churn_fit(kpis)``
    the churn design's first cloglog fit and ``churn_selected(kpis, …)`` the selection of curves and
    segment slopes on it (``models.select_terms``), each made once; ``transforms(kpis)`` the KPIs'
    transforms on the panel (``models.kpi_transforms``), each fitted once. ``unload(kpis)`` drops the
    churn matrix and keeps its fit and selections (the matrix is rebuilt, the same bits, for the next
    caller that needs it: cheaper than holding it through the potential's peak). ``release(name)`` drops what no
    later model needs ("churn", "growth"); ``release()`` everything. The matrices are read-only, and
    every ``Design`` handed out is the caller's own (its ``dropped`` dict copied): what one stage
    records on it the other does not see. ``seed`` (params.seed) draws the case-control samples of
    large clients' model rows (:func:`model_rows`).
    """

    def __init__(self, panel: pd.DataFrame, lag: int, *, seed: int = 0):
        self.panel, self.lag, self.seed = panel, lag, seed
        self._store: dict[tuple, ModelRows] = {}
        self._transforms: dict[str, Transform | None] = {}
        self._priority: dict[tuple, Callable[[], list[str]]] = {}  # the growth designs' keep order (:func:`once`)
        self._drawn: dict[str, tuple] = {}  # model_rows per outcome
        self._season: dict[int, dict] = {}  # churn_seasonality per min_events

    def transforms(self, kpis: list[str]) -> dict[str, Transform]:
        """``models.kpi_transforms(panel, kpis)``, each KPI's transform fitted once per run (it depends
        on the KPI's panel values only); constant KPIs are left out, as there."""
        new = [k for k in dict.fromkeys(kpis) if k not in self._transforms]
        if new:
            fitted = kpi_transforms(self.panel, new)
            self._transforms |= {k: fitted.get(k) for k in new}
        return {k: self._transforms[k] for k in dict.fromkeys(kpis) if self._transforms[k] is not None}

    def rows(self, outcome: str) -> tuple[np.ndarray, np.ndarray, RowSample]:
        """:func:`model_rows` of ``outcome`` on this panel with this seed, drawn once (kept until
        ``release``)."""
        if outcome not in self._drawn:
            self._drawn[outcome] = model_rows(self.panel, outcome, self.lag, seed=self.seed)
        return self._drawn[outcome]

    def seasonality(self, min_events: int) -> dict:
        """``season.churn_seasonality(panel, min_events)``, tested once per run (the triggers and the
        health score report the same test of this panel); each caller gets its own copy."""
        if min_events not in self._season:
            self._season[min_events] = seasonality_of(self.panel, min_events)  # the panel builder's, when kept
        return copy.deepcopy(self._season[min_events])

    def serves(self, panel: pd.DataFrame, lag: int) -> bool:
        """True when these fits were made on ``panel`` (the same object) with KPIs at ``lag``."""
        return panel is self.panel and lag == self.lag

    def churn(self, kpis: list[str], transforms: dict[str, Transform] | None = None) -> ModelRows:
        m = self._churn(kpis, transforms)
        return m.shared(own(m.design))

    def churn_fit(self, kpis: list[str]) -> GLMResult:
        m = self._store.get(("churn", tuple(kpis)))
        m = self._churn(kpis) if m is None or m.fit is None else m
        if m.fit is None:
            m.fit = fit_binomial(m.y, m.design.X, link=m.link, names=m.design.names)
        return m.fit

    def churn_selected(self, kpis: list[str], flagged: list[str], segment: np.ndarray | None,
                       alpha: float, *, matrix: bool = True) -> tuple[Design, GLMResult, pd.DataFrame]:
        """``select_terms`` on the churn design's first fit (made once). The selection is kept without its
        extended matrix; ``matrix=False`` (a caller that reads only the terms and the fit) gets it so, any
        other caller the matrix, rebuilt from the design's columns when it was dropped (``with_terms``:
        the same bits)."""
        key = (tuple(flagged), alpha)
        stored = self._store.get(("churn", tuple(kpis)))
        if stored is None or key not in stored.selected:
            m = self._churn(kpis)
            design, fit, table = select_terms(m.y, m.design, self.churn_fit(kpis), flagged, segment, alpha)
            m.selected[key] = (_lean(design), fit, table)
            return own(design), fit, table.copy()
        design, fit, table = stored.selected[key]
        if matrix:
            design = with_terms(self._churn(kpis).design, design.terms, segment)
        return own(design), fit, table.copy()

    def growth(self, outcome: str, kpis: list[str], transforms: dict[str, Transform] | None = None) -> ModelRows:
        key = ("growth", tuple(kpis))
        drawn = self.rows(outcome)
        if key in self._store:  # the three outcomes' one design (unsampled)
            rows, y, sample = drawn
            if not sample.sampled:
                m = self._store[key]
                return ModelRows(m.rows, y, m.transforms, own(m.design), sample=sample, link=m.link)
        transforms = transforms or self.transforms(kpis)
        if key not in self._priority:  # one order for the three designs (each built in turn when sampled),
            self._priority[key] = once(lambda: growth_priority(  # made when a design's pruning first needs it
                self.panel, kpis, self.lag, transforms, seed=self.seed, rows=self.rows(GROWTH[0])))
        m = _read_only(growth_rows(self.panel, outcome, kpis, self.lag, transforms, seed=self.seed,
                                   priority=self._priority[key], drawn=drawn))
        if not m.sample.sampled:
            self._store[key] = m
        return m.shared(own(m.design))

    def release(self, name: str | None = None) -> None:
        """Drop the stored designs and fits of ``name`` ("churn", "growth"; None: all)."""
        for key in [k for k in self._store if name is None or k[0] == name]:
            del self._store[key]
        if name in (None, "growth"):
            self._priority.clear()
        for outcome in [o for o in self._drawn if name is None or (o == "churn") == (name == "churn")]:
            del self._drawn[outcome]
        if name is None:
            self._season.clear()

    def unload(self, kpis: list[str]) -> None:
        """Drop the churn design's matrix but keep its fit and selections: between the potential's churn
        model and the score's, the matrix would sit in memory through the potential's largest moment
        (measured: +44 MB of 217 at 10k accounts); the score rebuilds it, the same bits, when it asks."""
        m = self._store.get(("churn", tuple(kpis)))
        if m is not None:
            m.design = None

    def _churn(self, kpis: list[str], transforms: dict[str, Transform] | None = None) -> ModelRows:
        key = ("churn", tuple(kpis))
        if key not in self._store:
            self._store[key] = _read_only(churn_rows(self.panel, kpis, self.lag, transforms or self.transforms(kpis),
                                                     seed=self.seed, drawn=self.rows("churn")))
        elif self._store[key].design is None:  # unloaded: rebuilt, identical, for the fit and selections kept
            m = self._store[key]
            m.design = _read_only(churn_rows(self.panel, kpis, self.lag, m.transforms, seed=self.seed,
                                             drawn=self.rows("churn"), made=m.made)).design
        return self._store[key]


def once(make: Callable[[], list[str]]) -> Callable[[], list[str]]:
    """``make`` called at most once: later calls return a copy of its first result (a keep order that
    ``models.design_matrix`` asks for only when its prunings depend on it)."""
    made: list = []

    def order() -> list[str]:
        if not made:
            made.append(make())
        return list(made[0])

    return order


def _lean(design: Design) -> Design:
    """``design`` without its matrix (and missing masks): what a kept selection needs is its terms."""
    return replace(design, X=np.empty((0, design.X.shape[1])), missing={})


def own(design: Design) -> Design:
    """A caller's own Design over the same (read-only) matrix: its ``dropped`` is a copy."""
    return replace(design, dropped=dict(design.dropped))


def _read_only(m: ModelRows) -> ModelRows:
    m.design.X.flags.writeable = False
    return m
