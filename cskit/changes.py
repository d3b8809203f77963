"""Since the last diagnosis: what changed between an earlier cskit output folder (params ``previous``)
and this run (results/changes.json; docs/methods.md, "Since the last diagnosis").

Both sides are read from their result files, so any earlier run compares, and a rerun with the same
inputs reports no change by construction. Compared: the headline metrics (kpi_summary.json), the
triggers (drivers.csv: flagged then and now, each with its interval, and whether the change is beyond
the noise of the two estimates), the improvement-potential ranks (potential.csv, by d_ltv), the tier
migrations of the accounts scored both times (health_scores.csv; churn from this run's data), and
what became of the accounts the last playbook named (playbook.csv).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtri  # (not scipy.stats: ~1 s to import, for one quantile)

from cskit.client import ClientData
from cskit.errors import CskitError
from cskit.result import six_digits, write_json

REQUIRED = ("kpi_summary.json", "health_scores.csv", "drivers.csv")
TIER_ORDER = {"red": 0, "yellow": 1, "green": 2}
NOISE_Z = float(ndtri(0.975))  # the normal's 97.5% quantile, bit for bit scipy.stats.norm.ppf(0.975)


def results_folder(previous: str | Path) -> Path:
    """The results/ folder of an earlier cskit run (``previous`` is its client folder or results/ itself);
    raises CskitError (exit 2) when it does not exist or is not a cskit output folder."""
    p = Path(previous).expanduser()
    if not p.exists():
        raise CskitError(
            f"params 'previous': the folder {p} does not exist. Fix: give the output folder of an earlier "
            "`cskit run` (e.g. output/demo-2026-03, the folder holding results/), or leave 'previous' empty.")
    for cand in (p / "results", p):
        if cand.is_dir() and all((cand / f).is_file() for f in REQUIRED):
            return cand
    missing = [f for f in REQUIRED if not (p / "results" / f).is_file() and not (p / f).is_file()]
    raise CskitError(
        f"params 'previous': {p} is not a cskit output folder (results/{', results/'.join(missing)} not found). "
        "Fix: give the folder an earlier `cskit run` wrote (it holds results/kpi_summary.json, "
        "results/health_scores.csv, …), or leave 'previous' empty.")


def read_results(folder: str | Path) -> dict:
    """The result files the comparison uses, from a results/ folder (missing optional files → None)."""
    folder = Path(folder)

    def csv(name: str) -> pd.DataFrame | None:
        path = folder / name
        return pd.read_csv(path, dtype={"account_id": str}, keep_default_na=True) if path.is_file() else None

    summary = json.loads((folder / "kpi_summary.json").read_text(encoding="utf-8"))
    history = csv("health_history.csv")
    as_of = None
    if history is not None and len(history):
        as_of = str(history["month"].max())
    elif isinstance(summary.get("mrr"), dict):
        as_of = summary["mrr"].get("period")
    run = folder / "run.json"
    client = None
    if run.is_file():
        try:
            client = json.loads(run.read_text(encoding="utf-8")).get("params", {}).get("client")
        except (json.JSONDecodeError, AttributeError):
            client = None
    return {"folder": str(folder.parent if folder.name == "results" else folder), "as_of": as_of, "history": history,
            "client": client,
            "summary": summary, "drivers": csv("drivers.csv"), "potential": csv("potential.csv"),
            "scores": csv("health_scores.csv"), "playbook": csv("playbook.csv")}


# ---------------------------------------------------------------- the parts


def metric_changes(then: dict, now: dict) -> dict:
    """Every headline metric's value then and now and the change (now − then)."""
    out = {}
    for key in sorted(set(then) | set(now)):
        a = then.get(key, {}).get("value") if isinstance(then.get(key), dict) else None
        b = now.get(key, {}).get("value") if isinstance(now.get(key), dict) else None
        d = b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
        out[key] = {"then": a, "now": b, "change": d}
    return out


def _key(df: pd.DataFrame) -> pd.Series:
    seg = df["segment"].fillna("").astype(str) if "segment" in df else pd.Series("", index=df.index)
    return df["kpi"].astype(str) + "|" + df["outcome"].astype(str) + "|" + seg


def _estimate(row: pd.Series | None) -> dict | None:
    if row is None:
        return None
    trig = row.get("trigger")
    return {"effect": _as_float(row["effect"]), "ci_low": _as_float(row["ci_low"]),
            "ci_high": _as_float(row["ci_high"]), "q_value": _as_float(row.get("q_value")),
            "trigger": trig if isinstance(trig, str) and trig else ""}


