"""Raw events → the account × month KPI panel (DESIGN §7), on DuckDB, Spark or any Ibis backend.

The ``events_kpis`` spec of params is compiled once into one Ibis expression grouped by account ×
calendar month in the client's time zone, and executed where the events live; only the aggregated
panel (one row per account-month) comes back to pandas. The public API:

- :func:`read_events` — an Ibis table over an events file, a folder or glob of CSV/Parquet files, or a
  ``.duckdb`` file, on DuckDB (streamed, bounded memory) or Spark;
- :func:`aggregate_events` — the KPI panel and the quality counts from any Ibis table with the
  canonical columns ``account_id, user_id, ts, event[, value]`` (a warehouse table works as it is);
- :func:`apply_ratios` — the ``ratio`` KPIs, once the events KPIs have joined the ``kpis`` table.

Ibis runs its backends in UTC, so days and months are cut in the client's zone here: timestamps that
carry a zone (``timestamptz``, ISO strings with an offset or ``Z``) are converted with the zone's own
rules (DST included); naive timestamps are taken as local wall-clock time. See docs/methods.md,
"Events → KPIs".
"""
from __future__ import annotations

import datetime as dt
import glob as _glob
import os
import shutil
import tempfile
import weakref
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cskit.errors import CskitError
from cskit.notices import Notice
from cskit.params import EventKPI

if TYPE_CHECKING:  # ibis is imported lazily: a client without events never pays for it
    import ibis

CANONICAL = ("account_id", "user_id", "ts", "event", "value")
ZERO_INSIDE = ("count", "active_days", "distinct_users", "sum")  # 0 inside the coverage; mean/max stay empty
# The first check a row fails names its reason (same order as the other tables, docs/methods.md).
REASONS = ("empty_account_id", "bad_ts", "unknown_account", "account_excluded", "after_as_of",
           "before_contract_start", "after_churn")
_OFFSET = r"\d:\d\d(:\d\d(\.\d*)?)?\s*([zZ]|[+-]\d\d(:?\d\d)?)$"  # an ISO time followed by Z or ±hh[:mm]
_DECIMAL = (38, 9)  # sums in exact decimal: the same total in any order, engine or thread count
DUCKDB_MEMORY_LIMIT = os.environ.get("CSKIT_DUCKDB_MEMORY", "3GB")


@dataclass
class EventCounts:
    """What happened to the rows of the events table (goes into ``quality.json`` as table ``events``).

    ``read == used + sum(excluded.values())``; ``examples`` holds up to two raw values per reason;
    ``blanked_value`` counts ``value`` cells that are not numbers (treated as empty, row kept);
    ``occurrences`` the usable rows per event name, most frequent first; ``coverage_start`` the
    first local month with a usable event (None if there is none).
    """

    read: int
    excluded: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    blanked_value: int = 0
    occurrences: dict[str, int] = field(default_factory=dict)
    coverage_start: pd.Timestamp | None = None

    @property
    def used(self) -> int:
        return self.read - sum(self.excluded.values())

    def record(self, quality) -> None:
        """Add the counts and one warning per reason to a :class:`cskit.client.Quality`."""
        quality.read("events", self.read)
        for reason in REASONS:
            n = self.excluded.get(reason, 0)
            if n:
                quality.exclude("events", reason, n)
                column, what, fix = _REASON_TEXT[reason]
                shown = ", ".join(repr(x) for x in self.examples.get(reason, [])) or "(empty)"
                quality.warn(Notice("rows_excluded", stage="load", table="events", column=column, n=int(n),
                                    reason=reason, what=what, examples=shown, fix=fix))
        if self.blanked_value:
            quality.tables["events"]["blanked_cells"] = {"value": self.blanked_value}
            quality.warn(Notice("cells_blanked", stage="load", table="events", column="value",
                                n=int(self.blanked_value), examples=""))


_REASON_TEXT = {
    "empty_account_id": ("account_id", "the account id is empty", "fill in the account id, or delete the row"),
    "bad_ts": (
        "ts",
        "ts is empty or not a timestamp",
        "write timestamps as YYYY-MM-DD HH:MM:SS (local time) or ISO 8601 with Z or an offset",
    ),
    "unknown_account": (
        "account_id",
        "the account is not in accounts",
        "add the account to accounts, or correct the id",
    ),
    "account_excluded": (
        "account_id",
        "the account's row in accounts was excluded (see the accounts warnings)",
        "fix the account's row in accounts",
    ),
    "after_as_of": (
        "ts",
        "after the analysis month as_of (local time)",
        "nothing, if as_of is right; otherwise set as_of in params",
    ),
    "before_contract_start": (
        "ts",
        "before the account's contract_start (local date)",
        "check contract_start in accounts (or remove pre-contract events, e.g. a free trial)",
    ),
    "after_churn": (
        "ts",
        "after the account's churn_date (local date)",
        "check churn_date in accounts (a returning customer needs its churn_date left empty)",
    ),
}


