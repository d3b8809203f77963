"""The health score over time: each account's score at each of the last months, the movers (accounts
whose score fell or that entered red, with the items that moved it), whether a drop is a warning
beyond the score level (validated out of time), and the CRM-ready playbook (docs/methods.md,
"Score history" and "Is a drop a warning?").

The history applies the score model fitted at ``as_of`` (its coefficients, points, tier cut-points and
the KPIs' persistence) to every account active at each month, with that month's KPIs and context (each
account's values up to that month only): the score at ``as_of`` is the snapshot of health_scores.csv,
exactly. The drop check does the same with the model of the out-of-time validation (fitted on the
months up to ``as_of − horizon``) and asks whether, at the same score level at that cut, accounts whose
score had fallen by ``alert_drop`` points over the ``alert_months`` before churned more in the horizon.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from cskit.client import ClientData
from cskit.health import (
    MIN_SCORE_EVENTS,
    TIERS,
    Health,
    ScoreModel,
    months_upto,
    outcome_after,
    score_rows,
    scoring_columns,
    tiers,
)
from cskit.models import fit_binomial
from cskit.panel import active_rows
from cskit.params import Params
from cskit.playbook import PLAYBOOK_COLUMNS, playbook
from cskit.result import StageResult, month_text, six_digits, write_csv, write_json
from cskit.stats import wilson

HISTORY_MONTHS = 12
MOVED_MIN_POINTS = 0.5  # an item "moved" the score when its points changed by at least this much
REASON_ITEMS = 3  # items named per mover (item_1..item_3 in health_movers.csv)
DROP_MIN_EVENTS = 5  # churn events among the accounts with a drop needed to judge a drop's warning
SCORE_UNIT = 10.0  # the drop check's score level and change are per 10 points
NO_WARNING_OR = 1.25  # a fall whose odds-ratio interval lies below this adds no warning worth an alert
HISTORY_HEAD = ["account_id", "month", "score", "tier"]
MOVER_HEAD = ["account_id", "account_name", "score_then", "score_now", "change", "tier_then", "tier_now",
              "falling", "entered_red"]
MOVER_COLUMNS = MOVER_HEAD + [f"{c}_{i}" for i in range(1, REASON_ITEMS + 1)
                              for c in ("item", "points", "value_then", "value_now")] + ["moved"]
PLAYBOOK_EXTRA = ["account_name", "change", "moved"]
PLAYBOOK_FILE_COLUMNS = PLAYBOOK_COLUMNS + PLAYBOOK_EXTRA  # playbook.csv


def history_months(as_of: pd.Timestamp, months: int = HISTORY_MONTHS) -> list[pd.Timestamp]:
    """The ``months`` month starts ending at ``as_of`` (oldest first)."""
    as_of = pd.Timestamp(as_of)
    return [as_of - pd.DateOffset(months=k) for k in range(months - 1, -1, -1)]


def points_column(item: str) -> str:
    """Column of health_history.csv holding an item's points."""
    return f"points_{item}"


