"""The shared GLM and design matrix, checked against closed forms and statsmodels."""
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from cskit.models import Transform, design_matrix, fit_binomial, kpi_transforms


def _two_by_two(link):
    # 400 unexposed with 40 events, 600 exposed with 30 events
    x = np.r_[np.zeros(400), np.ones(600)]
    y = np.r_[np.ones(40), np.zeros(360), np.ones(30), np.zeros(570)]
    return x, y, fit_binomial(y, np.column_stack([np.ones_like(x), x]), link=link)


def test_cloglog_single_binary_covariate_matches_closed_form():
    _, _, fit = _two_by_two("cloglog")
    b0 = np.log(-np.log(1 - 0.1))
    b1 = np.log(-np.log(1 - 0.05)) - b0
    assert fit.converged
    assert fit.coef == pytest.approx([b0, b1], abs=1e-8)


def test_logit_single_binary_covariate_matches_closed_form():
    _, _, fit = _two_by_two("logit")
    log_or = np.log((30 / 570) / (40 / 360))
    assert fit.coef[1] == pytest.approx(log_or, abs=1e-8)
    # Woolf's standard error of the log odds ratio: sqrt(1/a + 1/b + 1/c + 1/d)
    assert fit.se[1] == pytest.approx(np.sqrt(1 / 30 + 1 / 570 + 1 / 40 + 1 / 360), rel=1e-6)


@pytest.mark.parametrize("link", ["cloglog", "logit"])
def test_matches_statsmodels_glm(link):
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(5000), rng.normal(size=(5000, 3))])
    eta = -3 + X[:, 1:] @ np.array([0.5, -0.3, 0.0])
    p = -np.expm1(-np.exp(eta)) if link == "cloglog" else 1 / (1 + np.exp(-eta))
    y = rng.binomial(1, p)
    ours = fit_binomial(y, X, link=link)
    sm_link = sm.families.links.CLogLog() if link == "cloglog" else sm.families.links.Logit()
    ref = sm.GLM(y, X, family=sm.families.Binomial(link=sm_link)).fit()
    assert ours.coef == pytest.approx(ref.params, abs=1e-6)
    # statsmodels uses the observed information for non-canonical links; the expected one agrees
    # to well within sampling precision
    assert ours.se == pytest.approx(ref.bse, rel=2e-2)
    assert ours.loglik == pytest.approx(ref.llf, abs=1e-6)


def test_design_drops_collinear_constant_and_mostly_missing_kpis():
    rng = np.random.default_rng(0)
    n = 2000
    a = rng.normal(size=n)
    panel = pd.DataFrame(
        {
            "account_id": np.repeat(np.arange(200), 10).astype(str),
            "tenure": np.tile(np.arange(10), 200),
            "segment": rng.choice(["SMB", "Mid"], n, p=[0.7, 0.3]),
            "contract_type": "monthly",
            "contract_months": np.tile(np.arange(10), 200).astype(float),
            "a": a,
            "a_copy": a * 2 + rng.normal(scale=0.05, size=n),
            "flat": np.ones(n),
            "sparse": np.where(rng.random(n) < 0.7, np.nan, rng.normal(size=n)),
            "b": rng.normal(size=n),
        }
    )
    d = design_matrix(panel, np.ones(n, bool), ["contract_months", "a", "a_copy", "flat", "sparse", "b"], lag=1)
    assert d.kpis == ["contract_months", "a", "b"]
    assert "collinear with a" in d.dropped["a_copy"]
    assert "constant" in d.dropped["flat"]
    assert "missing" in d.dropped["sparse"]
    assert d.names == ["intercept", "contract_months", "a", "b", "segment=Mid"]
    # KPIs are lagged one month within an account: row 1 of account 0 holds the z of row 0's value
    t = d.transforms["a"]
    assert d.X[1, 2] == pytest.approx((a[0] - t.mean) / t.sd)
    assert d.X[0, 2] == 0.0  # no earlier month: mean-imputed


def test_skewed_counts_are_log_transformed_and_standardised():
    rng = np.random.default_rng(1)
    panel = pd.DataFrame({"counts": rng.lognormal(2, 1.5, 5000).round(), "normal": rng.normal(10, 2, 5000)})
    tr = kpi_transforms(panel, ["counts", "normal"])
    assert tr["counts"].kind == "log1p" and tr["normal"].kind == "identity"
    z = tr["counts"].forward(panel["counts"])
    assert z.mean() == pytest.approx(0, abs=1e-9) and z.std() == pytest.approx(1, abs=1e-9)
    assert Transform("identity", 10, 2).forward(14) == pytest.approx(2)