# --------------------------------------------------------------------------------------------------
# Reading


def read_events(path: str | Path, *, engine: str = "duckdb", columns: Mapping[str, str] | None = None,
                memory_limit: str | None = None, table: str = "events") -> ibis.Table:
    """An Ibis table over a client's events, with the canonical column names; nothing is loaded.

    Parameters
    ----------
    path
        ``events.csv`` / ``events.parquet`` (also ``.csv.gz``), a folder of many CSV or Parquet files
        (searched recursively), a glob such as ``logs/2026-*.parquet``, or a ``.duckdb`` file holding a
        table ``events``.
    engine
        ``"duckdb"`` (embedded; streamed from the files with ``memory_limit``, a spill directory and
        ``preserve_insertion_order=false``) or ``"spark"`` (``$SPARK_MASTER``, default ``local[*]``;
        CSV and Parquet only).
    columns
        The client's headers mapped to canonical names (``params.columns.events``).
    memory_limit
        DuckDB's memory limit (default ``$CSKIT_DUCKDB_MEMORY`` or 3GB); beyond it DuckDB spills to disk.
    table
        The table of a ``.duckdb`` file (found case-insensitively).

    Raises
    ------
    CskitError
        Unreadable source, or a required column missing (named, with the columns found).
    """
    kind, files = _files(path)
    if engine == "spark":
        table = _spark_table(kind, files, path)
    elif engine == "duckdb":
        table = _duckdb_table(kind, files, memory_limit or DUCKDB_MEMORY_LIMIT, table)
    else:
        raise CskitError(f"engine: {engine!r} is not an events engine; use duckdb or spark.")
    return canonical_columns(table, columns or {})


def _files(path: str | Path) -> tuple[str, list[str]]:
    """("csv" | "parquet" | "duckdb", the files) of an events source."""
    text = str(path)
    if any(c in text for c in "*?["):
        files = sorted(_glob.glob(text, recursive=True))
    elif Path(text).is_dir():
        files = sorted(str(p) for p in Path(text).rglob("*") if p.is_file() and _kind(p.name))
    elif Path(text).is_file():
        files = [text]
    else:
        raise CskitError(f"events: {text} does not exist. Fix: point data to the folder holding events.csv / "
                         "events.parquet / events/ (a folder of CSV or Parquet files).")
    kinds = sorted({_kind(f) for f in files} - {None})
    if not files or not kinds:
        raise CskitError(f"events: no CSV or Parquet file in {text}. Fix: put the event files there "
                         "(*.csv, *.csv.gz or *.parquet).")
    if len(kinds) > 1:
        raise CskitError(f"events: {text} mixes {' and '.join(kinds)} files. Fix: keep one format per events source.")
    return kinds[0], files


def _kind(name: str) -> str | None:
    low = name.lower()
    if low.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        return "csv"
    if low.endswith((".parquet", ".pq")):
        return "parquet"
    if low.endswith((".duckdb", ".ddb", ".db")):
        return "duckdb"
    return None


