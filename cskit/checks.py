"""The onboarding check (DESIGN §5 "Onboarding check"; docs/methods.md): does completing onboarding go
with less churn, or is it an urban legend? Churn within the horizon of an out-of-time cohort and the
health score 12 months after start, onboarded vs not, with intervals and an equivalence verdict.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from cskit.forecast import kpi_forecasts
from cskit.stats import mean_ci, newcombe_difference, risk_ratio, wilson

if TYPE_CHECKING:
    from cskit.health import ScoreModel

EQUIVALENCE_MARGIN = 0.05
ONBOARDING_SCORE_TENURE = 12


def onboarding_check(panel: pd.DataFrame, model: ScoreModel, cohort: pd.DataFrame, out: pd.DataFrame, horizon: int) -> dict:
    """Churn within the horizon (out-of-time cohort) and the health score 12 months after start,
    onboarded (onboarding_completed > 0) vs not, with intervals and a verdict (docs/methods.md)."""
    done = cohort["onboarding_completed"].to_numpy(dtype="float64")
    ok = np.isfinite(done)
    on, y = done[ok] > 0, out["event"].to_numpy()[ok]
    k1, n1, k0, n0 = int(y[on].sum()), int(on.sum()), int(y[~on].sum()), int((~on).sum())
    res: dict = {"horizon_months": horizon}
    if min(n1, n0) == 0:
        res["verdict"] = "inconclusive"
        res["reason"] = "every account of the cohort is in one group: nothing to compare"
        res["reason_code"] = "one_group"
        return res
    d, dlo, dhi = newcombe_difference(k1, n1, k0, n0)
    rr, rlo, rhi = risk_ratio(k1, n1, k0, n0)
    res["churn"] = {
        "onboarded": {"n": n1, "churned": k1, "rate": k1 / n1, "ci": list(wilson(k1, n1))},
        "not_onboarded": {"n": n0, "churned": k0, "rate": k0 / n0, "ci": list(wilson(k0, n0))},
        "difference": {"estimate": d, "ci_low": dlo, "ci_high": dhi},
        "ratio": {"estimate": rr, "ci_low": rlo, "ci_high": rhi},
    }
    res["score_after_12_months"] = _score_after_start(panel, model, horizon)
    res["verdict"] = onboarding_verdict(dlo, dhi)
    res["equivalence_margin"] = EQUIVALENCE_MARGIN
    return res


def onboarding_verdict(ci_low: float, ci_high: float, margin: float = EQUIVALENCE_MARGIN) -> str:
    """From the 95% interval of churn(onboarded) − churn(not): "urban_legend" when it lies inside
    ±margin (any difference is too small to matter, significant or not); "driver" when it lies below 0
    and reaches beyond −margin; "inconclusive" otherwise (too wide to tell, or onboarded churn more)."""
    if ci_low > -margin and ci_high < margin:
        return "urban_legend"
    if ci_high < 0:
        return "driver"
    return "inconclusive"


def _score_after_start(panel: pd.DataFrame, model: ScoreModel, horizon: int) -> dict:
    """Health score at tenure 12 (onboarding's own points taken out and the rest rescaled to 0–100)."""
    rows = (panel["tenure"] == ONBOARDING_SCORE_TENURE).to_numpy()
    kpis = list(dict.fromkeys([*model.kpi_names(), "onboarding_completed"]))
    feats, _ = kpi_forecasts(panel, kpis, rows, model.design.transforms, horizon, model.lag)
    feats = pd.concat([feats, panel.loc[rows, ["segment", "contract_type"]].reset_index(drop=True)], axis=1)
    pts = pd.concat([model.kpi_points(feats), model.context_points(feats)], axis=1)
    own = model.weights.set_index("kpi")["points"].get("onboarding_completed", 0)
    rest = pts.drop(columns=["onboarding_completed"], errors="ignore").sum(axis=1).to_numpy()
    s = rest * 100.0 / (100 - own) if own < 100 else rest
    done = feats["onboarding_completed"].to_numpy()
    ok = np.isfinite(done)
    a, b = s[ok & (done > 0)], s[ok & ~(done > 0)]
    res = {"tenure_months": ONBOARDING_SCORE_TENURE, "excludes_onboarding_points": int(own),
           "onboarded": mean_ci(a), "not_onboarded": mean_ci(b)}
    if len(a) > 1 and len(b) > 1:
        diff = a.mean() - b.mean()
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else np.inf
        q = stats.t.ppf(0.975, dof)
        res["difference"] = {"estimate": float(diff), "ci_low": float(diff - q * np.sqrt(va + vb)), "ci_high": float(diff + q * np.sqrt(va + vb))}
        if a.mean() > 0 and b.mean() > 0:
            lr = np.log(b.mean() / a.mean())
            se = np.sqrt(vb / b.mean() ** 2 + va / a.mean() ** 2)
            res["ratio_not_to_onboarded"] = {"estimate": float(np.exp(lr)), "ci_low": float(np.exp(lr - 1.96 * se)), "ci_high": float(np.exp(lr + 1.96 * se))}
        ga, gb = 100 - a.mean(), 100 - b.mean()
        if ga > 0:
            res["shortfall_ratio_not_to_onboarded"] = float(gb / ga)
    return res
