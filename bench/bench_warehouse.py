"""Benchmark of a warehouse client: ``load_client`` from a CSV folder against the same tables in
PostgreSQL (typed as a warehouse types them: date months, numeric(12,2) MRR, integer/double KPIs), in
one run, on a throwaway local server (tests/pgcluster.py). The ratio is the figure to quote.

    python bench/bench_warehouse.py --accounts 1000 10000 [--repeat 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pgcluster  # noqa: E402
import psycopg  # noqa: E402
from test_warehouse import schema_of, typed_value  # noqa: E402

from cskit.loading import load_client  # noqa: E402
from cskit.params import validate_params  # noqa: E402
from cskit.simulate import simulate_client  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    cluster = pgcluster.start()
    try:
        with cluster.connect() as admin:
            admin.execute("create role bench login password 'bench'")
        print("| accounts | kpis rows | CSV folder (s) | PostgreSQL (s) | ratio |\n|---:|---:|---:|---:|---:|")
        for n in a.accounts:
            sim = simulate_client(n_accounts=n, n_months=24, seed=1, mc_paths=0)
            text = {k: v.astype(object).where(v.notna(), None).map(lambda x: None if x is None else str(x))
                    for k, v in sim.tables.items()}
            folder = Path(tempfile.mkdtemp(prefix="cskit-bench-wh-"))
            for k, v in text.items():
                v.to_csv(folder / f"{k}.csv", index=False)
            db = f"bench_{n}"
            with cluster.connect() as admin:
                admin.execute(f"create database {db} owner bench")
            schema = schema_of(text)
            with psycopg.connect(host=cluster.host, port=cluster.port, user="bench", password="bench", dbname=db,
                                 autocommit=True) as con:
                for name, df in text.items():
                    cols = schema[name]
                    con.execute(f"create table {name} ({', '.join(f'{c} {t}' for c, t in cols.items())})")
                    with con.cursor().copy(f"copy {name} from stdin") as copy:
                        for row in df.itertuples(index=False):
                            copy.write_row([typed_value(c, cols[c], v) for c, v in zip(cols, row, strict=True)])
            csv = validate_params({"data": str(folder)})
            pg = validate_params({"data": cluster.url("bench", "bench", db)})
            t_csv, t_pg = best(lambda p=csv: load_client(p), a.repeat), best(lambda p=pg: load_client(p), a.repeat)
            print(f"| {n} | {len(text['kpis'])} | {t_csv:.2f} | {t_pg:.2f} | {t_pg / t_csv:.1f} |")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