def score_history(panel: pd.DataFrame, model: ScoreModel, months: list[pd.Timestamp], *, horizon: int,
                  lag: int, fitted_to: pd.Timestamp | None = None,
                  value_months: list[pd.Timestamp] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The score ``model`` gives every account active at each of ``months``, from that month's KPIs
    (each account's values up to the month) and context, with the same KPI forecast, points and tier
    cut-points as the snapshot (``cskit.health.score_at``): at the model's own month it is the snapshot.

    Returns (history, features): history = account_id, month, score, tier, one ``points_<item>`` column
    per score item; features = account_id, month and each KPI item's input value (the forecast the
    points are read from), on the same rows. Rows sorted by month, then account_id. ``fitted_to`` is
    the last month of the panel the model was fitted on (default: the last of ``months``): the KPIs'
    persistence is the model's, estimated on those months, whichever months are scored. ``value_months``
    (some of ``months``): the features of those months' rows only (those :func:`score_changes` reads).
    """
    last = pd.Timestamp(fitted_to) if fitted_to is not None else max(months)
    past = months_upto(panel, last, scoring_columns(panel, model))  # a copy (when not as_of) of what is read
    rows = np.zeros(len(past), dtype=bool)
    for m in months:
        rows |= active_rows(past, m)
    points: list[pd.DataFrame] = []
    frame, _ = score_rows(past, model, rows, horizon, lag, persistence=dict(model.persistence), points=points)
    s = frame["score"].to_numpy()
    pts = {k: part[k] for part in points for k in part}  # the points the score is the sum of
    items = [k for k in model.weights["kpi"] if k in pts]
    order = np.lexsort((frame["account_id"].to_numpy(), frame["month"].to_numpy()))
    s = s[order]
    ids, month = frame["account_id"].to_numpy()[order], frame["month"].to_numpy()[order]
    hist = pd.DataFrame({"account_id": ids, "month": month, "score": s, "tier": tiers(model, s)})
    for k in items:
        hist[points_column(k)] = np.round(pts[k].to_numpy(dtype="float64")[order], 2)
    if value_months is not None:  # the rows of those months, in the history's order
        order = order[np.isin(month, pd.DatetimeIndex(value_months).to_numpy())]
        ids, month = frame["account_id"].to_numpy()[order], frame["month"].to_numpy()[order]
    values = pd.DataFrame({"account_id": ids, "month": month}
                          | {c: frame[c].to_numpy()[order] for c in model.kpi_names()})
    return hist, values



def items_of(history: pd.DataFrame) -> list[str]:
    """The score items of a history table, in its column order (largest points first)."""
    return [c.removeprefix("points_") for c in history.columns if c.startswith("points_")]


def change_months(as_of: pd.Timestamp, months: int) -> list[pd.Timestamp]:
    """The two months :func:`score_changes` compares: ``as_of − months`` ("then") and ``as_of`` ("now")."""
    as_of = pd.Timestamp(as_of)
    return [as_of - pd.DateOffset(months=months), as_of]


def score_changes(history: pd.DataFrame, values: pd.DataFrame, *, as_of: pd.Timestamp, months: int,
                  drop: float, red: str = "red") -> pd.DataFrame:
    """Every account scored both at ``as_of − months`` and at ``as_of``: its score and tier then and now,
    the change, whether it fell by at least ``drop`` points (``falling``) or entered the red tier
    (``entered_red``), and the items that moved the score: ordered by their change in points, most
    negative first (those that moved by at least MOVED_MIN_POINTS), each with its input value then and
    now. Sorted by change, then account_id. Columns: MOVER_COLUMNS but ``account_name`` and ``moved``.
    """
    then_m, as_of = change_months(as_of, months)
    now = in_month(history, as_of).set_index("account_id")
    then = in_month(history, then_m).set_index("account_id")
    ids = now.index.intersection(then.index)
    now, then = now.loc[ids], then.loc[ids]
    change = np.round(now["score"].to_numpy() - then["score"].to_numpy(), 1)
    out = pd.DataFrame({
        "account_id": ids, "score_then": then["score"].to_numpy(), "score_now": now["score"].to_numpy(),
        "change": change, "tier_then": then["tier"].to_numpy(), "tier_now": now["tier"].to_numpy(),
        "falling": change <= -drop, "entered_red": (now["tier"] == red).to_numpy() & (then["tier"] != red).to_numpy(),
    })
    items = items_of(history)
    pts = lambda frame, k: frame[points_column(k)].to_numpy(dtype="float64")  # noqa: E731
    d = np.column_stack([pts(now, k) - pts(then, k) for k in items]) if items else np.zeros((len(ids), 0))
    d = np.round(d, 2)
    v_now = in_month(values, as_of).set_index("account_id").reindex(ids)
    v_then = in_month(values, then_m).set_index("account_id").reindex(ids)
    order = np.argsort(d, axis=1, kind="stable")
    names = np.asarray(items + [""], dtype=object)
    for i in range(REASON_ITEMS):
        col = order[:, i] if d.shape[1] > i else np.full(len(ids), len(items))
        di = d[np.arange(len(ids)), col] if d.shape[1] > i else np.full(len(ids), np.nan)
        moved = np.abs(di) >= MOVED_MIN_POINTS
        name = np.where(moved, names[col], "")
        out[f"item_{i + 1}"] = name
        out[f"points_{i + 1}"] = np.where(moved, di, np.nan)
        out[f"value_then_{i + 1}"] = _pick(v_then, name)
        out[f"value_now_{i + 1}"] = _pick(v_now, name)
    order = np.lexsort((out["account_id"].to_numpy(), out["change"].to_numpy()))  # by change, then account_id
    return out.take(order).reset_index(drop=True)


def in_month(frame: pd.DataFrame, month: pd.Timestamp) -> pd.DataFrame:
    """The rows of ``frame`` in ``month``, in their order: a slice (no pass over every row's month, no
    copy) when the frame is sorted by month, as :func:`score_history`'s tables are; else a selection."""
    m = frame["month"]
    if not m.is_monotonic_increasing:
        return frame[(m == month).to_numpy()]
    v, t = m.to_numpy(), pd.Timestamp(month).to_datetime64()
    return frame.iloc[np.searchsorted(v, t, "left"):np.searchsorted(v, t, "right")]


def find_movers(changes: pd.DataFrame) -> pd.DataFrame:
    """The movers among :func:`score_changes`: fell by at least the alert drop, or entered red."""
    return changes[changes["falling"] | changes["entered_red"]].reset_index(drop=True)


def _pick(values: pd.DataFrame, items: np.ndarray) -> np.ndarray:
    """Per row, the value of the column named in ``items`` (NaN where empty or not a KPI column)."""
    out = np.full(len(items), np.nan)
    for k in set(items) - {""}:
        if k in values.columns:
            m = items == k
            out[m] = values[k].to_numpy(dtype="float64")[m]
    return out


# ---------------------------------------------------------------- is a drop a warning?


def drop_effect(level: np.ndarray, change: np.ndarray, event: np.ndarray, *, drop: float,
                level_: float = 0.95) -> dict:
    """At the same score level, does a recent fall go with more churn? Two logistic models of churn
    within the horizon (``event``) on the score level (per SCORE_UNIT points) and (a) an indicator of a
    fall of at least ``drop`` points, (b) the score change (per SCORE_UNIT points of fall). Odds ratios
    with Wald intervals, p-values, and the event counts behind them (docs/methods.md)."""
    level, change, y = (np.asarray(a, dtype="float64") for a in (level, change, event))
    dropped = change <= -drop
    res: dict = {"accounts": int(len(y)), "events": int(y.sum()), "dropped": int(dropped.sum()),
                 "events_dropped": int(y[dropped].sum()), "alert_drop": drop}
    for name, mask in (("dropped_rate", dropped), ("other_rate", ~dropped)):
        k, n = int(y[mask].sum()), int(mask.sum())
        lo, hi = wilson(k, n) if n else (np.nan, np.nan)
        res[name] = {"n": n, "churned": k, "rate": k / n if n else None, "ci_low": lo, "ci_high": hi}
    z = stats.norm.ppf(0.5 + level_ / 2)
    ones = np.ones(len(y))
    for key, x, names in (("indicator", dropped.astype("float64"), "drop"),
                          ("per_10_points_fall", -change / SCORE_UNIT, "fall")):
        if y.sum() < MIN_SCORE_EVENTS or y.sum() == len(y) or np.ptp(x) == 0:
            res[key] = {"status": "not_estimable", "reason": "no variation in churn or in the drop"}
            continue
        fit = fit_binomial(y, np.column_stack([ones, level / SCORE_UNIT, x]), link="logit",
                           names=["intercept", "score_level", names])
        b, se = float(fit.coef[2]), float(fit.se[2])
        with np.errstate(over="ignore"):  # under separation b and se run away: the interval is unbounded (null)
            res[key] = {"status": "fitted" if fit.converged else "not_estimable", "odds_ratio": float(np.exp(b)),
                        "ci_low": float(np.exp(b - z * se)), "ci_high": float(np.exp(b + z * se)),
                        "p_value": float(2 * stats.norm.sf(abs(b / se))) if se > 0 else None,
                        "score_level_odds_ratio": float(np.exp(fit.coef[1]))}
    res["verdict"], res["reason"], res["basis"] = drop_verdict(res)
    return res


def drop_verdict(res: dict) -> tuple[str, str, str | None]:
    """(verdict, reason, basis). The basis is the fall indicator when at least DROP_MIN_EVENTS accounts
    that fell by the alert drop churned, else the score change per SCORE_UNIT points of fall (the drop
    rule itself is then too rare to judge on its own). "warning": the basis's odds-ratio interval lies
    above 1; "no_added_warning": it lies below NO_WARNING_OR (a fall adds at most a small rise in the
    odds at the same score level); "inconclusive" otherwise; "not_estimable" when neither model fits."""
    ind, cont = res.get("indicator", {}), res.get("per_10_points_fall", {})
    if res["events_dropped"] >= DROP_MIN_EVENTS and ind.get("status") == "fitted":
        basis, e = "indicator", ind
    elif cont.get("status") == "fitted":
        basis, e = "per_10_points_fall", cont
    else:
        return "not_estimable", "the churn model on score level and change cannot be fitted", None
    what = (f"a fall of {res['alert_drop']:g}+ points" if basis == "indicator"
            else f"each {SCORE_UNIT:g} points of fall ({res['events_dropped']} churn events among the accounts that "
                 f"fell by {res['alert_drop']:g}+, fewer than {DROP_MIN_EVENTS}: judged on the change itself)")
    if e["ci_low"] > 1:
        return "warning", f"the odds-ratio interval of {what} lies above 1 at the same score level", basis
    if e["ci_high"] < NO_WARNING_OR:
        return "no_added_warning", (f"the odds-ratio interval of {what} lies below {NO_WARNING_OR:g}: the score level "
                                    "already carries the risk"), basis
    return "inconclusive", f"the odds-ratio interval of {what} includes 1 and reaches {NO_WARNING_OR:g}", basis


def drop_check(panel: pd.DataFrame, cut_model: ScoreModel | None, cut: pd.Timestamp, *, horizon: int, lag: int,
               months: int, drop: float, scores: pd.DataFrame | None = None) -> dict:
    """:func:`drop_effect` out of time: the validation model (fitted on the months up to ``cut``) scores
    the accounts active at ``cut`` and ``months`` before; the outcome is churn within ``horizon`` months
    after ``cut``. ``scores``: those scores when already made (``Health.cut_scores``: account_id, month,
    score, by month then account_id), read when they are of these two months, not made again."""
    head = {"cut": cut.strftime("%Y-%m"), "alert_months": months, "alert_drop": drop, "horizon_months": horizon}
    if cut_model is None:
        return head | {"verdict": "not_estimable", "reason": "the score could not be validated out of time"}
    before = cut - pd.DateOffset(months=months)
    if scores is not None and scores["month"].isin([before, cut]).all():
        hist = scores
    else:
        hist, _ = score_history(panel, cut_model, [before, cut], horizon=horizon, lag=lag, fitted_to=cut)
    now = in_month(hist, cut).set_index("account_id")["score"]
    then = in_month(hist, before).set_index("account_id")["score"]
    ids = now.index.intersection(then.index)
    out = outcome_after(panel, pd.Series(ids), cut, horizon)
    return head | drop_effect(now.loc[ids].to_numpy(), (now.loc[ids] - then.loc[ids]).to_numpy(),
                              out["event"].to_numpy(), drop=drop)


def change_summary(change: np.ndarray, *, drop: float) -> dict:
    """How far scores move over the alert window: accounts, how many fell by ``drop``+ points
    (``falling``), how many fell at all (``fell``: a 1% quantile of 0 does not say none fell when fewer
    than 1% did), and the 1%, 5%, 50% quantiles of the change (so the report can say when the alert
    threshold is out of reach of this score, which moves slowly when it forecasts churn from each
    account's level)."""
    change = np.asarray(change, dtype="float64")
    if not len(change):
        return {"accounts": 0, "falling": 0, "fell": 0}
    q = np.quantile(change, [0.01, 0.05, 0.5])
    return {"accounts": int(len(change)), "falling": int((change <= -drop).sum()), "fell": int((change < 0).sum()),
            "q01": float(q[0]), "q05": float(q[1]), "median": float(q[2])}


# ---------------------------------------------------------------- report tables


def tier_mix(history: pd.DataFrame) -> pd.DataFrame:
    """Accounts per tier and month: month, red, yellow, green, and the shares (share_red, …)."""
    month, months = pd.factorize(history["month"].to_numpy(), sort=True)  # one count per (month, tier) cell
    tier = pd.Categorical(history["tier"].to_numpy(), categories=list(TIERS)).codes.astype("int64")
    k, ok = len(TIERS), tier >= 0
    counts = np.bincount(month[ok] * k + tier[ok], minlength=len(months) * k).reshape(len(months), k)
    out = pd.DataFrame({"month": months})
    for j, t in enumerate(TIERS):
        out[t] = counts[:, j]
    total = counts.sum(axis=1)
    for j, t in enumerate(TIERS):
        out[f"share_{t}"] = counts[:, j] / np.maximum(total, 1)
    return out


def score_quantiles(history: pd.DataFrame, q: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)) -> pd.DataFrame:
    """The score distribution by month: month, mean and the quantiles q10, q25, q50, q75, q90."""
    g = history.groupby("month", sort=True)["score"]
    out = g.mean().rename("mean").to_frame()
    qs = g.quantile(list(q)).unstack()  # every quantile in one pass over the groups
    for x in q:
        out[f"q{round(100 * x)}"] = qs[x].to_numpy()
    return out.reset_index()


