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


def amount(value: Any, currency: str = "JPY", language: str = "ja") -> str:
    """An amount for a table or sentence: in a Japanese report, yen of 10,000 or more in 万 / 億
    (``¥1.75億``, ``¥9,901万``, ``¥25.9万``, three significant figures at least); otherwise :func:`money`."""
    if not _finite(value) or language != "ja" or currency != "JPY" or abs(float(value)) < 1e4:
        return money(value, currency)
    v = float(value)
    size, unit = (1e8, "億") if abs(v) >= 1e8 else (1e4, "万")
    x = abs(v) / size
    digits = ",.0f" if x >= 100 else ".1f" if x >= 10 else ".2f"
    return f"{'-' if v < 0 else ''}¥{x:{digits}}{unit}"


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
GROUP_BY = {"all": ("全体", "all"), "segment": ("セグメント", "segment"), "plan": ("プラン", "plan"),
            "contract_type": ("契約形態", "contract_type"), "onboarding": ("オンボード", "onboarding"),
            "role": ("役割", "role")}
GROUP_VALUES = {
    "all": "全体", "annual": "年間契約", "monthly": "月次契約", "completed": "完了", "not completed": "未完了",
    "admin": "管理者", "decision_maker": "意思決定者", "end_user": "エンドユーザー", "(none)": "（未記入）",
}


def grouping_name(group_by: str, language: str = "ja") -> str:
    """A grouping (``segment``, ``contract_type`` …) as the report names it; English keeps the key."""
    ja, en = GROUP_BY.get(group_by, (group_by, group_by))
    return ja if language == "ja" else en


def group_name(group: Any, language: str = "ja") -> str:
    """A group value cskit itself writes (``all``, ``annual``, ``completed`` …, and the usual NPS roles)
    in Japanese; a client's own values (segment or plan names) are shown as they are."""
    text = str(group)
    return GROUP_VALUES.get(text, text) if language == "ja" else text


def relabel_groups(curves: pd.DataFrame, language: str = "ja") -> pd.DataFrame:
    """The survival curves with their ``group`` values named for the report (legend labels)."""
    return curves.assign(group=[group_name(g, language) for g in curves["group"]])


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def quality(q: dict, language: str = "ja") -> str:
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
    if ja:
        return "\n".join(text + ["", explain_warnings(warnings, "ja", w["warnings"])])
    return "\n".join(text + ["", f"**{w['warnings']}**", ""] + [f"- {m}" for m in warnings])


