"""Charts for the diagnosis notebook, seaborn style: a tidy DataFrame and column names in, an Axes out.

Every function takes ``ax`` (a new figure when None) and ``language`` ("ja" | "en") for its axis
labels; titles and data labels come from the caller's DataFrame (e.g. the KPI ``label`` column), so
a chart never types a number or a name itself. :func:`set_style` must run once before drawing:
``import matplotlib_fontja`` registers IPAexGothic and ``sns.set_theme(..., font="IPAexGothic")``
keeps it (calling ``sns.set_theme()`` without the font resets it to one with no Japanese glyphs).

:func:`show` displays the figures drawn (the notebook's ``plt.show()``); in ``cskit run``'s kernel each is
rendered in a forked child while the notebook goes on, and :func:`wait` (the notebook's last cell)
puts every picture in its place.
"""
from __future__ import annotations

import os
import sys

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import matplotlib_fontja  # noqa: F401  (registers the IPAexGothic font)
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes

FONT = "IPAexGothic"

TEXT = {
    "month": {"ja": "月", "en": "Month"},
    "mrr": {"ja": "MRR", "en": "MRR"},
    "mrr_end": {"ja": "月末MRR", "en": "MRR at month end"},
    "new": {"ja": "新規", "en": "New"},
    "expansion": {"ja": "拡大", "en": "Expansion"},
    "reactivation": {"ja": "再開", "en": "Reactivation"},
    "contraction": {"ja": "縮小", "en": "Contraction"},
    "churn": {"ja": "解約", "en": "Churn"},
    "rate": {"ja": "率", "en": "Rate"},
    "cohort": {"ja": "開始コホート", "en": "Start cohort"},
    "months_since_start": {"ja": "開始からの月数", "en": "Months since start"},
    "retention": {"ja": "継続率", "en": "Retention"},
    "survival": {"ja": "生存率 (継続確率)", "en": "Survival (probability still a customer)"},
    "tenure": {"ja": "契約月数", "en": "Months since contract start"},
    "effect": {"ja": "効果 (1SDあたり, 95%区間)", "en": "Effect per +1 SD (95% interval)"},
    "flagged": {"ja": "トリガー（偽発見率の基準を満たす）",
                "en": "Trigger (passes the false-discovery control)"},
    "not_flagged": {"ja": "有意でない", "en": "Not significant"},
    "d_ltv": {"ja": "LTV増分", "en": "LTV gain"},
    "sure": {"ja": "95%区間がゼロの片側", "en": "95% interval clear of zero"},
    "unsure": {
        "ja": "区間がゼロをまたぐ（ゼロと区別できない）",
        "en": "interval crosses zero (not distinguishable from zero)",
    },
    "points": {"ja": "配点 (合計100)", "en": "Points (sum to 100)"},
    "item_kpi": {"ja": "KPI", "en": "KPI"},
    "item_context": {"ja": "契約状況（CSでは変えられない）", "en": "Account context (not changeable by CS)"},
    "dir_+": {"ja": "高いほど健全", "en": "higher is healthier"},
    "dir_-": {"ja": "低いほど健全", "en": "lower is healthier"},
    "dir_level": {"ja": "水準で決まる", "en": "set by level"},
    "tier": {"ja": "ティア", "en": "Tier"},
    "churn_rate": {"ja": "解約率", "en": "Churn rate"},
    "customer_churn_rate": {"ja": "顧客解約率", "en": "Customer churn rate"},
    "revenue_churn_rate_start_base": {
        "ja": "収益解約率（月初MRR基準）",
        "en": "Revenue churn rate (start-of-month MRR)",
    },
    "revenue_churn_rate_remaining_base": {
        "ja": "収益解約率（残存MRR基準）",
        "en": "Revenue churn rate (remaining MRR)",
    },
    "gross_revenue_churn": {"ja": "グロス収益解約率", "en": "Gross revenue churn"},
    "net_revenue_churn": {"ja": "ネット収益解約率", "en": "Net revenue churn"},
    "red": {"ja": "赤", "en": "Red"},
    "yellow": {"ja": "黄", "en": "Yellow"},
    "green": {"ja": "緑", "en": "Green"},
    "predicted": {"ja": "予測解約確率", "en": "Predicted churn probability"},
    "observed": {"ja": "実際の解約率", "en": "Observed churn rate"},
    "perfect": {"ja": "完全な較正", "en": "Perfect calibration"},
    "tier_share": {"ja": "アカウントの割合", "en": "Share of accounts"},
    "score": {"ja": "ヘルススコア", "en": "Health score"},
    "median": {"ja": "中央値", "en": "Median"},
    "band_25_75": {"ja": "25〜75%", "en": "25–75%"},
    "band_10_90": {"ja": "10〜90%", "en": "10–90%"},
}

