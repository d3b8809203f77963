"""Warehouses: ``data:`` as a database URL (cskit/warehouse.py).

A small simulated client, with planted bad rows, is written once as CSV and once into a real
PostgreSQL server (tests/pgcluster.py) and a DuckDB file with the types a warehouse gives them (date
months, numeric(12,2) MRR, integer and double KPIs, text ids). Loading and the whole diagnosis must give
the same canonical tables, the same quality counts and byte-identical result files; connection
problems must stop with a message naming server, database and table; the password must appear
nowhere.
"""
from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from pandas.testing import assert_frame_equal

from cskit.errors import CskitError
from cskit.loading import load_client
from cskit.params import validate_params
from cskit.pipeline import analyse
from cskit.warehouse import (
    as_text,
    kernel_environment,
    mask,
    parse_url,
    public_data,
    shown_data,
)

PASSWORD = "Sx9:p@ss/w%rd#1"  # every URL-special character, so quoting mistakes show
USER = "cs_reader"
DATABASE = "client_db"
SPELLINGS = (PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD))  # raw and URL-encoded
AS_OF = "2025-08-31"
CSKIT = [sys.executable, "-c", "import sys; from cskit.cli import main; sys.argv[0] = 'cskit'; main()"]

DATE_COLUMNS = {"contract_start", "churn_date", "date"}
MONTH_COLUMNS = {"month"}
TEXT_COLUMNS = {"account_id", "company_name", "segment", "plan", "contract_type", "referred_by", "product", "role"}


# --------------------------------------------------------------------------------------------------
# URLs and masking (no server needed)


def test_url_parts_and_masking():
    url = parse_url("postgresql://cs%40x:p%40ss%3Aw%2Frd@db.example.com:6543/sales?sslmode=require")
    assert (url.user, url.password, url.host, url.port, url.database) == (
        "cs@x",
        "p@ss:w/rd",
        "db.example.com",
        6543,
        "sales",
    )
    assert url.options == {"sslmode": "require"}
    assert url.masked() == "postgresql://cs%40x:***@db.example.com:6543/sales?sslmode=require"
    assert url.without_password() == "postgresql://cs%40x@db.example.com:6543/sales?sslmode=require"
    assert "p@ss" not in repr(url) and "p%40ss" not in repr(url)
    assert url.where() == "PostgreSQL server db.example.com:6543, database 'sales'"
    in_query = parse_url("postgresql://bob@h/db?password=hunter2&sslmode=require")  # libpq's keyword form
    assert in_query.password == "hunter2" and "hunter2" not in in_query.masked() + in_query.without_password()
    assert in_query.options == {"sslmode": "require"}
    assert parse_url("duckdb:///srv/c.duckdb").path == "/srv/c.duckdb"
    assert parse_url("duckdb://rel/c.duckdb").path == "rel/c.duckdb"


def test_mask_replaces_every_spelling_and_any_url_password():
    url = parse_url(f"postgresql://u:{quote(PASSWORD, safe='')}@h/d")
    assert url.password == PASSWORD
    out = mask(f"raw {PASSWORD} quoted {quote(PASSWORD, safe='')} or {quote(PASSWORD)}", url.secrets())
    assert out == "raw *** quoted *** or ***"
    assert mask("see postgresql://bob:hunter2@h/db", []) == "see postgresql://bob:***@h/db"
    assert mask("see postgresql://bob@h/db?password=hunter2&x=1", []) == "see postgresql://bob@h/db?password=***&x=1"
    assert shown_data("postgresql://bob:hunter2@h/db") == "postgresql://bob:***@h/db"
    assert public_data("postgresql://bob:hunter2@h/db") == "postgresql://bob@h/db"
    assert public_data("data/demo") == "data/demo"