# ---------------------------------------------------------------- the stage


@dataclass(repr=False)
class HealthHistory(StageResult):
    """The score over time (DESIGN §6: health_history.csv, health_movers.csv; also health_drops.json
    and the CRM-ready playbook.csv)."""

    history: pd.DataFrame  # HISTORY_HEAD + points_<item>
    movers: pd.DataFrame  # MOVER_COLUMNS
    drops: dict
    playbook: pd.DataFrame  # PLAYBOOK_COLUMNS + PLAYBOOK_EXTRA: red-tier and moving accounts
    tier_mix: pd.DataFrame = field(default_factory=pd.DataFrame)
    quantiles: pd.DataFrame = field(default_factory=pd.DataFrame)
    status: str = "fitted"  # "fitted" | "not_estimable" (cskit.result: one status vocabulary)
    reason: str | None = None

    @property
    def estimable(self) -> bool:
        """Whether the score history was made (``status == "fitted"``): what the report asks."""
        return self.status == "fitted"

    def summary_items(self) -> dict:
        return {"status": self.status, "rows": int(len(self.history)), "movers": int(len(self.movers)),
                "drop_verdict": self.drops.get("verdict")}

    def write(self, results_dir: Path) -> None:
        results_dir = Path(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        hist = self.history.copy(deep=False)  # its month as text; every other column as it is
        hist["month"] = month_text(hist["month"])
        write_csv(hist, results_dir / "health_history.csv")
        write_csv(self.movers, results_dir / "health_movers.csv")
        write_csv(self.playbook, results_dir / "playbook.csv")
        write_json(six_digits(self.drops), results_dir / "health_drops.json")


def _empty(reason: str) -> HealthHistory:
    return HealthHistory(
        history=pd.DataFrame(columns=HISTORY_HEAD), movers=pd.DataFrame(columns=MOVER_COLUMNS),
        drops={"verdict": "not_estimable", "reason": reason}, playbook=pd.DataFrame(columns=PLAYBOOK_FILE_COLUMNS),
        status="not_estimable", reason=reason)


def track_health(panel: pd.DataFrame, data: ClientData, params: Params, health: Health) -> HealthHistory:
    """Score history of the last HISTORY_MONTHS months, movers over ``params.alert_months``, the drop
    check, and the playbook of every red or moving account (what moved, what to talk about)."""
    from cskit.narrative import kpi_labels, mover_reason

    if not health.estimable or health.model is None:
        return _empty(health.reason or "the health score is not estimable")
    H, lag, as_of = params.horizon_months, params.kpi_lag_months, pd.Timestamp(data.as_of)
    model = health.model
    hist, values = score_history(panel, model, history_months(as_of), horizon=H, lag=lag, fitted_to=as_of,
                                 value_months=change_months(as_of, params.alert_months))
    names = data.account_names()
    changes = score_changes(hist, values, as_of=as_of, months=params.alert_months, drop=params.alert_drop)
    movers = find_movers(changes)
    named = changes[changes["account_id"].isin(movers["account_id"]) | (changes["tier_now"] == "red")].copy()
    named.insert(1, "account_name", named["account_id"].map(names).fillna("").to_numpy())
    labels = kpi_labels(data.catalogue, params.language)
    named["moved"] = [mover_reason(r, labels, params.language) for r in named.to_dict("records")]
    movers = named[named["account_id"].isin(movers["account_id"])].reset_index(drop=True)
    # the validation model's cut and horizon (shorter than H when the data are: health.validation_horizon)
    Hv = int(health.validation.get("horizon_months", H))
    cut = as_of - pd.DateOffset(months=Hv)
    drops = drop_check(panel, health.cut_model, cut, horizon=Hv, lag=lag, months=params.alert_months,
                       drop=params.alert_drop, scores=health.cut_scores)
    drops["changes_now"] = change_summary(changes["change"].to_numpy(), drop=params.alert_drop)
    book = playbook(model, health.features, include=movers["account_id"], static=data.static_kpis)
    book["account_name"] = book["account_id"].map(names).fillna("").to_numpy()
    moved = named.set_index("account_id")
    book["change"] = book["account_id"].map(moved["change"]).to_numpy(dtype="float64")
    book["moved"] = book["account_id"].map(moved["moved"]).fillna("").to_numpy()
    return HealthHistory(history=hist, movers=movers[MOVER_COLUMNS], drops=drops,
                         playbook=book[PLAYBOOK_FILE_COLUMNS], tier_mix=tier_mix(hist),
                         quantiles=score_quantiles(hist))
