"""Raw events → KPI panel (cskit.events): panels computed by hand, time zones, coverage, bad rows, the
loader's join with the kpis table, the simulator's log, and the same panel on Spark local[2]."""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import duckdb
import ibis
import numpy as np
import pandas as pd
import pytest

from cskit import events as E
from cskit.errors import CskitError
from cskit.loading import client_from_frames, load_client
from cskit.params import Params, validate_params
from cskit.simulate import simulate_client
from cskit.simulate_events import EVENTS_KPIS, events_client

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "logins": {"event": "login", "agg": "count"},
    "login_days": {"event": "login", "agg": "active_days"},
    "users": {"event": ["login", "session"], "agg": "distinct_users"},
    "secs": {"event": "session", "agg": "sum"},
    "mean_secs": {"event": "session", "agg": "mean"},
    "max_secs": {"event": "session", "agg": "max"},
    "secs_per_login": {"ratio": ["secs", "logins"]},
}
ACCOUNTS = pd.DataFrame({"account_id": ["A", "B", "C", "17"],
                         "contract_start": pd.to_datetime(["2026-01-01", "2026-01-15", "2026-01-01", "2026-03-01"]),
                         "churn_date": pd.to_datetime([None, None, "2026-02-10", "2026-03-31"])})
# A handful of events, cut in Asia/Tokyo (UTC+9, no DST). Comments: the local time.
EVENTS = pd.DataFrame([
    ("A", "u1", "2026-01-31 23:59:00", "login", None),           # naive = local: Jan 31
    ("A", "u2", "2026-01-31T15:00:00Z", "login", None),          # Feb 1 00:00 local (UTC Jan 31)
    ("A", "u1", "2026-02-01 00:00:01", "login", None),           # Feb 1, same local day as above
    ("A", "u1", "2026-01-31T15:00:01Z", "session", "7.5"),       # Feb 1 00:00:01 local
    ("A", "u3", "2026-02-01T09:00:00+09:00", "session", "2.5"),  # Feb 1 09:00 local, offset given
    ("B", "v", "2026-03-05 10:00", "session", "3"),              # Mar 5: a session without a login
    ("C", "w", "2026-02-10 23:00", "login", None),               # C's churn day: inside the contract
    ("C", "w", "2026-02-10T15:30:00Z", "login", None),           # Feb 11 00:30 local: after churn
    ("B", "v", "not a time", "login", None),                     # bad_ts
    ("X", "z", "2026-01-05", "login", None),                     # unknown_account
    (None, "q", "2026-01-01", "login", None),                    # empty_account_id
    ("A", "u1", "2026-06-30T15:00:00Z", "login", None),          # Jul 1 00:00 local: after as_of (June)
    ("B", "v", "2026-01-14 23:59", "login", None),               # before B's contract_start (Jan 15)
    ("A", "u1", "2026-01-10 08:00", "page_view", "x"),           # not in the spec (a bad value, kept)
    (" 17.0", "n", "2026-03-01 12:00", "login", None),            # account "17", as the loader reads ids
], columns=["account_id", "user_id", "ts", "event", "value"])
EXPECTED_EXCLUDED = {"bad_ts": 1, "unknown_account": 1, "empty_account_id": 1, "after_as_of": 1,
                     "before_contract_start": 1, "after_churn": 1}


