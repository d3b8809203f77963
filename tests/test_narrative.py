"""The report's text says what the numbers it is given say (values worked out by hand below)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from cskit import narrative as N
from cskit.params import Params


def test_money_pct_ratio_formats():
    assert N.money(1234567.4, "JPY") == "¥1,234,567"
    assert N.money(-2500, "USD") == "-$2,500"
    assert N.money(10, "CHF") == "10 CHF"
    assert N.money(float("nan")) == "—" and N.money(None) == "—"
    assert N.pct(0.153) == "15.3%"
    assert N.ratio(0.5) == "0.50"


def test_quality_reconciles_rows():
    q = {
        "tables": {
            "accounts": {"read": 105, "used": 100, "excluded": {"duplicate_account": 3, "churn_before_start": 2}},
            "revenue": {"read": 900, "used": 900, "excluded": {}},
        },
        "warnings": ["revenue: 4 rows after as_of were excluded."],
    }
    text = N.quality(q, "en")
    assert "| accounts | 105 | 100 | 5 | churn_before_start: 2, duplicate_account: 3 |" in text
    assert "| revenue | 900 | 900 | 0 | — |" in text
    assert "- revenue: 4 rows after as_of were excluded." in text
    assert "データに関する警告はありません" in N.quality({"tables": {}, "warnings": []}, "ja")


def _summary(start_base: float, remaining_base: float) -> dict:
    e = lambda v, key: {"value": v, "definition": key, "period": "2025-07..2026-06"}  # noqa: E731
    return {
        "mrr": e(1_500_000.0, "mrr"),
        "revenue_churn_rate_start_base": e(start_base, "revenue_churn_rate_start_base"),
        "revenue_churn_rate_remaining_base": e(remaining_base, "revenue_churn_rate_remaining_base"),
        "grr": {"value": None, "definition": "grr", "period": "x", "note": "needs revenue in 2025-06"},
        "ltv_simple": e(3_000_000.0, "ltv_simple"),
        "ltv_survival": e(2_400_000.0, "ltv_survival"),
    }


def test_metrics_shows_both_revenue_churn_bases_seed001():
    # seed 001: 10 accounts at 50k, 10 at 100k, 3 of the 100k churn: 300k lost of 1.5M (20%) or of 1.2M (25%).
    text = N.metrics(_summary(300_000 / 1_500_000, 300_000 / 1_200_000), "JPY", "ja")
    assert "月初MRR基準で 20.0%" in text and "残存MRR基準で 25.0%" in text
    assert "| MRR（月次経常収益） | ¥1,500,000 |" in text
    assert "needs revenue in 2025-06" in text
    assert "¥3,000,000" in text and "¥2,400,000" in text


def test_metrics_says_nothing_about_bases_when_equal():
    assert "depends on its base" in N.metrics(_summary(0.02, 0.025), "JPY", "en")
    assert "depends on its base" not in N.metrics(_summary(0.02, 0.02), "JPY", "en")


def _potential_table() -> pd.DataFrame:
    rows = []
    for kpi, v, lo, hi in [("a", 500.0, 100.0, 900.0), ("b", 900.0, 200.0, 1500.0), ("c", 300.0, -50.0, 700.0),
                           ("d", -100.0, -300.0, -10.0), ("e", np.nan, np.nan, np.nan)]:
        r = {"kpi": kpi, "label": kpi.upper(), "category": "cat", "mean": 2.0, "improvement": 0.2}
        for col in ("d_ltv", "d_expansion", "d_new", "d_downgrade", "d_churn"):
            r |= {col: v, f"{col}_lo": lo, f"{col}_hi": hi}
        rows.append(r)
    return pd.DataFrame(rows)


def test_potential_ranks_only_intervals_above_zero():
    text = N.potential(_potential_table(), "CAVEAT-TEXT", {"d_new": "no referred_by data"}, 10, 12, 36, 40, "JPY", "en")
    assert "2 KPIs are worth improving on this evidence" in text
    assert text.index("**B** (LTV ¥900 [¥200, ¥1.5K])") < text.index("**A** (LTV ¥500 [¥100, ¥900])")
    assert "**C**" not in text  # interval crosses 0
    assert "For 1 KPI the interval crosses zero" in text
    assert "- no referred_by data" in text
    assert text.rstrip().endswith("> CAVEAT-TEXT")
    assert "the 40 accounts active now" in text


def _rows(html_table: str) -> list[list[str]]:
    """The cells of an HTML table as text (a cell's lines joined by a space)."""
    import html as h

    body = html_table.split("<tbody>")[1].split("</tbody>")[0]
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", body):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", tr)
        rows.append([h.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c)).strip()) for c in cells])
    return rows


def test_potential_table_one_amount_per_cell_interval_beneath_sorted_like_the_chart():
    table = pd.concat([_potential_table(), _potential_table().head(1).assign(kpi="contract_months", label="契約月数",
                                                                                d_ltv=5000.0)])
    text = N.potential_table(table, "JPY", "ja", improvement_pct=10)
    rows = _rows(text)
    assert [r[0] for r in rows][:5] == ["B", "A", "C", "D", "E"]  # by LTV gain, empty last
    assert rows[-1][0].startswith("契約月数（参考: 在籍期間が平均の10%長い場合")  # apart, labelled
    assert rows[1][:5] == ["A", "cat", "2", "0.2", "500円 [100円, 900円]"]
    assert rows[4][4] == "—"
    # the amount and its interval are separate lines, neither can wrap; a cell crossing zero is grey
    cell = re.findall(r"<td[^>]*>(.*?)</td>", text.split("<tbody>")[1].split("</tr>")[2])[4]
    assert cell.count("white-space:nowrap") == 2 and "#9a9a9a" in cell  # C: [-50, 700]
    assert "灰色の数値は区間がゼロをまたぎ" in text
    en = N.potential_table(table, "JPY", "en")
    assert _rows(en)[0][4] == "¥900 [¥200, ¥1.5K]" and "not distinguishable from zero" in en


