"""The account × month panel, checked row by row on a hand-made client."""
import numpy as np
import pandas as pd

from cskit.catalogue import build_catalogue
from cskit.client import ClientData
from cskit.panel import add_lags, build_panel, kpi_columns

M = pd.Timestamp


def _client(nps=True):
    accounts = pd.DataFrame(
        {
            "account_id": ["a", "b", "c", "r"],
            "contract_start": pd.to_datetime(["2024-01-10", "2024-01-01", "2024-02-15", "2024-03-05"]),
            "churn_date": pd.to_datetime([None, "2024-04-20", "2025-06-01", None]),
            "segment": ["SMB", "Mid", "SMB", "SMB"],
            "plan": ["Basic", "Pro", "Basic", "Basic"],
            "contract_type": ["monthly", "monthly", "annual", "monthly"],
            "referred_by": [None, None, None, "a"],
            "onboarding_completed": [1.0, 0.0, 1.0, 0.0],
        }
    )
    revenue = pd.DataFrame(
        {
            "account_id": ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["r"] * 2 + ["a"],
            "month": pd.to_datetime(
                ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"]
                + ["2024-01-01", "2024-02-01", "2024-03-01"]
                + ["2024-02-01", "2024-03-01", "2024-04-01"]
                + ["2024-03-01", "2024-04-01"]
                + ["2024-03-01"]
            ),
            "mrr": [100, 100, 150, 120, 120, 50, 50, 50, 80, 80, 80, 30, 30, 20.0],
            "product": ["main"] * 13 + ["option"],
        }
    )
    kpis = pd.DataFrame(
        {
            "account_id": ["a", "a", "a", "a", "a", "b"],
            "month": pd.to_datetime(
                ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01", "2024-02-01"]
            ),
            "login_days": [1.0, 2.0, 3.0, np.nan, 5.0, 7.0],
        }
    )
    nps_t = pd.DataFrame(
        {
            "account_id": ["a", "a", "b"],
            "date": pd.to_datetime(["2024-01-20", "2024-03-03", "2024-02-10"]),
            "score": [10, 6, 9],
            "role": ["admin", "end_user", "admin"],
        }
    )
    return ClientData(
        accounts=accounts,
        revenue=revenue,
        kpis=kpis,
        nps=nps_t if nps else None,
        events=None,
        as_of=M("2024-05-01"),
        catalogue=build_catalogue(),
        static_kpis=["onboarding_completed"],
    )


def test_rows_span_contract_to_churn_or_as_of():
    p = build_panel(_client())
    counts = p.groupby("account_id").size().to_dict()
    # a: Jan..May (5); b: Jan..Apr churn month (4); c: Feb..May, churn after as_of → active (4); r: Mar..May (3)
    assert counts == {"a": 5, "b": 4, "c": 4, "r": 3}
    b = p[p.account_id == "b"]
    assert b["churn"].tolist() == [0, 0, 0, 1]
    assert b["mrr"].tolist() == [50, 50, 50, 0]
    assert p[p.account_id == "c"]["churn"].sum() == 0
    assert (p.groupby("account_id")["tenure"].apply(lambda s: list(s) == list(range(len(s))))).all()


def test_accounts_in_any_order_and_index_and_one_starting_after_as_of_give_the_same_panel():
    """The accounts are read in id order, whatever their order and index; one starting after as_of has no row."""
    from dataclasses import replace

    base = _client()
    late = pd.DataFrame({"account_id": ["0"], "contract_start": [M("2024-07-01")], "churn_date": [pd.NaT],
                         "segment": ["SMB"], "plan": ["Pro"], "contract_type": ["monthly"], "referred_by": ["a"],
                         "onboarding_completed": [1.0]})
    shuffled = pd.concat([base.accounts.iloc[[2, 0, 3, 1]], late]).set_axis([7, 3, 9, 1, 5])
    for accounts in (shuffled, pd.concat([late, base.accounts]).set_axis([4, 3, 2, 1, 0])):
        pd.testing.assert_frame_equal(build_panel(replace(base, accounts=accounts)), build_panel(base),
                                      check_exact=True)


