"""Raw events → KPI panel at scale: DuckDB (cskit.events) beside a pandas groupby and Spark local.

    python bench/bench_events.py --events 10000000 100000000 [--spark-max 10000000] [--dir /tmp/cskit-bench-events]

Each size is a Parquet log (written in chunks, ~30 events per account-month over 24 months, UTC
timestamps, 6 event names), aggregated by the spec below into the account × month panel in
Asia/Tokyo. Every engine runs in its own process; peak memory is the largest resident set of that
process and its children (Spark's JVM), sampled every 0.1 s. pandas runs with a memory budget
(``--pandas-cap-gb``, default 10): past it the process is stopped and the table says so. The DuckDB
and pandas panels are compared value by value (an independent check of the Ibis expression). The
table replaces the "Events" section of bench/results.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "logins": {"event": "login", "agg": "count"},
    "login_days": {"event": "login", "agg": "active_days"},
    "active_users": {"event": "app_open", "agg": "distinct_users"},
    "session_seconds": {"event": "session", "agg": "sum"},
    "manual_views": {"event": ["manual_view", "manual_open"], "agg": "count"},
}
EVENT_NAMES = ["login", "app_open", "session", "manual_view", "manual_open", "page_view"]
EVENT_SHARE = [0.3, 0.2, 0.2, 0.05, 0.05, 0.2]
MONTHS, START, PER_MONTH, TZ = 24, "2024-07", 30, "Asia/Tokyo"
SECTION = "## Events → KPI panel (`bench/bench_events.py`)"


def generate(path: Path, n_events: int, seed: int = 0) -> dict:
    """Write the log in chunks of ~5M rows (dictionary-encoded ids); returns its shape."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_accounts = max(1, round(n_events / (PER_MONTH * MONTHS)))
    months = pd.period_range(START, periods=MONTHS, freq="M")
    first_us = np.array(
        [m.to_timestamp().value // 1000 for m in months] + [(months[-1] + 1).to_timestamp().value // 1000]
    )
    ids = pa.array([f"A{i:07d}" for i in range(n_accounts)])
    users = pa.array([f"u{i}" for i in range(20)])
    names = pa.array(EVENT_NAMES)
    schema = pa.schema(
        [
            ("account_id", pa.dictionary(pa.int32(), pa.string())),
            ("user_id", pa.dictionary(pa.int8(), pa.string())),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("event", pa.dictionary(pa.int8(), pa.string())),
            ("value", pa.float64()),
        ]
    )
    per_chunk = max(1, 5_000_000 // (PER_MONTH * MONTHS))
    rows = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        for lo in range(0, n_accounts, per_chunk):
            acc = np.arange(lo, min(n_accounts, lo + per_chunk))
            k = rng.poisson(PER_MONTH, (len(acc), MONTHS))
            a = np.repeat(np.repeat(acc, MONTHS), k.ravel())
            m = np.repeat(np.tile(np.arange(MONTHS), len(acc)), k.ravel())
            n = len(a)
            ts = first_us[m] + (rng.random(n) * (first_us[m + 1] - first_us[m])).astype(np.int64)
            ev = rng.choice(len(EVENT_NAMES), n, p=EVENT_SHARE).astype(np.int8)
            value = np.where(ev == 2, np.round(rng.exponential(300, n)), np.nan)
            batch = pa.record_batch([
                pa.DictionaryArray.from_arrays(pa.array(a.astype(np.int32)), ids),
                pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 20, n).astype(np.int8)), users),
                pa.array(ts, pa.timestamp("us", tz="UTC")),
                pa.DictionaryArray.from_arrays(pa.array(ev), names),
                pa.array(value),
            ], schema=schema)
            w.write_batch(batch, row_group_size=1_000_000)
            rows += n
    return {"rows": rows, "accounts": n_accounts, "mb": path.stat().st_size / 1e6}


def accounts_frame(n_accounts: int):
    import pandas as pd

    return pd.DataFrame({"account_id": [f"A{i:07d}" for i in range(n_accounts)],
                         "contract_start": pd.Timestamp(START + "-01"), "churn_date": pd.NaT})


# --------------------------------------------------------------------------------------------------
# One engine, in its own process


def child(engine: str, path: str, n_accounts: int, out: str) -> None:
    import pandas as pd

    accounts = accounts_frame(n_accounts)
    as_of = pd.Period(START, "M") + MONTHS - 1
    from cskit import events as E  # imports (Ibis, pyspark) are not timed

    if engine == "spark":
        import pyspark.sql  # noqa: F401
    t0 = time.perf_counter()
    if engine == "pandas":
        panel = pandas_panel(path, accounts, str(as_of))
    else:
        if engine == "spark":
            os.environ.setdefault("SPARK_MASTER", "local[2]")
        table = E.read_events(path, engine=engine)
        panel, _ = E.aggregate_events(table, SPEC, timezone=TZ, as_of=str(as_of), accounts=accounts)
    seconds = time.perf_counter() - t0
    panel.to_parquet(out)
    print(json.dumps({"seconds": seconds, "rows": len(panel)}))


def pandas_panel(path: str, accounts, as_of: str):
    """The naive way: the whole log in pandas, local time by tz_convert, one groupby per KPI."""
    import pandas as pd

    df = pd.read_parquet(path)
    local = df["ts"].dt.tz_convert(TZ).dt.tz_localize(None)
    df["month"] = local.dt.to_period("M").dt.to_timestamp()
    df["day"] = local.dt.floor("D")
    df = df[df["month"] <= pd.Period(as_of, "M").to_timestamp()]  # the last hours of the log are after as_of in Tokyo
    key = ["account_id", "month"]
    parts = []
    for name, kpi in SPEC.items():
        events = kpi["event"] if isinstance(kpi["event"], list) else [kpi["event"]]
        sub = df[df["event"].isin(events)]
        g = sub.groupby(key, observed=True)
        parts.append({"count": g.size, "active_days": lambda g=g: g["day"].nunique(),
                      "distinct_users": lambda g=g: g["user_id"].nunique(),
                      "sum": lambda g=g: g["value"].sum()}[kpi["agg"]]().rename(name))
    panel = pd.concat(parts, axis=1).reset_index()
    panel["account_id"] = panel["account_id"].astype(str)
    return panel


