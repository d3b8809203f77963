"""The whole diagnosis on thin data: a stage that cannot be estimated says so and the run completes;
only a client with no churn at all stops (DESIGN §2 "What bad input gets", §5 "Power")."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from cskit import narrative as N
from cskit.errors import CskitError
from cskit.health import MIN_SCORE_EVENTS, SCORE_COLUMNS, WEIGHT_COLUMNS, design_health_score
from cskit.history import HISTORY_HEAD, MOVER_COLUMNS, PLAYBOOK_FILE_COLUMNS
from cskit.pipeline import analyse

RESULT_FILES = [
    "quality.json", "kpi_summary.json", "mrr_bridge.csv", "cohorts.csv", "survival.json", "drivers.csv",
    "potential.csv", "potential.xlsx", "health_weights.csv", "health_scores.csv", "health_validation.json",
    "playbook.csv", "health_history.csv", "health_movers.csv", "health_drops.json",
]


def tiny_client(folder: Path, seed: int = 0) -> Path:
    from cskit.simulate import simulate_client

    simulate_client(n_accounts=40, n_months=12, seed=seed, mc_paths=0).write(folder)
    return folder


def zero_churn_client(folder: Path) -> Path:
    """The tiny client with every churn_date blanked and each churned account's revenue continued at its
    last MRR to the last month: a company that (by its data) never lost a customer."""
    from cskit.simulate import simulate_client, write_client

    sim = simulate_client(n_accounts=40, n_months=12, seed=0, mc_paths=0)
    acc, rev = sim.tables["accounts"].copy(), sim.tables["revenue"].copy()
    churned = acc.loc[acc["churn_date"].notna(), "account_id"]
    last = pd.Period(rev["month"].max(), "M")
    tails = []
    for a in churned:
        final = rev[rev["account_id"] == a].sort_values("month").iloc[-1]
        for m in pd.period_range(pd.Period(final["month"], "M") + 1, last, freq="M"):
            tails.append(final.to_dict() | {"month": str(m)})
    sim.tables["revenue"] = pd.concat([rev, pd.DataFrame(tails)], ignore_index=True)
    acc["churn_date"] = None
    sim.tables["accounts"] = acc
    write_client(sim, folder)
    return folder


def params(data: Path) -> dict:
    return {"client": "tiny", "data": str(data), "bootstrap": 20, "seed": 1}


def churn_events_by_hand(data: Path, lag: int = 1) -> int:
    """Churned accounts whose churn month is at least ``lag`` months after the start month (the churn
    model needs the KPIs of month t − lag of the same account), counted from the raw CSV."""
    acc = pd.read_csv(data / "accounts.csv", dtype=str)
    acc = acc[acc["churn_date"].notna()]
    start = pd.to_datetime(acc["contract_start"]).dt.to_period("M")
    end = pd.to_datetime(acc["churn_date"]).dt.to_period("M")
    tenure = (end.dt.year - start.dt.year) * 12 + end.dt.month - start.dt.month
    return int((tenure >= lag).sum())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    data = tiny_client(root / "data")
    dx = analyse(params(data))
    return data, dx, dx.write(root / "out1")


def test_tiny_client_runs_with_health_not_estimable(tiny):
    data, dx, _ = tiny
    events = churn_events_by_hand(data)
    assert 0 < events < MIN_SCORE_EVENTS
    h = dx.health
    assert h.status == "not_estimable" and not h.estimable
    assert h.reason_code == "too_few_events" and h.churn_events == events
    assert f"only {events} churned accounts" in h.reason and "'accounts'" in h.reason
    assert h.scores.empty and h.weights.empty and h.playbook.empty


def test_tiny_client_other_stages_still_report(tiny):
    data, dx, _ = tiny
    rev = pd.read_csv(data / "revenue.csv", dtype={"month": str})
    as_of = pd.Timestamp(dx.data.as_of).strftime("%Y-%m")
    assert dx.metrics.summary["mrr"]["value"] == pytest.approx(rev.loc[rev["month"] == as_of, "mrr"].sum())
    assert set(dx.triggers.outcomes["status"]) == {"not_estimable"}
    assert len(dx.potential.table) == len(dx.kpis)
    assert dx.potential.table["d_ltv"].isna().all() and dx.potential.table["mean"].notna().all()


def test_tiny_client_writes_every_file_with_status(tiny):
    _, dx, results = tiny
    for name in RESULT_FILES:
        assert (results / name).is_file(), name
    assert list(pd.read_csv(results / "health_weights.csv").columns) == WEIGHT_COLUMNS
    for name, columns in (("health_scores.csv", SCORE_COLUMNS), ("playbook.csv", PLAYBOOK_FILE_COLUMNS),
                          ("health_history.csv", HISTORY_HEAD), ("health_movers.csv", MOVER_COLUMNS)):
        table = pd.read_csv(results / name)
        assert list(table.columns) == columns and table.empty
    v = json.loads((results / "health_validation.json").read_text(encoding="utf-8"))
    assert v["status"] == "not_estimable" and v["reason_code"] == "too_few_events"
    assert v["churn_events"] == dx.health.churn_events and v["min_events"] == MIN_SCORE_EVENTS
    assert v["reason"] == dx.health.reason and v["touch_model"] == [] and v["cutpoints"] == {}
    assert len(pd.read_csv(results / "mrr_bridge.csv")) > 0


def test_tiny_client_results_are_byte_identical(tiny, tmp_path):
    data, _, first = tiny
    second = analyse(params(data)).write(tmp_path)

    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    assert digests(first) == digests(second)


def test_run_json_fingerprints_every_input_file_and_the_results_inside_the_data_folder(tiny, tmp_path):
    """run.json's inputs: each data file's SHA-256 by hand (hashed beside the result files); with the results
    folder inside the data folder, the result files written before run.json are inputs too, as written."""
    import shutil
    from dataclasses import replace

    data, dx, results = tiny

    def by_hand(folder: Path) -> dict[str, str]:
        return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    def inputs(folder: Path) -> dict[str, str]:
        run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        return {r["file"]: r["sha256"] for r in run["inputs"]}

    assert inputs(results) == by_hand(Path(data)) and len(inputs(results)) >= 4
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    inside = replace(dx, params=dx.params.model_copy(update={"data": str(copy)})).write(copy)
    expected = by_hand(copy)
    del expected["results/run.json"]  # (written after its record)
    assert inputs(inside) == expected and "results/health_scores.csv" in expected


def test_the_stages_run_with_the_loaded_objects_spared_by_the_collector_given_back_after(tiny, monkeypatch):
    """Frozen (gc.freeze) while the stages run, unfrozen when analyse returns; a caller's own frozen objects
    are left as they are."""
    import gc

    from cskit import metrics

    seen, made = [], metrics.compute_metrics

    def spy(*args, **kwargs):
        seen.append(gc.get_freeze_count())
        return made(*args, **kwargs)

    monkeypatch.setattr(metrics, "compute_metrics", spy)
    data = tiny[0]
    assert gc.get_freeze_count() == 0
    analyse(params(data), parallel=False)
    assert seen[-1] > 1000 and gc.get_freeze_count() == 0
    gc.freeze()
    try:
        own = gc.get_freeze_count()
        analyse(params(data), parallel=False)
        assert seen[-1] <= own and 0 < gc.get_freeze_count() <= own  # (neither frozen more nor given back)
    finally:
        gc.unfreeze()


def test_one_process_and_two_give_the_same_bytes(tiny, tmp_path):
    """The triggers stage in a forked child (cskit.parallel) or in the analysing process: same files."""
    from cskit.parallel import parallel_enabled

    data, _, _ = tiny
    two, one = {}, {}
    forked = analyse(params(data), timings=two, parallel=True).write(tmp_path / "two")
    single = analyse(params(data), timings=one, parallel=False).write(tmp_path / "one")
    assert ("drivers_wait" in two) == parallel_enabled(True) and "drivers_wait" not in one
    files = sorted(p.name for p in single.iterdir() if p.name != "run.json")
    assert files == sorted(p.name for p in forked.iterdir() if p.name != "run.json")
    assert all((single / f).read_bytes() == (forked / f).read_bytes() for f in files)


def test_two_processes_give_one_process_bytes_with_every_model_fitted_and_sampled(tmp_path, monkeypatch):
    """With two cores the triggers, the health score (its own churn design, not the potential's shared
    one, and its touch model added after) and the history run in a child beside the potential; every
    result file is the one-process run's, also when the models are fitted on case-control samples."""
    import json as _json

    from cskit import sampling
    from cskit.parallel import parallel_enabled
    from cskit.simulate import simulate_client

    if not parallel_enabled(True):
        pytest.skip("one usable core (or not Linux): no forked child to compare with")
    simulate_client(n_accounts=400, n_months=18, seed=3, mc_paths=0).write(tmp_path / "data")
    monkeypatch.setattr(sampling, "SAMPLE_ABOVE", 2_000)  # the child, a fork, inherits it
    run = {"client": "c", "data": str(tmp_path / "data"), "bootstrap": 40}
    two = analyse(params(tmp_path / "data") | run, parallel=True)
    assert two.health.estimable and two.health.touch["n"].sum() == len(two.health.features)
    forked = two.write(tmp_path / "two")
    single = analyse(params(tmp_path / "data") | run, parallel=False).write(tmp_path / "one")
    validation = _json.loads((single / "health_validation.json").read_text())
    assert validation["score_basis"]["model_rows"]["keep"] < 1  # the score's model was sampled
    assert validation["cutpoints"]["ltv_source"].startswith("potential stage")
    files = sorted(p.name for p in single.iterdir() if p.name != "run.json")
    assert files == sorted(p.name for p in forked.iterdir() if p.name != "run.json")
    assert [f for f in files if (single / f).read_bytes() != (forked / f).read_bytes()] == []


