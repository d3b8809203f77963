"""Case-control sampling of large clients' model rows (cskit.sampling): references and planted truth."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from cskit.models import fit_binomial, fit_gee
from cskit.sampling import CONTROLS, SampledLink, case_control, fit_link, row_uniforms


def _panel(n_accounts: int, months: int, rng: np.random.Generator) -> pd.DataFrame:
    acc = np.repeat([f"A{i:06d}" for i in range(n_accounts)], months)
    month = np.tile(pd.date_range("2024-01-01", periods=months, freq="MS").to_numpy(), n_accounts)
    return pd.DataFrame({"account_id": acc, "month": month, "x1": rng.standard_normal(len(acc)),
                         "x2": rng.standard_normal(len(acc))})


def _cloglog_y(X: np.ndarray, beta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = -np.expm1(-np.exp(X @ beta))
    return (rng.random(len(p)) < p).astype("float64")


def test_below_the_threshold_nothing_is_sampled():
    rng = np.random.default_rng(0)
    panel = _panel(200, 12, rng)
    rows = np.ones(len(panel), dtype=bool)
    y = (rng.random(len(panel)) < 0.05).astype(float)
    kept, yk, info = case_control(panel, rows, y, above=len(panel))
    assert kept is rows and yk is not None and np.array_equal(yk, y)
    assert not info.sampled and info.offset == 0.0 and fit_link("cloglog", info) == "cloglog"


def test_every_rare_row_kept_and_the_common_share_as_drawn():
    rng = np.random.default_rng(1)
    panel = _panel(4000, 24, rng)  # 96,000 rows
    rows = rng.random(len(panel)) < 0.9
    y = (rng.random(int(rows.sum())) < 0.02).astype(float)
    kept, yk, info = case_control(panel, rows, y, above=30_000)
    events = int(y.sum())
    common = len(y) - events
    pi = max(CONTROLS * events, 30_000 - events) / common
    assert info.keep == pytest.approx(pi) and info.rare == 1
    assert int(yk.sum()) == events  # every event kept
    assert not (kept & ~rows).any()  # a subset of the model rows
    n_common = info.kept - events
    sd = math.sqrt(common * pi * (1 - pi))
    assert abs(n_common - common * pi) < 4 * sd  # binomial thinning at rate π
    assert info.offset == pytest.approx(-math.log(pi))
    # renewal-like outcome (the non-events are rare): the y = 0 rows are kept whole, the offset flips sign
    _, y2, info2 = case_control(panel, rows, 1 - y, above=30_000)
    assert info2.rare == 0 and int((1 - y2).sum()) == events and info2.offset == pytest.approx(math.log(pi))


def test_the_same_rows_whatever_the_row_order_and_another_seed_other_rows():
    rng = np.random.default_rng(2)
    panel = _panel(500, 24, rng)
    rows = np.ones(len(panel), dtype=bool)
    u = row_uniforms(panel, rows, seed=3)
    perm = rng.permutation(len(panel))
    shuffled = panel.iloc[perm].reset_index(drop=True)
    assert np.array_equal(row_uniforms(shuffled, rows, seed=3), u[perm])
    assert not np.array_equal(row_uniforms(panel, rows, seed=4), u)
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01


def test_a_selection_gets_the_numbers_of_hashing_its_rows_alone_and_new_ids_are_hashed_again():
    """row_uniforms reads a selection's numbers off the whole panel's (hashed once per panel and seed):
    they are the bits of hashing the selected rows by themselves (the formula written out here), and a
    panel whose account ids are replaced gets the new ids' numbers, not the kept ones."""
    rng = np.random.default_rng(4)
    panel = _panel(300, 12, rng)

    def hashed(frame: pd.DataFrame, rows: np.ndarray, seed: int) -> np.ndarray:
        alone = pd.DataFrame({"a": frame["account_id"].to_numpy()[rows], "m": frame["month"].to_numpy()[rows]})
        h = pd.util.hash_pandas_object(alone, index=False, hash_key=f"cskit{seed:011d}").to_numpy()
        return (h >> np.uint64(11)).astype("float64") / float(1 << 53)

    for seed in (0, 7):
        for share in (0.1, 0.6, 1.0):
            rows = rng.random(len(panel)) < share
            assert np.array_equal(row_uniforms(panel, rows, seed=seed), hashed(panel, rows, seed))
    rows = np.ones(len(panel), dtype=bool)
    before = row_uniforms(panel, rows, seed=0)
    panel["account_id"] = "B" + panel["account_id"]
    after = row_uniforms(panel, rows, seed=0)
    assert np.array_equal(after, hashed(panel, rows, 0)) and not np.array_equal(after, before)
    import gc

    from cskit import sampling
    held = len(sampling._HASHED)
    del panel
    gc.collect()
    assert held and len(sampling._HASHED) < held  # a freed panel's numbers are not kept
    assert all(entry[0]() is not None for entry in sampling._HASHED)