def test_params_messages_never_show_the_password():
    for raw in ({"data": "mysql://bob:hunter2@h/db"}, {"data": "postgresql://bob:hunter2@h:port/db"},
                {"data": "postgresql://bob:hunter2@h/db", "tables": {"accounts": "a.b.c"}},
                {"data": "postgresql://bob:hunter2@h/db", "tables": {"customers": "x"}}):
        with pytest.raises(CskitError) as e:
            validate_params(raw)
        assert "hunter2" not in str(e.value), str(e.value)
    with pytest.raises(CskitError, match="key 'tables': names a database's tables, so data must be a database URL"):
        validate_params({"data": "data/demo", "tables": {"accounts": "crm_accounts"}})
    with pytest.raises(CskitError, match="key 'data': mysql:// is not a database cskit can read"):
        validate_params({"data": "mysql://h/db"})
    p = validate_params({"data": "postgresql://bob:hunter2@h/db", "tables": {"accounts": " crm.accounts "}})
    assert p.tables == {"accounts": "crm.accounts"}
    assert p.papermill_parameters()["data"] == "postgresql://bob@h/db"
    assert "hunter2" not in repr(p) + str(p) and "postgresql://bob:***@h/db" in repr(p)
    assert p.data == "postgresql://bob:hunter2@h/db"  # the loader still has it


def test_kernel_environment_carries_the_password_and_restores():
    before = os.environ.get("PGPASSWORD")
    os.environ["PGPASSWORD"] = "earlier"
    try:
        with kernel_environment("postgresql://bob:hunter2@h/db"):
            assert os.environ["PGPASSWORD"] == "hunter2"
        assert os.environ["PGPASSWORD"] == "earlier"
        with kernel_environment("postgresql://bob@h/db"):
            assert os.environ["PGPASSWORD"] == "earlier"
    finally:
        os.environ.pop("PGPASSWORD")
        if before is not None:
            os.environ["PGPASSWORD"] = before


def test_typed_cells_become_the_text_a_csv_export_holds():
    table = pa.table(
        {
            "d": pa.array([dt.date(2024, 1, 5), None]),
            "month": pa.array([dt.date(2024, 1, 1), dt.date(2027, 3, 15)]),
            "mrr": pa.array([decimal.Decimal("297000.00"), decimal.Decimal("-5.50")], pa.decimal128(12, 2)),
            "x": pa.array([0.553, 1e-7]),
            "ts": pa.array(
                [dt.datetime(2024, 1, 31, 15, 30), dt.datetime(2024, 1, 31, 14, 0)], pa.timestamp("us", tz="UTC")
            ),
            "flag": pa.array([True, None]),
            "n": pa.array([17, None], pa.int64()),
        }
    )
    out = as_text(table, months={"month"}, timezone="Asia/Tokyo")
    assert out.astype(object).where(out.notna(), None).values.tolist() == [
        [
            "2024-01-05",
            "2024-01",
            "297000",
            "0.553",
            "2024-02-01 00:30:00",
            "1",
            "17",
        ],  # 15:30 UTC = 00:30 JST next day
        [None, "2027-03", "-5.5", "1e-7", "2024-01-31 23:00:00", None, None],
    ]


# --------------------------------------------------------------------------------------------------
# The client: CSV, PostgreSQL and DuckDB copies of the same tables


def client_tables() -> dict[str, pd.DataFrame]:
    """A small simulated client as CSV text, with one planted bad row of each kind a typed warehouse
    can hold: an account churning before its start, a revenue row of an unknown account, a negative
    MRR, a KPI row after as_of and a duplicate account-month with other values."""
    from cskit.simulate import simulate_client

    sim = simulate_client(n_accounts=80, n_months=14, seed=5, mc_paths=0)
    text = {}
    for name, df in sim.tables.items():
        text[name] = df.astype(object).where(df.notna(), None).map(lambda v: None if v is None else str(v))
    acc, rev, kpis = text["accounts"], text["revenue"], text["kpis"]
    bad = acc.iloc[[0]].assign(account_id="B_CHURN", contract_start="2025-03-10", churn_date="2025-01-02")
    text["accounts"] = pd.concat([acc, bad], ignore_index=True)
    ghost = rev.iloc[[0]].assign(account_id="GHOST")
    negative = rev.iloc[[1]].assign(mrr="-5000", month=rev["month"].iloc[1])
    text["revenue"] = pd.concat([rev, ghost, negative], ignore_index=True)
    late = kpis.iloc[[2]].assign(month="2025-10")
    dup = kpis.iloc[[3]].assign(login_days="1")
    text["kpis"] = pd.concat([kpis, late, dup], ignore_index=True)
    return text


def sql_type(table: str, column: str, values: pd.Series) -> str:
    if column in TEXT_COLUMNS:
        return "text"
    if column in DATE_COLUMNS or column in MONTH_COLUMNS:
        return "date"
    if column == "mrr":
        return "numeric(12,2)"
    present = values.dropna()
    if present.str.fullmatch(r"-?\d+").all():
        return "integer"
    return "double precision"