def test_revenue_movements_and_cross_sell():
    p = build_panel(_client()).set_index(["account_id", "month"])
    a = p.loc["a"]
    assert a["mrr"].tolist() == [100, 100, 170, 120, 120]  # March: 150 main + 20 option
    assert a["mrr_prev"].tolist() == [0, 100, 100, 170, 120]
    assert a["expansion"].tolist() == [0, 0, 1, 0, 0]
    assert a["expansion_mrr"].tolist() == [0, 0, 70, 0, 0]
    assert a["contraction"].tolist() == [0, 0, 0, 1, 0]
    assert a["contraction_mrr"].tolist() == [0, 0, 0, 50, 0]
    assert a["cross_sell"].tolist() == [0, 0, 1, 0, 0]


def test_at_risk_for_annual_only_at_anniversary():
    p = build_panel(_client())
    c = p[p.account_id == "c"]
    assert not c["at_risk"].any()  # tenure 0..3: no anniversary yet
    assert p[p.contract_type == "monthly"]["at_risk"].all()


def test_referrals_counted_at_referrer_in_referee_start_month():
    p = build_panel(_client()).set_index(["account_id", "month"])
    assert p["referrals"].sum() == 1
    assert p.loc[("a", M("2024-03-01")), "referrals"] == 1
    assert p.loc[("a", M("2024-03-01")), "referral_mrr"] == 30


def test_kpis_static_tenure_and_trailing_nps():
    data = _client()
    p = build_panel(data).set_index(["account_id", "month"])
    assert kpi_columns(data) == ["contract_months", "onboarding_completed", "login_days", "nps"]
    assert p.loc["a", "login_days"].tolist()[:3] == [1.0, 2.0, 3.0]
    assert np.isnan(p.loc[("a", M("2024-04-01")), "login_days"])
    assert p.loc["b", "onboarding_completed"].eq(0).all()
    assert p.loc["r", "contract_months"].tolist() == [0, 1, 2]
    # a answered 10 in Jan and 6 in Mar: trailing mean 10 in Jan–Feb, 8 from March on
    assert p.loc["a", "nps"].tolist() == [10, 10, 8, 8, 8]
    assert np.isnan(p.loc[("b", M("2024-01-01")), "nps"]) and p.loc[("b", M("2024-02-01")), "nps"] == 9


def test_nps_window_forgets_after_twelve_months():
    from cskit.panel import _within_account_window_sum

    x = np.array([1.0, 0, 0, 0, 2.0, 0, 0])
    tenure = np.array([0, 1, 2, 3, 0, 1, 2])
    assert _within_account_window_sum(x, tenure, 3).tolist() == [1, 1, 1, 0, 2, 2, 2]


def test_add_lags_never_crosses_accounts():
    p = build_panel(_client())
    lag = add_lags(p, ["login_days"], 1)
    a = lag[p.account_id == "a"]["login_days"].tolist()
    assert np.isnan(a[0]) and a[1:4] == [1.0, 2.0, 3.0]
    b_first = lag[p.account_id == "b"]["login_days"].iloc[0]
    assert np.isnan(b_first)


def test_renewal_cycle_is_read_from_when_contracts_end():
    from cskit.panel import renewal_cycle

    assert renewal_cycle(np.array([12, 24, 12, 12, 36])) == 12
    assert renewal_cycle(np.array([6, 12, 18, 6, 6, 12])) == 6  # 6-month terms filed as "annual"
    assert renewal_cycle(np.array([])) == 12
    assert renewal_cycle(np.array([5, 7, 11, 13, 2])) == 1


def test_six_month_terms_filed_as_annual_are_at_risk_every_six_months():
    data = _client()
    acc = data.accounts.copy()
    acc.loc[acc.account_id == "c", "churn_date"] = pd.Timestamp("2024-08-10")  # tenure 6
    data.accounts = acc
    data.as_of = M("2024-09-01")
    p = build_panel(data)
    c = p[p.account_id == "c"]
    assert c["renewal_cycle"].eq(6).all()
    assert c.loc[c.at_risk, "tenure"].tolist() == [6]


