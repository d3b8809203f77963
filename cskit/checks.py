"""The onboarding check (DESIGN §5 "Onboarding check"; docs/methods.md): does completing onboarding go
with less churn, or is it an urban legend? Churn within the horizon of an out-of-time cohort and the
health score 12 months after start, onboarded vs not, with intervals; the verdict comes from the
difference *adjusted* for the other KPIs and the account context (augmented inverse probability
weighting, statsmodels' ``TreatmentEffect.aipw``), so that onboarding is not called a driver where it
only travels with usage.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.linalg
from scipy import stats
from statsmodels.discrete.discrete_model import Logit
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tools.tools import add_constant, pinv_extended

from cskit.fits import churn_rows
from cskit.forecast import kpi_forecasts
from cskit.models import MISSING_PREFIX, fit_binomial, kpi_transforms
from cskit.notices import Notice
from cskit.panel import RECENT_MONTHS, active_rows, recent_means_over, recent_missing
from cskit.stats import Z975, mean_ci, newcombe_difference, risk_ratio, wilson

if TYPE_CHECKING:
    from cskit.fits import Fits
    from cskit.health import ScoreModel

EQUIVALENCE_MARGIN = 0.05
ONBOARDING_SCORE_TENURE = 12
LONG_RUN = 10_000  # "all months": the account's level, a better measure of a lasting trait than 3 months
ADJUSTED_MIN_GROUP = 20  # accounts per group (and churns) below which the adjusted comparison is not made


def onboarding_check(panel: pd.DataFrame, model: ScoreModel, cohort: pd.DataFrame, out: pd.DataFrame, horizon: int,
                     *, covariates: pd.DataFrame | None = None, hazard: dict | None = None,
                     persistence: dict | None = None) -> dict:
    """Churn within the horizon (out-of-time cohort) and the health score 12 months after start,
    onboarded (onboarding_completed > 0) vs not, with intervals and a verdict (docs/methods.md).

    ``covariates`` (one row per cohort account, numeric: the other KPIs, tenure, context dummies) give
    the adjusted difference (:func:`adjusted_difference`) the verdict is read from; without them, or
    where it cannot be estimated, the verdict is never "driver" (an unadjusted difference cannot tell
    onboarding from what travels with it). ``hazard`` (:func:`hazard_own_effect`) is the second
    condition for "driver": onboarding's own term in the monthly churn hazard, adjusted for the KPIs of
    the month before each decision, must be below 1 too. ``persistence``: the KPIs' ``forecast.Persistence``
    on ``panel`` when already estimated (``ScoreModel.persistence`` of the score at as_of on this panel)."""
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
    res["score_after_12_months"] = _score_after_start(panel, model, horizon, persistence)
    res["verdict_unadjusted"] = onboarding_verdict(dlo, dhi)
    adj = adjusted_difference(y, on, covariates.to_numpy(dtype="float64")[ok], list(covariates.columns)) \
        if covariates is not None else {"status": "not_estimable", "reason": "no covariates were given"}
    res["adjusted"] = adj
    res["notices"] = []
    res["hazard_model"] = hazard or {"status": "not_estimable", "reason": "not given"}
    if adj["status"] == "fitted":
        res["verdict"] = onboarding_verdict(adj["ci_low"], adj["ci_high"])
        own = res["hazard_model"].get("status") == "fitted" and res["hazard_model"]["ci_high"] < 1
        if res["verdict"] == "driver" and not own:
            res["verdict"] = "inconclusive"
        if "driver" in (res["verdict_unadjusted"], onboarding_verdict(adj["ci_low"], adj["ci_high"])) \
                and res["verdict"] != "driver":
            res["notices"].append(Notice("onboarding_confounded", stage="health", severity="note",
                                         adjusted_verdict=onboarding_verdict(adj["ci_low"], adj["ci_high"])))
    else:
        res["verdict"] = "inconclusive" if res["verdict_unadjusted"] == "driver" else res["verdict_unadjusted"]
        res["notices"].append(Notice("onboarding_unadjusted_only", stage="health", severity="note",
                                     reason=adj["reason"]))
    res["equivalence_margin"] = EQUIVALENCE_MARGIN
    return res


def hazard_own_effect(panel: pd.DataFrame, kpis: list[str], lag: int, *, fits: Fits | None = None,
                      seed: int = 0) -> dict:
    """Onboarding's own term in the monthly churn hazard, as the hazard ratio onboarded vs not (the KPI
    from 0 to 1 on the model's scale) with its 95% interval: the churn hazard the triggers' RT model,
    the potential and the health score fit (:func:`cskit.fits.churn_rows`: cloglog GLM on every at-risk
    month up to as_of, every KPI of the month before each decision, segment, contract type and, where
    detected, the calendar month), so that the check and the trigger table show one model's figure.

    ``fits`` (:class:`cskit.fits.Fits` of this panel): its churn design and first fit for ``kpis``
    (those of the health score's full model: no refit); without it, the rows of ``churn_rows`` with
    ``seed`` (a case-control sample above its threshold, fitted with its link)."""
    fits = fits if fits is not None and fits.serves(panel, lag) else None
    m = fits.churn(kpis) if fits is not None else churn_rows(panel, kpis, lag, seed=seed)
    if m.y.sum() < ADJUSTED_MIN_GROUP:
        return {"status": "not_estimable", "reason": f"only {int(m.y.sum())} churns"}
    design = m.design
    if "onboarding_completed" not in design.kpis:
        return {"status": "not_estimable", "reason": design.dropped.get("onboarding_completed", "not in the model")}
    fit = fits.churn_fit(kpis) if fits is not None else fit_binomial(m.y, design.X, link=m.link, names=design.names)
    j = design.names.index("onboarding_completed")
    t = design.transforms["onboarding_completed"]
    step = float(t.forward(1.0) - t.forward(0.0))  # per SD on the model's scale → per step of the flag
    b, se = fit.coef[j] * step, fit.se[j] * abs(step)
    return {"status": "fitted", "hazard_ratio": float(np.exp(b)), "ci_low": float(np.exp(b - Z975 * se)),
            "ci_high": float(np.exp(b + Z975 * se)), "p_value": float(2 * stats.norm.sf(abs(b / se))),
            "rows": "every at-risk month up to as_of (the churn hazard of the triggers, potential and score)"}


def onboarding_covariates(
    panel: pd.DataFrame, frame: pd.DataFrame, kpis: list[str], month: pd.Timestamp,
    *, transforms: dict | None = None,
) -> pd.DataFrame:
    """What the adjusted comparison holds fixed, for the accounts of ``frame`` (active at ``month``):
    every other KPI's mean over the account's last 3 observed months up to ``month`` and over all its
    months up to then (its lasting level: what travels with onboarding is often a trait of the account,
    which 3 months measure poorly), both on the models' scale (log1p for skewed counts), log1p(tenure)
    and segment and contract-type dummies. ``transforms``: the KPIs' transforms on ``panel`` when already
    fitted (``cskit.fits.Fits.transforms``)."""
    rows = active_rows(panel, month)
    others = [k for k in kpis if k not in ("onboarding_completed", "contract_months")]
    ids = frame["account_id"].to_numpy()
    windows = recent_means_over(panel, others, rows, (RECENT_MONTHS, LONG_RUN))
    means = windows[RECENT_MONTHS].set_index("account_id").reindex(ids)
    level = windows[LONG_RUN].set_index("account_id").reindex(ids)
    tr = kpi_transforms(panel, others) if transforms is None else transforms
    cols = {k: tr[k].forward(means[k].to_numpy(dtype="float64")) for k in others if k in tr}
    cols |= {f"{k} (all months)": tr[k].forward(level[k].to_numpy(dtype="float64")) for k in others if k in tr}
    cols["log1p_tenure"] = np.log1p(frame["tenure"].to_numpy(dtype="float64"))
    for a in ("segment", "contract_type"):
        if a in frame:
            values = frame[a].astype(str).to_numpy()
            for v in sorted(set(values))[1:]:
                cols[f"{a}={v}"] = (values == v).astype("float64")
    return pd.DataFrame(cols)


def adjusted_difference(y: np.ndarray, treated: np.ndarray, X: np.ndarray, names: list[str]) -> dict:
    """Average effect of onboarding on churn within the horizon (risk difference, onboarded − not),
    adjusted for the covariates ``X``: augmented inverse probability weighting (doubly robust; Robins,
    Rotnitzky & Zhao 1994; statsmodels' ``TreatmentEffect.aipw`` estimator, :func:`aipw`) with a logistic
    propensity model and linear outcome models per group, standard errors from the moments' sandwich.
    Covariates are standardised and those that are (almost) linear combinations of others dropped
    (pivoted QR); the range of the propensities is reported (near 0 or 1: little overlap, wide
    interval). Not estimated with fewer than ADJUSTED_MIN_GROUP accounts or churns in a group."""
    n1, n0 = int(treated.sum()), int((~treated).sum())
    e1, e0 = int(y[treated].sum()), int(y[~treated].sum())
    if min(n1, n0, e1 + e0) < ADJUSTED_MIN_GROUP:
        return {"status": "not_estimable", "reason": (
            f"{n1} onboarded and {n0} not onboarded accounts with {e1 + e0} churns: fewer than "
            f"{ADJUSTED_MIN_GROUP} in a group")}
    keep, Z = _usable_columns(X)
    exog = add_constant(Z, has_constant="add")
    t = treated.astype("float64")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            # check_rank=False: no SVD of the cohort for the model's degrees of freedom, which nothing
            # reads (the columns are of full rank: _usable_columns); the same Newton steps and parameters
            sel = Logit(t, exog, check_rank=False).fit(disp=0, maxiter=200)
        if not sel.mle_retvals.get("converged", True):
            return {"status": "not_estimable", "reason": (
                "the propensity model did not converge (onboarding is almost determined by the other KPIs: "
                "too little overlap to compare like with like)")}
        p = sel.predict()
        r = aipw(y.astype("float64"), t, exog, p, sel.params)
    except (np.linalg.LinAlgError, ValueError, RuntimeError) as e:  # e.g. perfect separation
        return {"status": "not_estimable", "reason": f"the propensity or outcome model could not be fitted ({e})"}
    est, se = r["ate"], r["se_ate"]
    lo, hi = est - Z975 * se, est + Z975 * se
    if not all(np.isfinite([est, lo, hi])):
        return {"status": "not_estimable", "reason": "the adjusted estimate is not finite"}
    return {"status": "fitted", "method": AIPW_METHOD, "estimate": float(est), "ci_low": float(lo),
            "ci_high": float(hi), "p_value": float(2 * stats.norm.sf(abs(est / se))),
            "churn_if_all_onboarded": float(r["pom1"]), "churn_if_none_onboarded": float(r["pom0"]),
            "covariates": [names[j] for j in keep],
            "propensity_range": [float(p.min()), float(p.max())]}


AIPW_METHOD = "AIPW (doubly robust; sandwich standard errors)"


def aipw(y: np.ndarray, t: np.ndarray, X: np.ndarray, prob: np.ndarray, gamma: np.ndarray) -> dict:
    """AIPW average treatment effect (``ate``) and potential outcome means (``pom0``, ``pom1``) with the
    standard error of the effect (``se_ate``): statsmodels' ``TreatmentEffect.aipw()`` computed directly.

    The outcome models are OLS of ``y`` on ``X`` per group, by statsmodels' pseudo-inverse (the same
    parameters as its ``OLS.fit``); ``prob`` = Λ(Xγ), the fitted logit propensity (``gamma``). The
    estimates are ``aipw()``'s closed form (the exact root of its just-identified moment equations, where
    its GMM step starts and stays: the same floats). Its GMM covariance, inv(G' Ω⁻¹ G)/n with G the
    moments' Jacobian and Ω their covariance, is for a square invertible G the sandwich
    G⁻¹ Ω G⁻ᵀ / n = Σ ψᵢψᵢ' / n² with ψᵢ = G⁻¹ mᵢ the accounts' influence values; only the effect's row
    of G⁻¹ is needed, so the n × (moments) array of the moments and its cross-product are never made.
    G is the exact Jacobian (:func:`aipw_jacobian`). The moments are centred per column (statsmodels
    subtracts their grand mean: zero but for rounding at the root); the figures agree with statsmodels'
    to rounding (docs/methods.md, "Onboarding check"). Raises ``LinAlgError`` when a group's outcome model
    is not identified (its covariates of less than full rank): its predictions for the other group, and
    so the effect, would be one arbitrary choice among many (G is singular: no standard error)."""
    treat = t == 1
    n = len(y)
    X0, X1 = X[~treat], X[treat]
    (pinv0, s0), (pinv1, s1) = pinv_extended(X0), pinv_extended(X1)
    for s, group, label in ((s0, X0, "not onboarded"), (s1, X1, "onboarded")):
        rank = int((s > s.max() * max(group.shape) * np.finfo("float64").eps).sum())  # numpy's matrix_rank rule
        if rank < X.shape[1]:  # the group's fit is one of many: its predictions for the other group arbitrary
            raise np.linalg.LinAlgError(
                f"the outcome model of the {label} accounts is not identified: {len(group)} accounts, "
                f"their {X.shape[1]} covariates of rank {rank} (fewer accounts than covariates, or a covariate "
                "constant within the group)")
    b0 = pinv0 @ y[~treat]
    b1 = pinv1 @ y[treat]
    f0, f1 = X @ b0, X @ b1
    # aipw(return_results=False): the OLS residuals weighted by the (unclipped) propensities
    correct0 = ((y[~treat] - X0 @ b0) / (1 - prob[~treat])).sum() / n
    correct1 = ((y[treat] - X1 @ b1) / prob[treat]).sum() / n
    tmean0 = f0.mean() + correct0
    tmean1 = f1.mean() + correct1
    ate = tmean1 - tmean0
    params = np.concatenate(([ate, tmean0], b0, b1, gamma))
    J = aipw_jacobian(y, t, X, params, groups=(X0, X1))
    # the first two rows of G⁻¹, as columns (the effect's alone is read, but solved and multiplied out alone it
    # rounds differently in the last bits: LAPACK and BLAS order a one-column product otherwise)
    a = np.linalg.solve(J.T, np.eye(len(params))[:, :2])
    k = X.shape[1]
    pc = np.clip(prob, 0.01, 0.99)  # the moments clip the propensities
    r0, r1 = y - f0, y - f1
    tau0 = f0 + r0 / (1 - pc) * (1 - t)
    tau1 = f1 + r1 / pc * t
    # ψ = G⁻¹ m for the ATE and POM₀ rows: m = [τ₁ − τ₀ − ATE, τ₀ − POM₀, x r₀ (1 − t), x r₁ t, x (t − Λ)]
    xb = X @ np.hstack((a[2:2 + k], a[2 + k:2 + 2 * k], a[2 + 2 * k:]))  # x'a of each block's 2 rows
    psi = (np.outer(tau1 - tau0 - ate, a[0]) + np.outer(tau0 - tmean0, a[1]) + xb[:, 0:2] * (r0 * (1 - t))[:, None]
           + xb[:, 2:4] * (r1 * t)[:, None] + xb[:, 4:6] * (t - prob)[:, None])
    psi -= psi.mean(axis=0)
    cov = psi.T @ psi / n / n
    return {"ate": ate, "pom0": tmean0, "pom1": ate + tmean0, "se_ate": float(np.sqrt(cov[0, 0]))}


def aipw_jacobian(y: np.ndarray, t: np.ndarray, X: np.ndarray, params: np.ndarray, *,
                  groups: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Exact Jacobian (moments × parameters) of the mean of statsmodels' AIPW moment conditions
    (``_AIPWGMM.momcond``) at ``params`` = [ATE, POM₀, outcome model 0, outcome model 1, logit
    propensity] (outcome ``y``, treatment ``t``, covariates ``X`` with the constant, in any order of the
    accounts): what ``gradient_momcond`` approximates by central differences.

    With f_g = x'β_g, p the propensity (clipped to [0.01, 0.99], as the moments clip it), t the
    treatment: τ₀ = f₀ + (y − f₀)(1 − t)/(1 − p), τ₁ = f₁ + (y − f₁)t/p; the moments are τ₁ − τ₀ − ATE,
    τ₀ − POM₀, each group's OLS moments x(y − x'β_g) and the logit score x(t − Λ(x'γ)). So
    ∂τ₀/∂β₀ = x(1 − (1 − t)/(1 − p)), ∂τ₁/∂β₁ = x(1 − t/p), ∂τ₀/∂γ = (y − f₀)(1 − t)/(1 − p)² ∂p/∂γ,
    ∂τ₁/∂γ = −(y − f₁)t/p² ∂p/∂γ with ∂p/∂γ = Λ(1 − Λ)x inside the clip (0 where clipped); the OLS
    blocks −X_g'X_g/n and the score −X'diag(Λ(1 − Λ))X/n. ``groups``: (X of the untreated, X of the
    treated) when the caller has them (:func:`aipw`'s outcome models)."""
    k = X.shape[1]
    p0, p1, ps = params[2:2 + k], params[2 + k:2 + 2 * k], params[2 + 2 * k:]
    n = len(y)
    lam = 1.0 / (1.0 + np.exp(-(X @ ps)))
    p = np.clip(lam, 0.01, 0.99)
    slope = np.where((lam > 0.01) & (lam < 0.99), lam * (1 - lam), 0.0)  # ∂p/∂γ = slope · x
    f0, f1 = X @ p0, X @ p1
    w0, w1 = 1 - (1 - t) / (1 - p), 1 - t / p  # ∂τ₀/∂β₀ = w0 · x, ∂τ₁/∂β₁ = w1 · x
    a0, a1 = (y - f0) * (1 - t) / (1 - p) ** 2, -(y - f1) * t / p**2  # ∂τ₀/∂γ = a0 ∂p/∂γ, ∂τ₁/∂γ = a1 ∂p/∂γ
    s_b0, s_b1 = X.T @ w0, X.T @ w1
    s_g0, s_g = X.T @ (a0 * slope), X.T @ ((a1 - a0) * slope)
    q = len(ps)
    J = np.zeros((2 + 2 * k + q, 2 + 2 * k + q))
    b0, b1, g = slice(2, 2 + k), slice(2 + k, 2 + 2 * k), slice(2 + 2 * k, None)
    J[0, 0] = -1.0
    J[0, b0] = -(s_b0 / n)
    J[0, b1] = s_b1 / n
    J[0, g] = s_g / n
    J[1, 1] = -1.0
    J[1, b0] = s_b0 / n
    J[1, g] = s_g0 / n
    X0, X1 = (X[t != 1], X[t == 1]) if groups is None else groups
    J[b0, b0] = -(X0.T @ X0) / n
    J[b1, b1] = -(X1.T @ X1) / n
    J[g, g] = -(X.T @ (X * (lam * (1 - lam))[:, None])) / n
    return J


def _usable_columns(X: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Standardised columns of ``X`` (NaN = the column's mean) that are not constant and not (near)
    linear combinations of the others (pivoted QR, |R_jj| > 1e-6 |R_00|), in their original order."""
    X = np.array(X, dtype="float64")
    mean = np.nanmean(X, axis=0) if len(X) else np.zeros(X.shape[1])
    X = np.where(np.isfinite(X), X, mean)
    sd = X.std(axis=0)
    cand = [j for j in range(X.shape[1]) if sd[j] > 1e-12]
    if not cand:
        return [], np.empty((len(X), 0))
    Xc = X[:, cand]
    Z = (Xc - Xc.mean(axis=0)) / sd[cand]
    del Xc
    # the pivoted factorisation (LAPACK geqp3) of [1, Z], built in the Fortran order it works in (no copy for
    # it), without forming Q, which nothing reads, and with R of the top rows only (mode "raw": mode "r" makes
    # the upper triangle of the whole n × k array, a copy of the cohort's covariates of which k rows are read)
    A = np.empty((len(Z), 1 + Z.shape[1]), order="F")
    A[:, 0] = 1.0
    A[:, 1:] = Z
    r, piv = scipy.linalg.qr(A, mode="raw", pivoting=True, overwrite_a=True)[1:]  # (qr, tau) not kept: A is freed
    del A
    diag = np.abs(np.diag(r))
    good = sorted(int(piv[i]) - 1 for i in range(len(diag)) if diag[i] > 1e-6 * diag[0] and piv[i] > 0)
    return [cand[j] for j in good], Z[:, good]


def onboarding_verdict(ci_low: float, ci_high: float, margin: float = EQUIVALENCE_MARGIN) -> str:
    """From the 95% interval of churn(onboarded) − churn(not): "urban_legend" when it lies inside
    ±margin (any difference is too small to matter, significant or not); "driver" when it lies below 0
    and reaches beyond −margin; "inconclusive" otherwise (too wide to tell, or onboarded churn more)."""
    if ci_low > -margin and ci_high < margin:
        return "urban_legend"
    if ci_high < 0:
        return "driver"
    return "inconclusive"


def _score_after_start(panel: pd.DataFrame, model: ScoreModel, horizon: int, persistence: dict | None = None) -> dict:
    """Health score at tenure 12 (onboarding's own points taken out and the rest rescaled to 0–100).
    ``persistence``: the KPIs' ``forecast.Persistence`` on ``panel`` when already estimated (the score's at as_of)."""
    rows = (panel["tenure"] == ONBOARDING_SCORE_TENURE).to_numpy()
    kpis = list(dict.fromkeys([*model.kpi_names(), "onboarding_completed"]))
    feats, _ = kpi_forecasts(panel, kpis, rows, model.design.transforms, horizon, model.lag,
                             persistence=None if persistence is None else dict(persistence))
    for c in ("segment", "contract_type"):
        feats[c] = panel[c].to_numpy()[rows]
    for k, share in recent_missing(panel, model.design.indicators, rows).items():
        feats[MISSING_PREFIX + k] = share
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
        res["difference"] = {
            "estimate": float(diff),
            "ci_low": float(diff - q * np.sqrt(va + vb)),
            "ci_high": float(diff + q * np.sqrt(va + vb)),
        }
        if a.mean() > 0 and b.mean() > 0:
            lr = np.log(b.mean() / a.mean())
            se = np.sqrt(vb / b.mean() ** 2 + va / a.mean() ** 2)
            res["ratio_not_to_onboarded"] = {
                "estimate": float(np.exp(lr)),
                "ci_low": float(np.exp(lr - 1.96 * se)),
                "ci_high": float(np.exp(lr + 1.96 * se)),
            }
        ga, gb = 100 - a.mean(), 100 - b.mean()
        if ga > 0:
            res["shortfall_ratio_not_to_onboarded"] = float(gb / ga)
    return res
