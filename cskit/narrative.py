"""The report's words, in Japanese or English, written from the computed results (never typed in).

Each function takes result tables (the DataFrames / dicts the stages produce, with the columns of
DESIGN §6) and returns Markdown for ``IPython.display.Markdown``. The rules the text follows:
effects always come with their 95% interval; every trigger list names the false-discovery control
and the event count behind it; a null result with few events is called "not enough data", not "no
link"; and association is never written as causation.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

SYMBOL = {"JPY": "¥", "USD": "$", "EUR": "€", "GBP": "£"}

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


def amount(value: Any, currency: str = "JPY", language: str = "ja") -> str:
    """An amount for a table or sentence. In a Japanese report, yen as Japanese business writing has
    them: ``1.75億円``, ``9,901万円``, ``25.9万円`` (three significant figures at least), ``1,469円``;
    otherwise :func:`money` (``¥174,652,163``)."""
    if not _finite(value) or language != "ja" or currency != "JPY":
        return money(value, currency)
    v = float(value)
    sign = "-" if v < 0 else ""
    if abs(v) < 1e4:
        return f"{sign}{abs(v):,.0f}円"
    size, unit = (1e8, "億") if abs(v) >= 1e8 else (1e4, "万")
    x = abs(v) / size
    digits = ",.0f" if x >= 100 else ".1f" if x >= 10 else ".2f"
    return f"{sign}{x:{digits}}{unit}円"


def _period(period: Any, language: str) -> str:
    text = "" if period is None else str(period)
    return text.replace("..", "〜") if language == "ja" else text


TABLE_NAMES = {"accounts": "アカウント", "revenue": "売上", "kpis": "KPI", "nps": "NPS", "events": "イベント"}
REASONS = {
    "empty_account_id": "アカウントIDが空",
    "bad_contract_start": "契約開始日が不正",
    "bad_churn_date": "解約日が不正",
    "churn_before_start": "解約日が契約開始より前",
    "after_as_of": "分析基準月より後",
    "duplicate_account_id": "アカウントIDの重複",
    "unknown_account": "未登録のアカウント",
    "account_excluded": "除外したアカウントの行",
    "before_contract_start": "契約開始より前",
    "after_churn": "解約より後",
    "bad_month": "月が不正",
    "bad_mrr": "MRRが不正",
    "negative_mrr": "MRRが負",
    "duplicate_account_month": "アカウント×月の重複",
    "bad_date": "日付が不正",
    "bad_score": "スコアが不正",
    "score_out_of_range": "スコアが0〜10の整数でない",
    "bad_ts": "日時が不正",
}
GROUP_BY = {"all": ("全体", "All"), "segment": ("セグメント", "Segment"), "plan": ("プラン", "Plan"),
            "contract_type": ("契約形態", "Contract type"), "onboarding": ("オンボード", "Onboarding"),
            "role": ("役割", "Role")}
GROUP_VALUES_EN = {"all": "All", "annual": "Annual", "monthly": "Monthly", "completed": "Completed",
                   "not completed": "Not completed", "admin": "Admin", "decision_maker": "Decision maker",
                   "end_user": "End user"}
GROUP_VALUES = {
    "all": "全体", "annual": "年間契約", "monthly": "月次契約", "completed": "完了", "not completed": "未完了",
    "admin": "管理者", "decision_maker": "意思決定者", "end_user": "エンドユーザー", "(none)": "（未記入）",
}


def grouping_name(group_by: str, language: str = "ja") -> str:
    """A grouping (``segment``, ``contract_type`` …) as the report names it, in either language."""
    ja, en = GROUP_BY.get(group_by, (group_by, group_by))
    return ja if language == "ja" else en


def group_name(group: Any, language: str = "ja") -> str:
    """A group value cskit itself writes (``all``, ``annual``, ``completed`` …, and the usual NPS roles)
    in Japanese; a client's own values (segment or plan names) are shown as they are."""
    text = str(group)
    return GROUP_VALUES.get(text, text) if language == "ja" else GROUP_VALUES_EN.get(text, text)


def relabel_groups(curves: pd.DataFrame, language: str = "ja") -> pd.DataFrame:
    """The survival curves with their ``group`` values named for the report (legend labels)."""
    return curves.assign(group=[group_name(g, language) for g in curves["group"]])


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def quality(q: dict, language: str = "ja", labels: dict[str, str] | None = None) -> str:
    """Rows read / used / excluded per table and reason, then the loader's warnings (quality.json)."""
    w = W[language]
    ja = language == "ja"
    rows = []
    for name in sorted(q.get("tables", {})):
        t = q["tables"][name]
        reasons = ", ".join(f"{REASONS.get(r, r) if ja else r}: {n:,}"
                            for r, n in sorted(t.get("excluded", {}).items())) or w["none"]
        excluded = sum(t.get("excluded", {}).values())
        shown = TABLE_NAMES.get(name, name) if ja else name
        rows.append([shown, f"{t['read']:,}", f"{t['used']:,}", f"{excluded:,}", reasons])
    text = [w["quality_intro"], "", _table([w["table"], w["read"], w["used"], w["excluded"], w["reasons"]], rows)]
    warnings = q.get("warnings", [])
    if not warnings:
        return "\n".join(text + ["", w["no_warnings"]])
    return "\n".join(text + ["", explain_warnings(warnings, language, w["warnings"], labels)])


# --------------------------------------------------------------------------------------------------
# Coded notices (cskit.notices.Notice): each code's words in Japanese and English. A template is a
# function of the notice's values (a _Vals, which formats them for the language); English is also the
# notice's own str value and its "message" in result files.

TRIGGER_NAMES = {"churn": "RT", "renewal": "CRTT", "expansion": "UCT"}
OUTCOME_WORDS = {"churn": "解約", "renewal": "契約更新", "expansion": "アップセル・クロスセル", "downgrade": "ダウングレード",
                 "referral": "紹介"}
OUTCOME_WORDS_EN = {"churn": "churn", "renewal": "renewal", "expansion": "expansion", "downgrade": "downgrade",
                    "referral": "referral"}


class _Vals:
    """A notice's values formatted for one language (KPI names through the report's labels)."""

    def __init__(self, values: dict, language: str, labels: dict[str, str] | None):
        self.v, self.language, self.labels = values, language, labels or {}
        self.ja = language == "ja"
        self.sep = "、" if self.ja else ", "

    def __getitem__(self, key: str) -> Any:
        return self.v.get(key)

    def n(self, key: str) -> str:
        x = self.v.get(key)
        return (f"{int(x):,}" if self.ja else f"{int(x)}") if _finite(x) else "—"

    def s(self, key: str) -> str:
        x = self.v.get(key)
        return "" if x is None else str(x)

    def list(self, key: str) -> str:
        x = self.v.get(key) or []
        return self.sep.join(str(i) for i in ([x] if isinstance(x, str) else x))

    def kpi(self, key: str = "kpi") -> str:
        x = self.s(key)
        return self.labels.get(x, x)

    def kpis(self, key: str = "kpis") -> str:
        x = self.v.get(key) or []
        return self.sep.join(self.labels.get(str(i), str(i)) for i in ([x] if isinstance(x, str) else x))

    def table(self, key: str = "table") -> str:
        x = self.s(key)
        return TABLE_NAMES.get(x, x) if self.ja else x

    def outcome(self, key: str = "outcome") -> str:
        x = self.s(key)
        return (OUTCOME_WORDS if self.ja else OUTCOME_WORDS_EN).get(x, x)

    def outcomes(self, key: str = "outcomes") -> str:
        x = self.v.get(key) or []
        words = OUTCOME_WORDS if self.ja else OUTCOME_WORDS_EN
        return self.sep.join(words.get(str(i), str(i)) for i in ([x] if isinstance(x, str) else x))

    def sub(self, key: str) -> str:
        """A nested notice (e.g. why a KPI left a model), rendered in the same language."""
        x = self.v.get(key)
        if isinstance(x, dict) and "code" in x:
            return notice_text(x["code"], x.get("values", {}), self.language, self.labels)
        if hasattr(x, "code") and hasattr(x, "values"):
            return notice_text(x.code, x.values, self.language, self.labels)
        return "" if x is None else str(x)

    def subs(self, key: str) -> str:
        x = self.v.get(key) or []
        out = []
        for item in x:
            out.append(_Vals({"r": item}, self.language, self.labels).sub("r"))
        return ("；" if self.ja else "; ").join(out)


def _s(n: Any) -> str:
    """English plural ending for a count."""
    try:
        return "" if int(n) == 1 else "s"
    except (TypeError, ValueError):
        return "s"


def _left_out_fix(v: _Vals) -> str:
    reason = v["reason"]
    code = getattr(reason, "code", None) or (reason.get("code") if isinstance(reason, dict) else None)
    if code in ("kpi_collinear", "kpi_near_linear"):
        return ("Its effect is carried by the KPI(s) named; to tell them apart, keep only one of them "
                "in the kpis table or combine them.")
    if code == "kpi_value_pair":
        return "No action needed: the value column stands for the pair."
    if code == "kpi_mostly_missing":
        return (f"KPIs missing in more than {float(v['max_missing']):.0%} of the rows are left out; fill the column "
                "in the kpis table or leave it out.")
    return "Check the column in the kpis table."


def _carriers(v: _Vals) -> str:
    if v["carriers"]:
        return v.kpis("carriers")
    return "セグメント・契約形態" if v.ja else "segment / contract type"


def _sampled_models(v: _Vals) -> str:
    """The models of a "model_rows_sampled" note (``outcomes``; ``model`` "validation": the out-of-time
    validation's model, fitted on the months up to ``cut``)."""
    if v["model"] == "validation":
        if v.ja:
            return f"時系列検証（{v.s('cut')}までのデータ）の{v.outcomes()}モデル"
        return f" ({v.outcomes()}: the out-of-time validation's model, months up to {v.s('cut')})"
    if v.ja:
        return f"{v.outcomes()}のモデル" if v["outcomes"] else "このモデル"
    return f" ({v.outcomes()})" if v["outcomes"] else ""


def _sampled_rare(v: _Vals) -> str:
    rows, events = int(v["rows"] or 0), int(v["events"] or 0)
    n = min(events, rows - events)
    return f"{n:,}" if v.ja else f"{n}"


def _what_events(v: _Vals) -> str:
    return "non-renewals" if v["outcome"] == "renewal" else f"{v['outcome']} events"


def _missing_effects(v: _Vals) -> str:
    return v.sep.join(f"{(OUTCOME_WORDS if v.ja else OUTCOME_WORDS_EN).get(e['outcome'], e['outcome'])} "
                      f"{e['effect']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]" for e in (v["effects"] or []))