def typed_value(column: str, kind: str, v: str | None):
    if v is None:
        return None
    if kind == "date":
        return dt.date.fromisoformat(v + "-01" if len(v) == 7 else v)
    if kind == "numeric(12,2)":
        return decimal.Decimal(v)
    if kind == "integer":
        return int(v)
    if kind == "double precision":
        return float(v)
    return v


def schema_of(tables: dict[str, pd.DataFrame]) -> dict[str, dict[str, str]]:
    return {name: {c: sql_type(name, c, df[c]) for c in df.columns} for name, df in tables.items()}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("wh")
    tables = client_tables()
    (root / "csv").mkdir()
    for name, df in tables.items():
        df.to_csv(root / "csv" / f"{name}.csv", index=False)
    return root, tables, schema_of(tables)


DB_NAMES = {"accounts": "crm.customer_master", "revenue": "billing_mrr"}  # exercise params.tables


@pytest.fixture(scope="module")
def pg(postgres, client):
    """The client in PostgreSQL, readable by a role with a password; ``tables`` renames two tables."""
    _, tables, schema = client
    with postgres.connect() as admin:
        admin.execute(f"create role {USER} login password '{PASSWORD}'")
        admin.execute(f"create database {DATABASE} owner {USER}")
    import psycopg

    with psycopg.connect(host=postgres.host, port=postgres.port, user=USER, password=PASSWORD, dbname=DATABASE,
                         autocommit=True) as con:
        con.execute("create schema crm")
        for name, df in tables.items():
            target = DB_NAMES.get(name, name)
            cols = schema[name]
            con.execute(f"create table {target} ({', '.join(f'{c} {t}' for c, t in cols.items())})")
            with con.cursor().copy(f"copy {target} ({', '.join(cols)}) from stdin") as copy:
                for row in df.itertuples(index=False):
                    copy.write_row([typed_value(c, cols[c], v) for c, v in zip(cols, row)])
        types = dict(con.execute("select table_name || '.' || column_name, data_type from information_schema.columns "
                                 "where table_schema in ('public', 'crm')").fetchall())
    assert types["billing_mrr.month"] == "date" and types["billing_mrr.mrr"] == "numeric"
    assert types["customer_master.contract_start"] == "date" and types["kpis.login_days"] == "integer"
    return postgres


def pg_params(pg, password: str | None = PASSWORD, **extra) -> dict:
    return {"client": "wh", "as_of": AS_OF, "bootstrap": 10, "seed": 2, "tables": DB_NAMES,
            "data": pg.url(USER, password, DATABASE), **extra}


def csv_params(root: Path) -> dict:
    return {"client": "wh", "as_of": AS_OF, "bootstrap": 10, "seed": 2, "data": str(root / "csv")}


@pytest.fixture(scope="module")
def from_csv(client):
    return load_client(validate_params(csv_params(client[0])))


def assert_same_client(a, b):
    for name in ("accounts", "revenue", "kpis", "nps"):
        assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)
    assert (a.as_of, a.static_kpis, a.catalogue) == (b.as_of, b.static_kpis, b.catalogue)
    assert a.quality.to_dict() == b.quality.to_dict()


def test_planted_bad_rows_are_counted(from_csv):
    t = from_csv.quality.tables
    assert t["accounts"]["excluded"] == {"churn_before_start": 1}
    assert t["revenue"]["excluded"] == {"unknown_account": 1, "negative_mrr": 1}
    assert t["kpis"]["excluded"] == {"after_as_of": 1, "duplicate_account_month": 1}
    assert from_csv.quality.is_consistent()


def test_postgresql_gives_the_csv_client_exactly(pg, from_csv):
    data = load_client(validate_params(pg_params(pg)))
    assert_same_client(data, from_csv)
    assert data.revenue["mrr"].dtype == float and data.kpis["month"].dtype == "datetime64[ns]"


