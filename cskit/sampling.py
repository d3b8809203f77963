"""Case-control sampling of the model rows of large clients (issue 14), with the exact likelihood.

An outcome model of a client with a million account-months spends its time on the common class (the
months an account did not churn), which carries little information about a rare event. Above
``SAMPLE_ABOVE`` model rows, every row of the rare class is kept and the common class is thinned to
a fixed share π of its rows, never fewer than ``CONTROLS`` per rare row. The kept rows are chosen by
a hash of (account, month, seed): the same rows in every stage and process, whatever the panel's
row order.

The model is still the population's: selection depends on the outcome only, with known
probabilities (π1 for y = 1 rows, π0 for y = 0), so on the kept rows

    P(y = 1 | x, kept) = π1 p / (π1 p + π0 (1 − p)),   i.e.  logit P(y = 1 | x, kept) = logit p(x) + c,
    c = log(π1 / π0),

whatever the link of p (Prentice & Pyke 1979 for the logit, where c is an offset of the intercept;
Scott & Wild 1986 for other links). Fitting this likelihood (:class:`SampledLink` in
``models.mean_and_slope``) estimates the population coefficients — intercept included — and its
information, Wald and score tests and sandwich covariances are those of the sample, so intervals are
honest about the rows left out (relative efficiency about m / (m + 1) for m kept common rows per rare
row: ≥ 83% at m = 5). Below the threshold nothing is sampled: the fits are the full-data fits,
bit for bit. Details: docs/methods.md, "Case-control sampling of large clients".
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import pandas as pd

NOTICE = "model_rows_sampled"  # the coded note of a model fitted on a sample (words: cskit.narrative)
SAMPLE_ABOVE = 125_000  # model rows beyond which the common class is sampled
CONTROLS = 5  # kept common-class rows per rare-class row, at least


@dataclass(frozen=True)
class SampledLink:
    """A binomial link fitted on a case-control sample: the population model's link ``name``
    ("cloglog" or "logit") and the sample's log-odds shift ``offset`` = log(π1 / π0)."""

    name: str
    offset: float

    def __str__(self) -> str:
        return self.name


def link_name(link) -> str:
    """The population link of ``link`` ("cloglog" / "logit", or a :class:`SampledLink`)."""
    return link.name if isinstance(link, SampledLink) else link


def link_offset(link) -> float:
    """The sample's log-odds shift of ``link`` (0 for a full-data link)."""
    return link.offset if isinstance(link, SampledLink) else 0.0


def sampled_mean(mu: np.ndarray, d: np.ndarray, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """The kept rows' mean and its slope dμ_s/dη from the population's mean ``mu`` and slope ``d``:
    μ_s = expit(logit μ + c), dμ_s/dη = μ_s (1 − μ_s) d / (μ (1 − μ))."""
    # the operations of odds = μ / (1 − μ) · e^c, μ_s = odds / (1 + odds), slope = μ_s (1 − μ_s) d / (μ (1 − μ)),
    # in that order (the same bits), written into three arrays rather than a temporary per operation
    rest = np.subtract(1.0, mu)
    odds = np.divide(mu, rest)
    odds *= math.exp(offset)
    ms = np.add(1.0, odds)
    np.divide(odds, ms, out=ms)
    slope = np.subtract(1.0, ms, out=odds)
    np.multiply(ms, slope, out=slope)
    slope *= d
    np.divide(slope, np.multiply(mu, rest, out=rest), out=slope)
    return ms, slope


@dataclass(frozen=True)
class RowSample:
    """What :func:`case_control` did to one outcome's model rows: ``rows`` / ``events`` before, the rows
    kept (``kept``), the share ``keep`` of the common class kept, which class is ``rare`` (1: y = 1,
    the events, kept whole; 0: the non-events), and the offset of the sampled likelihood."""

    rows: int
    events: int
    kept: int
    keep: float
    rare: int
    offset: float

    @property
    def sampled(self) -> bool:
        return self.keep < 1.0

    def complement(self) -> RowSample:
        """The same kept rows seen from the outcome 1 − y (renewal = 1 − churn on churn's rows): the other
        class is the rare one and the offset log(π1 / π0) changes sign (π1 and π0 swap)."""
        return RowSample(self.rows, self.rows - self.events, self.kept, self.keep, 1 - self.rare, -self.offset)

    def record(self) -> dict:
        """The sample as plain numbers (for result files and notices)."""
        return {"rows": self.rows, "events": self.events, "fitted_rows": self.kept, "keep": self.keep,
                "rare": self.rare}


def row_uniforms(panel: pd.DataFrame, rows: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) for each model row (``rows``: boolean mask over the panel), a hash of
    its account, month and ``seed``: the same for a row wherever, and in whatever order, it is drawn.
    Read off :func:`panel_uniforms` (every panel row hashed once per panel and seed: a row's hash is
    its own values', so the selection's numbers are the bits hashing the selection gives)."""
    return panel_uniforms(panel, seed)[rows]


_HASHED: list[tuple] = []  # (weak reference to a panel, its columns' memory and the seed, the columns, uniforms)
KEEP_HASHED = 2  # panels whose uniforms are kept (a run has one; a test may alternate two)


def panel_uniforms(panel: pd.DataFrame, seed: int) -> np.ndarray:
    """:func:`row_uniforms` of every row of ``panel``, hashed once for the run's samples (the churn,
    growth and lead–lag rows, and their plain-random parts: at 100k accounts each hash of a model row
    set took 0.07–0.2 s) and kept while the panel lives (8 bytes a row). Its ``account_id`` and
    ``month`` columns' memory is part of the key: a panel given new ones is hashed again."""
    accounts, months = panel["account_id"].to_numpy(), panel["month"].to_numpy()
    key = (int(seed), len(panel), accounts.__array_interface__["data"][0], months.__array_interface__["data"][0])
    for ref, k, _, u in _HASHED:  # the entry holds the columns it hashed: their memory is never another's
        if ref() is panel and k == key:
            return u
    frame = pd.DataFrame({"a": accounts, "m": months})
    h = pd.util.hash_pandas_object(frame, index=False, hash_key=f"cskit{int(seed) % 10**11:011d}").to_numpy()
    u = (h >> np.uint64(11)).astype("float64") / float(1 << 53)
    u.flags.writeable = False
    live = [entry for entry in _HASHED if entry[0]() is not None]
    _HASHED[:] = [*live[max(0, len(live) - KEEP_HASHED + 1):],
                  (weakref.ref(panel, _forget_dead), key, (accounts, months), u)]
    return u