def _duckdb_table(kind: str, files: list[str], memory_limit: str, wanted: str = "events") -> ibis.Table:
    import ibis

    spill = tempfile.mkdtemp(prefix="cskit-duckdb-")
    con = ibis.duckdb.connect(memory_limit=memory_limit, temp_directory=spill, preserve_insertion_order=False,
                              threads=max(1, min(4, os.cpu_count() or 1)))
    weakref.finalize(con, shutil.rmtree, spill, True)
    quoted = "[" + ", ".join(_sql_str(f) for f in files) + "]"
    try:
        if kind == "csv":
            source = f"read_csv({quoted}, header=true, all_varchar=true, union_by_name=true)"
        elif kind == "parquet":
            source = f"read_parquet({quoted}, union_by_name=true)"
        else:
            con.raw_sql(f"attach {_sql_str(files[0])} as client (read_only)")
            names = [r[0] for r in con.raw_sql(
                "select table_name from information_schema.tables where table_catalog = 'client'").fetchall()]
            match = [n for n in names if n.lower() == wanted.lower()]
            if not match:
                raise CskitError(
                    f"events: no table {wanted!r} in {Path(files[0]).name} (tables: {', '.join(names) or 'none'}). "
                    "Fix: create or rename it."
                )
            source = f'client.main."{match[0]}"'
        cols = con.raw_sql(f"describe select * from {source}").fetchall()
    except Exception as e:  # duckdb raises many types for a broken file
        if isinstance(e, CskitError):
            raise
        raise CskitError(
            f"events: cannot read {files[0]}{' and others' if len(files) > 1 else ''} "
            f"({str(e).splitlines()[0]}). Fix: check the files are valid {kind.upper()} (CSV in UTF-8)."
        ) from None
    # DuckDB 2 reads tz-aware nanosecond parquet as TIMESTAMPTZ_NS, which Ibis 12 cannot type: use microseconds.
    select = []
    for name, typ, *_ in cols:
        q = '"' + str(name).replace('"', '""') + '"'
        cast = {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ", "TIMESTAMP_NS": "TIMESTAMP",
                "TIMESTAMP_NS WITH TIME ZONE": "TIMESTAMPTZ"}.get(str(typ).upper())
        if str(typ).upper() in ("TIMESTAMPTZ_NS", "TIMESTAMP_NS WITH TIME ZONE"):
            cast = "TIMESTAMPTZ"
        select.append(f"cast({q} as {cast}) as {q}" if cast and cast != str(typ).upper() else q)
    return con.sql(f"select {', '.join(select)} from {source}")


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def spark_session():
    """The Spark session of the events engine: ``$SPARK_MASTER`` (default ``local[*]``), session time zone UTC."""
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master(os.environ.get("SPARK_MASTER", "local[*]")).appName("cskit")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.shuffle.partitions", os.environ.get("CSKIT_SPARK_PARTITIONS", "8"))
               .config("spark.driver.memory", os.environ.get("CSKIT_SPARK_DRIVER_MEMORY", "2g"))
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false"))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _spark_table(kind: str, files: list[str], path) -> ibis.Table:
    try:
        import ibis
        import pyspark  # noqa: F401
    except ImportError:
        raise CskitError("engine: spark needs the spark extra. Fix: pip install 'cskit[spark]' "
                         "(and Java 17), or use engine: duckdb.") from None
    if kind == "duckdb":
        raise CskitError("engine: spark reads events from CSV or Parquet files, not a .duckdb file. "
                         "Fix: use engine: duckdb, or export the events table to Parquet.")
    session = spark_session()
    con = ibis.pyspark.connect(session)
    try:
        reader = session.read
        frame = reader.csv(files, header=True, inferSchema=False) if kind == "csv" else reader.parquet(*files)
        name = f"cskit_events_{id(frame):x}"
        frame.createOrReplaceTempView(name)
        table = con.table(name)
    except Exception as e:  # noqa: BLE001 - py4j / Spark analysis errors
        raise CskitError(f"events: Spark cannot read {path} ({str(e).splitlines()[0][:300]}). Fix: check the files; "
                         "Parquet timestamps must be in microseconds (pandas: coerce_timestamps='us').") from None
    # Spark's TimestampType is an instant (shown in the session zone, UTC), but Ibis types it as naive:
    # label it UTC so that it is converted to local time like a timestamptz.
    from pyspark.sql.types import TimestampType

    instants = {f.name: table[f.name].cast("timestamp('UTC')") for f in frame.schema.fields
                if type(f.dataType) is TimestampType}
    return table.mutate(**instants) if instants else table


def canonical_columns(table: ibis.Table, columns: Mapping[str, str]) -> ibis.Table:
    """Rename the client's headers to canonical names (``params.columns.events``) and check the
    required ones; a header mapped but absent is an error naming it."""
    found = list(table.columns)
    stripped = {str(c).strip().lstrip("\ufeff"): c for c in found}
    rename = {}
    for src, dst in columns.items():
        if src.strip() in stripped:
            rename[dst] = stripped[src.strip()]
    for c in CANONICAL:
        if c not in rename and c in stripped and stripped[c] != c:
            rename[c] = stripped[c]
    table = table.rename(rename) if rename else table
    missing = [c for c in ("account_id", "ts", "event") if c not in table.columns]
    if missing:
        raise CskitError(
            f"events: required column(s) {', '.join(repr(c) for c in missing)} missing (columns found: "
            f"{', '.join(map(str, found[:12]))}). Fix: rename the headers, or map them in params: "
            "columns: {events: {<your header>: ts}}.")
    return table


# --------------------------------------------------------------------------------------------------
# Local time


