"""Benchmark of the loader: ``load_client`` against the bare reads of the same three CSVs, in one run.

For each size, a synthetic client of N accounts x 24 months (numpy, seeded) is written as UTF-8 CSVs;
then, on the same files, we time
  - DuckDB's bare read of the three tables (``CREATE TABLE ... AS SELECT * FROM read_csv(...)``: typed,
    in memory, no checks) — the physical floor of any loader;
  - pandas ``read_csv`` of the three files (typed, no checks) — the naive way;
  - ``cskit.loading.load_client`` — read as text + parse + validate + count, split into its read
    (``read_tables``) and validation (``client_from_frames``) parts.
Each timing is the best of ``--repeat`` runs. Ratios are the figures to quote (DESIGN §8).

    python bench/bench_load.py --accounts 1000 10000 100000 [--repeat 3] [--out bench/results_load.md]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cskit.client import Quality  # noqa: E402
from cskit.loading import _read_source, _Report, client_from_frames, load_client  # noqa: E402
from cskit.params import Params, validate_params  # noqa: E402

N_MONTHS = 24
KPIS = ["licenses", "active_users", "active_user_rate", "login_days", "session_seconds", "newsletter_open_rate",
        "site_visits", "faq_views", "cs_site_visits", "manual_views", "community_visits", "csat", "support_inquiries"]


def read_tables(
    source: Path | str, params: Params | None = None
) -> tuple[dict[str, pd.DataFrame], Quality, list[str], set[str]]:
    """The raw tables of a client (a path, or a database URL) as text frames, the loader's read step
    alone: (tables, quality notes, fatal problems, unread)."""
    report = _Report()
    tables, unread = _read_source(source, params or Params(), report)
    return tables, report.quality, report.fatal, unread


def synthetic_client(n_accounts: int, seed: int = 0) -> dict[str, pa.Table]:
    """Accounts starting over 24 months, 2%/month churn, MRR with occasional changes, 13 KPIs."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, N_MONTHS, n_accounts)
    life = rng.geometric(0.02, n_accounts)
    end = np.minimum(start + life - 1, N_MONTHS - 1)
    churned = start + life - 1 <= N_MONTHS - 1
    base = np.datetime64("2024-01", "M")
    start_day = (base + start).astype("datetime64[D]") + rng.integers(0, 28, n_accounts)
    churn_day = np.where(churned, (base + end).astype("datetime64[D]") + rng.integers(0, 28, n_accounts),
                         np.datetime64("NaT"))
    churn_day = np.where(churned, np.maximum(churn_day, start_day), churn_day)
    ids = np.char.add("C", np.char.zfill(np.arange(n_accounts).astype(str), 7))
    accounts = pa.table({
        "account_id": ids,
        "contract_start": start_day.astype(str),
        "churn_date": pa.array(np.where(churned, churn_day.astype(str), ""), pa.string()),
        "segment": rng.choice(["SMB", "Mid", "Enterprise"], n_accounts),
        "plan": rng.choice(["Basic", "Pro"], n_accounts),
        "contract_type": rng.choice(["monthly", "annual"], n_accounts, p=[0.7, 0.3]),
        "onboarding_completed": rng.integers(0, 2, n_accounts),
    })
    n = (end - start + 1).astype(np.int64)
    row = np.repeat(np.arange(n_accounts), n)
    month = start[row] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    months = (base + month).astype(str)
    mrr = np.round(rng.lognormal(10, 0.8, n_accounts))[row] * rng.choice([1.0, 1.0, 1.0, 1.2, 0.8], len(row))
    revenue = pa.table({"account_id": ids[row], "month": months, "mrr": mrr, "product": np.full(len(row), "core")})
    kpis = {"account_id": ids[row], "month": months}
    for k in KPIS:
        x = rng.gamma(2.0, 5.0, len(row))
        kpis[k] = (
            np.clip(x / 40, 0, 1).round(3)
            if k.endswith("_rate")
            else np.minimum(np.round(x), 31 if k == "login_days" else 1e9)
        )
    return {"accounts": accounts, "revenue": revenue, "kpis": pa.table(kpis)}


def write_csvs(tables: dict[str, pa.Table], folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pacsv.write_csv(table, folder / f"{name}.csv")
    return sum((folder / f"{name}.csv").stat().st_size for name in tables)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def duckdb_read(folder: Path) -> None:
    con = duckdb.connect()
    for name in ("accounts", "revenue", "kpis"):
        con.execute(f"create table {name} as select * from read_csv('{folder / (name + '.csv')}')")
    con.close()


def pandas_read(folder: Path) -> None:
    for name in ("accounts", "revenue", "kpis"):
        pd.read_csv(folder / f"{name}.csv")


def measure(n_accounts: int, repeat: int, workdir: Path) -> dict:
    folder = workdir / f"client_{n_accounts}"
    size = write_csvs(synthetic_client(n_accounts), folder)
    params = validate_params({"client": "bench", "data": str(folder)})
    tables = read_tables(folder)[0]
    data = load_client(params)
    assert data.quality.is_consistent() and all(not q["excluded"] for q in data.quality.tables.values())
    t_duck = best(lambda: duckdb_read(folder), repeat)
    t_pandas = best(lambda: pandas_read(folder), repeat)
    t_read = best(lambda: read_tables(folder), repeat)
    t_check = best(lambda: client_from_frames(tables, params), repeat)
    t_load = best(lambda: load_client(params), repeat)
    return {
        "accounts": n_accounts,
        "rows": sum(q["read"] for q in data.quality.tables.values()),
        "MB": size / 1e6,
        "load / duckdb": t_load / t_duck,
        "load / pandas": t_load / t_pandas,
        "pandas / duckdb": t_pandas / t_duck,
        "read share": t_read / t_load,
        "validate share": t_check / t_load,
        "duckdb s": t_duck,
    }


def markdown(rows: list[dict]) -> str:
    head = list(rows[0])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r[h]:,}" if isinstance(r[h], int) else f"{r[h]:.2f}" for h in head]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(n, args.repeat, Path(tmp)) for n in args.accounts]
    table = markdown(rows)
    note = ("load = cskit.loading.load_client (text read + parse + validate); duckdb = DuckDB's typed bare read of the "
            "three CSVs; pandas = pandas.read_csv of the three CSVs; shares are of load's time; best of "
            f"{args.repeat} runs; 24 months, 13 KPIs.")
    print(table + "\n\n" + note)
    if args.out:
        args.out.write_text(f"# Loader benchmark\n\n{table}\n\n{note}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