NOTICE_TEXT: dict[str, tuple[Any, Any]] = {
    # ---- load
    "rows_excluded": (
        lambda v: f"{v.table()}の{v.s('column')}: {v.n('n')}行を除外しました（{REASONS.get(v.s('reason'), v.s('reason'))}。"
                  f"例: {v.s('examples')}）。",
        lambda v: f"{v.s('table')}.{v.s('column')}: {v.n('n')} row(s) excluded ({v.s('reason')}): {v.s('what')} "
                  f"(e.g. {v.s('examples')}). Fix: {v.s('fix')}"),
    "cells_blanked": (
        lambda v: f"{v.table()}の{v.s('column')}: 数値として読めないセルが{v.n('n')}件あり"
                  f"{'（例: ' + v.s('examples') + '）' if v.s('examples') else ''}、"
                  "未計測（空欄）として扱いました。行はそのまま使っています。",
        lambda v: f"{v.s('table')}.{v.s('column')}: {v.n('n')} cell(s) are not numbers"
                  f"{' (e.g. ' + v.s('examples') + ')' if v.s('examples') else ''}; "
                  "they were treated as not measured (empty) and their rows kept. "
                  "Fix: correct them in the source, or leave the cell empty."),
    "mapping_missing": (
        lambda v: f"{v.table()}: パラメータの columns.{v.s('table')} で「{v.s('source')}」を「{v.s('target')}」に対応付けて"
                  f"いますが、その列がありません（列: {v.list('columns')}）。params の列名を確認してください。",
        lambda v: f"{v.s('table')}: params columns.{v.s('table')} maps {v.s('source')!r} -> {v.s('target')!r} but "
                  f"{v.s('table')} has no column {v.s('source')!r} (columns: {v.list('columns')}). "
                  "Fix: correct the header in params."),
    "churn_after_as_of": (
        lambda v: f"{v.n('n')}件のアカウントは分析基準月（{v.s('as_of')}）より後に解約しているため（例: {v.s('examples')}）、"
                  "基準月の時点では契約中として扱いました。",
        lambda v: f"accounts.churn_date: {v.n('n')} account(s) churn after the analysis month as_of={v.s('as_of')} "
                  f"(e.g. {v.s('examples')}); they count as active at as_of. Fix: nothing, if as_of is right."),
    "static_kpi_empty": (
        lambda v: f"アカウント表の{v.kpi('column')}の列には数値がないため、KPIとして使っていません。",
        lambda v: f"accounts.{v.s('column')}: the column has no numeric values; this static KPI is not used. "
                  "Fix: fill it or drop the column."),
    "unknown_contract_type": (
        lambda v: f"契約形態が読めない行が{v.n('n')}件あり（例: {v.s('examples')}）、月次契約として扱いました。"
                  "monthly か annual（月額・年額も可）と記入してください。",
        lambda v: f"accounts.contract_type: {v.n('n')} row(s) have an unknown contract type (e.g. {v.s('examples')}); "
                  "they were treated as monthly. Fix: use 'monthly' or 'annual' (月額 / 年額 are understood too)."),
    "unknown_referrer": (
        lambda v: f"紹介元が存在しないアカウント（または自分自身）になっている紹介が{v.n('n')}件あり（例: {v.s('examples')}）、"
                  "無視しました。",
        lambda v: f"accounts.referred_by: {v.n('n')} referral(s) name an account that is not in accounts (or the "
                  f"account itself) (e.g. {v.s('examples')}); they were ignored. Fix: use an existing account_id."),
    "duplicate_revenue_lines": (
        lambda v: f"同じアカウント・月・商品の売上行が{v.n('n')}行あり、MRRを合算しました（例: {v.s('examples')}）。"
                  "別々の請求行であれば対応は不要です。",
        lambda v: f"revenue.mrr: {v.n('n')} row(s) share an account x month x product with another row; their mrr "
                  f"was summed (e.g. {v.s('examples')}). Fix: nothing if these are separate invoice lines; if they "
                  "are copies of one line, delete the copies."),
    "contract_months_ignored": (
        lambda v: "KPI表の契約月数の列は使っていません（契約月数は契約開始日から計算します）。",
        lambda v: "kpis.contract_months: ignored; cskit derives contract months from contract_start. "
                  "Fix: nothing (or drop the column)."),
    "kpi_column_empty": (
        lambda v: f"KPI表の{v.kpi('column')}の列には値がないため、KPIとして使っていません。",
        lambda v: f"kpis.{v.s('column')}: the column has no values; this KPI is not used. "
                  "Fix: fill it or drop the column."),
    "churn_at_anniversaries": (
        lambda v: f"契約開始から11か月以上の解約{v.n('churns')}件のうち{v.n('n')}件（{pct(v['share'])}）が契約開始日の"
                  "応当月かその前月（契約期間の末日）に集中しています（月次更新なら、各アカウントの在籍月から見て"
                  f"{pct(v['expected'])}）が、年契約のアカウントがありません"
                  "（contract_type が無いか、すべて月額）。年契約のように見えます。このままでは更新月の解約を"
                  "季節性として扱います。accounts に contract_type（annual / monthly）を追加するか、params の "
                  "columns で貴社の列を対応付けてください。",
        lambda v: f"{v.n('n')} of {v.n('churns')} churns of accounts 11+ months old ({pct(v['share'])}) fall at an "
                  "anniversary of contract_start (its month or the month before, a term's last day; "
                  f"{pct(v['expected'])} if contracts renewed monthly, from each account's months at risk), yet no "
                  "account is annual (contract_type missing or all monthly): "
                  "these look like annual contracts, and the models would read their renewals as a churn season. "
                  "Fix: add contract_type (annual / monthly) to accounts, or map the client's column in params "
                  "columns."),
    "ids_leading_zeros": (
        lambda v: f"{v.table()}のaccount_id: 未登録として除外した{v.n('n')}行は、先頭の0を除けばアカウント表のIDと"
                  f"一致します（例: こちらは'{v.s('example')}'、アカウント表は'{v.s('listed')}'）。Excelなどが数値に"
                  "見えるIDの先頭の0を落とした可能性があります。すべての表でIDを同じ書式（文字列）にして再実行してください。",
        lambda v: f"{v.s('table')}.account_id: {v.n('n')} row(s) whose id is not in accounts match one of its ids but "
                  f"for leading zeros (e.g. '{v.s('example')}' here, '{v.s('listed')}' in accounts): a spreadsheet drops "
                  "the zeros of ids that look like numbers. Fix: write the ids the same way in every table (format "
                  "the column as text before exporting), then run again."),
    "kpi_column_text": (
        lambda v: f"KPI表の{v.kpi('column')}の列は、値のある{v.n('n')}セルがどれも数値ではない"
                  f"（例: {v.s('examples')}）ため、KPIとして使っていません。数値で記入してください。",
        lambda v: f"kpis.{v.s('column')}: none of its {v.n('n')} filled cell(s) is a number (e.g. {v.s('examples')}); "
                  "this KPI is not used. Fix: write the values as numbers (a label column can be dropped)."),
    "text_columns_ignored": (
        lambda v: f"KPI表の{v.n('n')}列は大半が文字列のため、KPIとして使っていません: {v.list('columns')}。",
        lambda v: f"kpis: {v.n('n')} column(s) are mostly text, not numbers, and were not used as KPIs: "
                  f"{v.list('columns')}. Fix: nothing if they are labels; otherwise correct their values."),
    "as_of_defaulted": (
        lambda v: f"分析基準月が指定されていないため、売上データの最終月（{v.s('as_of')}）を基準月にしました。",
        lambda v: f"as_of is not set in params: using {v.s('as_of')}, the last month in revenue. "
                  "Fix: set as_of: YYYY-MM-DD in params to choose the analysis month."),
    "annual_recent_mean": (
        lambda v: f"年間契約の更新は、直前月の値より直近{v.n('months')}か月の平均で説明した方がよく当てはまるため"
                  f"（対数尤度 {float(v['loglik_recent_mean']):.1f} 対 {float(v['loglik_last_month']):.1f}、"
                  f"更新時の解約{v.n('events')}件）、年間契約の解約・更新モデルでは各KPIの直近{v.n('months')}か月平均を使っています。",
        lambda v: f"Annual renewals are explained better by each KPI's mean over the last {v.n('months')} months "
                  f"than by last month's value (log-likelihood {float(v['loglik_recent_mean']):.1f} vs "
                  f"{float(v['loglik_last_month']):.1f} on {v.n('events')} churns at renewal): the churn and "
                  f"renewal models give annual contracts' decisions the {v.n('months')}-month mean."),
    "seasonal_churn": (
        lambda v: f"解約には月による季節性があります（{v.n('peak_month')}月の解約ハザードは平均的な月の"
                  f"{ratio(v['hazard_ratio'])}倍、月の効果の検定 p = {v['p_value']:.2g}）。"
                  "解約・更新のモデルは暦月で調整しているため、同じ季節に増減するだけのKPIはトリガーになりません。",
        lambda v: f"Churn is seasonal: the churn hazard in month {v.n('peak_month')} is "
                  f"{ratio(v['hazard_ratio'])}× that of an average month (test of month-of-year effects, "
                  f"p = {v['p_value']:.2g}). The churn and renewal models adjust for the calendar month, so a KPI "
                  "that merely moves with the season is not a trigger."),
    "left_truncation": (
        lambda v: f"{v.n('accounts')}社のうち{v.n('n')}社（{pct(v['share'], 0)}）は、データの最初の月"
                  f"（{v.s('first_month')}）より前に契約を開始しています。"
                  + ("その前に解約した顧客は一社も含まれていないため、この期間に契約中だった顧客だけが出力されているようです。"
                     if v["only_active_listed"] else "")
                  + "これらの顧客は最初のデータ月から解約モデルに入れています（遅延エントリー。契約月数は契約開始日から数えます）。"
                  "それ以前の売上・KPIがあれば含めてください。",
        lambda v: f"{v.n('n')} of {v.n('accounts')} accounts ({pct(v['share'], 0)}) started before the first data "
                  f"month {v.s('first_month')}."
                  + (" None of them ended before it: the export seems to list only the accounts active in the "
                     "window, so accounts lost earlier are missing." if v["only_active_listed"] else "")
                  + " They enter the churn models from that month (delayed entry), with tenure still counted "
                  "from contract_start. Fix: if earlier revenue and KPI months exist, include them."),
    "events_unused": (
        lambda v: f"イベントログ（{v.s('file')}）は、params の events_kpis が空のため使用していません。",
        lambda v: f"events: {v.s('file')} was not used: params events_kpis is empty. Fix: nothing, or declare the "
                  "KPIs to compute from it under events_kpis (see params/template.yaml)."),
    "tables_ignored": (
        lambda v: f"入力仕様にない表（{v.list('tables')}）は読み込んでいません。",
        lambda v: f"tables {v.list('tables')} are not part of the input contract and were ignored."),
    "read_as_shift_jis": (
        lambda v: f"{v.list('file')} はShift_JIS（cp932）として読み込みました（結果への影響はありません）。",
        lambda v: f"{v.list('file')} was read as Shift_JIS (cp932), not UTF-8. "
                  "Fix: nothing needed; saving as 'CSV UTF-8' avoids any doubt about the encoding."),
    "read_with_pandas": (
        lambda v: f"{v.s('file')} はDuckDBで読み込めなかったため、pandasで読み込みました（表の内容を確認してください）。",
        lambda v: f"{v.s('file')}: DuckDB could not parse it ({v.s('why')}); it was read with pandas instead. "
                  "Fix: nothing needed if the tables look right."),
    # ---- models: why a KPI is not in a model
    "kpi_never_measured": (lambda v: "一度も計測されていない", lambda v: "never measured"),
    "kpi_constant": (
        lambda v: "値が一定で推定できない",
        lambda v: "constant (no variation): nothing to estimate"),
    "kpi_rare": (
        lambda v: f"通常の値（{float(v['value']):g}）と異なるのが{v.n('accounts')}アカウントだけで、効果を推定できない",
        lambda v: f"departs from its usual value ({float(v['value']):g}) on only {v.n('accounts')} account(s): "
                  "too few to estimate"),
    "kpi_mostly_missing": (
        lambda v: f"モデルに使う行の{float(v['share']):.0%}で欠測",
        lambda v: f"missing in {float(v['share']):.0%} of the model rows"),
    "kpi_collinear": (
        lambda v: f"{v.kpi('partner')}とほぼ同じ動きをする（相関 {float(v['r']):.2f}）ため、効果は{v.kpi('partner')}の側に表れる",
        lambda v: f"collinear with {v.s('partner')} (r = {float(v['r']):.2f}): its effect is reported under {v.s('partner')}"),
    "kpi_near_linear": (
        lambda v: f"{_carriers(v)}の組み合わせでほぼ決まる（R² = {float(v['r2']):.2f}）ため、効果を切り分けられない",
        lambda v: f"a near-linear combination of {_carriers(v)} (R² = {float(v['r2']):.2f}): its effect cannot be "
                  "separated from theirs"),
    "kpi_value_pair": (
        lambda v: f"{v.kpi('value')}と同じ月にだけ0になる件数（同じ出来事の件数と金額）で、一つの測定として"
                  f"{v.kpi('value')}でモデル化しており、効果は{v.kpi('value')}の側に表れる",
        lambda v: f"the count of the events whose value is {v.s('value')} (zero in the same months): one measurement, "
                  f"modelled as the value; its effect is reported under {v.s('value')}"),
    "kpi_not_linked": (
        lambda v: f"ほかのKPIを考慮すると解約との関連が認められない（q = {float(v['q']):.2g}）",
        lambda v: f"not linked to churn given the other KPIs (q = {float(v['q']):.2g} ≥ {float(v['alpha']):g})"),
    # ---- triggers
    "kpi_left_out": (
        lambda v: f"{v.kpi()}は{v.outcomes()}のモデルから外しました（{v.sub('reason')}）。",
        lambda v: f"KPI '{v.s('kpi')}' was left out of the {v.list('outcomes')} model(s): {v.sub('reason')}. "
                  f"{_left_out_fix(v)}"),
    "skewed_kpis": (
        lambda v: f"分布の偏りが大きい{v.n('n')}個のKPI（{v.kpis()}）は log(1 + 値) に変換してモデル化しました。"
                  "効果の「+1SD」は、値が一定の倍率で増えることと読んでください（対応は不要です）。",
        lambda v: f"{v.n('n')} KPI{_s(v['n'])} {'is' if _s(v['n']) == '' else 'are'} heavily skewed (skewness > 2): "
                  f"{v.kpis()}. They are modelled as log(1 + value), so their effects are per SD of log(1 + value); "
                  "read +1 SD as roughly 'multiplied by a constant factor'. No action needed."),
    "outcome_too_few_events": (
        lambda v: f"{v.outcome()}（{TRIGGER_NAMES.get(v.s('outcome'), '')}）: イベントが{v.n('events')}件（{v.n('min')}件未満）"
                  "しかないため、モデルを推定していません。トリガーがないことは、関連がないことを意味しません。",
        lambda v: f"Outcome {v.s('outcome')} ({TRIGGER_NAMES.get(v.s('outcome'), '')}): only {v.n('events')} "
                  f"{_what_events(v)} (< {v.n('min')}), so no model was fitted and no trigger can be flagged. "
                  "Add more months or accounts before reading this outcome."),
    "outcome_not_estimable": (
        lambda v: f"イベントが{v.n('events')}件（{v.n('min')}件未満）と少なく、効果を推定できません",
        lambda v: f"only {v.n('events')} {_what_events(v)} on {v.n('rows')} rows (< {v.n('min')}): too few to "
                  "estimate effects; a missing trigger here says nothing"),
    "model_not_converged": (
        lambda v: f"{v.outcome()}のモデルの推定が収束しませんでした（あるKPIが結果を完全に分けている可能性があります）。"
                  "このモデルの効果と区間は信頼できません。",
        lambda v: f"The {v.s('outcome')} model did not converge in {v.n('iterations')} iterations (a KPI may separate "
                  "the outcome perfectly); its effects and intervals are unreliable. Look for a KPI that is "
                  "only recorded for accounts with the event and drop it from the kpis table."),
    "kpi_curve": (
        lambda v: f"{v.kpi()}と{v.outcome()}の関係は直線ではありません（スプラインの方がよく当てはまることを、偽発見率を"
                  "管理した検定で確認）。表の効果は代表的な範囲での平均的な傾きで、改善ポテンシャル・スコアの配点・"
                  "プレイブックは推定した曲線に沿って計算しています。",
        lambda v: f"KPI '{v.s('kpi')}': its link with {v.s('outcome')} is not a straight line (a spline fits better, "
                  "tested with false-discovery control); the effect shown is its average slope over its typical "
                  "range, and the improvement potential, score points and playbook follow the fitted curve."),
    "kpi_segment_effect": (
        lambda v: f"{v.kpi()}の{v.outcome()}への効果はセグメントによって異なります（"
                  + "、".join(f"{e['segment']} {e['effect']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]"
                             for e in v["effects"] or [])
                  + "。偽発見率を管理した検定で確認）。drivers.csv にセグメント別の行があり、改善ポテンシャルと"
                  "プレイブックはセグメントごとの効果を使っています。",
        lambda v: f"KPI '{v.s('kpi')}': its effect on {v.s('outcome')} differs by segment ("
                  + ", ".join(f"{e['segment']} {e['effect']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]"
                              for e in v["effects"] or [])
                  + "; tested with false-discovery control): drivers.csv has one row per segment, and the "
                  "improvement potential and playbook use each segment's own effect."),
    "score_kpi_shape": (
        lambda v: f"ヘルススコアの{v.kpi()}の配点は、直線ではなく推定した"
                  + "・".join({"curve": "曲線", "segment": "セグメント別の効果"}[k] for k in v["kinds"] or [])
                  + "に沿っています（"
                  + ("しきい値を超えたアカウントはそれ以上点が増えず、効果のないセグメントでは点差がつきません"
                     if len(v["kinds"] or []) > 1 else
                     {"curve": "しきい値を超えたアカウントはそれ以上点が増えません",
                      "segment": "効果のないセグメントでは点差がつきません"}.get((v["kinds"] or ["curve"])[0], ""))
                  + "）。",
        lambda v: f"Health score: the points of KPI '{v.s('kpi')}' follow its fitted "
                  + " and ".join({"curve": "curve", "segment": "segment-specific effect"}[k] for k in v["kinds"] or [])
                  + " instead of a straight line ("
                  + "; ".join({"curve": "past a threshold no more points are earned",
                               "segment": "in a segment where it has no effect every account earns about the same"}[k]
                              for k in v["kinds"] or [])
                  + ")."),
    "model_rows_sampled": (
        lambda v: f"{_sampled_models(v)}は、対象の{v.n('rows')}アカウント月が多いため、件数の少ない側の結果（{_sampled_rare(v)}件）"
                  f"の月をすべてと、残りの月から無作為に選んだ{float(v['keep']):.0%}の、計{v.n('fitted_rows')}アカウント月で推定しました"
                  "（ケース・コントロール抽出）。抽出の割合を織り込んで推定しているため、効果と区間は全体に対するものです"
                  "（区間はわずかに広くなります）。件数はすべての月で数えています。",
        lambda v: f"Case-control sampling{_sampled_models(v)}: of {v.n('rows')} model account-months, every month of the "
                  f"rarer outcome ({_sampled_rare(v)}) and a random {float(v['keep']):.0%} of the others were kept, "
                  f"{v.n('fitted_rows')} in all, and the model fitted on them. Its likelihood accounts for the "
                  "sampling, so effects and intervals are the whole population's (intervals slightly wider); "
                  "the counts reported are over every month."),
    "gee_fallback": (
        lambda v: "契約更新（CRTT）のモデルは、交換可能な作業相関では推定が安定しなかったため、独立な作業相関"
                  "（アカウント単位のクラスタ、頑健な区間）で推定し直しました。効果はそのまま使えます（区間はやや広くなることがあります）。",
        lambda v: f"The renewal (CRTT) GEE with an exchangeable working correlation {v.s('problem')}; it was refitted "
                  "with the independence working correlation (still clustered by account, robust intervals). The "
                  "effects stay valid; they may be a little less precise."),
    "missing_informative": (
        lambda v: f"{v.kpi()}は対象月の{pct(v['share'], 0)}で未記入で、未記入の月はその後の結果と関連しています"
                  f"（未記入の月の比、平均値の月に対して: {_missing_effects(v)}）。ランダムな欠測ではありません。"
                  "モデルには未記入を示す項を加え、この指標の効果は記入のある月から推定しています。"
                  "未記入そのものが注意信号です（例: 不満のある顧客が回答しない）。",
        lambda v: f"KPI '{v.kpi()}' is missing in {pct(v['share'], 0)} of the model rows, and the months without a "
                  f"value go with the outcome (ratio of a month without a value vs one at the mean: "
                  f"{_missing_effects(v)}): it is not missing at random. The models add a missing-value indicator "
                  "for it, so its own effect is estimated from the months it was recorded; the gap itself is a "
                  "warning sign (e.g. unhappy customers not answering)."),
    # ---- health
    "score_context_only": (
        lambda v: (f"解約が{v.n('events')}件しかなく（KPIの効果を推定するには{v.n('min_events')}件以上必要）"
                   if v["reason_code"] == "too_few_events" else
                   f"解約と有意に関連するKPIがないため（q < {float(v['alpha']):g}、解約{v.n('events')}件）") +
                  "、ヘルススコアはKPIを使わず、顧客の属性（セグメント・契約形態・契約月数）だけで作っています。"
                  "データが支持しないKPIには点数を付けていません。",
        lambda v: (f"Only {v.n('events')} churn events (at least {v.n('min_events')} are needed to estimate KPI "
                   "effects)" if v["reason_code"] == "too_few_events" else
                   f"No KPI is linked to churn at q < {float(v['alpha']):g} (Benjamini–Hochberg) with "
                   f"{v.n('events')} churn events") +
                  ": the health score uses the account context only (segment, contract type, contract months) "
                  "and gives no points to a KPI the data do not support."),
    "score_no_flagged_kpi": (
        lambda v: f"解約と有意に関連するKPIがないため（q < {float(v['alpha']):g}、解約{v.n('events')}件）、ヘルススコアは"
                  f"解約との関連が最も強い{v.n('n')}個のKPI（{v.kpis()}）で作った参考値です。検証のAUCを確認してから使ってください。",
        lambda v: f"No KPI is linked to churn at q < {float(v['alpha']):g} (Benjamini–Hochberg) with {v.n('events')} "
                  f"churn events: the health score uses the {v.n('n')} KPI(s) most associated with churn "
                  f"({v.list('kpis')}; at most one per {v.n('epv')} events, so the score is not overfitted) and is "
                  "indicative only. Check the validation AUC before using it; more history or more accounts may "
                  "reveal the drivers."),
    "renewal_not_observed": (
        lambda v: f"{v.n('cycle')}か月ごとに更新する契約（契約形態 annual）の{v.n('accounts')}社について、データの期間内に"
                  f"観察できた更新は{v.n('decisions')}回（解約{v.n('churns')}件・継続{v.n('renewals')}件）だけで、"
                  f"更新時の解約確率を推定するには解約と継続がそれぞれ{v.n('min_events')}件以上必要です。"
                  "データから分からない確率は示さず、これらの顧客の解約確率（health_scores.csv の churn_prob）は空欄とし、"
                  "ヘルススコアの契約形態には配点していません（これらの顧客のスコアとランクはKPIとセグメントによる相対的な位置です）。"
                  "改善ポテンシャルのうちこれらの顧客の解約・LTVの金額も、更新時の解約率が分からないまま計算しているため割り引いて読んでください。"
                  "更新月を含む、より長い期間のデータがあれば追加してください。",
        lambda v: f"Renewals of the {v.n('accounts')} contract(s) renewing every {v.n('cycle')} months (contract_type "
                  f"annual): the data hold only {v.n('decisions')} renewal decision(s) ({v.n('churns')} churned, "
                  f"{v.n('renewals')} renewed); at least {v.n('min_events')} of each are needed to estimate the churn "
                  "probability at a renewal. It is not shown: these accounts' churn_prob in health_scores.csv is empty "
                  "and contract type earns no score points (their score and tier place them by their KPIs and "
                  "segment only). The improvement potential's churn and LTV amounts for them rest on a renewal rate "
                  "the data cannot tell: read them with caution. Fix: add earlier (or later) months that hold their "
                  "renewals."),
    "context_item_separated": (
        lambda v: f"{CONTEXT_LABELS.get(v.s('item'), (v.s('item'),))[0]}には配点していません。ある水準（{v.list('levels')}）で"
                  "対象月の解約がまったくない（またはすべて解約）ため、効果を推定できないからです。解約確率の計算では考慮しています。",
        lambda v: f"Health score: {v.s('item')} gets no points: one of its levels has only churn (or no churn) in its "
                  f"at-risk months ({v.list('levels')}), so its effect cannot be estimated. The churn probability "
                  "still adjusts for it; more history (renewals observed) would let it count."),
    "context_level_pooled": (
        lambda v: f"{CONTEXT_LABELS.get(v.s('item'), (v.s('item'),))[0]}「{v.list('levels')}」は対象月の解約が"
                  + ("まったくない" if v['kind'] == "no_churn" else "すべて解約") + "ため、その水準だけの解約率は推定できません"
                  f"（推定すると解約確率がほぼ0%{'' if v['kind'] == 'no_churn' else 'や100%'}という根拠のない値になります）。"
                  f"解約確率・ヘルススコア・改善ポテンシャルでは「{v.s('reference')}」と同じ水準として扱っています。",
        lambda v: f"{v.s('item')} {v.list('levels')}: its at-risk months have "
                  + ("no churn" if v['kind'] == "no_churn" else "only churn") + ", so its own churn rate cannot be "
                  "estimated (a fit would give it a churn probability of about " + ("0" if v['kind'] == "no_churn" else "1")
                  + f", which the data do not support). The churn probability, the health score and the improvement "
                  f"potential treat it as {v.s('reference')}, the reference level."),
    "score_validated_shorter": (
        lambda v: f"データが{v.s('first')}からしかなく、{v.n('horizon')}か月前の時点ではスコアを作れないため、"
                  f"過去時点での検証は{v.s('cut')}時点のスコアでその後{v.n('validation_horizon')}か月の解約を予測させる形で行いました"
                  f"（{v.n('horizon')}か月先の予測そのものの検証ではありません）。",
        lambda v: f"The data start in {v.s('first')}, too late to build the score {v.n('horizon')} months back: the "
                  f"out-of-time check scores the accounts at {v.s('cut')} and predicts their churn over the next "
                  f"{v.n('validation_horizon')} months (a check of the score's ranking over a shorter horizon, not of "
                  f"the {v.n('horizon')}-month prediction itself)."),
    "score_tenure_flat": (
        lambda v: f"解約が{v.n('events')}件と少なく（{v.n('terms')}項目に対し1項目あたり{v.n('epv')}件未満）、契約月数による解約率の変化は"
                  f"データから確かめられないため（p = {v['p_value']:.2f}）、解約確率では契約月数による変化を置かず一定としています。"
                  "少ないデータで推定した傾きを将来の契約月数に延ばすと、解約確率を大きく誤るおそれがあるためです。",
        lambda v: f"With {v.n('events')} churns ({v.n('terms')} terms, fewer than {v.n('epv')} per term) the change of churn "
                  f"risk with contract months cannot be told from the data (p = {v['p_value']:.2f}): the churn probability "
                  "takes it as flat in tenure, since carrying a slope fitted on so few churns to the tenures of the next "
                  "months could make the probability far off."),
    "score_not_validated": (
        lambda v: f"ヘルススコアは、{v.s('cut')}より前のデータでは" + (
            f"解約が{v.n('events')}件しかなく" if v['reason_code'] == "too_few_events" else "使えるKPIがなく")
                  + "、過去時点での検証ができませんでした。スコアは参考値として扱ってください。",
        lambda v: f"The health score could not be validated out of time (fit before {v.s('cut')}): {v.s('reason')}"),
    "onboarding_confounded": (
        lambda v: ("他の指標や契約条件をそろえた比較でもオンボード完了アカウントの解約は少ないものの、前月の指標をそろえた"
                   "月次の解約ハザードではオンボード自体の効果は確かではありません。オンボードそのものが解約に効くとは"
                   "言い切れないため、解約ドライバーとは判定していません。"
                   if v["adjusted_verdict"] == "driver" else
                   "オンボード完了アカウントは解約が少ないものの、他の指標や契約条件をそろえると差は確かではありません。"
                   "差はオンボード完了アカウントの利用状況など、一緒に動くものによるもので、オンボードそのものの効果は示されていません。"),
        lambda v: ("Onboarded accounts churn less, also once their other KPIs and context are taken into account, but "
                   "onboarding's own term in the monthly churn hazard (the previous month's KPIs held fixed) cannot be "
                   "told from none: onboarding is not called a churn driver."
                   if v["adjusted_verdict"] == "driver" else
                   "Onboarded accounts churn less, but not once their other KPIs and context are taken into account: "
                   "the difference travels with what onboarded accounts also do (e.g. usage); onboarding is not shown "
                   "to matter by itself.")),
    "onboarding_unadjusted_only": (
        lambda v: f"オンボードの比較を他の指標や契約条件でそろえることができませんでした（{v.s('reason')}）。"
                  "そろえない比較ではオンボードと一緒に動くものと区別できないため、解約ドライバーとは判定していません。",
        lambda v: f"The adjusted onboarding comparison could not be made ({v.s('reason')}); an unadjusted difference "
                  "cannot tell onboarding from what travels with it, so onboarding is not called a driver."),
    # ---- metrics (notes of kpi_summary.json: why a figure is empty)
    "metric_no_paying_at_as_of": (lambda v: "分析基準月に課金アカウントがありません",
                                  lambda v: "no paying account at as_of"),
    "metric_no_paying": (lambda v: "課金アカウントがありません", lambda v: "no paying account"),
    "metric_no_mrr": (lambda v: "MRRがありません", lambda v: "no MRR"),
    "metric_needs_base_month": (
        lambda v: f"{v.s('month')}（基準月の12か月前）の売上データが必要です",
        lambda v: f"needs revenue in {v.s('month')} (12 months before as_of)"),
    "metric_ltv_unbounded": (
        lambda v: "直近12か月に収益解約がないため、簡易LTVは上限なしになります",
        lambda v: "no revenue churn in the last 12 months: simple LTV is unbounded"),
    "metric_ltv_pending": (lambda v: "改善ポテンシャルの段階で計算します",
                           lambda v: "filled by the pipeline from the potential stage"),
    "metric_no_active": (lambda v: "分析基準月に契約中のアカウントがありません", lambda v: "no account active at as_of"),
    "metric_no_onboarding": (lambda v: "オンボード完了のデータがありません", lambda v: "no onboarding_completed column"),
    "nps_no_answers": (lambda v: "期間内の回答がありません", lambda v: "no answers in the period"),
    "nps_no_table": (lambda v: "NPSの表がありません", lambda v: "no nps table"),
    # ---- potential (why a column or row of the table is empty)
    "ltv_growth_beyond_data": (
        lambda v: f"{v.n('accounts')}アカウントの予測LTVは、データで観測された最大のMRR成長（{v['growth']:.1f}倍）を"
                  f"超える伸びを前提にしています（KPIを現在の値のまま{v.n('ltv_months')}か月投影し、アップセルが複利で"
                  f"積み上がるため）。これらは全LTVの{pct(v['share'])}を占めます。これらのアカウントのLTVと、それを"
                  "含む合計・増分は過大の可能性があり、上限として読んでください。",
        lambda v: f"{v.n('accounts')} account{_s(v['accounts'])}' projected LTV assumes MRR growth beyond the largest "
                  f"observed in the data ({v['growth']:.1f}x): KPIs are held at today's values for "
                  f"{v.n('ltv_months')} months and expansions compound. They hold {pct(v['share'])} of the total "
                  "LTV: read their LTV, and the totals and gains that include it, as upper bounds."),
    "no_referrals": (
        lambda v: "紹介元（accounts.referred_by）のデータがないため、紹介による新規MRRは算出できません。",
        lambda v: "New revenue (new MRR from referred accounts) is left empty: accounts.referred_by has no data."),
    "potential_few_events": (
        lambda v: f"{v.outcome()}: 対象{v.n('rows')}アカウント月に{v.n('events')}件しかなく（{v.n('min')}件未満）、"
                  "KPIの効果は推定できません。この列は空欄とし、投影には実際の発生率を使います。",
        lambda v: f"{v.outcome()}: only {v.n('events')} events in {v.n('rows')} account-months (< {v.n('min')}): KPI "
                  "effects are not estimable; its column is left empty and the projection uses the observed rate."),
    "potential_not_converged": (
        lambda v: f"{v.outcome()}: モデルの推定が収束しませんでした（完全分離の可能性）。この列の区間は非常に広くなります。",
        lambda v: f"{v.outcome()}: the model did not converge (separation?); this column's intervals are very wide."),
    "potential_separated": (
        lambda v: f"{v.outcome()}: {v.list('terms')}の係数は推定できません（そのグループの行がすべて同じ結果になる完全分離）。"
                  "推定値のまま投影し、区間の計算では固定しています。契約形態や更新月の定義を確認してください。",
        lambda v: f"{v.outcome()}: the coefficients of {v.list('terms')} cannot be estimated (every model row of that "
                  "group has the same outcome: complete separation); the projection uses them as estimated and "
                  "the intervals hold them fixed. Check the data (e.g. contract types and renewal months)."),
    "never_measured": (
        lambda v: f"{v.kpi()}: 現在契約中のアカウントで一度も計測されていないため、空欄です。",
        lambda v: f"{v.kpi()}: never measured for the accounts active at as_of, so its row is empty."),
    "zero_mean": (
        lambda v: f"{v.kpi()}: 現在契約中のアカウントでの平均が0のため、平均の{float(v['pct']):g}%の改善では何も変わらず、空欄です。",
        lambda v: f"{v.kpi()}: its mean over the active accounts is 0, so {float(v['pct']):g}% of it changes nothing; "
                  "its row is empty."),
    "in_no_model": (
        lambda v: f"{v.kpi()}: どのモデルにも含まれないため空欄です（{v.subs('reasons') or '—'}）。",
        lambda v: f"{v.kpi()}: in none of the models, so its row is empty ({v.subs('reasons') or '-'})."),
}