def zone_transitions(timezone: str, start: dt.datetime, end: dt.datetime) -> tuple[int, list[tuple[dt.datetime, int]]]:
    """(UTC offset in seconds at ``start``, [(UTC instant, offset from then on), ...] up to ``end``).

    Found from the zone's rules (zoneinfo) by a daily scan and a bisection to the second; naive
    datetimes in UTC. A zone without DST in the period has no transitions.
    """
    zone = zoneinfo.ZoneInfo(timezone)
    utc = dt.UTC

    def offset(t: dt.datetime) -> int:
        return int(t.replace(tzinfo=utc).astimezone(zone).utcoffset().total_seconds())

    first = offset(start)
    out, prev, t = [], first, start
    step = dt.timedelta(hours=12)
    while t < end:
        nxt = t + step
        off = offset(nxt)
        if off != prev:
            lo, hi = t, nxt
            while (hi - lo) > dt.timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if offset(mid) == prev:
                    lo = mid
                else:
                    hi = mid
            hi = hi.replace(microsecond=0)
            if offset(hi) != off:
                hi += dt.timedelta(seconds=1)
            out.append((hi, off))
            prev = off
        t = nxt
    return first, out


def local_time(ts: ibis.Value, timezone: str, *, until: pd.Timestamp, backend: str | None = None) -> ibis.Value:
    """The local wall-clock time (a naive timestamp) of the ``ts`` column: strings are parsed (ISO
    8601; those with ``Z`` or an offset are instants, the others local), instants (and numbers, as
    Unix time) converted with the zone's rules, naive timestamps kept; unparseable → null.
    ``backend`` (Ibis' name of it) picks a faster spelling of the same conversion where one exists."""
    import ibis
    import ibis.expr.datatypes as dt_

    typ = ts.type()
    if typ.is_string():
        s = ts.strip().replace("/", "-")  # 2026/01/31: DuckDB reads it, Spark does not
        instant = _utc_wall(s.try_cast(dt_.Timestamp(timezone="UTC")), backend)
        return s.re_search(_OFFSET).ifelse(_shift(instant, timezone, until), s.try_cast(dt_.Timestamp()))
    if typ.is_timestamp():
        if typ.timezone is None:
            return ts.cast(dt_.Timestamp())
        return _shift(_utc_wall(ts, backend), timezone, until)
    if typ.is_date():
        return ts.cast(dt_.Timestamp())
    if typ.is_numeric():  # Unix time (Mixpanel's `time`): seconds, or milliseconds when above 10^11
        seconds = ibis.ifelse(ts.abs() > 1e11, ts / 1000, ts).cast("float64")
        micros = (seconds * 1_000_000).round().cast("int64")
        if backend == "duckdb":
            return _shift(_from_epoch_us(micros), timezone, until)
        # elsewhere whole seconds (the day and month of an instant never change by flooring it)
        return _shift(_utc_wall(seconds.floor().cast("int64").as_timestamp("s"), backend), timezone, until)
    raise CskitError(f"events.ts has type {typ}; it must be a timestamp, a date or ISO 8601 text. "
                     "Fix: export ts as a timestamp (e.g. 2026-04-01 09:30:00).")


def _utc_wall(instant: ibis.Value, backend: str | None) -> ibis.Value:
    """An instant as its naive UTC wall time. On DuckDB through epoch microseconds: the plain cast goes
    through ICU's calendar and took 5x longer on 10M rows."""
    import ibis
    import ibis.expr.datatypes as dt_

    if backend != "duckdb":
        return instant.cast(dt_.Timestamp())

    utc = dt_.Timestamp(timezone="UTC")
    epoch_us = ibis.udf.scalar.builtin(lambda x: None, name="epoch_us", signature=((utc,), dt_.int64))
    return _from_epoch_us(epoch_us(instant.cast(utc)))


def _from_epoch_us(micros: ibis.Value) -> ibis.Value:
    """DuckDB: microseconds since 1970 (UTC) as a naive timestamp."""
    import ibis
    import ibis.expr.datatypes as dt_

    make_timestamp = ibis.udf.scalar.builtin(lambda x: None, name="make_timestamp",
                                             signature=((dt_.int64,), dt_.Timestamp()))
    return make_timestamp(micros)


def _shift(utc_wall: ibis.Value, timezone: str, until: pd.Timestamp) -> ibis.Value:
    """UTC wall time → local wall time: one offset, or a CASE over the zone's transitions (latest first)."""
    import ibis

    first, changes = zone_transitions(timezone, dt.datetime(1970, 1, 1), dt.datetime(until.year + 2, 1, 1))
    if not changes:
        return utc_wall + ibis.interval(seconds=first) if first else utc_wall
    branches = [(utc_wall >= ibis.literal(t), utc_wall + ibis.interval(seconds=off)) for t, off in reversed(changes)]
    return ibis.cases(*branches, else_=utc_wall + ibis.interval(seconds=first))