@pytest.fixture(scope="module")
def fitted_client(tmp_path_factory):
    """A client every stage fits (400 accounts) and its one-process result files."""
    from cskit.simulate import simulate_client

    folder = tmp_path_factory.mktemp("fitted")
    simulate_client(n_accounts=400, n_months=18, seed=5, mc_paths=0).write(folder / "data")
    run = params(folder / "data") | {"client": "c", "bootstrap": 40}
    return run, analyse(run, parallel=False).write(folder / "one")


def _dies_after_its_first_piece(panel, data, p, kpis, claims, *, post):
    """The child of test_balanced_split...: posts its first piece (the expansion group's models), then is
    killed as the out-of-memory killer would."""
    import os
    import signal

    from cskit import pipeline

    first = claims.take()  # the first shared piece: the expansion group's models
    assert pipeline.plan()[2][first] == ("drivers", ("expansion",), "model")
    pipeline._Pieces(panel, data, p, kpis, post=post).run(pipeline.plan()[2][first])
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("taker", ["parent", "child", "dies"])
def test_balanced_split_gives_one_process_bytes_whichever_process_takes_the_shared_pieces(
        taker, fitted_client, tmp_path, monkeypatch):
    """The pieces either process may take (cskit.pipeline.plan: the triggers' models, descriptive passes
    and lead-lag scores of each outcome group, the history) all taken by the parent, all by the child,
    or the child killed after its first piece, the expansion group's models (the parent then makes every
    piece it did not post): the result files of one process, byte for byte (the triggers' parts made in
    two processes and combined in the parent)."""
    from cskit import pipeline
    from cskit.parallel import parallel_enabled

    if not parallel_enabled(True):
        pytest.skip("one usable core (or not Linux): no forked child to compare with")
    run, single = fitted_client
    if taker == "dies":
        monkeypatch.setattr(pipeline, "_beside_potential", _dies_after_its_first_piece)
    else:
        monkeypatch.setattr(pipeline, "TAKER", taker)  # the child, a fork, inherits it
    timings: dict = {}
    dx = analyse(run, parallel=True, timings=timings)
    assert dx.health.estimable and (dx.triggers.outcomes["status"] == "fitted").all()
    parent = {k for k in timings if k.endswith("_parent")}
    assert parent == {"parent": {"drivers_parent", "history_parent"}, "child": set(),
                      "dies": {"drivers_parent", "health_parent", "history_parent"}}[taker]
    # the child's triggers' pieces: all of them, or the first (posted before it died), or none
    assert ("drivers" in timings) == (taker != "parent")
    forked = dx.write(tmp_path / "two")
    files = sorted(p.name for p in single.iterdir() if p.name != "run.json")
    assert files == sorted(p.name for p in forked.iterdir() if p.name != "run.json")
    assert [f for f in files if (single / f).read_bytes() != (forked / f).read_bytes()] == []


