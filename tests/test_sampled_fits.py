"""Large clients' outcome models fitted on a case-control sample of their rows (``cskit.fits.model_rows``,
``cskit.sampling``) in the improvement potential and the health score: the rows fitted are those
``case_control`` draws, and the results agree with the full-data run and recover the simulator's truth
as it does. Sampling engages above ``sampling.SAMPLE_ABOVE`` model rows; the tests lower it."""
from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import stats

from cskit import sampling
from cskit.health import design_health_score
from cskit.loading import client_from_frames
from cskit.panel import build_panel, kpi_columns, outcome_rows
from cskit.params import Params
from cskit.potential import COLUMNS, improvement_potential
from cskit.sampling import case_control
from cskit.simulate import BETA_SD, simulate_client

DRIVERS = ["login_days", "csat", "support_inquiries", "onboarding_completed"]  # the planted churn drivers
DRIVEN = {"churn": ["d_churn", "d_ltv"], "expansion": ["d_expansion"], "downgrade": ["d_downgrade"],
          "referral": ["d_new"]}


def _client(n: int, seed: int, mc_paths: int):
    sim = simulate_client(n, 24, seed=seed, mc_paths=mc_paths)
    params = Params(as_of=sim.as_of, seed=seed, bootstrap=200 if mc_paths else 0)
    data = client_from_frames(sim.tables, params)
    return sim, data, build_panel(data), params


def _stages(data, panel, params, above: int | None):
    """Potential and health score as the pipeline runs them; ``above`` lowers the sampling threshold."""
    with pytest.MonkeyPatch.context() as mp:
        if above is not None:
            mp.setattr(sampling, "SAMPLE_ABOVE", above)
        pot = improvement_potential(panel, data, params, kpi_columns(data))
        health = design_health_score(panel, data, params, kpi_columns(data), ltv=pot.accounts)
    return pot, health


def _codes(notices) -> list[str]:
    return [getattr(n, "code", "") for n in notices]


def _check_fitted_rows(panel, params, pot, health, above: int) -> None:
    lag = params.kpi_lag_months
    for outcome, model in pot.models.items():
        rows, y = outcome_rows(panel, outcome, lag)
        _, _, drawn = case_control(panel, rows, y, seed=params.seed, above=above)
        assert drawn.sampled and drawn.kept < 0.6 * len(y)
        assert model.sample == drawn and model.fit.n == drawn.kept  # fitted on the sample ...
        assert (model.rows, model.events) == (len(y), int(y.sum()))  # ... counted on all the rows
        row = pot.outcomes.set_index("outcome").loc[outcome]
        assert (row["rows"], row["events"], row["fitted_rows"]) == (len(y), int(y.sum()), drawn.kept)
        note = pot.notes[f"model_rows_sampled:{outcome}"]
        assert note.code == "model_rows_sampled" and note.values["fitted_rows"] == drawn.kept
    rows, y = outcome_rows(panel, "churn", lag)
    _, _, drawn = case_control(panel, rows, y, seed=params.seed, above=above)
    assert health.model.sample == drawn and health.model.fit.n == drawn.kept
    assert health.score_basis["churn_events"] == int(y.sum())
    assert health.score_basis["model_rows"] == drawn.record()
    assert "model_rows_sampled" in _codes(health.warnings)


def test_the_models_are_fitted_on_the_rows_case_control_draws():
    """1,000 accounts (about 10,000 churn-model rows) with the threshold at 3,000: every model of the
    potential and the score is fitted on exactly the rows ``case_control`` keeps with the run's seed,
    the counts shown stay those of all the rows, and a coded note says so; at the real threshold
    nothing is sampled and nothing is said."""
    sim, data, panel, params = _client(1000, 21, 0)
    pot, health = _stages(data, panel, params, 3000)
    _check_fitted_rows(panel, params, pot, health, 3000)
    pot0, health0 = _stages(data, panel, params, None)
    assert all(not m.sample.sampled and m.fit.n == m.rows for m in pot0.models.values())
    assert not any(k.startswith("model_rows_sampled") for k in pot0.notes)
    assert "model_rows" not in health0.score_basis and "model_rows_sampled" not in _codes(health0.warnings)


@functools.lru_cache(maxsize=1)
def _runs():
    """3,000 accounts × 24 months (about 30,000 churn rows, 600 churns; 43,000 growth rows) with the
    threshold at 10,000: about a third of the non-event rows are kept (at 100,000 accounts the real
    threshold keeps a quarter), so about 14 non-events per churn."""
    sim, data, panel, params = _client(3000, 8, 200)
    return sim, panel, params, _stages(data, panel, params, None), _stages(data, panel, params, 10_000)