def test_renewal_cycle_survives_early_terminations_and_mixed_terms():
    from cskit.panel import renewal_cycle

    # the peer client (ChurnSim crm6): 6-month terms filed as annual, 6 of 21 churns mid-term
    peer = np.array([4] + [5] * 4 + [6] * 15 + [9])
    assert renewal_cycle(peer) == 6
    # half 12-month, half 6-month terms: every decision month of either is at risk
    assert renewal_cycle(np.array([6] * 25 + [12] * 29 + [18] * 10 + [24] * 16)) == 6
    # 12-month terms with a few early terminations stay annual
    assert renewal_cycle(np.array([12] * 40 + [24] * 10 + [3, 5, 6, 8, 9])) == 12
    assert renewal_cycle(np.array([3, 6, 9, 12, 3, 6, 15, 9, 3, 21])) == 3
    # one churn on the anniversary already beats "any month"; one mid-term churn does not
    assert renewal_cycle(np.array([12])) == 12
    assert renewal_cycle(np.array([5])) == 1


def test_churn_dated_the_day_before_an_anniversary_belongs_to_it():
    from cskit.panel import churn_months, month_index

    acc = pd.DataFrame({
        "contract_start": pd.to_datetime(["2024-04-01", "2024-04-01", "2024-04-15", "2024-01-31", "2024-04-01"]),
        "churn_date": pd.to_datetime(["2025-03-31", "2025-03-31", "2025-04-14", "2024-07-30", "2025-02-10"]),
        "contract_type": ["annual", "monthly", "annual", "annual", "annual"],
    })
    got = churn_months(acc) - month_index(acc["contract_start"])
    # term-end (annual): 12; monthly: its own month; mid-month term end: already in April;
    # a term from the 31st ends the day before the 31st-clipped-to-30 anniversary; an early termination
    assert got.tolist() == [12, 11, 12, 6, 10]


def test_term_end_churns_make_annual_accounts_decide_at_the_anniversary():
    from cskit.loading import client_from_frames
    from cskit.params import Params
    from cskit.simulate import Options, simulate_client

    sim = simulate_client(600, 30, seed=3, start="2023-04", mc_paths=0,
                          options=Options(term_end_dates=True, fiscal_year_start=4))
    acc = sim.tables["accounts"]
    ann = acc[(acc.contract_type == "annual") & acc.churn_date.notna()]
    assert (ann.churn_date.str[5:] == "03-31").mean() > 0.8  # the fiscal year's last day
    data = client_from_frames(sim.tables, Params(as_of=sim.as_of))
    p = build_panel(data)
    a = p[p.contract_type == "annual"]
    assert a["renewal_cycle"].eq(12).all()
    churned = a[a.churn == 1]
    assert (churned["tenure"] % 12 == 0).mean() > 0.8
    assert churned["month"].dt.month.eq(4).mean() > 0.8  # decisions at the April anniversary


def test_a_late_window_is_detected_reported_and_handled_by_delayed_entry():
    from cskit.loading import client_from_frames
    from cskit.params import Params
    from cskit.simulate import Options, simulate_client

    sim = simulate_client(600, 30, seed=4, mc_paths=0, options=Options(window_start=12, active_only=True))
    data = client_from_frames(sim.tables, Params(as_of=sim.as_of))
    w = data.quality.data_window
    assert w["code"] == "left_truncation" and w["first_month"] == "2025-07"
    assert w["share_started_before_window"] > 0.4 and w["only_active_listed"] and w["ended_before_window"] == 0
    assert [n.code for n in data.quality.warnings if getattr(n, "code", "") == "left_truncation"] == ["left_truncation"]
    assert data.quality.to_dict()["data_window"] == w
    p = build_panel(data)
    before = p["month"] < pd.Timestamp("2025-07-01")
    assert not p.loc[before, "at_risk"].any()  # no risk set before the window
    assert p.loc[~before & (p.contract_type == "monthly"), "at_risk"].all()
    # tenure still counts from contract_start: an account from the first simulated month is 12 at entry
    first = p[p.account_id == p.account_id.iloc[0]]
    assert first.loc[first.month == pd.Timestamp("2025-07-01"), "tenure"].item() == 12
    assert first.loc[first.month == pd.Timestamp("2025-07-01"), "months_observed"].item() == 0