def by_hand() -> pd.DataFrame:
    """The panel of SPEC over EVENTS, written out: coverage starts in January (the first usable event,
    A's page_view of Jan 10) and runs to as_of (June); C's contract ends in February."""
    nan = np.nan
    rows = {("A", 1): (1, 1, 1, 0, nan, nan), ("A", 2): (2, 1, 3, 10.0, 5.0, 7.5),
            ("B", 3): (0, 0, 1, 3.0, 3.0, 3.0), ("C", 2): (1, 1, 1, 0, nan, nan), ("17", 3): (1, 1, 1, 0, nan, nan)}
    months = {"17": range(3, 4), "A": range(1, 7), "B": range(1, 7), "C": range(1, 3)}
    out = []
    for a, ms in months.items():
        for m in ms:
            v = rows.get((a, m), (0, 0, 0, 0, nan, nan))
            out.append((a, pd.Timestamp(2026, m, 1), *map(float, v)))
    df = pd.DataFrame(out, columns=["account_id", "month", "logins", "login_days", "users", "secs", "mean_secs",
                                    "max_secs"])
    df["secs_per_login"] = np.where(df["logins"] > 0, df["secs"] / df["logins"].where(df["logins"] > 0, 1), nan)
    df["month"] = df["month"].astype("datetime64[ns]")
    return df


def panel_of(table, timezone="Asia/Tokyo") -> tuple[pd.DataFrame, E.EventCounts]:
    panel, counts = E.aggregate_events(table, SPEC, timezone=timezone, as_of="2026-06-30", accounts=ACCOUNTS)
    return E.apply_ratios(panel, SPEC), counts


def test_panel_by_hand_in_tokyo_on_duckdb():
    panel, counts = panel_of(ibis.memtable(EVENTS))
    pd.testing.assert_frame_equal(panel, by_hand())
    assert counts.read == len(EVENTS) and counts.excluded == EXPECTED_EXCLUDED
    assert counts.used == len(EVENTS) - 6 and counts.blanked_value == 1
    assert list(counts.occurrences) == ["login", "session", "page_view"]  # most frequent first
    assert counts.occurrences == {"login": 5, "session": 3, "page_view": 1}
    assert counts.coverage_start == pd.Timestamp("2026-01-01")


def test_the_same_log_in_utc_moves_events_across_days_and_months():
    """In UTC the Z events stay on Jan 31, so A has 3 logins in January on one day and the
    offset-given session (UTC Feb 1 00:00) stays in February."""
    panel, _ = panel_of(ibis.memtable(EVENTS), timezone="UTC")
    a = panel[panel["account_id"] == "A"]
    a = a.set_index(a["month"].dt.month)
    assert (a.at[1, "logins"], a.at[1, "login_days"], a.at[1, "secs"]) == (2.0, 1.0, 7.5)
    assert (a.at[2, "logins"], a.at[2, "secs"], a.at[2, "users"]) == (1.0, 2.5, 2.0)


def test_dst_zone_converts_instants_with_the_zone_rules():
    """Europe/Berlin: +1 h in winter, +2 h from 2026-03-29 01:00 UTC. 22:30 UTC on Mar 31 is April 1
    00:30 local (summer), 23:30 UTC on Jan 31 is Feb 1 00:30 (winter), 22:30 UTC on Jan 31 stays
    January (23:30 local)."""
    first, changes = E.zone_transitions("Europe/Berlin", dt.datetime(2026, 1, 1), dt.datetime(2027, 1, 1))
    assert first == 3600 and changes == [(dt.datetime(2026, 3, 29, 1), 7200), (dt.datetime(2026, 10, 25, 1), 3600)]
    ev = pd.DataFrame({"account_id": "A", "user_id": "u", "event": "login", "value": None,
                       "ts": pd.to_datetime(["2026-03-31 22:30", "2026-01-31 23:30", "2026-01-31 22:30"], utc=True)})
    panel, _ = E.aggregate_events(ibis.memtable(ev), {"n": {"event": "login", "agg": "count"}},
                                  timezone="Europe/Berlin", as_of="2026-04-30", accounts=ACCOUNTS[:1])
    assert panel.set_index(panel["month"].dt.month)["n"].to_dict() == {1: 1.0, 2: 1.0, 3: 0.0, 4: 1.0}
    assert E.zone_transitions("Asia/Tokyo", dt.datetime(1970, 1, 1), dt.datetime(2030, 1, 1)) == (32400, [])