def _forget_dead(_ref) -> None:
    """Drop the uniforms of panels no longer alive (called as a panel is freed: its 8 bytes a row go with it)."""
    _HASHED[:] = [entry for entry in _HASHED if entry[0]() is not None]


def case_control(panel: pd.DataFrame, rows: np.ndarray, y: np.ndarray, *, seed: int = 0,
                 above: int | None = None, controls: int | None = None) -> tuple[np.ndarray, np.ndarray, RowSample]:
    """The rows an outcome model is fitted on: all of ``rows`` (boolean mask over the panel, ``y`` the
    0/1 outcome on them) up to ``above`` of them; beyond, every row of the rarer class and a share
    π = min(1, max(controls · rare, above − rare) / common) of the other, drawn by :func:`row_uniforms`.
    Returns the kept rows (mask over the panel), their outcomes and the :class:`RowSample`.
    ``above`` / ``controls`` default to the module's SAMPLE_ABOVE / CONTROLS, read at call time (a test
    lowers SAMPLE_ABOVE with monkeypatch to make a small client sampled)."""
    above = SAMPLE_ABOVE if above is None else above
    controls = CONTROLS if controls is None else controls
    y = np.asarray(y, dtype="float64")
    n, events = len(y), int(y.sum())
    rare = 1 if events <= n - events else 0
    n_rare = events if rare else n - events
    common = n - n_rare
    keep = 1.0 if n <= above or common == 0 else min(1.0, max(controls * n_rare, above - n_rare) / common)
    if keep >= 1.0:
        return rows, y, RowSample(n, events, n, 1.0, rare, 0.0)
    kept = (y == rare) | (row_uniforms(panel, rows, seed) < keep)
    out = np.zeros(len(rows), dtype=bool)
    out[np.flatnonzero(rows)[kept]] = True
    offset = -math.log(keep) if rare else math.log(keep)  # log(π1 / π0)
    return out, y[kept], RowSample(n, events, int(kept.sum()), keep, rare, offset)


def uniform_rows(panel: pd.DataFrame, kept: np.ndarray, sample: RowSample, seed: int) -> np.ndarray | None:
    """Of the kept rows (``kept``: mask over the panel, from :func:`case_control` with ``seed``), those a
    plain random sample of the model rows holds: the rows whose uniform (:func:`row_uniforms`) is below
    the share kept. Every model row, of either class, is among them with probability π, so they describe
    the population's rows (a KPI's range, the segments' mix) where the kept rows, rich in the rare
    class, would not. A boolean mask over the kept rows; None when nothing was left out (all of them)."""
    if not sample.sampled:
        return None
    return row_uniforms(panel, kept, seed) < sample.keep


def fit_link(name: str, sample: RowSample):
    """The link to fit on the sample's rows: ``name`` itself when nothing was left out."""
    return SampledLink(name, sample.offset) if sample.sampled else name


def sampled_notice(sample: RowSample, *, stage: str, **values):
    """The coded note (:data:`NOTICE`, severity "note") that a stage's model was fitted on a sample:
    ``rows``, ``events``, ``fitted_rows``, ``keep`` of ``sample``, plus ``values`` (e.g. ``outcomes``,
    the models it concerns)."""
    from cskit.notices import Notice

    record = {k: v for k, v in sample.record().items() if k != "rare"}
    return Notice(NOTICE, stage=stage, severity="note", **record, **values)


def population_mean(x: np.ndarray, y: np.ndarray, sample: RowSample) -> float:
    """The population's mean of ``x`` (one value per kept row; ``y`` their outcomes) estimated from the
    sample: each kept row weighted by the inverse of its chance of being kept (1 for the rare class,
    1 / π for the other; Horvitz & Thompson 1952). The plain mean when nothing was left out."""
    x = np.asarray(x, dtype="float64")
    if not sample.sampled:
        return float(x.mean())
    w = np.where(np.asarray(y) == sample.rare, 1.0, 1.0 / sample.keep)
    return float(w @ x / w.sum())