# Warnings are written in English by the stage modules. In a Japanese report each kind the pattern
# recognises (by its fixed wording in load.py, triggers.py, health.py) gets a Japanese title and one
# line saying what it means; the English message follows as the detail. Anything not recognised is
# listed as a technical note in English, labelled as such.
WARNING_KINDS: list[tuple[str, str, str]] = [
    (r"^\S+\.\S+: [\d,]+ row\(s\) excluded", "行の除外",
     "条件を満たさない行を除外しました（件数と理由は上の表）。"),
    (r"^\S+\.\S+: [\d,]+ cell\(s\) ", "不正な値",
     "数値や日付として読めない値のセルを「未計測（空欄）」として扱い、行は残しました。"),
    (r"params columns\.", "列名の対応", "パラメータで指定した列名がデータにありません。params の columns を確認してください。"),
    (r"^accounts\.churn_date: .*churn after the analysis month", "基準月より後の解約",
     "分析基準月より後に解約したアカウントは、基準月の時点では契約中として扱いました。"),
    (r"the column has no (numeric )?values", "値のない列", "値が入っていない列は、KPIとして使っていません。"),
    (r"^accounts\.contract_type: .*unknown contract type", "不明な契約形態",
     "契約形態が読めない行は月次契約として扱いました。"),
    (r"^accounts\.referred_by: ", "紹介元の不一致", "存在しないアカウントを紹介元とする紹介は無視しました。"),
    (r"^revenue\.mrr: .*share an account x month x product", "売上行の重複",
     "同じアカウント・月・商品の売上行は、MRRを合算しました。"),
    (r"^kpis\.contract_months: ignored", "契約月数の列",
     "契約月数は契約開始日から計算するため、入力された列は使っていません。"),
    (r"^kpis: [\d,]+ column\(s\) are mostly text", "文字列の列", "数値でない列は、KPIとして使っていません。"),
    (r"^as_of is not set", "分析基準月", "分析基準月が指定されていないため、売上データの最終月を基準月にしました。"),
    (r"not part of the input contract", "対象外の表", "入力仕様にない表は読み込んでいません。"),
    (r"was read as Shift_JIS", "文字コード", "ファイルをShift_JISとして読み込みました（結果への影響はありません）。"),
    (r"DuckDB could not parse it", "読込方法", "ファイルを別の方法（pandas）で読み込みました。"),
    (r"^[\d,]+ KPI\(s\) are heavily skewed", "分布の偏りが大きいKPI",
     "値の偏りが大きいKPIは log(1 + 値) に変換してモデル化しました。+1SDは「一定の倍率で増える」と読んでください（対応は不要）。"),
    (r"^KPI '.+' was left out of the", "モデルから外したKPI",
     "他のKPIとほぼ同じ動きをする（共線性）か欠測が多いため、一部のモデルから外したKPIがあります。"),
    (r"^Outcome \w+ \(\w+\): only [\d,]+", "イベント不足",
     "イベントが少なすぎるため、この結果のモデルは推定していません（トリガーがないことは関連がないことを意味しません）。"),
    (r"model did not converge", "推定の不収束", "モデルの推定が収束しなかったため、その結果の効果と区間は信頼できません。"),
    (r"^The renewal \(CRTT\) GEE", "更新モデルの相関構造",
     "更新モデルを独立作業相関で推定し直しました（効果は有効、区間がやや広くなることがあります）。"),
    (r"^No KPI is linked to churn at q", "解約に関連するKPIなし",
     "解約と有意に関連するKPIがないため、ヘルススコアは参考値です。"),
    (r"^Health score: \S+ gets no points", "配点のない契約状況項目",
     "ある水準で解約が全く（またはすべて）起きておらず効果を推定できないため、その項目には配点していません。"),
    (r"could not be validated out of time", "時点外検証できず", "ヘルススコアの時点外検証ができませんでした。"),
]


def warning_kind(message: str) -> tuple[str, str] | None:
    """(Japanese title, one-line explanation) of a module warning, or None when not recognised."""
    for pattern, title, explanation in WARNING_KINDS:
        if re.search(pattern, message):
            return title, explanation
    return None


def explain_warnings(messages: list[str], language: str = "ja", heading: str | None = None) -> str:
    """Module warnings for the report. English: the messages as bullets under ``heading``. Japanese:
    one bullet per recognised kind (title and explanation) with its English messages under it, then
    the unrecognised ones under "技術的な注記（英語）"."""
    if not messages:
        return ""
    if language != "ja":
        head = [f"**{heading}**", ""] if heading else []
        return "\n".join(head + [f"- {m}" for m in messages])
    kinds: dict[tuple[str, str], list[str]] = {}
    other = []
    for m in messages:
        k = warning_kind(m)
        if k is None:
            other.append(m)
        else:
            kinds.setdefault(k, []).append(m)
    lines = [f"**{heading}**", ""] if heading else []
    for (title, explanation), found in kinds.items():
        lines.append(f"- **{title}**（{len(found)}件）: {explanation}")
        lines += [f"    - 詳細（英語）: {m}" for m in found]
    if other:
        lines += (["", "**技術的な注記（英語）**", ""] if lines else ["**技術的な注記（英語）**", ""])
        lines += [f"- {m}" for m in other]
    return "\n".join(lines)


