"""A synthetic B2B SaaS client with a planted, exactly known generating process.

Every statistical test of the kit asserts that it recovers this truth, so the process is written to be
read: latent account factors drive the 27 catalogue KPIs; discrete-time hazards with the cloglog link,
P(event) = 1 - exp(-exp(eta)), turn the KPIs of month t - lag (raw units, standardised with fixed design
constants) into churn, expansion (incl. cross-sell), downgrade and referral in month t. Everything comes
from one ``np.random.default_rng(seed)``: same arguments, same tables, byte for byte.

The full process and the truth table are described in ``docs/methods.md``.
"""
from __future__ import annotations

import argparse
import inspect
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cskit.catalogue import CATALOGUE_NAMES, DEFAULT_CATALOGUE
from cskit.panel import OUTCOMES

FACTOR_STATIC_SHARE = 0.5  # share of each factor's variance that is a fixed account trait
FACTOR_RHO = 0.85  # AR(1) coefficient of the monthly part of the factors
NOISE_RHO = 0.6  # AR(1) coefficient of each KPI's own noise

# Factor loadings (usage, satisfaction, learning, community) of each KPI's latent value; the rest of its
# unit variance is the KPI's own AR(1) noise.
LOADINGS: dict[str, tuple[float, float, float, float]] = {
    "login_days": (0.6, 0.0, 0.0, 0.0),
    "active_user_rate": (0.5, 0.0, 0.0, 0.0),
    "newsletter_open_rate": (0.0, 0.3, 0.2, 0.0),
    "newsletter_click_rate": (0.0, 0.2, 0.3, 0.0),
    "site_visits": (0.2, 0.0, 0.3, 0.0),
    "case_study_views": (0.0, 0.0, 0.3, 0.0),
    "faq_views": (0.0, -0.2, 0.3, 0.0),
    "cs_site_visits": (0.0, 0.0, 0.65, 0.0),
    "cs_site_registrations": (0.0, 0.0, 0.4, 0.0),
    "video_views": (0.0, 0.0, 0.4, 0.0),
    "training_views": (0.0, 0.0, 0.45, 0.0),
    "community_visits": (0.0, 0.0, 0.0, 0.55),
    "community_registrations": (0.0, 0.0, 0.0, 0.35),
    "community_posts": (0.0, 0.0, 0.0, 0.65),
    "community_event_attendance": (0.0, 0.0, 0.2, 0.4),
    "csat": (0.0, 0.85, 0.0, 0.0),
    "support_inquiries": (0.0, -0.35, -0.3, 0.0),
}
# Proxies: latent = r * latent(driver) + sqrt(1 - r^2) * own noise; no effect of their own.
PROXIES: dict[str, tuple[str, float]] = {
    "session_seconds": ("login_days", 0.8),
    "manual_views": ("cs_site_visits", 0.92),
}
LATENT = list(LOADINGS) + list(PROXIES)

# Raw scales: counts are Poisson(exp(a + b z)); rates/days/ratings are squashed; session time lognormal.
POISSON = {
    "site_visits": (1.6, 0.5),
    "case_study_views": (0.2, 0.5),
    "faq_views": (0.6, 0.5),
    "cs_site_visits": (1.5, 0.65),
    "cs_site_registrations": (-0.8, 0.5),
    "manual_views": (1.2, 0.7),
    "video_views": (0.6, 0.5),
    "training_views": (0.1, 0.5),
    "community_visits": (1.1, 0.6),
    "community_registrations": (-1.3, 0.5),
    "community_posts": (0.2, 0.6),
    "community_event_attendance": (-1.1, 0.5),
    "support_inquiries": (0.6, 0.5),
}

MONTHLY_KPIS = [
    "licenses", "licenses_free", "licenses_basic", "licenses_pro", "active_users", "active_user_rate",
    "login_days", "session_seconds", "newsletter_open_rate", "newsletter_click_rate", "site_visits",
    "case_study_views", "faq_views", "cs_site_visits", "cs_site_registrations", "manual_views",
    "video_views", "training_views", "community_visits", "community_registrations", "community_posts",
    "community_event_attendance", "csat", "support_inquiries",
]
STATIC_KPIS = ["onboarding_completed", "welcome_webinar_attendance"]
# 0/1 flags of this process: the kit bounds a KPI whose values are all 0 or 1 to [0, 1], and so does the
# true scenario (an onboarded account cannot become "1.07 onboarded").
FLAG_UPPER = {"onboarding_completed": 1.0}
FLOAT_KPIS = {"active_user_rate": 3, "newsletter_open_rate": 3, "newsletter_click_rate": 3, "csat": 1}

# The planted hazards: effects per design SD (the scale constants below), link cloglog.
BETA_SD: dict[str, dict[str, float]] = {
    "churn": {"login_days": -0.5, "csat": -0.35, "support_inquiries": 0.35, "onboarding_completed": -0.3},
    "expansion": {"active_users": 0.45, "cs_site_visits": 0.35, "community_posts": 0.3},
    "downgrade": {"support_inquiries": 0.4, "active_user_rate": -0.4},
    "referral": {"community_posts": 0.4, "csat": 0.3},
}
CHURN_KPIS = [k for k in BETA_SD["churn"] if k not in STATIC_KPIS]
# Fixed standardisation constants (about the population mean and SD of each driver's raw values).
CENTRE = {"login_days": 16.3, "csat": 3.8, "support_inquiries": 2.0, "onboarding_completed": 0.7,
          "active_users": 14.0, "cs_site_visits": 5.55, "community_posts": 1.45, "active_user_rate": 0.63}
SCALE = {"login_days": 6.9, "csat": 0.78, "support_inquiries": 1.8, "onboarding_completed": 0.46,
         "active_users": 8.9, "cs_site_visits": 4.7, "community_posts": 1.55, "active_user_rate": 0.235}
INTERCEPT = {"churn_monthly": -3.6, "churn_annual": -1.2, "expansion": -3.6, "downgrade": -4.2,
             "referral": -4.55}
TENURE = {"churn": -0.3, "expansion": -0.1, "downgrade": 0.0, "referral": -0.1}  # per log1p(tenure)
SEGMENTS = ("SMB", "Mid", "Enterprise")
SEGMENT_SHARE = (0.6, 0.3, 0.1)
SEGMENT_EFFECT = {"churn": (0.0, -0.15, -0.35), "expansion": (0.0, 0.1, 0.2), "downgrade": (0.0, 0.0, 0.0),
                  "referral": (0.0, 0.0, 0.0)}
# Roles of non-driver KPIs: the designed proxies, and licenses, which carries active_users' size.
PROXY_OF = {"session_seconds": "login_days", "manual_views": "cs_site_visits", "nps": "csat",
            "licenses": "active_users"}

# Structures beyond the default process (options, all off by default: the default tables are unchanged).
THRESHOLD_SLOPE = 0.8  # churn log-hazard per login day below the threshold (the ``login_threshold`` option)
SEASONAL_PEAK = 1.5  # default latent SD added to the ``seasonal_kpi`` in the month before the churn shock
RECENT_WINDOW = 3  # months averaged by an annual renewal decided on sustained usage (``recent_mean_annual``)
MNAR_CSAT = {"before": 0.45, "months": 2, "otherwise": 0.08}  # mnar_csat: P(csat unanswered) before a churn / else
ONBOARDING_USAGE = 2.5  # onboarding_proxy: onboarding ~ Bernoulli(sigmoid(1 + 2.5 a_usage)), no effect of its own
SPARSE_SUPPORT = {"poisson": (-0.7, 0.5), "centre": 0.56, "scale": 0.81}  # support_inquiries, ~58% zero months
COLLINEAR_PROXY = ("session_seconds", 0.985)  # collinear_proxy: this proxy's latent r with login_days, listed first


