"""``cskit run``'s fail-fast check before the notebook starts, without doing the kernel's work twice.

The kernel loads the data and builds the panel anyway (``cskit.analyse``), so the CLI only makes sure
the run will not stop at once: for a folder of CSVs it reads the headers of revenue.csv and kpis.csv
and the (small) accounts table, checks the required columns (the loader's own ``_prepare``) and that
some account churned by as_of. Whenever that quick look finds anything wrong, or the source is a
workbook, a database or an events log, it runs the full check (``load_client`` + ``build_panel`` +
``require_churn``), so every message is the loader's complete one, given before the notebook starts.
Problems only the full load can see (row-level) stop the kernel with the same CskitError (exit 2).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from cskit.params import Params, resolve_data_path


def check_data(params: Params) -> None:
    """Raise :class:`cskit.errors.CskitError` (every problem at once) when the run would stop on bad
    data or on no churn at all; ``params.data`` must be absolute (``pipeline.absolute_data``)."""
    try:
        looks_fine = _quick_look(params)
    except Exception:  # noqa: BLE001 - anything odd: the full check says what it is
        looks_fine = False
    if not looks_fine:
        full_check(params)


def full_check(params: Params) -> None:
    """Load the data and build the panel, as the kernel will (raises CskitError)."""
    from cskit.loading import load_client
    from cskit.panel import build_panel
    from cskit.pipeline import require_churn

    data = load_client(params)
    require_churn(build_panel(data), data)


def _quick_look(params: Params) -> bool:
    from cskit.loading import REQUIRED_TABLES, _prepare, _read_csv, _Report, parse_dates

    source = resolve_data_path(params.data, None)
    if params.events_kpis or not (isinstance(source, Path) and source.is_dir()):
        return False
    files = {p.name.lower(): p for p in source.iterdir() if p.is_file()}
    if any(f"{name}.csv" not in files for name in REQUIRED_TABLES):
        return False
    report = _Report()
    for name in REQUIRED_TABLES:
        mapping = dict(params.columns.get(name, {}))
        if name == "accounts":
            frame = _read_csv(files["accounts.csv"], report)
            if frame is None:
                return False
            accounts = _prepare(name, frame, mapping, report)
        else:
            _prepare(name, pd.DataFrame(columns=_header(files[f"{name}.csv"])), mapping, report)
    if report.fatal or "churn_date" not in accounts:
        return False
    churn, _ = parse_dates(accounts["churn_date"])
    churn = churn[~np.isnat(churn)]
    if params.as_of is not None:
        as_of = pd.Timestamp(params.as_of).to_period("M").to_timestamp("M").to_datetime64()
        churn = churn[churn <= as_of]
    return len(churn) > 0


def _header(path: Path) -> list[str]:
    """The first row of a UTF-8 CSV (raises on anything else: the full check then reads it)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f))