@pytest.mark.slow
def test_sampled_fits_use_the_drawn_rows_on_a_larger_client():
    _, panel, params, _, (pot, health) = _runs()
    _check_fitted_rows(panel, params, pot, health, 10_000)


@pytest.mark.slow
def test_potential_agrees_with_the_full_run_within_the_intervals():
    """Every KPI × column: the sampled estimate lies in the full run's 95% interval and the full run's
    in the sampled one's (measured: at most 0.8 SE apart); the sampled intervals are wider by the
    rows left out, not more (median width ratio per column measured 1.01–1.14)."""
    _, _, _, (full, _), (samp, _) = _runs()
    f, s = full.table.set_index("kpi"), samp.table.set_index("kpi")
    for c in COLUMNS:
        ok = f[c].notna()
        assert ok.sum() >= 20 and s.loc[ok, c].notna().all(), c
        inside = (s[c] >= f[f"{c}_lo"]) & (s[c] <= f[f"{c}_hi"]) & (f[c] >= s[f"{c}_lo"]) & (f[c] <= s[f"{c}_hi"])
        assert inside[ok].all(), (c, list(f.index[ok & ~inside]))
        ratio = ((s[f"{c}_hi"] - s[f"{c}_lo"]) / (f[f"{c}_hi"] - f[f"{c}_lo"]))[ok]
        assert 0.97 <= ratio.median() <= 1.25, (c, ratio.median())


@pytest.mark.slow
def test_potential_covers_the_planted_truth_as_the_full_run_does():
    """The simulator's true value of +10% of each KPI (``Truth.potential``): the sampled run's intervals
    cover it in as many cells as the full run's (one fewer at most), with the right sign on every
    planted driver's cell."""
    sim, _, params, (full, _), (samp, _) = _runs()
    truth = sim.truth.potential(params.improvement_pct, params.horizon_months, params.ltv_months).set_index("kpi")
    cells = [(k, c) for outcome, betas in BETA_SD.items() for k in betas for c in DRIVEN[outcome]]
    covered = {}
    for name, pot in (("full", full), ("sampled", samp)):
        t = pot.table.set_index("kpi")
        covered[name] = sum(t.at[k, f"{c}_lo"] <= truth.at[k, c] <= t.at[k, f"{c}_hi"] for k, c in cells)
        assert all(np.sign(t.at[k, c]) == np.sign(truth.at[k, c]) for k, c in cells), name
        every = [(k, c) for c in COLUMNS for k in t.index if np.isfinite(t.at[k, c])]
        covered[name + "_all"] = sum(t.at[k, f"{c}_lo"] <= truth.at[k, c] <= t.at[k, f"{c}_hi"] for k, c in every)
    assert covered["sampled"] >= covered["full"] - 1, covered
    assert covered["sampled_all"] >= covered["full_all"] - 2, covered
    assert covered["sampled"] >= 0.8 * len(cells), covered


@pytest.mark.slow
def test_health_score_agrees_with_the_full_run_and_the_truth():
    """The planted churn drivers keep their direction and about their points (within 4 of 100); each
    account's churn probability ranks as in the full fit (Spearman > 0.98) and the mean is within 3% of
    it, as close to the simulator's true mean as the full fit's (0.005 more at most); the out-of-time
    AUC within 0.01."""
    sim, _, _, (_, full), (_, samp) = _runs()
    wf, ws = full.weights.set_index("kpi"), samp.weights.set_index("kpi")
    assert list(ws.loc[DRIVERS, "direction"]) == list(wf.loc[DRIVERS, "direction"]) == ["+", "+", "-", "+"]
    assert (ws.loc[DRIVERS, "points"] - wf.loc[DRIVERS, "points"]).abs().max() <= 4
    assert ws.loc[DRIVERS, "points"].sum() >= 55
    pf = full.scores.set_index("account_id")["churn_prob"]
    ps = samp.scores.set_index("account_id")["churn_prob"].reindex(pf.index)
    assert stats.spearmanr(pf, ps).statistic > 0.98
    assert ps.mean() == pytest.approx(pf.mean(), rel=0.03)
    true = sim.truth.future.set_index("account_id")["churn_prob"].reindex(pf.index)
    assert abs(ps.mean() - true.mean()) <= abs(pf.mean() - true.mean()) + 0.005, (ps.mean(), pf.mean(), true.mean())
    assert samp.validation["score"]["auc"] == pytest.approx(full.validation["score"]["auc"], abs=0.01)
    assert samp.validation["model_rows"]["fitted_rows"] == samp.cut_model.fit.n
    assert sorted(full.scores["account_id"]) == sorted(samp.scores["account_id"])  # every account scored
