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
PHASE_HEAD = {"ja": "取引フェーズ", "en": "Phase"}
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
    """potential.xlsx as seed 000 shows it: a title block (client, as-of month, horizon, currency,
    improvement %), then the table with merged phase and category cells, the column names of the
    HTML report, shares (e.g. open rates) as percentages, currency amounts, an amount whose 95%
    interval crosses zero in grey with a legend saying so; the caveat and notes under the table;
    landscape, one page wide, the header repeated on every page; a second sheet with every interval.
    The ``created`` property is fixed, so the bytes depend on the data only. ``amounts`` are the
    table's currency columns, in the order of the sheet (``potential.COLUMNS``)."""
    import xlsxwriter

    from cskit.narrative import (
        POTENTIAL_HEAD,
        not_actionable_label,
        notice,
        potential_title_lines,
    )

    lang, t = pot.language, pot.table
    wb = xlsxwriter.Workbook(str(path))
    wb.set_properties({"created": FIXED_CREATED})
    title = wb.add_format({"bold": True, "font_size": 14})
    sub = wb.add_format({"font_color": "#404040"})
    head = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True, "valign": "vcenter",
                          "align": "center"})
    text = wb.add_format({"border": 1, "valign": "vcenter", "text_wrap": True})
    num = wb.add_format({"border": 1, "num_format": "#,##0.00"})
    share = wb.add_format({"border": 1, "num_format": "0.0%"})
    points = wb.add_format({"border": 1, "num_format": '+0.0"pt";-0.0"pt"'})
    money = wb.add_format({"border": 1, "num_format": currency_format(pot.currency)})
    unsure = wb.add_format({"border": 1, "num_format": currency_format(pot.currency), "font_color": "#A6A6A6",
                            "italic": True})
    wrap = wb.add_format({"text_wrap": True, "valign": "top"})
    grey_note = wb.add_format({"text_wrap": True, "valign": "top", "font_color": "#7F7F7F", "italic": True})

    ws = wb.add_worksheet("改善ポテンシャル" if lang == "ja" else "Improvement potential")
    pct = f"{pot.improvement_pct:g}"
    ja_head = POTENTIAL_HEAD[lang]
    headers = [PHASE_HEAD[lang], ja_head[1], ja_head[0], ja_head[2], f"{ja_head[3]}（{pct}%）" if lang == "ja"
               else f"{ja_head[3]} ({pct}%)", *ja_head[4:]]
    top, sub_line = potential_title_lines(pot.heading, pot.currency, pot.improvement_pct, lang)
    ws.write_string(0, 0, top, title)
    ws.write_string(1, 0, sub_line, sub)
    h0 = 3  # the table's header row
    ws.write_row(h0, 0, headers, head)
    ws.set_row(h0, 32)
    widths = [max(6, min(display_width(h), 16)) for h in headers]
    phases = pot.phases or [""] * len(t)
    _merged_column(ws, 0, phases, text, widths, first=h0 + 1)
    _merged_column(ws, 1, t["category"].tolist(), text, widths, first=h0 + 1)
    rates = set(pot.heading.get("rates", ()))
    greyed = 0
    for r, row in enumerate(t.itertuples(index=False), start=h0 + 1):
        label = not_actionable_label(row.kpi, row.label, pot.improvement_pct, lang)
        ws.write_string(r, 2, label, text)
        widths[2] = max(widths[2], min(display_width(label), 40))
        if display_width(label) > 40:
            ws.set_row(r, 15 * math.ceil(display_width(label) / 40))
        if row.kpi in rates:  # a share: the mean as a percentage, the improvement in points (as in the HTML)
            _number(ws, r, 3, row.mean, share)
            _number(ws, r, 4, 100 * row.improvement, points)
        else:
            _number(ws, r, 3, row.mean, num)
            _number(ws, r, 4, row.improvement, num)
        for c, v in ((3, row.mean), (4, row.improvement)):
            widths[c] = max(widths[c], len(f"{v:,.2f}") if np.isfinite(v) else 0)
        for c, col in enumerate(amounts, start=5):
            v, lo, hi = getattr(row, col), getattr(row, f"{col}_lo"), getattr(row, f"{col}_hi")
            cross = np.isfinite(lo) and np.isfinite(hi) and lo <= 0 <= hi
            greyed += bool(cross and np.isfinite(v))
            _number(ws, r, c, v, unsure if cross else money)
            widths[c] = max(widths[c], len(_amount_text(v, pot.currency)))
    for c, w in enumerate(widths):
        ws.set_column(c, c, w + 2)
    ws.freeze_panes(h0 + 1, 3)
    r = h0 + len(t) + 2
    labels = dict(zip(t["kpi"], t["label"]))
    legend = ("灰色の斜体の金額は95%区間がゼロをまたぎ、ゼロと区別できません（区間は「95%区間」シート）。"
              "ダウングレード損失・解約損失はマイナスが損失の減少（改善）です。" if lang == "ja" else
              "Grey italic amounts have a 95% interval that crosses zero: not distinguishable from zero (intervals "
              "on the '95% intervals' sheet). For downgrade and churn losses, negative means smaller losses (better).")
    lines = [(legend, grey_note)] + [(line, wrap) for line in
                                     [pot.caveat, *(notice(pot.notes[k], lang, labels) for k in sorted(pot.notes))]]
    total = sum(widths) + 2 * len(widths)
    for line, fmt in lines:
        ws.merge_range(r, 0, r, len(headers) - 1, line, fmt)
        ws.set_row(r, 15 * max(1, math.ceil(display_width(line) / total)))
        r += 1
    ws.set_landscape()
    ws.set_paper(9)  # A4
    ws.fit_to_pages(1, 0)  # one page wide, as many pages tall as needed
    ws.repeat_rows(h0)
    ws.set_margins(left=0.4, right=0.4, top=0.5, bottom=0.5)
    ws.print_area(0, 0, r - 1, len(headers) - 1)

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
        ws2.set_column(c, c, min(40, max([display_width(name), *map(display_width, cells)])) + 2)
    ws2.freeze_panes(1, 2)
    ws2.set_landscape()
    ws2.set_paper(9)
    ws2.fit_to_pages(1, 0)
    ws2.repeat_rows(0)
    wb.close()


def _number(ws, r: int, c: int, v: float, fmt) -> None:
    if np.isfinite(v):
        ws.write_number(r, c, float(v), fmt)
    else:
        ws.write_blank(r, c, None, fmt)


def _merged_column(ws, col: int, values: list[str], fmt, widths: list[int], first: int = 1) -> None:
    """Write ``values`` down column ``col`` from row ``first``, merging runs of equal values."""
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            if i - start > 1:
                ws.merge_range(start + first, col, i - 1 + first, col, values[start], fmt)
            else:
                ws.write_string(start + first, col, values[start], fmt)
            widths[col] = max(widths[col], min(display_width(values[start]), 16))
            start = i