def test_group_sums_lookup_and_codes_equal_pandas():
    """The panel's numpy helpers give pandas' own results bit for bit: ``groupby(keys).sum()`` (Kahan-
    compensated: 1e16 + 1 + 1 keeps the 2; signed zeros, infinities), ``reindex(...).fillna``,
    ``Index.get_indexer``; sorted and unsorted keys, groups of one to many rows, missing keys."""
    from cskit.panel import _codes, group_sums, lookup

    rng = np.random.default_rng(5)
    keys = np.sort(rng.integers(0, 400, 3000))
    values = rng.lognormal(8, 2, 3000) * rng.choice([1.0, 1e-9, 1e9], 3000)
    values[:3], keys[:3] = [1e16, 1.0, 1.0], -1
    odd = rng.random(3000)  # signed zeros (a key of one -0.0 sums to 0.0) and infinities
    values[3:][odd[3:] < 0.05], values[3:][odd[3:] > 0.99] = -0.0, np.inf
    values[3:][(odd[3:] > 0.5) & (odd[3:] < 0.505)] = -np.inf
    keys[-3:], values[-3:] = [500, 501, 501], -0.0
    for k in (keys, rng.permutation(keys)):
        got_keys, got = group_sums(k, values)
        expected = pd.Series(values).groupby(k).sum()
        assert np.array_equal(got_keys, expected.index.to_numpy())
        assert np.array_equal(got.view(np.int64), expected.to_numpy().view(np.int64))
    got_keys, got = group_sums(keys, values)
    assert got[0] == 1e16 + 2
    wanted = np.arange(-3, 420)
    assert np.array_equal(lookup(wanted, got_keys, got, fill=-7.0),
                          pd.Series(got, index=got_keys).reindex(wanted).fillna(-7.0).to_numpy())
    ids = pd.Index(np.array([f"id{i}" for i in range(0, 500, 2)], dtype=object))
    runs = np.array([f"id{i}" for i in np.sort(rng.integers(0, 500, 5000))], dtype=object)
    for v in (runs, rng.permutation(runs)):
        assert np.array_equal(_codes(ids, pd.Series(v)), ids.get_indexer(v))


def test_month_index_equals_numpys_calendar():
    """month_index of datetime64[ns] (read from a table of days) equals numpy's month conversion, for days
    before and after 1970, mid-month times and NaT."""
    from cskit.panel import month_index

    rng = np.random.default_rng(7)
    v = (np.datetime64("1955-03-17T05:00", "ns") + rng.integers(0, 90 * 365 * 86400, 5000).astype("timedelta64[s]"))
    v[::50] = np.datetime64("NaT")
    expected = np.where(np.isnat(v), -1, v.astype("datetime64[M]").astype(np.int64))
    assert np.array_equal(month_index(v), expected)
    assert np.array_equal(month_index(pd.Series(v)), expected)
    assert list(month_index(np.array(["NaT", "NaT"], dtype="datetime64[ns]"))) == [-1, -1]