def test_logit_sampled_likelihood_is_statsmodels_offset_fit():
    """For the logit link the sampled likelihood is the logistic model with offset c = log(π1/π0)
    (Prentice & Pyke 1979): statsmodels' GLM with that offset is the reference."""
    rng = np.random.default_rng(5)
    panel = _panel(3000, 24, rng)
    X = np.column_stack([np.ones(len(panel)), panel["x1"], panel["x2"]])
    eta = -3.5 + 0.6 * X[:, 1] - 0.4 * X[:, 2]
    y = (rng.random(len(eta)) < 1 / (1 + np.exp(-eta))).astype(float)
    rows = np.ones(len(y), dtype=bool)
    kept, yk, info = case_control(panel, rows, y, above=20_000)
    assert info.sampled
    fit = fit_binomial(yk, X[kept], link=fit_link("logit", info))
    ref = sm.GLM(yk, X[kept], family=sm.families.Binomial(), offset=np.full(len(yk), info.offset)).fit(tol=1e-12)
    np.testing.assert_allclose(fit.coef, ref.params, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fit.se, ref.bse, rtol=1e-6)
    # and the GEE on the sample with the same offset is statsmodels' GEE with it
    groups = panel["account_id"].to_numpy()[kept]
    gee = fit_gee(yk, X[kept], groups, "exchangeable", offset=info.offset)
    ref_gee = sm.GEE(yk, X[kept], groups=pd.factorize(groups, sort=True)[0], family=sm.families.Binomial(),
                     cov_struct=sm.cov_struct.Exchangeable(), offset=np.full(len(yk), info.offset)).fit()
    np.testing.assert_allclose(gee.coef, ref_gee.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gee.se, ref_gee.bse, rtol=1e-3)


def test_cloglog_sampled_fit_recovers_the_population_hazard():
    """Planted cloglog hazard (about 2% a month): the fit on the case-control sample estimates the
    population's coefficients, intercept included; over replicates its z-scores are standard normal
    (the model-based SEs are honest about the rows left out), and its SEs are at most ~10% above the
    full-data fit's (efficiency m / (m + 1) at m ≥ 10)."""
    rng = np.random.default_rng(7)
    beta = np.array([-4.0, 0.5, -0.3])
    zs, ratios = [], []
    for _ in range(40):
        panel = _panel(2500, 24, rng)  # 60,000 rows
        X = np.column_stack([np.ones(len(panel)), panel["x1"], panel["x2"]])
        y = _cloglog_y(X, beta, rng)
        rows = np.ones(len(y), dtype=bool)
        kept, yk, info = case_control(panel, rows, y, above=10_000)
        assert info.sampled and info.rare == 1
        fit = fit_binomial(yk, X[kept], link=fit_link("cloglog", info))
        full = fit_binomial(y, X, link="cloglog")
        assert fit.converged
        zs.append((fit.coef - beta) / fit.se)
        ratios.append(fit.se / full.se)
    zs, ratios = np.array(zs), np.array(ratios)
    assert np.all(np.abs(zs.mean(axis=0)) < 0.5)  # unbiased: mean z within 3 SE of 0 (SE of a mean of 40: 0.16)
    assert np.all((zs.std(axis=0) > 0.7) & (zs.std(axis=0) < 1.35))  # SEs match the estimates' spread
    m = np.median(ratios, axis=0)
    assert np.all((m >= 1.0) & (m < 1.12))


def test_sampled_link_mean_is_the_kept_rows_rate():
    """μ_s = π1 p / (π1 p + π0 (1 − p)) by Bayes: checked against the sampled rows' event rate."""
    from cskit.models import mean_and_slope

    eta = np.array([-4.0, -2.0, 0.0])
    p, _ = mean_and_slope(eta, "cloglog")
    pi0 = 0.1
    ms, d = mean_and_slope(eta, SampledLink("cloglog", -math.log(pi0)))
    np.testing.assert_allclose(ms, p / (p + pi0 * (1 - p)), rtol=1e-12)
    h = 1e-6  # the slope is the derivative of the mean
    up, _ = mean_and_slope(eta + h, SampledLink("cloglog", -math.log(pi0)))
    lo, _ = mean_and_slope(eta - h, SampledLink("cloglog", -math.log(pi0)))
    np.testing.assert_allclose(d, (up - lo) / (2 * h), rtol=1e-6)


def test_the_threshold_is_read_at_call_time(monkeypatch):
    import cskit.sampling as sampling

    rng = np.random.default_rng(9)
    panel = _panel(1000, 24, rng)
    rows = np.ones(len(panel), dtype=bool)
    y = (rng.random(len(panel)) < 0.02).astype(float)
    assert not case_control(panel, rows, y)[2].sampled
    monkeypatch.setattr(sampling, "SAMPLE_ABOVE", 5_000)
    assert case_control(panel, rows, y)[2].sampled
