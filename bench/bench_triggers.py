"""Benchmark of the triggers stage (``cskit.triggers.find_triggers``) against the naive ways, in one run.

For each size, a simulated client of N accounts x 24 months (``cskit.simulate``, seed 0) is loaded and
turned into the panel; then, on that same panel, we time
  - ``find_triggers``: the whole stage (3 multivariable models incl. the GEE, lead–lag 0–6 for every KPI,
    Spearman, BH) for every KPI;
  - the naive RT: lifelines' ``CoxTimeVaryingFitter``, one KPI at a time (KPI at t − 1, standardised;
    intervals (tenure, tenure + 1] of the at-risk rows) — churn only, unadjusted. Filling the RT rows
    of drivers.csv that way (effect at lag 1 and the best lag over 0–6) takes 7 fits per KPI: the
    "naive RT, 7 lags" column is the measured lag-1 time × 7 (the fits differ only in the shifted
    column). Above ``--cox-all-below`` accounts only ``--cox-kpis`` KPIs are fitted and the time is
    extrapolated linearly to all KPIs (the table says so);
  - the CRTT model alone: ``cskit.models.fit_gee`` vs statsmodels' ``GEE`` (exchangeable) on the same
    design; statsmodels is skipped above ``--sm-gee-below`` accounts (it loops over clusters in Python).
Figures to quote are the ratios (DESIGN §8); seconds are shown for context only.

    python bench/bench_triggers.py --accounts 1000 10000 100000 [--out bench/results_drivers.md]

On a shared machine run it with OPENBLAS_NUM_THREADS=1: multi-threaded BLAS on oversubscribed cores
spends most of its time waiting (measured here: 4x the CPU time on the same work).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cskit.loading import client_from_frames  # noqa: E402
from cskit.models import (  # noqa: E402
    design_matrix,
    fit_gee,  # noqa: E402
    kpi_transforms,
)
from cskit.panel import (  # noqa: E402
    add_lags,
    build_panel,
    kpi_columns,
    outcome_rows,  # noqa: E402
)
from cskit.params import Params  # noqa: E402
from cskit.simulate import simulate_client  # noqa: E402
from cskit.triggers import find_triggers  # noqa: E402


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def naive_cox(panel: pd.DataFrame, kpis: list[str], lag: int) -> None:
    """One lifelines CoxTimeVaryingFitter per KPI on the churn rows (the naive RT)."""
    from lifelines import CoxTimeVaryingFitter

    rows, y = outcome_rows(panel, "churn", lag)
    base = pd.DataFrame({
        "id": panel.loc[rows, "account_id"].to_numpy(),
        "start": panel.loc[rows, "tenure"].to_numpy(dtype=float),
        "event": y,
    })
    base["stop"] = base["start"] + 1.0
    lagged = add_lags(panel, kpis, lag).to_numpy()[rows]
    for j in range(len(kpis)):
        x = lagged[:, j]
        ok = np.isfinite(x)
        df = base[ok].assign(x=(x[ok] - x[ok].mean()) / x[ok].std())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            CoxTimeVaryingFitter().fit(df, id_col="id", event_col="event", start_col="start", stop_col="stop")


def renewal_design(panel: pd.DataFrame, kpis: list[str], lag: int):
    rows, y = outcome_rows(panel, "renewal", lag)
    design = design_matrix(panel, rows, kpis, lag, kpi_transforms(panel, kpis))
    return y, design.X, panel["account_id"].to_numpy()[rows]


def statsmodels_gee(y, X, groups) -> None:
    import statsmodels.api as sm

    order = np.argsort(groups, kind="stable")
    sm.GEE(y[order], X[order], groups=groups[order], family=sm.families.Binomial(),
           cov_struct=sm.cov_struct.Exchangeable()).fit()


def run(n_accounts: int, args) -> dict:
    sim = simulate_client(n_accounts, 24, seed=0, mc_paths=0)
    params = Params()
    data = client_from_frames(sim.tables, params)
    panel = build_panel(data)
    kpis = kpi_columns(data)
    _, t_stage = timed(find_triggers, panel, params, kpis)
    cox_kpis = [k for k in kpis if k != "contract_months"]
    fitted = cox_kpis if n_accounts < args.cox_all_below else cox_kpis[: args.cox_kpis]
    _, t_cox = timed(naive_cox, panel, fitted, params.kpi_lag_months)
    t_cox_all = t_cox * len(cox_kpis) / len(fitted)
    y, X, groups = renewal_design(panel, kpis, params.kpi_lag_months)
    _, t_gee = timed(fit_gee, y, X, groups, "exchangeable")
    t_sm = np.nan
    if n_accounts < args.sm_gee_below:
        _, t_sm = timed(statsmodels_gee, y, X, groups)
    return {
        "accounts": n_accounts, "panel rows": len(panel), "KPIs": len(kpis),
        "stage s": t_stage, "naive RT lag 1 s": t_cox_all,
        "Cox KPIs fitted": f"{len(fitted)}/{len(cox_kpis)}" + ("" if fitted == cox_kpis else " (extrapolated)"),
        "naive RT lag 1 ÷ stage": t_cox_all / t_stage,
        "naive RT 7 lags ÷ stage": 7 * t_cox_all / t_stage,
        "fit_gee s": t_gee, "statsmodels GEE s": t_sm, "statsmodels GEE ÷ fit_gee": t_sm / t_gee,
    }


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append("—" if np.isnan(v) else (f"{v:.1f}×" if "÷" in c else f"{v:.2f}"))
            else:
                cells.append(f"{v:,}" if isinstance(v, (int, np.integer)) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--cox-all-below", type=int, default=50000, help="fit every KPI's Cox model below this size")
    ap.add_argument("--cox-kpis", type=int, default=3, help="KPIs fitted (then extrapolated) at larger sizes")
    ap.add_argument("--sm-gee-below", type=int, default=50000, help="run statsmodels' GEE below this size")
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = ap.parse_args()
    table = markdown(pd.DataFrame([run(n, args) for n in args.accounts]))
    text = (
        "## Triggers stage (RT / CRTT / UCT) vs the naive ways\n\n"
        "Simulated client (cskit.simulate, seed 0), N accounts x 24 months; ratios measured in one run "
        f"(OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs).\n"
        "Stage = the whole find_triggers (churn, renewal GEE and expansion models, lead-lag 0-6, Spearman, "
        "BH) for every KPI. Naive RT = lifelines CoxTimeVaryingFitter, one KPI at a time, churn only, "
        "unadjusted; '7 lags' = x 7 for the lead-lag column (extrapolated). It does a fraction of the "
        "stage's work: ratios > 1 mean the stage is faster.\n\n" + table + "\n"
    )
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