def test_transform_inverse_undoes_forward():
    log = Transform("log1p", np.log1p(9.0), 0.5)  # log1p(9) = mean: z = 0 is x = 9; z = 2 is log1p(x) = mean + 1
    assert log.inverse(0.0) == pytest.approx(9.0) and isinstance(log.inverse(0.0), float)
    assert log.inverse(2.0) == pytest.approx(np.expm1(np.log1p(9.0) + 1.0))
    x = np.array([0.0, 3.0, 250.0])
    np.testing.assert_allclose(log.inverse(log.forward(x)), x, rtol=1e-12)
    assert Transform("identity", 10, 2).inverse(2.0) == pytest.approx(14.0)


def test_rare_events_in_a_small_group_do_not_run_away():
    # 13,382 rows at ~1% events and 271 at ~11%: an unguarded first IRLS step overshoots
    x = np.r_[np.zeros(13382), np.ones(271)]
    y = np.r_[np.ones(134), np.zeros(13382 - 134), np.ones(30), np.zeros(241)]
    fit = fit_binomial(y, np.column_stack([np.ones_like(x), x]), link="cloglog")
    b0 = np.log(-np.log(1 - 134 / 13382))
    b1 = np.log(-np.log(1 - 30 / 271)) - b0
    assert fit.converged
    assert fit.coef == pytest.approx([b0, b1], abs=1e-6)


def test_separation_is_reported_as_not_converged():
    # every exposed row has the event: the MLE of the slope is +infinity
    x = np.r_[np.zeros(500), np.ones(40)]
    y = np.r_[np.ones(25), np.zeros(475), np.ones(40)]
    fit = fit_binomial(y, np.column_stack([np.ones_like(x), x]), link="cloglog")
    assert not fit.converged
    assert fit.se[1] > 100 or abs(fit.coef[1]) > 15


# ---------------------------------------------------------------------------------------------------
# Curves and segment slopes: spline basis, score test of a block, forward selection
# ---------------------------------------------------------------------------------------------------


def test_restricted_cubic_spline_matches_harrells_formula_and_is_linear_beyond_the_outer_knots():
    from cskit.models import rcs_basis

    knots = np.array([0.0, 1.0, 2.0, 3.0])
    h = rcs_basis(np.array([2.5]), knots)[0]
    # by hand: ((2.5 − t_j)³ − (2.5 − 2)³ (3 − t_j)/(3 − 2)) / (3 − 0)²
    assert h[0] == pytest.approx((2.5**3 - 0.5**3 * 3) / 9) and h[1] == pytest.approx((1.5**3 - 0.5**3 * 2) / 9)
    z = np.linspace(3.5, 9, 12)
    second = np.diff(rcs_basis(z, knots), 2, axis=0)
    assert np.allclose(second, 0.0, atol=1e-9) and np.allclose(rcs_basis(np.array([-2.0, -0.5]), knots), 0.0)


def test_one_spline_column_is_harrells_formula_and_the_basis_column_bit_for_bit():
    from cskit.models import CURVE_QUANTILES, rcs_basis, rcs_column

    knots = np.array([0.0, 1.0, 2.0, 3.0])
    assert rcs_column(np.array([2.5]), knots, 1)[0] == pytest.approx((1.5**3 - 0.5**3 * 2) / 9)
    z = np.random.default_rng(3).standard_t(3, size=5000)
    for q in CURVE_QUANTILES:
        k = np.quantile(z, q)
        assert all(np.array_equal(rcs_basis(z, k)[:, j], rcs_column(z, k, j)) for j in range(len(k) - 2))


