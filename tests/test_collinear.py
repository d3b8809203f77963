"""One keep rule for a collinear pair in every stage (docs/methods.md, "Collinear KPIs: which one is kept").

Planted truth: the simulator's ``collinear_proxy`` option makes session_seconds (no effect of its own)
track the churn driver login_days at r ≈ 0.93 on the model rows and lists it first in the kpis table.
Catalogue order would keep the proxy; the rule keeps the driver, in the triggers, the potential, the
health score and the playbook alike.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cskit.fits import churn_rows
from cskit.models import association_order, design_matrix, kpi_transforms
from cskit.panel import build_panel, kpi_columns, outcome_rows
from cskit.pipeline import analyse, load
from cskit.potential import confirm_by_triggers, flagged_in_models
from cskit.simulate import Options, simulate_client

DRIVER, PROXY = "login_days", "session_seconds"


def planted(folder, seed: int, n: int = 2000):
    sim = simulate_client(n, 24, seed=seed, mc_paths=0, options=Options(collinear_proxy=True))
    sim.write(folder)
    return sim


def run(folder, sim):
    return analyse({"client": "c", "data": str(folder), "as_of": sim.as_of, "bootstrap": 50}, parallel=False)


def assert_every_stage_keeps_the_driver(dx, sim):
    d = dx.triggers.details
    pooled = d[d["segment"] == ""].set_index(["kpi", "outcome"])
    # the pair is collinear on the churn rows and the triggers report the proxy under the driver
    assert pooled.at[(PROXY, "churn"), "note"].startswith(f"collinear with {DRIVER}")
    assert pooled.at[(DRIVER, "churn"), "trigger"] == "RT" and pooled.at[(DRIVER, "churn"), "effect"] < 1
    churn = dx.potential.models["churn"].design
    assert DRIVER in churn.kpis and PROXY not in churn.kpis
    assert str(churn.dropped[PROXY]).startswith(f"collinear with {DRIVER}")
    # the growth design keeps what the triggers' expansion model keeps
    growth = dx.potential.models["expansion"].design
    exp_kept = {k for k in (DRIVER, PROXY) if not str(pooled.at[(k, "expansion"), "note"]).startswith("collinear")}
    assert {k for k in (DRIVER, PROXY) if k in growth.kpis} == exp_kept
    table = dx.potential.table.set_index("kpi")
    truth = sim.truth.potential().set_index("kpi")
    # the driver's churn value is its own (0.5–2× the planted), none credited to the proxy
    assert 0.5 < table.at[DRIVER, "d_churn"] / truth.at[DRIVER, "d_churn"] < 2.0
    assert not bool(table.at[PROXY, "credible"]) and not np.isfinite(table.at[PROXY, "d_churn"])
    # the score and the playbook: points on the driver, none on the proxy
    weights = set(dx.health.weights["kpi"])
    assert DRIVER in weights and PROXY not in weights
    assert str(dx.health.model.design.dropped[PROXY]).startswith(f"collinear with {DRIVER}")
    pb = dx.health.playbook
    named = set(pb["kpi_1"].dropna()) | set(pb["kpi_2"].dropna())
    assert PROXY not in named
    # the potential's own churn model is the triggers' churn model: it flags the same KPIs
    own = {k for k, o in flagged_in_models(dx.potential.models, dx.params.alpha).items() if "churn" in o}
    assert own == set(d[(d["outcome"] == "churn") & (d["segment"] == "") & (d["trigger"] == "RT")]["kpi"])


def test_every_stage_keeps_the_driver_of_a_collinear_pair_listed_after_its_proxy(tmp_path):
    sim = planted(tmp_path / "data", seed=101)
    listed = kpi_columns(load({"client": "c", "data": str(tmp_path / "data"), "as_of": sim.as_of}))
    assert listed.index(PROXY) < listed.index(DRIVER)
    assert_every_stage_keeps_the_driver(run(tmp_path / "data", sim), sim)


def test_the_kept_kpi_does_not_depend_on_the_listing_order(tmp_path):
    sim = planted(tmp_path / "data", seed=102, n=1200)
    data = load({"client": "c", "data": str(tmp_path / "data"), "as_of": sim.as_of})
    panel = build_panel(data)
    kpis = kpi_columns(data)
    swapped = list(kpis)
    i, j = swapped.index(PROXY), swapped.index(DRIVER)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    for order in (kpis, swapped):
        design = churn_rows(panel, order, 1).design
        assert DRIVER in design.kpis and PROXY not in design.kpis
        # the columns stay in the given order
        assert design.kpis == [k for k in order if k in design.kpis]
    # without the rule, the prunings keep the first listed (the proxy)
    rows, y = outcome_rows(panel, "churn", 1)
    tf = kpi_transforms(panel, kpis)
    plain = design_matrix(panel, rows, kpis, 1, tf)
    assert PROXY in plain.kpis and DRIVER not in plain.kpis
    order = association_order(panel, rows, y, kpis, 1, tf, ("segment", "contract_type"), "cloglog")
    assert order[0] == "contract_months" and order.index(DRIVER) < order.index(PROXY)
    assert sorted(order) == sorted(kpis)


def test_credible_only_where_the_triggers_flag_the_same_effect():
    table = pd.DataFrame({"kpi": ["a", "b", "c", "d", "e"],
                          "models_flagged": ["churn", "churn;expansion", "downgrade", "expansion", ""],
                          "credible": [True, True, True, True, False]})
    drivers = pd.DataFrame({"kpi": ["a", "b", "b", "c", "d", "e"],
                            "outcome": ["renewal", "churn", "expansion", "churn", "churn", "churn"],
                            "segment": ["", "", "SMB", "", "", ""],
                            "trigger": ["CRTT", "", "UCT", "", "RT", "RT"]})
    out = confirm_by_triggers(table, drivers)
    # a: churn confirmed by renewal; b: only its expansion flag (a segment row) stands; c: downgrade is
    # tested by no trigger; d: expansion not flagged by the triggers (their churn flag is another effect)
    assert out["models_flagged"].tolist() == ["churn", "expansion", "downgrade", "", ""]
    assert out["credible"].tolist() == [True, True, True, False, False]
    assert confirm_by_triggers(table, None) is table


@pytest.mark.slow
@pytest.mark.parametrize("seed", [103, 104, 105])
def test_every_stage_keeps_the_driver_over_seeds(tmp_path, seed):
    sim = planted(tmp_path / "data", seed=seed)
    assert_every_stage_keeps_the_driver(run(tmp_path / "data", sim), sim)