def _drivers() -> tuple[pd.DataFrame, pd.DataFrame]:
    d = pd.DataFrame([
        {"kpi": "login_days", "outcome": "churn", "effect": 0.5, "ci_low": 0.4, "ci_high": 0.62, "p_value": 1e-6,
         "q_value": 2e-5, "spearman": -0.21, "best_lag": 2, "trigger": "RT", "direction": "-"},
        {"kpi": "csat", "outcome": "churn", "effect": 1.5, "ci_low": 1.2, "ci_high": 1.9, "p_value": 0.001,
         "q_value": 0.004, "spearman": 0.1, "best_lag": 1, "trigger": "RT", "direction": "+"},
        {"kpi": "faq_views", "outcome": "churn", "effect": 1.05, "ci_low": 0.9, "ci_high": 1.2, "p_value": 0.5,
         "q_value": 0.6, "spearman": 0.01, "best_lag": 0, "trigger": np.nan, "direction": "+"},
        {"kpi": "login_days", "outcome": "expansion", "effect": 1.1, "ci_low": 0.95, "ci_high": 1.3, "p_value": 0.2,
         "q_value": 0.3, "spearman": 0.05, "best_lag": 3, "trigger": "", "direction": "+"},
    ])
    o = pd.DataFrame([
        {"outcome": "churn", "model": "cloglog GLM", "events": 120, "status": "fitted", "mde_per_sd": 1.25,
         "reason": ""},
        {"outcome": "renewal", "model": "GEE", "events": 8, "status": "not_estimable", "mde_per_sd": np.nan,
         "reason": "8 events < 20"},
        {"outcome": "expansion", "model": "logit GLM", "events": 60, "status": "fitted", "mde_per_sd": 1.45,
         "reason": ""},
    ])
    return d, o


def test_triggers_text_states_events_power_fdr_and_caveat():
    d, o = _drivers()
    labels = {"login_days": "Login days", "csat": "Customer satisfaction"}
    text = N.triggers(d, o, labels, alpha=0.05, language="en", warnings=["KPI x was never measured."])
    assert "Benjamini–Hochberg" in text and "q < 0.05" in text
    churn = text.split("**RT (Retention Trigger): churn**")[1].split("**CRTT")[0]
    assert "120 events" in churn and "Model: cloglog GLM" in churn
    assert "1.25 (or 0.80) per SD" in churn
    assert "2 KPIs are triggers" in churn
    # ordered by |log effect|: 0.5 (|log| 0.69) before 1.5 (0.41)
    assert churn.index("**Login days** 0.50 [0.40, 0.62], q < 0.001, ρ = -0.21, strongest at lag 2 months") < \
        churn.index("**Customer satisfaction** 1.50 [1.20, 1.90], q = 0.004")
    assert "faq_views" not in churn
    renewal = text.split("**CRTT")[1].split("**UCT")[0]
    assert "Not estimable (8 events < 20)" in renewal and "does not mean there is no link" in renewal
    assert "No KPI is significant after FDR control" in text.split("**UCT")[1]
    assert "not proven causes" in text
    assert "- KPI x was never measured." in text


def test_triggers_text_names_the_weaker_evidence_the_false_discovery_rate_allows():
    d, o = _drivers()  # churn triggers: login_days q < 0.001 (strong), csat q = 0.004 (strong)
    labels = {"login_days": "Login days", "csat": "Customer satisfaction"}
    churn = N.triggers(d, o, labels, alpha=0.05, language="en").split("**CRTT")[0]
    assert "chance findings" not in churn  # both below alpha x 0.2 = 0.01: nothing to add
    d.loc[d["kpi"] == "csat", "q_value"] = 0.03  # now at 0.01 <= q < 0.05
    churn = N.triggers(d, o, labels, alpha=0.05, language="en").split("**CRTT")[0]
    # BH at 0.05 with 2 flagged: up to 0.05 x 2 = 0.1 expected false on average; only csat named as weaker
    assert "up to about 0.1 of these 2 triggers may be chance findings" in churn
    assert "Customer satisfaction (q ≥ 0.01) is weaker evidence" in churn and "Login days (q" not in churn
    ja = N.triggers(d, o, {"csat": "顧客満足度"}, alpha=0.05, language="ja").split("**CRTT")[0]
    assert "2個のトリガーのうち平均して最大0.1個程度が偶然" in ja and "q値が0.01以上の顧客満足度は根拠が弱め" in ja
    brief = N.triggers_brief(d, o, {"csat": "顧客満足度"}, alpha=0.05, language="ja")  # the report's section text
    churn_line = next(line for line in brief.splitlines() if "2個のトリガー" in line or "トリガー2個" in line)
    assert "q値が0.01以上の顧客満足度は根拠が弱め" in churn_line


def test_forest_rows_flag_and_order():
    d, _ = _drivers()
    out = dict(N.forest_rows(d, {"login_days": "ログイン日数"}, "ja"))
    assert list(out) == ["churn", "expansion"]
    assert out["churn"]["label"].tolist() == ["ログイン日数", "csat", "faq_views"]
    assert out["churn"]["flagged"].tolist() == [True, True, False]
    assert out["expansion"]["flagged"].tolist() == [False]


def test_onboarding_verdicts():
    base = {"horizon_months": 12, "churn": {
        "onboarded": {"n": 200, "churned": 20, "rate": 0.10, "ci": [0.066, 0.149]},
        "not_onboarded": {"n": 100, "churned": 30, "rate": 0.30, "ci": [0.219, 0.396]},
        "difference": {"estimate": -0.20, "ci_low": -0.30, "ci_high": -0.10}}}
    ja = N.onboarding(base | {"verdict": "driver"}, "ja")
    assert "オンボード完了 10.0% [6.6%, 14.9%]" in ja and "未完了 30.0%" in ja and "差 -20.0pt [-30.0pt, -10.0pt]" in ja
    assert "解約ドライバー" in ja
    assert "urban legend" in N.onboarding(base | {"verdict": "urban_legend"}, "en")
    assert "no onboarding_completed data" in N.onboarding(None, "en")