# --------------------------------------------------------------------------------------------------
# Aggregation


def aggregate_events(table: ibis.Table, spec: Mapping[str, EventKPI | dict], *, timezone: str = "UTC",
                     as_of: pd.Timestamp | dt.date | str, accounts: pd.DataFrame,
                     excluded_accounts: tuple | list | set = ()) -> tuple[pd.DataFrame, EventCounts]:
    """The KPI panel of ``spec`` from an events table, and what happened to its rows.

    Parameters
    ----------
    table
        An Ibis table with canonical columns ``account_id, ts, event`` (+ ``user_id``, ``value`` when
        the spec needs them), on any backend: :func:`read_events`, or a warehouse table.
    spec
        ``params.events_kpis``: name → :class:`cskit.params.EventKPI` (or its dict). Ratios are left to
        :func:`apply_ratios`.
    timezone
        IANA zone in which ``ts`` is cut into days and months; naive timestamps are local.
    as_of
        Any day of the analysis month: events of later (local) months are excluded.
    accounts
        Canonical accounts (``account_id``, ``contract_start``, ``churn_date``) after validation.
    excluded_accounts
        Ids whose accounts row was excluded (their events count as ``account_excluded``).

    Returns
    -------
    panel
        ``account_id``, ``month`` (first day, datetime64[ns]) and one float column per non-ratio KPI,
        one row per account-month of each contract from the log's coverage start (its first month
        with a usable event) to as_of: 0 without events for count / active_days / distinct_users /
        sum, NaN for mean / max. Sorted by account and month.
    counts
        :class:`EventCounts` (read, excluded per reason, examples, occurrences per event).

    Raises
    ------
    CskitError
        A spec event that never occurs (the message lists the events that do, most frequent first), or
        a column the spec needs is missing.
    """
    spec = {k: v if isinstance(v, EventKPI) else EventKPI(**v) for k, v in spec.items()}
    aggs = {k: v for k, v in spec.items() if v.ratio is None}
    as_of_month = pd.Timestamp(as_of).to_period("M").to_timestamp()
    _check_columns(table, aggs)
    rows = _classified(table, timezone, as_of_month, accounts, excluded_accounts)
    counts = _counts(rows, table)
    _check_events_occur(aggs, counts)
    panel = _panel(rows, aggs, accounts, as_of_month, counts.coverage_start)
    return panel, counts


def _check_columns(table: ibis.Table, aggs: dict[str, EventKPI]) -> None:
    needs = {"distinct_users": "user_id", "sum": "value", "mean": "value", "max": "value"}
    missing = sorted({needs[k.agg] for k in aggs.values() if k.agg in needs} - set(table.columns))
    if missing:
        users = [n for n, k in aggs.items() if needs.get(k.agg) in missing]
        raise CskitError(f"events: column(s) {', '.join(missing)} missing, needed by events_kpis "
                         f"{', '.join(users)}. Fix: add the column, or map it in params columns.events.")