def notice_text(code: str, values: dict | None = None, language: str = "ja",
                labels: dict[str, str] | None = None) -> str:
    """The words of a coded notice in ``language`` (KPI names through ``labels`` when given).

    Parameters
    ----------
    code : str
        A key of :data:`NOTICE_TEXT`.
    values : dict
        The notice's values.
    language : {"ja", "en"}
    labels : dict, optional
        KPI name → label, as :func:`kpi_labels` gives.
    """
    if code not in NOTICE_TEXT:
        raise KeyError(f"no words for notice code {code!r}: add it to cskit.narrative.NOTICE_TEXT")
    ja_fn, en_fn = NOTICE_TEXT[code]
    return (ja_fn if language == "ja" else en_fn)(_Vals(values or {}, language, labels))


def notice(n: Any, language: str = "ja", labels: dict[str, str] | None = None) -> str:
    """A notice (a :class:`cskit.notices.Notice`, or its record from a result file) in ``language``.
    A plain string (no code) is returned as it is."""
    if isinstance(n, dict) and "code" in n:
        if n["code"] == "text":
            return str(n.get("message", ""))
        return notice_text(n["code"], n.get("values", {}), language, labels)
    if hasattr(n, "code") and hasattr(n, "values"):
        return notice_text(n.code, n.values, language, labels)
    return str(n)


def _code(n: Any) -> str | None:
    if isinstance(n, dict):
        return n.get("code")
    return getattr(n, "code", None)


def _values(n: Any) -> dict:
    if isinstance(n, dict):
        return n.get("values", {})
    return getattr(n, "values", {})


MERGED = {"read_as_shift_jis": "file"}  # notices of these codes are listed once, their values joined


def sampled_line(notices: list, language: str = "ja", labels: dict[str, str] | None = None) -> str:
    """One sentence for several "model_rows_sampled" notices (each model's fitted / full rows and the
    share kept), the explanation said once: a report section lists its sampled models together."""
    items = []
    for n in notices:
        v = _Vals(_values(n), language, labels)
        what = (_sampled_models(v).replace("のモデル", "").strip(" ()") if v["model"] != "validation"
                else _sampled_models(v).strip(" ()"))
        if v.ja:
            items.append(f"{what} {v.n('fitted_rows')}／{v.n('rows')}アカウント月（少ない側{_sampled_rare(v)}件、残りの"
                         f"{float(v['keep']):.0%}）")
        else:
            items.append(f"{what} {v.n('fitted_rows')} of {v.n('rows')} account-months ({_sampled_rare(v)} of the "
                         f"rarer outcome, {float(v['keep']):.0%} of the others)")
    if language == "ja":
        return ("対象のアカウント月が多いため、次のモデルはケース・コントロール抽出（件数の少ない側の結果の月はすべて、"
                f"残りは無作為に一部）で推定しました：{'、'.join(items)}。抽出の割合を織り込んだ推定なので、効果と区間は"
                "全体に対するものです（区間はわずかに広くなります）。件数はすべての月で数えています。")
    return ("Because of their size, these models were fitted on a case-control sample (every month of the rarer "
            f"outcome, a random share of the others): {'; '.join(items)}. The likelihood accounts for the sampling, "
            "so effects and intervals are the whole population's (intervals slightly wider); counts are over every month.")


def notice_lines(notices: list | None, language: str = "ja", labels: dict[str, str] | None = None) -> list[str]:
    """The notices' sentences in ``language``, one per notice (those of a :data:`MERGED` code in one;
    the "model_rows_sampled" notes in one :func:`sampled_line`, where the first of them was)."""
    notices = list(notices or [])
    sampled = [n for n in notices if _code(n) == "model_rows_sampled"]
    if len(sampled) > 1:
        first = notices.index(sampled[0])
        rest = [n for n in notices if _code(n) != "model_rows_sampled"]
        lines = notice_lines(rest, language, labels)
        before = len(notice_lines(rest[:first], language, labels))
        return [*lines[:before], sampled_line(sampled, language, labels), *lines[before:]]
    out, merged = [], {}
    for n in notices:
        code = _code(n)
        if code in MERGED:
            key = MERGED[code]
            if code not in merged:
                merged[code] = len(out)
                out.append([code, {**_values(n), key: []}])
            v = _values(n).get(key)
            out[merged[code]][1][key] += v if isinstance(v, list) else [v]
        else:
            out.append(n)
    return [notice_text(x[0], x[1], language, labels) if isinstance(x, list) else notice(x, language, labels)
            for x in out]


def explain_warnings(messages: list | None, language: str = "ja", heading: str | None = None,
                     labels: dict[str, str] | None = None) -> str:
    """Notices for the report, as bullets under ``heading`` (empty string when there are none)."""
    lines = notice_lines(messages, language, labels)
    if not lines:
        return ""
    head = [f"**{heading}**", ""] if heading else []
    return "\n".join(head + [f"- {m}" for m in lines])


def metrics(summary: dict, currency: str = "JPY", language: str = "ja") -> str:
    """The headline KPIs of kpi_summary.json as a table (value, period, note when missing)."""
    w = W[language]
    rows = []
    for key, (ja, en, kind) in METRIC_LABELS.items():
        entry = summary.get(key)
        if not entry:
            continue
        label = ja if language == "ja" else en
        note = entry.get("note", "") if entry.get("value") is None else ""
        if note and entry.get("note_code"):  # read back from kpi_summary.json: worded from its code
            note = {"code": entry["note_code"], "values": entry.get("note_values", {})}
        rows.append([label, _fmt(entry.get("value"), kind, currency), _period(entry.get("period", ""), language),
                     notice(note, language) if note else ""])
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


def _interval(value: Any, lo: Any, hi: Any, fmt) -> str:
    if not _finite(value):
        return "—"
    if _finite(lo) and _finite(hi):
        return f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]"
    return fmt(value)


def potential(
    table: pd.DataFrame,
    caveat: str,
    notes: dict[str, str] | None = None,
    improvement_pct: float = 10,
    horizon_months: int = 12,
    ltv_months: int = 36,
    accounts: int | None = None,
    currency: str = "JPY",
    language: str = "ja",
    top: int = 3,
    labels: dict[str, str] | None = None,
) -> str:
    """What +x% of each KPI is worth: the scenario in words, the KPIs whose LTV gain has an interval
    above zero (largest first), how many intervals include zero, why any cell is empty, the caveat."""
    m = lambda v: _yen(v, currency, language)  # noqa: E731
    d = actionable(table).dropna(subset=["d_ltv"])
    # the potential stage decides what is credible (potential.csv ``credible``: flagged by its models under
    # the triggers' false-discovery control and an LTV gain above zero after the same control); the text
    # only words that decision
    above = d["d_ltv_lo"] > 0
    named = _is_credible(d)
    sure = d[named].sort_values("d_ltv", ascending=False, kind="stable")
    unproven = d[above & ~named]
    unsure = d[~above & ~(d["d_ltv_hi"] < 0)]
    who = f"{accounts:,}" if accounts is not None else ""
    if language == "ja":
        text = [
            f"各KPIについて、{as_of_text('ja', who)}全アカウントの値を平均の{improvement_pct:g}%だけ改善した場合"
            f"（他の指標は一定）を、今後{horizon_months}か月（LTVは{ltv_months}か月）にわたって投影し、"
            "現状のままの場合との差を示します。[ ] 内は95%区間です。",
            "",
        ]
        if d.empty:
            text.append("どのKPIについても改善ポテンシャルは推定できませんでした。KPIの効果を推定できた結果モデル"
                        "（解約・アップセル/クロスセル・ダウングレード・紹介）が一つもないためです（理由は下記）。"
                        "価値がないという意味ではなく、このデータでは判断できないという意味です。")
        elif len(sure):
            items = "、".join(f"**{(labels or {}).get(r.kpi, r.label)}**（LTV {_interval(r.d_ltv, r.d_ltv_lo, r.d_ltv_hi, m)}）"
                              for r in sure.head(top).itertuples())
            text.append(f"改善の価値を確かに言えるのは{len(sure)}指標で（モデルで有意、かつ多重比較を考慮してもLTV増分がプラス）、"
                        f"大きい順に{items}です。")
        elif not len(unproven):
            text.append("どのKPIについても、LTV増分の95%区間がゼロを含みます。このデータからは、改善の価値を確かに言えるKPIはありません。")
        else:
            text.append("このデータからは、改善の価値を確かに言えるKPIはありません。")
        if len(unproven):
            text.append(f"{len(unproven)}指標は区間はプラスですが、多数の指標を同時に調べたことを考慮すると偶然と区別できないため、"
                        "改善の価値があるとは言えません。")
        if len(unsure):
            text.append(f"{len(unsure)}指標は区間がゼロをまたぐため、改善に価値があるかどうかはこのデータでは判断できません。")
    else:
        text = [
            f"For each KPI, {as_of_text('en', who)}every active account's value is improved by {improvement_pct:g}% "
            f"of its mean (all other KPIs unchanged) and projected over the next {horizon_months} months "
            f"({ltv_months} months for LTV); the table shows scenario minus baseline. Brackets are 95% intervals.",
            "",
        ]
        if d.empty:
            text.append("No KPI's improvement potential could be estimated: none of the outcome models (churn, "
                        "up/cross-sell, downgrade, referral) could estimate KPI effects (reasons below). This does "
                        "not mean improving them is worth nothing; these data cannot tell.")
        elif len(sure):
            items = ", ".join(f"**{(labels or {}).get(r.kpi, r.label)}** (LTV {_interval(r.d_ltv, r.d_ltv_lo, r.d_ltv_hi, m)})"
                              for r in sure.head(top).itertuples())
            text.append(f"{len(sure)} KPI{'' if len(sure) == 1 else 's'} {'is' if len(sure) == 1 else 'are'} worth "
                        "improving on this evidence (the effect passes the models' false-discovery control and the "
                        f"LTV gain stays above zero after it); the largest: {items}.")
        elif not len(unproven):
            text.append("For every KPI the 95% interval of the LTV gain includes zero: the data cannot say that "
                        "improving any one of them is worth something.")
        else:
            text.append("On this evidence no KPI is worth improving.")
        if len(unproven):
            text.append(f"For {len(unproven)} KPIs the interval lies above zero, but with this many KPIs tested that "
                        "is not told apart from chance: they are not named as worth improving.")
        if len(unsure):
            text.append(f"For {len(unsure)} KPI{'' if len(unsure) == 1 else 's'} the interval crosses zero: the data "
                        "cannot tell whether improving them is worth anything.")
    if notes and d.empty:
        notes = {k: v for k, v in notes.items() if k in OUTCOME_NOTES} or notes
    if notes:
        text += [""] + [f"- {line}" for line in notice_lines([v for _, v in sorted(notes.items())], language, labels)]
    text += ["", f"> {caveat}"]
    return "\n".join(text)


# The improvement-potential stage's caveat under its table (cskit.potential puts it in Potential.caveat
# and potential.xlsx).
POTENTIAL_CAVEAT = {
    "ja": (
        "この表の金額は、各指標と解約・アップセル/クロスセル・ダウングレード・紹介との関連を、ほかの指標を"
        "一定としたまま将来に投影した試算です。指標を改善すればこの金額が得られるという因果効果を証明するもの"
        "ではありません。95%区間はモデル推定の不確かさを示します。"
    ),
    "en": (
        "These amounts project forward the associations of each KPI with churn, up/cross-sell, downgrade "
        "and referrals, all other KPIs held constant. They are not proven causes: improving a KPI is not "
        "guaranteed to deliver them. Intervals show the models' estimation uncertainty (95%)."
    ),
}

OUTCOME_NOTES = ("d_churn", "d_expansion", "d_downgrade", "d_new")


def potential_estimable(table: pd.DataFrame) -> bool:
    """Whether any KPI of the improvement-potential table has an estimated LTV gain (else the
    notebook shows no chart or table of it, only :func:`potential`'s reasons)."""
    return bool(len(table)) and bool(pd.to_numeric(table["d_ltv"], errors="coerce").notna().any())


def as_of_text(language: str, accounts: str) -> str:
    if not accounts:
        return ""
    return f"現在契約中の{accounts}件の" if language == "ja" else f"for the {accounts} accounts active now, "


POTENTIAL_HEAD = {
    "ja": ["KPI", "カテゴリ", "平均", "改善幅", "LTV増分", "拡大MRR増分", "紹介新規MRR増分", "ダウングレード損失の変化", "解約損失の変化"],
    "en": ["KPI", "Category", "Mean", "Improvement", "LTV gain", "Expansion MRR gain", "Referral new MRR gain",
           "Change in downgrade loss", "Change in churn loss"],
}


def potential_order(table: pd.DataFrame) -> pd.DataFrame:
    """The improvement-potential rows in the chart's order: the KPIs a CS team acts on by LTV gain
    (largest first, empty rows last), then the non-actionable ones (contract months)."""
    act = ~table["kpi"].isin(NOT_ACTIONABLE)
    key = pd.to_numeric(table["d_ltv"], errors="coerce").fillna(-np.inf)
    return table.assign(_a=~act, _k=-key).sort_values(["_a", "_k"], kind="stable").drop(columns=["_a", "_k"])


def not_actionable_label(kpi: str, label: str, improvement_pct: float, language: str = "ja") -> str:
    """The label of a KPI no CS action moves, saying what its scenario means (contract months: the
    accounts had been customers longer)."""
    if kpi != "contract_months":
        return label
    return (f"{label}（参考: 在籍期間が平均の{improvement_pct:g}%長い場合。CSの施策ではありません）" if language == "ja" else
            f"{label} (reference: tenure {improvement_pct:g}% of its mean longer; not a CS lever)")


def _cell(value: Any, lo: Any, hi: Any, fmt) -> str:
    """One amount with its 95% interval beneath in a lighter style; grey when the interval crosses zero."""
    import html

    if not _finite(value):
        return '<span style="color:#999">—</span>'
    unsure = _finite(lo) and _finite(hi) and float(lo) <= 0 <= float(hi)
    colour = "#9a9a9a" if unsure else "inherit"
    top = f'<div style="white-space:nowrap;color:{colour}">{html.escape(fmt(value))}</div>'
    if not (_finite(lo) and _finite(hi)):
        return top
    return top + (f'<div style="white-space:nowrap;color:#8a8a8a;font-size:85%">'
                  f'[{html.escape(fmt(lo))}, {html.escape(fmt(hi))}]</div>')