@dataclass(frozen=True)
class Options:
    """Optional structures of the planted process (the defaults reproduce the default process exactly).

    - ``segment_only``: (churn driver, segment) pairs: the driver's churn term acts only in that segment
      (elsewhere it is 0), e.g. (("support_inquiries", "SMB"),): an effect that differs by segment.
    - ``login_threshold``: login days below which churn rises: the churn term of login_days becomes
      THRESHOLD_SLOPE × max(0, threshold − x) (risk falls from 0 to ``threshold`` days, flat above)
      instead of the linear term.

    Renewal terms and dates:
    - ``annual_terms``: term lengths (months) of the contracts labelled "annual", drawn with equal shares
      (e.g. (6,) for 6-month terms filed as annual, (12, 6) for a mix); a decision at every multiple.
    - ``term_end_dates``: an annual contract's churn_date is its term's last day (the day before the
      anniversary: 2025-03-31 for a term from 2024-04-01), not the anniversary itself; a term ending on
      a month's last day has no KPI / NPS row in the anniversary month (the client has left by then).
    - ``fiscal_year_start``: calendar month (1–12) on whose 1st every organic annual contract starts
      (Japanese April fiscal years: 4); each is moved to the first such month on or after its drawn start
      (the last one before it when none is left in the window).
    Seasonality:
    - ``season_month``: calendar month (1–12) in which every churn decision's eta gets ``season_shock``
      (a churn shock unrelated to any KPI, e.g. the fiscal year's end);
    - ``seasonal_kpi``: a noise KPI whose latent value rises by ``seasonal_peak`` SD in the month before
      ``season_month`` for every account (it "peaks before March" without any effect of its own).
    Sustained usage:
    - ``recent_mean_annual``: an annual renewal is decided on the mean of the churn KPIs over the
      RECENT_WINDOW months t − lag − 2 … t − lag, not on month t − lag alone.
    Late data windows:
    - ``window_start``: the tables hold only months from this index of the simulated months on (earlier
      months are not exported; contracts may start long before the first data month);
    - ``active_only``: with ``window_start``, accounts whose contract ended before the window are left
      out of accounts.csv (an export of the accounts active in the window).
    Gaps, proxies and sparse counts:
    - ``mnar_csat``: csat is not answered far more often before a churn (missing not at random: accounts
      about to leave stop answering): in the 2 months before the churn month it is blanked with
      probability 0.45, in any other month with 0.08 (MNAR_CSAT); the hazards keep the true values.
    - ``onboarding_proxy``: onboarding travels with the usage trait (ONBOARDING_USAGE) and has no churn
      effect of its own (its truth row is a proxy of login days).
    - ``sparse_support``: support_inquiries is a sparse count (about 58% of months zero; SPARSE_SUPPORT).
    - ``collinear_proxy``: session_seconds (no effect of its own) tracks the churn driver login_days at
      latent r = 0.985 (COLLINEAR_PROXY; r ≈ 0.93 on the model rows) instead of 0.8, with a milder tail
      (exp(7 + 0.3z): not skewed, so never log1p), and is the first column of the kpis table: a proxy
      listed before the driver it travels with.
    """

    segment_only: tuple[tuple[str, str], ...] = ()
    login_threshold: float | None = None
    annual_terms: tuple[int, ...] = (12,)
    term_end_dates: bool = False
    fiscal_year_start: int | None = None
    season_month: int | None = None
    season_shock: float = 1.0
    seasonal_kpi: str | None = None
    seasonal_peak: float = SEASONAL_PEAK
    recent_mean_annual: bool = False
    window_start: int = 0
    active_only: bool = False
    mnar_csat: bool = False
    onboarding_proxy: bool = False
    sparse_support: bool = False
    collinear_proxy: bool = False

    def beta_sd(self) -> dict[str, dict[str, float]]:
        beta = {o: dict(b) for o, b in BETA_SD.items()}
        if self.onboarding_proxy:
            beta["churn"]["onboarding_completed"] = 0.0
        return beta

    def centre(self) -> dict[str, float]:
        return CENTRE | ({"support_inquiries": SPARSE_SUPPORT["centre"]} if self.sparse_support else {})

    def scale(self) -> dict[str, float]:
        return SCALE | ({"support_inquiries": SPARSE_SUPPORT["scale"]} if self.sparse_support else {})

    def poisson(self) -> dict[str, tuple[float, float]]:
        return POISSON | ({"support_inquiries": SPARSE_SUPPORT["poisson"]} if self.sparse_support else {})

    def proxy_of(self) -> dict[str, str]:
        return PROXY_OF | ({"onboarding_completed": "login_days"} if self.onboarding_proxy else {})

    def onboarding_trait(self) -> tuple[int, float]:
        """(factor index, loading) of the onboarding draw: learning 0.6, or usage under onboarding_proxy."""
        return (0, ONBOARDING_USAGE) if self.onboarding_proxy else (2, 0.6)

    def mnar(self) -> dict[str, dict]:
        return {"csat": MNAR_CSAT} if self.mnar_csat else {}


def calendar_month(start: str, t: np.ndarray | int) -> np.ndarray:
    """Calendar month (1–12) of simulated month index ``t`` (0 = ``start``)."""
    return (pd.Period(start, "M").month - 1 + np.asarray(t)) % 12 + 1


def season_term(options: Options, months: np.ndarray) -> np.ndarray:
    """The churn shock added to eta in the given calendar months (0 without a season)."""
    if options.season_month is None:
        return np.zeros(np.shape(months))
    return np.where(np.asarray(months) == options.season_month, options.season_shock, 0.0)


@dataclass(frozen=True)
class EngagementDrop:
    """A planted engagement drop (``simulate_client(engagement_drop=...)``): in the last ``months``
    months up to as_of, ``accounts`` accounts chosen at random among those active at the drop's first
    month with at least DROP_MIN_TENURE months of tenure have the latent value of each KPI in ``shift``
    moved by that many standard deviations (login days −3 SD: about 16 → 1 day a month). The
    churn hazard follows the KPIs as always, so these accounts' churn risk rises too."""

    accounts: int = 20
    months: int = 3
    shift: tuple[tuple[str, float], ...] = (("login_days", -3.0),)


DROP_MIN_TENURE = 6


PLANS = ("Basic", "Pro")
PRO_SHARE_BY_SEGMENT = (0.3, 0.5, 0.8)
SEATS_BY_SEGMENT = ((8, 25), (15, 40), (25, 60))  # uniform integers, inclusive
SEAT_PRICE = {("SMB", "Basic"): 3000, ("SMB", "Pro"): 9000, ("Mid", "Basic"): 3000, ("Mid", "Pro"): 9000,
              ("Enterprise", "Basic"): 5000, ("Enterprise", "Pro"): 14000}
OPTIONS = ("Option-A", "Option-B", "Option-C")
EXPANSION_SIZE = (0.1, 0.5)  # relative to MRR, uniform
DOWNGRADE_SIZE = (0.1, 0.4)
CROSS_SELL_SHARE = 0.3
NAN_SHARE = 0.01
FIRST_MONTH_SHARE = 0.35
NPS_ROLE_EFFECT = {"decision_maker": -0.6, "admin": 0.0, "end_user": 0.3}
NPS_ROLE_SHARE = (0.4, 0.3, 0.3)


def expected_first_mrr() -> float:
    """E[first MRR] of a new (organic or referred) account: seats are uniform, price fixed per cell."""
    total = 0.0
    for s, (seg, share) in enumerate(zip(SEGMENTS, SEGMENT_SHARE)):
        seats = sum(SEATS_BY_SEGMENT[s]) / 2
        pro = PRO_SHARE_BY_SEGMENT[s]
        total += share * seats * ((1 - pro) * SEAT_PRICE[(seg, "Basic")] + pro * SEAT_PRICE[(seg, "Pro")])
    return total


def design(options: Options | None = None) -> dict:
    """Every constant of the planted process, for tests and for the kit's own recovery checks."""
    options = options or Options()
    return {
        "segment_only": dict(options.segment_only), "login_threshold": options.login_threshold,
        "threshold_slope": THRESHOLD_SLOPE,
        "annual_terms": list(options.annual_terms), "term_end_dates": options.term_end_dates,
        "fiscal_year_start": options.fiscal_year_start, "season_month": options.season_month,
        "season_shock": options.season_shock if options.season_month else 0.0,
        "seasonal_kpi": options.seasonal_kpi, "seasonal_peak": options.seasonal_peak,
        "recent_mean_annual": options.recent_mean_annual, "recent_window": RECENT_WINDOW,
        "window_start": options.window_start, "active_only": options.active_only,
        "mnar": options.mnar(), "onboarding_trait": options.onboarding_trait(), "proxy_of": options.proxy_of(),
        "beta_sd": options.beta_sd(), "centre": options.centre(), "scale": options.scale(), "intercept": INTERCEPT,
        "tenure": TENURE,
        "segment_effect": {k: dict(zip(SEGMENTS, v)) for k, v in SEGMENT_EFFECT.items()},
        "tenure_term": "log1p(tenure)", "link": "cloglog",
        "g_expansion": sum(EXPANSION_SIZE) / 2, "g_downgrade": sum(DOWNGRADE_SIZE) / 2,
        "cross_sell_share": CROSS_SELL_SHARE, "first_mrr": expected_first_mrr(),
    }


def cloglog_inv(eta: np.ndarray) -> np.ndarray:
    return -np.expm1(-np.exp(eta))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def eta(outcome: str, x: dict[str, np.ndarray], tenure: np.ndarray, seg: np.ndarray,
        annual: np.ndarray | None = None, options: Options | None = None) -> np.ndarray:
    """Linear predictor of a planted hazard; ``x`` holds the drivers' raw values (KPIs at t - lag).

    ``outcome`` is churn, expansion, downgrade or referral; churn needs ``annual`` (the anniversary
    decision of an annual contract has its own intercept).
    """
    return eta_account(outcome, tenure, seg, annual) + eta_kpis(outcome, x, seg=seg, options=options)


def eta_account(outcome: str, tenure: np.ndarray, seg: np.ndarray, annual: np.ndarray | None = None) -> np.ndarray:
    """The KPI-free part of eta: intercept (by contract type for churn), log1p(tenure), segment."""
    if outcome == "churn":
        out = np.where(annual, INTERCEPT["churn_annual"], INTERCEPT["churn_monthly"])
    else:
        out = np.full(np.shape(tenure), INTERCEPT[outcome])
    return out + TENURE[outcome] * np.log1p(tenure) + np.asarray(SEGMENT_EFFECT[outcome])[seg]