def test_validation_text_compares_client_score():
    v = {"status": "fitted", "cut": "2025-06", "horizon_months": 12, "n_accounts": 400, "n_churned": 60,
         "score": {"auc": 0.78, "ci_low": 0.72, "ci_high": 0.84, "concordance": 0.75},
         "by_tier": [{"tier": "red", "n": 50, "churn_rate": 0.4, "ci_low": 0.28, "ci_high": 0.54}],
         "client_score": {"status": "fitted", "auc": 0.6, "ci_low": 0.52, "ci_high": 0.68,
                          "auc_difference": {"ours_minus_client": 0.18, "ci_low": 0.08, "ci_high": 0.28},
                          "verdict": "ours_better"},
         "left_out_kpis": [{"kpi": "login_days", "left_out": True}, {"kpi": "csat", "left_out": False}]}
    text = N.validation_text(v, "en")
    assert "fitted on data up to 2025-06, the 400 accounts" in text
    assert "AUC 0.78 [0.72, 0.84]" in text and "concordance 0.75" in text and "(60 churned)" in text
    assert "red 40.0% [28.0%, 54.0%]" in text
    assert "+0.18 [+0.08, +0.28]: the data-driven score predicts churn better" in text
    assert "(|rho| < 0.2): login_days." in text
    assert "(|rho| < 0.2): Login days." in N.validation_text(v, "en", {"login_days": "Login days"})
    assert "could not be validated" in N.validation_text({"status": "not_estimable", "reason": "no churn"}, "en")


def test_health_summarises_points_and_tiers():
    w = pd.DataFrame({"kpi": ["a", "b", "c"], "points": [60, 40, 0]})
    s = pd.DataFrame({"tier": ["red"] * 2 + ["green"] * 5})
    text = N.health(w, s, {"red_below": 40.0, "green_from": 70.0}, {"status": "not_estimable", "reason": "r"},
                    {"a": "A"}, "en")
    assert "2 KPIs share its 100 points. Largest: A 60, b 40." in text
    assert "red 2 (below 40), yellow 0, green 5 (70 and above)" in text


def test_survival_medians_not_reached():
    med = pd.DataFrame([{"group_by": "all", "group": "all", "accounts": 100, "churned": 30, "median": 18.0,
                         "median_ci_low": 14.0, "median_ci_high": np.nan},
                        {"group_by": "segment", "group": "SMB", "accounts": 50, "churned": 5, "median": np.inf,
                         "median_ci_low": np.nan, "median_ci_high": np.nan}])
    lr = pd.DataFrame([{"group_by": "segment", "groups": ["Ent", "SMB"], "test_statistic": 12.0,
                        "degrees_of_freedom": 1, "p_value": 0.0005}])
    text = N.survival(med, lr, "en")
    assert "| All | All | 100 | 30 | 18 months [14 months, not reached] |" in text
    assert "| Segment | SMB | 50 | 5 | not reached |" in text
    assert "Log-rank test (Segment): p < 0.001." in text


@pytest.mark.parametrize("language", ["ja", "en"])
def test_methods_fill_in_the_run_settings(language):
    p = Params(alpha=0.1, improvement_pct=15, bootstrap=321, seed=7)
    text = N.methods(p, language)
    for s in ("0.1", "15%", "321", "7"):
        assert s in text


def test_drivers_table_localises_outcomes_and_q():
    d, _ = _drivers()
    text = N.drivers_table(d, {"login_days": "ログイン日数"}, "ja")
    assert "| ログイン日数 | 解約 | 0.50 [0.40, 0.62] | < 0.001 | -0.21 | 2 | RT |" in text
    assert "| faq_views | 解約 | 1.05 [0.90, 1.20] | 0.600 | +0.01 | 0 |  |" in text


def test_segment_rows_and_curves_are_named_in_the_triggers_text():
    d = pd.DataFrame(
        [
            {
                "kpi": "support_inquiries",
                "outcome": "churn",
                "effect": 1.2,
                "ci_low": 1.1,
                "ci_high": 1.3,
                "p_value": 1e-6,
                "q_value": 1e-5,
                "spearman": 0.1,
                "best_lag": 1,
                "trigger": "RT",
                "direction": "+",
                "segment": "",
                "shape": "linear",
            },
            {
                "kpi": "support_inquiries",
                "outcome": "churn",
                "effect": 1.4,
                "ci_low": 1.3,
                "ci_high": 1.5,
                "p_value": 1e-8,
                "q_value": 1e-7,
                "spearman": np.nan,
                "best_lag": np.nan,
                "trigger": "RT",
                "direction": "+",
                "segment": "SMB",
                "shape": "linear",
            },
            {
                "kpi": "login_days",
                "outcome": "churn",
                "effect": 0.6,
                "ci_low": 0.5,
                "ci_high": 0.7,
                "p_value": 1e-9,
                "q_value": 1e-8,
                "spearman": -0.2,
                "best_lag": 1,
                "trigger": "RT",
                "direction": "-",
                "segment": "",
                "shape": "curve",
            },
        ]
    )
    ja = N.drivers_table(d, {"support_inquiries": "問い合わせ件数", "login_days": "ログイン日数"}, "ja")
    assert "| 問い合わせ件数（SMB内） | 解約 | 1.40 [1.30, 1.50] |" in ja and "| ログイン日数（曲線） |" in ja
    en = N.drivers_table(d, {}, "en")
    assert "| support_inquiries (in SMB) |" in en and "| support_inquiries |" in en


def test_kpi_labels_are_unique():
    from cskit.catalogue import DEFAULT_CATALOGUE

    for language in ("ja", "en"):
        labels = N.kpi_labels(DEFAULT_CATALOGUE, language)
        assert len(set(labels.values())) == len(labels)
    assert N.kpi_labels(DEFAULT_CATALOGUE, "ja")["cs_site_visits"] == "サイト訪問数（CSサイト訪問）"
    assert N.kpi_labels(DEFAULT_CATALOGUE, "ja")["login_days"] == "ログイン日数"


