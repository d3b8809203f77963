"""Load a client's tables (CSV folder, .xlsx workbook, .duckdb file or database URL) into canonical form.

Every reader hands the core (:func:`client_from_frames`) plain text cells, exactly as the client wrote
them, so that a bad value can be quoted back in the report. The core maps the client's headers, parses
every cell itself, and either stops with one :class:`CskitError` listing every fatal problem, or
excludes unusable rows, counting each under one reason in :class:`Quality` (the first check a row
fails, in the order documented in ``docs/methods.md``), with one warning line per table, column
and reason.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cskit.catalogue import build_catalogue
from cskit.client import ClientData, Quality
from cskit.errors import CskitError
from cskit.notices import Notice
from cskit.panel import data_window, is_annual, mapped_block, month_index
from cskit.parallel import Beside
from cskit.params import DATABASE_SUFFIXES, TABLES, Params, resolve_data_path
from cskit.warehouse import (
    DatabaseURL,
    failure_in_database,
    find_table,
    is_url,
    missing_table,
    parse_url,
    read_database,
    shown_data,
    table_names,
)

REQUIRED_TABLES = ("accounts", "revenue", "kpis")
REQUIRED_COLUMNS = {
    "accounts": ("account_id", "contract_start"),
    "revenue": ("account_id", "month", "mrr"),
    "kpis": ("account_id", "month"),
    "nps": ("account_id", "date", "score"),
    "events": ("account_id", "user_id", "ts", "event"),
}
ACCOUNT_FIELDS = (
    "account_id", "contract_start", "churn_date", "segment", "plan", "contract_type", "referred_by", "health_score",
)
# The account's readable name, for the CRM-ready result files: the canonical column, else the first of
# these headers that the accounts table has (a client's own header can be mapped with params.columns).
NAME_COLUMNS = ("account_name", "company_name", "customer_name", "name", "会社名", "企業名", "顧客名", "取引先名")
# Cells that mean "no value" in exports (Excel, BI tools, R, pandas), in their common spellings.
_MARKERS = ("na", "n/a", "#n/a", "nan", "null", "none")
MISSING_MARKERS = tuple(
    sorted({"", "-", "－", "—", "NaN", "#N/A"} | {f(m) for m in _MARKERS for f in (str.lower, str.upper, str.title)})
)
CONTRACT_TYPES = {
    "monthly": "monthly", "month": "monthly", "m": "monthly", "月額": "monthly", "月次": "monthly",
    "月契約": "monthly", "月間": "monthly",
    "annual": "annual", "annually": "annual", "yearly": "annual", "year": "annual", "y": "annual",
    "年額": "annual", "年次": "annual", "年契約": "annual", "年間": "annual",
}
NONE_LABEL = "(none)"
MAIN_PRODUCT = "(main)"

_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
_THOUSANDS = r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$"
_TIME = r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
_DATE_PATTERNS = [
    re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})" + _TIME + "$"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
]
_MONTH_PATTERNS = [
    re.compile(r"^(\d{4})[-/.](\d{1,2})$"),
    re.compile(r"^(\d{4})年(\d{1,2})月$"),
    re.compile(r"^(\d{4})(\d{2})$"),
]


# --------------------------------------------------------------------------------------------------
# Problems and counts


@dataclass
class _Report:
    """Fatal problems (all listed in one error) and the row/cell counts that go into Quality."""

    quality: Quality = field(default_factory=Quality)
    fatal: list[str] = field(default_factory=list)

    def stop_if_fatal(self, source: str) -> None:
        if self.fatal:
            lines = "\n".join(f"- {p}" for p in self.fatal)
            extra = ""
            if self.quality.warnings:
                extra = "\nRow-level problems found so far:\n" + "\n".join(f"- {w}" for w in self.quality.warnings)
            raise CskitError(f"Cannot load the client data ({source}): {len(self.fatal)} problem(s).\n{lines}{extra}")

    def merge(self, other: _Report) -> None:
        """Append what ``other`` (a report of work done ahead, :class:`_Early`) recorded, as if recorded here."""
        self.fatal += other.fatal
        self.quality.warnings += other.quality.warnings
        self.quality.tables.update(other.quality.tables)


def _examples(values: pd.Series | np.ndarray | list, k: int = 3) -> str:
    seen: list[str] = []
    for v in values:
        empty = v is None or (not isinstance(v, str) and pd.isna(v)) or str(v).strip() == ""
        text = "(empty)" if empty else str(v)
        if text not in seen:
            seen.append(text)
        if len(seen) == k:
            break
    return ", ".join(repr(s) if s != "(empty)" else s for s in seen)


class _Rows:
    """The rows of one table still in use; each exclusion is counted under exactly one reason."""

    def __init__(self, table: str, n: int, report: _Report):
        self.table, self.report = table, report
        self.keep = np.ones(n, dtype=bool)
        report.quality.read(table, n)

    def exclude(self, reason: str, mask: np.ndarray, column: str, shown, what: str, fix: str) -> None:
        """Exclude the rows of ``mask`` still in use; ``shown`` (values, or a function giving them) gives
        the examples quoted in the warning."""
        hit = np.asarray(mask, dtype=bool) & self.keep
        n = int(hit.sum())
        if n == 0:
            return
        self.keep &= ~hit
        self.report.quality.exclude(self.table, reason, n)
        examples = _examples(np.asarray(shown() if callable(shown) else shown, dtype=object)[hit])
        self.report.quality.warn(Notice("rows_excluded", stage="load", table=self.table, column=column, n=n,
                                        reason=reason, what=what, examples=examples, fix=fix))


def _blank_cells(report: _Report, table: str, column: str, bad: np.ndarray, shown: pd.Series, what: str) -> None:
    """A bad cell in a column that is not part of the row's key becomes NaN; the row stays used."""
    n = int(bad.sum())
    if n == 0:
        return
    t = report.quality.tables[table]
    t.setdefault("blanked_cells", {})
    t["blanked_cells"][column] = t["blanked_cells"].get(column, 0) + n
    report.quality.warn(Notice("cells_blanked", stage="load", table=table, column=column, n=n,
                               examples=_examples(np.asarray(shown, dtype=object)[bad])))


# --------------------------------------------------------------------------------------------------
# Cell parsing: pandas Series in, numpy arrays out


def _cell_text(v: object) -> str | None:
    """One cell of any type as the text a CSV export would hold (xlsx cells, mixed object columns)."""
    if v is None or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))
    if isinstance(v, (dt.datetime, pd.Timestamp)):
        if (v.hour, v.minute, v.second, v.microsecond) == (0, 0, 0, 0):
            return v.strftime("%Y-%m-%d")
        return v.isoformat(sep=" ")
    if isinstance(v, dt.date):
        return v.isoformat()
    return str(v)


def _is_typed(s: pd.Series) -> bool:
    return (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_datetime64_any_dtype(s)) and not (
        isinstance(s.dtype, pd.ArrowDtype) and pa.types.is_string(s.dtype.pyarrow_dtype)
    )


def _arrow(s: pd.Series) -> pa.Array:
    """Cells as an Arrow string array, untouched (non-text cells as a CSV export would write them)."""
    if (
        isinstance(s.dtype, pd.ArrowDtype)
        and pa.types.is_string(s.dtype.pyarrow_dtype)
        or isinstance(s.dtype, pd.StringDtype)
    ):
        arr = pa.array(s.array, type=pa.string())
        return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return pa.array(s.to_numpy(), from_pandas=True).cast(pa.string())
    try:
        return pa.array(s.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([_cell_text(v) for v in s.to_numpy(dtype=object)], type=pa.string())


def _arrow_chunked(s: pd.Series) -> pa.ChunkedArray:
    """:func:`_arrow` as the chunks the reader gave (an Arrow string column is not copied)."""
    if isinstance(s.dtype, pd.ArrowDtype) and pa.types.is_string(s.dtype.pyarrow_dtype):
        arr = s.array.__arrow_array__()
        return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])
    return pa.chunked_array([_arrow(s)])


def _trimmed_text(s: pd.Series) -> pa.Array:
    """Cells as trimmed text; empty cells and missing markers ("NA", "-", ...) become null."""
    return _trimmed_cells(_arrow(s))


def _trimmed_cells(arr: pa.Array) -> pa.Array:
    """:func:`_trimmed_text` of an Arrow string array."""
    arr = pc.utf8_trim_whitespace(arr)
    marker = pc.is_in(arr, value_set=pa.array(MISSING_MARKERS))
    return pc.if_else(marker, pa.scalar(None, pa.string()), arr)


def _missing(arr: pa.Array) -> np.ndarray:
    return pc.is_null(arr).to_numpy(zero_copy_only=False)