def measure(engine: str, path: Path, n_accounts: int, out: Path, cap_gb: float | None) -> dict:
    """Run one engine in a child process; peak RSS of the process tree by sampling."""
    import psutil

    cmd = [sys.executable, __file__, "child", engine, str(path), str(n_accounts), str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    root = psutil.Process(proc.pid)
    peak, killed = 0, False
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        if cap_gb and rss > cap_gb * 1e9:
            for p in [*root.children(recursive=True), root]:
                p.kill()
            killed = True
            break
        time.sleep(0.1)
    stdout, stderr = proc.communicate()
    result = {"engine": engine, "peak_mb": peak / 1e6, "load": os.getloadavg()[0]}
    if killed:
        return result | {"status": f"out of memory (stopped at the {cap_gb:g} GB budget)"}
    if proc.returncode != 0:
        last = (stderr.strip().splitlines() or ["?"])[-1][:200]
        return result | {"status": f"failed: {last}"}
    return result | json.loads(stdout.strip().splitlines()[-1]) | {"status": "ok"}


def same_panel(a: Path, b: Path) -> bool:
    """The DuckDB panel (every account-month, zeros inside the coverage) against pandas' (only the
    account-months with events): equal on pandas' rows, zero elsewhere."""
    import pandas as pd

    duck, pand = pd.read_parquet(a), pd.read_parquet(b)
    merged = duck.merge(pand, on=["account_id", "month"], how="left", suffixes=("", "_pd"))
    for name in SPEC:
        other = merged[name + "_pd"].fillna(0).to_numpy(float)
        if not np.array_equal(merged[name].to_numpy(float), other):
            return False
    return len(pand) <= len(duck)


# --------------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        _, _, engine, path, n_accounts, out = sys.argv
        child(engine, path, int(n_accounts), out)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, nargs="+", default=[10_000_000, 100_000_000])
    ap.add_argument("--spark-max", type=int, default=10_000_000, help="run Spark up to this many events")
    ap.add_argument("--pandas-cap-gb", type=float, default=10.0)
    ap.add_argument("--dir", default="/tmp/cskit-bench-events")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results.md"))
    a = ap.parse_args()
    work = Path(a.dir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in a.events:
        path = work / f"events-{n}.parquet"
        t0 = time.perf_counter()
        shape = generate(path, n)
        gen = time.perf_counter() - t0
        print(
            f"{n:,}: wrote {shape['rows']:,} events, {shape['accounts']:,} accounts, "
            f"{shape['mb']:.0f} MB in {gen:.0f} s",
            flush=True,
        )
        results = {}
        for engine in ("duckdb", "pandas", "spark"):
            if engine == "spark" and n > a.spark_max:
                continue
            out = work / f"panel-{engine}-{n}.parquet"
            results[engine] = measure(
                engine, path, shape["accounts"], out, a.pandas_cap_gb if engine == "pandas" else None
            )
            print(f"  {engine}: {results[engine]}", flush=True)
        checks = {e: same_panel(work / f"panel-duckdb-{n}.parquet", work / f"panel-{e}-{n}.parquet")
                  for e in ("pandas", "spark") if results.get(e, {}).get("status") == "ok"}
        rows.append((shape, results, checks))
        path.unlink()
    write_section(Path(a.results), rows, " ".join(sys.argv[1:]))


def write_section(path: Path, rows: list, args: str) -> None:
    about = (f"Command: `python bench/bench_events.py {args}`. Machine: {platform.machine()}, {os.cpu_count()} cores "
             f"(shared), Python {platform.python_version()}. Log: Parquet, ~{PER_MONTH} events per account-month over "
             f"{MONTHS} months, UTC timestamps cut in {TZ}; spec: 2 counts, active days, distinct users, a sum. "
             "Peak memory: the whole process tree (Spark's JVM included). DuckDB: `memory_limit` 3GB, spill "
             "directory, `preserve_insertion_order=false`; Spark `local[2]`, driver memory 2g. Time: the query "
             "(reading the log included), imports and session start excluded; one run, on a machine shared with "
             "other jobs (load avg: the machine's 1-minute load average when the engine finished; 2 = both cores "
             "busy), so times are upper bounds. The pandas run is stopped when its memory passes the budget.")
    lines = [SECTION, "", about, "",
             "| events | accounts | panel rows | engine | time (s) | peak memory (MB) | load avg | result |",
             "|---:|---:|---:|---|---:|---:|---:|---|"]
    for shape, results, checks in rows:
        for engine, r in results.items():
            if r["status"] != "ok":
                result = r["status"]
            elif engine == "duckdb":
                result = "ok"
            else:
                result = "same panel as DuckDB" if checks.get(engine) else "DIFFERENT panel"
            secs = f"{r['seconds']:.1f}" if "seconds" in r else "—"
            panel_rows = f"{r['rows']:,}" if "rows" in r else "—"
            lines.append(f"| {shape['rows']:,} | {shape['accounts']:,} | {panel_rows} | {engine} | {secs} | "
                         f"{r['peak_mb']:,.0f} | {r['load']:.1f} | {result} |")
    lines.append("")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        nxt = rest.find("\n## ")
        text = head + "\n".join(lines) + (rest[nxt:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines)
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
