"""Client tables in a database: ``data: postgresql://user@host:5432/db`` or ``duckdb:///path`` (DESIGN §7).

The tables are read through Ibis with the warehouse's own types (date months, numeric MRR, timestamptz)
and handed to the loader's core as the text cells a CSV export of them would hold, so a database
client goes through exactly the validation (and quality counts) of a CSV folder. A ``.duckdb`` file
is read the same way.

Passwords: taken from the URL or from the driver's usual sources (``PGPASSWORD``, ``~/.pgpass``); never
written anywhere. Every message built here names the server, database and table with the password
masked (:func:`mask`), and the notebook kernel gets the URL without its password, the password
through ``PGPASSWORD`` (:func:`kernel_environment`).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from cskit.errors import CskitError

if TYPE_CHECKING:  # imported where the tables are read: `cskit run`'s own process (params, masking) needs none
    import pandas as pd
    import pyarrow as pa

SCHEMES = {"postgresql": "postgres", "postgres": "postgres", "duckdb": "duckdb"}
PASSWORD_ENV = "PGPASSWORD"
CONNECT_TIMEOUT_S = 10
MASK = "***"


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed ``data:`` URL. ``password`` is None when the URL has none (the driver then looks in
    ``PGPASSWORD`` / ``~/.pgpass``)."""

    backend: str  # "postgres" | "duckdb"
    scheme: str = ""
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str | None = None
    path: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def masked(self) -> str:
        """The URL as it may be shown: the password replaced by ``***``."""
        return self._text(MASK if self.password is not None else None)

    def without_password(self) -> str:
        """The URL with no password at all (what the notebook kernel is given)."""
        return self._text(None)

    def _text(self, password: str | None) -> str:
        if self.backend == "duckdb":
            return f"duckdb://{self.path}"
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="") + (f":{password}" if password is not None else "") + "@"
        host = (self.host or "") + (f":{self.port}" if self.port else "")
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in self.options.items())
        return f"{self.scheme}://{auth}{host}/{quote(self.database or '', safe='')}" + (f"?{query}" if query else "")

    def where(self) -> str:
        """Server and database in words, for messages."""
        if self.backend == "duckdb":
            return f"DuckDB file {self.path}"
        host = self.host or os.environ.get("PGHOST") or "localhost"
        port = self.port or os.environ.get("PGPORT") or 5432
        database = self.database or os.environ.get("PGDATABASE") or "(default)"
        return f"PostgreSQL server {host}:{port}, database {database!r}"

    def secrets(self) -> list[str]:
        """Every spelling of the password that could appear in a driver's message."""
        found = [s for s in (self.password, os.environ.get(PASSWORD_ENV)) if s]
        return sorted({v for s in found for v in (s, quote(s, safe=""), quote(s))}, key=len, reverse=True)


def is_url(data: str) -> bool:
    return "://" in data


def parse_url(text: str) -> DatabaseURL:
    """Parse a ``data:`` URL; raise ValueError (a message with the password masked) if it is not one
    cskit can read."""
    scheme = text.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{scheme}:// is not a database cskit can read; use postgresql://user@host:5432/database "
                         "or duckdb:///path/to/file.duckdb")
    if SCHEMES[scheme] == "duckdb":
        path = unquote(text.split("://", 1)[1])
        if not path:
            raise ValueError("duckdb:// needs a file path, e.g. duckdb:///absolute/path/client.duckdb "
                             "or duckdb://relative/path/client.duckdb")
        return DatabaseURL("duckdb", scheme, path=path)
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the port of {mask(text, [parts.password or ''])} is not a number") from None
    options = dict(parse_qsl(parts.query))
    in_query = options.pop("password", None)  # libpq accepts ?password=... too
    password = unquote(parts.password) if parts.password is not None else in_query
    database = unquote(parts.path.lstrip("/")) or None
    if database and "/" in database:
        raise ValueError(f"{mask(text, [parts.password or ''])}: the path after the host must be one database name")
    return DatabaseURL(
        "postgres", scheme, user=unquote(parts.username) if parts.username else None,
        password=password, host=unquote(parts.hostname) if parts.hostname else None, port=port,
        database=database, options=options,
    )


