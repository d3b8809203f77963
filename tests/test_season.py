"""The season test's grouped rows equal pandas' groupby on the text labels (cskit.season)."""
import numpy as np
import pandas as pd
import pytest

from cskit.season import _cells, renewal_strata


def _rows(rng, n=4000) -> pd.DataFrame:
    month = np.datetime64("2023-01", "M") + rng.integers(0, 30, n).astype("timedelta64[M]")
    segment = rng.choice(["SMB", "Mid", "Ent", "中堅"], n).astype(object)
    segment[rng.random(n) < 0.05] = None
    return pd.DataFrame({"month": month.astype("datetime64[ns]"), "tenure": rng.integers(1, 40, n),
                         "churn": (rng.random(n) < 0.1).astype(np.int8),
                         "contract_type": rng.choice(["monthly", "annual", "年契約"], n), "segment": segment})


@pytest.mark.parametrize("categorical", [False, True])
def test_cells_equal_the_groupby_on_labels(categorical):
    sub = _rows(np.random.default_rng(3))
    if categorical:
        sub["segment"] = pd.Categorical(sub["segment"], categories=["SMB", "中堅", "Mid", "Ent"])
    sub = sub.assign(stratum=renewal_strata(sub))
    first = sub["month"].min()
    t = (sub["month"].dt.year - first.year) * 12 + sub["month"].dt.month - first.month
    expected = (sub.assign(cal=sub["month"].dt.month, t=t, n=1)
                .groupby(["t", "cal", "stratum", "segment", "tenure"], sort=True, observed=True)
                .agg(k=("churn", "sum"), n=("n", "sum")).reset_index())
    month = sub["month"].to_numpy().astype("datetime64[M]").astype(np.int64)
    got = _cells(month, sub["tenure"].to_numpy(), sub["churn"].to_numpy(), sub["contract_type"], sub["segment"])
    assert len(got) == len(expected) > 100
    for c in ("t", "cal", "tenure", "k", "n"):
        assert np.array_equal(got[c].to_numpy(), expected[c].to_numpy()), c
    for c in ("stratum", "segment"):
        assert list(got[c].astype(str)) == list(expected[c].astype(str)), c


def test_strata_by_hand():
    rows = pd.DataFrame({"month": pd.to_datetime(["2025-04-01", "2025-01-01", "2024-12-01"]), "tenure": [13, 25, 0],
                         "contract_type": ["annual", "annual", "monthly"]})
    assert list(renewal_strata(rows)) == ["annual:3", "annual:12", "monthly"]