def metrics(summary: dict, currency: str = "JPY", language: str = "ja") -> str:
    """The headline KPIs of kpi_summary.json as a table (value, period, note when missing)."""
    w = W[language]
    rows = []
    for key, (ja, en, kind) in METRIC_LABELS.items():
        entry = summary.get(key)
        if not entry:
            continue
        label = ja if language == "ja" else en
        rows.append([label, _fmt(entry.get("value"), kind, currency), _period(entry.get("period", ""), language),
                     entry.get("note", "")])
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
) -> str:
    """What +x% of each KPI is worth: the scenario in words, the KPIs whose LTV gain has an interval
    above zero (largest first), how many intervals include zero, why any cell is empty, the caveat."""
    m = lambda v: amount(v, currency, language)  # noqa: E731
    d = table.dropna(subset=["d_ltv"])
    sure = d[d["d_ltv_lo"] > 0].sort_values("d_ltv", ascending=False, kind="stable")
    unsure = d[~(d["d_ltv_lo"] > 0) & ~(d["d_ltv_hi"] < 0)]
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
            items = "、".join(f"**{r.label}**（LTV {_interval(r.d_ltv, r.d_ltv_lo, r.d_ltv_hi, m)}）"
                              for r in sure.head(top).itertuples())
            text.append(f"LTVの増分が区間ごとプラスになったのは{len(sure)}指標で、大きい順に {items} です。")
        else:
            text.append("どのKPIについても、LTV増分の95%区間がゼロを含みます。このデータからは、改善の価値を確かに言えるKPIはありません。")
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
            items = ", ".join(f"**{r.label}** (LTV {_interval(r.d_ltv, r.d_ltv_lo, r.d_ltv_hi, m)})"
                              for r in sure.head(top).itertuples())
            text.append(f"{len(sure)} KPIs have an LTV gain whose interval is above zero; the largest: {items}.")
        else:
            text.append("For every KPI the 95% interval of the LTV gain includes zero: the data cannot say that "
                        "improving any one of them is worth something.")
        if len(unsure):
            text.append(f"For {len(unsure)} KPIs the interval crosses zero: the data cannot tell whether improving "
                        "them is worth anything.")
    if notes and d.empty:
        notes = {k: v for k, v in notes.items() if k in OUTCOME_NOTES} or notes
    if notes:
        text += [""] + [f"- {k}: {v}" for k, v in sorted(notes.items())]
    text += ["", f"> {caveat}"]
    return "\n".join(text)


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


def potential_table(
    table: pd.DataFrame, currency: str = "JPY", language: str = "ja", rates: Any = ()
) -> str:
    """The improvement-potential table as Markdown, each amount with its [95% interval]; the mean and
    improvement of the KPIs named in ``rates`` (shares, e.g. an open rate) as % and points."""
    m = lambda v: amount(v, currency, language)  # noqa: E731
    rates = set(rates or ())
    rows = []
    for r in table.itertuples(index=False):
        share = r.kpi in rates if hasattr(r, "kpi") else False
        mean = pct(r.mean) if share else _num(r.mean)
        step = (f"{100 * float(r.improvement):+.1f}pt" if _finite(r.improvement) else "—") if share else _num(r.improvement)
        cells = [r.label, r.category, mean, step]
        for col in ("d_ltv", "d_expansion", "d_new", "d_downgrade", "d_churn"):
            cells.append(_interval(getattr(r, col), getattr(r, f"{col}_lo"), getattr(r, f"{col}_hi"), m))
        rows.append(cells)
    return _table(POTENTIAL_HEAD[language], rows)


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