def mask(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (and ``user:password@`` or ``password=`` in any URL) replaced by ``***``."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, MASK)
    text = re.sub(r"(://[^/\s:@]*):[^@\s/]*@", rf"\1:{MASK}@", text)
    return re.sub(r"([?&]password=)[^&\s]*", rf"\1{MASK}", text)


def _url_as(data: str, spell: Callable[[DatabaseURL], str]) -> str:
    """``data`` with its URL (if it is one) spelled by ``spell``; a URL that does not parse is masked."""
    if not is_url(data):
        return data
    try:
        return spell(parse_url(data))
    except ValueError:
        return mask(data, [])


def public_data(data: str) -> str:
    """``data`` as it may be written to outputs: a URL without its password; a path unchanged."""
    return _url_as(data, DatabaseURL.without_password)


def secrets_of(data: str | None) -> list[str]:
    """The password spellings to mask for ``data`` (its URL's and ``PGPASSWORD``'s)."""
    try:
        url = parse_url(data) if data and is_url(data) else DatabaseURL("postgres")
    except ValueError:
        url = DatabaseURL("postgres")
    return url.secrets()


def shown_data(data: str) -> str:
    """``data`` as a message may show it: a URL with its password as ``***``; a path unchanged."""
    return _url_as(data, DatabaseURL.masked)


@contextmanager
def kernel_environment(data: str):
    """While a notebook kernel is started: a password taken from the ``data`` URL travels in
    ``PGPASSWORD`` (the kernel gets the URL without it); the previous environment is restored after."""
    url = parse_url(data) if is_url(data) else None
    if url is None or url.password is None:
        yield
        return
    before = os.environ.get(PASSWORD_ENV)
    os.environ[PASSWORD_ENV] = url.password
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PASSWORD_ENV, None)
        else:
            os.environ[PASSWORD_ENV] = before


# --------------------------------------------------------------------------------------------------
# Connecting


def connect(url: DatabaseURL):
    """An Ibis backend for ``url``; unreachable server, wrong credentials, unknown database → CskitError
    naming server and database (never the password)."""
    import ibis

    if url.backend == "duckdb":
        path = Path(url.path).expanduser()
        if not path.is_file():
            raise CskitError(f"data: {url.where()} does not exist. Fix: set data to the path of the .duckdb file "
                             "(duckdb:///absolute/path/client.duckdb or duckdb://relative/path/client.duckdb).")
        try:
            return ibis.duckdb.connect(str(path), read_only=True)
        except Exception as e:  # noqa: BLE001 - duckdb raises several types for an unreadable file
            raise CskitError(f"data: {url.where()} is unreadable as a DuckDB database "
                             f"({_first_line(e, url)}). Fix: check the file, or export the tables to CSV.") from None
    kwargs = {"host": url.host, "port": url.port, "user": url.user, "password": url.password, "database": url.database}
    kwargs = {k: v for k, v in kwargs.items() if v is not None} | url.options
    kwargs.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    try:
        con = ibis.postgres.connect(**kwargs)
    except Exception as e:  # noqa: BLE001 - psycopg's OperationalError and friends
        raise CskitError(_connect_message(url, e)) from None
    try:
        # One worker per scan: rows come back in the table's storage order, so "the first of two
        # duplicate rows" is the same row on every run. (A PostgreSQL-compatible server without
        # this setting scans as it does.)
        con.raw_sql("SET max_parallel_workers_per_gather = 0").close()
    except Exception:  # noqa: BLE001, S110
        pass
    return con


def failure_in_database(data: str, what: str, e: BaseException) -> str:
    """One message for a query the database refused or could not finish (``data``: the URL or the
    .duckdb path), naming server and database, the driver's words masked."""
    url = parse_url(data) if is_url(data) else DatabaseURL("duckdb", "duckdb", path=data)
    said = _first_line(e, url)
    if "temporary" in said.lower() and url.backend == "postgres":
        fix = (f"the aggregation sends the validated accounts to the server as a temporary table: grant it, "
               f"e.g. GRANT TEMPORARY ON DATABASE {url.database or '<database>'} TO {url.user or '<user>'}")
    else:
        fix = "check the table's columns and types, your privileges (SELECT), and that the server is up"
    return f"{what} failed in the {url.where()} (driver: {said}). Fix: {fix}."


