"""What every stage result shares: its files are written one way.

``write_json(obj, path)`` is the one JSON writer of the result files (sorted keys, two-space indent,
UTF-8 without escapes, a final newline, NaN / inf → null, numpy scalars → Python, timestamps → "YYYY-MM"),
so the same results give the same bytes whichever stage wrote them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


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

    The bytes are pandas' ``to_csv(float_format=...)``; its float columns are formatted here first, each
    distinct value once (:func:`formatted_floats`; pandas formats every cell in Python, most of the
    time of a large file such as health_history.csv)."""
    floats = [c for c in df.columns if df[c].dtype == np.float64] if df.columns.is_unique else []
    if floats:
        df = df.copy(deep=False)  # the caller's frame keeps its columns
        for c in floats:
            df[c] = formatted_floats(df[c].to_numpy(), float_format)
    df.to_csv(path, index=False, float_format=float_format, lineterminator="\n", encoding="utf-8")


def formatted_floats(values: np.ndarray, float_format: str) -> np.ndarray:
    """``float_format % v`` of each float64 value as pandas' CSV writer gives it ("" for NaN), as an object
    array of str: each distinct bit pattern is formatted once (-0.0 and 0.0 stay apart: "-0" and "0")."""
    codes, distinct = pd.factorize(np.ascontiguousarray(values, dtype=np.float64).view(np.int64))
    distinct = distinct.view(np.float64)
    text = np.array(["" if np.isnan(v) else float_format % v for v in distinct], dtype=object)
    return text[codes]


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