BRIDGE_PARTS = ("new", "expansion", "reactivation", "contraction", "churn")
BRIDGE_COLOURS = {
    "new": "#4C72B0",
    "expansion": "#55A868",
    "reactivation": "#8172B3",
    "contraction": "#DD8452",
    "churn": "#C44E52",
}
BELOW = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.22), "ncol": 6, "fontsize": "small", "frameon": False}
RATIO_TICKS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
POINT_COLOURS = {"kpi": "#4C72B0", "context": "#9A9A9A"}
TIER_COLOURS = {"red": "#C44E52", "yellow": "#E5C04B", "green": "#55A868"}


def t(key: str, language: str) -> str:
    """The ja/en label of a chart word (the key itself when unknown)."""
    return TEXT.get(key, {}).get(language, key)


def set_style() -> None:
    """Seaborn's whitegrid theme with the Japanese font (IPAexGothic has every glyph the charts use)."""
    sns.set_theme(style="whitegrid", font=FONT)


def _tight(fig, rect: tuple[float, float, float, float] | None = None) -> None:
    """``fig.tight_layout(rect=rect)`` made when the figure is drawn (matplotlib's tight layout engine:
    the same subplot parameters from the same text sizes, computed by whoever draws it, e.g. the child
    process that makes the notebook's picture, and never again once the picture is saved)."""
    fig.set_layout_engine("tight", rect=rect)


def _ax(ax: Axes | None, size: tuple[float, float] = (8, 4.5)) -> Axes:
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=size)
    return ax


def _axis_labels(ax: Axes, x: str, y: str, language: str) -> None:
    """Name both axes by their terms in ``language``."""
    ax.set_xlabel(t(x, language))
    ax.set_ylabel(t(y, language))


def _thousands(ax: Axes, axis: str = "y", language: str = "ja") -> None:
    fmt = mticker.FuncFormatter(lambda v, _: compact(v, language))
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def compact(value: float, language: str = "ja") -> str:
    """Short tick label of an amount: 1.2億 / 3,400万 in Japanese, 120M / 34K in English."""
    v = float(value)
    units = ((1e8, "億"), (1e4, "万")) if language == "ja" else ((1e9, "B"), (1e6, "M"), (1e3, "K"))
    for size, unit in units:
        if abs(v) >= size:
            x = v / size
            return f"{x:,.0f}{unit}" if abs(x) >= 100 else f"{x:.3g}{unit}"
    return f"{v:,.0f}"


def _month_labels(months: pd.Series) -> list[str]:
    return [pd.Timestamp(m).strftime("%Y-%m") for m in months]


def launch_month(data: pd.DataFrame, parts: tuple[str, ...] = BRIDGE_PARTS, factor: float = 4.0) -> bool:
    """Whether the bridge's first month dwarfs the rest: its gains exceed ``factor`` × the median
    monthly movement (gains plus losses) of the other months. That happens when the data open on the
    existing book or a launch cohort, whose first paid month all counts as "new"; in an ordinary
    month the ratio is near 1."""
    if len(data) < 3:
        return False
    gains = [p for p in parts if p not in ("contraction", "churn")]
    first = float(data[gains].iloc[0].abs().sum())
    moves = data[list(parts)].iloc[1:].abs().sum(axis=1)
    scale = float(moves.median())
    return scale > 0 and first > factor * scale