def test_unknown_event_names_the_events_that_occur_most_frequent_first():
    spec = {"x": {"event": "logon", "agg": "count"}}
    with pytest.raises(CskitError) as e:
        E.aggregate_events(ibis.memtable(EVENTS), spec, timezone="Asia/Tokyo", as_of="2026-06-30", accounts=ACCOUNTS)
    msg = str(e.value)
    assert "'logon' (events_kpis x)" in msg
    assert msg.index("'login' (5)") < msg.index("'session' (3)") < msg.index("'page_view' (1)")


def write_sources(tmp: Path, frame: pd.DataFrame) -> dict[str, Path | str]:
    """The same log as one CSV, a folder of CSVs, a glob of Parquet files and a .duckdb file."""
    (tmp / "one").mkdir()
    frame.to_csv(tmp / "one" / "events.csv", index=False)
    (tmp / "many").mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[part].to_csv(tmp / "many" / f"part-{i}.csv", index=False)
    (tmp / "pq").mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 2)):
        frame.iloc[part].to_parquet(tmp / "pq" / f"events-{i}.parquet", index=False)
    con = duckdb.connect(str(tmp / "client.duckdb"))
    con.register("frame", frame)
    con.execute("create table events as select * from frame")
    con.close()
    return {"csv": tmp / "one" / "events.csv", "folder": tmp / "many", "glob": str(tmp / "pq" / "events-*.parquet"),
            "duckdb": tmp / "client.duckdb"}


def test_every_file_source_gives_the_panel_by_hand(tmp_path):
    for kind, path in write_sources(tmp_path, EVENTS).items():
        table = E.read_events(path, engine="duckdb")
        panel, counts = panel_of(table)
        pd.testing.assert_frame_equal(panel, by_hand(), obj=kind)
        assert counts.excluded == EXPECTED_EXCLUDED, kind
    con = E.read_events(tmp_path / "pq", memory_limit="1GB")._find_backend()
    settings = dict(con.raw_sql("select name, value from duckdb_settings() where name in "
                                "('memory_limit', 'preserve_insertion_order', 'temp_directory')").fetchall())
    assert settings["preserve_insertion_order"] == "false" and "cskit-duckdb-" in settings["temp_directory"]
    assert settings["memory_limit"].startswith(("953", "1.0")), settings["memory_limit"]  # 1GB as DuckDB prints it


def test_typed_timestamps_with_and_without_zone(tmp_path):
    """A tz-aware (nanosecond, as pandas writes it) Parquet column is an instant; a naive one is local."""
    ev = pd.DataFrame({"account_id": ["A", "A"], "user_id": "u", "event": "login", "value": np.nan,
                       "ts": pd.to_datetime(["2026-01-31 15:00", "2026-02-28 15:00"], utc=True)})
    ev.to_parquet(tmp_path / "aware.parquet")
    ev.assign(ts=ev["ts"].dt.tz_localize(None)).to_parquet(tmp_path / "naive.parquet")
    spec = {"n": {"event": "login", "agg": "count"}}
    got = {}
    for name in ("aware", "naive"):
        panel, _ = E.aggregate_events(E.read_events(tmp_path / f"{name}.parquet"), spec, timezone="Asia/Tokyo",
                                      as_of="2026-03-31", accounts=ACCOUNTS[:1])
        got[name] = panel.set_index(panel["month"].dt.month)["n"].to_dict()
    assert got["aware"] == {2: 1.0, 3: 1.0}  # 00:00 local on Feb 1 and Mar 1; the coverage starts in February
    assert got["naive"] == {1: 1.0, 2: 1.0, 3: 0.0}


def test_unix_time_and_text_formats():
    """Numbers are Unix time (seconds, or milliseconds above 10^11); ISO text in its common spellings."""
    ev = pd.DataFrame({"account_id": "A", "user_id": "u", "event": "login",
                       "ts": [1769871599, 1769871600123, 1772290800.0]})  # Jan 31 23:59:59, Feb 1, Mar 1 local
    panel, _ = E.aggregate_events(ibis.memtable(ev), {"n": {"event": "login", "agg": "count"}}, timezone="Asia/Tokyo",
                                  as_of="2026-03-31", accounts=ACCOUNTS[:1])
    assert panel.set_index(panel["month"].dt.month)["n"].to_dict() == {1: 1.0, 2: 1.0, 3: 1.0}
    assert (local_days(lambda e: e.execute(), "duckdb") == pd.Timestamp("2026-02-01")).all()


