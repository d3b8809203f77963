"""The report's words, in Japanese or English, written from the computed results (never typed in).

Each function takes result tables (the DataFrames / dicts the stages produce, with the columns of
DESIGN §6) and returns Markdown for ``IPython.display.Markdown``. The rules the text follows:
effects always come with their 95% interval; every trigger list names the false-discovery control
and the event count behind it; a null result with few events is called "not enough data", not "no
link"; and association is never written as causation.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

SYMBOL = {"JPY": "¥", "USD": "$", "EUR": "€", "GBP": "£"}
OUTCOME_TRIGGER = {"churn": "RT", "renewal": "CRTT", "expansion": "UCT"}

W = {
    "ja": {
        "none": "—",
        "table": "表",
        "read": "読込",
        "used": "使用",
        "excluded": "除外",
        "reasons": "除外理由",
        "quality_intro": "読み込んだ行はすべて、使用したか、理由を付けて除外したかのどちらかです（読込 = 使用 + 除外）。",
        "no_warnings": "データに関する警告はありません。",
        "warnings": "データに関する警告",
        "metric": "指標",
        "value": "値",
        "period": "期間",
        "note": "備考",
    },
    "en": {
        "none": "—",
        "table": "Table",
        "read": "Read",
        "used": "Used",
        "excluded": "Excluded",
        "reasons": "Reasons for exclusion",
        "quality_intro": "Every row read was either used or excluded with a reason (read = used + excluded).",
        "no_warnings": "No data warnings.",
        "warnings": "Data warnings",
        "metric": "Metric",
        "value": "Value",
        "period": "Period",
        "note": "Note",
    },
}

METRIC_LABELS = {
    "mrr": ("MRR（月次経常収益）", "MRR (monthly recurring revenue)", "money"),
    "arr": ("ARR（年換算, MRR × 12）", "ARR (MRR × 12)", "money"),
    "paying_accounts": ("課金アカウント数", "Paying accounts", "count"),
    "arpa": ("ARPA（1アカウントあたり月次収益）", "ARPA (MRR per paying account)", "money"),
    "customer_churn_rate": ("顧客解約率（月次, 直近12か月）", "Customer churn rate (monthly, last 12 months)", "pct"),
    "retention_rate": ("顧客継続率（月次）", "Customer retention rate (monthly)", "pct"),
    "revenue_churn_rate_start_base": (
        "収益解約率（月初MRR基準）", "Revenue churn rate (base: MRR at month start)", "pct"),
    "revenue_churn_rate_remaining_base": (
        "収益解約率（残存MRR基準）", "Revenue churn rate (base: remaining MRR)", "pct"),
    "gross_revenue_churn": ("グロス収益解約率（解約＋縮小）", "Gross revenue churn (churn + contraction)", "pct"),
    "net_revenue_churn": ("ネット収益解約率（拡大・再開を差引）", "Net revenue churn (less expansion, reactivation)", "pct"),
    "grr": ("GRR（12か月）", "GRR (12 months)", "pct"),
    "nrr": ("NRR（12か月）", "NRR (12 months)", "pct"),
    "upsell_cross_sell_rate": (
        "アップセル・クロスセル率（12か月）", "Up-sell / cross-sell rate (12 months)", "pct"),
    "onboarding_completion_rate": ("オンボード完了率", "Onboarding completion rate", "pct"),
    "ltv_simple": ("LTV（簡易: ARPA × 粗利率 ÷ 月次収益解約率）",
                   "LTV (simple: ARPA × margin ÷ monthly revenue churn)", "money"),
    "ltv_survival": ("LTV（生存モデル: 1アカウントあたり平均）",
                     "LTV (survival model: mean per account)", "money"),
    "nps": ("NPS（直近12か月）", "NPS (last 12 months)", "points"),
}


def money(value: Any, currency: str = "JPY") -> str:
    """``¥1,234,567`` (symbol for common currencies, else ``1,234,567 CHF``); ``—`` when missing."""
    if not _finite(value):
        return "—"
    v = float(value)
    sign = "-" if v < 0 else ""
    if currency in SYMBOL:
        return f"{sign}{SYMBOL[currency]}{abs(v):,.0f}"
    return f"{sign}{abs(v):,.0f} {currency}"


def pct(value: Any, digits: int = 1) -> str:
    """A share as a percentage (0.153 → ``15.3%``); ``—`` when missing."""
    return f"{100 * float(value):.{digits}f}%" if _finite(value) else "—"


def ratio(value: Any) -> str:
    """A hazard or odds ratio with two decimals."""
    return f"{float(value):.2f}" if _finite(value) else "—"


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _fmt(value: Any, kind: str, currency: str) -> str:
    if kind == "money":
        return money(value, currency)
    if kind == "pct":
        return pct(value)
    if kind == "points":
        return f"{float(value):.1f}" if _finite(value) else "—"
    return f"{int(value):,}" if _finite(value) else "—"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def quality(q: dict, language: str = "ja") -> str:
    """Rows read / used / excluded per table and reason, then the loader's warnings (quality.json)."""
    w = W[language]
    rows = []
    for name in sorted(q.get("tables", {})):
        t = q["tables"][name]
        reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(t.get("excluded", {}).items())) or w["none"]
        excluded = sum(t.get("excluded", {}).values())
        rows.append([name, f"{t['read']:,}", f"{t['used']:,}", f"{excluded:,}", reasons])
    text = [w["quality_intro"], "", _table([w["table"], w["read"], w["used"], w["excluded"], w["reasons"]], rows)]
    warnings = q.get("warnings", [])
    text += ["", f"**{w['warnings']}**", ""] + [f"- {m}" for m in warnings] if warnings else ["", w["no_warnings"]]
    return "\n".join(text)