def mrr_bridge(
    data: pd.DataFrame,
    month: str = "month",
    parts: tuple[str, ...] = BRIDGE_PARTS,
    total: str = "mrr_end",
    currency: str = "JPY",
    language: str = "ja",
    ax: Axes | None = None,
    title: str | None = None,
    first_month: str = "auto",
) -> Axes:
    """Monthly MRR bridge: gains stacked above zero, losses (contraction, churn) below, end MRR as a line.

    Losses are drawn negative whatever their sign in ``data`` (the bridge table stores them as
    positive amounts); the line uses a second axis because end MRR is an order of magnitude larger.
    ``first_month="auto"`` leaves out the first month's bars when it dwarfs the rest
    (:func:`launch_month`: the opening book or a launch cohort) and says so on the chart, so the
    monthly movements set the scale; ``"show"`` always draws it.
    """
    ax = _ax(ax, (10, 4.5))
    skip = first_month == "auto" and launch_month(data, parts)
    bars = data.iloc[1:] if skip else data
    x = np.arange(len(data))
    xb = x[1:] if skip else x
    up = np.zeros(len(bars))
    down = np.zeros(len(bars))
    for part in parts:
        values = bars[part].to_numpy(dtype=float)
        if part in ("contraction", "churn"):
            values = -np.abs(values)
            ax.bar(xb, values, bottom=down, color=BRIDGE_COLOURS.get(part), label=t(part, language))
            down += values
        else:
            ax.bar(xb, values, bottom=up, color=BRIDGE_COLOURS.get(part), label=t(part, language))
            up += values
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"{t('mrr', language)} ({currency})")
    _thousands(ax, "y", language)
    labels = _month_labels(data[month])
    step = max(1, len(labels) // 12)
    ax.set_xticks(x[::step], labels[::step], rotation=45, ha="right")
    ax.set_xlim(-0.7, len(data) - 0.3)
    if skip:  # headroom above the tallest bar for the note, so it never covers one
        low, high = ax.get_ylim()
        ax.set_ylim(low, max(float(up.max()), 0.0) * 1.3 + 0.05 * (high - low))
        gains = sum(float(data[p].iloc[0]) for p in parts if p not in ("contraction", "churn"))
        note = (f"{labels[0]}の新規 {compact(gains, language)}（開始月に計上される既存・立上げ時の契約）は棒を省略"
                if language == "ja" else
                f"{labels[0]}: new {compact(gains, language)} (the book at the data's first month) not drawn to scale")
        ax.text(0.01, 0.97, note, transform=ax.transAxes, va="top", ha="left", fontsize="small", color="0.3",
                bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.9})
    if total and total in data:
        ax2 = ax.twinx()
        ax2.plot(x, data[total].to_numpy(dtype=float), color="black", marker="o", markersize=3,
                 label=t(total, language))
        ax2.set_ylabel(f"{t(total, language)} ({currency})")
        ax2.grid(False)
        _thousands(ax2, "y", language)
        handles, names = ax.get_legend_handles_labels()
        h2, n2 = ax2.get_legend_handles_labels()
        ax.legend(handles + h2, names + n2, **BELOW)
    else:
        ax.legend(**BELOW)
    if title:
        ax.set_title(title)
    return ax