def potential_table(
    table: pd.DataFrame, currency: str = "JPY", language: str = "ja", rates: Any = (),
    improvement_pct: float = 10, labels: dict[str, str] | None = None,
) -> str:
    """The improvement-potential table as HTML, in the chart's order (:func:`potential_order`): one
    amount per cell with its [95% interval] beneath in a lighter style, the whole cell grey where the
    interval crosses zero (not distinguishable from zero), a legend saying so; the mean and
    improvement of the KPIs named in ``rates`` (shares) as % and points."""
    import html

    m = lambda v: _yen(v, currency, language)  # noqa: E731
    rates = set(rates or ())
    labels = labels or {}
    head = "".join(f'<th style="text-align:center">{html.escape(h)}</th>' for h in POTENTIAL_HEAD[language])
    body = []
    for r in potential_order(table).itertuples(index=False):
        share = r.kpi in rates
        mean = pct(r.mean) if share else _num(r.mean)
        step = (f"{100 * float(r.improvement):+.1f}pt" if _finite(r.improvement) else "—") if share else _num(r.improvement)
        label = not_actionable_label(r.kpi, labels.get(r.kpi, r.label), improvement_pct, language)
        cells = [f'<td style="text-align:left">{html.escape(label)}</td>', f"<td>{html.escape(str(r.category))}</td>",
                 f'<td style="white-space:nowrap">{mean}</td>', f'<td style="white-space:nowrap">{step}</td>']
        for col in ("d_ltv", "d_expansion", "d_new", "d_downgrade", "d_churn"):
            cells.append(f'<td style="text-align:right">{_cell(getattr(r, col), getattr(r, f"{col}_lo"), getattr(r, f"{col}_hi"), m)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    legend = ("各セルの下段は95%区間です。灰色の数値は区間がゼロをまたぎ、ゼロと区別できません。"
              "ダウングレード損失・解約損失はマイナスが損失の減少（改善）です。全桁の値は results/potential.csv と potential.xlsx にあります。"
              if language == "ja" else
              "The line under each amount is its 95% interval; grey amounts have an interval that crosses zero "
              "(not distinguishable from zero). For downgrade and churn losses, negative means smaller losses "
              "(better). Every digit is in results/potential.csv and potential.xlsx.")
    return (f'<table class="cskit-potential"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f'<p style="color:#555;font-size:90%">{html.escape(legend)}</p>')


def share_kpis(catalogue: dict) -> list[str]:
    """The KPIs whose values are shares (catalogue bounds 0 to 1), shown as percentages."""
    return [name for name, k in catalogue.items() if k.lower == 0.0 and k.upper == 1.0]


def _num(value: Any) -> str:
    if not _finite(value):
        return "—"
    v = float(value)
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


CONTEXT_LABELS = {"segment": ("セグメント", "Segment"), "contract_type": ("契約形態", "Contract type"),
                  "contract_months": ("契約月数", "Contract months")}
DIRECTIONS = {"+": ("高いほど健全", "higher is healthier"), "-": ("低いほど健全", "lower is healthier"),
              "level": ("水準で決まる", "set by level")}


def is_context(kpi: str, scale: Any = None) -> bool:
    """An account-context item of the health score: a category (segment, contract type) or the tenure
    (cskit.health.CONTEXT_KPIS); the rest are KPIs."""
    from cskit.health import CONTEXT_KPIS

    return scale == "category" or kpi in CONTEXT_KPIS


def health_items(weights: pd.DataFrame, labels: dict[str, str], language: str = "ja") -> pd.DataFrame:
    """health_weights with the report's ``label``, ``kind`` ("kpi" | "context") and ``direction_text``,
    most points first (for :func:`cskit.plots.points_bars` and :func:`health_points_table`)."""
    i = 0 if language == "ja" else 1
    scale = weights["scale"] if "scale" in weights else pd.Series([None] * len(weights), index=weights.index)
    kind = ["context" if is_context(k, sc) else "kpi" for k, sc in zip(weights["kpi"], scale)]
    label = [labels.get(k) or CONTEXT_LABELS.get(k, (k, k))[i] for k in weights["kpi"]]
    direction = weights["direction"] if "direction" in weights else pd.Series([""] * len(weights), index=weights.index)
    text = [DIRECTIONS.get(str(d), (str(d), str(d)))[i] for d in direction]
    out = weights.assign(label=label, kind=kind, direction_text=text)
    return out.sort_values("points", ascending=False, kind="stable").reset_index(drop=True)


def _levels(text: Any, language: str) -> list[tuple[str, str]]:
    """The ``levels`` column of health_weights ("SMB=0; Mid=2.4; Enterprise=8") as (level, points)."""
    if not isinstance(text, str) or not text.strip():
        return []
    pairs = [part.rsplit("=", 1) for part in text.split("; ") if "=" in part]
    return [(group_name(lv.strip(), language), pt.strip()) for lv, pt in pairs]


def health_points_table(weights: pd.DataFrame, labels: dict[str, str], language: str = "ja") -> str:
    """The score's make-up: each item's points, what earns them (the KPI values at 0 and at full
    points) and, for a context item, the points of each level."""
    ja = language == "ja"
    items = health_items(weights, labels, language)
    head = (["項目", "種類", "配点", "向き", "0点となる値", "満点となる値", "水準別の配点"] if ja else
            ["Item", "Kind", "Points", "Direction", "Value at 0 points", "Value at full points", "Points by level"])
    kinds = {"kpi": ("KPI", "KPI"), "context": ("契約状況", "Account context")}
    rows = []
    for r in items.itertuples(index=False):
        lv = _levels(getattr(r, "levels", None), language)
        levels = " / ".join(f"{name} {pt}{'点' if ja else ''}" for name, pt in lv) if lv else "—"
        rows.append([r.label, kinds[r.kind][0 if ja else 1], f"{float(r.points):g}", r.direction_text,
                     "—" if lv else _num(getattr(r, "value_at_0_points", None)),
                     "—" if lv else _num(getattr(r, "value_at_full_points", None)), levels])
    return _table(head, rows)


def health(
    weights: pd.DataFrame,
    scores: pd.DataFrame,
    cutpoints: dict,
    validation: dict,
    labels: dict[str, str],
    language: str = "ja",
    top: int = 3,
) -> str:
    """The score's make-up (points of the KPIs and of the account-context items), its tiers now, and
    how well it ranked churn out of time."""
    ja = language == "ja"
    sep = "、" if ja else ", "
    items = health_items(weights, labels, language)
    w = items[items["points"] > 0]
    zero = items[~(items["points"] > 0)]
    tiers = scores["tier"].value_counts()
    n = {t: int(tiers.get(t, 0)) for t in ("red", "yellow", "green")}
    red, green = cutpoints.get("red_below"), cutpoints.get("green_from")
    listed = lambda d: sep.join(f"{r.label} {float(r.points):g}" for r in d.itertuples())  # noqa: E731
    kpi, ctx = w[w["kind"] == "kpi"], w[w["kind"] == "context"]
    if ja:
        if (items["kind"] == "context").any():
            make_up = (f"ヘルススコア（0〜100、高いほど健全）は解約モデルから作り、合計100点を{len(w)}項目に配分しました。"
                       f"KPI {len(kpi)}個に計{kpi['points'].sum():g}点（{listed(kpi) or '—'}）、"
                       f"契約状況 {len(ctx)}項目に計{ctx['points'].sum():g}点（{listed(ctx) or '—'}）です。"
                       "契約状況（セグメント・契約形態・契約月数）はCSの施策では変えられないため、プレイブックでは挙げません。")
        else:
            make_up = (f"ヘルススコア（0〜100、高いほど健全）は解約モデルから作り、{len(w)}個のKPIに合計100点を配分しました。"
                       f"配点の大きいKPI: {listed(w.head(top))}。")
        if len(zero):
            make_up += f"{sep.join(zero['label'])}は配点0点です（100点のうち1点に満たない影響のため）。"
        text = [make_up,
                f"現在契約中のアカウントは 赤 {n['red']:,}件（{_num(red)}点未満）、黄 {n['yellow']:,}件、"
                f"緑 {n['green']:,}件（{_num(green)}点以上）です。"]
    else:
        if (items["kind"] == "context").any():
            make_up = (f"The health score (0-100, higher = healthier) comes from the churn model; {len(w)} items share "
                       f"its 100 points: {len(kpi)} KPI{'' if len(kpi) == 1 else 's'} hold {kpi['points'].sum():g} "
                       f"({listed(kpi) or '—'}) and {len(ctx)} account-context item{'' if len(ctx) == 1 else 's'} hold {ctx['points'].sum():g} ({listed(ctx) or '—'}). "
                       "The account context (segment, contract type, contract months) is not something CS can "
                       "change, so the playbook does not name it.")
        else:
            make_up = (f"The health score (0-100, higher = healthier) comes from the churn model; {len(w)} KPIs share "
                       f"its 100 points. Largest: {listed(w.head(top))}.")
        if len(zero):
            make_up += f" {sep.join(zero['label'])}: 0 points (less than 1 point of the 100)."
        text = [make_up,
                f"Accounts active now: red {n['red']:,} (below {_num(red)}), yellow {n['yellow']:,}, "
                f"green {n['green']:,} ({_num(green)} and above)."]
    text += ["", validation_text(validation, language, labels)]
    return "\n".join(text)


def health_reason(v: dict, language: str = "ja") -> str:
    """Why the health score was not estimated, from health_validation.json's ``reason_code``,
    ``churn_events`` and ``min_events`` (the stage's English ``reason`` for any other code)."""
    ja = language == "ja"
    code, events, need = v.get("reason_code"), v.get("churn_events"), v.get("min_events")
    if code == "too_few_events" and _finite(events) and _finite(need):
        return (f"解約モデルの学習に使える解約が{int(events):,}件しかありません（{int(need):,}件以上必要）。"
                "より長い期間（売上とKPIの月数）か、より多くのアカウントのデータがあれば作成できます。" if ja else
                f"only {int(events):,} churned accounts in the months the churn model learns from (at least "
                f"{int(need):,} are needed). A longer history (more months of revenue and KPIs) or more accounts "
                "would allow it.")
    if code == "no_usable_kpi":
        return ("使えるKPIがありません（すべて一定、ほとんど欠損、または互いにほぼ同じ）。KPI表を確認してください。" if ja else
                "no usable KPI (all constant, mostly missing or collinear). Check the kpis table.")
    return str(v.get("reason") or "")


def score_basis(v: dict, language: str = "ja") -> str:
    """One sentence when the health score is of account context only (``score_basis`` in
    health_validation.json): why no KPI has points. Empty when the score uses KPIs."""
    b = v.get("score_basis") or {}
    if b.get("basis") != "context_only":
        return ""
    return notice_text("score_context_only", {"reason_code": b.get("reason_code"), "events": b.get("churn_events"),
                                              "min_events": b.get("min_events"), "alpha": b.get("alpha")}, language)


def health_not_estimable(v: dict, language: str = "ja") -> str:
    """The health section when the score could not be built (health_validation.json with status
    "not_estimable"): what is missing from the report and why."""
    if language == "ja":
        return ("**ヘルススコアは作成できませんでした。** " + health_reason(v, "ja") + "\n\n"
                "そのため、スコアと配点、ティア（赤・黄・緑）、過去時点での検証、プレイブック、オンボードの検証、タッチモデルは"
                "この診断にはありません（結果ファイルは見出しのみ、理由は health_validation.json）。")
    return ("**The health score could not be built:** " + health_reason(v, "en") + "\n\n"
            "So the score and its points, the tiers (red / yellow / green), the out-of-time validation, the playbook, "
            "the onboarding check and the touch model are not part of this diagnosis (their result files hold only "
            "headers; the reason is in health_validation.json).")


def validation_text(v: dict, language: str = "ja", labels: dict[str, str] | None = None) -> str:
    """Out-of-time validation in words: AUC and concordance with intervals, churn by tier, the client's score."""
    ja = language == "ja"
    h = v.get("horizon_months")
    cut = pd.Timestamp(v["cut"]).strftime("%Y-%m") if v.get("cut") is not None else "—"
    if v.get("status") != "fitted":
        reason = REASON_CODES.get(v.get("reason_code"), ("", ""))[0 if ja else 1] or (
            "検証用のデータが足りません" if ja else v.get("reason", ""))
        return (f"過去時点での検証はできませんでした（{reason}）。スコアは参考値として扱ってください。" if ja else
                f"The score could not be validated out of time ({reason}); treat it as indicative only.")
    s = v["score"]
    auc = _interval(s["auc"], s["ci_low"], s["ci_high"], lambda x: f"{float(x):.2f}")
    by_tier = {r["tier"]: r for r in v.get("by_tier", [])}
    tier_rates = ("、" if ja else ", ").join(
        f"{_tier(t, language)} {pct(r['churn_rate'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]"
        for t, r in by_tier.items() if r.get("n")
    )
    if ja:
        text = (f"**過去時点での検証**: {cut}時点までのデータでモデルを作り、その時点のアカウント{v['n_accounts']:,}件を採点して、"
                f"その後{h}か月の解約（{v['n_churned']:,}件）を予測できたかを確かめました。"
                f"AUC {auc}、C統計量 {v['score']['concordance']:.2f}{_auc_reading(v, language)}。"
                f"ティア別の解約率: {tier_rates}。")
    else:
        text = (f"**Out-of-time validation**: the model was fitted on data up to {cut}, the {v['n_accounts']:,} accounts "
                f"active then were scored, and their churn over the next {h} months ({v['n_churned']:,} churned) "
                f"was compared: AUC {auc}, concordance {v['score']['concordance']:.2f}{_auc_reading(v, language)}. "
                f"Churn by tier: {tier_rates}.")
    text += tier_order_text(v, language) + calibration_text(v, language)
    c = v.get("client_score")
    if c and c.get("status") not in (None, "fitted"):
        why = REASON_CODES.get(c.get("reason_code"), ("", ""))[0 if ja else 1]
        text += (f"\n\n貴社の現行ヘルススコアとは比較できませんでした。{why}" if ja else
                 f"\n\nThe client's current health score could not be compared: {why or c.get('reason', '')}")
    if c and c.get("status") == "fitted":
        cauc = _interval(c["auc"], c["ci_low"], c["ci_high"], lambda x: f"{float(x):.2f}")
        dd = c["auc_difference"]
        diff = _interval(dd["ours_minus_client"], dd["ci_low"], dd["ci_high"], lambda x: f"{float(x):+.2f}")
        better = c.get("verdict") == "ours_better"
        worse = c.get("verdict") == "client_better"
        if ja:
            verdict = ("データに基づくスコアの方が解約をよく予測します" if better else
                       "貴社のスコアの方が解約をよく予測します" if worse else "両者の差はこのデータでは判断できません")
            text += f"\n\n貴社の現行ヘルススコアのAUCは {cauc}、差（当スコア − 現行）は {diff} で、{verdict}。"
        else:
            verdict = ("the data-driven score predicts churn better" if better else
                       "the client's score predicts churn better" if worse else "the data cannot tell them apart")
            text += (f"\n\nThe client's current health score has AUC {cauc}; the difference (ours − client's) is "
                     f"{diff}: {verdict}.")
    left = [r for r in v.get("left_out_kpis", []) if r.get("left_out")]
    if left:
        names = ("、" if ja else ", ").join(_label(labels or {}, r["kpi"]) for r in left)
        text += (f"\n\n現行スコアがほとんど反映していない（順位相関 |ρ| < 0.2）が、解約と関連して配点の大きい項目: {names}。"
                 if ja else
                 f"\n\nKPIs that carry points for churn but that the client's score barely moves with (|rho| < 0.2): {names}.")
    return text


def _auc_reading(v: dict, language: str) -> str:
    """What the AUC's interval says (the validation's ``verdicts.auc``): above chance or not."""
    verdict = v.get("verdicts", {}).get("auc")
    if verdict is None:
        return ""
    if verdict == "above_chance":
        return ("（AUCは0.5が偶然と同じ、1.0が完全な予測。区間は0.5を上回り、偶然よりは解約を順位付けています）" if language == "ja" else
                " (AUC 0.5 is chance, 1.0 perfect; the interval is above 0.5: the score ranks churn better than chance)")
    return ("（AUCは0.5が偶然と同じ、1.0が完全な予測。区間が0.5を含み、このデータでは偶然と区別できません）" if language == "ja" else
            " (AUC 0.5 is chance, 1.0 perfect; the interval includes 0.5: the data cannot tell the score from chance)")


def tier_order_text(v: dict, language: str = "ja") -> str:
    """A warning when, out of time, a riskier tier did not churn more than the next one
    (the validation's ``verdicts.tier_order`` and ``tier_pair``)."""
    vd = v.get("verdicts", {})
    if vd.get("tier_order") != "not_ordered" or not vd.get("tier_pair"):
        return ""
    a, b = vd["tier_pair"]
    rate = {r["tier"]: r["churn_rate"] for r in v.get("by_tier", [])}
    if language == "ja":
        return (f"ただし、{_tier(a, language)}ティアの解約率（{pct(rate.get(a))}）が{_tier(b, language)}ティア"
                f"（{pct(rate.get(b))}）以下で、ティアの順序どおりには解約が起きていません。ティアは目安として使ってください。")
    return (f" But the {_tier(a, language)} tier churned no more than the {_tier(b, language)} tier "
            f"({pct(rate.get(a))} vs {pct(rate.get(b))}): the tiers did not order churn; use them as a rough guide.")


def calibration_text(v: dict, language: str = "ja") -> str:
    """Mean predicted vs observed churn in the validation window, worded from ``verdicts.calibration``
    (decided by the health stage: "lower/higher" only outside the observed rate's Wilson interval)."""
    pred, obs = v.get("predicted_rate"), (v.get("with_churn_prob") or v).get("observed_rate")
    if not (_finite(pred) and _finite(obs)):
        return ""
    verdict = v.get("verdicts", {}).get("calibration")
    words = {"under_predicts": ("予測は実際より低めです", "the model under-predicts churn"),
             "over_predicts": ("予測は実際より高めです", "the model over-predicts churn")}
    said = words.get(verdict, ("", ""))[0 if language == "ja" else 1]
    if language == "ja":
        return (f"予測した解約確率の平均は {pct(pred)}、実際の解約率は {pct(obs)} でした" +
                (f"（{said}。順位付けには使えますが、確率の値そのものは割り引いて読んでください）。" if said else "。"))
    return (f" Mean predicted churn {pct(pred)}, observed {pct(obs)}" +
            (f": {said} (use the score to rank accounts, not its probabilities at face value)." if said else "."))


def _tier(tier: str, language: str) -> str:
    names = {"red": ("赤", "red"), "yellow": ("黄", "yellow"), "green": ("緑", "green")}
    ja, en = names.get(tier, (tier, tier))
    return ja if language == "ja" else en


REASON_CODES = {  # reason_code of health_validation.json → (ja, en)
    "no_churn_contrast": ("検証期間に解約が1件もない（またはすべて解約した）ため、AUCを計算できません",
                          "no churn (or only churn) in the validation window: AUC is undefined"),
    "client_score_snapshot": (
        "解約したアカウントの現行スコアがすべて空欄で、契約中のアカウントだけのスナップショットのようです。"
        "比較するには、検証期間の初め時点のスコアをご提供ください。",
        "accounts.health_score is missing for every account that churned in the validation window (it looks like "
        "a snapshot of the active accounts only). Provide the score as it was at the start of the window to compare."),
    "client_score_all_churned": ("スコアのあるアカウントがすべて解約しているため、AUCを計算できません。",
                                 "every scored account churned: AUC is undefined"),
    "one_group": ("対象のアカウントがすべて一方のグループに入り、比較できません",
                  "every account of the cohort is in one group: nothing to compare"),
}

VERDICT = {
    "driver": ("利用状況など他の指標と契約条件が同じアカウント同士で比べても、オンボード完了は解約の少なさと関連しています（解約ドライバー）。",
               "Even against accounts with the same other KPIs and context, completing onboarding goes with less "
               "churn here: it is a churn driver."),
    "urban_legend": ("オンボード完了の有無で解約率に意味のある差はありません（「都市伝説」）。",
                     "Churn hardly differs with onboarding: here its importance is an \"urban legend\"."),
    "inconclusive": ("このデータでは、オンボードそのものが解約に効くかどうかは判断できません。",
                     "The data cannot tell whether onboarding itself matters for churn here."),
}


def onboarding(check: dict | None, language: str = "ja") -> str:
    """The onboarding check: churn of onboarded vs not, with intervals, and the verdict."""
    ja = language == "ja"
    if not check:
        return ("オンボード完了のデータがないため、オンボードの検証は行っていません。" if ja else
                "There is no onboarding_completed data, so onboarding was not checked.")
    verdict = VERDICT.get(check.get("verdict", "inconclusive"), VERDICT["inconclusive"])[0 if ja else 1]
    c = check.get("churn")
    if not c:
        why = REASON_CODES.get(check.get("reason_code"), ("", ""))[0 if ja else 1] or (
            "" if ja else check.get("reason", ""))
        return f"{verdict}（{why}）" if ja and why else (f"{verdict} ({why})" if why else verdict)
    on, off, d = c["onboarded"], c["not_onboarded"], c["difference"]
    h = check.get("horizon_months")
    diff = _interval(d["estimate"], d["ci_low"], d["ci_high"], lambda x: f"{100 * float(x):+.1f}pt")
    if ja:
        text = (f"{h}か月以内の解約率: オンボード完了 {pct(on['rate'])} [{pct(on['ci'][0])}, {pct(on['ci'][1])}]"
                f"（{on['n']:,}件）、未完了 {pct(off['rate'])} [{pct(off['ci'][0])}, {pct(off['ci'][1])}]（{off['n']:,}件）、"
                f"差 {diff}。{verdict}")
    else:
        text = (f"Churn within {h} months: onboarded {pct(on['rate'])} [{pct(on['ci'][0])}, {pct(on['ci'][1])}] "
                f"(n = {on['n']:,}), not onboarded {pct(off['rate'])} [{pct(off['ci'][0])}, {pct(off['ci'][1])}] "
                f"(n = {off['n']:,}); difference {diff}. {verdict}")
    a, hz = check.get("adjusted", {}), check.get("hazard_model", {})
    if a.get("status") == "fitted":
        adiff = _interval(a["estimate"], a["ci_low"], a["ci_high"], lambda x: f"{100 * float(x):+.1f}pt")
        text += (f"他の指標・契約期間・セグメント・契約形態をそろえた差（AIPW）: {adiff}。" if ja else
                 f" Adjusted for the other KPIs, tenure, segment and contract type (AIPW): {adiff}.")
        if hz.get("status") == "fitted":
            hr = _interval(hz["hazard_ratio"], hz["ci_low"], hz["ci_high"], lambda x: f"{float(x):.2f}")
            text += (f"前月の指標をそろえた月次の解約ハザード比（完了/未完了、解約トリガーと同じモデル）: {hr}。" if ja else
                     f" Monthly churn hazard ratio (onboarded / not) given the previous month's KPIs, from the"
                     f" retention-trigger model: {hr}.")
    s = check.get("score_after_12_months", {})
    if s.get("difference"):
        sd = s["difference"]
        sdiff = _interval(sd["estimate"], sd["ci_low"], sd["ci_high"], lambda x: f"{float(x):+.1f}")
        text += (f"契約12か月時点のヘルススコア（オンボード分の配点を除く）の差（完了 − 未完了）: {sdiff}点。" if ja else
                 f" Health score at month 12 (onboarding's own points left out), onboarded − not: {sdiff} points.")
    return text


def touch(
    table: pd.DataFrame,
    currency: str = "JPY",
    language: str = "ja",
    kpis: list[str] | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """The touch model: accounts, LTV and score per high / low / tech touch tier, plus the median of
    each KPI in ``kpis`` (e.g. the health score's heaviest) so a tier's profile is visible."""
    ja = language == "ja"
    names = {"high": ("ハイタッチ", "High touch"), "low": ("ロータッチ", "Low touch"), "tech": ("テックタッチ", "Tech touch")}
    kpis = [k for k in (kpis or []) if k in table]
    head = (["区分", "アカウント数", "LTV合計", "LTV中央値", "スコア中央値"] if ja else
            ["Tier", "Accounts", "Total LTV", "Median LTV", "Median score"])
    head += [f"{_label(labels or {}, k)}{'（中央値）' if ja else ' (median)'}" for k in kpis]
    rows = [[names.get(r["touch"], (r["touch"], r["touch"]))[0 if ja else 1], f"{int(r['n']):,}",
             amount(r["ltv_total"], currency, language), amount(r["ltv_median"], currency, language),
             _num(r["score_median"])]
            + [_num(r[k]) for k in kpis]
            for _, r in table.iterrows()]
    intro = ("LTVの上位10%をハイタッチ、次の30%をロータッチ、残りをテックタッチとしました。" if ja else
             "High touch = top 10% of accounts by LTV, low touch = the next 30%, tech touch = the rest.")
    return intro + "\n\n" + _table(head, rows)


HEADINGS = {
    "findings": ("主な所見", "Key findings"),
    "metrics": ("1. SaaS指標", "1. SaaS metrics"),
    "bridge": ("MRRブリッジ", "MRR bridge"),
    "rates": ("解約率の推移", "Churn rates by month"),
    "nps": ("NPS", "NPS"),
    "cohorts": ("コホート別継続率", "Retention by start cohort"),
    "survival": ("生存曲線（カプラン・マイヤー）", "Survival curves (Kaplan-Meier)"),
    "triggers": ("2. トリガー（RT / CRTT / UCT）", "2. Triggers (RT / CRTT / UCT)"),
    "potential": ("3. 改善ポテンシャル", "3. Improvement potential"),
    "health": ("4. ヘルススコア", "4. Health score"),
    "playbook": ("プレイブック（赤ティアとスコアが下がったアカウント）", "Playbook (red-tier and falling accounts)"),
    "onboarding": ("オンボードの検証", "Onboarding check"),
    "touch": ("タッチモデル", "Touch model"),
    "history": ("スコアの推移", "Score over time"),
    "movers": ("スコアが下がったアカウント", "Accounts whose score fell"),
    "changes": ("前回の診断からの変化", "Since the last diagnosis"),
    "quality": ("5. データと品質", "5. Data and quality"),
    "methods": ("6. 方法と注意点", "6. Methods and caveats"),
    "appendix": ("付録: 詳細な表と図", "Appendix: full tables and charts"),
    "a_metrics": ("A1. SaaS指標（全項目）", "A1. SaaS metrics (all)"),
    "a_rates": ("A2. 解約率の推移", "A2. Churn rates by month"),
    "a_nps": ("A3. NPS", "A3. NPS"),
    "a_cohorts": ("A4. コホート別継続率", "A4. Retention by start cohort"),
    "a_survival": ("A5. 生存曲線（カプラン・マイヤー）", "A5. Survival curves (Kaplan-Meier)"),
    "a_drivers": ("A6. KPI×結果の全推定値", "A6. Every KPI × outcome estimate"),
    "a_potential": ("A7. 改善ポテンシャル（全KPI）", "A7. Improvement potential (every KPI)"),
    "a_points": ("A8. ヘルススコアの配点の詳細", "A8. Health-score points in detail"),
    "a_calibration": ("A9. 較正（予測と実際）", "A9. Calibration (predicted vs observed)"),
    "a_touch": ("A10. タッチモデル", "A10. Touch model"),
    "a_bands": ("A11. ティア構成とスコア分布の推移", "A11. Tier mix and score distribution over time"),
}
APPENDIX = {key: HEADINGS[key] for key in HEADINGS if key == "appendix" or key.startswith("a_")}


def heading(key: str, language: str = "ja", level: int = 2) -> str:
    """A section heading of the report."""
    ja, en = HEADINGS[key]
    return "#" * level + " " + (ja if language == "ja" else en)


def appendix_heading(key: str, language: str = "ja", level: int = 3) -> str:
    """A heading of the report's appendix (a level-3 :func:`heading`)."""
    return heading(key, language, level)


def title(client: str, as_of: Any, accounts: int, months: int, language: str = "ja", client_name: str = "") -> str:
    """The report's title block: the client (its display name ``client_name`` when given), analysis
    month, and how much data it rests on."""
    client = client_name or client
    month = pd.Timestamp(as_of).strftime("%Y-%m")
    if language == "ja":
        return (f"# カスタマーサクセス診断: {client}\n\n分析基準月 {month}。"
                f"{accounts:,}アカウント、のべ{months:,}アカウント月のデータに基づきます。")
    return (f"# Customer-success diagnosis: {client}\n\nAnalysis month {month}; based on {accounts:,} accounts "
            f"and {months:,} account-months.")


def survival(medians: pd.DataFrame, logrank: pd.DataFrame, language: str = "ja") -> str:
    """Median lifetimes with intervals (or "not reached"), the 12-month survival S(12) with its interval
    when the survival stage gives it, and the log-rank test of each grouping."""
    ja = language == "ja"
    months = (lambda v: f"{float(v):.0f}か月") if ja else (lambda v: f"{float(v):.0f} months")
    nr = "未到達" if ja else "not reached"

    def med(r) -> str:
        if not _finite(r.median):
            return nr
        lo = months(r.median_ci_low) if _finite(r.median_ci_low) else nr
        hi = months(r.median_ci_high) if _finite(r.median_ci_high) else nr
        return f"{months(r.median)} [{lo}, {hi}]"

    s12 = "survival_12m" in medians
    head = ["区分", "グループ", "アカウント数", "解約数", "生存期間の中央値 [95%区間]"] if ja else \
        ["Grouping", "Group", "Accounts", "Churned", "Median lifetime [95% interval]"]
    if s12:
        head.append("12か月継続率 S(12) [95%区間]" if ja else "12-month survival S(12) [95% interval]")
    rows = []
    for r in medians.itertuples(index=False):
        row = [grouping_name(r.group_by, language), group_name(r.group, language), f"{r.accounts:,}",
               f"{r.churned:,}", med(r)]
        if s12:
            row.append(_interval(r.survival_12m, r.survival_12m_ci_low, r.survival_12m_ci_high, pct))
        rows.append(row)
    text = _table(head, rows)
    unreached = [r for r in medians.itertuples(index=False) if not _finite(r.median)]
    if unreached and s12:
        every = len(unreached) == len(medians)
        all_row = medians[medians["group_by"] == "all"]
        overall = ""
        if len(all_row) and _finite(all_row["survival_12m"].iloc[0]):
            a = all_row.iloc[0]
            overall = _interval(a["survival_12m"], a["survival_12m_ci_low"], a["survival_12m_ci_high"], pct)
        if ja:
            text += ("\n\n" + ("どのグループも" if every else f"{len(unreached)}グループで") +
                     "観察期間中に半数が解約しておらず、生存期間の中央値は「未到達」です。代わりに契約12か月時点の継続率 S(12) を比べてください"
                     + (f"（全体 {overall}）。" if overall else "。"))
        else:
            text += ("\n\n" + ("In every group" if every else f"In {len(unreached)} groups") +
                     " fewer than half the accounts churned during the data, so the median lifetime is not reached; "
                     "compare the 12-month survival S(12) instead" + (f" (all accounts: {overall})." if overall else "."))
    for r in logrank.itertuples(index=False):
        name = grouping_name(r.group_by, language)
        text += ("\n\n" + (f"ログランク検定（{name}）: {_p('p', r.p_value)}。" if ja else
                           f"Log-rank test ({name}): {_p('p', r.p_value)}."))
    return text


def _p(name: str, p: Any) -> str:
    """``p = 0.043`` or ``p < 0.001`` (``name`` is p or q)."""
    if not _finite(p):
        return f"{name} = —"
    return f"{name} < 0.001" if float(p) < 0.001 else f"{name} = {float(p):.3f}"


def _pv(p: Any) -> str:
    """A p or q value alone, for a table cell."""
    return _p("", p).lstrip(" =")


def nps_table(nps: pd.DataFrame, language: str = "ja") -> str:
    """NPS overall, by segment and by role, with the answer counts behind each."""
    if nps.empty:
        return "NPSの回答データはありません。" if language == "ja" else "There are no NPS answers."
    head = ["区分", "グループ", "回答数", "推奨者", "中立者", "批判者", "NPS"] if language == "ja" else \
        ["Grouping", "Group", "Answers", "Promoters", "Passives", "Detractors", "NPS"]
    rows = [[grouping_name(r.group_by, language), group_name(r.group, language), f"{r.answers:,}",
             f"{r.promoters:,}", f"{r.passives:,}", f"{r.detractors:,}",
             f"{float(r.nps):+.1f}" if _finite(r.nps) else "—"] for r in nps.itertuples(index=False)]
    return _table(head, rows)


def playbook(table: pd.DataFrame, labels: dict[str, str], language: str = "ja", rows: int = 15) -> str:
    """The first accounts of the playbook (red tier, and those whose score fell; lowest score first):
    the two KPIs to talk about and, where the history has it, what moved the score."""
    ja = language == "ja"
    if table.empty:
        return "赤ティアやスコアが下がったアカウントはありません。" if ja else "No account is in the red tier or falling."
    moved = "moved" in table
    head = ["アカウント", "スコア", "改善点1", "不足（点）", "改善点2", "不足（点）"] if ja else \
        ["Account", "Score", "First thing to work on", "Gap (points)", "Second", "Gap (points)"]
    head += (["最近の変化"] if ja else ["Recent change"]) if moved else []
    gap = lambda v: f"{float(v):.1f}" if _finite(v) else "—"  # noqa: E731
    body = []
    for r in table.head(rows).to_dict("records"):
        name = r.get("account_name") or ""
        who = f"{r['account_id']} {name}".strip()
        line = [who, f"{float(r['score']):.1f}", labels.get(r["kpi_1"], r["kpi_1"] or "—") if isinstance(r["kpi_1"], str) else "—",
                gap(r["gap_1"]), labels.get(r["kpi_2"], r["kpi_2"] or "—") if isinstance(r["kpi_2"], str) else "—",
                gap(r["gap_2"])]
        if moved:
            line.append(r["moved"] if isinstance(r["moved"], str) and r["moved"] else "—")
        body.append(line)
    n = min(rows, len(table))
    intro = (f"赤ティアまたはスコアが下がった{len(table):,}件のうち、スコアの低い{n}件を示します（全件は results/playbook.csv）。"
             "各アカウントについて、緑ティアの中央値と比べてスコアを最も下げている、CSの働きかけで変えられるKPI（話すべきこと）を2つと、"
             "直近のスコアの変化（何が動いたか）を挙げます。" if ja else
             f"The {n} lowest-scoring of the {len(table):,} red-tier or falling accounts (all in results/playbook.csv), "
             "each with the two KPIs a CSM can move that pull its score down most against the green-tier median (what to talk "
             "about) and its recent score change (what moved).")
    return intro + "\n\n" + _table(head, body)


OUTCOME_NAMES = {
    "churn": ("RT（リテンショントリガー）: 解約", "RT (Retention Trigger): churn"),
    "renewal": ("CRTT（継続トリガー）: 契約更新", "CRTT (Continuous Retention Trigger): renewal"),
    "expansion": ("UCT（アップセル・クロスセルトリガー）: 拡大", "UCT (Up-sell & Cross-sell Trigger): expansion"),
}
EFFECT_NAMES = {
    "churn": ("ハザード比（KPI +1SDあたり, 95%区間）", "Hazard ratio per +1 SD of the KPI (95% interval)"),
    "renewal": ("更新のオッズ比（KPI +1SDあたり, 95%区間）", "Odds ratio of renewal per +1 SD (95% interval)"),
    "expansion": ("拡大のオッズ比（KPI +1SDあたり, 95%区間）", "Odds ratio of expansion per +1 SD (95% interval)"),
}


def outcome_short(outcome: str, language: str = "ja") -> str:
    names = {"churn": ("解約", "churn"), "renewal": ("更新", "renewal"), "expansion": ("拡大", "expansion")}
    ja, en = names.get(outcome, (outcome, outcome))
    return ja if language == "ja" else en


def outcome_title(outcome: str, language: str = "ja") -> str:
    ja, en = OUTCOME_NAMES.get(outcome, (outcome, outcome))
    return ja if language == "ja" else en


def effect_label(outcome: str, language: str = "ja") -> str:
    ja, en = EFFECT_NAMES.get(outcome, ("効果（95%区間）", "Effect (95% interval)"))
    return ja if language == "ja" else en


def _label(labels: dict[str, str], kpi: str) -> str:
    return labels.get(kpi, kpi)


def forest_rows(drivers: pd.DataFrame, labels: dict[str, str], language: str = "ja", others: int | None = None):
    """(outcome, rows for plots.forest) per outcome with any estimate: the flagged triggers, then the
    other KPIs by effect size (only the ``others`` strongest of them when given; all of them are in
    drivers.csv and the appendix table)."""
    for outcome in ("churn", "renewal", "expansion"):
        d = drivers[(drivers["outcome"] == outcome)].dropna(subset=["effect", "ci_low", "ci_high"])
        if "segment" in d:
            d = d[d["segment"].isna() | d["segment"].astype(str).isin(["", "nan"])]
        if d.empty:
            continue
        d = d.assign(
            label=[_label(labels, k) for k in d["kpi"]],
            flagged=d["trigger"].fillna("").astype(str) != "",
            size=np.abs(np.log(d["effect"].astype(float))),
        ).sort_values(["flagged", "size"], ascending=[False, False], kind="stable")
        if others is not None:
            d = pd.concat([d[d["flagged"]], d[~d["flagged"]].head(others)])
        yield outcome, d


def triggers(
    drivers: pd.DataFrame,
    outcomes: pd.DataFrame,
    labels: dict[str, str],
    alpha: float = 0.05,
    language: str = "ja",
    fdr: str = "Benjamini–Hochberg",
    top: int = 5,
    warnings: list[str] | None = None,
) -> str:
    """Per outcome: events behind it, power, the flagged triggers with effect [interval] and q, or why
    none; then the false-discovery control and the association caveat."""
    ja = language == "ja"
    info = outcomes.set_index("outcome") if "outcome" in outcomes else pd.DataFrame()
    text = [
        (f"各KPIと3つの結果（解約・契約更新・拡大）との関連を、KPIを1標準偏差（SD）上げたときの効果で示します。"
         f"多数のKPIを同時に調べるため、偽発見率（FDR）を{fdr}法で{alpha:g}に抑え、q値 < {alpha:g} のものだけを"
         "トリガーとしました。" if ja else
         f"Each KPI's link with the three outcomes (churn, renewal, expansion) is shown as the effect of +1 standard "
         f"deviation (SD) of the KPI. Because many KPIs are tested at once, the false-discovery rate is held at "
         f"{alpha:g} with the {fdr} procedure: only KPIs with q < {alpha:g} are called triggers."),
    ]
    for outcome in ("churn", "renewal", "expansion"):
        body = _outcome_text(outcome, drivers, info, labels, language, top, alpha=alpha)
        text += ["", f"**{outcome_title(outcome, language)}**", "", body]
    if warnings:
        text += ["", explain_warnings(warnings, language, "モデルに関する注意" if ja else "Model notes", labels)]
    text += ["", "> " + (
        "これらは観察データにおける関連であり、因果関係を示すものではありません。トリガーは「どこを見るべきか」の手がかりです。"
        if ja else
        "These are associations in observational data, not proven causes: a trigger says where to look, "
        "not what will happen if the KPI is changed.")]
    return "\n".join(text)


MODEL_NAMES = [
    ("discrete-time hazard: binomial GLM, cloglog link", "離散時間ハザードモデル（二項GLM、cloglogリンク、ハザード比）"),
    ("GEE, logit link, clustered by account", "GEE（ロジットリンク、アカウント単位のクラスタ、更新のオッズ比）"),
    ("binomial GLM, logit link", "二項GLM（ロジットリンク、オッズ比）"),
]


def model_name(model: str, language: str = "ja") -> str:
    """The drivers stage's model description; in Japanese for the descriptions cskit.triggers writes
    (matched by their fixed start; the GEE's working correlation and its ρ are carried over)."""
    if language != "ja":
        return model
    for start, ja in MODEL_NAMES:
        if model.startswith(start):
            m = re.search(r"exchangeable, rho = (-?[\d.]+)", model)
            if m:
                return f"{ja}、交換可能作業相関 ρ = {m.group(1)}"
            if "independence (fallback)" in model:
                return f"{ja}、独立作業相関（代替）"
            return ja
    return model


def _outcome_text(
    outcome: str, drivers: pd.DataFrame, info: pd.DataFrame, labels: dict[str, str], language: str, top: int,
    *, alpha: float = 0.05,
) -> str:
    ja = language == "ja"
    row = info.loc[outcome] if outcome in info.index else pd.Series(dtype=object)
    events = row.get("events")
    ev = (f"イベント数 {int(events):,}件。" if ja else f"{int(events):,} events. ") if _finite(events) else ""
    if str(row.get("status", "fitted")) != "fitted":
        reason = row.get("reason", "")
        if _code(reason):
            reason = notice(reason, language)
        elif ja:
            reason = "イベントが少なく、効果を推定できません"
        return ev + (f"推定できません（{reason}）。関連が「ない」という意味ではありません。" if ja else
                     f"Not estimable ({reason}). This does not mean there is no link.")
    model = f"{'モデル' if ja else 'Model'}: {model_name(row.get('model'), language)}{'。' if ja else '. '}" \
        if isinstance(row.get("model"), str) else ""
    mde = row.get("mde_per_sd", row.get("mde"))
    power = ""
    if _finite(mde):
        power = (f"80%の検出力で検出できる最小の効果は1SDあたり {ratio(mde)} 倍（または {ratio(1 / float(mde))} 倍）です。"
                 if ja else
                 f"The smallest effect the data can detect with 80% power is {ratio(mde)} "
                 f"(or {ratio(1 / float(mde))}) per SD. ")
    d = drivers[drivers["outcome"] == outcome]
    flagged = d[d["trigger"].fillna("").astype(str) != ""].copy()
    flagged["size"] = np.abs(np.log(flagged["effect"].astype(float)))
    flagged = flagged.sort_values("size", ascending=False, kind="stable")
    if flagged.empty:
        return ev + model + power + (
            "FDR調整後に有意なKPIはありませんでした。" if ja else "No KPI is significant after FDR control.")
    items = [
        f"**{_row_label(labels, r, language)}** {ratio(r.effect)} [{ratio(r.ci_low)}, {ratio(r.ci_high)}], "
        f"{_p('q', r.q_value)}" + (f", ρ = {float(r.spearman):+.2f}" if _finite(r.spearman) else "") + (
            f", {'最も強いラグ' if ja else 'strongest at lag'} {int(r.best_lag)}"
            f"{'か月' if ja else (' month' if int(r.best_lag) == 1 else ' months')}"
            if _finite(r.best_lag) else "")
        for r in flagged.head(top).itertuples(index=False)
    ]
    head = (f"{len(flagged)}個のKPIがトリガーです（効果の大きい順）:" if ja else
            f"{len(flagged)} KPIs are triggers (largest effect first):")
    return ev + model + power + head + "\n\n" + "\n".join(f"- {i}" for i in items) + _chance_text(
        flagged, labels, language, alpha)


WEAK_Q_SHARE = 0.2  # a trigger with q ≥ alpha × this (0.01 at alpha 0.05) is named as weaker evidence


def _chance_text(flagged: pd.DataFrame, labels: dict[str, str], language: str, alpha: float) -> str:
    """What the false-discovery control allows among the flagged triggers: up to about alpha × their
    number may be chance findings (Benjamini–Hochberg bounds the expected share, not the count), and
    those with q ≥ alpha × WEAK_Q_SHARE are the ones to confirm before acting on."""
    q = pd.to_numeric(flagged["q_value"], errors="coerce")
    weak = flagged[q >= alpha * WEAK_Q_SHARE]
    if weak.empty:
        return ""
    names = "、".join if language == "ja" else ", ".join
    listed = names(_row_label(labels, r, language) for r in weak.itertuples(index=False))
    expected = alpha * len(flagged)
    if language == "ja":
        return (f"\n\n偽発見率{alpha:g}の管理のもとでは、{len(flagged)}個のトリガーのうち平均して最大{expected:.1f}個程度が"
                f"偶然による可能性があります。q値が{alpha * WEAK_Q_SHARE:g}以上の{listed}は根拠が弱めのため、"
                "施策の前に次回のデータで再確認してください。")
    return (f"\n\nWith the false-discovery rate held at {alpha:g}, up to about {expected:.1f} of these {len(flagged)} "
            f"triggers may be chance findings on average. {listed} (q ≥ {alpha * WEAK_Q_SHARE:g}) "
            f"{'is' if len(weak) == 1 else 'are'} weaker evidence: confirm with the next data before acting on "
            f"{'it' if len(weak) == 1 else 'them'}.")


def _row_label(labels: dict[str, str], r, language: str) -> str:
    """A drivers.csv row's KPI label; a segment row (the KPI's own effect in one segment) names it, and a
    KPI modelled with a curve says so."""
    text = _label(labels, r.kpi)
    segment = getattr(r, "segment", "")
    if isinstance(segment, str) and segment:
        text += f"（{segment}内）" if language == "ja" else f" (in {segment})"
    if getattr(r, "shape", "") == "curve":
        text += "（曲線）" if language == "ja" else " (curve)"
    return text


def drivers_table(drivers: pd.DataFrame, labels: dict[str, str], language: str = "ja") -> str:
    """drivers.csv as a readable table: KPI, outcome, effect [interval], q, Spearman, best lag, trigger.

    Rows go outcome by outcome (churn, renewal, expansion), the flagged triggers first, then by q: a
    reader sees what matters at the top of each block; every row stays (drivers.csv has them all too)."""
    order = {"churn": 0, "renewal": 1, "expansion": 2}
    flagged = drivers["trigger"].fillna("").astype(str).ne("")
    drivers = drivers.assign(_o=drivers["outcome"].map(order).fillna(9), _f=~flagged, _q=drivers["q_value"].fillna(2.0))
    drivers = drivers.sort_values(["_o", "_f", "_q"], kind="stable")
    head = ["KPI", "結果", "効果 [95%区間]", "q値", "順位相関ρ", "最強ラグ(月)", "トリガー"] if language == "ja" else \
        ["KPI", "Outcome", "Effect [95% interval]", "q", "Spearman rho", "Best lag (months)", "Trigger"]
    rows = [[_row_label(labels, r, language), outcome_short(r.outcome, language),
             _interval(r.effect, r.ci_low, r.ci_high, ratio), _pv(r.q_value),
             f"{float(r.spearman):+.2f}" if _finite(r.spearman) else "—",
             f"{int(r.best_lag)}" if _finite(r.best_lag) else "—", r.trigger if isinstance(r.trigger, str) else ""]
            for r in drivers.itertuples(index=False)]
    return _table(head, rows)


def estimated_drivers(drivers: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """The rows of drivers.csv whose outcome was fitted (a not-estimable outcome's rows hold no effect:
    :func:`triggers` already says why)."""
    if "status" not in outcomes or "outcome" not in drivers:
        return drivers
    fitted = outcomes.loc[outcomes["status"].astype(str).eq("fitted"), "outcome"]
    return drivers[drivers["outcome"].isin(set(fitted))]


def not_estimated(outcomes: pd.DataFrame, potential_table: pd.DataFrame, health_json: dict,
                  language: str = "ja") -> str:
    """One list, near the top of the report, of the parts that could not be estimated and why (empty
    string when everything was): trigger outcomes below their event floor, an improvement-potential
    table without any estimate, a health score that could not be built."""
    ja = language == "ja"
    items = []
    if "status" in outcomes:
        for r in outcomes.itertuples(index=False):
            if str(r.status) != "fitted":
                n = int(r.events) if _finite(r.events) else None
                items.append((f"{outcome_title(r.outcome, 'ja')} — イベントが{'' if n is None else f'{n:,}件と'}少ないため推定できません"
                              if ja else f"{outcome_title(r.outcome, 'en')} — not estimable: too few events"
                              + ("" if n is None else f" ({n:,})")))
    if len(potential_table) and not potential_estimable(potential_table):
        items.append("改善ポテンシャル: どの結果モデルもKPIの効果を推定できないため、金額は空欄です" if ja else
                     "Improvement potential: no outcome model could estimate KPI effects, so no amount is given")
    if health_json.get("status") == "not_estimable":
        items.append(("ヘルススコア（検証・プレイブック・オンボードの検証・タッチモデルを含む）: " if ja else
                      "Health score (with its validation, playbook, onboarding check and touch model): ")
                     + health_reason(health_json, language))
    elif (health_json.get("score_basis") or {}).get("basis") == "context_only":
        items.append(("ヘルススコア: KPIの配点 — " if ja else "Health score: KPI points — ") + score_basis(health_json, language))
    renewals = health_json.get("renewals") or {}
    if health_json.get("status") != "not_estimable" and renewals.get("estimable") is False:
        items.append((f"更新型契約（{renewals['accounts']:,}社）の解約確率 — データの期間内の更新が{renewals['decisions']:,}回"
                      f"（解約{renewals['churns']:,}件）と少ないため推定できません" if ja else
                      f"Churn probability of the {renewals['accounts']:,} term contract(s) — not estimable: only "
                      f"{renewals['decisions']:,} renewal decision(s) ({renewals['churns']:,} churned) in the data"))
    if not items:
        return ""
    head = ("**この診断で推定できなかった部分**（データが少ないため。推定できた部分の結果はそのまま使えます）" if ja else
            "**Parts of this diagnosis that could not be estimated** (too little data; the other results stand)")
    return head + "\n\n" + "\n".join(f"- {i}" for i in items)


def validation_frame(validation: dict, key: str) -> pd.DataFrame:
    """A list-of-records part of the validation dict as a DataFrame."""
    return pd.DataFrame(validation.get(key, []))


def methods(params: Any, language: str = "ja") -> str:
    """The methods behind the report and its caveats, with the run's settings filled in."""
    p = params
    if language == "ja":
        lines = [
            f"- **解約・更新・拡大のモデル**: アカウント×月のパネル上の離散時間ハザードモデル（二項GLM、解約はcloglogリンクで"
            f"exp(β)がハザード比）。KPIは{p.kpi_lag_months}か月前の値を使い、契約月数（とセグメント）で調整。"
            "年間契約は更新月のみを対象。",
            f"- **多重比較**: 偽発見率（FDR）を{p.alpha:g}に制御（Benjamini–Hochberg）。",
            "- **検出力**: 各結果のイベント数と、80%の検出力で検出できる最小効果を示し、イベントが少ない結果は推定しません。",
            f"- **改善ポテンシャル**: 現在契約中のアカウントのKPIを平均の{p.improvement_pct:g}%改善し、他を一定として"
            f"{p.horizon_months}か月（LTVは{p.ltv_months}か月、粗利率{pct(p.gross_margin, 0)}）投影。区間は推定値の共分散からの"
            f"{p.bootstrap}回のドローによる95%区間。",
            "- **ヘルススコア**: 解約モデル（KPIと契約状況：セグメント・契約形態・契約月数）の線形予測子を0〜100点に換算。"
            "過去時点で作ったモデルでその後の解約を予測して検証。",
            f"- **再現性**: 乱数はすべてseed={p.seed}で固定。同じ入力からは同じ結果ファイルが得られます。",
            "- **注意**: すべて観察データの関連です。KPIを改善すれば同じ効果が得られるとは限りません。"
            "詳しくは docs/methods.md を参照してください。",
        ]
    else:
        lines = [
            f"- **Churn, renewal and expansion models**: discrete-time hazard models on the account × month panel "
            f"(binomial GLMs; for churn the cloglog link, so exp(β) is a hazard ratio). KPIs enter at their value "
            f"{p.kpi_lag_months} month(s) earlier, adjusted for tenure (and segment); annual contracts count only at "
            "their anniversaries.",
            f"- **Multiple testing**: false-discovery rate held at {p.alpha:g} (Benjamini–Hochberg).",
            "- **Power**: each outcome states its event count and the smallest effect detectable with 80% power; "
            "outcomes with too few events are not fitted.",
            f"- **Improvement potential**: each KPI of the accounts active now is improved by {p.improvement_pct:g}% of "
            f"its mean, all else fixed, and projected over {p.horizon_months} months ({p.ltv_months} for LTV, gross "
            f"margin {pct(p.gross_margin, 0)}); 95% intervals from {p.bootstrap} draws of the estimates.",
            "- **Health score**: the churn model's linear predictor (KPIs and account context: segment, contract type, "
            "contract months) rescaled to 0-100; validated out of time (fitted on earlier months, scored on later churn).",
            f"- **Reproducibility**: every random step uses seed {p.seed}; the same input gives the same result files.",
            "- **Caveat**: all links are associations in observational data; improving a KPI is not guaranteed to "
            "deliver the projected amounts. Details: docs/methods.md.",
        ]
    return "\n".join(lines)


GROUPINGS = {
    "all": ("全アカウント", "All accounts"),
    "segment": ("セグメント別", "By segment"),
    "plan": ("プラン別", "By plan"),
    "contract_type": ("契約形態別", "By contract type"),
    "onboarding": ("オンボード完了別", "By onboarding"),
}


def grouping_titles(language: str = "ja") -> dict[str, str]:
    """Chart titles of the survival groupings."""
    return {k: v[0 if language == "ja" else 1] for k, v in GROUPINGS.items()}


def notes(messages: list | None, language: str = "ja", labels: dict[str, str] | None = None) -> str:
    """A stage's coded notices under a "Notes" label (empty text when there are none)."""
    if not messages:
        return ""
    return explain_warnings(messages, language, "注意" if language == "ja" else "Notes", labels)


def kpi_labels(catalogue: dict, language: str = "ja") -> dict[str, str]:
    """KPI name → label for the report; a label shared by several KPIs (e.g. "サイト訪問数" on the
    public site, CS site and community) gets its category appended so every row is distinguishable; each
    KPI's missing indicator (``missing:<kpi>``, a health-score item where its gaps are informative) too."""
    from cskit.catalogue import CATEGORIES

    base = {name: k.label(language) for name, k in catalogue.items()}
    counts = pd.Series(list(base.values())).value_counts()
    out = {}
    for name, k in catalogue.items():
        label = base[name]
        if counts[label] > 1:
            category = CATEGORIES.get(k.category, {}).get(language, k.category)
            label = f"{label}（{category}）" if language == "ja" else f"{label} ({category})"
        out[name] = label
    from cskit.models import MISSING_PREFIX

    for name, label in list(out.items()):  # a health-score item: the KPI's informative missing indicator
        out[MISSING_PREFIX + name] = (f"{label}の未回答・未計測の割合" if language == "ja"
                                      else f"{label}: share of months without a value")
    return out


def with_labels(table: pd.DataFrame, labels: dict[str, str], by: str = "kpi") -> pd.DataFrame:
    """``table`` with a ``label`` column from the report's KPI labels (the KPI name where unknown)."""
    return table.assign(label=[labels.get(k, k) for k in table[by]])


def top_kpis(weights: pd.DataFrame, n: int = 3) -> list[str]:
    """The ``n`` KPIs with the most health-score points (ties in table order)."""
    return weights.sort_values("points", ascending=False, kind="stable")["kpi"].head(n).tolist()


# ---------------------------------------------------------------- the score over time (cskit.history)


def _item_label(item: str, labels: dict[str, str], language: str) -> str:
    if item in CONTEXT_LABELS:
        return CONTEXT_LABELS[item][0 if language == "ja" else 1]
    return labels.get(item, item)


def mover_reason(row: dict, labels: dict[str, str], language: str = "ja") -> str:
    """One mover's score change and the items that moved it, largest fall first, e.g.
    "−18.2 points: login days −9.1 (21 → 12), support inquiries −5.0 (2 → 6)" (a row of health_movers)."""
    ja = language == "ja"
    head = f"{_signed(row['change'])}{'点' if ja else ' points'}"
    parts = []
    i = 1
    while f"item_{i}" in row:
        item = row[f"item_{i}"]
        if item:
            then, now = row.get(f"value_then_{i}"), row.get(f"value_now_{i}")
            values = f"（{_num(then)}→{_num(now)}）" if ja else f" ({_num(then)} → {_num(now)})"
            parts.append(f"{_item_label(item, labels, language)} {_signed(row[f'points_{i}'])}"
                         + (values if _finite(then) and _finite(now) else ""))
        i += 1
    return head + ("：" if ja else ": ") + ("、" if ja else ", ").join(parts) if parts else head


def _signed(value: Any) -> str:
    return f"{float(value):+.1f}".replace("-", "−") if _finite(value) else "—"


def score_history(tier_mix: pd.DataFrame, quantiles: pd.DataFrame, language: str = "ja") -> str:
    """How the tier mix and the score distribution moved over the history (first vs last month)."""
    ja = language == "ja"
    if tier_mix.empty:
        return "スコアの推移はありません。" if ja else "No score history."
    a, b = tier_mix.iloc[0], tier_mix.iloc[-1]
    qa, qb = quantiles.iloc[0], quantiles.iloc[-1]
    m0, m1 = pd.Timestamp(a["month"]).strftime("%Y-%m"), pd.Timestamp(b["month"]).strftime("%Y-%m")
    if ja:
        return (f"{m0}から{m1}までの各月末に、同じスコアモデル（基準月に推定した配点と閾値）を各月のKPIで"
                f"適用しました（results/health_history.csv）。赤ティアの割合は{pct(a['share_red'])}から"
                f"{pct(b['share_red'])}、緑ティアは{pct(a['share_green'])}から{pct(b['share_green'])}へ、"
                f"スコアの中央値は{qa['q50']:.1f}から{qb['q50']:.1f}へ動きました。基準月のスコアは"
                "health_scores.csvと完全に一致します。")
    return (f"The same score model (the points and cut-points fitted at the analysis month) applied at each month "
            f"from {m0} to {m1}, with that month's KPIs (results/health_history.csv). The red tier went from "
            f"{pct(a['share_red'])} to {pct(b['share_red'])} of accounts, the green tier from {pct(a['share_green'])} "
            f"to {pct(b['share_green'])}, and the median score from {qa['q50']:.1f} to {qb['q50']:.1f}. The "
            "analysis month's scores are those of health_scores.csv exactly.")


def movers(table: pd.DataFrame, drop: float, months: int, language: str = "ja", rows: int = 15,
           summary: dict | None = None) -> str:
    """The movers: accounts whose score fell ≥ ``drop`` points over ``months`` months or that entered
    red, largest fall first, each with the items that moved it (health_movers.csv). With ``summary``
    (health_drops.json's ``changes_now``), a note when fewer than 1% of accounts reach the alert drop."""
    ja = language == "ja"
    note = _reach_note(summary, drop, months, language)
    if table.empty:
        return (f"直近{months}か月でスコアが{drop:g}点以上下がった、または赤ティアに入ったアカウントはありません。" if ja
                else f"No account's score fell by {drop:g}+ points over the last {months} months or entered red.") + note
    falling, entered = int(table["falling"].sum()), int(table["entered_red"].sum())
    head = ["アカウント", "名前", "スコア", "ティア", "動いた項目"] if ja else ["Account", "Name", "Score", "Tier", "What moved"]
    body = [[r.account_id, r.account_name or "—", f"{r.score_then:.1f}→{r.score_now:.1f}",
             f"{_tier(r.tier_then, language)}→{_tier(r.tier_now, language)}", r.moved]
            for r in table.head(rows).itertuples(index=False)]
    intro = (f"直近{months}か月でスコアが{drop:g}点以上下がったアカウントが{falling:,}件、赤ティアに入ったアカウントが"
             f"{entered:,}件あります（重複あり、全件は results/health_movers.csv）。下げ幅の大きい{min(rows, len(table))}件と、"
             "スコアを動かした項目（点数の変化の大きい順、括弧内はスコアの入力値の変化）を示します。" if ja else
             f"{falling:,} accounts' scores fell by {drop:g}+ points over the last {months} months and {entered:,} entered "
             f"the red tier (they may overlap; all in results/health_movers.csv). The {min(rows, len(table))} largest falls, "
             "each with the items that moved the score (largest change in points first; in brackets, the score's input "
             "value then and now).")
    return intro + "\n\n" + _table(head, body) + note


def _reach_note(summary: dict | None, drop: float, months: int, language: str) -> str:
    """A note when the alert drop is out of reach: fewer than 1% of accounts fell that far. It suggests
    the largest 1% of falls as alert_drop; when no score fell at all (``fell`` = 0, e.g. a score on the
    account context only) drop alerts cannot fire, and when fewer than 1% fell at all (the 1% quantile
    is no fall) it says how many fell and points to the red tier: those few are already the movers
    listed, and no threshold of the quantiles would add any."""
    if not summary or not summary.get("accounts") or summary["falling"] >= 0.01 * summary["accounts"]:
        return ""
    q1, q5 = -float(summary["q01"]), -float(summary["q05"])
    if not summary["fell"]:
        return ("\n\n注意: 直近{m}か月でスコアが下がったアカウントはありません（このスコアは月ごとにほとんど動きません）。"
                "下落アラートは働かないため、赤ティアを目安にしてください。" if language == "ja" else
                "\n\nNote: no account's score fell over the last {m} months, so drop alerts cannot fire (the score "
                "barely moves from month to month here); use the red tier instead.").format(m=months)
    if q1 <= 0:
        n, fell, falling = f"{summary['accounts']:,}", f"{summary['fell']:,}", f"{summary['falling']:,}"
        if language == "ja":
            return (f"\n\n注意: 直近{months}か月でスコアが下がったのは{n}件中{fell}件だけです（うち{drop:g}点以上は{falling}件）。"
                    "このスコアは月ごとにほとんど動かないため、下落アラートより赤ティアを目安にしてください。")
        return (f"\n\nNote: only {fell} of {n} accounts' scores fell at all over the last {months} months "
                f"({falling} of them by {drop:g}+ points); the score barely moves from month to month here, so use "
                "the red tier rather than drop alerts.")
    if language == "ja":
        return (f"\n\n注意: {months}か月で{drop:g}点以上下がったのは{summary['accounts']:,}件中{summary['falling']:,}件だけです"
                f"（下落の大きい1%は{q1:.1f}点以上、5%は{q5:.1f}点以上）。このスコアは各アカウントの水準から今後の解約を"
                f"予測するため、ゆっくり動きます。下落アラートを運用するなら alert_drop を{max(q1, 1):.0f}点程度にすることを"
                "検討してください（下落が解約の警告になるかは下の検証を参照）。")
    return (f"\n\nNote: only {summary['falling']:,} of {summary['accounts']:,} accounts fell by {drop:g}+ points over "
            f"{months} months (the largest 1% of falls are {q1:.1f}+ points, 5% are {q5:.1f}+). This score forecasts churn "
            "from each account's level, so it moves slowly; to alert on drops, consider alert_drop of about "
            f"{max(q1, 1):.0f} (whether a drop is a warning at all: see the check below).")


DROP_VERDICT = {
    "warning": ("同じスコア水準でも、スコアの下落は解約の追加のシグナルです。下落アラートを運用する価値があります。",
                "At the same score level, a fall is an added churn warning: alerting on drops is worth it here."),
    "no_added_warning": ("同じスコア水準で比べると、下落したアカウントの解約は統計的に多いとは言えません。"
                         "アラートはスコアの水準（赤ティア）で十分で、下落そのものは追加の警告になっていません。",
                         "At the same score level, accounts whose score fell did not churn detectably more: the score "
                         "level (red tier) carries the warning, and a drop adds none that the data can show."),
    "inconclusive": ("スコアの下落が追加の警告になるかは、このデータでは判断できません（区間が広すぎます）。"
                     "当面はスコアの水準（赤ティア）でアラートを出し、下落アラートは参考扱いにしてください。",
                     "Whether a fall adds a warning cannot be told from these data (the interval is too wide): alert on "
                     "the score level (red tier) and treat drop alerts as indicative."),
    "not_estimable": ("下落したアカウントの解約が少なく、下落が警告になるかは判断できません。",
                      "Too few accounts whose score fell churned to tell whether a drop is a warning."),
}


def drop_check(drops: dict, language: str = "ja") -> str:
    """Whether a score drop is worth alerting on (health_drops.json), with the effect and its counts."""
    ja = language == "ja"
    verdict = drops.get("verdict", "not_estimable")
    text = DROP_VERDICT.get(verdict, DROP_VERDICT["not_estimable"])[0 if ja else 1]
    ind = drops.get(drops.get("basis") or "indicator", {})
    if "events" not in drops:
        cut = drops.get("cut", "—")
        return (f"スコアの下落が解約の警告になるかは、{cut}時点のスコア（それ以前のデータで推定）とその後の解約で検証しますが、"
                f"このデータではその時点のスコアが作れないため（それ以前のデータでスコアのモデルを推定できません）、まだ判断できません。" if ja else
                f"Whether a fall is a churn warning is checked out of time, on the score at {cut} (fitted on the months "
                f"before) and the churn after it; the score model cannot be fitted on the months before {cut} here, so "
                "it cannot be told yet.")
    counts = (f"検証は{drops['cut']}時点のスコア（それ以前のデータで推定したモデル）で、その後{drops['horizon_months']}か月の"
              f"解約を見ました: {drops['accounts']:,}アカウント、解約{drops['events']:,}件、うち{drops['alert_months']}か月で"
              f"{drops['alert_drop']:g}点以上下落した{drops['dropped']:,}件の解約{drops['events_dropped']:,}件。" if ja else
              f"Checked out of time at {drops['cut']} (model fitted on the months before), churn over the next "
              f"{drops['horizon_months']} months: {drops['accounts']:,} accounts, {drops['events']:,} churned; "
              f"{drops['dropped']:,} had fallen by {drops['alert_drop']:g}+ points over {drops['alert_months']} months, "
              f"{drops['events_dropped']:,} of them churned.")
    if ind.get("status") == "fitted":
        unit = ("下落あり対なし" if drops.get("basis") == "indicator" else "10点の下落あたり") if ja else \
            ("fell vs not" if drops.get("basis") == "indicator" else "per 10 points of fall")
        effect = (f"同じスコア水準での解約オッズ比（{unit}）{ind['odds_ratio']:.2f}（95%区間 {ind['ci_low']:.2f}〜"
                  f"{ind['ci_high']:.2f}）。" if ja else f"Odds ratio of churn at the same score level ({unit}) "
                  f"{ind['odds_ratio']:.2f} (95% interval {ind['ci_low']:.2f}–{ind['ci_high']:.2f}).")
        counts += " " + effect if not ja else effect
    return text + ("" if ja else " ") + counts


def changes(ch: dict, labels: dict[str, str], language: str = "ja", rows: int = 10, currency: str = "JPY") -> str:
    """"Since the last diagnosis" (changes.json): headline metrics then and now, triggers that appeared or
    disappeared (with intervals, and whether the change exceeds the noise), potential ranks that moved,
    tier migrations, and what became of the accounts the last playbook named."""
    ja = language == "ja"
    then, now = ch["previous_as_of"], ch["as_of"]
    out = [f"前回の診断（基準月 {then}、{ch['previous']}）と今回（{now}）の比較です（results/changes.json）。" if ja else
           f"Compared with the previous diagnosis (analysis month {then}, {ch['previous']}); now {now} "
           "(results/changes.json)."]
    a, b = ch.get("previous_client"), ch.get("client")
    if a and b and a != b:
        out.append(f"注意: 前回のフォルダは別のクライアント（{a}）の診断です。比較の前に previous を確認してください。" if ja else
                   f"Note: the previous folder is a diagnosis of another client ({a}); check 'previous' before reading on.")
    if then and now and then > now:
        out.append("注意: 前回の基準月が今回より後です。" if ja else "Note: the previous analysis month is after this one.")
    if ch.get("no_change"):
        out.append("前回から変化はありません。" if ja else "Nothing changed since the previous diagnosis.")
        return "\n\n".join(out)
    head = ["指標", "前回", "今回", "変化"] if ja else ["Metric", "Then", "Now", "Change"]
    body = []
    for key, m in ch["metrics"].items():
        spec = METRIC_LABELS.get(key.split(".")[0])
        if spec is None or key != key.split(".")[0]:
            continue
        kind = spec[2]
        body.append([spec[0 if ja else 1], _fmt(m["then"], kind, currency), _fmt(m["now"], kind, currency),
                     _delta(m["change"], kind, currency, language)])
    if body:
        out.append(_table(head, body))
    tr = ch["triggers"]
    for key, word in (("appeared", ("新たに検出されたトリガー", "Triggers that appeared")),
                      ("disappeared", ("検出されなくなったトリガー", "Triggers that disappeared"))):
        items = tr[key]
        if not items:
            continue
        lines = []
        for t_ in items:
            news = ("区間が前回と重ならない明確な変化" if ja else "a real change: the intervals differ") if t_["beyond_noise"] \
                else ("区間は前回と重なり、誤差の範囲" if ja else "within noise: the intervals overlap")
            lines.append(f"- {_label(labels, t_['kpi'])}（{outcome_short(t_['outcome'], language)}）: "
                         f"{_ci(t_['then'])} → {_ci(t_['now'])}、{news}" if ja else
                         f"- {_label(labels, t_['kpi'])} ({outcome_short(t_['outcome'], language)}): "
                         f"{_ci(t_['then'])} → {_ci(t_['now'])}; {news}")
        star = "（効果 [95%区間]、* はその時点で非検出）" if ja else " (effect [95% interval]; * = not flagged then)"
        out.append(f"**{word[0 if ja else 1]}**{star}\n\n" + "\n".join(lines))
    moved = ch["potential"]["moved"]
    if moved:
        real = [p for p in moved if p.get("beyond_noise")]
        lines = [f"- {_label(labels, p['kpi'])}: {p['rank_then']}位 → {p['rank_now']}位（LTV増分 "
                 f"{money(p['d_ltv_then'][0], currency)} → {money(p['d_ltv_now'][0], currency)}）" if ja else
                 f"- {_label(labels, p['kpi'])}: rank {p['rank_then']} → {p['rank_now']} (LTV gain "
                 f"{money(p['d_ltv_then'][0], currency)} → {money(p['d_ltv_now'][0], currency)})" for p in real[:rows]]
        head_ = (f"**改善ポテンシャル（LTV）の順位**: {len(moved)}件のKPIの順位が動き、そのうちLTV増分の変化が誤差"
                 f"（両方の95%区間）を超えるのは{len(real)}件です。" if ja else
                 f"**Improvement-potential ranks (LTV)**: {len(moved)} KPIs changed rank; for {len(real)} of them the "
                 "change of the LTV gain exceeds the noise of the two estimates (their 95% intervals).")
        out.append(head_ + ("\n\n" + "\n".join(lines) if lines else ""))
    mig = ch["tiers"]
    head = (["前回 \\ 今回"] + [_tier(t_, language) for t_ in ("red", "yellow", "green")] + ["解約", "対象外"]) if ja else \
        (["Then \\ now"] + [_tier(t_, language) for t_ in ("red", "yellow", "green")] + ["Churned", "Not scored"])
    body = [[_tier(a, language)] + [f"{mig['matrix'][a].get(b, 0):,}" for b in ("red", "yellow", "green", "churned", "not_scored")]
            for a in ("red", "yellow", "green")]
    out.append((f"ティアの移動: 悪化{mig['worse']:,}件、改善{mig['better']:,}件、新たに赤ティア{len(mig['newly_red']):,}件。" if ja else
                f"Tier migrations: {mig['worse']:,} worse, {mig['better']:,} better, {len(mig['newly_red']):,} newly red.")
               + "\n\n" + _table(head, body))
    same = ch.get("tiers_same_model")
    if same:
        out.append(f"同じ（今回の）スコアモデルで前回時点と今を比べると、悪化{same['worse']:,}件、改善{same['better']:,}件、"
                   f"新たに赤ティア{len(same['newly_red']):,}件です（モデルの変更ではなく、アカウントのデータの変化だけ）。" if ja else
                   f"Under this run's score model at both months (the accounts' data changed, not the model): "
                   f"{same['worse']:,} worse, {same['better']:,} better, {len(same['newly_red']):,} newly red.")
    pb = ch["playbook"]
    if pb["named"]:
        out.append(f"前回のプレイブックの{pb['named']:,}件のうち、解約{pb['churned']:,}件、回復（赤→黄・緑）{pb['recovered']:,}件、"
                   f"赤のまま{pb['still_red']:,}件、新たに赤{pb['turned_red']:,}件、赤以外のまま{pb['not_red']:,}件、"
                   f"今回は対象外{pb['not_scored']:,}件です。" if ja else
                   f"Of the {pb['named']:,} accounts the last playbook named, {pb['churned']:,} churned, "
                   f"{pb['recovered']:,} recovered (red → yellow or green), {pb['still_red']:,} are still red, "
                   f"{pb['turned_red']:,} turned red, {pb['not_red']:,} stayed out of red and {pb['not_scored']:,} "
                   "are not scored now.")
    return "\n\n".join(out)


def _delta(value: Any, kind: str, currency: str, language: str) -> str:
    """A change now − then with its sign: rates in percentage points, amounts and counts as they are."""
    if not _finite(value):
        return "—"
    v = float(value)
    if kind == "pct":
        return f"{100 * v:+.2f}{'ポイント' if language == 'ja' else ' pt'}".replace("-", "−")
    text = _fmt(abs(v), kind, currency)
    return ("−" if v < 0 else "+" if v > 0 else "±") + text


def _ci(e: dict | None) -> str:
    if not e or not _finite(e.get("effect")):
        return "—"
    tag = "" if e.get("trigger") else "*"
    return f"{float(e['effect']):.2f} [{float(e['ci_low']):.2f}, {float(e['ci_high']):.2f}]{tag}"


# --------------------------------------------------------------------------------------------------
# Summary first: the result files read back, the findings box, each section's one-line conclusion.
# Every number in these sentences is read from the result files (read_results), never recomputed.

NOT_ACTIONABLE = ("contract_months",)  # KPIs no CS action moves: kept in tables, apart in charts and summary


def read_results(results_dir: Any) -> dict:
    """The result files of one diagnosis (DESIGN §6) as the report's sentences use them.

    Returns a dict: ``quality``, ``kpi_summary``, ``health_validation``, ``run`` (dicts; empty when the
    file is absent), ``drivers``, ``drivers_outcomes``, ``potential``, ``playbook``, ``health_scores``
    (DataFrames).
    """
    import json
    from pathlib import Path

    root = Path(results_dir)

    def js(name: str) -> dict:
        p = root / name
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

    def csv(name: str) -> pd.DataFrame:
        p = root / name
        return pd.read_csv(p, dtype={"account_id": str}, keep_default_na=True) if p.is_file() else pd.DataFrame()

    return {
        "quality": js("quality.json"), "kpi_summary": js("kpi_summary.json"),
        "health_validation": js("health_validation.json"), "run": js("run.json"),
        "drivers": csv("drivers.csv"), "drivers_outcomes": csv("drivers_outcomes.csv"),
        "potential": csv("potential.csv"), "playbook": csv("playbook.csv"), "health_scores": csv("health_scores.csv"),
    }


def _flagged(drivers: pd.DataFrame, outcome: str, n: int = 2) -> pd.DataFrame:
    """The ``n`` strongest flagged triggers of ``outcome`` (largest |log effect| first)."""
    if drivers.empty or "trigger" not in drivers:
        return drivers
    d = drivers[(drivers["outcome"] == outcome) & drivers["trigger"].fillna("").astype(str).ne("")]
    if "segment" in d:
        d = d[d["segment"].isna() | d["segment"].astype(str).isin(["", "nan"])]
    d = d.assign(_size=np.abs(np.log(d["effect"].astype(float))))
    return d.sort_values("_size", ascending=False, kind="stable").head(n)


def credible_gains(potential: pd.DataFrame, actionable: bool = True) -> pd.DataFrame:
    """Rows of potential.csv the potential stage calls credible (its ``credible`` column: flagged by a
    model under the false-discovery control and an LTV gain above zero after it; without that column,
    an LTV interval above zero), largest first (only the KPIs a CS team can act on when ``actionable``)."""
    if potential.empty:
        return potential
    d = potential.dropna(subset=["d_ltv"])
    if actionable:
        d = d[~d["kpi"].isin(NOT_ACTIONABLE)]
    d = d[_is_credible(d)]
    return d.sort_values("d_ltv", ascending=False, kind="stable")


def _is_credible(d: pd.DataFrame) -> pd.Series:
    """potential.csv's ``credible`` decision (read back from CSV as bool or text); the interval above zero
    when the column is absent."""
    above = d["d_ltv_lo"] > 0
    if "credible" not in d:
        return above
    return above & d["credible"].astype(str).str.lower().isin(["true", "1"])


def _yen(value: Any, currency: str, language: str) -> str:
    """An amount in a sentence: 1.75億円 in Japanese, ¥174.7M in English (tables keep every digit)."""
    if language == "ja" or not _finite(value):
        return amount(value, currency, language)
    v = float(value)
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= size:
            x = abs(v) / size
            text = f"{x:,.0f}" if x >= 100 else f"{x:.1f}"
            sym = SYMBOL.get(currency)
            body = f"{sym}{text}{unit}" if sym else f"{text}{unit} {currency}"
            return ("-" if v < 0 else "") + body
    return money(value, currency)


def _effect_list(d: pd.DataFrame, labels: dict[str, str], language: str, word: str) -> str:
    """"A (hazard ratio 0.65) and B (1.43)" / 「A（ハザード比0.65）とB（同1.43）」."""
    items = []
    for i, r in enumerate(d.itertuples(index=False)):
        name = labels.get(r.kpi, r.kpi)
        if language == "ja":
            items.append(f"{name}（{word if i == 0 else '同'}{ratio(r.effect)}）")
        else:
            items.append(f"{name} ({word + ' ' if i == 0 else ''}{ratio(r.effect)})")
    if len(items) <= 1:
        return "".join(items)
    joint = "と" if language == "ja" else " and "
    return ("、".join(items[:-1]) if language == "ja" else ", ".join(items[:-1])) + joint + items[-1]


def finding_drivers(R: dict, labels: dict[str, str], language: str = "ja") -> str:
    """The KPIs a CS team can act on that drive churn and expansion (drivers.csv), one sentence."""
    ja = language == "ja"
    drivers = actionable(R["drivers"]) if len(R["drivers"]) else R["drivers"]  # not the tenure: no CS lever
    churn = _flagged(drivers, "churn")
    exp = _flagged(drivers, "expansion")
    if churn.empty and exp.empty:
        return ("偽発見率を抑えた検定では、解約や拡大と確かに関連するKPIは見つかりませんでした。" if ja else
                "No KPI is linked to churn or expansion once false discoveries are controlled.")
    if ja:
        parts = []
        if len(churn):
            parts.append("解約と最も強く関連するKPIは" + _effect_list(churn, labels, language, "ハザード比"))
        if len(exp):
            parts.append(("アップセル・クロスセルでは" if len(churn) else "アップセル・クロスセルと最も強く関連するKPIは")
                         + _effect_list(exp, labels, language, "オッズ比"))
        return "、".join(parts) + "です（KPIが1標準偏差高いときの値）。"
    parts = []
    if len(churn):
        parts.append("Churn is most strongly linked to " + _effect_list(churn, labels, language, "hazard ratio"))
    if len(exp):
        parts.append(("expansion to " if len(churn) else "Expansion is most strongly linked to ")
                     + _effect_list(exp, labels, language, "odds ratio"))
    return "; ".join(parts) + " (per +1 SD of the KPI)."


def finding_potential(R: dict, labels: dict[str, str], improvement_pct: float, currency: str = "JPY",
                      language: str = "ja") -> str:
    """The largest credible improvement (LTV interval above zero) in money, one sentence."""
    ja = language == "ja"
    pot = R["potential"]
    if pot.empty or pot["d_ltv"].isna().all():
        return ("改善ポテンシャルは、このデータでは推定できませんでした。" if ja else
                "The improvement potential could not be estimated from these data.")
    sure = credible_gains(pot)
    m = lambda v: _yen(v, currency, language)  # noqa: E731
    if sure.empty and (pot.dropna(subset=["d_ltv"])["d_ltv_lo"] > 0).any():
        return ("LTV増分の区間がプラスのKPIはありますが、多数の指標を同時に調べたことを考慮すると偶然と区別できず、"
                "確かな改善余地は示せません。" if ja else
                "Some KPIs' LTV intervals lie above zero, but with this many KPIs tested that is not told apart "
                "from chance: no improvement is shown to be worth it.")
    if sure.empty:
        return (f"どのKPIも、平均の{improvement_pct:g}%改善によるLTV増分の95%区間がゼロを含み、確かな改善余地は示せません。" if ja else
                f"For no KPI does the LTV gain of a {improvement_pct:g}% improvement have its 95% interval above zero.")
    r = sure.iloc[0]
    name = labels.get(r["kpi"], r["label"])
    if ja:
        return (f"最も確かな改善余地は{name}で、平均の{improvement_pct:g}%改善によりLTVが{m(r['d_ltv'])}"
                f"（95%区間 {m(r['d_ltv_lo'])}〜{m(r['d_ltv_hi'])}）増える見込みです。")
    return (f"The largest credible gain is {name}: improving it by {improvement_pct:g}% of its mean adds "
            f"{m(r['d_ltv'])} of LTV (95% interval {m(r['d_ltv_lo'])} to {m(r['d_ltv_hi'])}).")


def _f2(x: Any) -> str:
    return f"{float(x):.2f}" if _finite(x) else "—"


def finding_health(R: dict, language: str = "ja") -> str:
    """The health score's validated AUC, against the client's own score when it could be compared."""
    ja = language == "ja"
    hv = R["health_validation"]
    if hv.get("status") == "not_estimable":
        return ("ヘルススコアは、データが足りないため作成できませんでした。" if ja else
                "The health score could not be built: too little data.")
    v = hv.get("validation", {})
    if v.get("status") != "fitted":
        return ("ヘルススコアは作成しましたが、過去時点での検証はできませんでした。" if ja else
                "The health score was built but could not be validated on past data.")
    s, verdict = v["score"], v.get("verdicts", {}).get("auc")
    auc = f"{_f2(s['auc'])}（95%区間 {_f2(s['ci_low'])}〜{_f2(s['ci_high'])}）" if ja else \
        f"{_f2(s['auc'])} (95% interval {_f2(s['ci_low'])} to {_f2(s['ci_high'])})"
    chance = ("偶然より良く解約を予測しています" if verdict == "above_chance" else "偶然と区別できません") if ja else \
        ("better than chance" if verdict == "above_chance" else "not distinguishable from chance")
    text = (f"データに基づくヘルススコアは、過去時点のデータで作りその後{v.get('horizon_months')}か月の解約を予測させた検証で"
            f"AUC {auc}と、{chance}"
            if ja else
            f"The data-driven health score, built on past data and checked against the next "
            f"{v.get('horizon_months')} months' churn, reaches AUC {auc}: {chance}")
    c = v.get("client_score")
    if c and c.get("status") == "fitted":
        cv = c.get("verdict")
        if ja:
            text += "。貴社の現行スコア（AUC " + _f2(c["auc"]) + "）" + (
                "より優れています" if cv == "ours_better" else "の方が優れています" if cv == "client_better"
                else "との差は、このデータでは判断できません")
        else:
            text += "; the client's own score reaches AUC " + _f2(c["auc"]) + (
                ", which ours beats" if cv == "ours_better" else ", which beats ours" if cv == "client_better"
                else ", and the data cannot tell the two apart")
    elif c:
        text += ("。貴社の現行スコアとは比較できませんでした（解約したアカウントのスコアがありません）" if ja and
                 c.get("reason_code") == "client_score_snapshot" else
                 "。貴社の現行スコアとは比較できませんでした" if ja else
                 "; the client's own score could not be compared")
    return text + "。" if ja else text + "."


def playbook_focus(playbook: pd.DataFrame) -> tuple[str, int] | None:
    """The KPI most often named first for the red-tier accounts of the playbook, and how many."""
    if playbook.empty or "kpi_1" not in playbook:
        return None
    if "tier" in playbook:  # the playbook also lists falling accounts of other tiers
        playbook = playbook[playbook["tier"] == "red"]
    counts = playbook["kpi_1"].dropna().astype(str).value_counts()
    counts = counts[counts.index != ""]
    return (counts.index[0], int(counts.iloc[0])) if len(counts) else None


def finding_red(R: dict, labels: dict[str, str], language: str = "ja") -> str:
    """The red-tier count and what the playbook says about it."""
    ja = language == "ja"
    scores = R["health_scores"]
    if scores.empty or "tier" not in scores:
        return ""
    red = int((scores["tier"] == "red").sum())
    if red == 0:
        return "現在、赤ティアのアカウントはありません。" if ja else "No account is in the red tier now."
    focus = playbook_focus(R["playbook"])
    text = (f"現在契約中の{len(scores):,}件のうち赤ティアは{red:,}件で" if ja else
            f"{red:,} of the {len(scores):,} active accounts are in the red tier")
    if focus:
        name = labels.get(focus[0], focus[0])
        text += (f"、プレイブックではそのうち{focus[1]:,}件で{name}が最優先の改善点です。" if ja else
                 f"; the playbook names {name} first for {focus[1]:,} of them.")
    else:
        text += "。" if ja else "."
    return text


def finding_caveat(R: dict, language: str = "ja") -> str:
    """The one data caveat that matters most, in this order: a part not estimable, a coded warning
    (most rows affected), excluded rows, else that the links are associations."""
    ja = language == "ja"
    outcomes = R["drivers_outcomes"]
    if "status" in outcomes:
        bad = outcomes[~outcomes["status"].astype(str).eq("fitted")]
        if len(bad):
            names = ("、" if ja else ", ").join(outcome_short(o, language) for o in bad["outcome"])
            return (f"注意: {names}はイベントが少なく推定できていません。" if ja else
                    f"Caveat: {names} could not be estimated (too few events).")
    q = R["quality"]
    warnings = [w for w in q.get("warnings", []) if isinstance(w, dict) and w.get("severity") == "warning"]
    if warnings:
        top = max(warnings, key=lambda w: w.get("values", {}).get("n", 0) or 0)
        return ("データ上の注意: " if ja else "Data caveat: ") + notice(top, language)
    tables = q.get("tables", {})
    read = sum(t["read"] for t in tables.values())
    excluded = sum(sum(t.get("excluded", {}).values()) for t in tables.values())
    if read and excluded:
        return (f"データ上の注意: 読み込んだ{read:,}行のうち{excluded:,}行を除外しました（理由は品質の節）。" if ja else
                f"Data caveat: {excluded:,} of the {read:,} rows read were excluded (reasons in the quality section).")
    return ("いずれも観察データにおける関連で、KPIを改善すれば同じ効果が得られると保証するものではありません。" if ja else
            "All of these are associations in observational data, not proven effects of changing a KPI.")


def findings(R: dict, labels: dict[str, str], improvement_pct: float = 10, currency: str = "JPY",
             language: str = "ja") -> list[str]:
    """The findings box's sentences (3-5), each from the result files."""
    out = [finding_drivers(R, labels, language), finding_potential(R, labels, improvement_pct, currency, language),
           finding_health(R, language), finding_red(R, labels, language), finding_caveat(R, language)]
    return [s for s in out if s]


def findings_html(sentences: list[str], language: str = "ja") -> str:
    """The findings box as HTML (the first thing the report shows)."""
    import html

    head = "主な所見" if language == "ja" else "Key findings"
    items = "".join(f"<li>{html.escape(s)}</li>" for s in sentences)
    return (f'<div class="cskit-findings" style="border:2px solid #1f4e79;border-radius:6px;padding:10px 18px;'
            f'margin:12px 0;background:#f3f7fb"><h2 style="margin-top:4px">{head}</h2>'
            f'<ul style="line-height:1.7">{items}</ul></div>')


def conclusion(text: str) -> str:
    """A section's one-line conclusion, as it opens the section."""
    return f"**{text}**" if text else ""


def conclusion_metrics(R: dict, currency: str = "JPY", language: str = "ja") -> str:
    """MRR, paying accounts, NRR and monthly churn (kpi_summary.json) in one line."""
    s = R["kpi_summary"]
    val = lambda k: (s.get(k) or {}).get("value")  # noqa: E731
    ja = language == "ja"
    parts = []
    if _finite(val("mrr")):
        parts.append((f"MRRは{_yen(val('mrr'), currency, language)}（課金アカウント{int(val('paying_accounts') or 0):,}件）" if ja
                      else f"MRR is {_yen(val('mrr'), currency, language)} from {int(val('paying_accounts') or 0):,} paying accounts"))
    if _finite(val("nrr")):
        parts.append(f"NRRは{pct(val('nrr'))}" if ja else f"NRR {pct(val('nrr'))}")
    if _finite(val("customer_churn_rate")):
        parts.append(f"月次の顧客解約率は{pct(val('customer_churn_rate'))}" if ja else
                     f"monthly customer churn {pct(val('customer_churn_rate'))}")
    if not parts:
        return ""
    return ("、".join(parts) + "です。") if ja else (", ".join(parts) + ".")


BRIEF_METRICS = ("mrr", "arr", "paying_accounts", "customer_churn_rate", "grr", "nrr", "ltv_survival", "nps")


def metrics_brief(summary: dict, currency: str = "JPY", language: str = "ja") -> str:
    """The main headline KPIs (the full list is in the appendix) as a two-column table."""
    w = W[language]
    rows = []
    for key in BRIEF_METRICS:
        entry = summary.get(key)
        if not entry or key not in METRIC_LABELS:
            continue
        ja_label, en_label, kind = METRIC_LABELS[key]
        value = entry.get("value")
        shown = _yen(value, currency, language) if kind == "money" else _fmt(value, kind, currency)
        rows.append([ja_label if language == "ja" else en_label, shown, _period(entry.get("period", ""), language)])
    return _table([w["metric"], w["value"], w["period"]], rows)


def conclusion_triggers(R: dict, labels: dict[str, str], alpha: float = 0.05, language: str = "ja") -> str:
    """How many triggers each outcome has, with the false-discovery control."""
    ja = language == "ja"
    d = R["drivers"]
    if d.empty:
        return ""
    flagged = d[d["trigger"].fillna("").astype(str).ne("")]
    if "segment" in flagged:
        flagged = flagged[flagged["segment"].isna() | flagged["segment"].astype(str).isin(["", "nan"])]
    n = {o: int((flagged["outcome"] == o).sum()) for o in ("churn", "renewal", "expansion")}
    if ja:
        return (f"偽発見率{pct(alpha, 0)}の基準で選んだトリガーは、解約 {n['churn']}個、契約更新 {n['renewal']}個、"
                f"アップセル・クロスセル {n['expansion']}個です。")
    return (f"At a false-discovery rate of {pct(alpha, 0)}: {n['churn']} churn, {n['renewal']} renewal and "
            f"{n['expansion']} expansion trigger{'' if n['expansion'] == 1 else 's'}.")


def conclusion_potential(R: dict, labels: dict[str, str], improvement_pct: float = 10, currency: str = "JPY",
                         language: str = "ja") -> str:
    """How many actionable KPIs have an LTV gain above zero, and how many cannot be told from zero."""
    ja = language == "ja"
    pot = R["potential"]
    if pot.empty or pot["d_ltv"].isna().all():
        return "このデータでは改善ポテンシャルを推定できませんでした。" if ja else "No improvement potential could be estimated."
    act = pot[~pot["kpi"].isin(NOT_ACTIONABLE)].dropna(subset=["d_ltv"])
    sure = credible_gains(pot)
    unsure = act[~_is_credible(act) & ~(act["d_ltv_hi"] < 0)]
    if ja:
        return (f"CSが動かせるKPI {len(act)}個のうち、{improvement_pct:g}%改善のLTV増分が確かにプラスなのは{len(sure)}個、"
                f"{len(unsure)}個はゼロと区別できません。")
    return (f"Of {len(act)} KPIs a CS team can move, {len(sure)} show an LTV gain clearly above zero when improved by "
            f"{improvement_pct:g}%; for {len(unsure)} the gain cannot be told from zero.")


AUC_WORDS = {"above_chance": ("偶然より良く解約を予測します", "ranks churn better than chance"),
             "not_distinguishable": ("偶然と区別できません", "cannot be told from chance")}
CALIBRATION_WORDS = {
    "adequate": ("予測した解約確率の水準も実際と合っています", "its predicted churn level matches the observed one"),
    "under_predicts": ("予測した解約確率は実際より低めです", "it under-predicts the level of churn"),
    "over_predicts": ("予測した解約確率は実際より高めです", "it over-predicts the level of churn"),
}
TIER_ORDER_WORDS = {  # {tiers}: the two tiers compared (verdicts.tiers_compared); {left}: the one too small
    "ordered": ("解約は赤・黄・緑の順に少なくなっています", "churn falls from the red to the yellow to the green tier"),
    "ordered_among_compared": ("解約は{tiers}の順に少なくなっています（{left}ティアは件数が少なく比べていません）",
                               "churn falls from the {tiers} tier (the {left} tier held too few accounts to compare)"),
    "not_ordered": ("ただしティアの順序どおりには解約が起きていません", "but the tiers do not order churn"),
    "not_estimable": ("ティアの順序は読めません（比べられる件数のティアが2つありません）",
                      "the tier order cannot be read (fewer than two tiers held enough accounts to compare)"),
}
# after an AUC that cannot be told from chance, the tiers' disorder is one more weakness, not a contrast
TIER_DISORDER_AFTER_CHANCE = ("また、ティアの順序どおりには解約が起きていません", "nor do the tiers order churn")


def conclusion_health(R: dict, language: str = "ja") -> str:
    """The validation verdicts of health_validation.json (AUC, tier order, calibration) in one line; the
    tier order names only the tiers the stage compared (``verdicts.tiers_compared``)."""
    from cskit.health import TIERS

    ja = language == "ja"
    i = 0 if ja else 1
    hv = R["health_validation"]
    v = hv.get("validation", {})
    if hv.get("status") == "not_estimable":
        return "ヘルススコアは作成できませんでした。" if ja else "The health score could not be built."
    if v.get("status") != "fitted":
        return "ヘルススコアは過去時点で検証できませんでした。" if ja else "The health score could not be validated."
    vd = v.get("verdicts", {})
    auc = AUC_WORDS.get(vd.get("auc"), ("", ""))[i]
    seen = vd.get("tiers_compared", [])
    order = TIER_ORDER_WORDS.get(vd.get("tier_order"), ("", ""))[i].format(
        tiers=("・" if ja else " to the ").join(_tier(t, language) for t in seen),
        left="".join(_tier(t, language) for t in TIERS if t not in seen))
    if vd.get("tier_order") == "not_ordered" and vd.get("auc") == "not_distinguishable":
        order = TIER_DISORDER_AFTER_CHANCE[i]
    cal = CALIBRATION_WORDS.get(vd.get("calibration"), ("", ""))[i]
    words = [w for w in (order, cal) if w]  # (no calibration words where it was not estimable)
    if ja:
        return f"ヘルススコア（AUC {_f2(v['score']['auc'])}）は{auc}。" + "".join(f"{w}。" for w in words)
    return f"The health score (AUC {_f2(v['score']['auc'])}) {'; '.join([auc, *words])}."


def conclusion_quality(R: dict, language: str = "ja") -> str:
    """Rows read and excluded (quality.json) and the number of notices, in one line."""
    ja = language == "ja"
    q = R["quality"]
    tables = q.get("tables", {})
    read = sum(t["read"] for t in tables.values())
    excluded = sum(sum(t.get("excluded", {}).values()) for t in tables.values())
    n_warn = sum(1 for w in q.get("warnings", []) if isinstance(w, dict) and w.get("severity") == "warning")
    if ja:
        text = (f"読み込んだ{read:,}行のうち{excluded:,}行（{pct(excluded / read) if read else '—'}）を理由を付けて除外しました。"
                if excluded else f"読み込んだ{read:,}行をすべて使いました。")
        return text + (f"データに関する警告が{n_warn}件あります。" if n_warn else "")
    text = (f"{excluded:,} of the {read:,} rows read ({pct(excluded / read) if read else '—'}) were excluded, each "
            "with its reason." if excluded else f"All {read:,} rows read were used.")
    return text + (f" {n_warn} data warning{'' if n_warn == 1 else 's'}." if n_warn else "")


CHART_TITLES = {
    "bridge": ("月次MRRブリッジ（新規・拡大・再開と縮小・解約）", "Monthly MRR bridge (new, expansion, reactivation; contraction, churn)"),
    "rates": ("月次解約率の推移", "Monthly churn rates"),
    "cohorts": ("開始コホート別の継続率", "Retention by start cohort"),
    "potential": ("KPIを{pct}%改善した場合のLTV増分（95%区間）", "LTV gain of a {pct}% KPI improvement (95% interval)"),
    "points": ("ヘルススコアの配点（合計100点）", "Health-score points (sum to 100)"),
    "tiers": ("ティア別の解約率（過去時点で採点、その後{h}か月）", "Churn by tier (scored in the past, next {h} months)"),
    "calibration": ("予測と実際の解約率（十分位ごと）", "Predicted vs observed churn (deciles)"),
    "tier_mix": ("月別のティア構成（過去12か月）", "Tier mix by month (last 12 months)"),
    "score_bands": ("スコア分布の推移（中央値と四分位）", "Score distribution by month (median and quartiles)"),
}


def chart_title(key: str, language: str = "ja", **values: Any) -> str:
    """A chart's title (every chart of the report has one)."""
    ja, en = CHART_TITLES[key]
    return (ja if language == "ja" else en).format(**values)


def footer(run: dict, as_of: Any, language: str = "ja") -> str:
    """The report's last line: cskit version, analysis month, and where the run's record is."""
    month = pd.Timestamp(as_of).strftime("%Y-%m")
    version = run.get("cskit_version", "")
    made = run.get("params_file") or ""
    if language == "ja":
        return (f"---\n\n<small>cskit {version}｜分析基準月 {month}｜パラメータ・入力ファイルの指紋: results/run.json"
                + (f"（{made}）" if made else "") + "</small>")
    return (f"---\n\n<small>cskit {version} · analysis month {month} · params and input fingerprints: results/run.json"
            + (f" ({made})" if made else "") + "</small>")


def actionable(table: pd.DataFrame, by: str = "kpi") -> pd.DataFrame:
    """The rows of KPIs a CS team can act on (the potential chart and the summary leave out
    :data:`NOT_ACTIONABLE`, which the full table keeps, labelled)."""
    return table[~table[by].isin(NOT_ACTIONABLE)]


def triggers_brief(drivers: pd.DataFrame, outcomes: pd.DataFrame, labels: dict[str, str], alpha: float = 0.05,
                   language: str = "ja", fdr: str = "Benjamini–Hochberg") -> str:
    """The triggers section's text: what is tested, then one line per outcome (events, triggers, the
    strongest with its interval, the smallest detectable effect); the full list is in the appendix."""
    ja = language == "ja"
    info = outcomes.set_index("outcome") if "outcome" in outcomes else pd.DataFrame()
    lines = [
        (f"各KPIを1標準偏差（SD）上げたときの、解約・契約更新・アップセル/クロスセルとの関連です。多数のKPIを同時に調べるため、"
         f"偽発見率（FDR）を{fdr}法で{pct(alpha, 0)}に抑えた基準を満たすものだけをトリガーとしています。" if ja else
         f"The link of +1 standard deviation (SD) of each KPI with churn, renewal and expansion. Many KPIs are tested at "
         f"once, so only those passing a false-discovery rate of {pct(alpha, 0)} ({fdr}) are called triggers."), ""]
    for outcome in ("churn", "renewal", "expansion"):
        row = info.loc[outcome] if outcome in info.index else pd.Series(dtype=object)
        events = row.get("events")
        head = f"- **{outcome_title(outcome, language)}**: "
        if str(row.get("status", "fitted")) != "fitted":
            lines.append(head + (f"イベントが{int(events):,}件と少なく、推定していません（関連が「ない」という意味ではありません）。" if ja
                                 else f"only {int(events):,} events: not estimated (this does not mean there is no link).")
                         if _finite(events) else head + ("推定していません。" if ja else "not estimated."))
            continue
        d = drivers[drivers["outcome"] == outcome]
        if "segment" in d:
            d = d[d["segment"].isna() | d["segment"].astype(str).isin(["", "nan"])]
        flagged = d[d["trigger"].fillna("").astype(str).ne("")]
        top = _flagged(drivers, outcome, 1)
        ev = (f"イベント{int(events):,}件、" if ja else f"{int(events):,} events, ") if _finite(events) else ""
        mde = row.get("mde_per_sd")
        power = ((f"検出できる最小の効果は1SDあたり{ratio(mde)}倍。" if ja else
                  f"smallest detectable effect {ratio(mde)} per SD.") if _finite(mde) else "")
        if len(top):
            r = top.iloc[0]
            strongest = (f"最も強いのは{labels.get(r['kpi'], r['kpi'])} {ratio(r['effect'])} "
                         f"[{ratio(r['ci_low'])}, {ratio(r['ci_high'])}]。" if ja else
                         f"strongest {labels.get(r['kpi'], r['kpi'])} {ratio(r['effect'])} "
                         f"[{ratio(r['ci_low'])}, {ratio(r['ci_high'])}]; ")
            n = len(flagged)
            lines.append(head + ev + (f"トリガー{n}個。" if ja else f"{n} trigger{'' if n == 1 else 's'}, ")
                         + strongest + power + _chance_text(flagged, labels, language, alpha).replace("\n\n", "" if ja else " "))
        else:
            lines.append(head + ev + ("基準を満たすKPIはありません。" if ja else "no KPI passes the control; ") + power)
    lines += ["", "> " + ("これらは観察データにおける関連であり、因果関係を示すものではありません。トリガーは「どこを見るべきか」の手がかりです。"
                          if ja else "These are associations in observational data, not proven causes: a trigger "
                          "says where to look, not what will happen if the KPI is changed.")]
    return "\n".join(lines)


def chart_rows(table: pd.DataFrame, others: int = 5) -> pd.DataFrame:
    """The potential chart's rows: every actionable KPI whose LTV interval is clear of zero, then the
    ``others`` largest of the rest by |LTV gain| (all of them are in the appendix table), by LTV gain."""
    d = actionable(table).dropna(subset=["d_ltv"])
    clear = (d["d_ltv_lo"] > 0) | (d["d_ltv_hi"] < 0)
    rest = d[~clear].assign(_s=d.loc[~clear, "d_ltv"].abs()).sort_values("_s", ascending=False, kind="stable")
    keep = pd.concat([d[clear], rest.head(others).drop(columns="_s")])
    return keep.sort_values("d_ltv", ascending=False, kind="stable")


def potential_title_lines(heading: dict, currency: str, improvement_pct: float, language: str = "ja") -> tuple[str, str]:
    """The workbook's title block: (title with the client, one line of as-of month, horizon,
    currency and improvement %)."""
    client = heading.get("client", "")
    h, ltv = heading.get("horizon_months"), heading.get("ltv_months")
    if language == "ja":
        return (f"改善ポテンシャル（KPIを平均の{improvement_pct:g}%改善した場合の増分）: {client}",
                f"分析基準月 {heading.get('as_of', '')}｜投影期間 {h}か月（LTVは{ltv}か月）｜通貨 {currency}｜"
                f"改善幅 各KPIの平均の{improvement_pct:g}%")
    return (f"Improvement potential (gain from improving each KPI by {improvement_pct:g}% of its mean): {client}",
            f"Analysis month {heading.get('as_of', '')} · horizon {h} months ({ltv} for LTV) · currency {currency} · "
            f"improvement {improvement_pct:g}% of each KPI's mean")
