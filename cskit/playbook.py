"""What the CSMs do with the health score: the playbook (the red-tier accounts and the two KPIs that
cost them most points) and the touch model (high / low / tech touch by LTV). DESIGN §5; docs/methods.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from cskit.health import ScoreModel

PLAYBOOK_COLUMNS = ["account_id", "score", "tier", "kpi_1", "gap_1", "kpi_2", "gap_2"]
TOUCH_SHARES = (0.10, 0.30)
TOUCH_TIERS = ("high", "low", "tech")
MIN_GAP = 1.0  # score points: a smaller shortfall is below the score's resolution (whole points per item)


def playbook(model: ScoreModel, frame: pd.DataFrame, include=None,
             static: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """Red-tier accounts (and those whose account_id is in ``include``: the movers) with the two KPIs
    whose points fall furthest below those of the green-tier
    median value (gap in score points; a KPI is named only when its gap is at least MIN_GAP, one point:
    a smaller shortfall is below the score's resolution, e.g. the last wiggle of a fitted curve past its
    threshold). Only actionable
    KPIs are named: not the tenure, not the account-context items (segment, contract type), and not
    the ``static`` KPIs (one value per account, set at its start, e.g. onboarding completed: a CSM
    cannot change it for an existing account; it still counts in the score). Points follow each KPI's
    fitted curve and segment-specific effect, so an account past a threshold, or in a segment where the
    KPI does nothing, has no gap on it."""
    green = frame[frame["tier"] == "green"]
    if green.empty:
        green = frame[frame["score"] >= frame["score"].quantile(0.75)]
    kpis = [k for k in model.actionable_kpis() if k not in set(static)]
    medians = green[model.kpi_names()].median()
    named = frame["tier"] == "red"
    if include is not None:
        named |= frame["account_id"].isin(pd.Series(include, dtype=object))
    red = frame[named].reset_index(drop=True)
    cols = PLAYBOOK_COLUMNS
    if red.empty:
        return pd.DataFrame(columns=cols)
    # the green median's points for each named account, in its own segment (a KPI whose effect differs
    # by segment earns differently there; where it does nothing the gap is 0)
    ref = red.assign(**{k: medians[k] for k in model.kpi_names()})
    gaps = model.kpi_points(ref)[kpis] - model.kpi_points(red)[kpis]
    names = np.array(gaps.columns)
    order = np.argsort(-gaps.to_numpy(), axis=1, kind="stable")
    out = red[["account_id", "score", "tier"]].copy()
    for i in (0, 1):
        g = (
            np.take_along_axis(gaps.to_numpy(), order[:, i : i + 1], axis=1)[:, 0]
            if gaps.shape[1] > i
            else np.zeros(len(red))
        )
        k = names[order[:, i]] if gaps.shape[1] > i else np.full(len(red), "")
        out[f"kpi_{i + 1}"] = np.where(g >= MIN_GAP, k, "")
        out[f"gap_{i + 1}"] = np.where(g >= MIN_GAP, g, np.nan)
    return out.sort_values(["score", "account_id"], kind="stable").reset_index(drop=True)[cols]


def touch_model(frame: pd.DataFrame, kpis: list[str], ltv: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """High / low / tech touch by LTV (top 10% / next 30% / rest) and each tier's medians and counts."""
    v = ltv.to_numpy(dtype="float64")
    order = np.lexsort((frame["account_id"].to_numpy(), -np.nan_to_num(v, nan=-np.inf)))
    rank = np.empty(len(v), dtype=int)
    rank[order] = np.arange(len(v))
    share = rank / max(len(v), 1)
    hi, lo = TOUCH_SHARES
    touch = np.where(share < hi, "high", np.where(share < hi + lo, "low", "tech"))
    accounts = pd.DataFrame({"account_id": frame["account_id"], "ltv": v, "touch": touch})
    recs = []
    for t in TOUCH_TIERS:
        m = touch == t
        rec = {"touch": t, "n": int(m.sum()), "ltv_total": float(np.nansum(v[m])), "ltv_median": _median(v[m]),
               "score_median": _median(frame["score"].to_numpy()[m])}
        rec.update({k: _median(frame[k].to_numpy(dtype="float64")[m]) for k in kpis})
        recs.append(rec)
    return pd.DataFrame(recs), accounts


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else float("nan")