def test_design_health_score_returns_not_estimable(tiny):
    _, dx, _ = tiny
    h = design_health_score(dx.panel, dx.data, dx.params, dx.kpis)
    assert h.status == "not_estimable" and h.churn_events == dx.health.churn_events


def test_health_stays_ok_on_a_fitted_client_json(tmp_path):
    """A client with enough churn keeps status "fitted" (reason null) in health_validation.json."""
    from cskit.simulate import simulate_client

    simulate_client(n_accounts=120, n_months=12, seed=1, mc_paths=0).write(tmp_path / "data")
    dx = analyse(params(tmp_path / "data"))
    assert dx.health.estimable and len(dx.health.scores) > 0
    v = dx.health.validation_json()
    assert v["status"] == "fitted" and v["reason"] is None


def test_zero_churn_stops_naming_table_column_and_fix(tmp_path):
    data = zero_churn_client(tmp_path / "data")
    with pytest.raises(CskitError) as e:
        analyse(params(data))
    msg = str(e.value)
    assert msg.startswith("No churn at all")
    assert "'accounts'" in msg and "'churn_date'" in msg and "(0 have a churn_date)" in msg
    assert "Fix:" in msg and "columns:" in msg and "as_of" in msg


def test_zero_churn_with_revenue_that_stops_points_to_those_accounts(tmp_path):
    """churn_date left empty for every account while the churned accounts' revenue stops (a client that
    does not record churn dates): the message counts the accounts with no MRR at as_of (by hand from the
    simulated tables) and names one with its last paid month."""
    from cskit.simulate import simulate_client, write_client

    sim = simulate_client(n_accounts=40, n_months=12, seed=0, mc_paths=0)
    rev = sim.tables["revenue"]
    last = rev[rev["mrr"] > 0].groupby("account_id")["month"].max()
    stopped = last[last < rev["month"].max()].sort_index()
    assert len(stopped) > 0
    sim.tables["accounts"] = sim.tables["accounts"].assign(churn_date=None)
    write_client(sim, tmp_path / "data")
    with pytest.raises(CskitError) as e:
        analyse(params(tmp_path / "data"))
    msg = str(e.value)
    assert msg.startswith("No churn at all")
    assert (f"{len(stopped)} of them pay no MRR at as_of (e.g. '{stopped.index[0]}', last paid "
            f"{pd.Period(stopped.iloc[0], 'M')})") in msg