TEXT_TIMES = ["2026-01-31T15:00:00.123456Z", "2026-02-01T00:00:00+0900", "2026-02-01 00:00:00+09", "2026/02/01 00:00",
              "2026-2-1 0:00:01", "2026-02-01T00:00:00.5+09:00", 1769871600, 1769871600123]  # all Feb 1 in Tokyo


def local_days(execute, backend: str) -> pd.Series:
    """The local dates of TEXT_TIMES (text, then numbers) on a backend."""
    out = []
    for values in (TEXT_TIMES[:6], TEXT_TIMES[6:]):
        t = ibis.memtable(pd.DataFrame({"s": values}))
        expr = t.select(d=E.local_time(t.s, "Asia/Tokyo", until=pd.Timestamp("2026-03-01"), backend=backend).date())
        out.append(pd.to_datetime(execute(expr)["d"]))
    return pd.concat(out, ignore_index=True)


def test_missing_column_and_mapping(tmp_path):
    renamed = EVENTS.rename(columns={"ts": "event_time", "account_id": "顧客ID"})
    renamed.to_csv(tmp_path / "events.csv", index=False)
    with pytest.raises(CskitError, match="required column.*'account_id', 'ts'.*columns found: 顧客ID"):
        E.read_events(tmp_path / "events.csv")
    table = E.read_events(tmp_path / "events.csv", columns={"event_time": "ts", "顧客ID": "account_id"})
    pd.testing.assert_frame_equal(panel_of(table)[0], by_hand())
    with pytest.raises(CskitError, match="column.*value missing, needed by events_kpis s"):
        E.aggregate_events(ibis.memtable(EVENTS.drop(columns="value")), {"s": {"event": "login", "agg": "sum"}},
                           as_of="2026-06-30", accounts=ACCOUNTS)


# --------------------------------------------------------------------------------------------------
# In the loader: the events KPIs join the kpis table


def small_client() -> dict[str, pd.DataFrame]:
    accounts = pd.DataFrame({"account_id": ["A", "B", "C", "17"],
                             "contract_start": ["2025-11-01", "2026-01-15", "2026-01-01", "2026-03-01"],
                             "churn_date": ["", "", "2026-02-10", "2026-03-31"]})
    revenue = pd.DataFrame({"account_id": ["A"] * 8 + ["B"] * 6, "mrr": "1000",
                            "month": [f"2025-{m}" for m in (11, 12)] + [f"2026-0{m}" for m in range(1, 7)]
                            + [f"2026-0{m}" for m in range(1, 7)]})
    kpis = pd.DataFrame({"account_id": ["A", "A", "A"], "month": ["2025-11", "2025-12", "2026-01"],
                         "licenses": ["10", "10", "0"]})
    return {"accounts": accounts, "revenue": revenue, "kpis": kpis, "events": EVENTS}


