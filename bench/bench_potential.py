"""Benchmark of the improvement-potential stage: the whole stage with its intervals vs the naive way.

    python bench/bench_potential.py --accounts 1000 10000 100000 [--bootstrap 200] [--resamples 3] [--out FILE]

For each size, a simulated client of N organic accounts (plus the accounts they refer) × 24 months:

- stage: ``improvement_potential`` as the pipeline runs it (4 GLM fits, exact point projection of every
  active account, ``bootstrap`` coefficient draws projected for every KPI);
- without intervals: the same with ``bootstrap: 0`` (fits + point projection), so draws = stage − this;
- naive: a full refit per bootstrap resample — resample accounts with replacement, rebuild their panel
  rows, refit the four models and project again. Only ``--resamples`` resamples are timed; their mean
  time × ``bootstrap`` (plus one run without intervals for the estimate itself) is the extrapolated
  naive time, and the table says so.

Figures are ratios measured in one run (DESIGN §8). BLAS is pinned to one thread: on a shared 2-core
machine OpenBLAS's default threads oversubscribe the cores and slow the fits down 10×.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cskit.loading import client_from_frames  # noqa: E402
from cskit.panel import build_panel, kpi_columns  # noqa: E402
from cskit.params import Params  # noqa: E402
from cskit.potential import improvement_potential  # noqa: E402
from cskit.simulate import simulate_client  # noqa: E402


def resample_panel(panel: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The panel rows of accounts drawn with replacement (a cluster bootstrap); a repeated account
    gets a new id so that every account's months stay one contiguous block."""
    ids, start, count = np.unique(panel["account_id"].to_numpy(), return_index=True, return_counts=True)
    pick = rng.integers(0, len(ids), len(ids))
    rows = np.concatenate([np.arange(start[i], start[i] + count[i]) for i in pick])
    out = panel.iloc[rows].reset_index(drop=True)
    copy = np.repeat(np.arange(len(pick)), count[pick])
    out["account_id"] = out["account_id"].to_numpy() + "#" + copy.astype(str)
    return out


def timed(f, *args, **kw):
    t = time.perf_counter()
    out = f(*args, **kw)
    return out, time.perf_counter() - t


def bench(n: int, bootstrap: int, resamples: int, seed: int) -> dict:
    sim = simulate_client(n, 24, seed=seed, mc_paths=0)
    params = Params(bootstrap=bootstrap, seed=seed)
    data = client_from_frames(sim.tables, params)
    panel = build_panel(data)
    kpis = kpi_columns(data)
    pot, t_stage = timed(improvement_potential, panel, data, params, kpis)
    no_ci = params.model_copy(update={"bootstrap": 0})
    _, t_point = timed(improvement_potential, panel, data, no_ci, kpis)
    rng = np.random.default_rng(seed)
    t_resample = []
    for _ in range(resamples):
        boot = resample_panel(panel, rng)
        _, t = timed(improvement_potential, boot, data, no_ci, kpis)
        t_resample.append(t)
    t_naive = t_point + bootstrap * float(np.mean(t_resample))
    return {
        "accounts": n,
        "active at as_of": len(pot.accounts),
        "panel rows": len(panel),
        "stage (s)": t_stage,
        "fits + point (s)": t_point,
        "draws share": max(t_stage - t_point, 0.0) / t_stage,
        "naive, extrapolated (s)": t_naive,
        "speed-up vs naive": t_naive / t_stage,
    }


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:,}" if isinstance(v, (int, np.integer)) else f"{v:.2f}" if v < 100 else f"{v:,.0f}"  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=3, help="naive resamples actually timed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    a = ap.parse_args(argv)
    rows = []
    for n in a.accounts:
        rows.append(bench(n, a.bootstrap, a.resamples, a.seed))
        print(f"done {n:,} accounts", flush=True)
    text = (
        f"Improvement potential, {a.bootstrap} draws, 24 months; naive = full refit per resample, "
        f"{a.resamples} resamples timed and extrapolated to {a.bootstrap}.\n\n" + markdown(rows)
    )
    print(text)
    if a.out:
        a.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