def test_touch_table_with_tier_kpis():
    t = pd.DataFrame([{"touch": "high", "n": 10, "ltv_total": 5e6, "ltv_median": 4.5e5, "score_median": 71.0,
                       "login_days": 20.0},
                      {"touch": "tech", "n": 60, "ltv_total": 1e6, "ltv_median": 1.5e4, "score_median": 50.5,
                       "login_days": 8.5}])
    w = pd.DataFrame({"kpi": ["csat", "login_days"], "points": [20, 80]})
    text = N.touch(t, "JPY", "en", kpis=N.top_kpis(w, 1), labels={"login_days": "Login days"})
    assert "| Tier | Accounts | Total LTV | Median LTV | Median score | Login days (median) |" in text
    assert "| High touch | 10 | ¥5,000,000 | ¥450,000 | 71 | 20 |" in text
    assert "| Tech touch | 60 | ¥1,000,000 | ¥15,000 | 50.5 | 8.5 |" in text


def test_amount_uses_man_and_oku_in_japanese():
    assert N.amount(174_652_163, "JPY", "ja") == "1.75億円"
    assert N.amount(3_201_041_225, "JPY", "ja") == "32.0億円"
    assert N.amount(99_009_563, "JPY", "ja") == "9,901万円"
    assert N.amount(-258_821, "JPY", "ja") == "-25.9万円"
    assert N.amount(-1_469, "JPY", "ja") == "-1,469円"
    assert N.amount(174_652_163, "JPY", "en") == "¥174,652,163"
    assert N.amount(174_652_163, "USD", "ja") == "$174,652,163"


def _weights_with_context() -> pd.DataFrame:
    return pd.DataFrame([
        {"kpi": "login_days", "points": 60, "direction": "+", "scale": "identity", "value_at_0_points": 5.0,
         "value_at_full_points": 27.0, "levels": ""},
        {"kpi": "contract_months", "points": 25, "direction": "+", "scale": "log1p", "value_at_0_points": 0.0,
         "value_at_full_points": 26.0, "levels": ""},
        {"kpi": "segment", "points": 15, "direction": "level", "scale": "category", "value_at_0_points": np.nan,
         "value_at_full_points": np.nan, "levels": "SMB=0; Mid=6; Enterprise=15"},
        {"kpi": "contract_type", "points": 0, "direction": "level", "scale": "category", "value_at_0_points": np.nan,
         "value_at_full_points": np.nan, "levels": "annual=0; monthly=0"},
    ])


def test_health_counts_items_and_separates_kpis_from_context():
    w, s = _weights_with_context(), pd.DataFrame({"tier": ["red", "green", "green"]})
    labels = {"login_days": "ログイン日数", "contract_months": "契約月数"}
    ja = N.health(w, s, {"red_below": 40.0, "green_from": 70.0}, {"status": "not_estimable", "reason": "r"}, labels)
    assert (
        "合計100点を3項目に配分しました。KPI 1個に計60点（ログイン日数 60）、"
        "契約状況 2項目に計40点（契約月数 25、セグメント 15）" in ja
    )
    assert "契約形態は配点0点です" in ja
    en = N.health(w, s, {"red_below": 40.0, "green_from": 70.0}, {"status": "not_estimable", "reason": "r"},
                  {"login_days": "Login days"}, "en")
    assert ("3 items share its 100 points: 1 KPI hold 60 (Login days 60) and 2 account-context items hold 40 "
            "(Contract months 25, Segment 15)") in en
    assert "Contract type: 0 points" in en


def test_health_items_and_points_table_show_levels():
    items = N.health_items(_weights_with_context(), {"login_days": "ログイン日数"}, "ja")
    assert items["label"].tolist() == ["ログイン日数", "契約月数", "セグメント", "契約形態"]
    assert items["kind"].tolist() == ["kpi", "context", "context", "context"]
    table = N.health_points_table(_weights_with_context(), {"login_days": "ログイン日数"}, "ja")
    assert "| 項目 | 種類 | 配点 | 向き | 0点となる値 | 満点となる値 | 水準別の配点 |" in table
    assert "| ログイン日数 | KPI | 60 | 高いほど健全 | 5 | 27 | — |" in table
    assert "| 契約月数 | 契約状況 | 25 | 高いほど健全 | 0 | 26 | — |" in table
    assert "| セグメント | 契約状況 | 15 | 水準で決まる | — | — | SMB 0点 / Mid 6点 / Enterprise 15点 |" in table
    assert "| 契約形態 | 契約状況 | 0 | 水準で決まる | — | — | 年間契約 0点 / 月次契約 0点 |" in table
    en = N.health_points_table(_weights_with_context(), {}, "en")
    assert "| Segment | Account context | 15 | set by level | — | — | SMB 0 / Mid 6 / Enterprise 15 |" in en


def test_survival_shows_s12_when_median_not_reached():
    med = pd.DataFrame([{"group_by": "all", "group": "all", "accounts": 100, "churned": 30, "median": 18.0,
                         "median_ci_low": 14.0, "median_ci_high": np.nan, "survival_12m": 0.8,
                         "survival_12m_ci_low": 0.72, "survival_12m_ci_high": 0.86},
                        {"group_by": "contract_type", "group": "annual", "accounts": 50, "churned": 5,
                         "median": np.inf, "median_ci_low": np.nan, "median_ci_high": np.nan, "survival_12m": 0.9,
                         "survival_12m_ci_low": 0.785, "survival_12m_ci_high": 0.96}])
    lr = pd.DataFrame([{"group_by": "contract_type", "p_value": 0.04}])
    ja = N.survival(med, lr, "ja")
    assert "| 全体 | 全体 | 100 | 30 | 18か月 [14か月, 未到達] | 80.0% [72.0%, 86.0%] |" in ja
    assert "| 契約形態 | 年間契約 | 50 | 5 | 未到達 | 90.0% [78.5%, 96.0%] |" in ja
    assert "1グループで" in ja and "（全体 80.0% [72.0%, 86.0%]）" in ja
    assert "ログランク検定（契約形態）: p = 0.040。" in ja
    en = N.survival(med, lr, "en")
    assert "| Contract type | Annual | 50 | 5 | not reached | 90.0% [78.5%, 96.0%] |" in en