def test_loader_joins_events_kpis_with_the_kpis_table_and_counts_bad_events():
    params = Params(events_kpis=SPEC | {"per_license": {"ratio": ["logins", "licenses"]}}, timezone="Asia/Tokyo",
                    as_of="2026-06-30")
    data = client_from_frames(small_client(), params)
    q = data.quality.tables["events"]
    assert q["read"] == len(EVENTS) == q["used"] + sum(q["excluded"].values()) and q["excluded"] == EXPECTED_EXCLUDED
    assert any(
        w.startswith("events.ts: 1 row(s) excluded (bad_ts)") and "'not a time'" in w for w in data.quality.warnings
    )
    k = data.kpis.set_index([data.kpis["account_id"], data.kpis["month"].dt.strftime("%Y-%m")])
    # before the log's coverage (Nov, Dec 2025): the kpis table's values, the events KPIs empty
    assert k.loc[("A", "2025-11"), "licenses"] == 10 and np.isnan(k.loc[("A", "2025-12"), "logins"])
    # January: both; per_license has a zero denominator, so it is empty
    assert k.loc[("A", "2026-01"), "logins"] == 1 and np.isnan(k.loc[("A", "2026-01"), "per_license"])
    hand = by_hand()
    expected = hand.set_index([hand["account_id"], hand["month"].dt.strftime("%Y-%m")])
    pd.testing.assert_frame_equal(k.loc[expected.index, list(SPEC)], expected[list(SPEC)], check_names=False)
    assert set(SPEC) | {"per_license", "licenses"} <= set(data.catalogue)


def test_loader_errors_name_the_key():
    tables = small_client()
    tables["kpis"] = tables["kpis"].assign(logins="1")
    with pytest.raises(CskitError, match="'logins' is also a column of the kpis table"):
        client_from_frames(tables, Params(events_kpis=SPEC, timezone="Asia/Tokyo", as_of="2026-06-30"))
    without = {k: v for k, v in small_client().items() if k != "events"}
    with pytest.raises(CskitError, match="events_kpis is set but the client has no events table"):
        client_from_frames(without, Params(events_kpis=SPEC, as_of="2026-06-30"))
    # without events_kpis, no kpis table is still an error; with them, kpis is optional
    no_kpis = {k: v for k, v in small_client().items() if k != "kpis"}
    with pytest.raises(CskitError, match="kpis: required table is missing"):
        client_from_frames({k: v for k, v in no_kpis.items() if k != "events"}, Params(as_of="2026-06-30"))
    data = client_from_frames(no_kpis, Params(events_kpis=SPEC, timezone="Asia/Tokyo", as_of="2026-06-30"))
    assert list(data.kpis.columns) == ["account_id", "month", *SPEC]


@pytest.mark.parametrize(
    "raw, key",
    [
        (
            {"events_kpis": {"a": {"event": "x", "agg": "median"}}},
            "key 'events_kpis.a.agg': unknown aggregation; use one of count",
        ),
        ({"events_kpis": {"a": {"event": [], "agg": "count"}}}, "key 'events_kpis.a.event': the event list is empty"),
        (
            {"events_kpis": {"r": {"ratio": ["a", "nope"]}, "a": {"event": "x", "agg": "count"}}},
            "events_kpis.r.ratio: 'nope' is not a KPI of events_kpis nor of the catalogue",
        ),
        ({"events_kpis": {"a": {"event": "x"}}}, "key 'events_kpis.a': needs both event"),
        (
            {"events_kpis": {"a": {"event": "x", "agg": "count", "where": 1}}},
            "unknown key 'events_kpis.a.where' (value 1). Allowed keys: event, agg, ratio",
        ),
        ({"events_kpis": {"a": {"ratio": ["b", "licenses"]}, "b": {"ratio": ["a", "licenses"]}}}, "in a circle"),
        ({"timezone": "Asia/Tokio"}, "key 'timezone': is not a time zone"),
        ({"engine": "polars"}, "key 'engine': Input should be 'duckdb' or 'spark'"),
    ],
)
def test_params_validation_names_the_key(raw, key):
    with pytest.raises(CskitError) as e:
        validate_params(raw)
    assert key in str(e.value)


def test_params_accept_a_ratio_of_a_catalogue_or_declared_kpi():
    p = validate_params({"events_kpis": {"u": {"event": "app_open", "agg": "distinct_users"},
                                         "r": {"ratio": ["u", "licenses"]}, "s": {"ratio": ["u", "seats"]}},
                         "kpis": {"seats": {}}, "timezone": "Asia/Tokyo", "engine": "spark"})
    assert p.events_kpis["u"].events == ["app_open"] and p.events_kpis["r"].ratio == ("u", "licenses")