def eta_kpis(outcome: str, x: dict[str, np.ndarray], names: list[str] | None = None, *,
             seg: np.ndarray | None = None, options: Options | None = None) -> np.ndarray:
    """Sum of beta_sd * (x - centre) / scale over the outcome's drivers (or the given subset).

    With ``options``, churn terms follow its structures: a ``login_threshold`` makes login days' term
    THRESHOLD_SLOPE × max(0, threshold − x); a ``segment_only`` driver's term is 0 outside its segment
    (``seg``: segment codes, indices of SEGMENTS).
    """
    options = options or Options()
    beta, centre, scale = options.beta_sd()[outcome], options.centre(), options.scale()
    terms = beta if names is None else {k: beta[k] for k in names}
    only = dict(options.segment_only) if outcome == "churn" else {}
    total = 0.0
    for k, b in terms.items():
        if outcome == "churn" and k == "login_days" and options.login_threshold is not None:
            term = THRESHOLD_SLOPE * np.maximum(0.0, options.login_threshold - x[k])
        else:
            term = b * (x[k] - centre[k]) / scale[k]
        if k in only:
            term = term * (np.asarray(seg) == SEGMENTS.index(only[k]))
        total = total + term
    return total


# ---------------------------------------------------------------------------------------------------
# Accounts and the monthly KPI step
# ---------------------------------------------------------------------------------------------------

def _new_accounts(rng: np.random.Generator, start: np.ndarray, referrer: np.ndarray, annual_share: float,
                  options: Options | None = None) -> dict:
    """Static traits and initial latent states of new accounts starting in the given months."""
    options = options or Options()
    n = len(start)
    seg = rng.choice(3, size=n, p=SEGMENT_SHARE)
    pro = rng.random(n) < np.asarray(PRO_SHARE_BY_SEGMENT)[seg]
    lo = np.array([s[0] for s in SEATS_BY_SEGMENT])[seg]
    hi = np.array([s[1] for s in SEATS_BY_SEGMENT])[seg]
    seats = rng.integers(lo, hi + 1)
    price = np.array([[SEAT_PRICE[(s, p)] for p in PLANS] for s in SEGMENTS])[seg, pro.astype(int)]
    static = rng.standard_normal((n, 4))
    trait = options.onboarding_trait()
    lines = np.zeros((n, 1 + len(OPTIONS)))
    lines[:, 0] = seats * price
    out = {
        "start": start.astype(np.int64), "day": rng.integers(1, 29, n), "seg": seg, "pro": pro,
        "annual": rng.random(n) < annual_share, "seats": seats.astype(np.int64), "price": price, "lines": lines,
        "team": np.maximum(1, np.round(seats * rng.uniform(0.9, 1.2, n))).astype(np.int64),
        "pro_share": np.where(pro, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.15, n)),
        "free_share": rng.uniform(0.0, 0.4, n),
        "onboarding": (rng.random(n) < _sigmoid(1.0 + trait[1] * static[:, trait[0]])).astype(np.int64),
        "webinar": rng.binomial(3, _sigmoid(-0.3 + 0.5 * static[:, 2])),
        "static": static, "ar": rng.standard_normal((n, 4)), "noise": rng.standard_normal((n, len(LATENT))),
        "survey_phase": rng.integers(0, 6, n), "referrer": referrer.astype(np.int64),
        "churn_month": np.full(n, np.iinfo(np.int64).max),
    }
    terms = options.annual_terms
    term = np.full(n, terms[0], np.int64) if len(terms) == 1 else rng.choice(np.asarray(terms, np.int64), n)
    out["term"] = np.where(out["annual"], term, 1)
    return out


def _append(acc: dict, new: dict) -> dict:
    return {k: np.concatenate([acc[k], new[k]]) for k in acc}


def _factors(static: np.ndarray, ar: np.ndarray) -> np.ndarray:
    return math.sqrt(FACTOR_STATIC_SHARE) * static + math.sqrt(1 - FACTOR_STATIC_SHARE) * ar


def _latents(
    factors: np.ndarray, noise: np.ndarray, names: list[str], columns: list[str] = LATENT
) -> dict[str, np.ndarray]:
    """Standard-normal latent value of each named KPI (loadings on the factors + own noise).

    ``noise`` has one column per name of ``columns`` (only the named ones are read). The loadings are
    summed explicitly rather than by a matrix product: multithreaded BLAS is slow on shared cores.
    """
    z = {}
    for name in names:
        j = columns.index(name)
        if name in PROXIES:
            driver, r = PROXIES[name]
            base = z[driver] if driver in z else _latents(factors, noise, [driver], columns)[driver]
            z[name] = r * base + math.sqrt(1 - r * r) * noise[:, j]
        else:
            w = LOADINGS[name]
            shared = sum(wf * factors[:, f] for f, wf in enumerate(w) if wf)
            z[name] = shared + math.sqrt(1 - sum(wf * wf for wf in w)) * noise[:, j]
    return z


def _raw(name: str, z: np.ndarray, rng: np.random.Generator, options: Options | None = None) -> np.ndarray:
    """Raw value of a latent KPI on its realistic scale and bounds."""
    poisson = POISSON if options is None else options.poisson()
    if name in poisson:
        a, b = poisson[name]
        return rng.poisson(np.exp(a + b * z)).astype(float)
    if name == "login_days":
        return np.round(31 * _sigmoid(0.1 + 1.1 * z))
    if name == "session_seconds":
        return np.round(np.exp(7.0 + 0.55 * z))
    if name == "newsletter_open_rate":
        return np.round(_sigmoid(-0.5 + 0.7 * z), 3)
    if name == "csat":
        return np.round(1 + 4 * _sigmoid(1.0 + 1.1 * z), 1)
    raise KeyError(name)


def _monthly_kpis(
    acc: dict,
    idx: np.ndarray,
    rng: np.random.Generator,
    shift: dict[str, float | np.ndarray] | None = None,
    options: Options | None = None,
) -> dict[str, np.ndarray]:
    """Raw values of the 24 monthly KPIs for the accounts ``idx`` in the current month.

    Active users are drawn from the account's fixed team (not from its seats), so an upsell raises
    licenses and lowers the active-user rate instead of feeding back into the expansion hazard.
    ``shift`` adds a constant to named KPIs' latent values this month (a seasonal peak).
    """
    z = _latents(_factors(acc["static"][idx], acc["ar"][idx]), acc["noise"][idx], LATENT)
    if options is not None and options.collinear_proxy:
        name, r = COLLINEAR_PROXY
        z[name] = r * z[PROXIES[name][0]] + math.sqrt(1 - r * r) * acc["noise"][idx][:, LATENT.index(name)]
    for name, v in (shift or {}).items():
        z[name] = z[name] + v
    seats = acc["seats"][idx]
    out: dict[str, np.ndarray] = {}
    out["licenses"] = seats.astype(float)
    out["licenses_pro"] = np.round(seats * acc["pro_share"][idx])
    out["licenses_basic"] = seats - out["licenses_pro"]
    out["licenses_free"] = rng.poisson(seats * acc["free_share"][idx]).astype(float)
    users = rng.binomial(acc["team"][idx], _sigmoid(0.5 + 0.9 * z["active_user_rate"]))
    out["active_users"] = np.minimum(users, seats).astype(float)
    out["active_user_rate"] = np.round(out["active_users"] / seats, 3)
    for name in ("login_days", "session_seconds", "newsletter_open_rate", "csat"):
        out[name] = _raw(name, z[name], rng)
    if options is not None and options.collinear_proxy:  # a milder tail: modelled raw, as login days, in every draw
        out[COLLINEAR_PROXY[0]] = np.round(np.exp(7.0 + 0.3 * z[COLLINEAR_PROXY[0]]))
    out["newsletter_click_rate"] = np.round(
        out["newsletter_open_rate"] * _sigmoid(-1.5 + 0.6 * z["newsletter_click_rate"]), 3
    )
    for name in POISSON:
        out[name] = _raw(name, z[name], rng, options)
    return {k: out[k] for k in MONTHLY_KPIS}


def _advance(acc: dict, idx: np.ndarray, rng: np.random.Generator) -> None:
    """One month of the AR(1) parts (stationary, unit variance) of the accounts ``idx``.

    Only accounts still customers next month move; an account not yet started keeps its initial
    draw, which is already from the stationary distribution.
    """
    acc["ar"][idx] = FACTOR_RHO * acc["ar"][idx] + math.sqrt(1 - FACTOR_RHO**2) * rng.standard_normal((len(idx), 4))
    acc["noise"][idx] = NOISE_RHO * acc["noise"][idx] + math.sqrt(1 - NOISE_RHO**2) * rng.standard_normal(
        (len(idx), len(LATENT)))


def _round_k(x: np.ndarray) -> np.ndarray:
    return np.round(x / 1000.0) * 1000.0


# ---------------------------------------------------------------------------------------------------
# Result objects
# ---------------------------------------------------------------------------------------------------

