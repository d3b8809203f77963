"""The default KPI catalogue: the 27 KPIs of seed 000's improvement-potential table.

Each KPI has a canonical name, Japanese and English labels, a category (with both labels), bounds and
an improvement direction (+1: more is better, -1: less is better). A client's params may override or
extend it (``kpis:`` in the YAML); unknown numeric columns of the ``kpis`` table are used too, labelled
by their own name, in the category "other".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where a frame is made: `cskit run`'s own process needs none
    import pandas as pd


@dataclass(frozen=True)
class KPI:
    name: str
    ja: str
    en: str
    category: str
    lower: float = 0.0
    upper: float = math.inf
    direction: int = 1  # +1: more is better; -1: less is better (e.g. support inquiries)
    phase: str = "after_start"

    def label(self, language: str = "ja") -> str:
        return self.ja if language == "ja" else self.en


CATEGORIES: dict[str, dict[str, str]] = {
    "contract": {"ja": "契約状況", "en": "Contract"},
    "usage": {"ja": "利用状況", "en": "Usage"},
    "onboarding": {"ja": "オンボード", "en": "Onboarding"},
    "newsletter": {"ja": "メールマガジン", "en": "Newsletter"},
    "public_site": {"ja": "通常サイト訪問", "en": "Public site"},
    "cs_site": {"ja": "CSサイト訪問", "en": "CS site"},
    "community": {"ja": "コミュニティサイト訪問", "en": "Community"},
    "communication": {"ja": "コミュニケーション", "en": "Communication"},
    "other": {"ja": "その他", "en": "Other"},
}

PHASES: dict[str, dict[str, str]] = {
    "after_start": {"ja": "取引開始後", "en": "After contract start"},
}

_DEFAULT = [
    KPI("contract_months", "契約月数", "Contract months", "contract"),
    KPI("licenses", "契約ライセンス数", "Licenses", "contract"),
    KPI("licenses_free", "Freeプランライセンス数", "Free-plan licenses", "contract"),
    KPI("licenses_basic", "Basicプランライセンス数", "Basic-plan licenses", "contract"),
    KPI("licenses_pro", "Proプランライセンス数", "Pro-plan licenses", "contract"),
    KPI("active_users", "アクティブユーザー数", "Active users", "usage"),
    KPI("active_user_rate", "アクティブユーザー率", "Active-user rate", "usage", 0.0, 1.0),
    KPI("login_days", "ログイン日数", "Login days", "usage", 0.0, 31.0),
    KPI("session_seconds", "セッション時間 (s)", "Session time (s)", "usage"),
    KPI("onboarding_completed", "オンボード完了数", "Onboarding completed", "onboarding"),
    KPI("welcome_webinar_attendance", "ウェルカムウェビナー参加数", "Welcome-webinar attendance", "onboarding"),
    KPI("newsletter_open_rate", "開封率", "Newsletter open rate", "newsletter", 0.0, 1.0),
    KPI("newsletter_click_rate", "クリック率", "Newsletter click rate", "newsletter", 0.0, 1.0),
    KPI("site_visits", "サイト訪問数", "Site visits", "public_site"),
    KPI("case_study_views", "導入事例ページ閲覧数", "Case-study page views", "public_site"),
    KPI("faq_views", "FAQページ閲覧数", "FAQ page views", "public_site"),
    KPI("cs_site_visits", "サイト訪問数", "CS-site visits", "cs_site"),
    KPI("cs_site_registrations", "ユーザー登録数", "CS-site registrations", "cs_site"),
    KPI("manual_views", "マニュアルページ閲覧数", "Manual page views", "cs_site"),
    KPI("video_views", "動画ページ閲覧数", "Video page views", "cs_site"),
    KPI("training_views", "トレーニングページ閲覧数", "Training page views", "cs_site"),
    KPI("community_visits", "サイト訪問数", "Community visits", "community"),
    KPI("community_registrations", "ユーザー登録数", "Community registrations", "community"),
    KPI("community_posts", "投稿数", "Community posts", "community"),
    KPI("community_event_attendance", "コミュニティ会参加数", "Community-event attendance", "community"),
    KPI("csat", "顧客満足度", "Customer satisfaction", "communication"),
    KPI("support_inquiries", "問い合わせ回数", "Support inquiries", "communication", direction=-1),
]

# Not one of seed 000's 27, but built from the optional ``nps`` table and tested like any KPI
# (seed 000, case 3: is satisfaction linked to upsell?).
NPS_KPI = KPI("nps", "NPS (推奨度スコア)", "NPS (likelihood to recommend)", "communication", 0.0, 10.0)

DEFAULT_CATALOGUE: dict[str, KPI] = {k.name: k for k in _DEFAULT + [NPS_KPI]}
CATALOGUE_NAMES: list[str] = [k.name for k in _DEFAULT]


def build_catalogue(overrides: dict | None = None, extra_columns: list[str] | tuple = ()) -> dict[str, KPI]:
    """The default catalogue with a client's overrides/extensions and any unknown KPI columns.

    ``overrides`` maps a KPI name to a dict of KPI fields (``ja``, ``en``, ``category``, ``lower``,
    ``upper``, ``direction``); a new name adds a KPI. ``extra_columns`` are numeric columns found in
    the client's data that the catalogue does not know: they get their own name as label.
    """
    cat = dict(DEFAULT_CATALOGUE)
    for name, fields in (overrides or {}).items():
        fields = {k: v for k, v in dict(fields or {}).items() if v is not None}
        if name in cat:
            cat[name] = replace(cat[name], **fields)
        else:
            fields.setdefault("ja", name)
            fields.setdefault("en", name)
            fields.setdefault("category", "other")
            cat[name] = KPI(name=name, **fields)
    for col in extra_columns:
        if col not in cat:
            cat[col] = KPI(col, col, col, "other")
    return cat


def catalogue_frame(catalogue: dict[str, KPI], language: str = "ja") -> pd.DataFrame:
    """One row per KPI: name, label, category label, bounds, direction (for tables and charts)."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "kpi": k.name,
                "label": k.label(language),
                "category": k.category,
                "category_label": CATEGORIES.get(k.category, CATEGORIES["other"])[language],
                "phase_label": PHASES.get(k.phase, PHASES["after_start"])[language],
                "lower": k.lower,
                "upper": k.upper,
                "direction": k.direction,
            }
            for k in catalogue.values()
        ]
    )