def test_score_test_of_a_block_equals_statsmodels_and_the_selection_keeps_a_planted_curve_only():
    """The block score statistic equals statsmodels' GLM score test; on data with a curved effect of x1
    and a linear x2, select_terms keeps x1's curve and nothing else."""
    import statsmodels.api as sm

    from cskit.models import Design, Term, curve_knots, score_null, score_test_block, select_terms, slope_weights

    rng = np.random.default_rng(4)
    n = 20000
    x1, x2 = rng.standard_normal(n), rng.standard_normal(n)
    eta = -2.0 + 0.8 * np.maximum(x1, 0.0) + 0.4 * x2
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    X = np.column_stack([np.ones(n), x1, x2])
    design = Design(X, ["intercept", "x1", "x2"], ["x1", "x2"], {}, {})
    fit = fit_binomial(y, X, link="logit", names=design.names)
    terms = [Term("x1", "curve", j, knots=curve_knots(x1)) for j in range(3)]
    Z = np.column_stack([t.values(x1) for t in terms])
    stat, df = score_test_block(score_null(y, X, fit.coef, "logit"), Z)
    ref = sm.GLM(y, X, family=sm.families.Binomial()).fit()
    st = ref.score_test(exog_extra=Z)
    assert df == 3 and stat == pytest.approx(float(np.ravel(st[0])[0]), rel=1e-6)
    ext, ext_fit, table = select_terms(y, design, fit, ["x1", "x2"], None, 0.05)
    assert [t.kpi for t in ext.terms] == ["x1"] * 3 and table.set_index("kpi")["kept"].to_dict() == {
        "x1": True,
        "x2": False,
    }
    # the average slope across the 1st–99th percentiles is the fitted curve's secant
    lo, hi = np.quantile(x1, [0.01, 0.99])
    f = ext.contribution(ext_fit.coef, "x1", np.array([lo, hi]))
    assert slope_weights(ext, "x1", x1) @ ext_fit.coef == pytest.approx((f[1] - f[0]) / (hi - lo))
    assert slope_weights(design, "x2", x2) @ fit.coef == pytest.approx(fit.coef[2])