def metrics(summary: dict, currency: str = "JPY", language: str = "ja") -> str:
    """The headline KPIs of kpi_summary.json as a table (value, period, note when missing)."""
    w = W[language]
    rows = []
    for key, (ja, en, kind) in METRIC_LABELS.items():
        entry = summary.get(key)
        if not entry:
            continue
        label = ja if language == "ja" else en
        rows.append([label, _fmt(entry.get("value"), kind, currency), entry.get("period", ""), entry.get("note", "")])
    text = _table([w["metric"], w["value"], w["period"], w["note"]], rows)
    start = summary.get("revenue_churn_rate_start_base", {}).get("value")
    remaining = summary.get("revenue_churn_rate_remaining_base", {}).get("value")
    if _finite(start) and _finite(remaining) and abs(start - remaining) > 5e-4:
        text += "\n\n" + (
            f"収益解約率は分母の取り方で値が変わります：月初MRR基準で {pct(start)}、"
            f"解約後の残存MRR基準で {pct(remaining)} です（本レポートの既定は月初MRR基準）。"
            if language == "ja" else
            f"The revenue churn rate depends on its base: {pct(start)} of the MRR at the start of the month, "
            f"{pct(remaining)} of the MRR remaining after churn (this report uses the start-of-month base)."
        )
    simple, surv = summary.get("ltv_simple", {}).get("value"), summary.get("ltv_survival", {}).get("value")
    if _finite(simple) and _finite(surv):
        text += "\n\n" + (
            f"LTVは2通りで示します。簡易式（ARPA × 粗利率 ÷ 月次収益解約率、期間無限）は {money(simple, currency)}、"
            f"解約モデルによる生存確率を使った期待値（期間を区切る）は {money(surv, currency)} です。"
            "改善ポテンシャルの計算には後者を使います。"
            if language == "ja" else
            f"LTV is shown two ways: the simple formula (ARPA × margin ÷ monthly revenue churn, no horizon) gives "
            f"{money(simple, currency)}; the expected value from each account's survival curve (a fixed horizon) "
            f"gives {money(surv, currency)}. The improvement potential uses the latter."
        )
    return text