def test_password_from_pgpassword(pg, from_csv, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    assert_same_client(load_client(validate_params(pg_params(pg, password=None))), from_csv)


def test_duckdb_url_gives_the_csv_client_exactly(client, from_csv, tmp_path):
    _, tables, schema = client
    path = tmp_path / "client.duckdb"
    con = duckdb.connect(str(path))
    for name, df in tables.items():
        cols = schema[name]
        con.execute(f"create table {name} ({', '.join(f'{c} {t}' for c, t in cols.items())})")
        rows = [[typed_value(c, cols[c], v) for c, v in zip(cols, row)] for row in df.itertuples(index=False)]
        con.executemany(f"insert into {name} values ({', '.join('?' * len(cols))})", rows)
    assert con.execute("select data_type from information_schema.columns where table_name = 'revenue' "
                       "and column_name = 'mrr'").fetchone()[0] == "DECIMAL(12,2)"
    con.close()
    params = csv_params(tmp_path) | {"data": f"duckdb://{path}"}
    assert_same_client(load_client(validate_params(params)), from_csv)
    relative = csv_params(tmp_path) | {"data": "duckdb://client.duckdb"}
    assert_same_client(load_client(validate_params(relative), base=tmp_path), from_csv)


def test_diagnosis_result_files_byte_identical(pg, client, tmp_path):
    root = client[0]
    out_csv = analyse(csv_params(root)).write(tmp_path / "csv")
    out_pg = analyse(pg_params(pg)).write(tmp_path / "pg")
    names = sorted(p.name for p in out_csv.iterdir())
    assert names == sorted(p.name for p in out_pg.iterdir()) and "drivers.csv" in names and "quality.json" in names
    for name in names:
        if name != "run.json":  # it names the data source (without the password: see the cskit run test)
            assert (out_csv / name).read_bytes() == (out_pg / name).read_bytes(), name


def test_unusual_column_types_are_read_as_text(pg):
    """uuid ids, enums, char(n), jsonb: cast to text in the database; money (which the driver returns
    as text although Ibis types it decimal): the whole table falls back to the database's text."""
    import psycopg

    from cskit.loading import _Report
    from cskit.warehouse import read_database

    with psycopg.connect(host=pg.host, port=pg.port, user=USER, password=PASSWORD, dbname=DATABASE,
                         autocommit=True) as con:
        con.execute("create schema odd")
        con.execute("create type odd.plan_t as enum ('Basic', 'Pro')")
        con.execute("create table odd.a (id uuid, p odd.plan_t, ch char(5), j jsonb, n int)")
        con.execute("insert into odd.a values ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'Pro', 'ab', '{\"a\": 1}', 7)")
        con.execute("create table odd.m (id int, m money)")
        con.execute("insert into odd.m values (1, 12.5)")
    report = _Report()
    frames, unread, con = read_database(
        parse_url(pg.url(USER, PASSWORD, DATABASE)),
        {"accounts": "odd.a", "revenue": "odd.m"},
        tables=("accounts", "revenue"),
        required=("accounts", "revenue"),
        month_columns={},
        timezone="UTC",
        report=report,
    )
    con.disconnect()
    assert report.fatal == [] and unread == set()
    assert frames["accounts"].astype(object).values.tolist() == [
        ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "Pro", "ab   ", '{"a": 1}', "7"]
    ]
    assert frames["revenue"].astype(object).values.tolist() == [["1", "$12.50"]]


# --------------------------------------------------------------------------------------------------
# Events: the aggregation runs in PostgreSQL on a timestamptz log


@pytest.fixture(scope="module")
def events_client(tmp_path_factory):
    """A client whose usage KPIs come from a raw log (cskit.simulate_events, with its planted bad
    events), as CSV + events.parquet and as a typed PostgreSQL database (ts timestamptz; the log in
    schema ``tracking`` under another name, mapped by ``tables``)."""
    from cskit.simulate import simulate_client
    from cskit.simulate_events import events_client as make_events

    sim = simulate_client(n_accounts=60, n_months=14, seed=8, mc_paths=0)
    tables = make_events(sim.tables, seed=8, timezone="Asia/Tokyo")[0]
    events = tables.pop("events")
    text = {n: df.astype(object).where(df.notna(), None).map(lambda v: None if v is None else str(v))
            for n, df in tables.items()}
    root = tmp_path_factory.mktemp("ev")
    (root / "csv").mkdir()
    for name, df in text.items():
        df.to_csv(root / "csv" / f"{name}.csv", index=False)
    events.to_parquet(root / "csv" / "events.parquet", index=False, coerce_timestamps="us")
    return root, text, events


