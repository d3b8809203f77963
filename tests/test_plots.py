"""Each chart renders with Japanese labels and no font warning (a "Glyph missing" warning is an error here).

The PNGs go to pytest's tmp dir; set CSKIT_PLOTS_DIR to keep them for a look.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from cskit import plots  # noqa: E402

MONTHS = pd.date_range("2025-01-01", periods=8, freq="MS")


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    keep = os.environ.get("CSKIT_PLOTS_DIR")
    d = Path(keep) if keep else tmp_path
    d.mkdir(parents=True, exist_ok=True)
    return d


def _bridge() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = len(MONTHS)
    d = pd.DataFrame({
        "month": MONTHS,
        "new": rng.integers(50, 100, n) * 1000.0,
        "expansion": rng.integers(10, 40, n) * 1000.0,
        "reactivation": rng.integers(0, 5, n) * 1000.0,
        "contraction": rng.integers(5, 20, n) * 1000.0,
        "churn": rng.integers(20, 60, n) * 1000.0,
    })
    start = 1_000_000 + np.concatenate([[0], np.cumsum(
        (d.new + d.expansion + d.reactivation - d.contraction - d.churn).to_numpy())[:-1]])
    d["mrr_start"] = start
    d["mrr_end"] = start + d.new + d.expansion + d.reactivation - d.contraction - d.churn
    return d


def _drivers() -> pd.DataFrame:
    return pd.DataFrame({
        "label": ["ログイン日数", "顧客満足度", "問い合わせ回数", "NPS (推奨度スコア)"],
        "effect": [0.55, 0.8, 1.4, 1.02],
        "ci_low": [0.45, 0.66, 1.1, 0.9],
        "ci_high": [0.67, 0.97, 1.78, 1.15],
        "flagged": [True, True, True, False],
    })


def _render(draw, path: Path, language: str = "ja") -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.set_style()
        ax = draw(language)
        ax.set_title("テスト図 — " + path.stem)
        ax.figure.savefig(path, bbox_inches="tight")
        plt.close(ax.figure)
    assert path.stat().st_size > 5000
    return path


@pytest.mark.parametrize("language", ["ja", "en"])
def test_mrr_bridge(outdir, language):
    d = _bridge()
    _render(lambda lang: plots.mrr_bridge(d, language=lang), outdir / f"bridge_{language}.png", language)


def test_mrr_bridge_draws_losses_below_zero():
    d = _bridge()
    plots.set_style()
    ax = plots.mrr_bridge(d)
    bars = [p for p in ax.patches]
    heights = np.array([b.get_height() for b in bars]).reshape(5, len(d))
    np.testing.assert_allclose(heights[0], d.new)
    np.testing.assert_allclose(heights[3], -d.contraction)
    np.testing.assert_allclose(heights[4], -d.churn)
    churn_bottoms = np.array([b.get_y() for b in bars]).reshape(5, len(d))[4]
    np.testing.assert_allclose(churn_bottoms, -d.contraction)
    plt.close(ax.figure)


def test_compact_amounts():
    assert plots.compact(123_000_000, "ja") == "1.23億"
    assert plots.compact(34_000_000, "ja") == "3,400万"
    assert plots.compact(-2_500_000, "en") == "-2.5M"
    assert plots.compact(999, "en") == "999"
    assert plots.compact(0, "ja") == "0"


def test_rate_lines(outdir):
    d = pd.DataFrame({
        "month": list(MONTHS) * 2,
        "rate": np.r_[np.linspace(0.02, 0.04, 8), np.linspace(0.03, 0.05, 8)],
        "kind": ["顧客解約率"] * 8 + ["収益解約率"] * 8,
    })
    _render(lambda lang: plots.rate_lines(d, "month", "rate", "kind", language=lang), outdir / "rates.png")


def test_churn_rates_wide_table(outdir):
    d = pd.DataFrame({"month": MONTHS, "customer_churn_rate": np.linspace(0.02, 0.04, 8),
                      "revenue_churn_rate_start_base": np.linspace(0.03, 0.05, 8),
                      "gross_revenue_churn": np.linspace(0.04, 0.06, 8)})
    d.loc[0, ["customer_churn_rate", "revenue_churn_rate_start_base", "gross_revenue_churn"]] = np.nan
    _render(lambda lang: plots.churn_rates(d, language=lang), outdir / "churn_rates.png")
    plots.set_style()
    ax = plots.churn_rates(d)
    assert [tx.get_text() for tx in ax.get_legend().get_texts()] == [
        "顧客解約率",
        "収益解約率（月初MRR基準）",
        "グロス収益解約率",
    ]
    assert all(len(line.get_xdata()) == 7 for line in ax.get_lines()[:3])
    plt.close(ax.figure)


def test_cohort_heatmap(outdir):
    rows = [{"cohort": c, "months_since_start": a, "retention": 0.97 ** a}
            for i, c in enumerate(MONTHS) for a in range(len(MONTHS) - i)]
    d = pd.DataFrame(rows)
    _render(lambda lang: plots.cohort_heatmap(d, language=lang), outdir / "cohorts.png")


def test_survival_curves(outdir):
    time = np.arange(0, 24)
    d = pd.concat([
        pd.DataFrame({"time": time, "survival": 0.98 ** time, "ci_low": 0.96 ** time,
                      "ci_high": np.minimum(1, 0.99 ** time), "group": "オンボード完了"}),
        pd.DataFrame({"time": time, "survival": 0.95 ** time, "ci_low": 0.93 ** time,
                      "ci_high": 0.97 ** time, "group": "未完了"}),
    ])
    _render(lambda lang: plots.survival_curves(d, language=lang), outdir / "km.png")


def test_survival_grid(outdir):
    time = np.arange(0, 12)
    parts = [("all", "all", 0.97), ("segment", "SMB", 0.95), ("segment", "Enterprise", 0.99),
             ("onboarding", "completed", 0.98)]
    d = pd.concat([pd.DataFrame({"group_by": by, "group": g, "timeline": time, "survival": r ** time,
                                 "ci_low": (r - 0.01) ** time, "ci_high": np.minimum(1, (r + 0.01) ** time)})
                   for by, g, r in parts])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.set_style()
        axes = plots.survival_grid(d, titles={"segment": "セグメント別"})
        axes.flat[0].figure.savefig(outdir / "km_grid.png")
    assert axes.shape == (2, 2)
    assert [ax.get_title() for ax in axes.flat[:3]] == ["all", "セグメント別", "onboarding"]
    assert len(axes.flat[1].get_lines()) == 2 and not axes.flat[3].get_visible()
    plt.close(axes.flat[0].figure)


def test_forest(outdir):
    d = _drivers()
    _render(lambda lang: plots.forest(d, xlabel="ハザード比 (1SDあたり)", language=lang), outdir / "forest.png")


def test_forest_uses_log_axis_and_marks_flagged():
    plots.set_style()
    ax = plots.forest(_drivers())
    assert ax.get_xscale() == "log"
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in points] == [3, 1]
    filled, hollow = (c.get_facecolors()[0] for c in points)
    assert filled[3] == 1.0 and tuple(hollow[:3]) == (1.0, 1.0, 1.0)
    at = dict(zip(ax.get_yticks(), (tl.get_text() for tl in ax.get_yticklabels())))
    assert at[max(at)] == "ログイン日数"  # first row on top
    plt.close(ax.figure)


def test_interval_bars(outdir):
    d = pd.DataFrame({
        "label": ["ログイン日数", "顧客満足度", "問い合わせ回数"],
        "d_ltv": [3_200_000.0, 1_100_000.0, -200_000.0],
        "d_ltv_lo": [2_000_000.0, 100_000.0, -900_000.0],
        "d_ltv_hi": [4_500_000.0, 2_000_000.0, 400_000.0],
    })
    _render(lambda lang: plots.interval_bars(d, language=lang), outdir / "potential.png")


def test_interval_bars_skips_missing_values():
    d = pd.DataFrame({"label": ["a", "b"], "d_ltv": [1.0, np.nan], "d_ltv_lo": [0.5, np.nan],
                      "d_ltv_hi": [2.0, np.nan]})
    plots.set_style()
    ax = plots.interval_bars(d)
    assert len(ax.patches) == 1
    plt.close(ax.figure)


def test_points_bars(outdir):
    d = pd.DataFrame({"label": ["ログイン日数", "顧客満足度", "問い合わせ回数"],
                      "points": [55.0, 30.0, 15.0], "direction": ["+", "+", "-"]})
    _render(lambda lang: plots.points_bars(d, language=lang), outdir / "points.png")


def test_tier_bars_and_calibration(outdir):
    tiers = pd.DataFrame({"tier": ["red", "yellow", "green"], "churn_rate": [0.3, 0.12, 0.04],
                          "lo": [0.25, 0.09, 0.02], "hi": [0.35, 0.15, 0.06]})
    _render(lambda lang: plots.tier_bars(tiers, low="lo", high="hi", language=lang), outdir / "tiers.png")
    cal = pd.DataFrame({"predicted": np.linspace(0.02, 0.4, 10), "observed": np.linspace(0.03, 0.38, 10)})
    _render(lambda lang: plots.calibration(cal, language=lang), outdir / "calibration.png")


@pytest.mark.parametrize("language", ["ja", "en"])
def test_points_bars_with_context_items(outdir, language):
    d = pd.DataFrame({"label": ["ログイン日数", "契約月数", "セグメント", "契約形態"],
                      "points": [60.0, 25.0, 15.0, 0.0], "direction": ["+", "+", "level", "level"],
                      "kind": ["kpi", "context", "context", "context"]})
    _render(lambda lang: plots.points_bars(d, language=lang), outdir / f"points_context_{language}.png", language)
    plots.set_style()
    ax = plots.points_bars(d, language=language)
    grey = matplotlib.colors.to_rgba(plots.POINT_COLOURS["context"])
    assert [p.get_facecolor() == grey for p in ax.patches] == [False, True, True, True]
    texts = [tx.get_text() for tx in ax.texts]
    if language == "ja":
        assert texts == [" 60点 (高いほど健全)", " 25点 (高いほど健全)", " 15点 (水準で決まる)", " 0点 (水準で決まる)"]
        assert [tx.get_text() for tx in ax.get_legend().get_texts()] == ["KPI", "契約状況（CSでは変えられない）"]
    else:
        assert texts[2] == " 15 (set by level)"
    plt.close(ax.figure)


def _launch_bridge(first_new: float) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 12
    d = pd.DataFrame({"month": pd.date_range("2024-01-01", periods=n, freq="MS"),
                      "new": rng.uniform(80, 120, n), "expansion": rng.uniform(10, 30, n), "reactivation": 0.0,
                      "contraction": rng.uniform(5, 15, n), "churn": rng.uniform(20, 40, n)})
    d.loc[0, "new"] = first_new
    d["mrr_end"] = (d["new"] + d["expansion"] - d["contraction"] - d["churn"]).cumsum()
    return d


def test_a_launch_month_does_not_set_the_bridges_scale(outdir):
    plots.set_style()
    launch = _launch_bridge(5000.0)
    assert plots.launch_month(launch) and not plots.launch_month(_launch_bridge(150.0))
    ax = plots.mrr_bridge(launch, language="ja", title="MRRブリッジ")
    bars = [p for p in ax.patches if p.get_height() != 0]
    assert min(p.get_x() for p in bars) > 0.5  # the first month has no bar
    assert ax.get_ylim()[1] < 1000  # the scale is the monthly movements', not 5,000
    assert any("省略" in t.get_text() for t in ax.texts)  # and the chart says so
    assert ax.get_title() == "MRRブリッジ"
    ax.figure.savefig(outdir / "bridge_launch.png")
    shown = plots.mrr_bridge(launch, language="en", first_month="show")
    assert max(p.get_height() for p in shown.patches) >= 5000
    plt.close("all")


def test_intervals_crossing_zero_are_grey_and_legends_stay_off_the_plot(outdir):
    plots.set_style()
    d = pd.DataFrame({"label": ["a", "b"], "d_ltv": [5.0, 1.0], "d_ltv_lo": [2.0, -1.0], "d_ltv_hi": [8.0, 3.0]})
    ax = plots.interval_bars(d, language="ja")
    colours = [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches[:2]]
    assert colours == ["#4c72b0", "#bdbdbd"]
    ax.figure.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # beside, not over
    curves = pd.concat([pd.DataFrame({"group_by": "plan", "group": f"plan_{i:02d}", "timeline": np.arange(12),
                                      "survival": np.linspace(1, 0.5 + i / 40, 12)}) for i in range(15)])
    axes = plots.survival_grid(curves, language="en", titles={"plan": "By plan"})
    fig = axes.flat[0].figure
    fig.canvas.draw()
    first = axes.flat[0]
    assert first.get_legend().get_window_extent().x0 >= first.get_window_extent().x1 - 1
    fig.savefig(outdir / "survival_15_plans.png")
    plt.close("all")


def test_forest_grid_draws_each_outcome_with_one_legend(outdir):
    plots.set_style()
    rows = pd.DataFrame({"label": ["ログイン日数", "b"], "effect": [0.6, 1.1], "ci_low": [0.5, 0.9],
                         "ci_high": [0.7, 1.3], "flagged": [True, False]})
    axes = plots.forest_grid([("解約", rows, "HR"), ("更新", rows, "OR"), ("拡大", rows, "OR")], language="ja")
    assert [a.get_title() for a in axes.flat] == ["解約", "更新", "拡大"]
    assert all(a.get_legend() is None for a in axes.flat) and len(axes.flat[0].figure.legends) == 1
    axes.flat[0].figure.savefig(outdir / "forest_grid.png")
    plt.close("all")


@pytest.mark.parametrize("language", ["ja", "en"])
def test_tier_mix_and_score_bands(outdir, language):
    from cskit.history import score_quantiles, tier_mix

    rng = np.random.default_rng(3)
    hist = pd.DataFrame({"account_id": np.tile([f"A{i}" for i in range(50)], len(MONTHS)),
                         "month": np.repeat(MONTHS, 50), "score": rng.uniform(0, 100, 50 * len(MONTHS))})
    hist["tier"] = np.where(hist["score"] < 30, "red", np.where(hist["score"] >= 60, "green", "yellow"))
    mix, q = tier_mix(hist), score_quantiles(hist)
    png = _render(lambda lang: plots.tier_mix(mix, language=lang), outdir / f"tier_mix_{language}.png", language)
    _render(lambda lang: plots.score_bands(q, language=lang), outdir / f"score_bands_{language}.png", language)
    # the stacked shares of each month add up to 1, in the order red, yellow, green from the bottom
    assert np.allclose(mix[["share_red", "share_yellow", "share_green"]].sum(axis=1), 1.0)
    assert png.stat().st_size > 5000


def test_forest_ticks_stay_a_twelfth_of_the_axis_apart_on_a_wide_ratio_axis():
    """The peer client's expansion panel spans OR 0.2 to 1.7: 1.25 and 1.5 (ratio 1.2) were both kept
    and their labels ran together ('1.251.5') in the report's narrow third of a figure. Every two ticks
    are now at least a twelfth of the log axis apart."""
    d = pd.DataFrame({"label": ["契約月数", "meeting"], "effect": [0.22, 1.25], "ci_low": [0.2, 1.15],
                      "ci_high": [0.24, 1.7], "flagged": [True, True]})
    ax = plots.forest(d)
    ticks = np.log(ax.get_xticks())
    lo, hi = np.log(ax.get_xlim())
    assert 0.0 in ticks and np.diff(ticks).min() >= (hi - lo) / 12 - 1e-12
    plt.close(ax.figure)