def _classified(table, timezone: str, as_of_month: pd.Timestamp, accounts: pd.DataFrame, excluded) -> ibis.Table:
    """Every events row with its local time, month, day, clean account id, value and exclusion reason
    (null = usable)."""
    import ibis
    import ibis.expr.datatypes as dt_

    from cskit.loading import MISSING_MARKERS

    acc = _accounts_table(accounts, excluded)
    typ = table.account_id.type()
    raw_id = (table.account_id.cast("int64") if typ.is_floating() else table.account_id).cast("string")
    try:
        backend = table._find_backend(use_default=True).name
    except Exception:  # noqa: BLE001 - an unbound table: let Ibis choose later
        backend = None
    local = local_time(table.ts, timezone, until=as_of_month, backend=backend)
    cols = {"raw_account": raw_id, "local": local, "event_name": table.event.cast("string").strip(),
            "raw_ts": table.ts}
    if "user_id" in table.columns:
        cols["user"] = table.user_id.cast("string").nullif("")
    if "value" in table.columns:
        # NaN / inf (and the missing markers of text cells) are empty values, as in the other tables
        if table.value.type().is_string():
            text = table.value.strip()
            text = ibis.ifelse(text.isin(list(MISSING_MARKERS)), ibis.null("string"), text)
            number = text.try_cast("float64")
        else:
            text, number = None, table.value.cast("float64")
        number = ibis.ifelse(number.isnan() | number.isinf(), ibis.null("float64"), number)
        cols["raw_value"] = number if text is None else text
        cols["num"] = number
    t = table.select(**cols)
    # Ids are looked up as written; only the rows not found are read as the loader reads ids (trimmed,
    # missing markers empty; "17.0" finds "17" through alias rows): per-row text work on a few rows.
    j = t.left_join(acc, t.raw_account == acc.acc_key).drop("acc_key")
    j = j.mutate(retry=ibis.ifelse(j.acc_id.isnull(), j.raw_account.strip(), ibis.null("string")))
    again = acc.rename({f"{c}_2": c for c in acc.columns})
    j = j.left_join(again, j.retry == again.acc_key_2)
    j = j.select(
        *[
            c
            for c in j.columns
            if not c.endswith("_2") and c not in ("acc_id", "acc_kind", "acc_start", "acc_end", "retry")
        ],
        empty=j.raw_account.isnull() | (j.acc_kind_2 == "empty"),
        **{c: j[c].coalesce(j[f"{c}_2"]) for c in ("acc_id", "acc_kind", "acc_start", "acc_end")},
    )
    next_month = as_of_month + pd.offsets.MonthBegin(1)
    reason = ibis.cases(
        (j.empty, "empty_account_id"),
        (j.local.isnull(), "bad_ts"),
        (j.acc_kind.isnull(), "unknown_account"),
        (j.acc_kind == "excluded", "account_excluded"),
        (j.local >= ibis.literal(next_month.to_pydatetime()), "after_as_of"),
        (j.local < j.acc_start, "before_contract_start"),
        (j.acc_end.notnull() & (j.local >= j.acc_end), "after_churn"),
        else_=ibis.null("string"),
    )
    return j.mutate(reason=reason, month=j.local.truncate("M").cast(dt_.Timestamp()), day=j.local.date())


def _accounts_table(accounts: pd.DataFrame, excluded) -> ibis.Table:
    """The lookup of account ids: key (as written in the log) → canonical id, kind (listed, excluded,
    empty), the contract's first day and the first day after it."""
    import ibis

    from cskit.loading import MISSING_MARKERS

    start = pd.to_datetime(accounts["contract_start"]).dt.normalize()
    end = pd.to_datetime(accounts["churn_date"]).dt.normalize() + pd.Timedelta(days=1)  # first day after the contract
    ids = accounts["account_id"].astype(str).to_numpy()
    frame = pd.DataFrame({"acc_key": ids, "acc_id": ids, "acc_kind": "listed",
                          "acc_start": start.astype("datetime64[us]").to_numpy(),
                          "acc_end": end.astype("datetime64[us]").to_numpy()})
    extra = sorted(set(map(str, excluded)) - set(frame["acc_id"]))
    if extra:
        frame = pd.concat([frame, pd.DataFrame({"acc_key": extra, "acc_id": extra, "acc_kind": "excluded",
                                                "acc_start": pd.NaT, "acc_end": pd.NaT}).astype(frame.dtypes)],
                          ignore_index=True)
    # the loader reads a numeric id written "17.0" as "17" (cskit.loading.parse_ids): so do the events
    digits = frame[frame["acc_id"].str.fullmatch(r"\d+")]
    aliases = [digits.assign(acc_key=digits["acc_id"] + zeros) for zeros in (".0", ".00")]
    # and a missing marker ("", "NA", "-", ...) as an empty id
    empty = pd.DataFrame({"acc_key": ["", *MISSING_MARKERS], "acc_id": None, "acc_kind": "empty",
                          "acc_start": pd.NaT, "acc_end": pd.NaT}).astype(frame.dtypes)
    frame = pd.concat([frame, *aliases, empty], ignore_index=True).drop_duplicates("acc_key", keep="first")
    return ibis.memtable(frame, schema={"acc_key": "string", "acc_id": "string", "acc_kind": "string",
                                        "acc_start": "timestamp", "acc_end": "timestamp"})


