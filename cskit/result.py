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


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` (made :func:`json_safe`) to ``path`` as the result files' JSON."""
    text = json.dumps(json_safe(obj), ensure_ascii=False, indent=2, sort_keys=True, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")