@dataclass
class Truth:
    """The planted truth.

    - ``effects``: kpi, outcome, beta_unit (link scale per raw unit), beta_sd (per SD of the KPI over
      all non-missing account-months up to as_of), sd (that SD), link, role.
    - ``future``: account_id, mrr, churned, churn_prob for every account active at as_of.
    - ``snapshot``: per active account the inputs of the projection (tenure, segment, contract type,
      mrr at as_of, and each KPI's mean over its last 3 observed months; static KPIs as they are).
    - ``design``: every constant of the process (see :func:`design`).
    """

    effects: pd.DataFrame
    future: pd.DataFrame
    snapshot: pd.DataFrame
    design: dict = field(default_factory=design)
    options: Options = field(default_factory=Options)
    asof_month: int = 1  # calendar month (1–12) of as_of: where a seasonal shock falls in the future
    dropped: tuple[str, ...] = ()  # account ids with the planted engagement drop (EngagementDrop)
    recent: dict = field(default_factory=dict)

    def potential(self, improvement_pct: float = 10, horizon_months: int = 12, ltv_months: int = 36,
                  gross_margin: float = 1.0) -> pd.DataFrame:
        """The true improvement potential: the projection of docs/architecture.md on the planted model.

        One row per KPI (contract_months, the other catalogue KPIs, nps): kpi, mean, improvement (the
        shift delta), d_ltv, d_expansion, d_new, d_downgrade, d_churn (scenario - baseline, currency).
        """
        return true_potential(self.snapshot, improvement_pct, horizon_months, ltv_months, gross_margin,
                              options=self.options, asof_month=self.asof_month, recent=self.recent)


@dataclass
class SimulatedClient:
    tables: dict[str, pd.DataFrame]
    as_of: str
    truth: Truth

    def write(self, folder: str | Path) -> None:
        """Write the tables as UTF-8 CSVs (accounts.csv, revenue.csv, kpis.csv, nps.csv)."""
        write_client(self, folder)


def write_client(sim: SimulatedClient, folder: str | Path) -> None:
    """The tables as UTF-8 CSVs with "\n" line ends (byte-identical for the same seed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in sim.tables.items():
        if name == "events":  # a raw log: Parquet, timestamps in microseconds (readable by DuckDB and Spark)
            df.to_parquet(folder / "events.parquet", index=False, coerce_timestamps="us", compression="zstd")
            continue
        df.to_csv(folder / f"{name}.csv", index=False, encoding="utf-8", lineterminator="\n")


# ---------------------------------------------------------------------------------------------------
# The simulation
# ---------------------------------------------------------------------------------------------------

def simulate_client(n_accounts: int = 2000, n_months: int = 24, seed: int = 0, start: str = "2024-07",
                    horizon_months: int = 12, lag: int = 1, annual_share: float = 0.3, with_nps: bool = True,
                    with_referrals: bool = True, mc_paths: int = 200, *, segment_only=(),
                    login_threshold: float | None = None, options: Options | None = None,
                    engagement_drop: EngagementDrop | None = None) -> SimulatedClient:
    """Simulate a client: ``n_accounts`` organic accounts (35% in the first month, the rest spread
    evenly over the window) plus the accounts they refer, over ``n_months`` months from ``start``.

    The process runs ``horizon_months`` past as_of (the last month) to give the realised churn of
    ``truth.future``; ``churn_prob`` is the true probability given the state at as_of, by Monte Carlo
    over ``mc_paths`` future KPI paths (0 skips it: NaN). ``with_referrals=False`` creates no referred
    accounts (the referral hazard and its truth rows stay, no data carries them); ``with_nps=False``
    leaves out the nps table and the nps KPI. ``lag`` >= 1: events of month t use KPIs of t - lag.

    Optional structures (off by default, see :class:`Options`): ``segment_only`` pairs (churn driver,
    segment), e.g. ``(("support_inquiries", "SMB"),)``; ``login_threshold`` (days), e.g. 5; any
    other structure through ``options`` (the two keywords, when given, override its fields);
    ``engagement_drop`` (:class:`EngagementDrop`: the chosen accounts are ``truth.dropped``).
    """
    if n_accounts < 1 or n_months < 2 or lag < 1 or horizon_months < 1:
        raise ValueError("need n_accounts >= 1, n_months >= 2, lag >= 1, horizon_months >= 1")
    options = options or Options()
    if segment_only or login_threshold is not None:
        options = replace(options, segment_only=tuple(tuple(p) for p in segment_only) or options.segment_only,
                          login_threshold=login_threshold if login_threshold is not None else options.login_threshold)
    for k, seg_name in options.segment_only:
        if k not in BETA_SD["churn"] or seg_name not in SEGMENTS:
            raise ValueError(f"segment_only: {k!r} is not a churn driver or {seg_name!r} not a segment")
    rng = np.random.default_rng(seed)
    asof_t = n_months - 1
    n0 = max(1, round(FIRST_MONTH_SHARE * n_accounts))
    starts = np.concatenate([np.zeros(n0, np.int64), np.sort(rng.integers(1, n_months, n_accounts - n0))])
    acc = _new_accounts(rng, starts, np.full(n_accounts, -1), annual_share, options)
    if options.fiscal_year_start is not None:
        _fiscal_starts(acc, start, n_months, options.fiscal_year_start)
    drivers = sorted({k for b in BETA_SD.values() for k in b} - set(STATIC_KPIS))
    first = max(1, lag)
    window = RECENT_WINDOW if options.recent_mean_annual else 1
    churn_cols = [drivers.index(k) for k in CHURN_KPIS]
    history: dict[int, np.ndarray] = {}
    kpi_blocks, rev_blocks, nps_blocks = [], [], []
    snapshot_state = None
    chosen = np.zeros(0, dtype=np.int64)

    for t in range(n_months + horizon_months):
        tenure = t - acc["start"]
        present = (acc["start"] <= t) & (acc["churn_month"] >= t)
        elig = np.flatnonzero(present & (tenure >= first))
        if len(elig):
            past = history[t - lag]
            x = {k: past[elig, j] for j, k in enumerate(drivers)}
            x["onboarding_completed"] = acc["onboarding"][elig].astype(float)
            ten, seg, annual = tenure[elig], acc["seg"][elig], acc["annual"][elig]
            decision = ten % acc["term"][elig] == 0
            x_c = x
            if window > 1:  # annual renewals decided on the mean of the last ``window`` months up to t - lag
                x_c = dict(x)
                sustained = _nanmean([_take(history[t - lag - j], elig)[:, churn_cols]
                                      for j in range(window) if t - lag - j in history])
                for j, k in enumerate(CHURN_KPIS):
                    x_c[k] = np.where(annual, sustained[:, j], x[k])
            eta_c = eta("churn", x_c, ten, seg, annual, options) + season_term(options, calendar_month(start, t))
            p_c = np.where(decision, cloglog_inv(eta_c), 0.0)
            churned = rng.random(len(elig)) < p_c
            acc["churn_month"][elig[churned]] = t
            stay = ~churned
            p_e = cloglog_inv(eta("expansion", x, ten, seg, options=options))
            p_d = cloglog_inv(eta("downgrade", x, ten, seg, options=options))
            p_r = cloglog_inv(eta("referral", x, ten, seg, options=options))
            u = rng.random(len(elig))
            expand = stay & (u < p_e)
            down = stay & (u >= p_e) & (u < p_e + p_d)
            refer = stay & (rng.random(len(elig)) < p_r)
            _expand(acc, elig[expand], rng)
            _downgrade(acc, elig[down], rng)
            if with_referrals and t < n_months and refer.any():
                ref = elig[refer]
                acc = _append(acc, _new_accounts(rng, np.full(len(ref), t), ref, annual_share, options))
        n = len(acc["start"])
        present = (acc["start"] <= t) & (acc["churn_month"] >= t)
        idx = np.flatnonzero(present)
        peak = options.season_month is not None and calendar_month(start, t + 1) == options.season_month
        shift = {options.seasonal_kpi: options.seasonal_peak} if peak and options.seasonal_kpi else {}
        if engagement_drop is not None and t == asof_t - engagement_drop.months + 1:
            ok = idx[(acc["churn_month"][idx] > t) & (t - acc["start"][idx] >= DROP_MIN_TENURE)]
            pick = np.random.default_rng([seed, 15]).choice(
                len(ok), min(engagement_drop.accounts, len(ok)), replace=False
            )
            chosen = np.sort(ok[pick])
        if engagement_drop is not None and asof_t - engagement_drop.months < t <= asof_t:
            hit = np.isin(idx, chosen)
            for k, v in engagement_drop.shift:
                shift[k] = shift.get(k, 0.0) + np.where(hit, v, 0.0)
        values = _monthly_kpis(acc, idx, rng, shift or None, options)
        dense = np.full((n, len(drivers)), np.nan)
        dense[idx] = np.column_stack([values[k] for k in drivers])
        history[t] = dense
        history.pop(t - lag - window, None)
        if t < n_months:
            kpi_blocks.append((t, idx, values))
            paying = idx[acc["churn_month"][idx] > t]
            rev_blocks.append((t, paying, acc["lines"][paying].copy()))
            if with_nps:
                nps_blocks.append(_surveys(acc, idx, t, rng))
        if t == asof_t:
            snapshot_state = _snapshot_state(acc, idx, history, lag, drivers, t, window)
            snapshot_state["season"] = season_term(options, calendar_month(start, t + np.arange(horizon_months + 1)))
        _advance(acc, idx[acc["churn_month"][idx] > t], rng)

    for k, m in options.mnar().items():
        kpi_blocks = [_unanswered(block, k, m, acc["churn_month"], rng) for block in kpi_blocks]
    tables, ids = _tables(acc, kpi_blocks, rev_blocks, nps_blocks, start, n_months, rng, with_nps)
    if options.collinear_proxy:  # the proxy listed before the driver it travels with
        first = COLLINEAR_PROXY[0]
        tables["kpis"] = tables["kpis"][["account_id", "month", first,
                                         *[c for c in tables["kpis"].columns[2:] if c != first]]]
    tables = _export(tables, acc, ids, start, options)
    as_of = str(pd.Period(start, "M") + asof_t) + "-01"
    sd, snapshot, recent = _observed_stats(tables, asof_t, start, options)
    snapshot["term_months"] = acc["term"][pd.Index(ids).get_indexer(snapshot["account_id"])]
    future = _future(acc, ids, snapshot_state, asof_t, horizon_months, lag, mc_paths, rng, options)
    dropped = tuple(sorted(str(a) for a in ids[chosen])) if engagement_drop is not None else ()
    truth = Truth(_effects(sd, options), future, snapshot, design(options), options, int(calendar_month(start, asof_t)),
                  dropped, recent)
    return SimulatedClient(tables, as_of, truth)


def _unanswered(block: tuple, kpi: str, m: dict, churn_month: np.ndarray, rng: np.random.Generator) -> tuple:
    """A month's values as the client records them: ``kpi`` is blanked with probability m["before"] in
    the m["months"] months before the account's churn month (its churn within the horizon included) and
    m["otherwise"] in any other month. The hazards used the true values."""
    t, idx, values = block
    ahead = churn_month[idx] - t
    p = np.where((ahead >= 1) & (ahead <= m["months"]), m["before"], m["otherwise"])
    return t, idx, values | {kpi: np.where(rng.random(len(idx)) < p, np.nan, values[kpi])}


def _fiscal_starts(acc: dict, start: str, n_months: int, month: int) -> None:
    """Move every annual account's start to the 1st of the fiscal year's first month (``month``): the first
    such month on or after its drawn start, or the last one before it when none is left in the window."""
    fiscal = np.flatnonzero(calendar_month(start, np.arange(n_months)) == month)
    if not len(fiscal):
        return
    a = np.flatnonzero(acc["annual"])
    s = acc["start"][a]
    pos = np.searchsorted(fiscal, s)
    acc["start"][a] = np.where(pos < len(fiscal), fiscal[np.minimum(pos, len(fiscal) - 1)],
                               fiscal[np.maximum(pos - 1, 0)])
    acc["day"][a] = 1




def _expand(acc: dict, idx: np.ndarray, rng: np.random.Generator) -> None:
    """Add MRR x U(0.1, 0.5) (rounded to 1,000): a new option line (cross-sell, 30%) or more seats."""
    if not len(idx):
        return
    mrr = acc["lines"][idx].sum(axis=1)
    amount = np.maximum(1000.0, _round_k(mrr * rng.uniform(*EXPANSION_SIZE, len(idx))))
    cross = rng.random(len(idx)) < CROSS_SELL_SHARE
    free_slot = (acc["lines"][idx, 1:] == 0).argmax(axis=1) + 1
    has_slot = (acc["lines"][idx, 1:] == 0).any(axis=1)
    cross &= has_slot
    acc["lines"][idx[cross], free_slot[cross]] = amount[cross]
    up = idx[~cross]
    acc["lines"][up, 0] += amount[~cross]
    acc["seats"][up] += np.maximum(1, np.round(amount[~cross] / acc["price"][up])).astype(np.int64)


def _downgrade(acc: dict, idx: np.ndarray, rng: np.random.Generator) -> None:
    """Remove MRR x U(0.1, 0.4) (rounded to 1,000) from the main line, which keeps at least 1,000."""
    if not len(idx):
        return
    mrr = acc["lines"][idx].sum(axis=1)
    amount = np.maximum(1000.0, _round_k(mrr * rng.uniform(*DOWNGRADE_SIZE, len(idx))))
    amount = np.minimum(amount, acc["lines"][idx, 0] - 1000.0)
    ok = amount > 0
    idx, amount = idx[ok], amount[ok]
    acc["lines"][idx, 0] -= amount
    acc["seats"][idx] = np.maximum(1, acc["seats"][idx] - np.round(amount / acc["price"][idx]).astype(np.int64))


def _surveys(acc: dict, idx: np.ndarray, t: int, rng: np.random.Generator) -> tuple:
    """NPS surveys every 6 months of tenure (from a random phase) to 1-3 users of each account."""
    tenure = t - acc["start"][idx]
    due = idx[(tenure >= 1) & ((tenure - acc["survey_phase"][idx]) % 6 == 0)]
    k = rng.integers(1, 4, len(due))
    who = np.repeat(due, k)
    z = _latents(_factors(acc["static"][who], acc["ar"][who]), acc["noise"][who], ["csat"])["csat"]
    role = rng.choice(3, size=len(who), p=NPS_ROLE_SHARE)
    effect = np.asarray(list(NPS_ROLE_EFFECT.values()))[role]
    score = np.clip(np.round(7.0 + 1.8 * z + effect + rng.normal(0, 0.9, len(who))), 0, 10).astype(np.int64)
    return np.full(len(who), t), who, rng.integers(1, 29, len(who)), score, role


def _snapshot_state(acc: dict, idx: np.ndarray, history: dict, lag: int, drivers: list[str], t: int,
                    window: int = 1) -> dict:
    """Everything known at as_of about the accounts still active then (for the Monte Carlo)."""
    active = idx[acc["churn_month"][idx] > t]
    return {
        "idx": active,
        "tenure": t - acc["start"][active],
        "seg": acc["seg"][active],
        "window": window,
        "annual": acc["annual"][active],
        "term": acc["term"][active],
        "onboarding": acc["onboarding"][active].astype(float),
        "static": acc["static"][active].copy(),
        "ar": acc["ar"][active].copy(),
        "noise": acc["noise"][active][:, [LATENT.index(k) for k in CHURN_KPIS]],
        "mrr": acc["lines"][active].sum(axis=1),
        "known": {m: _take(history[m], active) for m in range(t - lag - window + 2, t + 1) if m in history},
        "drivers": drivers,
    }


def _nanmean(arrays: list[np.ndarray]) -> np.ndarray:
    """Element-wise mean of the non-missing values of equally shaped arrays (NaN where all are missing)."""
    stack = np.stack(arrays)
    ok = np.isfinite(stack)
    count = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(ok, stack, 0.0).sum(axis=0) / count, np.nan)


def _take(dense: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a month's driver values; NaN for accounts created after that month."""
    out = np.full((len(idx), dense.shape[1]), np.nan)
    ok = idx < len(dense)
    out[ok] = dense[idx[ok]]
    return out