def _counts(rows: ibis.Table, table: ibis.Table) -> EventCounts:
    """One pass over the log: rows per reason × event name, examples of bad values, bad values, coverage."""
    ok, bad = rows.reason.isnull(), rows.reason.notnull()
    by = rows.group_by(["reason", "event_name"]).aggregate(
        n=rows.count(), first_month=rows.month.min(where=ok),
        ex_account_lo=rows.raw_account.min(where=bad), ex_account_hi=rows.raw_account.max(where=bad),
        ex_ts_lo=rows.raw_ts.min(where=bad), ex_ts_hi=rows.raw_ts.max(where=bad),
        **({"bad_value": rows.count(where=ok & rows.raw_value.notnull() & rows.num.isnull())}
           if "num" in rows.columns else {}),
    )
    df = by.execute()
    df["n"] = df["n"].astype("int64")
    counts = EventCounts(read=int(df["n"].sum()))
    bad = df[df["reason"].notna()]
    for reason, part in bad.groupby("reason", sort=True):
        counts.excluded[str(reason)] = int(part["n"].sum())
        column = _REASON_TEXT[reason][0]
        lo, hi = ("ex_account_lo", "ex_account_hi") if column == "account_id" else ("ex_ts_lo", "ex_ts_hi")
        values = sorted({_shown(v) for v in pd.concat([part[lo], part[hi]]) if v is not None and not pd.isna(v)})
        counts.examples[str(reason)] = values[:1] + values[-1:] if len(values) > 1 else values
    good = df[df["reason"].isna()]
    if "bad_value" in good:
        counts.blanked_value = int(pd.to_numeric(good["bad_value"]).fillna(0).sum())
    occ = good.groupby(good["event_name"].fillna("(empty)"))["n"].sum()
    occ = occ.reset_index().sort_values(["n", "event_name"], ascending=[False, True], kind="stable")
    counts.occurrences = {str(e): int(n) for e, n in zip(occ["event_name"], occ["n"])}
    if len(good) and good["first_month"].notna().any():
        counts.coverage_start = pd.Timestamp(good["first_month"].min()).to_period("M").to_timestamp()
    return counts


def _shown(value) -> str:
    """A raw value as quoted in a warning, the same on every engine (instants in UTC, ISO 8601)."""
    if isinstance(value, (pd.Timestamp, dt.datetime, np.datetime64)):
        ts = pd.Timestamp(value)
        return (ts.tz_convert("UTC") if ts.tzinfo else ts).isoformat(sep=" ")
    return str(value)


def _check_events_occur(aggs: dict[str, EventKPI], counts: EventCounts) -> None:
    missing = {}
    for name, kpi in aggs.items():
        for e in kpi.events:
            if e not in counts.occurrences:
                missing.setdefault(e, []).append(name)
    if not missing:
        return
    occurring = list(counts.occurrences.items())
    shown = ", ".join(f"{e!r} ({n})" for e, n in occurring[:20]) or "none (no usable event rows)"
    more = f" and {len(occurring) - 20} more" if len(occurring) > 20 else ""
    what = "; ".join(f"{e!r} (events_kpis {', '.join(ks)})" for e, ks in missing.items())
    raise CskitError(f"events_kpis: event(s) never occur in the usable events: {what}. Events that do occur, most "
                     f"frequent first: {shown}{more}. Fix: correct the event names in params events_kpis.")


def _agg(rows: ibis.Table, kpi: EventKPI):
    """The Ibis aggregate of one KPI, as (column name, expression) pairs."""
    import ibis.expr.datatypes as dt_

    where = rows.event_name.isin(kpi.events)
    if kpi.agg == "count":
        return {"": rows.count(where=where)}
    if kpi.agg == "active_days":
        return {"": rows.day.nunique(where=where)}
    if kpi.agg == "distinct_users":
        return {"": rows.user.nunique(where=where)}
    exact = rows.num.cast(dt_.Decimal(*_DECIMAL))
    if kpi.agg == "sum":
        return {"": exact.sum(where=where)}
    if kpi.agg == "mean":
        return {"__sum": exact.sum(where=where), "__n": rows.num.count(where=where)}
    return {"": rows.num.max(where=where)}


def build_panel_expr(rows: ibis.Table, aggs: dict[str, EventKPI]) -> ibis.Table:
    """The one Ibis expression of the spec: usable rows of the spec's events, grouped by account × local month."""
    names = sorted({e for k in aggs.values() for e in k.events})
    used = rows.filter(rows.reason.isnull() & rows.event_name.isin(names))
    metrics = {}
    for name, kpi in aggs.items():
        for suffix, expr in _agg(used, kpi).items():
            metrics[name + suffix] = expr
    return used.group_by(account_id=used.acc_id, month=used.month).aggregate(**metrics)