def test_panel_columns_keep_their_order_and_values_in_one_float_block():
    """build_panel's column holder: float columns share one block, every column keeps the position of
    its first insertion (as DataFrame.__setitem__), a column replaced by floats moves into the block."""
    from cskit.panel import _Columns

    c = _Columns(3, 3)
    c |= {"a": np.array([1, 2, 3]), "x": np.array([1.0, 2, 3])}
    c["b"] = text = np.array(["p", "q", "r"], dtype=object)
    c["y"] = np.array([4.0, 5, 6])
    c["a"] = np.array([7.0, 8, 9])
    c["m"] = months = np.array(["2024-01", "2024-02", "2024-03"], dtype="datetime64[M]").astype("datetime64[ns]")
    c["k"] = np.array([1, 0, 1], dtype=np.int8)
    f = c.frame()
    assert list(f.columns) == ["a", "x", "b", "y", "m", "k"]
    assert f["a"].tolist() == [7.0, 8.0, 9.0] and f["x"].tolist() == [1.0, 2.0, 3.0] and f["y"].tolist() == [4, 5, 6]
    assert f["b"].tolist() == ["p", "q", "r"]
    assert sum(b.dtype == np.float64 for b in f._mgr.blocks) == 1
    # as a frame built column by column, and no column copied
    expected = pd.DataFrame({"a": [7.0, 8, 9], "x": [1.0, 2, 3], "b": ["p", "q", "r"], "y": [4.0, 5, 6],
                             "m": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
                             "k": np.array([1, 0, 1], dtype=np.int8)})
    pd.testing.assert_frame_equal(f, expected)
    assert np.shares_memory(f["b"].to_numpy(), text) and np.shares_memory(f["m"].to_numpy(), months)
    d = _Columns(3, 2)  # floats in the block's order: the block itself
    d |= {"x": np.array([1.0, 2, 3]), "s": text, "y": np.array([4.0, 5, 6])}
    assert np.shares_memory(d.frame()["y"].to_numpy(), d.block) and d.frame()["s"].tolist() == ["p", "q", "r"]
    f.loc[0, "y"] = -1.0  # a frame like any other: written, consolidated, copied
    assert f.copy()["y"].tolist() == [-1.0, 5, 6] and f._consolidate()["b"].tolist() == ["p", "q", "r"]


def _random_panel(seed: int) -> pd.DataFrame:
    """Accounts of 1 to 30 months, KPIs with few, many or no gaps (NaN, ±inf), zeros of both signs."""
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 31, 300)
    tenure = np.concatenate([np.arange(m) for m in n])
    ids = np.repeat([f"a{i:03d}" for i in range(len(n))], n).astype(object)
    cols = {"account_id": ids, "tenure": tenure, "contract_months": tenure.astype(float)}
    for name, share in (("few", 0.02), ("many", 0.5), ("none", 0.0), ("odd", 0.1)):
        x = rng.normal(0, 1e3, len(tenure)) * rng.choice([1.0, 1e-6, 1e6], len(tenure))
        x[rng.random(len(tenure)) < share] = np.nan
        if name == "odd":  # signed zeros, infinities (not values: missing) and a leading gap
            x[rng.random(len(tenure)) < 0.1] = -0.0
            x[rng.random(len(tenure)) < 0.02] = np.inf
            x[[0, 5]] = [np.nan, -np.inf]
        cols[name] = x
    return pd.DataFrame(cols)


def test_recent_means_and_values_are_the_last_observed_values_bit_for_bit():
    """recent_means_over and recent_values against a per-row walk back over the account's own rows: the
    values are the last n finite ones (oldest first), and each mean the difference of the running sums
    of the finite values (numpy's sequential cumsum over the whole column, as the panel's rows come),
    the same bits; rows with no value yet are NaN."""
    from cskit.panel import recent_means_over, recent_values

    for seed in (1, 2):
        p = _random_panel(seed)
        rows = np.random.default_rng(seed).random(len(p)) < 0.3
        kpis = ["contract_months", "few", "many", "none", "odd"]
        means = recent_means_over(p, kpis, rows, (3, 12))
        values = recent_values(p, kpis[1:], rows)
        pos = np.flatnonzero(rows)
        tenure = p["tenure"].to_numpy()
        for k in kpis[1:]:
            x = p[k].to_numpy()
            ok = np.isfinite(x)
            running = np.r_[0.0, np.cumsum(x[ok])]
            upto = np.cumsum(ok)
            for n in (3, 12):
                want = np.full(len(pos), np.nan)
                for i, r in enumerate(pos):
                    mine = [j for j in range(r - tenure[r], r + 1) if ok[j]][-n:]
                    if mine:
                        want[i] = (running[upto[r]] - running[upto[r] - len(mine)]) / len(mine)
                        if n == 3:
                            assert values[k][i, 3 - len(mine):].tolist() == x[mine].tolist()
                            assert np.isnan(values[k][i, : 3 - len(mine)]).all()
                            assert np.isclose(want[i], x[mine].mean(), rtol=1e-6, atol=1e-3 * np.abs(x[ok]).max())
                    elif n == 3:
                        assert np.isnan(values[k][i]).all()
                got = means[n][k].to_numpy()
                assert np.array_equal(got.view(np.int64), want.view(np.int64)), (seed, k, n)
        assert means[3]["contract_months"].tolist() == tenure[pos].astype(float).tolist()
        assert means[3]["account_id"].tolist() == p["account_id"].to_numpy()[pos].tolist()


