"""Whole-kit benchmark (DESIGN §8): ``python bench/run.py --accounts 1000 10000 100000``.

For each size, a synthetic client (``cskit.simulate``, N organic accounts × 24 months, seeded) is
written as CSVs, then **one fresh Python process per size** measures, in the same run:

- the floor: DuckDB's bare read of accounts.csv, revenue.csv and kpis.csv into tables (best of 3);
- every stage of ``cskit.analyse`` (load, panel, metrics + survival, drivers, potential, health) and
  ``Diagnosis.write``, with the pipeline's own stage clock;
- the peak resident memory of that process (``resource.getrusage``: the whole analysis, not a sample);
- at the sizes up to ``--render-max`` (default: the smallest), the notebook render as ``cskit run``
  does it (papermill + HTML), whose time includes the kernel re-running the analysis.

The headline **floor ratio** = (analyse + write) ÷ DuckDB bare read. Figures are ratios and shares
within one run; absolute seconds are printed for context only. BLAS is pinned to one thread, as
``cskit run`` does, so the timings are those of the consultant's command. The naive comparisons
(lifelines' CoxTimeVaryingFitter per KPI, pandas loops, refit-per-resample bootstrap) are in
``bench/bench_load.py``, ``bench/bench_triggers.py`` and ``bench/bench_potential.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ["load", "panel", "metrics", "drivers", "potential", "health", "write", "other"]
THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def duckdb_read(folder: Path) -> None:
    """The physical floor: read the three required tables into DuckDB tables."""
    import duckdb

    con = duckdb.connect()
    for name in ("accounts", "revenue", "kpis"):
        con.execute(f"create table {name} as select * from read_csv('{folder / (name + '.csv')}')")
    con.close()


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def simulate(n_accounts: int, months: int, seed: int, folder: Path) -> dict:
    """Write the synthetic client; return its table sizes."""
    from cskit.simulate import simulate_client

    sim = simulate_client(n_accounts=n_accounts, n_months=months, seed=seed, mc_paths=0)
    sim.write(folder)
    return {name: len(df) for name, df in sim.tables.items()}


def measure_one(data: Path, out: Path, bootstrap: int, seed: int, render: bool) -> dict:
    """Run in a fresh process: floor, analysis stages, write, peak memory, optional render."""
    import cskit
    import cskit.health
    import cskit.loading
    import cskit.metrics
    import cskit.potential
    import cskit.survival
    import cskit.triggers  # noqa: E401,F401

    params = cskit.validate_params({"client": "bench", "data": str(data), "bootstrap": bootstrap, "seed": seed})
    floor = best_of(lambda: duckdb_read(data))
    timings: dict = {}
    start = time.perf_counter()
    dx = cskit.analyse(params, timings=timings)
    write_start = time.perf_counter()
    dx.write(out / "bench")
    timings["write"] = time.perf_counter() - write_start
    total = time.perf_counter() - start
    timings["other"] = total - sum(timings.values())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"floor": floor, "stages": timings, "total": total, "peak_mb": peak_mb,
              "panel_rows": int(len(dx.panel)), "accounts": int(dx.panel["account_id"].nunique())}
    if render:
        from cskit.cli import execute

        start = time.perf_counter()
        execute(params, out / "bench", html=True)
        result["render"] = time.perf_counter() - start
    return result


def child(args: argparse.Namespace) -> None:
    res = measure_one(Path(args.data), Path(args.out), args.bootstrap, args.seed, args.render)
    Path(args.json).write_text(json.dumps(res, indent=2), encoding="utf-8")


def run_size(n: int, args: argparse.Namespace, workdir: Path) -> dict:
    folder = workdir / f"n{n}"
    data = folder / "data"
    start = time.perf_counter()
    sizes = simulate(n, args.months, args.seed, data)
    simulate_s = time.perf_counter() - start
    render = n <= (args.render_max if args.render_max is not None else min(args.accounts))
    cmd = [sys.executable, __file__, "--child", "--data", str(data), "--out", str(folder / "output"),
           "--json", str(folder / "result.json"), "--bootstrap", str(args.bootstrap), "--seed", str(args.seed)]
    if render:
        cmd.append("--render")
    subprocess.run(cmd, check=True, env=os.environ | THREADS)
    res = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    res.update(n=n, rows=sizes, simulate=simulate_s)
    return res


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "# cskit benchmark (`bench/run.py`)",
        "",
        f"Command: `python bench/run.py --accounts {' '.join(str(n) for n in args.accounts)}"
        f" --months {args.months} --bootstrap {args.bootstrap}`. Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores (shared), Python {platform.python_version()}; BLAS pinned to 1 thread.",
        "",
        "**floor ratio** = whole analysis (`cskit.analyse` + `Diagnosis.write`, i.e. `cskit run` without the "
        "notebook render) ÷ DuckDB's bare read of accounts/revenue/kpis CSVs, same client, same process.",
        "",
        "| accounts | panel rows | input rows (acc / rev / kpis) | DuckDB read (s) | analysis (s) | **floor ratio** "
        "| peak memory (MB) | render (s) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows = r["rows"]
        render = f"{r['render']:.1f}" if "render" in r else "—"
        lines.append(
            f"| {r['accounts']:,} | {r['panel_rows']:,} "
            f"| {rows['accounts']:,} / {rows['revenue']:,} / {rows['kpis']:,} "
            f"| {r['floor']:.3f} | {r['total']:.1f} | **{r['total'] / r['floor']:.0f}×** "
            f"| {r['peak_mb']:,.0f} | {render} |"
        )
    lines += ["", "Share of the analysis time per stage (%):", "",
              "| accounts | " + " | ".join(STAGES) + " |", "|---:|" + "---:|" * len(STAGES)]
    for r in results:
        shares = [100 * r["stages"].get(s, 0.0) / r["total"] for s in STAGES]
        lines.append(f"| {r['accounts']:,} | " + " | ".join(f"{x:.0f}" for x in shares) + " |")
    lines += [
        "",
        "Render = `cskit run`'s papermill execution + HTML (the kernel re-runs the analysis, so render − "
        "analysis ≈ kernel start, charts and HTML). Naive comparisons: `bench/bench_load.py` (pandas / DuckDB "
        "reads), `bench/bench_triggers.py` (lifelines CoxTimeVaryingFitter per KPI, statsmodels GEE), "
        "`bench/bench_potential.py` (refit per bootstrap resample).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--render-max", type=int, default=None, help="render the notebook up to this size")
    ap.add_argument("--workdir", default=str(HERE / "out"))
    ap.add_argument("--results", default=str(HERE / "results.md"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--render", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return
    workdir = Path(args.workdir)
    results = []
    for n in sorted(args.accounts):
        res = run_size(n, args, workdir)
        print(f"{n:>7,} accounts: analysis {res['total']:.1f} s, floor ratio {res['total'] / res['floor']:.0f}x, "
              f"peak {res['peak_mb']:,.0f} MB", flush=True)
        results.append(res)
    Path(args.results).write_text(markdown(results, args), encoding="utf-8")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