# ---------------------------------------------------------------- the report's words


def test_report_lists_what_could_not_be_estimated(tiny):
    _, dx, _ = tiny
    v = dx.health.validation_json()
    n = dx.health.churn_events
    for lang in ("ja", "en"):
        text = N.not_estimated(dx.triggers.outcomes, dx.potential.table, v, lang)
        assert text.count("\n- ") == 5  # three trigger outcomes, the potential, the health score
        assert f"{n:,}" in text and str(MIN_SCORE_EVENTS) in text
    assert "ヘルススコア" in N.not_estimated(dx.triggers.outcomes, dx.potential.table, v, "ja")
    en = N.health_not_estimable(v, "en")
    assert f"only {n} churned accounts" in en and f"at least {MIN_SCORE_EVENTS}" in en and "playbook" in en
    ja = N.health_not_estimable(v, "ja")
    assert f"{n}件しかありません" in ja and f"{MIN_SCORE_EVENTS}件以上必要" in ja
    assert N.estimated_drivers(dx.triggers.table, dx.triggers.outcomes).empty
    assert not N.potential_estimable(dx.potential.table)


def test_potential_text_says_not_estimable_instead_of_zero_intervals(tiny):
    _, dx, _ = tiny
    p = dx.potential
    en = N.potential(p.table, p.caveat, p.notes, 10, 12, 36, len(p.accounts), "JPY", "en")
    assert "No KPI's improvement potential could be estimated" in en
    assert "includes zero" not in en
    shown = [line for line in en.splitlines() if line.startswith("- ")]
    outcome_notes = [N.notice(v, "en") for k, v in p.notes.items() if k in N.OUTCOME_NOTES]
    assert shown and sorted(shown) == sorted(f"- {t}" for t in outcome_notes)


def test_nothing_listed_when_everything_was_estimated():
    outcomes = pd.DataFrame({"outcome": ["churn"], "events": [50], "status": ["fitted"], "reason": [""]})
    table = pd.DataFrame({"kpi": ["a"], "d_ltv": [1.0]})
    assert N.not_estimated(outcomes, table, {"status": "fitted", "reason": None}, "en") == ""