def test_accounts_sharing_an_id_each_read_the_ids_rows_at_their_own_months():
    """A frame built otherwise than by the loader may list one id twice: each account's rows read that
    id's revenue, KPIs and referrals at their own months (the panel addressed by account × month key)."""
    data = _client()
    again = data.accounts[data.accounts.account_id == "b"].assign(
        contract_start=M("2024-03-01"), churn_date=pd.NaT, referred_by="b")
    data.accounts = pd.concat([data.accounts, again], ignore_index=True)
    p = build_panel(data)
    b = p[p.account_id == "b"]
    assert b["month"].dt.month.tolist() == [1, 2, 3, 4, 3, 4, 5]
    assert b["mrr"].tolist() == [50, 50, 50, 0, 50, 0, 0]
    assert b["mrr_prev"].tolist() == [0, 50, 50, 50, 0, 50, 0]
    assert b["login_days"].fillna(-1).tolist() == [-1, 7, -1, -1, -1, -1, -1]
    assert b["referrals"].tolist() == [0, 0, 1, 0, 1, 0, 0]  # "b" referred in March: both March rows
    assert b["referral_mrr"].tolist() == [0, 0, 50, 0, 50, 0, 0]
    assert p[p.account_id == "a"]["referral_mrr"].tolist() == [0, 0, 30, 0, 0]


def test_mapped_block_is_a_writable_float_array_of_its_shape():
    from cskit.panel import mapped_block

    for shape in ((3, 5), (3, 1 << 20)):  # np.empty below 16 MB, a populated mapping above (Linux)
        b = mapped_block(shape)
        assert b.shape == shape and b.dtype == np.float64 and b.flags.c_contiguous and b.flags.writeable
        b[1] = np.arange(shape[1])
        b[2].fill(np.nan)
        frame = pd.DataFrame(b.T, columns=["x", "y", "z"], copy=False)
        assert frame["y"].sum() == shape[1] * (shape[1] - 1) / 2 and frame["z"].isna().all()


def test_running_sums_continue_across_chunks_bit_for_bit():
    """_running_sums chunk by chunk, of one KPI or two at once (the real and imaginary parts of one complex
    cumsum): at every position with a value seen, the sequential sum of the values seen so far (numpy's
    cumsum of them, each KPI's own), whatever the chunk size; each KPI's missing positions returned."""
    from cskit.panel import _running_sums

    p = _random_panel(3)
    for pair in (("few", "many"), ("none", "odd"), ("odd",), ("many", "few")):
        xs = [p[k].to_numpy() for k in pair]
        for chunk in (1, 2, 7, 64, 1 << 17):
            out = np.empty(len(p), dtype="complex128")
            gaps = _running_sums(xs, out, chunk=chunk)
            assert len(gaps) == len(pair)
            for k, x, found, sums in zip(pair, xs, gaps, (out.real, out.imag)):
                ok = np.isfinite(x)
                count = np.cumsum(ok)
                want = np.r_[0.0, np.cumsum(x[ok])][count]
                assert found.tolist() == np.flatnonzero(~ok).tolist()
                assert np.array_equal(sums[count > 0].view(np.int64), want[count > 0].view(np.int64)), (k, chunk)