def health_not_estimable(v: dict, language: str = "ja") -> str:
    """The health section when the score could not be built (health_validation.json with status
    "not_estimable"): what is missing from the report and why."""
    if language == "ja":
        return ("**ヘルススコアは作成できませんでした。** " + health_reason(v, "ja") + "\n\n"
                "そのため、スコアと配点、ティア（赤・黄・緑）、時点外検証、プレイブック、オンボードの検証、タッチモデルは"
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
    if v.get("status") != "ok":
        reason = v.get("reason", "")
        return (f"時点外検証はできませんでした（{reason}）。スコアは参考値として扱ってください。" if ja else
                f"The score could not be validated out of time ({reason}); treat it as indicative only.")
    s = v["score"]
    auc = _interval(s["auc"], s["ci_low"], s["ci_high"], lambda x: f"{float(x):.2f}")
    by_tier = {r["tier"]: r for r in v.get("by_tier", [])}
    tier_rates = ("、" if ja else ", ").join(
        f"{_tier(t, language)} {pct(r['churn_rate'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]"
        for t, r in by_tier.items() if r.get("n")
    )
    if ja:
        text = (f"**時点外検証**: {cut}時点までのデータでモデルを作り、その時点のアカウント{v['n_accounts']:,}件を採点して、"
                f"その後{h}か月の解約（{v['n_churned']:,}件）を予測できたかを確かめました。"
                f"AUC {auc}、C統計量 {v['score']['concordance']:.2f}{_auc_reading(s, language)}。"
                f"ティア別の解約率: {tier_rates}。")
    else:
        text = (f"**Out-of-time validation**: the model was fitted on data up to {cut}, the {v['n_accounts']:,} accounts "
                f"active then were scored, and their churn over the next {h} months ({v['n_churned']:,} churned) "
                f"was compared: AUC {auc}, concordance {v['score']['concordance']:.2f}{_auc_reading(s, language)}. "
                f"Churn by tier: {tier_rates}.")
    text += tier_order_text(v.get("by_tier", []), language) + calibration_text(v, language)
    c = v.get("client_score")
    if c and c.get("status") not in (None, "ok"):
        text += (f"\n\n貴社の現行ヘルススコアとは比較できませんでした。理由（英語）: {c.get('reason', '')}" if ja else
                 f"\n\nThe client's current health score could not be compared: {c.get('reason', '')}")
    if c and c.get("status") == "ok":
        cauc = _interval(c["auc"], c["ci_low"], c["ci_high"], lambda x: f"{float(x):.2f}")
        dd = c["auc_difference"]
        diff = _interval(dd["ours_minus_client"], dd["ci_low"], dd["ci_high"], lambda x: f"{float(x):+.2f}")
        better = dd["ci_low"] > 0
        worse = dd["ci_high"] < 0
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


def _auc_reading(s: dict, language: str) -> str:
    """What the AUC's interval says: above chance (0.5) or not distinguishable from it."""
    ja = language == "ja"
    lo = s.get("ci_low")
    if not _finite(lo):
        return ""
    if float(lo) > 0.5:
        return ("（AUCは0.5が偶然と同じ、1.0が完全な予測。区間は0.5を上回り、偶然よりは解約を順位付けています）" if ja else
                " (AUC 0.5 is chance, 1.0 perfect; the interval is above 0.5: the score ranks churn better than chance)")
    return ("（AUCは0.5が偶然と同じ、1.0が完全な予測。区間が0.5を含み、このデータでは偶然と区別できません）" if ja else
            " (AUC 0.5 is chance, 1.0 perfect; the interval includes 0.5: the data cannot tell the score from chance)")


def tier_order_text(by_tier: list[dict], language: str = "ja") -> str:
    """A warning when, out of time, a riskier tier did not churn more than the next one (red > yellow > green)."""
    rate = {r["tier"]: r["churn_rate"] for r in by_tier if r.get("n") and _finite(r.get("churn_rate"))}
    for a, b in (("red", "yellow"), ("yellow", "green")):
        if a in rate and b in rate and rate[a] <= rate[b]:
            if language == "ja":
                return (f"ただし、{_tier(a, language)}ティアの解約率（{pct(rate[a])}）が{_tier(b, language)}ティア"
                        f"（{pct(rate[b])}）以下で、ティアの順序どおりには解約が起きていません。ティアは目安として使ってください。")
            return (f" But the {_tier(a, language)} tier churned no more than the {_tier(b, language)} tier "
                    f"({pct(rate[a])} vs {pct(rate[b])}): the tiers did not order churn; use them as a rough guide.")
    return ""


def calibration_text(v: dict, language: str = "ja") -> str:
    """Mean predicted vs observed churn in the validation window; "lower/higher" only when the mean
    prediction lies outside the observed rate's 95% Wilson interval."""
    pred, obs = v.get("predicted_rate"), v.get("observed_rate")
    n, k = v.get("n_accounts"), v.get("n_churned")
    if not (_finite(pred) and _finite(obs)):
        return ""
    verdict = ""
    if _finite(n) and _finite(k) and n > 0:
        from cskit.stats import wilson

        lo, hi = wilson(k, n)
        if pred < lo:
            verdict = "予測は実際より低めです" if language == "ja" else "the model under-predicts churn"
        elif pred > hi:
            verdict = "予測は実際より高めです" if language == "ja" else "the model over-predicts churn"
    if language == "ja":
        return (f"予測した解約確率の平均は {pct(pred)}、実際の解約率は {pct(obs)} でした" +
                (f"（{verdict}。順位付けには使えますが、確率の値そのものは割り引いて読んでください）。" if verdict else "。"))
    return (f" Mean predicted churn {pct(pred)}, observed {pct(obs)}" +
            (f": {verdict} (use the score to rank accounts, not its probabilities at face value)." if verdict else "."))


def _tier(tier: str, language: str) -> str:
    names = {"red": ("赤", "red"), "yellow": ("黄", "yellow"), "green": ("緑", "green")}
    ja, en = names.get(tier, (tier, tier))
    return ja if language == "ja" else en


VERDICT = {
    "driver": ("オンボード完了は解約の少なさと関連しています（解約ドライバー）。",
               "Completing onboarding goes with less churn here: it is a churn driver."),
    "urban_legend": ("オンボード完了の有無で解約率に意味のある差はありません（「都市伝説」）。",
                     "Churn hardly differs with onboarding: here its importance is an \"urban legend\"."),
    "inconclusive": ("このデータでは、オンボードが解約に効くかどうかは判断できません。",
                     "The data cannot tell whether onboarding matters for churn here."),
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
        return f"{verdict} ({check.get('reason', '')})"
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
    "quality": ("1. データと品質", "1. Data and quality"),
    "metrics": ("2. SaaS指標", "2. SaaS metrics"),
    "bridge": ("MRRブリッジ", "MRR bridge"),
    "rates": ("解約率の推移", "Churn rates by month"),
    "nps": ("NPS", "NPS"),
    "cohorts": ("コホート別継続率", "Retention by start cohort"),
    "survival": ("生存曲線（カプラン・マイヤー）", "Survival curves (Kaplan-Meier)"),
    "triggers": ("3. トリガー（RT / CRTT / UCT）", "3. Triggers (RT / CRTT / UCT)"),
    "potential": ("4. 改善ポテンシャル", "4. Improvement potential"),
    "health": ("5. ヘルススコア", "5. Health score"),
    "playbook": ("プレイブック（赤ティアのアカウント）", "Playbook (red-tier accounts)"),
    "onboarding": ("オンボードの検証", "Onboarding check"),
    "touch": ("タッチモデル", "Touch model"),
    "methods": ("6. 方法と注意点", "6. Methods and caveats"),
}


def heading(key: str, language: str = "ja", level: int = 2) -> str:
    """A section heading of the report."""
    ja, en = HEADINGS[key]
    return "#" * level + " " + (ja if language == "ja" else en)


def title(client: str, as_of: Any, accounts: int, months: int, language: str = "ja") -> str:
    """The report's title block: client, analysis month, and how much data it rests on."""
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
    """The first red-tier accounts (lowest score first) and the two KPIs to talk about."""
    ja = language == "ja"
    if table.empty:
        return "赤ティアのアカウントはありません。" if ja else "No account is in the red tier."
    head = ["アカウント", "スコア", "KPI 1", "不足(点)", "KPI 2", "不足(点)"] if ja else \
        ["Account", "Score", "KPI 1", "Gap (points)", "KPI 2", "Gap (points)"]
    gap = lambda v: f"{float(v):.1f}" if _finite(v) else "—"  # noqa: E731
    body = [[r.account_id, f"{float(r.score):.1f}", labels.get(r.kpi_1, r.kpi_1 or "—"), gap(r.gap_1),
             labels.get(r.kpi_2, r.kpi_2 or "—"), gap(r.gap_2)] for r in table.head(rows).itertuples(index=False)]
    intro = (f"赤ティアの{len(table):,}件のうち、スコアの低い{min(rows, len(table))}件を示します（全件は results/playbook.csv）。"
             "各アカウントについて、緑ティアの中央値と比べてスコアを最も下げているKPIを2つ挙げます。" if ja else
             f"The {min(rows, len(table))} lowest-scoring of {len(table):,} red-tier accounts (all in results/playbook.csv), "
             "each with the two KPIs that pull its score down most against the green-tier median.")
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


def forest_rows(drivers: pd.DataFrame, labels: dict[str, str], language: str = "ja"):
    """(outcome, rows for plots.forest) per outcome with any estimate, rows ordered by effect size."""
    for outcome in ("churn", "renewal", "expansion"):
        d = drivers[(drivers["outcome"] == outcome)].dropna(subset=["effect", "ci_low", "ci_high"])
        if d.empty:
            continue
        d = d.assign(
            label=[_label(labels, k) for k in d["kpi"]],
            flagged=d["trigger"].fillna("").astype(str) != "",
            size=np.abs(np.log(d["effect"].astype(float))),
        ).sort_values(["flagged", "size"], ascending=[False, False], kind="stable")
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
        body = _outcome_text(outcome, drivers, info, labels, language, top)
        text += ["", f"**{outcome_title(outcome, language)}**", "", body]
    if warnings:
        text += ["", explain_warnings(warnings, language, "モデルに関する注意" if ja else "Model notes")]
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
    outcome: str, drivers: pd.DataFrame, info: pd.DataFrame, labels: dict[str, str], language: str, top: int
) -> str:
    ja = language == "ja"
    row = info.loc[outcome] if outcome in info.index else pd.Series(dtype=object)
    events = row.get("events")
    ev = (f"イベント数 {int(events):,}件。" if ja else f"{int(events):,} events. ") if _finite(events) else ""
    if str(row.get("status", "fitted")) not in ("fitted", "ok"):
        reason = row.get("reason", "")
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
        f"**{_label(labels, r.kpi)}** {ratio(r.effect)} [{ratio(r.ci_low)}, {ratio(r.ci_high)}], "
        f"{_p('q', r.q_value)}, ρ = {float(r.spearman):+.2f}" + (
            f", {'最も強いラグ' if ja else 'strongest at lag'} {int(r.best_lag)}{'か月' if ja else ' months'}"
            if _finite(r.best_lag) else "")
        for r in flagged.head(top).itertuples(index=False)
    ]
    head = (f"{len(flagged)}個のKPIがトリガーです（効果の大きい順）:" if ja else
            f"{len(flagged)} KPIs are triggers (largest effect first):")
    return ev + model + power + head + "\n\n" + "\n".join(f"- {i}" for i in items)


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
    rows = [[_label(labels, r.kpi), outcome_short(r.outcome, language),
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
    fitted = outcomes.loc[outcomes["status"].astype(str).isin(["fitted", "ok"]), "outcome"]
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
            if str(r.status) not in ("fitted", "ok"):
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
            "過去時点で作ったモデルでその後の解約を予測して検証（時点外検証）。",
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


def notes(messages: list[str] | None, language: str = "ja") -> str:
    """A stage's warnings under a "Notes" label (empty text when there are none); in Japanese each
    recognised kind is explained (:func:`explain_warnings`)."""
    if not messages:
        return ""
    return explain_warnings(messages, language, "注意" if language == "ja" else "Notes")


def kpi_labels(catalogue: dict, language: str = "ja") -> dict[str, str]:
    """KPI name → label for the report; a label shared by several KPIs (e.g. "サイト訪問数" on the
    public site, CS site and community) gets its category appended so every row is distinguishable."""
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
    return out


def with_labels(table: pd.DataFrame, labels: dict[str, str], by: str = "kpi") -> pd.DataFrame:
    """``table`` with a ``label`` column from the report's KPI labels (the KPI name where unknown)."""
    return table.assign(label=[labels.get(k, k) for k in table[by]])


def top_kpis(weights: pd.DataFrame, n: int = 3) -> list[str]:
    """The ``n`` KPIs with the most health-score points (ties in table order)."""
    return weights.sort_values("points", ascending=False, kind="stable")["kpi"].head(n).tolist()