def test_cskit_load_is_the_function_on_every_call():
    """``cskit.load`` stays the loader after the loading module is imported (it used to be shadowed by
    the submodule ``cskit/load.py``: the second call raised "'module' object is not callable")."""
    import cskit
    import cskit.loading  # noqa: F401  (importing the module must not replace the function)

    demo = Path(__file__).resolve().parents[1] / "params" / "demo.yaml"
    first = cskit.load(demo)
    second = cskit.load(demo)
    assert callable(cskit.load) and cskit.load is cskit.pipeline.load
    accounts = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "demo" / "accounts.csv")
    assert len(first.accounts) == len(second.accounts) == len(accounts)
    assert first.accounts["account_id"].tolist() == second.accounts["account_id"].tolist()


def test_every_result_shows_a_one_line_repr_and_a_summary_table(tiny):
    data, dx, _ = tiny
    accounts = pd.read_csv(data / "accounts.csv")
    text = repr(dx)
    assert "\n" not in text and len(text) < 200
    assert f"accounts={dx.panel['account_id'].nunique()}" in text and "client='tiny'" in text
    assert dx.panel["account_id"].nunique() <= len(accounts)
    stages = dx.stages()
    assert {"metrics", "survival", "triggers", "potential", "health"} <= set(stages)
    for name, stage in stages.items():
        line = repr(stage)
        assert "\n" not in line and len(line) < 400, name
        assert line.startswith(type(stage).__name__ + "("), name
    assert repr(dx.health).startswith("Health(status='not_estimable'")
    assert f"accounts={len(dx.potential.accounts)}" in repr(dx.potential)
    md = dx._repr_markdown_()
    assert md.count("|---|---|") == 1 + len(stages)
    assert "\n" not in repr(dx.data) and f"accounts={len(dx.data.accounts)}" in repr(dx.data)


def test_the_parent_skips_the_history_until_the_childs_score_has_arrived():
    """pipeline._Pieces.waiting: the history (it needs the score) is skipped while the child's score has
    not arrived and was not made here; nothing is skipped once it has, or in the child itself."""
    from cskit import pipeline

    class Job:
        def __init__(self, arrived):
            self.asked, self.answer = [], arrived

        def arrived(self, name):
            self.asked.append(name)
            return self.answer

    _, own, shared = pipeline.plan()
    assert own == (pipeline.HEALTH,) and pipeline.HISTORY in shared and pipeline.HEALTH not in shared
    waiting, ready = Job(False), Job(True)
    assert pipeline._Pieces(None, None, None, [], waiting).waiting(shared) == {shared.index(pipeline.HISTORY)}
    assert waiting.asked == [pipeline.HEALTH]
    assert pipeline._Pieces(None, None, None, [], ready).waiting(shared) == set()
    made = pipeline._Pieces(None, None, None, [], Job(False))
    made.made[pipeline.HEALTH] = ("score", [], 0.0, "parent")
    assert made.waiting(shared) == set()
    assert pipeline._Pieces(None, None, None, [], post=print).waiting(shared) == set()  # the child


def _huge_pages_asked() -> bool:
    from numpy._core.multiarray import _set_madvise_hugepage

    now = _set_madvise_hugepage(True)
    _set_madvise_hugepage(now)
    return now


def test_the_stages_run_without_huge_pages_with_arrows_system_pool_and_the_settings_come_back(tiny, monkeypatch):
    import pyarrow as pa

    import cskit.loading
    from cskit.pipeline import memory_settings

    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    seen, pools = [], []
    load = cskit.loading.load_client
    monkeypatch.setattr(cskit.loading, "load_client", lambda p: (
        seen.append(_huge_pages_asked()), pools.append(pa.default_memory_pool().backend_name), load(p))[2])
    pool = pa.default_memory_pool().backend_name
    from numpy._core.multiarray import _set_madvise_hugepage

    data, _, _ = tiny
    original = _huge_pages_asked()
    try:
        for before in (True, False):
            _set_madvise_hugepage(before)
            analyse(params(data))
            assert seen[-1] is False and pools[-1] == "system"  # during the stages
            assert _huge_pages_asked() is before  # as it was, after
            assert pa.default_memory_pool().backend_name == pool
    finally:
        _set_madvise_hugepage(original)
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")  # the user's own choices are left alone
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", pool)
    with memory_settings():
        assert _huge_pages_asked() is True
        assert pa.default_memory_pool().backend_name == pool
