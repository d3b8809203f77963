"""What every stage result shares: its files are written one way.

``write_json(obj, path)`` is the one JSON writer of the result files (sorted keys, two-space indent,
UTF-8 without escapes, a final newline, NaN / inf → null, numpy scalars → Python, timestamps → "YYYY-MM"),
so the same results give the same bytes whichever stage wrote them.
"""
from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from cskit.parallel import Beside


def json_safe(x: Any) -> Any:
    """``x`` with numpy scalars as Python numbers, NaN / inf as None, timestamps as "YYYY-MM", tuples as
    lists and keys as strings (recursively): what ``json.dumps(..., allow_nan=False)`` accepts."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, pd.Timestamp):
        return x.strftime("%Y-%m")
    return x


def six_digits(x: Any) -> Any:
    """Floats (at any depth of dicts and lists) to 6 significant digits, the rest as it is: the health
    files' rounding."""
    if isinstance(x, dict):
        return {k: six_digits(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [six_digits(v) for v in x]
    if isinstance(x, (float, np.floating)) and np.isfinite(x):
        return float(f"{float(x):.6g}")
    return x


def write_csv(df: pd.DataFrame, path: str | Path, float_format: str = "%.6g") -> None:
    """Write ``df`` as a result CSV: no index, UTF-8, "\\n" line ends, floats by ``float_format``.

    The bytes are pandas' ``to_csv(float_format=...)``. A frame of text, number and flag columns is
    written column-wise by Arrow (:func:`csv_parts`: each float column's distinct values formatted once,
    by the same ``%`` formatting); any other frame by pandas, its float columns formatted here first."""
    parts = csv_parts(df, float_format)
    if parts is not None:
        with open(path, "wb") as f:
            for part in parts:
                f.write(part)
        return
    floats = [c for c in df.columns if df[c].dtype == np.float64] if df.columns.is_unique else []
    if floats:
        df = df.copy(deep=False)  # the caller's frame keeps its columns
        for c in floats:
            df[c] = formatted_floats(df[c].to_numpy(), float_format)
    df.to_csv(path, index=False, float_format=float_format, lineterminator="\n", encoding="utf-8")


_QUOTED = r'[,"\r\n]'  # a cell holding one of these is quoted by pandas' (csv module's) writer (_needs_quotes)


def csv_parts(df: pd.DataFrame, float_format: str) -> list | None:
    """The bytes ``df.to_csv(index=False, float_format=float_format, lineterminator="\\n")`` writes, in
    pieces (the header, then the rows' text as Arrow's buffers: not joined into one more copy), built by
    Arrow's CSV writer from each column's cells as pandas gives them (never quoting: no cell needs it);
    None unless every column is float64, integer, bool or text (str or missing) without a character that
    needs quotes, with at least two columns and one row (then pandas writes it)."""
    names = list(df.columns)
    if len(df) == 0 or len(names) < 2 or not df.columns.is_unique or not all(isinstance(c, str) for c in names):
        return None
    if any(re.search(_QUOTED, c) for c in names):
        return None
    cells = []
    for c in names:
        column = _csv_cells(df[c], float_format)
        if column is None:
            return None
        cells.append(column)
    try:  # a null cell is written empty, as pandas writes a missing value
        rows = _csv_rows(pa.table(cells, names=names))
    except pa.ArrowInvalid:  # (a cell Arrow would have to quote: pandas writes the file)
        return None
    return [(",".join(names) + "\n").encode("utf-8"), *rows]


_BODY = pa_csv.WriteOptions(include_header=False, delimiter=",", quoting_style="none")  # "\n" line ends
# Rows from which a table's rows are written in two halves, the second by a thread meanwhile (Arrow's writer
# releases the interpreter): the health history's ~1M rows at 100k accounts, 0.12 -> 0.06 s
SPLIT_ROWS = 200_000


def _csv_rows(table: pa.Table) -> list[pa.Buffer]:
    """The text of ``table``'s rows by Arrow's CSV writer (:data:`_BODY`); from SPLIT_ROWS rows on, in two
    halves, the second written by a thread meanwhile (the same bytes: each row's text is its own)."""
    if len(table) < SPLIT_ROWS:
        return [_rows_text(table)]
    half = len(table) // 2
    second = Beside(partial(_rows_text, table.slice(half)), "cskit-csv")
    try:
        first = _rows_text(table.slice(0, half))
    finally:
        second.join()  # (no thread outlives a write that failed)
    return [first, second.result()]


def _rows_text(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(table, sink, _BODY)
    return sink.getvalue()


def _csv_cells(column: pd.Series, float_format: str) -> pa.Array | None:
    """One column's cells as pandas' CSV writer gives them (large_string; null = empty), or None."""
    values = column.to_numpy() if isinstance(column.dtype, np.dtype) else None
    if values is None:
        return None
    if values.dtype == np.float64:
        codes, text = _float_text(values, float_format)
        return pc.take(pa.array(text, pa.large_string()), pa.array(codes))
    if values.dtype == np.bool_:
        return pc.take(pa.array(["False", "True"], pa.large_string()), pa.array(values.astype(np.int8)))
    if values.dtype.kind in "iu":
        return pa.array(values).cast(pa.large_string())
    if values.dtype != object:
        return None
    try:
        cells = pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    return None if _needs_quotes(cells) else cells


def _needs_quotes(cells: pa.Array) -> bool:
    """Whether a cell of a large_string array holds a character pandas' writer quotes (the bytes of all
    cells searched at once)."""
    if cells.buffers()[2] is None:  # no character at all
        return False
    offsets = np.frombuffer(cells.buffers()[1], dtype=np.int64)[cells.offset: cells.offset + len(cells) + 1]
    data = bytes(memoryview(cells.buffers()[2])[int(offsets[0]): int(offsets[-1])])
    return any(ch in data for ch in (b",", b'"', b"\r", b"\n"))


def formatted_floats(values: np.ndarray, float_format: str) -> np.ndarray:
    """``float_format % v`` of each float64 value as pandas' CSV writer gives it ("" for NaN), as an object
    array of str (:func:`_float_text`)."""
    codes, text = _float_text(values, float_format)
    return np.array(text, dtype=object)[codes]


def _float_text(values: np.ndarray, float_format: str) -> tuple[np.ndarray, list[str]]:
    """Each distinct bit pattern of the float64 ``values`` formatted once (-0.0 and 0.0 stay apart: "-0"
    and "0"; NaN ""): the values' codes into the list of texts."""
    codes, distinct = pd.factorize(np.ascontiguousarray(values, dtype=np.float64).view(np.int64))
    # (as Python floats: the same text, formatted several times faster than numpy scalars; v != v: NaN)
    return codes, ["" if v != v else float_format % v for v in distinct.view(np.float64).tolist()]


def month_text(dates: pd.Series | np.ndarray) -> np.ndarray:
    """Dates as "YYYY-MM" (object array; NaN where NaT), as ``pd.to_datetime(dates).dt.strftime("%Y-%m")``
    gives them, each distinct date formatted once."""
    codes, distinct = pd.factorize(pd.to_datetime(pd.Series(dates)))
    text = pd.DatetimeIndex(distinct).strftime("%Y-%m").to_numpy(dtype=object)
    return np.append(text, np.nan)[codes]


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` (made :func:`json_safe`) to ``path`` as the result files' JSON."""
    text = json.dumps(json_safe(obj), ensure_ascii=False, indent=2, sort_keys=True, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


class StageResult:
    """What every stage result shows of itself: a one-line ``repr`` and a Markdown summary table
    (``_repr_markdown_``, what JupyterLab displays), both from :meth:`summary_items`.

    A stage result is a dataclass declared ``@dataclass(repr=False)`` that subclasses this and defines
    ``summary_items()`` (a few headline figures: status first, counts, no tables) and
    ``write(results_dir)`` (its files of DESIGN §6). It is not changed after the stage returns it.

    One status vocabulary, in results and files alike: ``"fitted"`` (the model or check was estimated)
    or ``"not_estimable"`` (too few events, no usable KPI, no convergence…) with a ``reason`` beside it.
    Room is left for a ``notices`` attribute (coded notices, :mod:`cskit.notices`) on every result.
    """

    def summary_items(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={_short(v)}" for k, v in self.summary_items().items())
        return f"{type(self).__name__}({items})"

    def _repr_markdown_(self) -> str:
        rows = "\n".join(f"| {k} | {_short(v)} |" for k, v in self.summary_items().items())
        return f"**{type(self).__name__}**\n\n| | |\n|---|---|\n{rows}\n"


def _short(v: Any) -> str:
    """A value as a summary cell: floats to 4 significant digits, strings quoted."""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return repr(v)