# --------------------------------------------------------------------------------------------------
# The simulator's log and the demo client


def test_simulated_log_gives_back_the_kpi_table_exactly(tmp_path):
    sim = simulate_client(60, 14, seed=5, mc_paths=0)
    written, full = events_client(sim.tables, seed=5)
    assert not set(EVENTS_KPIS) & set(written["kpis"].columns)
    written["events"].to_parquet(tmp_path / "events.parquet", coerce_timestamps="us")
    for name, df in written.items():
        if name != "events":
            df.to_csv(tmp_path / f"{name}.csv", index=False)
    data = load_client(Params(data=str(tmp_path), events_kpis=EVENTS_KPIS, timezone="Asia/Tokyo"))
    assert data.quality.tables["events"]["excluded"] == {"unknown_account": 3, "after_as_of": 2,
                                                         "before_contract_start": 2}
    got = data.kpis.assign(month=data.kpis["month"].dt.strftime("%Y-%m"))[["account_id", "month", *EVENTS_KPIS]]
    want = full[["account_id", "month", *EVENTS_KPIS]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    # the non-event KPIs are the simulator's, untouched
    assert written["kpis"]["licenses"].equals(sim.tables["kpis"]["licenses"])


def test_demo_events_client_is_what_the_documented_command_writes(tmp_path):
    from cskit import simulate as S

    text = (ROOT / "params" / "demo-events.yaml").read_text(encoding="utf-8")
    cmd = (
        "python -m cskit.simulate --accounts 300 --months 24 --seed 11 --start 2024-07 --events --out data/demo-events"
    )
    assert cmd in text
    assert S.main(cmd.split()[3:-1] + [str(tmp_path)]) == 0
    demo = ROOT / "data" / "demo-events"
    for f in ("accounts.csv", "revenue.csv", "kpis.csv", "nps.csv"):
        assert (tmp_path / f).read_bytes() == (demo / f).read_bytes(), f
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "events.parquet"), pd.read_parquet(demo / "events.parquet")
    )
    assert sum(p.stat().st_size for p in demo.iterdir()) < 5_000_000


def test_demo_events_diagnosis_end_to_end(tmp_path):
    from cskit.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", str(ROOT / "params" / "demo-events.yaml"), "--out", str(tmp_path)])
    assert e.value.code in (0, None)
    q = json.loads((tmp_path / "demo-events" / "results" / "quality.json").read_text(encoding="utf-8"))
    ev = q["tables"]["events"]
    assert ev["read"] == ev["used"] + sum(ev["excluded"].values()) and sum(ev["excluded"].values()) == 7


# --------------------------------------------------------------------------------------------------
# Spark local[2]: the same spec, identical results


@pytest.fixture(scope="module")
def spark():
    if shutil.which("java") is None:
        pytest.skip("Spark tests need Java (not installed here): install openjdk-17-jre to run them")
    import os

    old = os.environ.get("SPARK_MASTER")
    os.environ["SPARK_MASTER"] = "local[2]"
    session = E.spark_session()
    yield session
    session.stop()
    if old is None:
        os.environ.pop("SPARK_MASTER", None)
    else:
        os.environ["SPARK_MASTER"] = old


