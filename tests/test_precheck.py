"""cskit run's fail-fast check (cskit/precheck.py): the quick look passes a good client without loading
it, and every problem it sees (or cannot see) ends in the loader's full message before the notebook."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from cskit import precheck
from cskit.errors import CskitError
from cskit.params import Params

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


def copy_demo(tmp_path: Path) -> Path:
    folder = tmp_path / "client"
    shutil.copytree(DEMO, folder)
    return folder


def test_a_good_client_is_not_loaded_twice(monkeypatch):
    def refuse(params):
        raise AssertionError("the full load ran")

    monkeypatch.setattr(precheck, "full_check", refuse)
    precheck.check_data(Params(client="demo", data=str(DEMO)))  # the demo has churn and every column


def test_a_missing_column_gives_the_loaders_message(tmp_path):
    folder = copy_demo(tmp_path)
    kpis = pd.read_csv(folder / "kpis.csv", dtype=str)
    kpis.rename(columns={"month": "period"}).to_csv(folder / "kpis.csv", index=False)
    with pytest.raises(CskitError, match=r"kpis: required column 'month' is missing"):
        precheck.check_data(Params(client="demo", data=str(folder)))


def test_no_churn_by_as_of_stops_with_the_churn_message(tmp_path):
    folder = copy_demo(tmp_path)
    accounts = pd.read_csv(folder / "accounts.csv", dtype=str)
    first = pd.to_datetime(accounts["churn_date"]).min()
    as_of = (first - pd.offsets.MonthEnd(1)).strftime("%Y-%m-%d")  # before any churn: none by as_of
    params = Params(client="demo", data=str(folder), as_of=as_of)
    assert not precheck._quick_look(params)
    with pytest.raises(CskitError, match="No churn at all"):
        precheck.check_data(params)


def test_the_quick_look_sees_churn_only_up_to_as_of(tmp_path):
    folder = copy_demo(tmp_path)
    accounts = pd.read_csv(folder / "accounts.csv", dtype=str)
    first = pd.to_datetime(accounts["churn_date"]).min()
    assert precheck._quick_look(Params(client="demo", data=str(folder), as_of=first.strftime("%Y-%m-%d")))
    assert not precheck._quick_look(Params(client="demo", data=str(folder),
                                           as_of=(first - pd.offsets.MonthEnd(1)).strftime("%Y-%m-%d")))