def _first_line(e: BaseException, url: DatabaseURL) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return mask(text, url.secrets())[:400]


def _connect_message(url: DatabaseURL, e: BaseException) -> str:
    said = _first_line(e, url)
    low = said.lower()
    who = f"user {url.user or os.environ.get('PGUSER') or '(default)'!r}"
    if "password authentication failed" in low or "no password supplied" in low or "authentication failed" in low:
        why = (f"the server refused {who}: wrong user or password", "check the user and password: put the password "
               f"in the {PASSWORD_ENV} environment variable or ~/.pgpass rather than in the params file")
    elif "could not translate host name" in low or "name or service not known" in low or "nodename nor servname" in low:
        why = ("the host name is unknown", "check the host in the URL")
    elif "does not exist" in low and "database" in low:
        why = ("the database does not exist on that server", "check the database name after the host in the URL")
    elif "refused" in low or "timeout" in low or "no route" in low or "unreachable" in low:
        why = ("the server cannot be reached", "check host and port, and that the server is running and accepts "
               "connections from this machine")
    else:
        why = ("the connection failed", "check the URL, the server and your credentials")
    return f"data: cannot connect to the {url.where()} as {who}: {why[0]} (driver: {said}). Fix: {why[1]}."


# --------------------------------------------------------------------------------------------------
# Reading


def read_database(
    url: DatabaseURL,
    names: dict[str, str],
    *,
    tables: tuple[str, ...],
    required: tuple[str, ...],
    month_columns: dict[str, set[str]],
    timezone: str,
    report,
) -> tuple[dict[str, pd.DataFrame], set[str], object]:
    """Read the client's tables as text frames.

    ``names`` maps a canonical table to the database's (``schema.table`` allowed); unmapped tables are
    looked up by their canonical name, case-insensitively. A missing required table (or a mapped one)
    is a fatal problem in ``report.fatal`` naming server, database and table. ``month_columns`` lists,
    per table, the columns that hold months (written ``YYYY-MM``); ``timezone`` is the zone in which
    timestamps become local dates. Returns (frames, unread tables, the Ibis connection).
    """
    con = connect(url)
    frames, unread = {}, set()
    found = table_names(con)
    for name in tables:
        wanted = names.get(name, name)
        schema, actual, listed = find_table(found, wanted)
        if actual is None:
            if name in required or name in names:
                report.fatal.append(
                    f"{name}: required table is missing: {missing_table(url, wanted, listed)}. "
                    f"Fix: create it, or map it in params: tables: {{{name}: <its table name>}}."
                )
                unread.add(name)
            continue
        try:
            arrow = _fetch(con.table(actual, database=schema or None))
        except Exception as e:  # noqa: BLE001 - permission denied, unsupported type, lost connection
            report.fatal.append(f"{name}: table {wanted!r} in the {url.where()} could not be read "
                                f"({_first_line(e, url)}). Fix: grant SELECT on it, or check its column types.")
            unread.add(name)
            continue
        frames[name] = as_text(arrow, months=month_columns.get(name, set()), timezone=timezone)
    return frames, unread, con


def _fetch(table) -> pa.Table:
    """The table's rows as Arrow, typed; where the driver cannot convert a column that Ibis typed
    (PostgreSQL's money comes back as text '$12.50' though typed decimal), every column as the
    database's own text instead (which the loader's core parses as it parses a CSV)."""
    import pyarrow as pa

    try:
        return _typed(table).to_pyarrow()
    except (TypeError, ValueError, pa.ArrowException):
        return table.select(**{c: table[c].cast("string") for c in table.columns}).to_pyarrow()