def _segment_rows(counts: dict[str, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Model rows with (events, rows) per segment."""
    seg, y = [], []
    for lv, (ev, n) in counts.items():
        seg += [lv] * n
        y += [1] * ev + [0] * (n - ev)
    return np.array(seg), np.array(y, dtype="float64")


def test_own_slope_levels_tests_the_segments_with_events_against_the_pooled_rest():
    """Counted by hand: every segment with ≥ 20 events → the reference is the base (old rule); a thin
    segment is pooled into the base; a pool that is still thin takes the own-slope segment with the
    fewest events; nothing left → no test."""
    from cskit.models import own_slope_levels

    levels = ["SMB", "Mid", "Enterprise"]
    seg, y = _segment_rows({"SMB": (150, 800), "Mid": (70, 400), "Enterprise": (25, 140)})
    assert own_slope_levels(levels, seg, y) == ["Mid", "Enterprise"]
    seg, y = _segment_rows({"SMB": (150, 800), "Mid": (70, 400), "Enterprise": (10, 130)})
    assert own_slope_levels(levels, seg, y) == ["SMB"]  # Enterprise (10) too thin a base: Mid joins it (80)
    seg, y = _segment_rows({"SMB": (150, 800), "Mid": (12, 400), "Enterprise": (10, 130)})
    assert own_slope_levels(levels, seg, y) == ["SMB"]  # Mid + Enterprise pooled: 22 events
    seg, y = _segment_rows({"SMB": (150, 800), "Mid": (8, 400), "Enterprise": (10, 130)})
    assert own_slope_levels(levels, seg, y) == []  # the pool (18) is too thin and SMB alone is everything
    seg, y = _segment_rows({"SMB": (150, 160), "Mid": (70, 400), "Enterprise": (10, 130)})
    assert own_slope_levels(levels, seg, y) == ["Mid"]  # SMB has only 10 non-events: pooled with Enterprise


def test_a_curve_beside_segment_slopes_bends_each_segment_by_its_own_data():
    """x bends the log-odds in segment A only (0 below 0, slope 1 above); in B it does nothing. The
    selection keeps x's curve and its segment difference; the fitted shape in B must then be B's own
    (flat), not A's bend tilted by B's slope: a pooled curve with a slope for B gave B a convex effect
    (f(−1.5), f(1.5) − f(0) = +0.60, +0.40: more and fewer x both raise the risk; the QA client's wrong sign)."""
    from cskit.models import Design, select_terms

    rng = np.random.default_rng(7)
    n = 40000
    x = rng.standard_normal(n)
    seg = np.where(rng.random(n) < 0.6, "A", "B")
    eta = -2.5 + np.where(seg == "A", np.maximum(x, 0.0), 0.0) - 0.2 * (seg == "B")
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    X = np.column_stack([np.ones(n), x, (seg == "B").astype(float)])
    design = Design(X, ["intercept", "x", "segment=B"], ["x"], {}, {"segment": ["A", "B"]})
    fit = fit_binomial(y, X, link="logit", names=design.names)
    ext, ext_fit, table = select_terms(y, design, fit, ["x"], seg, 0.05)
    assert table["kept"].all() and {t.kind for t in ext.terms} == {"curve", "segment"}
    grid = np.array([-1.5, 0.0, 1.5])
    f = {lv: ext.contribution(ext_fit.coef, "x", grid, np.full(3, lv)) for lv in ("A", "B")}
    assert f["A"][2] - f["A"][1] == pytest.approx(1.5, abs=0.3) and abs(f["A"][0] - f["A"][1]) < 0.25
    assert np.abs(f["B"] - f["B"][1]).max() < 0.15, f["B"]


def test_knots_are_tried_only_where_each_interval_holds_enough_events():
    """By hand: knots 0 < 1 < 2 < 3; an interval with 9 events (or 9 non-events) rules the placement out."""
    from cskit.models import knots_supported

    z = np.repeat([0.5, 1.5, 2.5], 40)
    y = np.r_[np.ones(10), np.zeros(30), np.ones(12), np.zeros(28), np.ones(15), np.zeros(25)]
    assert knots_supported(z, y, (0.0, 1.0, 2.0, 3.0))
    y[:1] = 0  # 9 events between the first two knots
    assert not knots_supported(z, y, (0.0, 1.0, 2.0, 3.0))
    y = np.r_[np.ones(31), np.zeros(9), np.ones(12), np.zeros(28), np.ones(15), np.zeros(25)]
    assert not knots_supported(z, y, (0.0, 1.0, 2.0, 3.0))  # 9 non-events
    assert knots_supported(z, y, (0.0, 1.0, 2.0, 3.0), min_events=9)


def test_placements_are_checked_in_one_pass_as_with_a_mask_per_interval():
    """supported_placements (one search over all the placements' knots, counts per interval) against the
    rule written out with a mask per interval, on placements sharing knots, ties at the knots and values
    outside the outer knots."""
    from cskit.models import supported_placements

    rng = np.random.default_rng(3)
    z = np.round(rng.standard_normal(3000), 1)
    y = (rng.random(3000) < 0.2).astype(float)
    placements = [(-1.0, 0.0, 1.0), (-1.0, -0.5, 0.0, 1.5), (0.0, 0.5, 1.0, 1.2), (-2.0, 2.0, 2.5)]

    def by_masks(knots, min_events):
        for lo, hi in zip(knots[:-1], knots[1:]):
            m = (z >= lo) & (z < hi)
            if min(y[m].sum(), m.sum() - y[m].sum()) < min_events:
                return False
        return True

    seen = set()
    for min_events in (5, 20, 60, 150):
        expected = [by_masks(k, min_events) for k in placements]
        assert supported_placements(z, y, placements, min_events) == expected
        seen.update(expected)
    assert seen == {True, False}  # the thresholds cover both answers


def _curve_fit(eta_of_z, seed: int):
    from cskit.models import Design, Term, curve_knots, with_terms

    rng = np.random.default_rng(seed)
    z = rng.standard_normal(40_000)
    y = (rng.random(len(z)) < 1 / (1 + np.exp(-eta_of_z(z)))).astype(float)
    X = np.column_stack([np.ones(len(z)), z])
    design = Design(X, ["intercept", "x"], ["x"], {"x": Transform("identity", 0.0, 1.0)}, {})
    knots = curve_knots(z)
    ext = with_terms(design, [Term("x", "curve", j, knots=knots) for j in range(len(knots) - 2)], None)
    return ext, fit_binomial(y, ext.X, link="logit", names=ext.names)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_curves_direction_is_supported_only_where_its_average_slope_is(seed):
    """slope_p: a symmetric U (risk rises on both sides, average slope 0) has an overwhelming joint test but
    no direction; a threshold (risk falls to z = 0, flat above) has both, with the sign of its average slope."""
    from cskit.models import joint_p, slope_p, slope_weights

    u, fit = _curve_fit(lambda z: -3 + 0.5 * z * z, seed)
    assert joint_p(u, fit.coef, fit.cov, "x") < 1e-20
    assert slope_p(u, fit.coef, fit.cov, "x") > 0.05
    t, fit = _curve_fit(lambda z: -3 + 0.8 * np.maximum(0.0, -z), seed)
    assert joint_p(t, fit.coef, fit.cov, "x") < 1e-20 and slope_p(t, fit.coef, fit.cov, "x") < 1e-10
    assert slope_weights(t, "x", t.X[:, 1]) @ fit.coef < 0


def test_blocked_cross_products_equal_the_direct_ones():
    """weighted_gram / weighted_cross sum over blocks of rows (issue 14): the same X'WX, X'u and X'WZ as
    the direct products, on a size that spans several blocks and ends in a partial one."""
    from cskit.models import BLOCK_ROWS, weighted_cross, weighted_gram

    rng = np.random.default_rng(3)
    n = 2 * BLOCK_ROWS + 123
    X, Z = rng.normal(size=(n, 6)), rng.normal(size=(n, 3))
    w, u = rng.uniform(0.01, 2.0, n), rng.normal(size=n)
    G, g = weighted_gram(X, w, u)
    assert G == pytest.approx((X.T * w) @ X, rel=1e-12)
    assert np.array_equal(G, G.T)
    assert g == pytest.approx(X.T @ u, rel=1e-12)
    A, diag = weighted_cross(X, w, Z, diagonal=True)
    assert A == pytest.approx((X.T * w) @ Z, rel=1e-12)
    assert diag == pytest.approx(np.einsum("ij,i,ij->j", Z, w, Z), rel=1e-12)


def test_fit_from_a_start_reaches_the_closed_form():
    x, y, cold = _two_by_two("cloglog")
    X = np.column_stack([np.ones_like(x), x])
    b0 = np.log(-np.log(1 - 0.1))
    b1 = np.log(-np.log(1 - 0.05)) - b0
    for start in ([b0, b1], [-1.0, 1.0]):
        fit = fit_binomial(y, X, link="cloglog", start=np.array(start))
        assert fit.converged and fit.coef == pytest.approx([b0, b1], abs=1e-8)
    assert fit_binomial(y, X, link="cloglog", start=np.array([b0, b1])).iterations <= cold.iterations


def test_score_tests_of_many_blocks_in_one_pass_equal_each_blocks_own():
    """select_terms tests every pending block in one pass over the rows (score_test_blocks, by blocks of
    SCORE_ROWS rows); each statistic equals score_test_block on the block's full columns."""
    from cskit.models import (
        SCORE_ROWS,
        Term,
        curve_knots,
        score_null,
        score_test_block,
        score_test_blocks,
        term_columns,
    )

    rng = np.random.default_rng(5)
    n = SCORE_ROWS + 1000
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    seg = rng.choice(["A", "B", "C"], n)
    y = (rng.random(n) < 1 / (1 + np.exp(2 - 0.5 * x1 - 0.3 * x2**2))).astype(float)
    X = np.column_stack([np.ones(n), x1, x2, seg == "B", seg == "C"])
    fit = fit_binomial(y, X, link="logit")
    null = score_null(y, X, fit.coef, "logit")
    blocks = [
        ([Term("x1", "curve", j, knots=curve_knots(x1)) for j in range(3)], x1),
        ([Term("x2", "curve", j, knots=curve_knots(x2)) for j in range(3)], x2),
        ([Term("x2", "segment", level="B"), Term("x2", "segment", level="C")], x2),
    ]
    stats = score_test_blocks(null, blocks, seg)
    for (terms, z), stat in zip(blocks, stats):
        assert stat == pytest.approx(score_test_block(null, term_columns(terms, z, seg))[0], rel=1e-9)
    assert stats[1] > 20 > stats[0]  # the planted curve in x2, none in x1


def _collinear_panel(n: int, copy_noise: float | None, seed: int = 7) -> pd.DataFrame:
    """Accounts × 10 months (``n`` rows, a multiple of 10) with three KPIs; with ``copy_noise``, "a_copy"
    is 2a + noise of that SD."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    panel = pd.DataFrame({
        "account_id": np.repeat(np.arange(n // 10), 10).astype(str),
        "tenure": np.tile(np.arange(10), n // 10),
        "segment": rng.choice(["SMB", "Mid", "Ent"], n, p=[0.6, 0.3, 0.1]),
        "contract_type": "monthly",
        "contract_months": np.tile(np.arange(10), n // 10).astype(float),
        "a": a,
        "b": rng.normal(size=n),
        "a_copy": 2 * a + rng.normal(scale=copy_noise or 1.0, size=n) if copy_noise else rng.normal(size=n),
    })
    return panel


@pytest.mark.parametrize("copy_noise", [0.05, None])
def test_a_lazy_keep_order_is_asked_for_only_when_a_pruning_depends_on_it(copy_noise):
    """design_matrix with a callable priority (cskit.fits): the same design as with the order itself, and
    the order made only where some KPI would be dropped in some order (a planted pair at r ≈ 0.999: the
    order decides which one stays; three independent KPIs: no order drops any, the order is not made)."""
    from cskit.models import BLOCK_ROWS

    n = 2 * BLOCK_ROWS + 130 - (2 * BLOCK_ROWS) % 10  # several blocks of rows, the last one partial
    panel = _collinear_panel(n, copy_noise)
    kpis = ["contract_months", "a", "b", "a_copy"]
    rows = np.ones(n, dtype=bool)
    order = ["contract_months", "a_copy", "b", "a"]  # a_copy before a: a is the one dropped, if any
    asked = []
    lazy = design_matrix(panel, rows, kpis, 1, priority=lambda: asked.append(1) or list(order))
    eager = design_matrix(panel, rows, kpis, 1, priority=order)
    assert lazy.names == eager.names and np.array_equal(lazy.X, eager.X) and lazy.dropped == eager.dropped
    assert lazy.X.flags.c_contiguous and lazy.X.shape == (n, len(lazy.names))
    if copy_noise:
        assert asked == [1] and lazy.kpis == ["contract_months", "b", "a_copy"]
        assert "collinear with a_copy" in lazy.dropped["a"]
    else:
        assert asked == [] and lazy.kpis == kpis and not lazy.dropped


def test_a_pruned_design_is_the_kept_columns_of_the_full_one():
    """A KPI dropped by the prunings leaves the design as if it had never been given (the matrix shrunk
    in place, models._compact): the same bits as the design built on the kept KPIs without pruning."""
    from cskit.models import BLOCK_ROWS

    n = 3 * BLOCK_ROWS + 20 - (3 * BLOCK_ROWS) % 10
    panel = _collinear_panel(n, 0.05, seed=11)
    rows = np.ones(n, dtype=bool)
    full = design_matrix(panel, rows, ["contract_months", "a", "b", "a_copy"], 1)
    assert full.kpis == ["contract_months", "a", "b"]
    ref = design_matrix(panel, rows, full.kpis, 1, transforms=full.transforms, prune=False)
    assert full.names == ref.names and np.array_equal(full.X, ref.X)


def test_appended_terms_are_each_terms_own_columns_bit_for_bit():
    """with_terms fills the design and its new columns by blocks of rows: each appended column equals the
    term's values on the KPI's whole column (Term.values), for curves, segment slopes and a KPI's terms
    that are not adjacent, on a size that ends in a partial block."""
    from dataclasses import replace as dc_replace

    from cskit.models import BLOCK_ROWS, Term, curve_knots, with_terms

    n = 2 * BLOCK_ROWS + 80 - (2 * BLOCK_ROWS) % 10
    panel = _collinear_panel(n, None, seed=3)
    rows = np.ones(n, dtype=bool)
    d = design_matrix(panel, rows, ["contract_months", "a", "b"], 1, adjust=("segment",))
    seg = panel["segment"].to_numpy()
    za, zb = d.X[:, d.names.index("a")].copy(), d.X[:, d.names.index("b")].copy()
    ka, kb = curve_knots(za), curve_knots(zb)
    terms = [Term("a", "curve", 0, knots=ka), Term("b", "segment", level="Mid"), Term("a", "curve", 1, knots=ka),
             Term("a", "segment", level="SMB"), Term("b", "curve", 0, knots=kb),
             Term("a", "curve", 0, level="SMB", knots=ka)]
    ext = with_terms(dc_replace(d), terms, seg)
    assert np.array_equal(ext.X[:, : d.X.shape[1]], d.X)
    for j, t in enumerate(terms, start=d.X.shape[1]):
        z = za if t.kpi == "a" else zb
        assert ext.names[j] == t.name and np.array_equal(ext.X[:, j], t.values(z, seg)), t.name


@pytest.mark.parametrize("link", ["cloglog", "logit"])
def test_means_weights_and_loglik_are_the_closed_forms_bit_for_bit(link):
    """mean_and_slope, the IRLS weights and the log-likelihood are written into few arrays (issue 14);
    they stay the textbook expressions to the last bit, at the clips too, and the cluster-robust
    covariance read off the fit's information equals the one from the weights recomputed."""
    from cskit.models import _loglik_at, _working, cluster_cov, mean_and_slope, weighted_gram

    rng = np.random.default_rng(9)
    eta = np.concatenate([rng.normal(-3, 2.5, 5000), [-60.0, -40.0, 0.0, 3.5, 40.0, 60.0]])
    mu, d = mean_and_slope(eta, link)
    if link == "cloglog":
        e = np.exp(np.clip(eta, -40, 3.5))
        ref_mu, ref_d = -np.expm1(-e), np.exp(np.clip(eta, -40, 3.5) - e)
    else:
        ref_mu = 1.0 / (1.0 + np.exp(-np.clip(eta, -40, 40)))
        ref_d = ref_mu * (1 - ref_mu)
    assert np.array_equal(mu, np.clip(ref_mu, 1e-12, 1 - 1e-12))
    assert np.array_equal(d, np.maximum(ref_d, 1e-300))
    y = (rng.random(len(mu)) < mu).astype(float)
    v = mu * (1 - mu)
    w, u = _working(y, mu, d)
    assert np.array_equal(w, d * d / v) and np.array_equal(u, (y - mu) * d / v)
    assert _loglik_at(y, mu) == float(np.sum(y * np.log(mu) + (1 - y) * np.log1p(-mu)))
    X = np.column_stack([np.ones(len(y)), rng.normal(size=len(y)), rng.random(len(y)) < 0.3])
    groups = np.repeat(np.arange(len(y) // 6 + 1), 6)[: len(y)]
    fit = fit_binomial(y, X, link=link)
    m, dd = mean_and_slope(X @ fit.coef, link)
    vv = m * (1 - m)
    s = np.zeros((groups.max() + 1, X.shape[1]))
    np.add.at(s, groups, ((y - m) * dd / vv)[:, None] * X)
    bread = np.linalg.inv(weighted_gram(X, dd * dd / vv))
    g = groups.max() + 1
    assert cluster_cov(fit, X, y, groups) == pytest.approx(bread @ s.T @ s @ bread * g / (g - 1), rel=1e-10)


def test_a_kpi_that_departs_from_its_usual_value_on_few_accounts_is_left_out():
    """A 0/1 flag that is 0 on 3 accounts of 200 (30 of 2000 rows), or a count that is nonzero on 9 accounts
    only: too few accounts to estimate an effect (with 3 accounts a renewal GEE gave OR 0.11 at p < 1e-6
    on a flag with no effect in 2 of 8 simulated clients); a flag off on 10 accounts stays."""
    rng = np.random.default_rng(1)
    n, acc = 2000, np.repeat(np.arange(200), 10)
    panel = pd.DataFrame({"account_id": acc.astype(str), "tenure": np.tile(np.arange(10), 200),
                          "segment": "SMB", "contract_type": "monthly",
                          "contract_months": np.tile(np.arange(10), 200).astype(float),
                          "flag3": np.where(acc < 3, 0.0, 1.0), "flag10": np.where(acc < 10, 0.0, 1.0),
                          "count9": np.where((acc < 9) & (rng.random(n) < 0.5), rng.integers(1, 5, n), 0).astype(float),
                          "b": rng.normal(size=n)})
    kpis = ["contract_months", "flag3", "flag10", "count9", "b"]
    t = kpi_transforms(panel, kpis)
    assert (t["flag3"].rare, t["count9"].rare, t["flag10"].rare, t["b"].rare) == (3, 9, 0, 0)
    d = design_matrix(panel, np.ones(n, bool), kpis, lag=1)
    assert d.kpis == ["contract_months", "flag10", "b"]
    assert str(d.dropped["flag3"]) == "departs from its usual value (1) on only 3 account(s): too few to estimate"
    assert "on only 9 account(s)" in str(d.dropped["count9"])