def test_notices_are_worded_from_their_code_in_each_language():
    from cskit.notices import Notice, from_record, records

    left = Notice("kpi_left_out", stage="triggers", kpi="login_days", outcomes=["churn", "renewal"],
                  reason=Notice("kpi_collinear", stage="models", partner="active_users", r=0.97), max_missing=0.5)
    skew = Notice("skewed_kpis", stage="triggers", severity="note", n=2, kpis=["login_days", "faq_views"])
    sjis = [Notice("read_as_shift_jis", stage="load", severity="note", file=f) for f in ("a.csv", "b.csv")]
    labels = {"login_days": "ログイン日数", "active_users": "アクティブユーザー数", "faq_views": "FAQページ閲覧数"}
    # the str value is the English sentence, the record keeps code and values
    assert str(left).startswith("KPI 'login_days' was left out of the churn, renewal model(s): collinear with "
                                "active_users (r = 0.97)")
    rec = records([left])[0]
    assert rec["code"] == "kpi_left_out" and rec["values"]["reason"]["code"] == "kpi_collinear"
    assert rec["message"] == str(left) and from_record(rec) == left
    ja = N.explain_warnings([left, skew, *sjis], "ja", "注意", labels)
    assert ja.startswith("**注意**")
    assert "ログイン日数は解約、契約更新のモデルから外しました（アクティブユーザー数とほぼ同じ動き" in ja
    assert "分布の偏りが大きい2個のKPI（ログイン日数、FAQページ閲覧数）" in ja
    assert ja.count("Shift_JIS") == 1 and "a.csv、b.csv" in ja  # one line for every file read so
    assert not re.search(r"[A-Za-z]{4,} [a-z]{3,}", ja.replace("Shift_JIS", ""))  # no English sentence
    en = N.explain_warnings([skew], "en", "Notes", {"login_days": "Login days", "faq_views": "FAQ views"})
    assert en == ("**Notes**\n\n- 2 KPIs are heavily skewed (skewness > 2): Login days, FAQ views. They are "
                  "modelled as log(1 + value), so their effects are per SD of log(1 + value); read +1 SD as "
                  "roughly 'multiplied by a constant factor'. No action needed.")
    assert N.explain_warnings([], "ja") == ""


def test_every_notice_code_raised_in_cskit_has_words_in_both_languages():
    import pathlib

    codes = set()
    for path in pathlib.Path(N.__file__).parent.glob("*.py"):
        codes |= set(re.findall(r'Notice\(\s*"([a-z_0-9]+)"', path.read_text(encoding="utf-8")))
        codes |= set(re.findall(r'_note\(\s*"([a-z_0-9]+)"', path.read_text(encoding="utf-8")))
    assert len(codes) > 30
    missing = sorted(c for c in codes if c not in N.NOTICE_TEXT)
    assert not missing


def test_quality_in_japanese_names_tables_and_reasons():
    q = {"tables": {"accounts": {"read": 10, "used": 8, "excluded": {"bad_churn_date": 2}}}, "warnings": []}
    assert "| アカウント | 10 | 8 | 2 | 解約日が不正: 2 |" in N.quality(q, "ja")


def test_model_names_in_japanese():
    gee = "GEE, logit link, clustered by account (odds ratio of renewal); exchangeable, rho = -0.001"
    assert (
        N.model_name(gee, "ja")
        == "GEE（ロジットリンク、アカウント単位のクラスタ、更新のオッズ比）、交換可能作業相関 ρ = -0.001"
    )
    assert N.model_name(gee, "en") == gee
    assert N.model_name("something else", "ja") == "something else"


def test_tier_order_and_calibration_verdicts_are_decided_by_the_stage_and_worded_here():
    from cskit.health import verdicts

    tiers = [{"tier": "red", "n": 47, "churn_rate": 0.17}, {"tier": "yellow", "n": 240, "churn_rate": 0.20},
             {"tier": "green", "n": 530, "churn_rate": 0.14}]
    # 130 of 817 churned: Wilson 95% interval [13.6%, 18.6%] (worked by hand), so 10.7% is below it
    v = {"n_accounts": 817, "n_churned": 130, "predicted_rate": 0.107, "observed_rate": 130 / 817,
         "by_tier": tiers, "score": {"auc": 0.7, "ci_low": 0.51, "ci_high": 0.8}}
    v["verdicts"] = verdicts(v)
    assert v["verdicts"] == {"auc": "above_chance", "calibration": "under_predicts", "tier_order": "not_ordered",
                             "tier_pair": ["red", "yellow"], "tiers_compared": ["red", "yellow", "green"]}
    assert "赤ティアの解約率（17.0%）が黄ティア（20.0%）以下" in N.tier_order_text(v, "ja")
    assert "予測した解約確率の平均は 10.7%、実際の解約率は 15.9% でした（予測は実際より低めです" in N.calibration_text(
        v, "ja"
    )
    ok = v | {"predicted_rate": 0.15, "by_tier": [dict(tiers[0], churn_rate=0.3), *tiers[1:]],
              "score": {"auc": 0.7, "ci_low": 0.49, "ci_high": 0.8}}
    ok["verdicts"] = verdicts(ok)
    assert ok["verdicts"] == {"auc": "not_distinguishable", "calibration": "adequate", "tier_order": "ordered",
                              "tier_pair": None, "tiers_compared": ["red", "yellow", "green"]}
    assert N.tier_order_text(ok, "ja") == "" and "低め" not in N.calibration_text(ok, "ja")
    high = v | {"predicted_rate": 0.19}
    high["verdicts"] = verdicts(high)
    assert high["verdicts"]["calibration"] == "over_predicts" and "over-predicts" in N.calibration_text(high, "en")