def rate_lines(
    data: pd.DataFrame,
    x: str,
    y: str,
    hue: str,
    language: str = "ja",
    ylabel: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Rates over months, one line per ``hue`` value (e.g. customer vs revenue churn), y as a percentage."""
    ax = _ax(ax)
    sns.lineplot(data=data, x=x, y=y, hue=hue, marker="o", ax=ax)
    ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    ax.set_xlabel(t(x, language))
    ax.set_ylabel(ylabel or t("rate", language))
    ax.legend(title=None, **(BELOW | {"bbox_to_anchor": (0.5, -0.28), "ncol": 3}))
    ax.tick_params(axis="x", rotation=45)
    return ax


def churn_rates(
    data: pd.DataFrame,
    month: str = "month",
    series: tuple[str, ...] = ("customer_churn_rate", "revenue_churn_rate_start_base", "gross_revenue_churn"),
    language: str = "ja",
    ax: Axes | None = None,
) -> Axes:
    """Monthly churn rates (columns ``series`` of the metrics' rates table) as labelled lines.

    Parameters
    ----------
    data : pandas.DataFrame
        The metrics' rates table: one row a month, a column per rate (fractions).
    month : str
        The column of months, the x axis.
    series : tuple of str
        The rate columns drawn, one line each (rows where a rate is missing are left out of its line).
    language : {"ja", "en"}
        Language of the axis labels and legend.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new 8 x 4.5 figure when omitted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes with one line per rate, y as a percentage, legend below.
    """
    long = data.melt(id_vars=[month], value_vars=list(series), var_name="series", value_name="rate")
    long["series"] = [t(s, language) for s in long["series"]]
    return rate_lines(long.dropna(subset=["rate"]), month, "rate", "series", language=language, ax=ax)


def cohort_heatmap(
    data: pd.DataFrame,
    cohort: str = "cohort",
    age: str = "months_since_start",
    value: str = "retention",
    language: str = "ja",
    ax: Axes | None = None,
) -> Axes:
    """Retention by start cohort (rows) and months since start (columns), 0-100% colour scale.

    Parameters
    ----------
    data : pandas.DataFrame
        The metrics' cohort table in long form: one row a cohort and age (duplicates are averaged).
    cohort, age, value : str
        The columns of start cohort (rows), months since start (columns) and retention (the colour, a fraction).
    language : {"ja", "en"}
        Language of the axis labels and the colour bar's label.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure 10 wide, taller with more cohorts, when omitted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes with the heat map, cohorts labelled ``YYYY-MM``.
    """
    grid = data.pivot_table(index=cohort, columns=age, values=value, aggfunc="mean", sort=True)
    grid.index = [pd.Timestamp(c).strftime("%Y-%m") if not isinstance(c, str) else c for c in grid.index]
    ax = _ax(ax, (10, max(3.0, 0.25 * len(grid) + 1.5)))
    sns.heatmap(grid, vmin=0, vmax=1, cmap="viridis", ax=ax,
                cbar_kws={"label": t(value, language), "format": mticker.PercentFormatter(1.0)})
    ax.grid(False)
    _axis_labels(ax, age, cohort, language)
    return ax


def survival_curves(
    data: pd.DataFrame,
    time: str = "time",
    survival: str = "survival",
    group: str | None = "group",
    low: str | None = "ci_low",
    high: str | None = "ci_high",
    language: str = "ja",
    ax: Axes | None = None,
) -> Axes:
    """Kaplan-Meier step curves with their pointwise confidence band, one per ``group``."""
    ax = _ax(ax)
    groups = [(None, data)] if group is None or group not in data else list(data.groupby(group, sort=True))
    palette = sns.color_palette(n_colors=max(1, len(groups)))
    for (name, g), colour in zip(groups, palette):
        g = g.sort_values(time)
        ax.step(g[time], g[survival], where="post", color=colour, label=None if name is None else str(name))
        if low and high and low in g and high in g:
            ax.fill_between(g[time], g[low], g[high], step="post", color=colour, alpha=0.15, linewidth=0)
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    _axis_labels(ax, "tenure", "survival", language)
    if len(groups) > 1 or groups[0][0] is not None:
        if len(groups) <= 4:
            ax.legend(title=None, fontsize="small", loc="lower left")
        else:  # many groups (e.g. 15 plans): beside the plot, never over the curves
            ax.legend(title=None, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                      ncol=1 + len(groups) // 16)
    return ax


def survival_grid(
    data: pd.DataFrame,
    facet: str = "group_by",
    time: str = "timeline",
    language: str = "ja",
    titles: dict[str, str] | None = None,
) -> np.ndarray:
    """One Kaplan-Meier panel per value of ``facet`` (e.g. all / segment / plan / onboarding), two per row."""
    keys = list(dict.fromkeys(data[facet]))
    many = (
        max((data[data[facet] == k]["group"].nunique() if "group" in data else 1) for k in keys) > 4 if keys else False
    )
    cols = 1 if many else 2  # a panel with many groups keeps its legend beside it: one panel per row
    rows = max(1, (len(keys) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11 if cols == 2 else 9, 4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        survival_curves(data[data[facet] == key], time=time, language=language, ax=ax)
        ax.set_title((titles or {}).get(key, key))
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    _tight(fig)
    return axes


def forest(
    data: pd.DataFrame,
    label: str = "label",
    effect: str = "effect",
    low: str = "ci_low",
    high: str = "ci_high",
    flagged: str | None = "flagged",
    xlabel: str | None = None,
    language: str = "ja",
    ax: Axes | None = None,
) -> Axes:
    """Ratio effects (HR or OR per +1 SD) with 95% intervals on a log axis; reference line at 1.

    Rows are drawn in the order given (top to bottom); flagged rows (FDR q < alpha) are filled,
    the rest hollow, so significance is visible without colour.
    """
    d = data.dropna(subset=[effect, low, high]).reset_index(drop=True)
    ax = _ax(ax, (8, max(2.5, 0.35 * len(d) + 1.2)))
    y = np.arange(len(d))[::-1]
    is_flagged = d[flagged].astype(bool).to_numpy() if flagged and flagged in d else np.zeros(len(d), bool)
    ax.hlines(y, d[low], d[high], color="0.35", linewidth=1.5)
    for mask, face, name in ((is_flagged, "#C44E52", "flagged"), (~is_flagged, "white", "not_flagged")):
        if mask.any():
            ax.scatter(d[effect][mask], y[mask], s=40, zorder=3, facecolors=face, edgecolors="#C44E52",
                       label=t(name, language))
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    if len(d):
        span = (min(float(d[low].min()), 1.0) / 1.1, max(float(d[high].max()), 1.0) * 1.1)
        ax.set_xlim(*span)
        # ticks a twelfth of the log axis apart at least (1.25 and 1.5 collide on an axis from 0.2 to 2)
        ax.set_xticks(_spaced([v for v in RATIO_TICKS if span[0] <= v <= span[1]],
                              min_ratio=max(1.18, (span[1] / span[0]) ** (1 / 12))))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.set_yticks(y, d[label].astype(str).tolist())
    ax.set_ylim(-0.7, len(d) - 0.3)
    ax.set_xlabel(xlabel or t("effect", language))
    if len(d):
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


def _spaced(ticks: list[float], min_ratio: float = 1.18) -> list[float]:
    """Ratio ticks at least ``min_ratio`` apart on the log axis (1 always kept), so labels never collide
    (:func:`forest` widens it on a wide axis)."""
    out: list[float] = []
    for v in sorted(ticks, key=lambda v: (v != 1.0, abs(np.log(v)))):
        if all(max(v, u) / min(v, u) >= min_ratio for u in out):
            out.append(v)
    return sorted(out)


def interval_bars(
    data: pd.DataFrame,
    label: str = "label",
    value: str = "d_ltv",
    low: str | None = "d_ltv_lo",
    high: str | None = "d_ltv_hi",
    currency: str = "JPY",
    xlabel: str | None = None,
    language: str = "ja",
    ax: Axes | None = None,
) -> Axes:
    """Horizontal bars of an amount per KPI (e.g. the LTV gain of +10%), with its 95% interval as a whisker.

    Rows keep the caller's order (sort first for a ranking); missing values are left out, not drawn as 0.
    """
    d = data.dropna(subset=[value]).reset_index(drop=True)
    ax = _ax(ax, (8, max(2.5, 0.35 * len(d) + 1.2)))
    y = np.arange(len(d))[::-1]
    v = d[value].to_numpy(dtype=float)
    unsure = np.zeros(len(d), bool)
    if low and high and low in d and high in d:
        lo = d[low].to_numpy(dtype=float)
        hi = d[high].to_numpy(dtype=float)
        unsure = np.isfinite(lo) & np.isfinite(hi) & (lo <= 0) & (hi >= 0)
    colours = np.where(unsure, "#BDBDBD", np.where(v >= 0, "#4C72B0", "#C44E52"))
    ax.barh(y, v, color=colours)
    if unsure.any():
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color="#4C72B0", label=t("sure", language)),
                           Patch(color="#BDBDBD", label=t("unsure", language))],
                  fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if low and high and low in d and high in d:
        ok = np.isfinite(lo) & np.isfinite(hi)
        err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
        ax.errorbar(v[ok], y[ok], xerr=err[:, ok], fmt="none", ecolor="black", capsize=3, linewidth=1)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, d[label].astype(str).tolist())
    ax.set_ylim(-0.7, len(d) - 0.3)
    ax.set_xlabel(f"{xlabel or t(value, language)} ({currency})")
    _thousands(ax, "x", language)
    return ax


def points_bars(
    data: pd.DataFrame,
    label: str = "label",
    points: str = "points",
    direction: str | None = "direction",
    kind: str | None = "kind",
    language: str = "ja",
    ax: Axes | None = None,
) -> Axes:
    """Health-score points (summing to 100) per item, in the caller's order (top to bottom).

    The bar text gives the points and the direction in words ("+": higher is healthier, "-": lower,
    "level": set by the account's level). When ``kind`` says "context" (segment, contract type,
    contract months: account context CS cannot change) those bars are grey, KPIs blue, with a legend.
    """
    d = data.reset_index(drop=True)
    ax = _ax(ax, (8, max(2.5, 0.35 * len(d) + 1.2)))
    y = np.arange(len(d))[::-1]
    kinds = d[kind].astype(str).to_numpy() if kind and kind in d else np.full(len(d), "kpi")
    v = d[points].to_numpy(dtype=float)
    for k in ("kpi", "context"):
        m = kinds == k
        if m.any():
            ax.barh(y[m], v[m], color=POINT_COLOURS[k], label=t(f"item_{k}", language))
    names = d[direction].astype(str) if direction and direction in d else pd.Series([""] * len(d))
    unit = "点" if language == "ja" else ""
    for yi, p, name in zip(y, v, names):
        words = t(f"dir_{name}", language) if name else ""
        ax.text(p, yi, f" {p:g}{unit}" + (f" ({words})" if words else ""), va="center", fontsize="small")
    ax.set_yticks(y, d[label].astype(str).tolist())
    ax.set_ylim(-0.7, len(d) - 0.3)
    ax.set_xlabel(t("points", language))
    ax.set_xlim(0, max(1.0, float(v.max()) * 2.0) if len(d) else 1.0)
    if (kinds == "context").any():
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


def tier_bars(
    data: pd.DataFrame,
    tier: str = "tier",
    rate: str = "churn_rate",
    low: str | None = None,
    high: str | None = None,
    language: str = "ja",
    ax: Axes | None = None,
) -> Axes:
    """A rate per tier (red / yellow / green, in the caller's order) with optional 95% whiskers.

    Parameters
    ----------
    data : pandas.DataFrame
        One row a tier, in the order drawn.
    tier, rate : str
        The columns of tier names (colour and tick label) and of the rate (a fraction, the bar's height).
    low, high : str, optional
        The columns of the interval's bounds; whiskers only when both are given and present.
    language : {"ja", "en"}
        Language of the tier names and axis labels.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new 6 x 4 figure when omitted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes with one bar per tier, y as a percentage.
    """
    d = data.reset_index(drop=True)
    ax = _ax(ax, (6, 4))
    x = np.arange(len(d))
    v = d[rate].to_numpy(dtype=float)
    ax.bar(x, v, color=[TIER_COLOURS.get(str(k), "#4C72B0") for k in d[tier]])
    if low and high and low in d and high in d:
        err = np.vstack([v - d[low].to_numpy(dtype=float), d[high].to_numpy(dtype=float) - v])
        ax.errorbar(x, v, yerr=np.clip(err, 0, None), fmt="none", ecolor="black", capsize=4)
    ax.set_xticks(x, [t(str(k), language) for k in d[tier]])
    ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    _axis_labels(ax, tier, rate, language)
    return ax


def calibration(
    data: pd.DataFrame,
    predicted: str = "predicted",
    observed: str = "observed",
    language: str = "ja",
    ax: Axes | None = None,
) -> Axes:
    """Observed vs predicted churn per risk group (e.g. decile), with the diagonal of perfect calibration.

    Parameters
    ----------
    data : pandas.DataFrame
        One row a risk group, in order, with its mean predicted and its observed churn (fractions).
    predicted, observed : str
        The columns of predicted and observed churn, the x and y axes.
    language : {"ja", "en"}
        Language of the axis labels and legend.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new 5 x 5 figure when omitted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes with the groups joined by a line and the dashed diagonal, both axes as percentages.
    """
    ax = _ax(ax, (5, 5))
    p = data[predicted].to_numpy(dtype=float)
    o = data[observed].to_numpy(dtype=float)
    top = float(np.nanmax(np.concatenate([p, o, [0.05]]))) * 1.05
    ax.plot([0, top], [0, top], color="0.5", linestyle="--", label=t("perfect", language))
    ax.plot(p, o, marker="o", color="#4C72B0")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.xaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    _axis_labels(ax, predicted, observed, language)
    ax.legend(fontsize="small", loc="upper left")
    return ax


def tier_mix(
    data: pd.DataFrame,
    month: str = "month",
    shares: tuple[str, ...] = ("share_red", "share_yellow", "share_green"),
    language: str = "ja",
    ax: Axes | None = None,
) -> Axes:
    """Share of accounts in each tier by month, as stacked bars (red at the bottom).

    Parameters
    ----------
    data : pandas.DataFrame
        The history's tier mix: one row a month, a column ``share_<tier>`` per tier (fractions summing to 1).
    month : str
        The column of months, one bar each.
    shares : tuple of str
        The share columns, stacked bottom to top; each is coloured by its tier.
    language : {"ja", "en"}
        Language of the axis labels and legend.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new 9 x 4 figure when omitted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes with the stacked bars, y from 0 to 100%.
    """
    d = data.reset_index(drop=True)
    ax = _ax(ax, (9, 4))
    x = np.arange(len(d))
    bottom = np.zeros(len(d))
    for col in shares:
        tier = col.removeprefix("share_")
        v = d[col].to_numpy(dtype=float)
        ax.bar(x, v, bottom=bottom, color=TIER_COLOURS.get(tier, "#4C72B0"), label=t(tier, language), width=0.8)
        bottom += v
    ax.set_xticks(x, _month_labels(d[month]), rotation=45, ha="right")
    ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    ax.set_ylim(0, 1)
    _axis_labels(ax, "month", "tier_share", language)
    ax.legend(**(BELOW | {"bbox_to_anchor": (0.5, -0.32)}))
    return ax


def score_bands(
    data: pd.DataFrame,
    month: str = "month",
    median: str = "q50",
    inner: tuple[str, str] = ("q25", "q75"),
    outer: tuple[str, str] = ("q10", "q90"),
    language: str = "ja",
    ax: Axes | None = None,
) -> Axes:
    """The score distribution by month: median line with the 25–75% and 10–90% bands.

    Parameters
    ----------
    data : pandas.DataFrame
        The history's score quantiles: one row a month.
    month : str
        The column of months, the x axis.
    median : str
        The column of the median score, drawn as a line.
    inner, outer : tuple of (str, str)
        The columns of the lower and upper bounds of the inner (25–75%) and outer (10–90%) bands.
    language : {"ja", "en"}
        Language of the axis labels and legend.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new 9 x 4 figure when omitted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes with the bands and median line, y from 0 to 100 points.
    """
    d = data.reset_index(drop=True)
    ax = _ax(ax, (9, 4))
    x = np.arange(len(d))
    ax.fill_between(x, d[outer[0]], d[outer[1]], color="#4C72B0", alpha=0.15, label=t("band_10_90", language))
    ax.fill_between(x, d[inner[0]], d[inner[1]], color="#4C72B0", alpha=0.3, label=t("band_25_75", language))
    ax.plot(x, d[median], color="#4C72B0", marker="o", label=t("median", language))
    ax.set_xticks(x, _month_labels(d[month]), rotation=45, ha="right")
    ax.set_ylim(0, 100)
    _axis_labels(ax, "month", "score", language)
    ax.legend(**BELOW)
    return ax

def forest_grid(panels: list[tuple[str, pd.DataFrame, str]], language: str = "ja") -> np.ndarray:
    """Several forest plots side by side, one per (title, rows, x label): the three trigger outcomes
    in one row of charts. The legend is drawn once, beside the last panel."""
    n = max(1, len(panels))
    tallest = max((len(rows) for _, rows, _ in panels), default=1)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, max(2.8, 0.34 * tallest + 1.6)), squeeze=False)
    handles: dict[str, object] = {}
    for ax, (title, rows, xlabel) in zip(axes.flat, panels):
        forest(rows, xlabel=xlabel, language=language, ax=ax)
        ax.set_title(title)
        for h, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, h)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    _tight(fig, rect=(0, 0.07, 1, 1))
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), frameon=False,
                   fontsize="small", bbox_to_anchor=(0.5, 0.0))
    return axes


def health_panels(items: pd.DataFrame, by_tier: pd.DataFrame | None, titles: tuple[str, str],
                  language: str = "ja") -> np.ndarray:
    """The score's points (:func:`points_bars`) and, beside them, churn by tier out of time
    (:func:`tier_bars`), each with its title."""
    has_tiers = by_tier is not None and len(by_tier)
    fig, axes = plt.subplots(
        1,
        2 if has_tiers else 1,
        figsize=(14 if has_tiers else 8, max(3.5, 0.38 * len(items) + 1.6)),
        squeeze=False,
        gridspec_kw={"width_ratios": [3, 2]} if has_tiers else None,
    )
    points_bars(items, language=language, ax=axes[0, 0])
    axes[0, 0].set_title(titles[0])
    if has_tiers:
        tier_bars(by_tier, low="ci_low", high="ci_high", language=language, ax=axes[0, 1])
        axes[0, 1].set_title(titles[1])
    _tight(fig)
    return axes


# ---------------------------------------------------------------- showing the figures

_pending: list = []  # shown figures whose picture is to come: _Waiting (queued) and _Render (in a child)
PATIENCE = 300.0  # seconds a child may take before its figures are drawn here instead
CHILDREN = 2  # children rendering at once: with the kernel's own work, two cores busy to the last picture
# ... and one more while the kernel only waits for them (wait()): figures still queued then start at once,
# beside the two children, instead of after one of them (the kernel's core is free by then)
CHILDREN_WAITING = CHILDREN + 1


def show() -> None:
    """Display the open figures, as ``plt.show()`` does in a notebook, and close them.

    In ``cskit run``'s kernel (``$CSKIT_CHARTS=fork``, two usable cores: :func:`cskit.parallel.parallel_enabled`)
    the pictures are made in a forked child process while the notebook goes on: each figure's place in
    the notebook holds its one-line text until its picture is put there (a display update, by a later
    :func:`show` or by :func:`wait`), the PNG the kernel would have made itself, byte for byte (the same
    formatter on the same figure). A child renders every figure queued when it starts, two children at
    most at a time (a fork copies the kernel's page tables: ~50 ms per GB it holds, so figures shown while
    both are busy wait for the next one), three once the kernel only waits for them (:func:`wait`).
    Anywhere else the figures are drawn here and now."""
    shell = _forking_shell()
    if shell is None:
        plt.show()
        return
    from IPython.display import display
    from matplotlib._pylab_helpers import Gcf
    from matplotlib_inline.backend_inline import _fetch_figure_metadata

    for manager in Gcf.get_all_fig_managers():
        fig = manager.canvas.figure
        handle = display({"text/plain": repr(fig)}, raw=True, display_id=True)
        _pending.append(_Waiting(shell, fig, _fetch_figure_metadata(fig), handle))
    plt.close("all")
    _advance(shell, block=False)


def wait() -> None:
    """Put every picture :func:`show` left to a child in its place (nothing to do when there is none)."""
    if _pending:
        _advance(_pending[0].shell, block=True)


def _advance(shell, block: bool) -> None:
    """Put the pictures of the children that are done in place and start a child for the queued figures
    while fewer than :data:`CHILDREN` run; with ``block`` (the kernel waits: :data:`CHILDREN_WAITING`),
    until every picture is in place."""
    limit = CHILDREN_WAITING if block else CHILDREN
    while _pending:
        running = [r for r in _pending if isinstance(r, _Render)]
        done = [r for r in running if r.ready()]
        for r in done:
            r.finish()
            _pending.remove(r)
        queued = [w for w in _pending if isinstance(w, _Waiting)]
        if queued and len(running) - len(done) < limit:
            _pending[:] = [r for r in _pending if isinstance(r, _Render)] + [_Render(shell, queued)]
            continue
        if not block:
            return
        if not done:  # wait for the oldest child
            oldest = next(r for r in _pending if isinstance(r, _Render))
            oldest.finish()
            _pending.remove(oldest)


def _forking_shell():
    """The IPython kernel's shell when figures are rendered in forked children (see :func:`show`), else None."""
    from cskit.kernel import CHARTS_ENV  # set to "fork" by cskit run for its kernel

    if os.environ.get(CHARTS_ENV) != "fork" or "inline" not in plt.get_backend():
        return None
    from IPython import get_ipython

    from cskit.parallel import parallel_enabled

    shell = get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None and parallel_enabled() else None


class _Waiting:
    """A figure shown, its picture not started: the figure, its display metadata, its display's handle."""

    def __init__(self, shell, fig, metadata: dict | None, handle):
        self.shell, self.fig, self.metadata, self.handle = shell, fig, metadata, handle


class _Render:
    """The display data (the IPython formatters' output: PNG and text) of queued figures, made in a forked
    child in their order."""

    def __init__(self, shell, figures: list[_Waiting]):
        self.shell, self.figures = shell, figures
        self.pipe, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: format, send, and leave without running any of the kernel's clean-up
            code = 1
            try:
                import gc
                import pickle

                from cskit.parallel import _first_to_go

                gc.disable()  # a collection would write into (and so copy) the parent's pages
                _first_to_go()  # out of memory, Linux ends this child, not the kernel (its figures: drawn there)
                os.close(self.pipe)
                data = [shell.display_formatter.format(w.fig) for w in figures]
                with os.fdopen(write, "wb") as f:
                    pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
                code = 0
            finally:
                os._exit(code)
        os.close(write)

    def ready(self) -> bool:
        import select

        return bool(select.select([self.pipe], [], [], 0)[0])

    def finish(self) -> None:
        """Wait for the child and put each picture in its figure's place (drawn here if the child failed or
        has not answered within :data:`PATIENCE` seconds)."""
        import pickle
        import select
        import signal

        payload, status = b"", 1
        with os.fdopen(self.pipe, "rb") as f:
            if select.select([f], [], [], PATIENCE)[0]:
                payload = f.read()
            else:
                os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        try:
            formatted = pickle.loads(payload) if status == 0 else None
        except Exception:  # noqa: BLE001 - a truncated answer: draw them here
            formatted = None
        if formatted is None or len(formatted) != len(self.figures):
            # said on the kernel's own stderr (the terminal or log of whoever runs it), not in the report:
            # the pictures are the same, drawn here; a broken child path must not go unseen
            print(f"cskit.plots: the chart child {self.pid} gave no pictures (wait status {status}); "
                  f"its {len(self.figures)} figure(s) were drawn in the kernel", file=sys.__stderr__, flush=True)
            formatted = [self.shell.display_formatter.format(w.fig) for w in self.figures]
        for w, (data, md) in zip(self.figures, formatted):
            if w.metadata:  # as IPython's display(fig, metadata=...) does
                md = {**md, **w.metadata}
            w.handle.update(data, metadata=md, raw=True)
        self.figures = []