def _distinct(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(distinct non-null values, index of each cell's value; -1 where null): ids, dates and months
    repeat a lot, so each distinct value is parsed once."""
    enc = pc.dictionary_encode(arr)
    return enc.dictionary, pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)


# The columns coded so far by the running :func:`client_from_frames` (:func:`_coded`), by the identity of
# the column's values (an Arrow column's: the same through a renaming of the frame's headers): a table's
# id column is read by the blank-row check, as_of, the id parse and the key checks. None outside it
# (nothing is kept after a load).
_CODED: dict[int, tuple[object, pa.Array, np.ndarray]] | None = None


def _values_of(s: pd.Series) -> object:
    """What identifies ``s``'s cells for :data:`_CODED`: its Arrow array where it has one, else its array."""
    values = s.array
    return values.__arrow_array__() if isinstance(s.dtype, pd.ArrowDtype) else values


def _coded(s: pd.Series) -> tuple[pa.Array, np.ndarray]:
    """:func:`_code` of ``s``; the same column asked for twice in one load is coded once."""
    values = _values_of(s)
    hit = _CODED.get(id(values)) if _CODED is not None else None
    if hit is not None and hit[0] is values:
        return hit[1], hit[2]
    distinct, idx = _code(s)
    if _CODED is not None:
        _CODED[id(values)] = (values, distinct, idx)
    return distinct, idx


def _code(s: pd.Series) -> tuple[pa.Array, np.ndarray]:
    """:func:`_distinct` of :func:`_trimmed_text` of ``s``: the distinct raw cells are trimmed (not every
    cell), then coded again (two raw spellings may trim to one value)."""
    raw, raw_idx = _distinct(_arrow(s))
    distinct, remap = _distinct(_trimmed_cells(raw))
    return distinct, np.append(remap, -1)[np.where(raw_idx < 0, len(remap), raw_idx)]


def _labels(s: pd.Series, pattern: str | None = None, replacement: str = "") -> np.ndarray:
    values, idx = _coded(s)
    if pattern:
        values = pc.replace_substring_regex(values, pattern, replacement)
    return np.append(values.to_numpy(zero_copy_only=False).astype(object), None)[idx]


def parse_ids(s: pd.Series) -> np.ndarray:
    """Account ids as str (object array, None where empty). Numbers lose a trailing ".0" (17.0 -> "17")."""
    return _labels(s, r"^(\d+)\.0+$", r"\1")


def _coded_ids(s: pd.Series) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(:func:`parse_ids` of ``s``, (its distinct ids, each cell's index into them; -1 where empty)): a
    table's ids are looked up among the accounts once per distinct id (:meth:`_Contracts.check`)."""
    values, idx = _coded(s)
    distinct = pc.replace_substring_regex(values, r"^(\d+)\.0+$", r"\1").to_numpy(zero_copy_only=False).astype(object)
    return np.append(distinct, None)[idx], (distinct, idx)


def parse_text(s: pd.Series) -> np.ndarray:
    """Labels (segment, plan, product, role) as trimmed str, None where empty."""
    return _labels(s)


def parse_numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float values, bad mask). Accepts surrounding spaces, thousands separators ("1,234"),
    full-width digits and signs ("１２３", "－５"), and a leading ¥/$ or trailing 円. Empty and
    missing markers give NaN and are not bad; anything else that is not a finite number is bad."""
    if _is_typed(s) and not pd.api.types.is_datetime64_any_dtype(s):
        values = s.to_numpy(dtype=float, na_value=np.nan)
        bad = np.isinf(values)
        return np.where(bad, np.nan, values), bad
    try:
        values = pc.cast(_arrow_chunked(s), pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        pass
    else:
        bad = np.isinf(values)
        if bad.any():
            return np.where(bad, np.nan, values), bad
        return values if values.flags.writeable else values.copy(), bad
    return _parse_text_numbers(s)


def _parse_text_numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """:func:`parse_numbers` of text cells, at least one of which is not a plain number."""
    arr = _trimmed_text(s)
    present = ~_missing(arr)
    norm = pc.utf8_normalize(pc.fill_null(arr, ""), "NFKC")
    norm = pc.replace_substring(norm, "\u2212", "-")
    norm = pc.utf8_trim_whitespace(pc.replace_substring_regex(norm, r"^[¥$]\s*|\s*円$", ""))
    grouped = pc.match_substring_regex(norm, _THOUSANDS)
    plain = pc.match_substring_regex(norm, _NUMBER)
    cleaned = pc.if_else(grouped, pc.replace_substring(norm, ",", ""), norm)
    ok = pc.or_(grouped, plain)
    values = pc.cast(pc.if_else(ok, cleaned, pa.scalar(None, pa.string())), pa.float64())
    values = values.to_numpy(zero_copy_only=False)
    values = np.asarray(values, dtype=float)
    bad = present & ~np.isfinite(values)
    return np.where(bad, np.nan, values), bad


def _numbers_into(s: pd.Series, out: np.ndarray) -> np.ndarray | None:
    """:func:`parse_numbers` of ``s`` written into ``out`` (float64, len(s)); returns the bad mask, or None
    when no cell is bad. Arrow float64 columns (:func:`_read_kpis_typed`) and text cells that are all plain
    numbers (the common case) are cast chunk by chunk straight into ``out``: no full-length temporary."""
    floats = isinstance(s.dtype, pd.ArrowDtype) and pa.types.is_float64(s.dtype.pyarrow_dtype)
    if floats or not _is_typed(s):
        try:
            start = 0
            for chunk in (s.array.__arrow_array__() if floats else _arrow_chunked(s)).chunks:
                out[start:start + len(chunk)] = pc.cast(chunk, pa.float64()).to_numpy(zero_copy_only=False)
                start += len(chunk)
        except pa.ArrowInvalid:  # (a text cell that is not a plain number)
            pass
        else:
            bad = np.isinf(out)
            if not bad.any():
                return None
            out[bad] = np.nan
            return bad
    values, bad = parse_numbers(s)
    out[:] = values
    return bad if bad.any() else None


def _ymd(text: str, patterns: list[re.Pattern]) -> pd.Timestamp | None:
    for p in patterns:
        m = p.match(text)
        if m:
            y, mo, d = (int(g) if g else 1 for g in (m.groups() + (None,))[:3])
            try:
                return pd.Timestamp(dt.date(y, mo, d))
            except ValueError:
                return None
    return None


def _parse_when(s: pd.Series, patterns: list[re.Pattern], unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(datetime64[ns] values cut to ``unit`` (D: midnight, M: the month's first day), bad mask, the
    values counted in ``unit`` since 1970 as int64 (NaT: the smallest int64)). Text cells are parsed and
    cut once per distinct value."""
    if pd.api.types.is_datetime64_any_dtype(s):
        values = s.dt.tz_localize(None) if getattr(s.dt, "tz", None) is not None else s
        values = values.to_numpy(dtype="datetime64[ns]").astype(f"datetime64[{unit}]")
        return values.astype("datetime64[ns]"), np.zeros(len(s), dtype=bool), values.view(np.int64)
    distinct, idx = _coded(s)
    present = idx >= 0
    parsed = [_ymd(unicodedata.normalize("NFKC", v), patterns) for v in distinct.to_pylist()]
    table = np.array([np.datetime64("NaT", "ns") if m is None else m.to_datetime64() for m in parsed]
                     + [np.datetime64("NaT", "ns")], dtype="datetime64[ns]").astype(f"datetime64[{unit}]")
    values = table.astype("datetime64[ns]")[idx]
    return values, present & np.isnat(values), table.view(np.int64)[idx]


def parse_dates(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[ns] at midnight, bad mask). Accepts 2024-01-05, 2024/1/5, 2024.01.05, 20240105,
    2024年1月5日, and a time part (dropped)."""
    return _parse_when(s, _DATE_PATTERNS, "D")[:2]


def parse_months(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(first day of the month as datetime64[ns], bad mask). Accepts 2024-01, 2024/1, 202401,
    2024年1月, and any full date (the day is dropped)."""
    return _month_cells(s)[:2]


def _month_cells(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`parse_months` and each cell's month counted since 1970-01 (int64; NaT: the smallest int64,
    so a sort key in month order)."""
    return _parse_when(s, _MONTH_PATTERNS + _DATE_PATTERNS, "M")


def _month_of(values: np.ndarray) -> np.ndarray:
    return values.astype("datetime64[M]").astype("datetime64[ns]")


# --------------------------------------------------------------------------------------------------
# The core: frames in, ClientData out


def _prepare(name: str, df: pd.DataFrame, mapping: dict[str, str], report: _Report) -> pd.DataFrame:
    """Map the client's headers to canonical names, drop fully blank rows, check required columns."""
    df = df.rename(columns=_header)
    for src in mapping:
        if src not in df.columns and mapping[src] not in df.columns:
            report.quality.warn(Notice("mapping_missing", stage="load", table=name, source=str(src),
                                       target=str(mapping[src]), columns=[str(c) for c in df.columns[:12]]))
    df = df.rename(columns=_by_header(mapping))
    dup = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    for c in dup:
        report.fatal.append(
            f"{name}: column {c!r} appears {list(df.columns).count(c)} times (after the params columns mapping). "
            "Fix: keep one column with that name (rename or drop the others, or change params columns)."
        )
    for c in REQUIRED_COLUMNS[name]:
        if c not in df.columns:
            hint = ", ".join(map(str, df.columns[:12])) or "none"
            report.fatal.append(
                f"{name}: required column {c!r} is missing (columns found: {hint}). Fix: rename the header to "
                f"{c!r}, or map it in params: columns: {{{name}: {{<your header>: {c}}}}}."
            )
    if dup or not len(df.columns):
        return df
    blank = _empty(df[df.columns[0]])
    if not blank.any():
        return df
    candidates = df.loc[blank]
    for c in df.columns[1:]:
        blank[blank] = _empty(candidates[c])
    return df.loc[~blank].reset_index(drop=True)


def _empty(col: pd.Series) -> np.ndarray:
    return col.isna().to_numpy() if _is_typed(col) else _coded(col)[1] < 0


def _account_rows(df: pd.DataFrame, as_of: np.datetime64, catalogue_names: set[str], report: _Report):
    rows = _Rows("accounts", len(df), report)
    ids = parse_ids(df["account_id"])
    start, bad_start = parse_dates(df["contract_start"])
    churn, bad_churn = parse_dates(df["churn_date"]) if "churn_date" in df else (
        np.full(len(df), np.datetime64("NaT", "ns")), np.zeros(len(df), dtype=bool))
    raw_id, raw_start = df["account_id"], df["contract_start"]

    rows.exclude("empty_account_id", pd.isna(ids), "account_id", raw_id, "the account id is empty",
                 "give every account an id, or delete the row")
    rows.exclude("bad_contract_start", bad_start | np.isnat(start), "contract_start", raw_start,
                 "contract_start is empty or not a date", "write the first day of the paid contract as YYYY-MM-DD")
    rows.exclude(
        "bad_churn_date",
        bad_churn,
        "churn_date",
        df.get("churn_date", raw_id),
        "churn_date is not a date",
        "write the day the contract ended as YYYY-MM-DD, or leave it empty if active",
    )
    rows.exclude(
        "churn_before_start",
        ~np.isnat(churn) & (churn < start),
        "churn_date",
        lambda: _pairs(df.get("churn_date", raw_id), raw_start),
        "churn_date is before contract_start (shown: churn / start)",
        "check both dates",
    )
    rows.exclude("after_as_of", _month_of(start) > as_of, "contract_start", raw_start,
                 f"the contract starts after the analysis month as_of={_ym(as_of)}",
                 "nothing, if as_of is right; otherwise set as_of in params")
    dup = pd.Series(ids).where(rows.keep).duplicated(keep="first").to_numpy() & rows.keep
    rows.exclude("duplicate_account_id", dup, "account_id", raw_id,
                 "the account id appears more than once; the first row was kept",
                 "keep one row per account (merge the duplicates)")

    later = rows.keep & ~np.isnat(churn) & (_month_of(churn) > as_of)
    if later.any():
        report.quality.warn(Notice("churn_after_as_of", stage="load", severity="note", n=int(later.sum()),
                                   as_of=_ym(as_of),
                                   examples=_examples(np.asarray(df["churn_date"], dtype=object)[later])))
        churn = np.where(later, np.datetime64("NaT", "ns"), churn)

    out = pd.DataFrame({"account_id": ids, "contract_start": start, "churn_date": churn})
    for col in ("segment", "plan"):
        labels = parse_text(df[col]) if col in df else np.full(len(df), None, dtype=object)
        out[col] = pd.Series(labels, dtype=object).fillna(NONE_LABEL).to_numpy(dtype=object)
    out["contract_type"] = _contract_types(df, rows, report)
    out["referred_by"] = parse_ids(df["referred_by"]) if "referred_by" in df else np.full(len(df), None, dtype=object)
    out["health_score"] = _numeric_column(df, "health_score", rows, report) if "health_score" in df else np.nan
    name = next((c for c in NAME_COLUMNS if c in df), None)
    if name is not None:
        out["account_name"] = parse_text(df[name])
    statics = [c for c in df.columns if c in catalogue_names and c not in ACCOUNT_FIELDS and c != "contract_months"]
    for col in statics:
        out[col] = _numeric_column(df, col, rows, report)
    empty = [c for c in statics if out[c].isna().all()]
    for c in empty:
        report.quality.warn(Notice("static_kpi_empty", stage="load", column=str(c)))
    out = out.loc[rows.keep].drop(columns=empty).reset_index(drop=True)
    out["referred_by"] = _check_referrals(out, report)
    listed = {x for x in ids if x is not None}
    out = out.sort_values("account_id", kind="stable").reset_index(drop=True)
    return out, [c for c in statics if c not in empty], listed


def _pairs(a: pd.Series, b: pd.Series) -> np.ndarray:
    a, b = (pc.fill_null(_arrow(x), "") for x in (a, b))
    return pc.binary_join_element_wise(a, b, " / ").to_numpy(zero_copy_only=False)


def _ym(month: np.datetime64) -> str:
    return str(np.datetime64(month, "M"))


def _contract_types(df: pd.DataFrame, rows: _Rows, report: _Report) -> np.ndarray:
    """monthly | annual; empty = monthly (the contract's default). Unknown labels are treated as
    monthly (every month at risk, the conservative choice) with a warning."""
    if "contract_type" not in df:
        return np.full(len(df), "monthly", dtype=object)
    values, idx = _coded(df["contract_type"])  # each distinct label read once
    labels = values.to_numpy(zero_copy_only=False).astype(object)
    raw = np.append(labels, None)[idx]
    known = [CONTRACT_TYPES.get(unicodedata.normalize("NFKC", v).lower()) for v in labels]
    norm = np.array(known + [None], dtype=object)[idx]
    unknown = rows.keep & (idx >= 0) & pd.isna(norm)
    if unknown.any():
        report.quality.warn(Notice("unknown_contract_type", stage="load", n=int(unknown.sum()),
                                   examples=_examples(raw[unknown])))
    return pd.Series(norm, dtype=object).fillna("monthly").to_numpy(dtype=object)


def _numeric_column(df: pd.DataFrame, col: str, rows: _Rows, report: _Report) -> np.ndarray:
    values, bad = parse_numbers(df[col])
    _blank_cells(report, rows.table, col, bad & rows.keep, df[col], "are not numbers")
    return values


def _check_referrals(accounts: pd.DataFrame, report: _Report) -> pd.Series:
    ref = accounts["referred_by"]
    bad = ref.notna() & (~ref.isin(accounts["account_id"]) | (ref == accounts["account_id"]))  # (not a set: 4x faster)
    if bad.any():
        report.quality.warn(Notice("unknown_referrer", stage="load", n=int(bad.sum()), examples=_examples(ref[bad])))
    return ref.where(~bad, None)


@dataclass
class _Contracts:
    """What the other tables need to know about the accounts: who is listed, and each contract's months."""

    index: pd.Index
    start_month: np.ndarray  # datetime64[M]
    churn_month: np.ndarray  # datetime64[M]
    excluded: pd.Index

    @classmethod
    def of(cls, accounts: pd.DataFrame, listed: set[str]) -> _Contracts:
        index = pd.Index(accounts["account_id"], dtype=object)
        return cls(
            index,
            accounts["contract_start"].to_numpy().astype("datetime64[M]"),
            accounts["churn_date"].to_numpy().astype("datetime64[M]"),
            pd.Index(sorted(listed - set(index)), dtype=object),
        )

    def check(self, rows: _Rows, ids: np.ndarray, when: np.ndarray, raw_id: pd.Series, raw_when: pd.Series,
              column: str, as_of: np.datetime64, contract: bool = True,
              coded: tuple[np.ndarray, np.ndarray] | None = None, months: np.ndarray | None = None) -> np.ndarray:
        """Exclude the rows of unknown or excluded accounts, after as_of, and (``contract``) outside the
        account's contract; returns each row's account position in ``index`` (-1 if not listed).
        ``coded``: the ids as (distinct ids, each row's index into them), from :func:`_coded_ids`;
        ``months``: ``when``'s months since 1970-01 (:func:`_month_cells`), when known."""
        pos = _positions(self.index, ids, coded)
        known = pos >= 0
        dropped = _positions(self.excluded, ids, coded) >= 0 if len(self.excluded) else np.zeros(len(pos), bool)
        unknown = ~known & ~dropped & rows.keep
        rows.exclude("unknown_account", unknown, "account_id", raw_id,
                     "the account is not in accounts", "add the account to accounts, or correct the id")
        _leading_zeros(rows.table, self.index, ids, unknown, rows.report)
        rows.exclude("account_excluded", ~known & dropped, "account_id", raw_id,
                     "the account's row in accounts was excluded (see the accounts warnings)",
                     "fix the account's row in accounts")
        # compared in months (as _month_of, without a second pass)
        month = when.astype("datetime64[M]") if months is None else months.view("datetime64[M]")
        rows.exclude(
            "after_as_of",
            month > np.datetime64(as_of, "M"),
            column,
            raw_when,
            f"after the analysis month as_of={_ym(as_of)}",
            "nothing, if as_of is right; otherwise set as_of in params",
        )
        if not contract:
            return pos
        nat = np.array(["NaT"], dtype="datetime64[M]")
        start = np.concatenate([self.start_month, nat])[pos]
        churn = np.concatenate([self.churn_month, nat])[pos]
        rows.exclude("before_contract_start", month < start, column, raw_when,
                     "before the month of the account's contract_start",
                     "check contract_start in accounts (or remove pre-contract rows, e.g. a free trial)")
        rows.exclude("after_churn", ~np.isnat(churn) & (month > churn), column, raw_when,
                     "after the month of the account's churn_date",
                     "check churn_date in accounts (a returning customer needs its churn_date left empty)")
        return pos


def _leading_zeros(table: str, index: pd.Index, ids: np.ndarray, unknown: np.ndarray, report: _Report) -> None:
    """A warning when ids of unknown accounts match listed ones but for leading zeros ('1' here, '000001'
    in accounts): a spreadsheet drops the zeros of ids that look like numbers, and every row of those
    accounts is then excluded as unknown. Looked at only when some row is unknown."""
    if not unknown.any():
        return
    listed = pd.Series(index, dtype=object)
    first = dict(zip(listed.astype(str).str.lstrip("0")[::-1], listed[::-1]))  # each stripped id's first account
    stripped = pd.Series(ids[unknown], dtype=object).astype(str).str.lstrip("0")
    hit = stripped.isin(first.keys()).to_numpy()
    if hit.any():
        i = int(np.argmax(hit))
        report.quality.warn(Notice("ids_leading_zeros", stage="load", table=table, n=int(hit.sum()),
                                   example=str(ids[unknown][i]), listed=str(first[stripped.iloc[i]])))


def _positions(index: pd.Index, ids: np.ndarray, coded: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Position of each id in ``index`` (-1 where absent or empty); by its distinct ids when coded."""
    if coded is None:
        return index.get_indexer(ids)
    distinct, idx = coded
    return np.append(index.get_indexer(distinct), -1)[idx]


def _exclude_bad_keys(rows: _Rows, df: pd.DataFrame, empty_id: np.ndarray, months: np.ndarray | None = None,
                      bad_month: np.ndarray | None = None) -> None:
    """The key checks every account-level table shares: an empty account id; an empty or unreadable month."""
    rows.exclude("empty_account_id", empty_id, "account_id", df["account_id"], "the account id is empty",
                 "fill in the account id, or delete the row")
    if months is not None:
        rows.exclude("bad_month", bad_month | np.isnat(months), "month", df["month"],
                     "month is empty or not a month", "write months as YYYY-MM")


def _revenue_rows(df: pd.DataFrame, months: np.ndarray, bad_month: np.ndarray, month_numbers: np.ndarray,
                  contracts: _Contracts, as_of: np.datetime64, report: _Report) -> pd.DataFrame:
    rows = _Rows("revenue", len(df), report)
    ids, coded = _coded_ids(df["account_id"])
    mrr, bad_mrr = parse_numbers(df["mrr"])
    _exclude_bad_keys(rows, df, coded[1] < 0, months, bad_month)
    rows.exclude("bad_mrr", bad_mrr | np.isnan(mrr), "mrr", df["mrr"], "mrr is empty or not a number",
                 "write a number (a month without revenue can be left out: a missing month means 0)")
    rows.exclude("negative_mrr", mrr < 0, "mrr", df["mrr"], "mrr is negative",
                 "MRR is billed recurring revenue >= 0; remove credits/refunds or net them into the month")
    pos = contracts.check(rows, ids, months, df["account_id"], df["month"], "month", as_of, coded=coded,
                          months=month_numbers)
    product, product_rank = _products(df)
    # a kept row's account position is its id's rank, and its product's rank its name's: the sort by
    # (account_id, month, product) and the test of equal keys, on integers
    order, same = _sorted(rows.keep, pos, month_numbers, product_rank)
    # (fresh arrays: the frame takes them as they are, no copy and no consolidated object block)
    out = pd.DataFrame({"account_id": ids[order], "month": months[order], "mrr": mrr[order], "product": product[order]},
                       copy=False)
    key = ["account_id", "month", "product"]
    dup = same | np.append(same[1:], False)
    if dup.any():
        n = int(dup.sum())
        shown = out.loc[dup, key].drop_duplicates().head(3)
        report.quality.warn(Notice(
            "duplicate_revenue_lines", stage="load", n=n,
            examples=", ".join(f"{a} {_ym(m)} {p}" for a, m, p in shown.itertuples(index=False))))
        out = out.groupby(key, sort=False, as_index=False)["mrr"].sum()
    return out


def _products(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(each revenue row's product, :data:`MAIN_PRODUCT` where empty; its rank among the sorted names)."""
    if "product" not in df:
        return np.full(len(df), MAIN_PRODUCT, dtype=object), np.zeros(len(df), dtype=np.int64)
    values, idx = _coded(df["product"])
    names = np.append(values.to_numpy(zero_copy_only=False).astype(object), MAIN_PRODUCT)
    _, rank = np.unique(names, return_inverse=True)
    idx = np.where(idx < 0, len(names) - 1, idx)
    return names[idx], rank.reshape(-1).astype(np.int64, copy=False)[idx]


def _kpi_rows(df: pd.DataFrame, contracts: _Contracts, as_of: np.datetime64, catalogue_names: set[str],
              report: _Report, block: np.ndarray | None = None) -> tuple[pd.DataFrame, list[str]]:
    rows = _Rows("kpis", len(df), report)
    # the KPI columns go straight into one float block (kpis × rows, the frame's own layout): no copy of
    # the whole table when the frame is made; parsed by threads, a row each, while this one checks the
    # keys (_Parsing), then checked and counted here in column order
    columns = [c for c in df.columns if c not in ("account_id", "month")]
    if block is None or block.shape != (len(columns), len(df)):  # (``block``: mapped ahead, :class:`_Reads`)
        block = mapped_block((len(columns), len(df)))
    with _Parsing([df[c] for c in columns if c != "contract_months"], block) as parsing:
        ids, coded = _coded_ids(df["account_id"])
        months, bad_month, month_numbers = _month_cells(df["month"])
        _exclude_bad_keys(rows, df, coded[1] < 0, months, bad_month)
        pos = contracts.check(rows, ids, months, df["account_id"], df["month"], "month", as_of, coded=coded,
                              months=month_numbers)
        order, same = _sorted(rows.keep, pos, month_numbers)  # a kept row's account position: its id's rank
        dup = np.zeros(len(df), dtype=bool)
        dup[order[same]] = True
        order = order[~same]
        rows.exclude("duplicate_account_month", dup, "month", lambda: _pairs(df["account_id"], df["month"]),
                     "the account x month appears more than once; the first row was kept (shown: account / month)",
                     "keep one row per account and month")
        parsed = enumerate(parsing.results())
    kpis, ignored, used = [], [], []
    for col in columns:
        if col == "contract_months":
            report.quality.warn(Notice("contract_months_ignored", stage="load", severity="note"))
            continue
        here, (bad, n_values) = next(parsed)
        n_bad = _count(bad)
        if col not in catalogue_names and n_values <= n_bad and n_bad > 0:
            ignored.append(str(col))
            continue
        if n_values == 0:  # (a catalogue KPI: other names whose cells are all text are ignored above)
            if n_bad:
                report.quality.warn(Notice("kpi_column_text", stage="load", column=str(col), n=n_bad,
                                           examples=_examples(np.asarray(df[col], dtype=object)[bad])))
            elif len(df):  # (an empty table is one problem: _no_rows)
                report.quality.warn(Notice("kpi_column_empty", stage="load", column=str(col)))
            continue
        if bad is not None:
            _blank_cells(report, "kpis", str(col), bad & rows.keep, df[col], "are not numbers")
        kpis.append(str(col))
        used.append(here)
    if ignored:
        report.quality.warn(Notice("text_columns_ignored", stage="load", severity="note", n=len(ignored),
                                   columns=ignored[:10]))
    out = pd.DataFrame(_kept_rows(block, used, order).T, columns=kpis, copy=False)
    out.insert(0, "account_id", ids[order])
    out.insert(1, "month", months[order])
    return out, kpis


def _kept_rows(block: np.ndarray, used: list[int], order: np.ndarray) -> np.ndarray:
    """The (len(used), len(order)) array of ``block[used][:, order]``, written over ``block``'s own memory
    from its start (no second block): row j's values are taken from row used[j] >= j before they are
    written, and land below row used[j] + 1, which no later row reads. When a quarter of the rows'
    values or more are left out (excluded rows), the kept ones are copied out, so that the frame does not
    hold the whole block."""
    n = block.shape[1]
    if len(order) == n and bool((order == np.arange(n)).all()):  # every row in file order (the usual file)
        for j, r in enumerate(used):
            if r != j:
                block[j] = block[r]
        return block[: len(used)]
    flat, m = block.reshape(-1), len(order)
    taken = np.empty(m)
    for j, r in enumerate(used):
        np.take(block[r], order, out=taken, mode="clip")  # (valid positions; unbuffered)
        flat[j * m:(j + 1) * m] = taken
    kept = flat[: len(used) * m].reshape(len(used), m)
    return kept.copy() if len(order) < 0.75 * n else kept


# Threads parsing the KPI columns (pyarrow's cast and numpy's copies release the interpreter)
PARSE_THREADS = 2


class _Parsing:
    """Each column parsed (:func:`_numbers_into`) into its row of ``block``, every row in file order, by
    :data:`PARSE_THREADS` threads started on entering, each taking the next column left (and writing only
    its rows); :meth:`results` gives each column's (bad mask or None, number of values) over all its cells,
    waiting for the threads. Leaving the ``with`` joins every thread; with one thread the columns are
    parsed in :meth:`results`. The values are the same with one thread or many."""

    def __init__(self, columns: list[pd.Series], block: np.ndarray):
        self.columns, self.block = columns, block
        self.workers = min(PARSE_THREADS, os.cpu_count() or 1, len(columns))
        self.todo = iter(range(len(columns)))  # (the columns not taken yet, shared by the threads)
        self.threads: list[Beside] = []

    def _parse(self, i: int) -> tuple[np.ndarray | None, int]:
        values = self.block[i]
        bad = _numbers_into(self.columns[i], values)
        return bad, len(values) - int(np.count_nonzero(np.isnan(values)))

    def _take(self) -> list[tuple[int, tuple[np.ndarray | None, int]]]:
        return [(i, self._parse(i)) for i in self.todo]

    def __enter__(self) -> _Parsing:
        if self.workers > 1:
            self.threads = [Beside(self._take, "cskit-parse") for _ in range(self.workers)]
        return self

    def results(self) -> list[tuple[np.ndarray | None, int]]:
        if not self.threads:
            return [self._parse(i) for i in range(len(self.columns))]
        parsed = dict(pair for thread in self.threads for pair in thread.result())
        return [parsed[i] for i in range(len(self.columns))]

    def __exit__(self, *exc) -> None:
        for _ in self.todo:  # (leaving on an error: no column left to take)
            pass
        for thread in self.threads:
            thread.join()


def _count(mask: np.ndarray | None) -> int:
    return 0 if mask is None else int(np.count_nonzero(mask))


def _sorted(keep: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the kept rows in key order (stable: equal keys stay in file order), and whether
    each sorted row's key equals the previous row's."""
    idx = np.flatnonzero(keep)
    codes = [_sort_codes(k[idx]) for k in keys]
    if np.prod([float(n) for _, n in codes]) < 2.0**62:  # one integer key: a stable argsort
        key = np.zeros(len(idx), dtype=np.int64)
        for c, n in codes:
            key = key * n + c
        order = np.argsort(key, kind="stable")
        codes = [(key, 0)]
    else:
        order = np.lexsort([c for c, _ in codes][::-1])  # stable, the first key first
    same = np.ones(len(idx), dtype=bool)
    same[:1] = False
    for c, _ in codes:
        c = c[order]
        same[1:] &= c[1:] == c[:-1]
    return idx[order], same


def _sort_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """(each value's rank among the distinct values as int64, missing last; the number of ranks), as
    pandas' stable multi-column sort orders them (integers: their offset from the smallest)."""
    if values.dtype.kind in "iu":
        low = int(values.min()) if len(values) else 0
        c = np.subtract(values, low, dtype=np.int64)
        return c, int(c.max()) + 1 if len(c) else 1
    codes, distinct = pd.factorize(values, sort=True)
    return np.where(codes < 0, len(distinct), codes).astype(np.int64), len(distinct) + 1


def _nps_rows(df: pd.DataFrame, contracts: _Contracts, as_of: np.datetime64, report: _Report) -> pd.DataFrame:
    rows = _Rows("nps", len(df), report)
    ids, coded = _coded_ids(df["account_id"])
    dates, bad_date, days = _parse_when(df["date"], _DATE_PATTERNS, "D")
    score, bad_score = parse_numbers(df["score"])
    _exclude_bad_keys(rows, df, coded[1] < 0)
    rows.exclude("bad_date", bad_date | np.isnat(dates), "date", df["date"], "date is empty or not a date",
                 "write the survey date as YYYY-MM-DD")
    rows.exclude("bad_score", bad_score | np.isnan(score), "score", df["score"], "score is empty or not a number",
                 "write the answer as a whole number 0-10")
    rows.exclude("score_out_of_range", (score < 0) | (score > 10) | (score != np.round(score)), "score", df["score"],
                 "score is not a whole number from 0 to 10", "NPS answers are 0-10; correct or delete the row")
    pos = contracts.check(rows, ids, dates, df["account_id"], df["date"], "date", as_of, contract=False, coded=coded)
    role = parse_text(df["role"]) if "role" in df else np.full(len(df), None, dtype=object)
    order, _ = _sorted(rows.keep, pos, days)  # by (account_id, date): a kept row's account position is its id's rank
    return pd.DataFrame({"account_id": ids[order], "date": dates[order],
                         "score": np.nan_to_num(score[order]).astype(np.int64), "role": role[order]}, copy=False)


def _event_rows(df: pd.DataFrame, contracts: _Contracts, as_of: np.datetime64, report: _Report) -> pd.DataFrame:
    rows = _Rows("events", len(df), report)
    ids = parse_ids(df["account_id"])
    if pd.api.types.is_datetime64_any_dtype(df["ts"]):
        ts = df["ts"].to_numpy(dtype="datetime64[ns]")
        bad_ts = np.zeros(len(df), dtype=bool)
    else:
        text = pd.Series(_trimmed_text(df["ts"]).to_pandas(), dtype=object)
        ts = pd.to_datetime(text.str.replace("/", "-", regex=False), errors="coerce", format="ISO8601").to_numpy(
            dtype="datetime64[ns]")
        bad_ts = text.notna().to_numpy() & np.isnat(ts)
    _exclude_bad_keys(rows, df, pd.isna(ids))
    rows.exclude("bad_ts", bad_ts | np.isnat(ts), "ts", df["ts"], "ts is empty or not a timestamp",
                 "write timestamps as YYYY-MM-DD HH:MM:SS")
    contracts.check(rows, ids, ts, df["account_id"], df["ts"], "ts", as_of, contract=False)
    value = parse_numbers(df["value"])[0] if "value" in df else np.full(len(df), np.nan)
    out = pd.DataFrame({"account_id": ids, "user_id": parse_text(df["user_id"]), "ts": ts,
                        "event": parse_text(df["event"]), "value": value}).loc[rows.keep]
    return out.sort_values(["account_id", "ts"], kind="stable").reset_index(drop=True)


def _as_of(params: Params, revenue: pd.DataFrame, months: np.ndarray, report: _Report) -> np.datetime64 | None:
    """params.as_of's month, or the last month present in revenue (rows with an id and a valid month)."""
    if params.as_of is not None:
        try:
            return pd.Timestamp(params.as_of).to_period("M").to_timestamp().to_datetime64()
        except (ValueError, TypeError):
            report.fatal.append(f"params as_of: {params.as_of!r} is not a date. Fix: write as_of: YYYY-MM-DD.")
            return None
    has_id = (
        _coded(revenue["account_id"])[1] >= 0
        if not _is_typed(revenue["account_id"])
        else revenue["account_id"].notna().to_numpy()
    )
    ok = months[has_id & ~np.isnat(months)]
    if not len(ok):
        return None
    as_of = ok.max()
    report.quality.warn(Notice("as_of_defaulted", stage="load", severity="note", as_of=_ym(as_of)))
    return as_of


def _as_of_after_revenue(revenue: pd.DataFrame, as_of: np.datetime64, params: Params, report: _Report) -> None:
    """A fatal problem when as_of lies after the last month of the used revenue rows: no account pays at
    as_of, so the diagnosis of that month would stop later (nothing to project) with a vaguer message.
    as_of set in params: set it earlier or add the months. Not set (the last month of revenue.month, read
    before the rows' checks): every row of that month was excluded, which the row problems list."""
    if not len(revenue):
        return
    last = revenue["month"].max().to_datetime64()
    if last < as_of:
        end = (pd.Timestamp(last) + pd.offsets.MonthEnd(0)).date()
        if params.as_of is None:
            report.fatal.append(
                f"revenue: as_of is not set, so it is the last month in revenue.month ({_ym(as_of)}), but none of "
                f"that month's rows is usable (see the revenue row problems below); the last month with usable "
                f"revenue is {_ym(last)}. Fix: correct those rows (e.g. fill their mrr), or set as_of: {end}.")
            return
        report.fatal.append(
            f"params as_of: as_of {_ym(as_of)} is after the last month with revenue (revenue.month: {_ym(last)}), "
            f"so no account pays at as_of. Fix: set as_of: {end} (or leave it out to use the last revenue month), "
            "or add the revenue months up to as_of.")


def _no_rows(table: str, report: _Report) -> None:
    t = report.quality.tables[table]
    if t["used"] == 0:
        why = ", ".join(f"{r}: {n}" for r, n in sorted(t["excluded"].items())) or "the table is empty"
        report.fatal.append(
            f"{table}: no usable rows (read {t['read']}; {why}). Fix: see the row-level problems below."
        )


def client_from_frames(tables: dict[str, pd.DataFrame], params: Params, *, source: str = "in-memory tables",
                       _report: _Report | None = None, _unread: frozenset[str] = frozenset(),
                       _early: _Early | None = None, _coded: dict | None = None,
                       _block: np.ndarray | None = None) -> ClientData:
    """Validate and convert raw tables (any dtypes; text cells are parsed here) into a :class:`ClientData`.

    ``tables`` maps table names (accounts, revenue, kpis, nps, events) to frames with the client's
    headers; ``params.columns[table]`` maps them to canonical names first. Raises one
    :class:`CskitError` listing every fatal problem; unusable rows are excluded and counted.
    """
    global _CODED
    _CODED = dict(_coded or {})  # (columns coded ahead: :class:`_Reads`)
    try:
        return _client_from_frames(tables, params, source, _report or _Report(), _unread, _early, _block)
    finally:
        _CODED = None


def _client_from_frames(tables: dict[str, pd.DataFrame], params: Params, source: str, report: _Report,
                        _unread: frozenset[str], early: _Early | None = None,
                        block: np.ndarray | None = None) -> ClientData:
    frames: dict[str, pd.DataFrame] = {}
    required = _required_tables(params)
    for name in TABLES:
        if name in tables and not (name == "events" and not isinstance(tables[name], pd.DataFrame)):
            ahead = early.prepared_frame(name, tables[name]) if early is not None else None
            if ahead is None:
                frames[name] = _prepare(name, tables[name], dict(params.columns.get(name, {})), report)
            else:
                frames[name] = ahead[0]
                report.merge(ahead[1])
        elif name in required and name not in _unread:
            report.fatal.append(
                f"{name}: required table is missing. Fix: provide {name} (see DESIGN §2 for its columns)."
            )
    if params.events_kpis and "events" not in tables and "events" not in _unread:
        report.fatal.append("events: params events_kpis is set but the client has no events table. Fix: add "
                            "events.csv / events.parquet / events/ to the data folder, or remove events_kpis.")
    other = sorted(set(tables) - set(TABLES))
    if other:
        report.quality.warn(Notice("tables_ignored", stage="load", severity="note", tables=list(other)))
    report.stop_if_fatal(source)

    catalogue_names = set(build_catalogue(params.kpis))
    ahead = early.checked(frames) if early is not None else None
    if ahead is not None:
        as_of, accounts, static_kpis, contracts, revenue = ahead.as_of, *ahead.accounts, ahead.revenue
        report.merge(ahead.report)
    else:
        as_of, accounts, static_kpis, contracts, revenue = _accounts_and_revenue(frames, params, catalogue_names,
                                                                               report)
    if as_of is None:
        report.fatal.append("revenue: no row has both an account_id and a valid month, so as_of cannot be set. "
                            "Fix: write months as YYYY-MM, or set as_of in params.")
        report.stop_if_fatal(source)
    # the nps rows checked by a thread meanwhile, with a report of their own merged after the kpis'
    nps_rows = _Beside(lambda r: _nps_rows(frames["nps"], contracts, as_of, r)) if "nps" in frames else None
    try:
        kpis, kpi_names = (
            _kpi_rows(frames["kpis"], contracts, as_of, catalogue_names, report, block)
            if "kpis" in frames
            else (pd.DataFrame({"account_id": pd.Series(dtype=object), "month": pd.Series(dtype="datetime64[ns]")}),
                  [])
        )
    finally:
        if nps_rows is not None:
            nps_rows.join()
    nps = nps_rows.merged(report) if nps_rows is not None else None
    events = None
    if params.events_kpis and ("events" in tables):
        kpis, kpi_names = _events_kpis(frames.get("events", tables["events"]), params, accounts, contracts, as_of,
                                       kpis, kpi_names, report)
    elif "events" in frames:
        events = _event_rows(frames["events"], contracts, as_of, report)
    for name in required:
        _no_rows(name, report)
    _as_of_after_revenue(revenue, as_of, params, report)
    report.stop_if_fatal(source)

    extra = [k for k in kpi_names if k not in catalogue_names]
    catalogue = _flag_bounds(build_catalogue(params.kpis, extra), accounts, kpis, static_kpis, kpi_names, params)
    data = ClientData(
        accounts=accounts, revenue=revenue, kpis=kpis, nps=nps, events=events,
        as_of=pd.Timestamp(as_of), catalogue=catalogue,
        static_kpis=static_kpis, quality=report.quality,
    )
    _note_window(data)
    _note_anniversaries(data)
    return data


class _Beside:
    """``work(report)`` done with a :class:`_Report` of its own by a thread started here (where there are
    two cores), while the caller goes on; :meth:`merged` appends that report's counts and notices to the
    caller's at the work's place in the order and gives the work's result. Work that raised is done
    again in order by :meth:`merged`, which raises it there; so every count, notice and message is as
    if the work had been done in turn."""

    def __init__(self, work):
        self.work, self.report = work, _Report()
        # (a partial, not a closure over self: nothing points back here, so with one core too, where no
        # thread runs the work and lets it go, the tables it holds are freed with this object)
        self.beside = Beside(partial(work, self.report), "cskit-check", start=(os.cpu_count() or 1) > 1)

    def join(self) -> None:
        self.beside.join()

    def merged(self, report: _Report):
        self.join()
        if self.beside.thread is None or self.beside.error is not None:
            return self.work(report)
        report.merge(self.report)
        return self.beside.result()


def _accounts_and_revenue(frames: dict[str, pd.DataFrame], params: Params, catalogue_names: set[str],
                          report: _Report) -> tuple:
    """(as_of, accounts, static KPIs, contracts, revenue) of the prepared frames; all but as_of None when
    as_of cannot be set."""
    rev_months, rev_bad_month, rev_month_numbers = _month_cells(frames["revenue"]["month"])
    as_of = _as_of(params, frames["revenue"], rev_months, report)
    if as_of is None:
        return None, None, None, None, None
    accounts, static_kpis, listed = _account_rows(frames["accounts"], as_of, catalogue_names, report)
    contracts = _Contracts.of(accounts, listed)
    revenue = _revenue_rows(frames["revenue"], rev_months, rev_bad_month, rev_month_numbers, contracts, as_of, report)
    return as_of, accounts, static_kpis, contracts, revenue


@dataclass
class _Checked:
    """What :func:`_accounts_and_revenue` gave when done ahead (:class:`_Early`), with its report."""

    as_of: np.datetime64
    accounts: tuple[pd.DataFrame, list[str], _Contracts]  # (accounts, static KPIs, contracts)
    revenue: pd.DataFrame
    report: _Report


@dataclass
class _Early:
    """The accounts' and revenue's checks (:func:`_prepare`, as_of, :func:`_account_rows`,
    :func:`_revenue_rows`), done while a background thread reads the other tables (:class:`_Reads`):
    each part with the report it would have written, merged by :func:`client_from_frames` at that
    part's place in the order, so every count, notice and message is as if it had been done there. A
    part is used only for the very frames it was done on; none when anything raised (then done again
    in order, which raises it there)."""

    inputs: dict[str, pd.DataFrame] = field(default_factory=dict)  # the raw frames the parts were done on
    prepared: dict[str, tuple[pd.DataFrame, _Report]] = field(default_factory=dict)
    rows: _Checked | None = None

    @classmethod
    def of(cls, tables: dict[str, pd.DataFrame], params: Params) -> _Early | None:
        global _CODED
        early = cls()
        _CODED = {}
        try:
            for name in ("accounts", "revenue"):
                if name not in tables:
                    return early
                report = _Report()
                early.inputs[name] = tables[name]
                early.prepared[name] = (_prepare(name, tables[name], dict(params.columns.get(name, {})), report),
                                        report)
                if report.fatal:  # the load stops before the rows are checked
                    return early
            report = _Report()
            frames = {name: early.prepared[name][0] for name in ("accounts", "revenue")}
            as_of, accounts, static_kpis, contracts, revenue = _accounts_and_revenue(
                frames, params, set(build_catalogue(params.kpis)), report)
            if as_of is not None and not report.fatal:
                early.rows = _Checked(as_of, (accounts, static_kpis, contracts), revenue, report)
            return early
        except Exception:  # noqa: BLE001 - done again in order by client_from_frames, which raises it there
            return None
        finally:
            _CODED = None

    def prepared_frame(self, name: str, raw: pd.DataFrame) -> tuple[pd.DataFrame, _Report] | None:
        return self.prepared.get(name) if self.inputs.get(name) is raw else None

    def checked(self, frames: dict[str, pd.DataFrame]) -> _Checked | None:
        same = all(frames.get(n) is self.prepared[n][0] for n in ("accounts", "revenue") if n in self.prepared)
        return self.rows if same and self.rows is not None else None


def _note_window(data: ClientData) -> None:
    """Left truncation: contracts that began before the first revenue / KPI month (cskit.panel.data_window)."""
    w = data_window(data)
    data.quality.data_window = w
    if w["code"] != "left_truncation":
        return
    data.quality.warn(Notice("left_truncation", stage="load", first_month=w["first_month"],
                             n=w["started_before_window"], accounts=w["accounts"],
                             share=w["share_started_before_window"], ended_before=w["ended_before_window"],
                             only_active_listed=w["only_active_listed"]))


ANNIVERSARY_MIN_CHURNS = 20  # churns of accounts 11+ months old needed to tell annual-looking churn apart


def _note_anniversaries(data: ClientData) -> None:
    """A warning when no account is annual (contract_type missing or all monthly) yet the churns of
    accounts 11+ months old fall at an anniversary of contract_start (its month or the month before: a
    term ending the day before) far more often than monthly renewals would put them there (binomial
    p < 0.001, half of them at least): annual contracts filed as monthly, which the models would read as
    a churn season instead of renewals.

    Under a constant monthly hazard the churns fall at each tenure in proportion to the account-months at
    risk at that tenure, so the expected share is that of anniversary months among the at-risk months of
    tenure 11+ (each account's, from contract_start to its churn or as_of), not 2 in 12: with contracts
    under ~2 years old, tenures 11-13 are most of the long ones observable."""
    acc = data.accounts
    if is_annual(acc["contract_type"].to_numpy()).any():
        return
    start = month_index(acc["contract_start"])
    churn = month_index(acc["churn_date"])
    as_of = month_index(pd.Series([data.as_of]))[0]
    churned = (churn >= 0) & (churn <= as_of)
    tenure = np.where(churned, churn, as_of) - start  # months after contract_start of the last month at risk
    months = tenure[churned]
    months = months[months >= 11]
    if len(months) < ANNIVERSARY_MIN_CHURNS:
        return
    at_risk = np.maximum(tenure - 10, 0).sum()  # tenures 11..tenure of each account
    at_anniversary = ((tenure + 1) // 12 + tenure // 12).sum()  # ... that are 11, 12, 23, 24, ...
    expected = at_anniversary / at_risk
    n = int(np.isin(months % 12, (0, 11)).sum())
    if n >= len(months) / 2 and _binomial_tail(n, len(months), expected) < 1e-3:
        data.quality.warn(Notice("churn_at_anniversaries", stage="load", n=n, churns=len(months),
                                 share=round(n / len(months), 6), expected=round(float(expected), 6)))


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), the exact sum (log terms: log C(n, j) grows by log((n-j)/(j+1))).
    Without scipy: the load runs while the pipeline may still be importing it in another thread."""
    if p >= 1:
        return 1.0
    j = np.arange(k, n)
    first = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
             + k * math.log(p) + (n - k) * math.log1p(-p))
    steps = np.log((n - j) / (j + 1)) + math.log(p) - math.log1p(-p)
    return float(np.exp(first + np.concatenate(([0.0], np.cumsum(steps)))).sum())


def _required_tables(params: Params) -> tuple[str, ...]:
    """accounts, revenue and kpis; kpis is optional when the KPIs come from events (params events_kpis)."""
    return tuple(t for t in REQUIRED_TABLES if not (t == "kpis" and params.events_kpis))


def _events_kpis(table, params: Params, accounts: pd.DataFrame, contracts: _Contracts, as_of: np.datetime64,
                 kpis: pd.DataFrame, kpi_names: list[str], report: _Report) -> tuple[pd.DataFrame, list[str]]:
    """The events_kpis panel (cskit.events), counted in quality, joined to the kpis table."""
    from cskit import events as ev

    try:
        if isinstance(table, pd.DataFrame):
            import ibis

            table = ibis.memtable(table)
        table = ev.canonical_columns(table, dict(params.columns.get("events", {})))
        panel, counts = ev.aggregate_events(
            table,
            params.events_kpis,
            timezone=params.timezone,
            as_of=pd.Timestamp(as_of),
            accounts=accounts,
            excluded_accounts=list(contracts.excluded),
        )
        counts.record(report.quality)
        return ev.join_kpis(kpis, panel, params.events_kpis)
    except CskitError as e:
        report.fatal.append(str(e))
        return kpis, kpi_names
    except Exception as e:  # noqa: BLE001 - a database refusing the query (privileges, types, connection)
        if not (is_url(params.data) or Path(params.data).suffix.lower() in DATABASE_SUFFIXES):
            raise
        report.fatal.append(failure_in_database(params.data, "events: the events aggregation", e))
        return kpis, kpi_names


def _flag_bounds(catalogue: dict, accounts: pd.DataFrame, kpis: pd.DataFrame, static_kpis: list[str],
                 kpi_names: list[str], params: Params) -> dict:
    """A KPI whose every value is 0 or 1 is a flag (e.g. onboarding_completed 0/1): bound it to [0, 1],
    so that "+10%" moves the share of accounts with the flag and cannot push one past 1. Bounds set
    in params.kpis win."""
    out = dict(catalogue)
    for name in [*static_kpis, *kpi_names]:
        if name not in out or (params.kpis.get(name) and params.kpis[name].upper is not None):
            continue
        column = (accounts if name in static_kpis else kpis)[name]
        if pd.api.types.is_numeric_dtype(column) and _is_flag(column.to_numpy(dtype="float64", na_value=np.nan)):
            out[name] = replace(out[name], lower=0.0, upper=1.0)
    return out


def _is_flag(x: np.ndarray) -> bool:
    """Every non-missing value is 0 or 1, and both occur (two comparisons: ``Series.isin`` hashes each
    value, 30× slower on a million rows)."""
    head = x[:1000]  # (most KPIs show a value other than 0 and 1 at once)
    if not ((head == 0) | (head == 1) | np.isnan(head)).all():
        return False
    zero, one = x == 0, x == 1
    return bool(zero.any() and one.any() and (zero | one | np.isnan(x)).all())


# --------------------------------------------------------------------------------------------------
# Readers: every cell as text


def _arrow_frame(rel: duckdb.DuckDBPyRelation) -> pd.DataFrame:
    return _arrow_table(rel).to_pandas(types_mapper=pd.ArrowDtype)


def _arrow_table(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    """The relation's rows as an Arrow table, in their order, streamed (DuckDB's ``to_arrow_table``, which
    collects them with all its threads, holds ~0.35 GB more at the peak of a 100k-account load, for no
    gain measured on a shared 2-core machine)."""
    table = rel.arrow()
    return table.read_all() if isinstance(table, pa.RecordBatchReader) else table


# DuckDB's threads for one CSV read: the loader's reads already run beside other work (the kpis and nps
# files' thread beside this one's reads and checks, :class:`_Reads`), so that a second thread per read only
# competes with them for the cores; one thread reads the 100k-account bench client's files in ~0.35 CPU s
# less (kpis 1.25 s instead of 1.6 s, revenue 0.28 s instead of 0.33 s)
READ_THREADS = 1


def _connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection for reading CSVs (one per folder: a connection costs ~30 ms), with
    :data:`READ_THREADS` threads."""
    return _quiet(duckdb.connect(config={"threads": READ_THREADS}))


def _quiet(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """``con`` without DuckDB's progress bar."""
    # DuckDB draws a progress bar on the process's stdout when a read takes over 2 s (a large file, a
    # busy machine): the notebook's kernel forwards that output into the report. In a Jupyter kernel
    # without ipywidgets "SET enable_progress_bar" raises (the bar is already off there), which sent
    # every read of a `cskit run` to the pandas fallback (3x slower, a read_with_pandas note per
    # table); the PRAGMA works in both, and a cosmetic setting never decides which reader reads
    try:
        con.execute("PRAGMA disable_progress_bar")
    except duckdb.Error:
        pass
    return con


def _read_csv_duckdb(path: Path, con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    own = con is None
    con = _connect() if own else con
    try:
        return _arrow_frame(con.read_csv(str(path), header=True, all_varchar=True, delimiter=",", quotechar='"'))
    finally:
        if own:
            con.close()


# The canonical columns of a kpis file that are not numbers (read as text by :func:`_read_kpis_typed`).
_KPI_TEXT_COLUMNS = ("account_id", "month", "contract_months")


def _read_kpis_typed(path: Path, con: duckdb.DuckDBPyConnection, columns: dict[str, str]) -> pd.DataFrame | None:
    """The kpis file with its KPI columns read as numbers by DuckDB's own CSV reader (``columns``: the
    params' header mapping of kpis): the same frame the text cells would give after :func:`parse_numbers`,
    in a third less time and without a text copy of every cell; None where it might not be the same,
    and the file is then read as text. DuckDB's reading of a number differs from :func:`parse_numbers`
    only for cells DuckDB refuses (the read then fails: text, thousands separators, full-width digits,
    missing markers, blank cells), for "1_000" (digits grouped by underscores) and "+-1", which DuckDB
    reads as numbers and :func:`parse_numbers` does not (so a file with either is read as text), and
    for "inf" / "nan" (a non-finite number read: read as text, so that the bad cell is quoted as
    written). Both round every other number the same way (correctly rounded binary64)."""
    rel = con.read_csv(str(path), header=True, all_varchar=True, delimiter=",", quotechar='"')
    names = list(rel.columns)
    canonical = _canonical_names(names, columns)
    text = {n for n in names if canonical[n] in _KPI_TEXT_COLUMNS}
    if len(set(names)) < len(names) or len(text) == len(names) or not _plain_numbers(path):
        return None
    dtype = {n: "VARCHAR" if n in text else "DOUBLE" for n in names}
    table = _arrow_table(con.read_csv(str(path), header=True, dtype=dtype, delimiter=",", quotechar='"'))
    if table.column_names != names:
        return None
    for n in names:
        if n not in text and pc.any(pc.invert(pc.is_finite(table[n]))).as_py():
            return None
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _header(name) -> str:
    """A header as read: trimmed, without a byte-order mark."""
    return str(name).strip().lstrip("\ufeff")


def _by_header(columns: dict[str, str]) -> dict[str, str]:
    """The params' mapping of one table (``columns``) keyed by the trimmed header it applies to."""
    return {k.strip(): v for k, v in columns.items()}


def _canonical_names(names: list[str], columns: dict[str, str]) -> dict[str, str]:
    """Each header's canonical name, as :func:`_prepare` maps it (``columns``: the params' mapping)."""
    mapping = _by_header(columns)
    return {n: mapping.get(_header(n), _header(n)) for n in names}


def _plain_numbers(path: Path) -> bool:
    """False where the file's rows (after the header) may hold a number DuckDB reads otherwise than
    :func:`parse_numbers`: "+-" anywhere, or an underscore between two digits. (Each byte looked for
    alone first, memchr-fast; a two-byte search reads the file six times slower.)"""
    import mmap

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return True
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            # the header ends at its first line end: "\n", or "\r" alone (old Excel for Mac's CSV), which
            # DuckDB reads as rows too (a header with a quoted line end is scanned in part: safe)
            ends = [i for i in (mm.find(b"\n"), mm.find(b"\r")) if i >= 0]
            if not ends:  # (a header alone)
                return True
            start = min(ends) + 1
            wanted = [c for c in (b"+", b"_") if mm.find(c, start) >= 0]
            if not wanted:
                return True
            body = np.frombuffer(mm, dtype=np.uint8)[start:]
            try:
                # in windows with a byte of each neighbour (a byte and its neighbours always fall in one
                # window): no mask the size of the file (0.2-0.3 GB at 100k accounts) where ids hold underscores
                return not any(_next_to(body[max(lo - 1, 0):lo + SCAN_BYTES + 1], c)
                               for c in wanted for lo in range(0, len(body), SCAN_BYTES))
            finally:
                del body


SCAN_BYTES = 16 * 2**20  # the window of _plain_numbers' scan


def _next_to(body: np.ndarray, char: bytes) -> bool:
    """``body`` (bytes) holds "+-" (``char`` "+") or an underscore between two digits (``char`` "_")."""
    at = np.flatnonzero(body == ord(char))
    if char == b"+":
        at = at[at < len(body) - 1]
        return bool((body[at + 1] == ord("-")).any())
    at = at[(at > 0) & (at < len(body) - 1)]
    before, after = body[at - 1], body[at + 1]
    return bool(((before >= 48) & (before <= 57) & (after >= 48) & (after <= 57)).any())  # (b"0" .. b"9")


def _read_csv(path: Path, report: _Report, con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame | None:
    """DuckDB reads UTF-8 (with or without BOM). A file that is not UTF-8 is decoded as cp932
    (Shift_JIS as Excel writes it) and re-read; a file DuckDB cannot parse goes to pandas. ``con``: the
    connection to read with (a new one by default)."""
    try:
        return _read_csv_duckdb(path, con)
    except duckdb.Error as e:
        first = str(e).splitlines()[0]
        if "unicode" not in str(e).lower() and "utf-8" not in str(e).lower():
            return _read_csv_pandas(path, path.read_bytes().decode("utf-8-sig", errors="replace"), first, report)
    raw = path.read_bytes()
    try:
        text = raw.decode("cp932")
    except UnicodeDecodeError:
        report.fatal.append(f"{path.name}: unreadable: the file is neither UTF-8 nor Shift_JIS (cp932). "
                            "Fix: save it from Excel as 'CSV UTF-8'.")
        return None
    report.quality.warn(Notice("read_as_shift_jis", stage="load", severity="note", file=path.name))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        copy.write_text(text, encoding="utf-8")
        try:
            return _read_csv_duckdb(copy, con)
        except duckdb.Error as e:
            return _read_csv_pandas(path, text, str(e).splitlines()[0], report)


def _read_csv_pandas(path: Path, text: str, why: str, report: _Report) -> pd.DataFrame | None:
    import io

    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, ValueError) as e:
        report.fatal.append(f"{path.name}: unreadable as CSV ({why}; pandas: {str(e).splitlines()[0]}). "
                            "Fix: check the delimiter is a comma and quotes are balanced; re-export from the source.")
        return None
    report.quality.warn(Notice("read_with_pandas", stage="load", severity="note", file=path.name, why=why))
    return df


def _read_folder(folder: Path, report: _Report) -> tuple[dict[str, pd.DataFrame], set[str]]:
    tables, unread, reads = _start_folder(folder, report)
    reads.finish(tables, unread, report)
    return tables, unread


# The tables a background thread reads (:class:`_Reads`): the largest (kpis) and the one after it, while
# this thread reads and checks the accounts and revenue (:class:`_Early`).
BACKGROUND_TABLES = ("kpis", "nps")


class _Reads:
    """CSV files read by a background thread with its own DuckDB cursor (DuckDB's read releases the
    interpreter). The thread reads, then codes each table's key columns (:data:`KEY_COLUMNS`,
    :func:`_code`: what the load would do first with them, in :attr:`coded` for :data:`_CODED`);
    :meth:`finish` joins it and hands the frames over in table order, reading again here (with every
    fallback and its notes) any file it could not read. ``columns``: the params' header mapping of
    each table (the kpis file's KPIs are then read as numbers: :func:`_read_kpis_typed`); None: every
    cell read as text, no column coded."""

    def __init__(self, con: duckdb.DuckDBPyConnection, paths: dict[str, Path],
                 columns: dict[str, dict[str, str]] | None = None):
        self.con, self.paths, self.frames = con, paths, {}
        self.columns = columns
        self.coded: dict[int, tuple[object, pa.Array, np.ndarray]] = {}
        self.block: np.ndarray | None = None  # the kpis rows' float block (_kpi_rows), mapped by the thread
        cursor = con.cursor() if paths else None
        self.thread = Beside(lambda: self._run(cursor), "cskit-read", start=bool(paths))

    def _run(self, cursor: duckdb.DuckDBPyConnection) -> None:
        try:
            _quiet(cursor)
            for name, path in self.paths.items():
                df = None
                if name == "kpis" and self.columns is not None:
                    try:
                        df = _read_kpis_typed(path, cursor, self.columns.get("kpis", {}))
                    except duckdb.Error:  # (a cell DuckDB does not read as a number, a file not in UTF-8, ...)
                        df = None
                self.frames[name] = _read_csv_duckdb(path, cursor) if df is None else df
            for name, df in self.frames.items() if self.columns is not None else ():
                canonical = _canonical_names(list(df.columns), self.columns.get(name, {}))
                for col in [c for c in df.columns if canonical[c] in KEY_COLUMNS.get(name, ())]:
                    if not _is_typed(df[col]) and list(canonical.values()).count(canonical[col]) == 1:
                        values = _values_of(df[col])
                        self.coded[id(values)] = (values, *_code(df[col]))
            if "kpis" in self.frames and self.columns is not None:  # (the kpis' float block, mapped here)
                df = self.frames["kpis"]
                keys = _canonical_names(list(df.columns), self.columns.get("kpis", {}))
                self.block = mapped_block((sum(keys[c] not in ("account_id", "month") for c in df.columns), len(df)))
        except Exception:  # noqa: BLE001 - the file is read again by finish, which reports or raises it
            pass
        finally:
            cursor.close()

    def join(self) -> None:
        self.thread.join()

    def finish(self, tables: dict[str, pd.DataFrame], unread: set[str], report: _Report) -> None:
        """Join the thread and put each table into ``tables`` (or ``unread``); closes the connection."""
        try:
            self.join()
            for name, path in self.paths.items():
                df = self.frames.pop(name, None)
                df = _read_csv(path, report, self.con) if df is None else df
                if df is None:
                    unread.add(name)
                else:
                    tables[name] = df
        finally:
            self.close()

    def close(self) -> None:
        self.join()
        self.frames.clear()
        self.con.close()


# The columns of the background tables coded by their thread (:class:`_Reads`): their keys.
KEY_COLUMNS = {"kpis": ("account_id", "month"), "nps": ("account_id", "date")}


def _start_folder(folder: Path, report: _Report, *, columns: dict[str, dict[str, str]] | None = None,
                  ) -> tuple[dict[str, pd.DataFrame], set[str], _Reads]:
    """:func:`_read_files` with :data:`BACKGROUND_TABLES` left to a :class:`_Reads` (returned, started;
    its :meth:`_Reads.finish` puts them into the tables); ``columns``: the params' header mappings, for
    :class:`_Reads` (None: every cell read as text)."""
    con = _connect()
    try:
        files = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
        later = {n: files[f"{n}.csv"] for n in BACKGROUND_TABLES if f"{n}.csv" in files}
        reads = _Reads(con, later, columns)
    except BaseException:
        con.close()
        raise
    try:
        tables, unread = _read_files(folder, report, con, skip=set(later))
    except BaseException:
        reads.close()
        raise
    return tables, unread, reads


def _read_files(folder: Path, report: _Report, con: duckdb.DuckDBPyConnection,
                skip: set[str] = frozenset()) -> tuple[dict[str, pd.DataFrame], set[str]]:
    """The tables of a folder of CSVs (those in ``skip`` are read elsewhere: :class:`_Reads`)."""
    files = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    tables, unread = {}, set()
    for name in TABLES:
        if name == "events" or name in skip:  # events: read where they lie by cskit.events (see load_client)
            continue
        path = files.get(f"{name}.csv")
        if path is None:
            if name in REQUIRED_TABLES:
                found = ", ".join(sorted(p for p in files if p.endswith(".csv"))) or "no CSV files"
                report.fatal.append(f"{name}: required table is missing: no {name}.csv in {folder} (found: {found}). "
                                    f"Fix: add {name}.csv, or point params data to the right folder.")
                unread.add(name)
            continue
        df = _read_csv(path, report, con)
        if df is None:
            unread.add(name)
        else:
            tables[name] = df
    return tables, unread


def _read_xlsx(path: Path, report: _Report) -> tuple[dict[str, pd.DataFrame], set[str]]:
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many types for a broken workbook
        report.fatal.append(f"{path.name}: unreadable as an .xlsx workbook ({type(e).__name__}: {e}). "
                            "Fix: open it in Excel and save it again as .xlsx.")
        return {}, set(TABLES)
    try:
        sheets = {ws.title.strip().lower(): ws for ws in wb.worksheets}
        tables, unread = {}, set()
        for name in TABLES:
            ws = sheets.get(name)
            if ws is None:
                if name in REQUIRED_TABLES:
                    report.fatal.append(
                        f"{name}: required table is missing: no sheet named {name!r} in {path.name} "
                        f"(sheets: {', '.join(s.title for s in wb.worksheets)}). Fix: rename the sheet."
                    )
                    unread.add(name)
                continue
            rows = [[_cell_text(v) for v in r] for r in ws.iter_rows(values_only=True)]
            header = rows[0] if rows else []
            width = max((i + 1 for i, h in enumerate(header) if h is not None), default=0)
            body = [r[:width] + [None] * (width - len(r)) for r in rows[1:]]
            tables[name] = pd.DataFrame(body, columns=[h or f"column_{i + 1}" for i, h in enumerate(header[:width])],
                                        dtype=object)
        return tables, unread
    finally:
        wb.close()


def _read_database(url: DatabaseURL, params: Params, report: _Report) -> tuple[dict[str, pd.DataFrame], set[str]]:
    """A database URL or a .duckdb file: the tables through Ibis, as text cells (cskit/warehouse.py).
    The events table stays in the database: with events_kpis, an Ibis table the aggregation runs on
    (a .duckdb file's through :func:`cskit.events.read_events`, with its memory limit); without, it
    is not read (a note says so)."""
    months = {t: {"month"} | {src for src, canon in params.columns.get(t, {}).items() if canon == "month"}
              for t in ("revenue", "kpis")}
    frames, unread, con = read_database(url, dict(params.tables), tables=tuple(t for t in TABLES if t != "events"),
                                        required=_required_tables(params), month_columns=months,
                                        timezone=params.timezone, report=report)
    wanted = params.tables.get("events", "events")
    schema, actual, listed = find_table(table_names(con), wanted)
    if params.events_kpis:
        table = _database_events(url, con, schema, actual, params, report)
        if actual is None:
            report.fatal.append(f"events: params events_kpis is set but there is {missing_table(url, wanted, listed)}. "
                                "Fix: create it, or map it in params: tables: {events: <its table name>}.")
        if table is None:
            unread.add("events")
        else:
            frames["events"] = table
            return frames, unread  # the connection lives as long as the events table
    elif actual is not None:
        report.quality.warn(Notice("events_unused", stage="load", severity="note", file=wanted))
    con.disconnect()
    return frames, unread


def _database_events(url: DatabaseURL, con, schema: str | None, actual: str | None, params: Params, report: _Report):
    """The events table of a database as an Ibis table, its columns mapped (None if it is missing)."""
    from cskit import events as ev

    if actual is None:
        return None
    columns = dict(params.columns.get("events", {}))
    try:
        if url.backend == "duckdb" and not schema:
            return ev.read_events(url.path, engine="duckdb", columns=columns, table=actual)
        return ev.canonical_columns(con.table(actual, database=schema), columns)
    except CskitError as e:
        report.fatal.append(str(e))
        return None


def _read_source(source: Path | str, params: Params, report: _Report) -> tuple[dict[str, pd.DataFrame], set[str]]:
    if isinstance(source, str):
        return _read_database(parse_url(source), params, report)
    if not source.exists():
        report.fatal.append(f"data: {source} does not exist. Fix: set data in params to the client's folder, "
                            ".xlsx or .duckdb file (relative paths are taken from where you run cskit).")
        return {}, set(TABLES)
    if source.is_dir():
        return _read_folder(source, report)
    suffix = source.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(source, report)
    if suffix in DATABASE_SUFFIXES:
        return _read_database(DatabaseURL("duckdb", "duckdb", path=str(source)), params, report)
    report.fatal.append(
        f"data: {source.name} is not a folder of CSVs, an .xlsx workbook or a .duckdb file. "
        "Fix: point data to one of those (an .xls or .csv file: save as .xlsx or put the CSVs in a folder)."
    )
    return {}, set(TABLES)


def events_source(source: Path) -> Path | str | None:
    """Where a client's events are: in a folder ``events.parquet``, ``events.csv`` (or ``.csv.gz``), a
    folder ``events/`` of many files, or files ``events-*`` / ``events_*``; None if there are none
    (a database's or a workbook's ``events`` table is read with the other tables)."""
    if source.is_dir():
        for name in ("events.parquet", "events.csv", "events.csv.gz", "events"):
            hits = [p for p in source.iterdir() if p.name.lower() == name]
            if hits:
                return hits[0]
        for sep in ("-", "_"):
            if any(p.name.lower().startswith("events" + sep) for p in source.iterdir() if p.is_file()):
                return str(source / f"events{sep}*")
        return None
    return None


def load_client(params: Params, base: Path | None = None) -> ClientData:
    """Read ``params.data`` (relative to ``base``, default the current directory) and validate it.

    Parameters
    ----------
    params : Params
        The run's params: ``data`` (folder, .xlsx, .duckdb or database URL), column mapping, as_of.
    base : Path, optional
        Folder a relative ``data`` is resolved against.

    Returns
    -------
    ClientData
        The tables in canonical form (docs/architecture.md) with ``quality``: row-level problems are
        excluded, counted (read = used + Σ excluded per table) and described in ``quality.warnings``.

    Raises
    ------
    CskitError
        Every fatal problem at once (table, column, rows, examples, fix).

    Examples
    --------
    >>> data = load_client(load_params("params/demo.yaml"))  # doctest: +SKIP
    """
    source = resolve_data_path(params.data, base)
    shown = shown_data(source) if isinstance(source, str) else str(source)
    report = _Report()
    early, coded, block = None, {}, None
    if isinstance(source, Path) and source.is_dir():
        # the kpis (and nps) files are read by a thread while this one checks the accounts and revenue
        tables, unread, reads = _start_folder(source, report, columns={t: dict(params.columns.get(t, {}))
                                                                       for t in BACKGROUND_TABLES})
        try:
            early = _Early.of(tables, params)
        except BaseException:  # (an interrupt: no thread outlives the load, the analysis forks later)
            reads.close()
            raise
        reads.finish(tables, unread, report)  # joins the thread
        coded, block = reads.coded, reads.block
    else:
        tables, unread = _read_source(source, params, report)
    if set(TABLES) <= unread:
        report.stop_if_fatal(shown)
    where = events_source(source) if "events" not in tables and isinstance(source, Path) else None
    if where is not None and params.events_kpis:
        from cskit.events import read_events

        try:
            tables["events"] = read_events(where, engine=params.engine, columns=dict(params.columns.get("events", {})))
        except CskitError as e:
            report.fatal.append(str(e))
            unread.add("events")
    elif where is not None:
        report.quality.warn(Notice("events_unused", stage="load", severity="note", file=Path(str(where)).name))
    return client_from_frames(tables, params, source=shown, _report=report, _unread=frozenset(unread), _early=early,
                              _coded=coded, _block=block)