def test_potential_table_shows_shares_as_percent():
    t = _potential_table().head(1).assign(mean=0.391, improvement=0.0391)
    assert (
        _rows(N.potential_table(t, "JPY", "ja", rates=["a"]))[0]
        == ["A", "cat", "39.1%", "+3.9pt", "500円 [100円, 900円]"] + ["500円 [100円, 900円]"] * 4
    )


def test_group_names():
    assert N.group_name("not completed", "ja") == "未完了" and N.group_name("SMB", "ja") == "SMB"
    assert N.group_name("annual", "en") == "Annual" and N.group_name("decision_maker", "en") == "Decision maker"
    curves = pd.DataFrame({"group": ["all", "monthly"], "survival": [1.0, 0.9]})
    assert N.relabel_groups(curves, "ja")["group"].tolist() == ["全体", "月次契約"]


def test_drivers_table_puts_each_outcomes_triggers_first():
    d = pd.DataFrame(
        {
            "kpi": ["a", "b", "c", "d"],
            "outcome": ["expansion", "churn", "churn", "churn"],
            "effect": [1.2, 1.1, 0.5, 1.3],
            "ci_low": [1.1, 0.9, 0.4, 1.1],
            "ci_high": [1.3, 1.3, 0.6, 1.5],
            "q_value": [0.001, 0.4, 0.0001, 0.01],
            "spearman": [0.1, 0.0, -0.2, 0.1],
            "best_lag": [1, 2, 1, 0],
            "trigger": ["UCT", "", "RT", "RT"],
        }
    )
    lines = [ln for ln in N.drivers_table(d, {}, "en").splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert [ln.split("|")[1].strip() for ln in lines] == ["c", "d", "b", "a"]


def test_a_missing_headline_figure_is_explained_in_the_reports_language_from_the_result_file():
    summary = {"nps": {"value": None, "definition": "nps", "period": "2022-01..2022-12", "note": "no nps table",
                       "note_code": "nps_no_table"},
               "grr": {"value": None, "definition": "grr", "period": "2021-12..2022-12",
                       "note": "needs revenue in 2021-12 (12 months before as_of)",
                       "note_code": "metric_needs_base_month", "note_values": {"month": "2021-12"}}}
    ja = N.metrics(summary, "JPY", "ja")
    assert "NPSの表がありません" in ja and "2021-12（基準月の12か月前）の売上データが必要です" in ja
    assert "no nps table" not in ja and "needs revenue" not in ja
    assert "no nps table" in N.metrics(summary, "JPY", "en")


def test_potential_names_only_what_the_stage_calls_credible():
    # potential.csv's decision: F's interval lies above zero, but no model flags it (a proxy or noise KPI)
    t = _potential_table()
    f = t.iloc[[0]].assign(kpi="f", label="F", d_ltv=700.0, d_ltv_lo=50.0, d_ltv_hi=1300.0)
    t = pd.concat([t, f], ignore_index=True).assign(credible=[True, True, False, False, False, False])
    for language, named, unproven in (("en", "2 KPIs are worth improving", "For 1 KPIs the interval lies above zero"),
                                      ("ja", "改善の価値を確かに言えるのは2指標", "1指標は区間はプラスですが")):
        text = N.potential(t, "CAVEAT", None, 10, 12, 36, 40, "JPY", language)
        assert named in text and unproven in text
        assert "**F**" not in text and "**B**" in text


def test_the_playbook_finding_counts_red_accounts_only():
    book = pd.DataFrame({"account_id": list("abcde"), "tier": ["red", "red", "yellow", "yellow", "red"],
                         "kpi_1": ["login_days", "csat", "login_days", "login_days", "login_days"]})
    scores = pd.DataFrame({"account_id": list("abcdefg"), "tier": ["red", "red", "yellow", "yellow", "red", "green",
                                                                    "green"]})
    assert N.playbook_focus(book) == ("login_days", 2)
    R = {"playbook": book, "health_scores": scores}
    assert N.finding_red(R, {"login_days": "ログイン日数"}, "ja") == (
        "現在契約中の7件のうち赤ティアは3件で、プレイブックではそのうち2件でログイン日数が最優先の改善点です。")


def test_the_findings_name_drivers_a_cs_team_can_act_on():
    d = pd.DataFrame([
        {"kpi": "contract_months", "outcome": "expansion", "effect": 0.2, "trigger": "UCT"},
        {"kpi": "login_days", "outcome": "expansion", "effect": 1.5, "trigger": "UCT"},
        {"kpi": "csat", "outcome": "churn", "effect": 0.7, "trigger": "RT"},
        {"kpi": "faq_views", "outcome": "churn", "effect": 0.5, "trigger": ""},
    ])
    text = N.finding_drivers({"drivers": d}, {"login_days": "Login days", "csat": "CSAT"}, "en")
    assert text == ("Churn is most strongly linked to CSAT (hazard ratio 0.70); expansion to Login days "
                    "(odds ratio 1.50) (per +1 SD of the KPI).")


def test_findings_and_conclusion_name_only_what_the_stage_calls_credible():
    # a thin client's potential.csv: cs_site_visits' interval lies above zero but no model flags it
    # (credible False); the findings box must not call it "the largest credible gain"
    t = _potential_table().assign(credible=False)
    R = {"potential": t}
    for lang in ("ja", "en"):
        best = N.finding_potential(R, {"a": "KPI-a", "b": "KPI-b"}, 10, "JPY", lang)
        assert "KPI-a" not in best and "KPI-b" not in best, best
        assert ("偶然と区別できず" in best) if lang == "ja" else ("chance" in best), best
        text = N.potential(t, "CAVEAT", None, 10, 12, 36, 40, "JPY", lang)
        assert "ゼロを含みます" not in text and "includes zero" not in text, text
        concl = N.conclusion_potential(R, {}, 10, "JPY", lang)
        assert ("確かにプラスなのは0個" in concl) if lang == "ja" else (", 0 show an LTV gain" in concl), concl
    assert N.credible_gains(t.assign(credible=[False, True, False, False, False]))["kpi"].tolist() == ["b"]


def test_the_onboarding_notice_says_which_adjustment_leaves_the_doubt():
    # a fiscal-year client: the AIPW difference is −10.9pt [−16.9, −4.8] (clear) and only the own hazard
    # term 0.84 [0.56, 1.26] is not; the note must not say the adjusted difference is uncertain
    from cskit.notices import Notice

    own = Notice("onboarding_confounded", stage="health", severity="note", adjusted_verdict="driver")
    both = Notice("onboarding_confounded", stage="health", severity="note", adjusted_verdict="inconclusive")
    assert "そろえると差は確かではありません" not in N.notice(own, "ja") and "ハザード" in N.notice(own, "ja")
    assert "そろえると差は確かではありません" in N.notice(both, "ja")
    assert "not once" not in N.notice(own, "en") and "not once" in N.notice(both, "en")


def test_sampled_models_of_one_section_are_said_in_one_sentence():
    """Several models fitted on a case-control sample: one line per report section, each model's fitted
    and full rows and the share kept, the explanation once (it was one long paragraph per model)."""
    from cskit.narrative import notice_lines
    from cskit.notices import Notice

    a = Notice("model_rows_sampled", stage="potential", severity="note", rows=300876, events=6412,
               fitted_rows=249828, keep=0.83, outcomes=["churn"])
    b = Notice("model_rows_sampled", stage="potential", severity="note", rows=426543, events=7530,
               fitted_rows=250127, keep=0.58, outcomes=["downgrade"])
    other = Notice("no_referrals", stage="potential", severity="note")
    for lang, key in (("ja", "ケース・コントロール抽出"), ("en", "case-control sample")):
        lines = notice_lines([other, a, b], lang)
        assert len(lines) == 2 and lines[0] == notice_lines([other], lang)[0]
        line = lines[1]
        assert line.count(key) == 1
        for number in ("249,828", "300,876", "250,127", "426,543", "83%", "58%"):
            assert number.replace(",", "" if lang == "en" else ",") in line
    single = notice_lines([a], "en")  # one sampled model keeps its own sentence
    assert len(single) == 1 and "6412" in single[0] and "300876" in single[0]


@pytest.mark.parametrize(("auc", "ja", "en"), [
    ("above_chance", "偶然より良く解約を予測します。ただしティアの順序どおりには",
     "ranks churn better than chance; but the tiers do not order churn"),
    ("not_distinguishable", "偶然と区別できません。また、ティアの順序どおりには",
     "cannot be told from chance; nor do the tiers order churn"),
])
def test_the_health_conclusion_says_but_only_after_a_good_auc(auc, ja, en):
    """'but the tiers do not order churn' contrasts with an AUC above chance; after an AUC that cannot be
    told from chance the tiers' disorder is one more weakness, not a contrast."""
    R = {"health_validation": {"status": "fitted", "validation": {
        "status": "fitted", "score": {"auc": 0.53},
        "verdicts": {"auc": auc, "tier_order": "not_ordered", "calibration": "over_predicts"}}}}
    assert ja in N.conclusion_health(R, "ja")
    assert en in N.conclusion_health(R, "en")


def test_a_tier_of_two_accounts_says_nothing_of_the_tier_order():
    """Out of time the red tier held 2 accounts, none churned (Wilson 95% [0%, 66%]): 'the red tier churned
    no more than the yellow tier' is not a finding; the order is read among tiers of 10 accounts or more
    (base client of the QA sweep: red 2, yellow 325 at 16.0%, green 151 at 16.6%)."""
    from cskit.health import verdicts

    def v(red_n, red_rate, yellow_rate):
        tiers = [{"tier": "red", "n": red_n, "churn_rate": red_rate},
                 {"tier": "yellow", "n": 325, "churn_rate": yellow_rate},
                 {"tier": "green", "n": 151, "churn_rate": 0.166}]
        return verdicts({"n_accounts": 478, "n_churned": 77, "predicted_rate": 0.2, "by_tier": tiers,
                         "score": {"auc": 0.53, "ci_low": 0.46, "ci_high": 0.6}})
    # yellow 25% > green 16.6%: the order holds between the two tiers compared, and only there
    assert v(2, 0.0, 0.25)["tier_order"] == "ordered_among_compared"
    assert v(2, 0.0, 0.25)["tiers_compared"] == ["yellow", "green"]
    assert v(2, 0.0, 0.16)["tier_pair"] == ["yellow", "green"]  # the pair that is out of order is a real one
    assert v(10, 0.0, 0.25)["tier_pair"] == ["red", "yellow"]
    assert v(10, 0.3, 0.25)["tier_order"] == "ordered"  # 30% > 25% > 16.6%, all three tiers of 10+ accounts
    only = verdicts({"n_accounts": 30, "n_churned": 5, "predicted_rate": 0.5, "score": {"auc": 0.6, "ci_low": 0.4},
                     "by_tier": [{"tier": "red", "n": 3, "churn_rate": 0.0}, {"tier": "green", "n": 27,
                                                                          "churn_rate": 0.2}]})
    assert only["tier_order"] == "not_estimable" and only["tier_pair"] is None and only["tiers_compared"] == []
    R = {"health_validation": {"status": "fitted", "validation": {"score": {"auc": 0.6}, "status": "fitted",
                                                                  "verdicts": only}}}
    assert N.conclusion_health(R, "en") == ("The health score (AUC 0.60) cannot be told from chance; the tier order "
                                            "cannot be read (fewer than two tiers held enough accounts to compare); "
                                            "it over-predicts the level of churn.")
    assert N.conclusion_health(R, "ja") == ("ヘルススコア（AUC 0.60）は偶然と区別できません。"
                                            "ティアの順序は読めません（比べられる件数のティアが2つありません）。"
                                            "予測した解約確率は実際より高めです。")


def _health_conclusion(tiers: list[tuple[str, int, float]], language: str) -> tuple[dict, str]:
    """The verdicts of an out-of-time validation with these (tier, accounts, churn rate) and its conclusion."""
    from cskit.health import verdicts

    vd = verdicts({"n_accounts": 206, "n_churned": 90, "predicted_rate": 0.44, "by_tier": [
        {"tier": t, "n": n, "churn_rate": r} for t, n, r in tiers], "score": {"auc": 0.7, "ci_low": 0.6}})
    R = {"health_validation": {"status": "fitted", "validation": {"score": {"auc": 0.7}, "status": "fitted",
                                                                  "verdicts": vd}}}
    return vd, N.conclusion_health(R, language)


def test_the_tier_order_compares_red_with_green_when_yellow_is_too_small():
    """Red 50 accounts at 40% churn, yellow 5, green 151 at 50%: red churned less than green, so the tiers
    are out of order (it said "not_estimable": no two neighbouring tiers of 10+ accounts)."""
    vd, en = _health_conclusion([("red", 50, 0.40), ("yellow", 5, 0.0), ("green", 151, 0.50)], "en")
    assert (vd["tier_order"], vd["tier_pair"], vd["tiers_compared"]) == ("not_ordered", ["red", "green"],
                                                                         ["red", "green"])
    assert "but the tiers do not order churn" in en
    vd, en = _health_conclusion([("red", 50, 0.60), ("yellow", 5, 0.0), ("green", 151, 0.50)], "en")
    assert (vd["tier_order"], vd["tier_pair"]) == ("ordered_among_compared", None)
    assert "churn falls from the red to the green tier (the yellow tier held too few accounts to compare)" in en
    assert "解約は赤・緑の順に少なくなっています（黄ティアは件数が少なく比べていません）" in _health_conclusion(
        [("red", 50, 0.60), ("yellow", 5, 0.0), ("green", 151, 0.50)], "ja")[1]


def test_a_tier_order_seen_between_two_tiers_is_not_claimed_for_the_third():
    """Red 2 accounts at 0%, yellow 325 at 25%, green 151 at 16.6%: the conclusion said "churn falls from the
    red to the yellow to the green tier", false for red; it names the two tiers compared."""
    tiers = [("red", 2, 0.0), ("yellow", 325, 0.25), ("green", 151, 0.166)]
    vd, en = _health_conclusion(tiers, "en")
    assert vd["tier_order"] == "ordered_among_compared" and vd["tiers_compared"] == ["yellow", "green"]
    assert "churn falls from the yellow to the green tier (the red tier held too few accounts to compare)" in en
    assert "red to the yellow" not in en
    ja = _health_conclusion(tiers, "ja")[1]
    assert "解約は黄・緑の順に少なくなっています（赤ティアは件数が少なく比べていません）" in ja and "赤・黄" not in ja
    full = _health_conclusion([("red", 10, 0.3), *tiers[1:]], "en")[1]
    assert "churn falls from the red to the yellow to the green tier;" in full


def test_no_fall_at_all_does_not_suggest_an_alert_drop_of_one_point():
    """Thin client: the score rests on the segment only, so no account's score moved over 3 months
    (health_drops.json changes_now: q01 = q05 = 0). The note says drop alerts cannot fire; it suggested
    'alert_drop of about 1' from 'the largest 1% of falls are -0.0+ points'."""
    empty = pd.DataFrame(columns=["falling", "entered_red"])
    still = {"accounts": 26, "falling": 0, "fell": 0, "median": 0.0, "q01": 0.0, "q05": 0.0}
    en = N.movers(empty, 15, 3, "en", summary=still)
    assert "alert_drop of about" not in en and "-0.0" not in en
    assert "no account's score fell over the last 3 months, so drop alerts cannot fire" in en
    assert "スコアが下がったアカウントはありません" in N.movers(empty, 15, 3, "ja", summary=still)
    moving = still | {"q01": -6.2, "q05": -3.1, "fell": 9}
    assert "consider alert_drop of about 6" in N.movers(empty, 15, 3, "en", summary=moving)


def test_a_few_falls_below_the_one_percent_quantile_are_not_no_fall():
    """1,000 accounts, 5 fell by 20 points: the 1% quantile of the change is 0, and the note said "no
    account's score fell ... drop alerts cannot fire" under a table of those 5 movers; it says how many
    fell and suggests no alert_drop of ~0."""
    from cskit.history import change_summary

    summary = change_summary(np.r_[np.full(5, -20.0), np.zeros(995)], drop=15)
    assert summary["q01"] == 0.0
    en, ja = (N._reach_note(summary, 15, 3, lang) for lang in ("en", "ja"))
    assert "no account's score fell" not in en and "cannot fire" not in en and "alert_drop of about" not in en
    assert "only 5 of 1,000 accounts' scores fell at all over the last 3 months (5 of them by 15+ points)" in en
    assert "use the red tier" in en and "-0.0" not in en
    assert "スコアが下がったのは1,000件中5件だけです（うち15点以上は5件）" in ja and "ありません" not in ja


def test_ordered_tiers_say_churn_falls_from_red_to_green():
    """'赤・黄・緑の順に解約が多くなっています' reads 'churn grows from red to green', the opposite of the
    verdict (red churned most); the words say churn falls from red to yellow to green."""
    R = {"health_validation": {"status": "fitted", "validation": {
        "status": "fitted", "score": {"auc": 0.75},
        "verdicts": {"auc": "above_chance", "tier_order": "ordered", "calibration": "adequate"}}}}
    assert "解約は赤・黄・緑の順に少なくなっています" in N.conclusion_health(R, "ja")
    assert "churn falls from the red to the yellow to the green tier" in N.conclusion_health(R, "en")