def test_season_test_by_a_thread_gives_the_panel_and_result_made_in_turn(monkeypatch):
    """build_panel's churn season test made by a thread while the other columns are made
    (cskit.parallel.Beside) and made in turn: the same frame, bit for bit, and the same result, which finds
    the season the simulator planted (every churn decision's hazard raised in March)."""
    import threading

    import scipy.stats  # noqa: F401
    import statsmodels.api  # noqa: F401 - imported: the test can run in a thread

    import cskit.panel as P
    from cskit import season as S
    from cskit.loading import client_from_frames
    from cskit.params import Params
    from cskit.simulate import Options, simulate_client

    sim = simulate_client(1500, 30, seed=11, options=Options(season_month=3, season_shock=1.2))
    data = client_from_frames(sim.tables, Params(as_of=sim.as_of, bootstrap=0))
    threads = []
    season = P.churn_seasonality
    monkeypatch.setattr(P, "churn_seasonality", lambda *a: (threads.append(threading.current_thread().name),
                                                            season(*a))[1])
    S._FITS.clear()
    threaded = P.build_panel(data)
    assert threads == ["cskit-season"]  # (the test was made by the thread)
    result = S.tested(threaded, P.MIN_EVENTS)
    monkeypatch.setattr(P, "_imported", lambda name: False)
    S._FITS.clear()
    in_turn = P.build_panel(data)
    assert threads == ["cskit-season", threading.current_thread().name]
    pd.testing.assert_frame_equal(threaded, in_turn, check_exact=True)
    columns = list(threaded.columns)
    assert columns == list(in_turn.columns) and columns.index("churn_season") == columns.index("at_risk") + 1
    assert S.tested(in_turn, P.MIN_EVENTS) == result
    assert result["detected"] and result["peak_month"] == 3
    assert set(threaded["churn_season"]) == {f"{m:02d}" for m in range(1, 13)}


def test_kpis_and_nps_gathered_by_a_thread_give_the_panel_made_in_turn(monkeypatch):
    """build_panel's KPI and NPS columns gathered by a thread while this one makes the revenue columns
    (cskit.parallel.Beside): the same frame, bit for bit, columns in the same order, one float block (each
    column's place taken first)."""
    import threading

    import cskit.panel as P
    from cskit.loading import client_from_frames
    from cskit.params import Params
    from cskit.simulate import simulate_client

    sim = simulate_client(800, 24, seed=5)
    data = client_from_frames(sim.tables, Params(as_of=sim.as_of, bootstrap=0))
    assert data.nps is not None and len(data.nps) and data.static_kpis
    gathered = []
    gather = P._add_kpis_and_nps
    monkeypatch.setattr(P, "_add_kpis_and_nps", lambda *a: (gathered.append(threading.current_thread().name),
                                                            gather(*a))[1])
    threaded = P.build_panel(data)
    assert gathered == ["cskit-panel"]

    class InTurn:  # the work done at once, by this thread
        def __init__(self, work, name, start=True):
            self.out = work()

        def join(self):
            pass

        def result(self):
            return self.out

    monkeypatch.setattr(P, "Beside", InTurn)
    in_turn = P.build_panel(data)
    assert gathered == ["cskit-panel", threading.current_thread().name]
    pd.testing.assert_frame_equal(threaded, in_turn, check_exact=True)
    assert sum(b.dtype == np.float64 for b in threaded._mgr.blocks) == 1
    kpis = [c for c in data.kpis.columns if c not in ("account_id", "month")]
    columns = list(threaded.columns)
    assert columns[columns.index("mrr"):] == [  # the order they were made in, one after the other, before
        "mrr", "mrr_prev", "expansion", "expansion_mrr", "contraction", "contraction_mrr", "cross_sell", "referrals",
        "referral_mrr", "contract_months", *data.static_kpis, *kpis, "nps"]


def test_a_panel_that_fails_raises_its_own_error_and_leaves_no_thread(monkeypatch):
    """When a column cannot be made, build_panel raises that error: the season test running beside it (a
    thread) is waited for, not made again in turn, and its own outcome does not hide the panel's error."""
    import threading

    import pytest

    import cskit.panel as P
    from cskit.loading import client_from_frames
    from cskit.params import Params
    from cskit.simulate import simulate_client

    sim = simulate_client(200, 24, seed=3)
    data = client_from_frames(sim.tables, Params(as_of=sim.as_of, bootstrap=0))
    tests = []

    def season(rows, min_events):
        tests.append(threading.current_thread().name)
        raise RuntimeError("the season test")

    def columns(*args):
        raise ValueError("a column")

    monkeypatch.setattr(P, "churn_seasonality", season)
    monkeypatch.setattr(P, "_add_accounts_columns", columns)
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match="a column"):
        P.build_panel(data)
    assert set(threading.enumerate()) <= before
    assert all(name == "cskit-season" for name in tests)  # (never made again by this thread)