def _typed(table):
    """The table with every column of a type :func:`as_text` does not handle (uuid, json, enum,
    interval, money, ...) cast to text by the database itself."""
    def kept(t) -> bool:
        return t.is_string() or t.is_integer() or t.is_floating() or t.is_decimal() or t.is_boolean() \
            or t.is_date() or t.is_timestamp()

    if all(kept(table[c].type()) for c in table.columns):
        return table
    return table.select(**{c: table[c] if kept(table[c].type()) else table[c].cast("string") for c in table.columns})


def find_table(found: dict[str | None, list[str]], wanted: str) -> tuple[str | None, str | None, list[str]]:
    """(schema or None, the table's actual name or None if absent, the tables of that schema) for
    ``wanted`` (``table`` or ``schema.table``; matched case-insensitively) among ``table_names(con)``."""
    schema, _, table = wanted.rpartition(".")
    listed = found.get(schema or None, [])
    return schema or None, _lookup(listed, table), listed


def missing_table(url: DatabaseURL, wanted: str, listed: list[str]) -> str:
    """'no table X in the <server, database> (tables: ...)', for messages."""
    schema = wanted.rpartition(".")[0]
    where = f" in schema {schema!r}" if schema else ""
    return f"no table {wanted!r} in the {url.where()} (tables{where}: {', '.join(listed[:20]) or 'none'})"


def table_names(con) -> dict[str | None, list[str]]:
    """Tables and views per schema (None = the connection's default schema)."""
    out: dict[str | None, list[str]] = {None: sorted(con.list_tables())}
    try:
        for schema in con.list_databases():
            out.setdefault(schema, sorted(con.list_tables(database=schema)))
    except Exception:  # noqa: BLE001 - a backend without schemas: the default one is enough
        pass
    return out


def _lookup(names: list[str], wanted: str) -> str | None:
    if wanted in names:
        return wanted
    lower = {n.lower(): n for n in names}
    return lower.get(wanted.lower())


def as_text(table: pa.Table, *, months: set[str] = frozenset(), timezone: str = "UTC") -> pd.DataFrame:
    """Typed columns as the text cells a CSV export would hold (what the loader's core parses):
    dates ``YYYY-MM-DD`` (``YYYY-MM`` in month columns), timestamps as local date-times in ``timezone``,
    numbers in their shortest exact form (numeric(12,2) 297000.00 → ``297000``), booleans ``1``/``0``."""
    import pandas as pd
    import pyarrow as pa

    columns = [_cells(table.column(i), month=name in months, timezone=timezone)
               for i, name in enumerate(table.column_names)]
    out = pa.Table.from_arrays(columns, names=[str(n) for n in table.column_names])
    return out.to_pandas(types_mapper=pd.ArrowDtype)


def _cells(col: pa.ChunkedArray, *, month: bool, timezone: str) -> pa.ChunkedArray:
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pc.cast(col, pa.string())
    if pa.types.is_boolean(t):
        return pc.cast(pc.cast(col, pa.int8()), pa.string())
    if pa.types.is_decimal(t):
        text = pc.cast(col, pa.string())
        text = pc.replace_substring_regex(text, r"(\.\d*?)0+$", r"\1")
        return pc.replace_substring_regex(text, r"\.$", "")
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return pc.cast(col, pa.string())
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if pa.types.is_timestamp(t) and t.tz is not None:
            col = pc.local_timestamp(pc.cast(col, pa.timestamp(t.unit, tz=timezone)))
        if month:
            return pc.strftime(col, format="%Y-%m")
        if pa.types.is_date(t):
            return pc.strftime(col, format="%Y-%m-%d")
        col = pc.cast(pc.floor_temporal(col, unit="second"), pa.timestamp("s"), safe=False)  # dates: no fractions
        midnight = pc.equal(pc.floor_temporal(col, unit="day"), col)
        return pc.if_else(midnight, pc.strftime(col, format="%Y-%m-%d"), pc.strftime(col, format="%Y-%m-%d %H:%M:%S"))
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.chunked_array([pa.array([None if v is None else str(v) for v in col.to_pylist()], type=pa.string())])
