"""Excel workbooks: potential.xlsx as seed 000 shows it (DESIGN §6).

Byte-reproducible: the workbook's ``created`` property is fixed, so the bytes depend on the data only.
"""
from __future__ import annotations

import datetime as dt
import math
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cskit.potential import Potential

FIXED_CREATED = dt.datetime(2000, 1, 1)
_HEADERS = {
    "ja": ["取引フェーズ", "指標カテゴリ", "指標", "平均値", "{pct}%改善値", "LTV", "Expansion Revenue",
           "New Revenue", "Downgrade Revenue", "Churn Revenue"],
    "en": ["Phase", "KPI category", "KPI", "Mean", "{pct}% improvement", "LTV", "Expansion revenue",
           "New revenue", "Downgrade revenue", "Churn revenue"],
}
_INTERVAL_SHEET = {"ja": "95%区間", "en": "95% intervals"}
_SYMBOLS = {"JPY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "CNY": "¥", "KRW": "₩", "INR": "₹"}


def currency_format(currency: str) -> str:
    """Excel number format for whole amounts of ``currency``: "¥"#,##0 for JPY, "$"#,##0 for USD, …,
    otherwise #,##0 followed by the ISO code; negatives with a leading minus (-¥1,234)."""
    sym = _SYMBOLS.get(currency)
    pos = f'"{sym}"#,##0' if sym else f'#,##0" {currency}"'
    return f"{pos};-{pos}"


def display_width(text: str) -> int:
    """Column units of ``text`` in Excel: 2 per full-width (East Asian wide) character, 1 otherwise."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _amount_text(v: float, currency: str) -> str:
    return "" if not np.isfinite(v) else f"{_SYMBOLS.get(currency, '')}{v:,.0f}"


def write_potential_xlsx(pot: Potential, path: Path, *, amounts: tuple[str, ...]) -> None:
    """potential.xlsx as seed 000 shows it: merged phase and category cells, currency amounts,
    frozen header, widths that fit Japanese; the caveat and notes under the table; a second sheet
    with the 95% intervals. The ``created`` property is fixed, so the bytes depend on the data only.
    ``amounts`` are the table's currency columns, in the order of the sheet (``potential.COLUMNS``)."""
    import xlsxwriter

    lang, t = pot.language, pot.table
    wb = xlsxwriter.Workbook(str(path))
    wb.set_properties({"created": FIXED_CREATED})
    head = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True, "valign": "vcenter"})
    text = wb.add_format({"border": 1, "valign": "vcenter"})
    num = wb.add_format({"border": 1, "num_format": "#,##0.00"})
    money = wb.add_format({"border": 1, "num_format": currency_format(pot.currency)})
    wrap = wb.add_format({"text_wrap": True, "valign": "top"})

    ws = wb.add_worksheet("改善ポテンシャル" if lang == "ja" else "Improvement potential")
    headers = [h.format(pct=f"{pot.improvement_pct:g}") for h in _HEADERS[lang]]
    ws.write_row(0, 0, headers, head)
    widths = [display_width(h) for h in headers]
    phases = pot.phases or [""] * len(t)
    _merged_column(ws, 0, phases, text, widths)
    _merged_column(ws, 1, t["category"].tolist(), text, widths)
    for r, row in enumerate(t.itertuples(index=False), start=1):
        ws.write_string(r, 2, row.label, text)
        widths[2] = max(widths[2], display_width(row.label))
        for c, v, fmt in ((3, row.mean, num), (4, row.improvement, num)):
            _number(ws, r, c, v, fmt)
            widths[c] = max(widths[c], len(f"{v:,.2f}") if np.isfinite(v) else 0)
        for c, col in enumerate(amounts, start=5):
            v = getattr(row, col)
            _number(ws, r, c, v, money)
            widths[c] = max(widths[c], len(_amount_text(v, pot.currency)))
    for c, w in enumerate(widths):
        ws.set_column(c, c, w + 2)
    ws.freeze_panes(1, 0)
    r = len(t) + 2
    from cskit.narrative import notice

    labels = dict(zip(t["kpi"], t["label"]))
    for line in [pot.caveat, *(notice(pot.notes[k], lang, labels) for k in sorted(pot.notes))]:
        ws.merge_range(r, 0, r, len(headers) - 1, line, wrap)
        ws.set_row(r, 15 * max(1, math.ceil(display_width(line) / (sum(widths) + 2 * len(widths)))))
        r += 1

    ws2 = wb.add_worksheet(_INTERVAL_SHEET[lang])
    cols = list(t.columns)
    ws2.write_row(0, 0, cols, head)
    for r, row in enumerate(t.itertuples(index=False), start=1):
        for c, (name, v) in enumerate(zip(cols, row)):
            if isinstance(v, str):
                ws2.write_string(r, c, v, text)
            else:
                _number(ws2, r, c, v, money if name.startswith("d_") else num)
    for c, name in enumerate(cols):
        cells = t[name].map(lambda v: v if isinstance(v, str) else _amount_text(v, pot.currency))
        ws2.set_column(c, c, max([display_width(name), *map(display_width, cells)]) + 2)
    ws2.freeze_panes(1, 1)
    wb.close()


def _number(ws, r: int, c: int, v: float, fmt) -> None:
    if np.isfinite(v):
        ws.write_number(r, c, float(v), fmt)
    else:
        ws.write_blank(r, c, None, fmt)


def _merged_column(ws, col: int, values: list[str], fmt, widths: list[int]) -> None:
    """Write ``values`` down column ``col`` from row 1, merging runs of equal values."""
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            if i - start > 1:
                ws.merge_range(start + 1, col, i, col, values[start], fmt)
            else:
                ws.write_string(start + 1, col, values[start], fmt)
            widths[col] = max(widths[col], display_width(values[start]))
            start = i