EVENT_PARAMS = {"timezone": "Asia/Tokyo", "bootstrap": 10, "seed": 2, "as_of": AS_OF}


@pytest.fixture(scope="module")
def pg_events(postgres, pg, events_client):
    import psycopg

    from cskit.simulate_events import EVENTS_KPIS

    _, text, events = events_client
    schema = schema_of(text)
    with postgres.connect() as admin:
        admin.execute(f"create database events_db owner {USER}")
    with psycopg.connect(host=postgres.host, port=postgres.port, user=USER, password=PASSWORD, dbname="events_db",
                         autocommit=True) as con:
        for name, df in text.items():
            cols = schema[name]
            con.execute(f"create table {name} ({', '.join(f'{c} {t}' for c, t in cols.items())})")
            with con.cursor().copy(f"copy {name} from stdin") as copy:
                for row in df.itertuples(index=False):
                    copy.write_row([typed_value(c, cols[c], v) for c, v in zip(cols, row)])
        con.execute("create schema tracking")
        con.execute("create table tracking.app_events (account_id text, user_id text, ts timestamptz, event text, "
                    "value double precision)")
        with con.cursor().copy("copy tracking.app_events from stdin") as copy:
            for a, u, ts, e, v in events.itertuples(index=False):
                copy.write_row([a, u, None if pd.isna(ts) else ts.to_pydatetime(), e, None if pd.isna(v) else float(v)])
        assert con.execute("select data_type from information_schema.columns where table_name = 'app_events' "
                           "and column_name = 'ts'").fetchone()[0] == "timestamp with time zone"
    url = postgres.url(USER, PASSWORD, "events_db")
    return ({"client": "ev", "data": url, "tables": {"events": "tracking.app_events"}, "events_kpis": EVENTS_KPIS}
            | EVENT_PARAMS)


def test_events_aggregated_in_postgresql_give_the_file_client(pg_events, events_client, tmp_path):
    from cskit.simulate_events import EVENTS_KPIS

    root = events_client[0]
    files = {"client": "ev", "data": str(root / "csv"), "events_kpis": EVENTS_KPIS} | EVENT_PARAMS
    a, b = load_client(validate_params(files)), load_client(validate_params(pg_events))
    assert_same_client(a, b)
    assert "login_days" in b.kpis and b.kpis["login_days"].notna().sum() > 100
    ev = b.quality.tables["events"]
    assert ev["read"] == len(events_client[2]) and ev["excluded"] == {"unknown_account": 3, "after_as_of": 2,
                                                                        "before_contract_start": 2}
    out_a = analyse(files).write(tmp_path / "files")
    out_b = analyse(pg_events).write(tmp_path / "pg")
    for p in sorted(out_a.iterdir()):
        if p.name != "run.json":  # it names the data source
            assert p.read_bytes() == (out_b / p.name).read_bytes(), p.name


def test_events_table_missing_in_postgresql_is_named(pg_events):
    msg = load_error(pg_events | {"tables": {"events": "tracking.nope"}})
    assert "events: params events_kpis is set but there is no table 'tracking.nope' in the PostgreSQL server" in msg
    assert "tables in schema 'tracking': app_events" in msg


def test_events_table_without_a_spec_is_not_read(pg_events):
    params = {k: v for k, v in pg_events.items() if k != "events_kpis"}
    data = load_client(validate_params(params))
    assert "events" not in data.quality.tables and data.events is None and "login_days" not in data.kpis
    assert [w.values for w in data.quality.warnings if w.code == "events_unused"] == [{"file": "tracking.app_events"}]


def test_events_aggregation_refused_by_the_server_is_one_message(pg_events, postgres):
    """A read-only user without the TEMP privilege cannot receive the accounts table the aggregation
    joins: exit-2 message naming server and database, not a driver traceback."""
    with postgres.connect() as admin:
        admin.execute("revoke temporary on database events_db from public")
        admin.execute(f"alter database events_db owner to {postgres.superuser}")
        admin.execute(f"grant connect on database events_db to {USER}")
    try:
        msg = load_error(pg_events)
        assert "events: the events aggregation failed in the PostgreSQL server" in msg and "'events_db'" in msg
        assert "temporary" in msg.lower()
    finally:
        with postgres.connect() as admin:
            admin.execute(f"alter database events_db owner to {USER}")
            admin.execute("grant temporary on database events_db to public")