def _panel(rows, aggs: dict[str, EventKPI], accounts: pd.DataFrame, as_of_month: pd.Timestamp,
           coverage_start: pd.Timestamp | None) -> pd.DataFrame:
    grid = contract_months(accounts, coverage_start, as_of_month)
    if not aggs:
        return grid
    got = build_panel_expr(rows, aggs).execute()
    got["month"] = pd.to_datetime(got["month"]).astype("datetime64[ns]")
    got["account_id"] = got["account_id"].astype(object)
    out = grid.merge(got, on=["account_id", "month"], how="left", validate="one_to_one")
    for name, kpi in aggs.items():
        if kpi.agg == "mean":
            s, n = (pd.to_numeric(out.pop(name + x), errors="coerce").astype(float) for x in ("__sum", "__n"))
            out[name] = np.where(n > 0, s / n.where(n > 0, 1), np.nan)
        else:
            values = pd.to_numeric(out[name].astype(object).where(out[name].notna(), None), errors="coerce").astype(
                float
            )
            out[name] = values.fillna(0.0) if kpi.agg in ZERO_INSIDE else values
    return out[["account_id", "month", *aggs]]


def contract_months(accounts: pd.DataFrame, start: pd.Timestamp | None, as_of_month: pd.Timestamp) -> pd.DataFrame:
    """Every (account_id, month) of each contract between ``start`` (the log's coverage start) and as_of."""
    if start is None or start > as_of_month:
        return pd.DataFrame({"account_id": pd.Series(dtype=object), "month": pd.Series(dtype="datetime64[ns]")})
    first = pd.to_datetime(accounts["contract_start"]).dt.to_period("M").dt.to_timestamp()
    last = pd.to_datetime(accounts["churn_date"]).dt.to_period("M").dt.to_timestamp().fillna(as_of_month)
    first = first.clip(lower=start).to_numpy("datetime64[M]")
    last = last.clip(upper=as_of_month).to_numpy("datetime64[M]")
    n = np.maximum((last - first).astype(int) + 1, 0)
    ids = np.repeat(accounts["account_id"].to_numpy(dtype=object), n)
    offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    months = (np.repeat(first, n) + offsets.astype("timedelta64[M]")).astype("datetime64[ns]")
    out = pd.DataFrame({"account_id": ids, "month": months})
    return out.sort_values(["account_id", "month"], kind="stable").reset_index(drop=True)


def apply_ratios(kpis: pd.DataFrame, spec: Mapping[str, EventKPI | dict]) -> pd.DataFrame:
    """Add the ``ratio`` KPIs of ``spec`` to a KPI frame holding their operands: a ÷ b, empty where
    either is empty or b is 0. Ratios of ratios are computed in dependency order.

    Raises
    ------
    CskitError
        An operand is neither a column of ``kpis`` nor another ratio of the spec.
    """
    spec = {k: v if isinstance(v, EventKPI) else EventKPI(**v) for k, v in spec.items()}
    todo = {k: v.ratio for k, v in spec.items() if v.ratio is not None}
    missing = [f"events_kpis.{k}.ratio: {o!r}" for k, (a, b) in todo.items() for o in (a, b)
               if o not in kpis.columns and o not in todo]
    if missing:
        raise CskitError("events_kpis ratio operand(s) are not KPIs of the kpis table or of events_kpis: "
                         + "; ".join(missing) + ". Fix: add the column to the kpis table or to events_kpis.")
    out = kpis.copy()
    while todo:
        ready = [k for k, (a, b) in todo.items() if a in out.columns and b in out.columns]
        for k in ready:
            a, b = (out[c].astype(float) for c in todo.pop(k))
            out[k] = (a / b.where(b != 0)).astype(float)
    return out


def join_kpis(
    kpis: pd.DataFrame, panel: pd.DataFrame, spec: Mapping[str, EventKPI | dict]
) -> tuple[pd.DataFrame, list[str]]:
    """The kpis table (parsed) joined with the events panel on account × month, ratios added:
    (frame sorted by account and month, KPI names: the kpis table's, then the spec's).

    Raises
    ------
    CskitError
        A KPI named both in the kpis table and in events_kpis.
    """
    own = [c for c in kpis.columns if c not in ("account_id", "month")]
    clash = [c for c in spec if c in own]
    if clash:
        raise CskitError(f"events_kpis: {', '.join(repr(c) for c in clash)} is also a column of the kpis table. "
                         "Fix: rename the events KPI in params events_kpis, or drop the column from kpis.")
    out = kpis.merge(panel, on=["account_id", "month"], how="outer")
    out = apply_ratios(out, spec)
    out = out.sort_values(["account_id", "month"], kind="stable").reset_index(drop=True)
    return out[["account_id", "month", *own, *spec]], [*own, *spec]