def _future(acc: dict, ids: np.ndarray, state: dict, t: int, horizon: int, lag: int, mc_paths: int,
            rng: np.random.Generator, options: Options) -> pd.DataFrame:
    """Realised churn within the horizon, and its true probability given the state at as_of."""
    idx = state["idx"]
    cm = acc["churn_month"][idx]
    prob = np.full(len(idx), np.nan)
    chunk = max(1, 200_000 // max(mc_paths, 1))
    for lo in range(0, len(idx) if mc_paths > 0 else 0, chunk):
        sl = slice(lo, lo + chunk)
        part = {k: v if k == "season" else _slice_state(v, sl) for k, v in state.items()}
        prob[sl] = _churn_prob_mc(part, horizon, lag, mc_paths, rng, options)
    out = pd.DataFrame({"account_id": ids[idx], "mrr": state["mrr"].astype(np.int64),
                        "churned": ((cm > t) & (cm <= t + horizon)).astype(np.int64), "churn_prob": prob})
    return out.sort_values("account_id", ignore_index=True)


def _slice_state(v, sl):
    if isinstance(v, dict):
        return {m: a[sl] for m, a in v.items()}
    if isinstance(v, (list, int)):
        return v
    return v[sl]


def _churn_prob_mc(state: dict, horizon: int, lag: int, paths: int, rng: np.random.Generator,
                   options: Options | None = None) -> np.ndarray:
    """P(churn within the horizon | state at as_of) = 1 - E[prod_h (1 - p_churn(h))] over KPI paths.

    The expectation runs over ``paths`` simulated futures of the latent factors and of the churn
    drivers' own noise (the only parts of the process the churn hazard depends on); within a path the
    survival product is exact, so no churn draws are needed. Draws are float32 (speed); the hazard's
    account-level part (intercept, tenure, segment, onboarding) is computed once per account.
    """
    n = len(state["idx"])
    rep = lambda a: np.repeat(a, paths, axis=0)  # noqa: E731
    static, ar, noise = (rep(state[k]).astype(np.float32) for k in ("static", "ar", "noise"))
    cols = [state["drivers"].index(k) for k in CHURN_KPIS]
    known = {m - max(state["known"]): rep(a[:, cols]) for m, a in state["known"].items()}
    onboarding = {"onboarding_completed": state["onboarding"]}
    simulated: dict[int, np.ndarray] = {}
    survival = np.ones(n * paths)
    seg_rep = rep(state["seg"])
    window = state.get("window", 1)
    season = state.get("season", np.zeros(horizon + 1))
    annual_rep = rep(state["annual"])
    for h in range(1, horizon + 1):
        ten = state["tenure"] + h
        base = eta_account("churn", ten, state["seg"], state["annual"]) + eta_kpis(
            "churn", onboarding, list(onboarding), seg=state["seg"], options=options
        )
        base = base + season[h]
        decides = (ten >= max(1, lag)) & (ten % state["term"] == 0)
        past = known[h - lag] if h <= lag else simulated[h - lag]
        if window > 1:  # annual renewals decided on the mean of the last ``window`` months up to t - lag
            stack = [known[o] if o <= 0 else simulated[o] for o in range(h - lag - window + 1, h - lag + 1)
                     if o in known or o in simulated]
            past = np.where(annual_rep[:, None], _nanmean(stack), past)
        kpi_part = eta_kpis("churn", {k: past[:, j] for j, k in enumerate(CHURN_KPIS)}, CHURN_KPIS,
                            seg=seg_rep, options=options)
        survival *= np.where(rep(decides), np.exp(-np.exp(rep(base) + kpi_part)), 1.0)
        if h <= horizon - lag:
            ar = FACTOR_RHO * ar + math.sqrt(1 - FACTOR_RHO**2) * rng.standard_normal(ar.shape, dtype=np.float32)
            noise = NOISE_RHO * noise + math.sqrt(1 - NOISE_RHO**2) * rng.standard_normal(noise.shape, dtype=np.float32)
            z = _latents(_factors(static, ar), noise, CHURN_KPIS, CHURN_KPIS)
            simulated[h] = np.column_stack([_raw(k, z[k], rng, options) for k in CHURN_KPIS])
    return 1.0 - survival.reshape(n, paths).mean(axis=1)


# ---------------------------------------------------------------------------------------------------
# Tables as a client would send them
# ---------------------------------------------------------------------------------------------------

_NAME_STEMS = ["山田", "佐藤", "鈴木", "高橋", "田中", "中村", "小林", "東京", "大阪", "名古屋", "横浜", "福岡",
               "札幌", "さくら", "みらい", "あおば", "ひかり", "日本", "中央", "北斗", "青葉", "富士", "瑞穂",
               "テクノ", "ネクスト", "グローバル", "アーク", "ソレイユ", "ブライト", "エコー", "サン", "ユニオン"]
_NAME_SUFFIXES = ["商事", "製作所", "システムズ", "ソリューションズ", "工業", "物産", "ホールディングス",
                  "テック", "ラボ", "デザイン", "精機", "電機", "建設", "運輸", "食品", "不動産", "企画",
                  "コンサルティング", "ネットワークス", "メディカル"]


def _company_names(rng: np.random.Generator, n: int) -> np.ndarray:
    stem = np.asarray(_NAME_STEMS)[rng.integers(0, len(_NAME_STEMS), n)]
    suffix = np.asarray(_NAME_SUFFIXES)[rng.integers(0, len(_NAME_SUFFIXES), n)]
    form = rng.choice(3, size=n, p=(0.6, 0.35, 0.05))
    pre = np.where(form == 0, "株式会社", np.where(form == 2, "有限会社", ""))
    post = np.where(form == 1, "株式会社", "")
    return np.char.add(np.char.add(np.char.add(pre, stem), suffix), post)


def _tables(acc: dict, kpi_blocks: list, rev_blocks: list, nps_blocks: list, start: str, n_months: int,
            rng: np.random.Generator, with_nps: bool) -> tuple[dict[str, pd.DataFrame], np.ndarray]:
    n = len(acc["start"])
    order = np.argsort(acc["start"], kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    width = max(5, len(str(n)))
    ids = np.array([f"A{r + 1:0{width}d}" for r in rank])
    months = np.array([str(p) for p in pd.period_range(start, periods=n_months, freq="M")])
    asof_t = n_months - 1

    kpis = _kpi_table(kpi_blocks, ids, rank, months, rng)
    last_t, last_idx, last_values = kpi_blocks[-1]
    alive = last_idx[acc["churn_month"][last_idx] > last_t]
    accounts = _accounts_table(acc, ids, rank, months, asof_t, alive, last_idx, last_values, rng)
    revenue = _revenue_table(rev_blocks, acc, ids, rank, months)
    tables = {"accounts": accounts, "revenue": revenue, "kpis": kpis}
    if with_nps:
        tables["nps"] = _nps_table(nps_blocks, ids, rank, months)
    return tables, ids


def _export(tables: dict[str, pd.DataFrame], acc: dict, ids: np.ndarray, start: str,
            options: Options) -> dict[str, pd.DataFrame]:
    """The tables as this client exports them: term-end churn dates, a late data window (no random draw,
    so the options never change the other tables)."""
    tables = dict(tables)
    accounts = tables["accounts"].copy()
    if options.term_end_dates:
        term = (accounts["contract_type"] == "annual") & accounts["churn_date"].notna()
        anniversary = pd.to_datetime(accounts.loc[term, "churn_date"])
        last_day = anniversary - pd.Timedelta(days=1)
        accounts.loc[term, "churn_date"] = last_day.dt.strftime("%Y-%m-%d")
        gone = accounts.loc[term][anniversary.dt.month.to_numpy() != last_day.dt.month.to_numpy()]
        left = set(zip(gone["account_id"], anniversary[gone.index].dt.strftime("%Y-%m")))
        for name, col in (("kpis", "month"), ("nps", "date")):
            if name in tables:
                df = tables[name]
                key = list(zip(df["account_id"], df[col].str[:7]))
                tables[name] = df[[k not in left for k in key]].reset_index(drop=True)
    if options.window_start > 0:
        first = str(pd.Period(start, "M") + options.window_start)
        for name, col in (("revenue", "month"), ("kpis", "month"), ("nps", "date")):
            if name in tables:
                df = tables[name]
                tables[name] = df[df[col].str[:7] >= first].reset_index(drop=True)
        if options.active_only:
            ended = accounts["churn_date"].notna() & (accounts["churn_date"].str[:7] < first)
            accounts = accounts[~ended].reset_index(drop=True)
            accounts.loc[~accounts["referred_by"].isin(accounts["account_id"]), "referred_by"] = None
    tables["accounts"] = accounts
    return tables


def _accounts_table(acc, ids, rank, months, asof_t, alive, last_idx, last_values, rng) -> pd.DataFrame:
    n = len(ids)
    day = acc["day"]
    start_month = months[acc["start"]]
    churned = acc["churn_month"] <= asof_t
    churn_day = np.where(acc["annual"], day, rng.integers(1, 29, n))
    cm = np.where(churned, acc["churn_month"], 0)
    churn_date = np.where(
        churned, np.char.add(np.char.add(months[cm], "-"), np.char.zfill(churn_day.astype(str), 2)), None
    )
    referred_by = np.where(acc["referrer"] >= 0, ids[np.maximum(acc["referrer"], 0)], None)
    pos = np.searchsorted(last_idx, alive)
    z = [
        (v - v.mean()) / v.std()
        for v in (last_values[k][pos] for k in ("login_days", "newsletter_open_rate", "session_seconds"))
    ]
    mix = (z[0] + z[1] + z[2]) / 3 + rng.normal(0, 0.8, len(alive))
    health = pd.array(np.full(n, pd.NA), dtype="Int64")
    health[alive] = np.round(100 * _sigmoid(1.5 * mix + 0.4)).astype(np.int64)
    df = pd.DataFrame({
        "account_id": ids,
        "company_name": _company_names(rng, n),
        "contract_start": np.char.add(np.char.add(start_month, "-"), np.char.zfill(day.astype(str), 2)),
        "churn_date": churn_date,
        "segment": np.asarray(SEGMENTS)[acc["seg"]],
        "plan": np.asarray(PLANS)[acc["pro"].astype(int)],
        "contract_type": np.where(acc["annual"], "annual", "monthly"),
        "referred_by": referred_by,
        "health_score": health,
        "onboarding_completed": acc["onboarding"],
        "welcome_webinar_attendance": acc["webinar"],
    })
    return df.iloc[np.argsort(rank)].reset_index(drop=True)


def _kpi_table(blocks, ids, rank, months, rng) -> pd.DataFrame:
    t = np.concatenate([np.full(len(b[1]), b[0]) for b in blocks])
    idx = np.concatenate([b[1] for b in blocks])
    order = np.lexsort((t, rank[idx]))
    t, idx = t[order], idx[order]
    missing = rng.random((len(idx), len(MONTHLY_KPIS))) < NAN_SHARE
    cols: dict[str, object] = {"account_id": ids[idx], "month": months[t]}
    for j, k in enumerate(MONTHLY_KPIS):
        v = np.concatenate([b[2][k] for b in blocks])[order]
        if k in FLOAT_KPIS:
            cols[k] = np.where(missing[:, j], np.nan, np.round(v, FLOAT_KPIS[k]))
        else:
            cols[k] = pd.arrays.IntegerArray(v.astype(np.int64), missing[:, j])
    return pd.DataFrame(cols)


def _revenue_table(blocks, acc, ids, rank, months) -> pd.DataFrame:
    parts = []
    for t, idx, lines in blocks:
        a, j = np.nonzero(lines > 0)
        parts.append((np.full(len(a), t), idx[a], j, lines[a, j]))
    t, idx, j, mrr = (np.concatenate(p) for p in zip(*parts))
    order = np.lexsort((j, t, rank[idx]))
    t, idx, j, mrr = t[order], idx[order], j[order], mrr[order]
    plan = np.asarray(PLANS)[acc["pro"][idx].astype(int)]
    option = np.asarray(("",) + OPTIONS)[j]
    return pd.DataFrame({"account_id": ids[idx], "month": months[t], "mrr": mrr.astype(np.int64),
                         "product": np.where(j == 0, plan, option)})


def _nps_table(blocks, ids, rank, months) -> pd.DataFrame:
    t, who, day, score, role = (np.concatenate(p) for p in zip(*blocks))
    order = np.lexsort((day, t, rank[who]))
    t, who, day, score, role = t[order], who[order], day[order], score[order], role[order]
    return pd.DataFrame({
        "account_id": ids[who],
        "date": np.char.add(np.char.add(months[t], "-"), np.char.zfill(day.astype(str), 2)),
        "score": score,
        "role": np.asarray(list(NPS_ROLE_EFFECT))[role],
    })


# ---------------------------------------------------------------------------------------------------
# Truth computed from the observed tables
# ---------------------------------------------------------------------------------------------------

def _month_number(text: pd.Series | np.ndarray | list) -> np.ndarray:
    """Months since year 0 of "YYYY-MM..." strings (each distinct string parsed once)."""
    codes, uniq = pd.factorize(np.asarray(text, dtype=object))
    return np.array([int(u[:4]) * 12 + int(u[5:7]) - 1 for u in uniq], dtype=np.int64)[codes]


def nps_kpi(kpis: pd.DataFrame, nps: pd.DataFrame) -> pd.Series:
    """The kit's ``nps`` KPI on the rows of ``kpis``: mean score answered in the trailing 12 months."""
    months = _month_number(kpis["month"])
    a, accounts = pd.factorize(kpis["account_id"])
    m = months - months.min()
    width = m.max() + 1
    s = np.zeros((len(accounts), width))
    c = np.zeros((len(accounts), width))
    na = pd.Index(accounts).get_indexer(nps["account_id"])
    nm = _month_number(nps["date"]) - months.min()
    ok = (na >= 0) & (nm >= 0) & (nm < width)
    np.add.at(s, (na[ok], nm[ok]), nps["score"].to_numpy()[ok])
    np.add.at(c, (na[ok], nm[ok]), 1)
    cs = np.concatenate([np.zeros((len(accounts), 1)), s.cumsum(axis=1)], axis=1)
    cc = np.concatenate([np.zeros((len(accounts), 1)), c.cumsum(axis=1)], axis=1)
    lo = np.maximum(m - 11, 0)
    total, count = cs[a, m + 1] - cs[a, lo], cc[a, m + 1] - cc[a, lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.Series(np.where(count > 0, total / count, np.nan), index=kpis.index, name="nps")


def _last3_mean(codes: np.ndarray, n_groups: int, values: np.ndarray) -> np.ndarray:
    """Per group, the mean of its last 3 non-missing values (rows sorted by group code, then month)."""
    ok = ~np.isnan(values)
    c, v = codes[ok], values[ok]
    end = np.cumsum(np.bincount(c, minlength=n_groups))
    keep = end[c] - np.arange(len(c)) <= 3
    total = np.bincount(c[keep], weights=v[keep], minlength=n_groups)
    count = np.bincount(c[keep], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _last3_values(codes: np.ndarray, n_groups: int, values: np.ndarray) -> np.ndarray:
    """Per group, its last 3 non-missing values, oldest first (n_groups x 3, NaN-padded)."""
    ok = ~np.isnan(values)
    c, v = codes[ok], values[ok]
    end = np.cumsum(np.bincount(c, minlength=n_groups))
    back = end[c] - np.arange(len(c))  # 1 = the last value of its group
    keep = back <= 3
    out = np.full((n_groups, 3), np.nan)
    out[c[keep], 3 - back[keep]] = v[keep]
    return out


def _observed_stats(tables: dict, asof_t: int, start: str,
                    options: Options | None = None) -> tuple[dict, pd.DataFrame, dict]:
    """Per-KPI SD over the account-months up to as_of, the projection inputs of active accounts, and the
    last 3 observed values of each monthly driver (for the month-by-month scenario)."""
    kpis = tables["kpis"].copy()
    accounts = tables["accounts"].set_index("account_id")
    for k in STATIC_KPIS:
        kpis[k] = accounts[k].reindex(kpis["account_id"]).to_numpy()
    if "nps" in tables:
        kpis["nps"] = nps_kpi(kpis, tables["nps"])
    names = MONTHLY_KPIS + STATIC_KPIS + (["nps"] if "nps" in tables else [])
    sd = {k: float(pd.to_numeric(kpis[k]).std()) for k in names}
    last = pd.Period(start, "M") + asof_t
    active = accounts[accounts["churn_date"].isna()]
    snap = pd.DataFrame(index=active.index)
    snap["tenure"] = _month_number([str(last)] * len(active)) - _month_number(active["contract_start"])
    snap["segment"] = active["segment"]
    snap["contract_type"] = active["contract_type"]
    rev = tables["revenue"]
    mrr = rev[rev["month"] == str(last)].groupby("account_id")["mrr"].sum()
    snap["mrr"] = mrr.reindex(snap.index).to_numpy().astype(float)
    codes, groups = pd.factorize(kpis["account_id"])
    pick = pd.Index(groups).get_indexer(snap.index)
    for k in MONTHLY_KPIS + (["nps"] if "nps" in tables else []):
        x = _last3_mean(codes, len(groups), pd.to_numeric(kpis[k]).to_numpy(float, na_value=np.nan))[pick]
        snap[k] = np.where(np.isnan(x), np.nanmean(x), x)
    recent = {}
    for k in (options or Options()).centre():
        if k in MONTHLY_KPIS:
            values = pd.to_numeric(kpis[k]).to_numpy(float, na_value=np.nan)
            recent[k] = _last3_values(codes, len(groups), values)[pick]
    for k in STATIC_KPIS:
        snap[k] = active[k].astype(float)
    return sd, snap.rename_axis("account_id").reset_index(), recent


def _effects(sd: dict[str, float], options: Options | None = None) -> pd.DataFrame:
    """The truth table; under ``options`` a segment-only churn driver's row carries its effect in its
    segment (``segment`` names it; empty = all accounts) and a threshold login_days row the slope per
    day below the threshold (``shape`` = threshold; else linear)."""
    options = options or Options()
    only = dict(options.segment_only)
    rows = []
    for outcome in OUTCOMES:
        src = "churn" if outcome == "renewal" else outcome
        sign = -1.0 if outcome == "renewal" else 1.0
        drivers = {k: b for k, b in options.beta_sd()[src].items() if b != 0}
        scale, proxy_of = options.scale(), options.proxy_of()
        for k in sd:
            beta_unit = sign * drivers[k] / scale[k] if k in drivers else 0.0
            role = "driver" if k in drivers else "proxy" if proxy_of.get(k) in drivers else "noise"
            shape, segment = "linear", ""
            if src == "churn" and k in drivers:
                segment = only.get(k, "")
                if k == "login_days" and options.login_threshold is not None:
                    shape, beta_unit = "threshold", -sign * THRESHOLD_SLOPE
            rows.append({"kpi": k, "outcome": outcome, "beta_unit": beta_unit, "beta_sd": beta_unit * sd[k],
                         "sd": sd[k], "link": "cloglog", "role": role, "segment": segment, "shape": shape})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# The true improvement potential
# ---------------------------------------------------------------------------------------------------

def _project(snap: pd.DataFrame, x: dict[str, np.ndarray], shift: float, horizon: int, ltv_months: int,
             margin: float, options: Options | None = None, asof_month: int = 1) -> dict[str, float]:
    """Sums of the projection in docs/architecture.md for the KPI values ``x`` (constant in time); with a
    seasonal churn shock (``options``), future month h is calendar month ``asof_month`` + h."""
    options = options or Options()
    months = np.arange(1, max(horizon, ltv_months) + 1)
    tenure = snap["tenure"].to_numpy()[:, None] + months[None, :]
    seg = np.array([SEGMENTS.index(s) for s in snap["segment"]])[:, None]
    annual = (snap["contract_type"].to_numpy() == "annual")[:, None]
    xx = {k: v[:, None] for k, v in x.items()}
    eff = tenure + shift
    term = (snap["term_months"].to_numpy() if "term_months" in snap else np.where(annual[:, 0], 12, 1))[:, None]
    season = season_term(options, (asof_month - 1 + months) % 12 + 1)[None, :]
    p_c = cloglog_inv(eta("churn", xx, eff, seg, annual, options) + season)
    p_c = np.where(tenure % term == 0, p_c, 0.0)
    p_e = cloglog_inv(eta("expansion", xx, eff, seg, options=options))
    p_d = cloglog_inv(eta("downgrade", xx, eff, seg, options=options))
    p_r = cloglog_inv(eta("referral", xx, eff, seg, options=options))
    g_e, g_d = sum(EXPANSION_SIZE) / 2, sum(DOWNGRADE_SIZE) / 2
    surv = np.cumprod(1.0 - p_c, axis=1)
    surv_prev = np.concatenate([np.ones((len(surv), 1)), surv[:, :-1]], axis=1)
    growth = 1.0 + p_e * g_e - p_d * g_d
    m = snap["mrr"].to_numpy()[:, None] * np.cumprod(growth, axis=1)
    m_prev = m / growth
    h = months[None, :] <= horizon
    return {
        "ltv": margin * float((surv * m)[:, :ltv_months].sum()),
        "expansion": float((surv * p_e * g_e * m_prev * h).sum()),
        "new": float((surv * p_r * expected_first_mrr() * h).sum()),
        "downgrade": float((surv * p_d * g_d * m_prev * h).sum()),
        "churn": float(((surv_prev - surv) * m_prev * h).sum()),
    }


def scenario_value(x: np.ndarray, recent: np.ndarray | None, delta: float, lower: float, upper: float) -> np.ndarray:
    """An account's KPI value in the scenario: its value ``x`` (mean of its last 3 observed months) plus
    the mean over those months of clip(v + delta, lower, upper) − v, so that a month at the floor (a
    zero count) cannot be pushed below it; an account without an observed month: clip(x + delta)."""
    whole = np.clip(x + delta, lower, upper)
    if recent is None:
        return whole
    seen = np.isfinite(recent)
    step = np.where(seen, np.clip(recent + delta, lower, upper) - recent, 0.0).sum(axis=1)
    n = seen.sum(axis=1)
    return np.where(n > 0, x + step / np.maximum(n, 1), whole)


def true_potential(snapshot: pd.DataFrame, improvement_pct: float = 10, horizon_months: int = 12,
                   ltv_months: int = 36, gross_margin: float = 1.0, *, options: Options | None = None,
                   asof_month: int = 1, recent: dict | None = None) -> pd.DataFrame:
    """Scenario - baseline of the projection for each KPI shifted by improvement_pct% of its mean; a
    monthly driver with ``recent`` values moves month by month within its bounds (:func:`scenario_value`)."""
    options, recent = options or Options(), recent or {}
    kpis = [k for k in CATALOGUE_NAMES + ["nps"] if k == "contract_months" or k in snapshot]
    x0 = {k: snapshot[k].to_numpy(dtype=float) for k in options.centre()}
    base = _project(snapshot, x0, 0.0, horizon_months, ltv_months, gross_margin, options, asof_month)
    rows = []
    for k in kpis:
        spec = DEFAULT_CATALOGUE[k]
        x, shift = dict(x0), 0.0
        if k == "contract_months":
            mean = float(snapshot["tenure"].mean())
            shift = improvement_pct / 100 * mean
            delta = shift
        else:
            mean = float(snapshot[k].mean())
            delta = spec.direction * improvement_pct / 100 * mean
            if k in x:
                upper = FLAG_UPPER.get(k, spec.upper)
                x[k] = scenario_value(x[k], recent.get(k), delta, spec.lower, upper)
        scen = _project(snapshot, x, shift, horizon_months, ltv_months, gross_margin, options, asof_month)
        rows.append({"kpi": k, "mean": mean, "improvement": delta,
                     **{f"d_{c}": scen[c] - base[c] for c in ("ltv", "expansion", "new", "downgrade", "churn")}})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------

def write_simulated(out: str | Path, *, mc_paths: int = 0, events: bool = False, timezone: str = "Asia/Tokyo",
                    **options) -> SimulatedClient:
    """Simulate a client and write its tables into ``out``: what ``cskit simulate`` and
    ``python -m cskit.simulate`` do.

    Parameters
    ----------
    out : str or Path
        Folder for accounts.csv, revenue.csv, kpis.csv, nps.csv (and events.parquet).
    mc_paths : int, default 0
        Monte Carlo paths for the true churn probability (0 skips it; :func:`simulate_client` itself
        defaults to 200, which takes long for a command).
    events : bool, default False
        Also write a raw events log from which the usage KPIs are aggregated (they leave kpis.csv;
        :mod:`cskit.simulate_events`), in local days of ``timezone``.
    **options
        Passed to :func:`simulate_client` (``n_accounts``, ``n_months``, ``seed``, ``start``, ``lag``,
        ``annual_share``, ``with_nps``, ``with_referrals``); what is not given takes its default there,
        so both commands share one set of defaults.

    Returns
    -------
    SimulatedClient
        The client written, with its planted truth.

    Examples
    --------
    >>> sim = write_simulated("data/sim1", n_accounts=500, seed=1)  # doctest: +SKIP
    """
    sim = simulate_client(mc_paths=mc_paths, **options)
    if events:
        from cskit.simulate_events import events_client

        seed = options.get("seed", inspect.signature(simulate_client).parameters["seed"].default)
        sim.tables = events_client(sim.tables, seed=seed, timezone=timezone)[0]
    sim.write(out)
    return sim


def main(argv: list[str] | None = None) -> int:
    """``python -m cskit.simulate --accounts 1200 --months 30 --seed 7 --out data/demo``: the arguments of
    ``cskit simulate``; an option not given takes :func:`simulate_client`'s default."""
    ap = argparse.ArgumentParser(prog="python -m cskit.simulate", description=__doc__.splitlines()[0],
                                 argument_default=argparse.SUPPRESS)
    ap.add_argument("--accounts", dest="n_accounts", type=int, help="organic accounts (referred ones come on top)")
    ap.add_argument("--months", dest="n_months", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--start", help="first month, YYYY-MM")
    ap.add_argument("--annual-share", type=float)
    ap.add_argument("--lag", type=int)
    ap.add_argument("--no-nps", dest="with_nps", action="store_false")
    ap.add_argument("--no-referrals", dest="with_referrals", action="store_false")
    ap.add_argument("--mc-paths", type=int, help="Monte Carlo paths for the true churn_prob (default 0: skip)")
    ap.add_argument("--events", action="store_true",
                    help="also write a raw events log (events.parquet) from which the usage KPIs are aggregated "
                         "(they leave kpis.csv; see cskit.simulate_events)")
    ap.add_argument("--timezone", help="with --events: the zone of the log's local days (default Asia/Tokyo)")
    ap.add_argument("--segment-only", action="append", metavar="KPI=SEGMENT",
                    help="a churn driver acting only in one segment, e.g. support_inquiries=SMB (repeatable)")
    ap.add_argument("--login-threshold", type=float,
                    help="churn falls with login days up to this many days and is flat above")
    ap.add_argument("--drop-accounts", type=int,
                    help="plant an engagement drop (login days −3 SD) for this many accounts in the last months")
    ap.add_argument("--drop-months", type=int, help="with --drop-accounts: months of the drop up to as_of (default 3)")
    ap.add_argument("--mnar-csat", action="store_true", help="csat unanswered far more often before a churn")
    ap.add_argument("--onboarding-proxy", action="store_true",
                    help="onboarding travels with usage, no effect of its own")
    ap.add_argument("--sparse-support", action="store_true",
                    help="support_inquiries a sparse count (~58%% zero months)")
    ap.add_argument("--collinear-proxy", action="store_true",
                    help="session_seconds tracks login_days at r = 0.9 and is listed first")
    ap.add_argument("--annual-terms", type=int, nargs="+", metavar="MONTHS",
                    help="term lengths of the contracts labelled annual, e.g. 6, or 12 6 for a mix")
    ap.add_argument("--term-end-dates", action="store_true",
                    help="annual churn dated the term's last day (2025-03-31 for a term from 2024-04-01)")
    ap.add_argument("--fiscal-year-start", type=int, metavar="MONTH", help="annual contracts start on the 1st of it")
    ap.add_argument("--season-month", type=int, metavar="MONTH", help="a churn shock in this calendar month")
    ap.add_argument("--season-shock", type=float, help="with --season-month: added to churn eta (default 1.0)")
    ap.add_argument("--seasonal-kpi", help="with --season-month: a noise KPI that peaks the month before")
    ap.add_argument("--seasonal-peak", type=float, help="with --seasonal-kpi: its latent rise in SD (default 1.5)")
    ap.add_argument("--recent-mean-annual", action="store_true",
                    help="annual renewals decided on the 3-month mean of the churn KPIs")
    ap.add_argument("--window-start", type=int, metavar="MONTHS", help="the tables start this many months in")
    ap.add_argument("--active-only", action="store_true",
                    help="with --window-start: list only the accounts active in the window")
    ap.add_argument("--out", required=True, help="folder for accounts.csv, revenue.csv, kpis.csv, nps.csv")
    options = vars(ap.parse_args(argv))
    if "segment_only" in options:
        pairs = [tuple(p.split("=", 1)) for p in options["segment_only"]]
        if any(len(p) != 2 for p in pairs):
            ap.error("--segment-only takes KPI=SEGMENT, e.g. support_inquiries=SMB")
        options["segment_only"] = pairs
    drop_accounts, drop_months = options.pop("drop_accounts", 0), options.pop("drop_months", 3)
    if drop_accounts > 0:
        options["engagement_drop"] = EngagementDrop(drop_accounts, drop_months)
    names = ("mnar_csat", "onboarding_proxy", "sparse_support", "collinear_proxy", "term_end_dates",
             "fiscal_year_start", "season_month", "season_shock", "seasonal_kpi", "seasonal_peak", "recent_mean_annual",
             "window_start", "active_only")
    structures = {k: options.pop(k) for k in names if k in options}
    if "annual_terms" in options:
        structures["annual_terms"] = tuple(options.pop("annual_terms"))
    if structures:
        options["options"] = Options(**structures)
    out = options.pop("out")
    sim = write_simulated(out, **options)
    print(simulated_summary(sim, out))
    if sim.truth.dropped:
        print(f"planted engagement drop: {', '.join(sim.truth.dropped)}")
    return 0


def simulated_summary(sim: SimulatedClient, out: str | Path) -> str:
    """One line saying what was written into ``out``: each table's rows and the as_of month."""
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in sim.tables.items())
    return f"wrote {out}: {sizes} rows; as_of {sim.as_of}"


if __name__ == "__main__":
    raise SystemExit(main())