# --------------------------------------------------------------------------------------------------
# Connection problems: exit-2 messages naming server, database and table, never the password


def load_error(params: dict, **kw) -> str:
    with pytest.raises(CskitError) as e:
        load_client(validate_params(params), **kw)
    msg = str(e.value)
    assert not any(s in msg for s in SPELLINGS), msg
    return msg


def test_wrong_password(pg):
    msg = load_error(pg_params(pg, password="not-the-password"))
    assert f"PostgreSQL server 127.0.0.1:{pg.port}, database '{DATABASE}' as user '{USER}'" in msg
    assert "wrong user or password" in msg and "PGPASSWORD" in msg


def test_unknown_host_and_closed_port(pg):
    msg = load_error(pg_params(pg) | {"data": f"postgresql://{USER}:secret@no-such-host.invalid:5432/{DATABASE}"})
    assert "PostgreSQL server no-such-host.invalid:5432" in msg and "host name is unknown" in msg
    assert "secret" not in msg
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    msg = load_error(pg_params(pg) | {"data": pg.url(USER, PASSWORD, DATABASE).replace(str(pg.port), str(port))})
    assert f"PostgreSQL server 127.0.0.1:{port}, database '{DATABASE}'" in msg and "cannot be reached" in msg


def test_unknown_database(pg):
    msg = load_error(pg_params(pg) | {"data": pg.url(USER, PASSWORD, "nope_db")})
    assert "database 'nope_db'" in msg and "does not exist" in msg


def test_missing_tables_named_together(pg):
    msg = load_error(pg_params(pg, tables={"accounts": "crm.no_such", "nps": "surveys"}))
    assert f"no table 'crm.no_such' in the PostgreSQL server 127.0.0.1:{pg.port}, database '{DATABASE}'" in msg
    assert "tables in schema 'crm': customer_master" in msg
    assert "no table 'surveys'" in msg  # mapped, so required
    assert "revenue: required table is missing: no table 'revenue'" in msg  # not mapped here: its own name


def test_missing_duckdb_file(tmp_path):
    msg = load_error({"data": f"duckdb://{tmp_path}/nope.duckdb"})
    assert f"DuckDB file {tmp_path}/nope.duckdb does not exist" in msg


# --------------------------------------------------------------------------------------------------
# cskit run end to end: the password is in no file and no output


def test_cskit_run_writes_the_password_nowhere(pg, tmp_path):
    (tmp_path / "wh.yaml").write_text(yaml.safe_dump(pg_params(pg) | {"language": "en"}), encoding="utf-8")
    env = dict(os.environ, COLUMNS="200")
    env.pop("PGPASSWORD", None)
    done = subprocess.run([*CSKIT, "run", "wh.yaml", "--out", "out"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {"diagnosis.ipynb", "diagnosis.html", "drivers.csv", "quality.json"} <= {p.name for p in files}
    spellings = SPELLINGS
    for p in files:
        blob = p.read_bytes()
        for s in spellings:
            assert s.encode() not in blob, (p, s)
    for s in spellings:
        assert s not in done.stdout and s not in done.stderr
    run = json.loads((tmp_path / "out" / "wh" / "results" / "run.json").read_text(encoding="utf-8"))
    assert run["params"]["data"] == f"postgresql://{USER}@127.0.0.1:{pg.port}/{DATABASE}"
    raw = (tmp_path / "wh.yaml").read_bytes()
    masked = raw.decode().replace(quote(PASSWORD, safe=""), "***")
    assert run["params_sha256"] == hashlib.sha256(masked.encode()).hexdigest()  # not the hash of the password's file
    nb = (tmp_path / "out" / "wh" / "diagnosis.ipynb").read_text(encoding="utf-8")
    assert f"postgresql://{USER}@127.0.0.1:{pg.port}/{DATABASE}" in nb  # the kernel got the URL without it

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(pg_params(pg, password="wrong" + PASSWORD) | {"client": "bad"}))
    done = subprocess.run([*CSKIT, "run", "bad.yaml", "--out", "out"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert "wrong user or password" in done.stderr and f"database '{DATABASE}'" in done.stderr
    assert not any(s in done.stderr + done.stdout for s in SPELLINGS)
    assert not (tmp_path / "out" / "bad").exists()