@pytest.mark.spark
def test_spark_gives_the_duckdb_panels(spark, tmp_path):
    assert spark.sparkContext.master == "local[2]"
    paths = write_sources(tmp_path, EVENTS)
    for kind in ("csv", "glob"):
        panel, counts = panel_of(E.read_events(paths[kind], engine="spark"))
        pd.testing.assert_frame_equal(panel, by_hand(), obj=kind)
        assert counts.excluded == EXPECTED_EXCLUDED and counts.blanked_value == 1
    sim = simulate_client(40, 12, seed=2, mc_paths=0)
    written, _ = events_client(sim.tables, seed=2)
    written["events"].to_parquet(tmp_path / "sim.parquet", coerce_timestamps="us")
    accounts = client_from_frames({k: v for k, v in written.items() if k != "events"},
                                  Params(events_kpis={}, as_of=None)).accounts
    got = [
        E.aggregate_events(
            E.read_events(tmp_path / "sim.parquet", engine=engine),
            EVENTS_KPIS,
            timezone="Asia/Tokyo",
            as_of=sim.as_of,
            accounts=accounts,
        )
        for engine in ("duckdb", "spark")
    ]
    pd.testing.assert_frame_equal(got[0][0], got[1][0])
    assert got[0][1] == got[1][1]
    con = ibis.pyspark.connect(spark)
    assert (local_days(con.execute, "pyspark") == pd.Timestamp("2026-02-01")).all()
    with pytest.raises(CskitError, match="engine: spark reads events from CSV or Parquet"):
        E.read_events(paths["duckdb"], engine="spark")


def test_duckdb_file_client_aggregates_in_the_database(tmp_path):
    """A .duckdb client: the events table is aggregated where it lies (not read as text)."""
    path = tmp_path / "client.duckdb"
    con = duckdb.connect(str(path))
    for name, frame in small_client().items():
        con.register("frame", frame)
        con.execute(f"create table {name} as select * from frame")
        con.unregister("frame")
    con.close()
    params = Params(data=str(path), events_kpis=SPEC, timezone="Asia/Tokyo", as_of="2026-06-30")
    data = load_client(params)
    assert data.quality.tables["events"]["excluded"] == EXPECTED_EXCLUDED
    hand = by_hand()
    got = data.kpis.merge(hand[["account_id", "month"]], on=["account_id", "month"])[hand.columns]
    pd.testing.assert_frame_equal(got, hand)


def test_postgresql_events_are_aggregated_in_the_server(postgres):
    """The events table in PostgreSQL with a warehouse's types (timestamptz, numeric): the spec runs in
    the server and gives the panel by hand."""
    with postgres.connect() as admin:
        admin.execute("create database events_by_hand")
    tables = small_client()
    with postgres.connect("events_by_hand") as con:
        con.execute("create table accounts (account_id text, contract_start date, churn_date date)")
        con.execute("create table revenue (account_id text, month date, mrr numeric(12, 2))")
        con.execute("create table kpis (account_id text, month date, licenses integer)")
        con.execute("create table events (account_id text, user_id text, ts timestamptz, event text, value numeric)")
        for row in tables["accounts"].itertuples(index=False):
            con.execute("insert into accounts values (%s, %s, %s)", (row[0], row[1], row[2] or None))
        for row in tables["revenue"].itertuples(index=False):
            con.execute("insert into revenue values (%s, %s, %s)", (row.account_id, row.month + "-01", row.mrr))
        for row in tables["kpis"].itertuples(index=False):
            con.execute("insert into kpis values (%s, %s, %s)", (row.account_id, row.month + "-01", row.licenses))
        for a, u, ts, event, value in EVENTS.itertuples(index=False):
            stamp = pd.to_datetime(ts, errors="coerce", format="ISO8601")
            if pd.notna(stamp) and stamp.tzinfo is None:
                stamp = stamp.tz_localize("Asia/Tokyo")  # a naive time of the log is local
            number = pd.to_numeric(value, errors="coerce")
            con.execute("insert into events values (%s, %s, %s, %s, %s)",
                        (a, u, None if pd.isna(stamp) else stamp.to_pydatetime(), event,
                         None if pd.isna(number) else float(number)))
    url = postgres.url(postgres.superuser, postgres.superpassword, "events_by_hand")
    data = load_client(Params(data=url, events_kpis=SPEC, timezone="Asia/Tokyo", as_of="2026-06-30"))
    assert data.quality.tables["events"]["excluded"] == EXPECTED_EXCLUDED
    hand = by_hand()
    got = data.kpis.merge(hand[["account_id", "month"]], on=["account_id", "month"])[hand.columns]
    pd.testing.assert_frame_equal(got, hand)