def _as_float(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def beyond_noise(a: dict | None, b: dict | None) -> bool:
    """Whether two ratio estimates differ beyond their noise: |log b − log a| > 1.96 × √(se_a² + se_b²),
    each se from its 95% interval on the log scale (treating the two runs as independent, which
    overstates the noise of the difference: a "real change" is one that survives that)."""
    keys = ("effect", "ci_low", "ci_high")
    if not a or not b or any(e.get(k) is None or e.get(k) <= 0 for e in (a, b) for k in keys):
        return False
    se = [(np.log(e["ci_high"]) - np.log(e["ci_low"])) / (2 * NOISE_Z) for e in (a, b)]
    return bool(abs(np.log(b["effect"]) - np.log(a["effect"])) > NOISE_Z * np.hypot(*se))


def trigger_changes(then: pd.DataFrame | None, now: pd.DataFrame | None) -> dict:
    """Triggers flagged now and not then (appeared) and then and not now (disappeared), with both
    estimates and whether the change is beyond the noise (:func:`beyond_noise`)."""
    out = {"appeared": [], "disappeared": []}
    if then is None or now is None:
        return out
    a = then.assign(_k=_key(then)).set_index("_k")
    b = now.assign(_k=_key(now)).set_index("_k")
    flag = lambda df, k: k in df.index and isinstance(df.at[k, "trigger"], str) and bool(df.at[k, "trigger"])  # noqa: E731
    for k in sorted(set(a.index) | set(b.index)):
        was, isnow = flag(a, k), flag(b, k)
        if was == isnow:
            continue
        e_then = _estimate(a.loc[k]) if k in a.index else None
        e_now = _estimate(b.loc[k]) if k in b.index else None
        kpi, outcome, seg = k.split("|")
        rec = {"kpi": kpi, "outcome": outcome, "segment": seg, "then": e_then, "now": e_now,
               "beyond_noise": beyond_noise(e_then, e_now)}
        out["appeared" if isnow else "disappeared"].append(rec)
    return out


def potential_changes(then: pd.DataFrame | None, now: pd.DataFrame | None) -> dict:
    """Improvement-potential ranks by d_ltv (1 = largest) then and now; the KPIs whose rank moved, with
    their d_ltv and interval both times and whether the change of d_ltv is beyond the noise
    (:func:`difference_beyond_noise`), largest move first."""
    if then is None or now is None or "d_ltv" not in then or "d_ltv" not in now:
        return {"moved": []}

    def ranks(df: pd.DataFrame) -> pd.DataFrame:
        d = df[["kpi", "d_ltv", "d_ltv_lo", "d_ltv_hi"]].copy()
        d = d[pd.to_numeric(d["d_ltv"], errors="coerce").notna()]
        d = d.sort_values(["d_ltv", "kpi"], ascending=[False, True], kind="stable").reset_index(drop=True)
        d["rank"] = np.arange(1, len(d) + 1)
        return d.set_index("kpi")

    a, b = ranks(then), ranks(now)
    moved = []
    for k in a.index.intersection(b.index):
        if a.at[k, "rank"] != b.at[k, "rank"]:
            e1 = [_as_float(a.at[k, c]) for c in ("d_ltv", "d_ltv_lo", "d_ltv_hi")]
            e2 = [_as_float(b.at[k, c]) for c in ("d_ltv", "d_ltv_lo", "d_ltv_hi")]
            moved.append({"kpi": k, "rank_then": int(a.at[k, "rank"]), "rank_now": int(b.at[k, "rank"]),
                          "d_ltv_then": e1, "d_ltv_now": e2, "beyond_noise": difference_beyond_noise(e1, e2)})
    moved.sort(key=lambda r: (-abs(r["rank_now"] - r["rank_then"]), r["rank_now"], r["kpi"]))
    return {"moved": moved}


def difference_beyond_noise(a: list, b: list) -> bool:
    """Whether two estimates [value, lo, hi] (95% intervals) differ beyond their noise:
    |b − a| > 1.96 √(se_a² + se_b²), se = (hi − lo) / 3.92 (independence, as :func:`beyond_noise`).
    False when an interval is missing."""
    if any(x is None for x in (*a, *b)):
        return False
    se = [(e[2] - e[1]) / (2 * NOISE_Z) for e in (a, b)]
    return bool(abs(b[0] - a[0]) > NOISE_Z * np.hypot(*se))


def churned_since(data: ClientData, since: str | None) -> set[str]:
    """Accounts whose churn month lies after ``since`` (YYYY-MM) and up to this run's as_of."""
    churn = data.accounts.set_index("account_id")["churn_date"].dropna()
    if since is None:
        return set()
    month = churn.dt.to_period("M").astype(str)
    return set(month[month > since].index)


def tier_changes(then: pd.DataFrame | None, now: pd.DataFrame | None, churned: set[str]) -> dict:
    """Tier migrations of the accounts scored then: matrix then-tier → now-tier (or churned / not scored),
    counts worse / better, and the accounts newly red (not red then, red now)."""
    tiers = list(TIER_ORDER)
    matrix = {a: {b: 0 for b in [*tiers, "churned", "not_scored"]} for a in tiers}
    out = {"matrix": matrix, "worse": 0, "better": 0, "same": 0, "newly_red": [], "worse_accounts": []}
    if then is None or now is None:
        return out
    cur = now.set_index("account_id")["tier"]
    for acc, tier in zip(then["account_id"], then["tier"], strict=True):
        if tier not in matrix:
            continue
        if acc in cur.index:
            t = cur.at[acc]
            matrix[tier][t] += 1
            step = TIER_ORDER[t] - TIER_ORDER[tier]
            out["worse" if step < 0 else "better" if step > 0 else "same"] += 1
            if step < 0:
                out["worse_accounts"].append(acc)
            if t == "red" and tier != "red":
                out["newly_red"].append(acc)
        else:
            matrix[tier]["churned" if acc in churned else "not_scored"] += 1
    out["newly_red"].sort()
    out["worse_accounts"].sort()
    return out


FOLLOWUP = ("churned", "recovered", "still_red", "turned_red", "not_red", "not_scored")


def playbook_followup(then_book: pd.DataFrame | None, now: pd.DataFrame | None, churned: set[str]) -> dict:
    """What became of the accounts the last playbook named (red then, or falling then): churned since;
    recovered (red then, yellow or green now); still red; turned red (not red then, red now); not red
    (neither then nor now); not scored now (e.g. no revenue at as_of). Counts and the account lists."""
    out = {"named": 0, **{s: 0 for s in FOLLOWUP}, "accounts": {}}
    if then_book is None or now is None:
        return out
    cur = now.set_index("account_id")["tier"]
    was = then_book.drop_duplicates("account_id").set_index("account_id")["tier"]
    status = {}
    for acc, tier in was.items():
        if acc in churned:
            status[acc] = "churned"
        elif acc not in cur.index:
            status[acc] = "not_scored"
        elif cur.at[acc] == "red":
            status[acc] = "still_red" if tier == "red" else "turned_red"
        else:
            status[acc] = "recovered" if tier == "red" else "not_red"
    out["named"] = len(status)
    for s in FOLLOWUP:
        out[s] = sum(v == s for v in status.values())
    out["accounts"] = dict(sorted(status.items()))
    return out


def same_model_tiers(history: pd.DataFrame | None, then: str | None, now: str | None, churned: set[str]) -> dict | None:
    """Tier migrations under this run's score model (health_history.csv at the previous as_of and now):
    changes of the accounts' data only, not of the model (None when the previous as_of lies outside the
    history)."""
    if history is None or then is None or then not in set(history["month"]):
        return None
    return tier_changes(history[history["month"] == then], history[history["month"] == now], churned)


def compare(previous: dict, current: dict, data: ClientData) -> dict:
    """changes.json: ``previous`` and ``current`` are :func:`read_results` of the two runs; ``data`` is
    this run's client data (for the churn dates). ``no_change`` is true when nothing differs."""
    churned = churned_since(data, previous["as_of"])
    ch = {
        "previous": previous["folder"], "previous_as_of": previous["as_of"], "as_of": current["as_of"],
        "previous_client": previous.get("client"), "client": current.get("client"),
        "metrics": metric_changes(previous["summary"], current["summary"]),
        "triggers": trigger_changes(previous["drivers"], current["drivers"]),
        "potential": potential_changes(previous["potential"], current["potential"]),
        "tiers": tier_changes(previous["scores"], current["scores"], churned),
        "tiers_same_model": same_model_tiers(current["history"], previous["as_of"], current["as_of"], churned),
        "playbook": playbook_followup(previous["playbook"], current["scores"], churned),
    }
    same_metrics = all(m["change"] in (0, None) and m["then"] == m["now"] for m in ch["metrics"].values())
    t = ch["tiers"]
    ch["no_change"] = bool(
        same_metrics and not ch["triggers"]["appeared"] and not ch["triggers"]["disappeared"]
        and not ch["potential"]["moved"] and t["worse"] == 0 and t["better"] == 0
        and all(t["matrix"][a]["churned"] == 0 and t["matrix"][a]["not_scored"] == 0 for a in t["matrix"])
        and all(ch["playbook"][s] == 0 for s in ("churned", "recovered", "turned_red", "not_scored"))
        and previous["as_of"] == current["as_of"])
    return ch


def write_changes(changes: dict, results_dir: Path) -> None:
    """Write changes.json (the result files' JSON, floats to 6 significant digits)."""
    write_json(six_digits(changes), Path(results_dir) / "changes.json")
