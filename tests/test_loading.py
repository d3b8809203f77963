"""The loader: canonical tables, every bad-input case excluded and counted, all readers equal."""
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from cskit.errors import CskitError
from cskit.loading import client_from_frames, load_client, parse_dates, parse_months, parse_numbers
from cskit.params import validate_params

ACCOUNTS = [
    # account_id, contract_start, churn_date, segment, plan, contract_type, referred_by, health_score,
    # onboarding_completed, company_name
    ["A1", "2024-01-15", "", "SMB", "Basic", "monthly", "", "80", "1", "株式会社アルファ"],
    ["A2", "2024-02-01", "2024-05-20", "エンタープライズ", "Pro", "annual", "A1", "", "0", "Beta"],
    ["A3", "2024-03-10", "", "", "", "", "", "55.5", "1", "Gamma"],
]
ACCOUNT_COLS = ["account_id", "contract_start", "churn_date", "segment", "plan", "contract_type", "referred_by",
                "health_score", "onboarding_completed", "company_name"]
MONTHS = {"A1": range(1, 7), "A2": range(2, 6), "A3": range(3, 7)}
MRR = {"A1": "1,000", "A2": "2000", "A3": " 500 "}


def raw_tables() -> dict[str, pd.DataFrame]:
    """A small clean client as a CSV reader sees it: every cell text."""
    rev = [[a, f"2024-{m:02d}", MRR[a], "core"] for a, ms in MONTHS.items() for m in ms]
    kpi = [[a, f"2024-{m:02d}", str(m + i), f"0.{m}", str(10 * m), "田中"]
           for i, (a, ms) in enumerate(MONTHS.items()) for m in ms]
    return {
        "accounts": pd.DataFrame(ACCOUNTS, columns=ACCOUNT_COLS),
        "revenue": pd.DataFrame(rev, columns=["account_id", "month", "mrr", "product"]),
        "kpis": pd.DataFrame(kpi, columns=["account_id", "month", "login_days", "active_user_rate", "custom_metric",
                                           "csm_name"]),
        "nps": pd.DataFrame([["A1", "2024-03-05", "9", "decision_maker"], ["A3", "2024-04-01", "5", ""]],
                            columns=["account_id", "date", "score", "role"]),
    }


P = validate_params({"as_of": "2024-06-30"})


def load(tables, params=P):
    data = client_from_frames(tables, params)
    assert data.quality.is_consistent()
    return data


def with_row(table: str, row: list) -> dict[str, pd.DataFrame]:
    tables = raw_tables()
    df = tables[table]
    tables[table] = pd.concat([df, pd.DataFrame([row], columns=df.columns)], ignore_index=True)
    return tables


GOOD = load(raw_tables())


def test_canonical_accounts():
    a = GOOD.accounts
    assert list(a.columns) == ["account_id", "contract_start", "churn_date", "segment", "plan", "contract_type",
                               "referred_by", "health_score", "account_name", "onboarding_completed"]
    # the readable name comes from company_name (load.NAME_COLUMNS), for the CRM-ready result files
    assert a["account_name"].tolist() == ["株式会社アルファ", "Beta", "Gamma"]
    assert GOOD.account_names().to_dict() == {"A1": "株式会社アルファ", "A2": "Beta", "A3": "Gamma"}
    assert a["account_id"].tolist() == ["A1", "A2", "A3"]
    assert a["contract_start"].tolist() == [pd.Timestamp(d) for d in ("2024-01-15", "2024-02-01", "2024-03-10")]
    assert a["churn_date"].isna().tolist() == [True, False, True]
    assert a.loc[1, "churn_date"] == pd.Timestamp("2024-05-20")
    assert a["segment"].tolist() == ["SMB", "エンタープライズ", "(none)"]
    assert a["plan"].tolist() == ["Basic", "Pro", "(none)"]
    assert a["contract_type"].tolist() == ["monthly", "annual", "monthly"]
    assert a["referred_by"].tolist() == [None, "A1", None]
    assert a["health_score"].tolist()[0::2] == [80.0, 55.5] and np.isnan(a["health_score"][1])
    assert a["onboarding_completed"].tolist() == [1.0, 0.0, 1.0]
    assert GOOD.static_kpis == ["onboarding_completed"]
    assert str(a["contract_start"].dtype) == "datetime64[ns]"


def test_canonical_revenue_kpis_nps_and_catalogue():
    r, k, n = GOOD.revenue, GOOD.kpis, GOOD.nps
    assert len(r) == 14 and list(r.columns) == ["account_id", "month", "mrr", "product"]
    assert r.groupby("account_id")["mrr"].first().to_dict() == {"A1": 1000.0, "A2": 2000.0, "A3": 500.0}
    assert (r["month"].dt.day == 1).all() and str(r["month"].dtype) == "datetime64[ns]"
    assert set(r["product"]) == {"core"}
    assert list(k.columns) == ["account_id", "month", "login_days", "active_user_rate", "custom_metric"]
    assert k.loc[
        (k.account_id == "A2") & (k.month == "2024-03-01"), ["login_days", "active_user_rate"]
    ].values.tolist() == [[4.0, 0.3]]
    assert "custom_metric" in GOOD.catalogue and GOOD.catalogue["custom_metric"].category == "other"
    assert "csm_name" not in GOOD.catalogue
    assert n["score"].tolist() == [9, 5] and n["role"].tolist() == ["decision_maker", None]
    assert n["date"].tolist() == [pd.Timestamp("2024-03-05"), pd.Timestamp("2024-04-01")]
    assert GOOD.events is None
    assert GOOD.as_of == pd.Timestamp("2024-06-01")
    assert {t: (q["read"], q["used"], q["excluded"]) for t, q in GOOD.quality.tables.items()} == {
        "accounts": (3, 3, {}), "revenue": (14, 14, {}), "kpis": (14, 14, {}), "nps": (2, 2, {})}


def test_text_kpi_column_ignored_with_a_note():
    assert any(w.startswith("kpis: 1 column(s) are mostly text") and "csm_name" in w for w in GOOD.quality.warnings)


def test_as_of_default_is_last_revenue_month():
    tables = with_row("revenue", ["A1", "2024-07", "1000", "core"])
    data = load(tables, validate_params({}))
    assert data.as_of == pd.Timestamp("2024-07-01")
    assert any("using 2024-07, the last month in revenue" in w for w in data.quality.warnings)


def test_as_of_mid_month_means_its_month():
    data = load(raw_tables(), validate_params({"as_of": "2024-05-31"}))
    assert data.as_of == pd.Timestamp("2024-05-01")
    assert data.quality.tables["revenue"]["excluded"] == {"after_as_of": 2}
    assert data.accounts.loc[1, "churn_date"] == pd.Timestamp("2024-05-20")


BAD_ROWS = [
    # table, row, reason, column, example shown
    (
        "accounts",
        ["A1", "2023-01-01", "", "SMB", "Basic", "", "", "", "", "x"],
        "duplicate_account_id",
        "account_id",
        "'A1'",
    ),
    ("accounts", ["  ", "2023-01-01", "", "", "", "", "", "", "", ""], "empty_account_id", "account_id", "(empty)"),
    (
        "accounts",
        ["A9", "2024-02-30", "", "", "", "", "", "", "", ""],
        "bad_contract_start",
        "contract_start",
        "'2024-02-30'",
    ),
    ("accounts", ["A9", "", "", "", "", "", "", "", "", "x"], "bad_contract_start", "contract_start", "(empty)"),
    (
        "accounts",
        ["A9", "2024-03-01", "2024-02-01", "", "", "", "", "", "", ""],
        "churn_before_start",
        "churn_date",
        "2024-02-01 / 2024-03-01",
    ),
    ("accounts", ["A9", "2024-03-01", "soon", "", "", "", "", "", "", ""], "bad_churn_date", "churn_date", "'soon'"),
    ("accounts", ["A9", "2024-07-01", "", "", "", "", "", "", "", ""], "after_as_of", "contract_start", "'2024-07-01'"),
    ("revenue", ["Z9", "2024-03", "100", "core"], "unknown_account", "account_id", "'Z9'"),
    ("revenue", ["", "2024-03", "100", "core"], "empty_account_id", "account_id", "(empty)"),
    ("revenue", ["A1", "2024-13", "100", "core"], "bad_month", "month", "'2024-13'"),
    ("revenue", ["A1", "2024-03", "-5", "addon"], "negative_mrr", "mrr", "'-5'"),
    ("revenue", ["A1", "2024-03", "abc", "addon"], "bad_mrr", "mrr", "'abc'"),
    ("revenue", ["A1", "2024-03", "", "addon"], "bad_mrr", "mrr", "(empty)"),
    ("revenue", ["A3", "2024-02", "500", "core"], "before_contract_start", "month", "'2024-02'"),
    ("revenue", ["A2", "2024-06", "2000", "core"], "after_churn", "month", "'2024-06'"),
    ("revenue", ["A1", "2024-07", "1000", "core"], "after_as_of", "month", "'2024-07'"),
    ("kpis", ["Z9", "2024-03", "1", "0.1", "1", ""], "unknown_account", "account_id", "'Z9'"),
    ("kpis", ["A1", "March", "1", "0.1", "1", ""], "bad_month", "month", "'March'"),
    ("kpis", ["A1", "2024-07", "1", "0.1", "1", ""], "after_as_of", "month", "'2024-07'"),
    ("kpis", ["A3", "2024-01", "1", "0.1", "1", ""], "before_contract_start", "month", "'2024-01'"),
    ("kpis", ["A2", "2024-06", "1", "0.1", "1", ""], "after_churn", "month", "'2024-06'"),
    ("kpis", ["A1", "2024-02", "99", "0.9", "9", ""], "duplicate_account_month", "month", "A1 / 2024-02"),
    ("nps", ["A1", "2024-03-06", "11", ""], "score_out_of_range", "score", "'11'"),
    ("nps", ["A1", "2024-03-06", "7.5", ""], "score_out_of_range", "score", "'7.5'"),
    ("nps", ["A1", "2024-03-06", "ten", ""], "bad_score", "score", "'ten'"),
    ("nps", ["A1", "06/03/2024", "7", ""], "bad_date", "date", "'06/03/2024'"),
    ("nps", ["Z9", "2024-03-06", "7", ""], "unknown_account", "account_id", "'Z9'"),
    ("nps", ["A1", "2024-07-02", "7", ""], "after_as_of", "date", "'2024-07-02'"),
]


@pytest.mark.parametrize(
    "table,row,reason,column,example", BAD_ROWS, ids=[f"{b[0]}-{b[2]}-{i}" for i, b in enumerate(BAD_ROWS)]
)
def test_bad_row_excluded_counted_and_named(table, row, reason, column, example):
    data = load(with_row(table, row))
    q = data.quality.tables[table]
    assert q["excluded"] == {reason: 1} and q["read"] == len(raw_tables()[table]) + 1
    lines = [w for w in data.quality.warnings if w.startswith(f"{table}.{column}: 1 row(s) excluded ({reason})")]
    assert len(lines) == 1 and example in lines[0] and "Fix:" in lines[0]
    assert_frame_equal(getattr(data, table), getattr(GOOD, table))


def test_rows_of_an_excluded_account_are_counted_as_such():
    tables = with_row("accounts", ["A9", "someday", "", "", "", "", "", "", "", ""])
    tables["revenue"].loc[len(tables["revenue"])] = ["A9", "2024-03", "100", "core"]
    tables["kpis"].loc[len(tables["kpis"])] = ["A9", "2024-03", "1", "0.1", "1", ""]
    data = load(tables)
    assert data.quality.tables["revenue"]["excluded"] == {"account_excluded": 1}
    assert data.quality.tables["kpis"]["excluded"] == {"account_excluded": 1}


def test_unknown_contract_type_warned_and_treated_as_monthly():
    tables = raw_tables()
    tables["accounts"].loc[2, "contract_type"] = "weekly"
    tables["accounts"].loc[0, "contract_type"] = "年額"
    data = load(tables)
    assert data.accounts["contract_type"].tolist() == ["annual", "annual", "monthly"]
    assert data.quality.tables["accounts"]["excluded"] == {}
    assert any(w.startswith("accounts.contract_type: 1 row(s)") and "'weekly'" in w for w in data.quality.warnings)


def test_duplicate_account_month_product_revenue_summed():
    data = load(with_row("revenue", ["A1", "2024-03", "250", "core"]))
    r = data.revenue
    assert r.loc[(r.account_id == "A1") & (r.month == "2024-03-01"), "mrr"].tolist() == [1250.0]
    assert len(r) == 14 and data.quality.tables["revenue"]["used"] == 15
    assert any(w.startswith("revenue.mrr: 2 row(s) share") and "A1 2024-03 core" in w for w in data.quality.warnings)


def test_second_product_line_kept_apart():
    data = load(with_row("revenue", ["A1", "2024-03", "300", "addon"]))
    r = data.revenue[(data.revenue.account_id == "A1") & (data.revenue.month == "2024-03-01")]
    assert r[["product", "mrr"]].values.tolist() == [["addon", 300.0], ["core", 1000.0]]


def test_text_in_numeric_kpi_cell_blanks_the_cell_not_the_row():
    tables = raw_tables()
    tables["kpis"].loc[0, "login_days"] = "many"
    tables["kpis"].loc[1, "login_days"] = "n/a"
    tables["kpis"].loc[2, "active_user_rate"] = "?"
    data = load(tables)
    assert data.quality.tables["kpis"] == {
        "read": 14,
        "used": 14,
        "excluded": {},
        "blanked_cells": {"login_days": 1, "active_user_rate": 1},
    }
    assert np.isnan(data.kpis.loc[0, "login_days"]) and np.isnan(data.kpis.loc[1, "login_days"])
    assert any(w.startswith("kpis.login_days: 1 cell(s) are not numbers (e.g. 'many')") for w in data.quality.warnings)


def test_static_kpi_text_cell_blanked():
    tables = raw_tables()
    tables["accounts"].loc[0, "onboarding_completed"] = "yes"
    data = load(tables)
    assert np.isnan(data.accounts.loc[0, "onboarding_completed"])
    assert data.quality.tables["accounts"]["blanked_cells"] == {"onboarding_completed": 1}


def test_unknown_referrer_ignored_with_warning():
    tables = raw_tables()
    tables["accounts"].loc[2, "referred_by"] = "Z9"
    data = load(tables)
    assert data.accounts["referred_by"].tolist() == [None, "A1", None]
    assert any(w.startswith("accounts.referred_by: 1 referral(s)") and "'Z9'" in w for w in data.quality.warnings)


def test_three_problems_in_one_table_all_reported():
    """Every account row is bad in a different way: one error lists the stop and all three reasons."""
    tables = raw_tables()
    tables["accounts"] = pd.DataFrame([
        ["", "2024-01-15", "", "", "", "", "", "", "", ""],
        ["A2", "2024-02-31", "", "", "", "", "", "", "", ""],
        ["A3", "2024-03-10", "2024-01-01", "", "", "", "", "", "", ""],
    ], columns=ACCOUNT_COLS)
    with pytest.raises(CskitError) as e:
        client_from_frames(tables, P)
    msg = str(e.value)
    assert "accounts: no usable rows (read 3;" in msg
    for reason in ("empty_account_id", "bad_contract_start", "churn_before_start"):
        assert f"({reason})" in msg
    assert "revenue: no usable rows" in msg and "kpis: no usable rows" in msg


def test_missing_columns_of_three_tables_in_one_error():
    tables = raw_tables()
    tables["accounts"] = tables["accounts"].drop(columns="contract_start")
    tables["revenue"] = tables["revenue"].drop(columns="mrr")
    tables["kpis"] = tables["kpis"].drop(columns="month")
    with pytest.raises(CskitError) as e:
        client_from_frames(tables, P)
    lines = [line for line in str(e.value).splitlines() if line.startswith("- ")]
    assert len(lines) == 3
    assert lines[0].startswith("- accounts: required column 'contract_start' is missing")
    assert lines[1].startswith("- revenue: required column 'mrr' is missing")
    assert lines[2].startswith("- kpis: required column 'month' is missing")
    assert all("columns:" in line for line in lines)


def test_missing_required_table():
    tables = raw_tables()
    del tables["kpis"]
    with pytest.raises(CskitError, match="kpis: required table is missing"):
        client_from_frames(tables, P)


def test_blank_rows_are_not_rows():
    tables = with_row("kpis", ["", " ", "", "", "", ""])
    assert load(tables).quality.tables["kpis"]["read"] == 14


def test_numeric_ids_become_strings():
    tables = raw_tables()
    ids = {"A1": 1, "A2": 2, "A3": 17}
    tables["accounts"]["account_id"] = tables["accounts"]["account_id"].map(ids)
    tables["accounts"]["referred_by"] = [np.nan, 1.0, np.nan]
    tables["revenue"]["account_id"] = tables["revenue"]["account_id"].map(ids).astype(float)
    tables["kpis"]["account_id"] = tables["kpis"]["account_id"].map(lambda a: f"{ids[a]}.0")
    tables["nps"]["account_id"] = tables["nps"]["account_id"].map(ids).astype(str)
    data = load(tables)
    assert data.accounts["account_id"].tolist() == ["1", "17", "2"]
    assert data.accounts["referred_by"].tolist() == [None, None, "1"]
    assert set(data.revenue["account_id"]) == set(data.kpis["account_id"]) == {"1", "2", "17"}
    assert all(q["excluded"] == {} for q in data.quality.tables.values())


def test_typed_frames_load_like_text():
    """The simulator hands typed frames (datetime64 months, float KPIs): same result as text."""
    tables = raw_tables()
    tables["revenue"]["month"] = pd.to_datetime(tables["revenue"]["month"])
    tables["revenue"]["mrr"] = [float(x.replace(",", "")) for x in tables["revenue"]["mrr"]]
    tables["kpis"]["login_days"] = tables["kpis"]["login_days"].astype(int)
    tables["accounts"]["contract_start"] = pd.to_datetime(tables["accounts"]["contract_start"])
    data = load(tables)
    for name in ("accounts", "revenue", "kpis", "nps"):
        assert_frame_equal(getattr(data, name), getattr(GOOD, name))


def test_parse_numbers():
    s = pd.Series(
        ["1,234", " 12 ", "１２３", "－５", "¥1,000", "3.5円", "1,2", "abc", "", "NA", "-", "1e3", "inf", None]
    )
    values, bad = parse_numbers(s)
    expected = [1234, 12, 123, -5, 1000, 3.5, np.nan, np.nan, np.nan, np.nan, np.nan, 1000, np.nan, np.nan]
    np.testing.assert_array_equal(values, np.array(expected, dtype=float))
    assert bad.tolist() == [False] * 6 + [True, True] + [False] * 4 + [True, False]


def test_parse_dates_and_months():
    d, bad = parse_dates(pd.Series(["2024-01-05", "2024/1/5", "20240105", "2024年1月5日", "2024-01-05 13:45:00",
                                    "2024-02-30", "05/01/2024", ""]))
    assert [str(x)[:10] for x in d[:5]] == ["2024-01-05"] * 5
    assert bad.tolist() == [False] * 5 + [True, True, False]
    m, bad = parse_months(pd.Series(["2024-01", "2024/1", "202401", "2024年1月", "2024-01-31", "2024-13", "Jan"]))
    assert [str(x)[:10] for x in m[:5]] == ["2024-01-01"] * 5
    assert bad.tolist() == [False] * 5 + [True, True]


# ---------------------------------------------------------------------------------------------------
# Files: encodings, header mapping, xlsx and duckdb give the same frames as a UTF-8 CSV folder

JA = {
    "accounts": {
        "account_id": "顧客ID",
        "contract_start": "契約開始日",
        "churn_date": "解約日",
        "segment": "セグメント",
        "plan": "プラン",
        "contract_type": "契約形態",
        "referred_by": "紹介元",
        "health_score": "ヘルススコア",
        "onboarding_completed": "オンボード完了",
        "company_name": "会社名",
    },
    "revenue": {"account_id": "顧客ID", "month": "年月", "mrr": "月額売上", "product": "製品"},
    "kpis": {
        "account_id": "顧客ID",
        "month": "年月",
        "login_days": "ログイン日数",
        "active_user_rate": "アクティブ率",
        "custom_metric": "独自指標",
        "csm_name": "担当CSM",
    },
    "nps": {"account_id": "顧客ID", "date": "回答日", "score": "スコア", "role": "役割"},
}
JA_PARAMS = {"as_of": "2024-06-30", "columns": {t: {ja: en for en, ja in m.items()} for t, m in JA.items()}}


def write_csvs(folder: Path, encoding: str, japanese: bool) -> Path:
    folder.mkdir()
    for name, df in raw_tables().items():
        out = df.rename(columns=JA[name]) if japanese else df
        out.to_csv(folder / f"{name}.csv", index=False, encoding=encoding, lineterminator="\r\n" if japanese else "\n")
    return folder


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """What a client's workbook holds: dates as dates, numbers as numbers."""
    out = df.copy()
    for c in out.columns:
        if c in ("contract_start", "churn_date", "date"):
            out[c] = pd.to_datetime(out[c].replace("", None))
        elif c in (
            "mrr",
            "health_score",
            "onboarding_completed",
            "login_days",
            "active_user_rate",
            "custom_metric",
            "score",
        ):
            out[c] = pd.to_numeric(out[c].str.replace(",", "").str.strip().replace("", None))
    return out


@pytest.fixture(scope="module")
def utf8(tmp_path_factory):
    folder = write_csvs(tmp_path_factory.mktemp("c") / "utf8", "utf-8", japanese=False)
    return load_client(validate_params({"as_of": "2024-06-30", "data": str(folder)}))


def assert_same(a, b):
    for name in ("accounts", "revenue", "kpis", "nps"):
        assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.as_of == b.as_of and a.static_kpis == b.static_kpis and a.catalogue == b.catalogue
    assert a.quality.tables == b.quality.tables


def test_utf8_csv_folder_equals_in_memory(utf8):
    assert_same(utf8, GOOD)
    assert not any("Shift_JIS" in w for w in utf8.quality.warnings)


def test_cp932_csv_with_japanese_headers(tmp_path, utf8):
    folder = write_csvs(tmp_path / "sjis", "cp932", japanese=True)
    assert "顧客ID".encode("cp932") in (folder / "accounts.csv").read_bytes()
    data = load_client(validate_params({**JA_PARAMS, "data": "sjis"}), base=tmp_path)
    assert_same(data, utf8)
    for name in ("accounts", "revenue", "kpis", "nps"):
        assert any(w.startswith(f"{name}.csv was read as Shift_JIS (cp932)") for w in data.quality.warnings)


def test_utf8_bom_header(tmp_path, utf8):
    folder = write_csvs(tmp_path / "bom", "utf-8-sig", japanese=True)
    assert (folder / "kpis.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    data = load_client(validate_params({**JA_PARAMS, "data": str(folder)}))
    assert_same(data, utf8)
    assert not any("Shift_JIS" in w for w in data.quality.warnings)


def test_xlsx_workbook(tmp_path, utf8):
    path = tmp_path / "client.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as xl:
        for name, df in raw_tables().items():
            typed(df).rename(columns=JA[name]).to_excel(xl, sheet_name=name, index=False)
    assert_same(load_client(validate_params({**JA_PARAMS, "data": str(path)})), utf8)


def test_duckdb_file(tmp_path, utf8):
    path = tmp_path / "client.duckdb"
    con = duckdb.connect(str(path))
    for name, df in raw_tables().items():
        frame = typed(df).rename(columns=JA[name])
        con.register("frame", frame)
        con.execute(f'create table "{name}" as select * from frame')
        con.unregister("frame")
    con.close()
    assert_same(load_client(validate_params({**JA_PARAMS, "data": str(path)})), utf8)


def test_missing_files_listed_together(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    raw_tables()["accounts"].to_csv(folder / "accounts.csv", index=False)
    with pytest.raises(CskitError) as e:
        load_client(validate_params({"data": str(folder)}))
    msg = str(e.value)
    assert (
        "revenue: required table is missing: no revenue.csv" in msg
        and "kpis: required table is missing: no kpis.csv" in msg
    )
    assert "found: accounts.csv" in msg


def test_unreadable_file(tmp_path):
    folder = write_csvs(tmp_path / "c", "utf-8", japanese=False)
    (folder / "revenue.csv").write_bytes(b"account_id,month,mrr\n\xff\xfe\xfa,2024-01,1\n")
    with pytest.raises(CskitError, match="revenue.csv: unreadable: the file is neither UTF-8 nor Shift_JIS"):
        load_client(validate_params({"data": str(folder)}))


def test_missing_data_path(tmp_path):
    with pytest.raises(CskitError, match="does not exist"):
        load_client(validate_params({"data": "nowhere"}), base=tmp_path)


def test_peer_client_loads(peer):
    data = load_client(validate_params({"client": "peer", "data": str(peer)}))
    lines = {
        name: sum(1 for _ in open(peer / f"{name}.csv", encoding="utf-8")) - 1
        for name in ("accounts", "revenue", "kpis")
    }
    assert {t: q["read"] for t, q in data.quality.tables.items()} == lines
    assert all(q["excluded"] == {} for q in data.quality.tables.values())
    assert data.accounts["account_id"].map(type).eq(str).all() and "0" in set(data.accounts["account_id"])
    assert "country" not in data.accounts.columns and data.static_kpis == []
    assert {"win_opportunity_value", "meeting", "active_users"} <= set(data.kpis.columns)
    assert data.kpis.shape[1] == 2 + 29 and (data.kpis.dtypes.iloc[2:] == "float64").all()
    assert data.as_of == pd.Timestamp("2022-12-01")
    assert data.catalogue["win_opportunity_value"].category == "other"


def test_simulated_client_in_memory_equals_its_csvs(tmp_path):
    """The simulator's typed frames and the CSVs it writes load to the same canonical tables."""
    from cskit.simulate import simulate_client

    sim = simulate_client(n_accounts=150, n_months=10, seed=3, mc_paths=0)
    params = validate_params({"as_of": sim.as_of, "data": str(tmp_path / "sim")})
    sim.write(tmp_path / "sim")
    in_memory, from_csv = load(sim.tables, params), load_client(params)
    assert_same(in_memory, from_csv)
    assert all(q["excluded"] == {} for q in in_memory.quality.tables.values())
    assert len(in_memory.accounts) == len(sim.tables["accounts"])
    assert in_memory.static_kpis == ["onboarding_completed", "welcome_webinar_attendance"]


def test_contract_months_column_in_kpis_ignored():
    tables = raw_tables()
    tables["kpis"]["contract_months"] = "3"
    data = load(tables)
    assert "contract_months" not in data.kpis.columns
    assert any(w.startswith("kpis.contract_months: ignored") for w in data.quality.warnings)


def test_events_validated():
    tables = raw_tables()
    tables["events"] = pd.DataFrame([
        ["A1", "u1", "2024-03-05 10:00:00", "login", "30"],
        ["A1", "u2", "2024/03/06 11:30", "login", ""],
        ["A1", "u1", "yesterday", "login", "5"],
        ["Z9", "u9", "2024-03-05 10:00:00", "login", "5"],
        ["A3", "u3", "2024-07-01 09:00:00", "export", "1"],
    ], columns=["account_id", "user_id", "ts", "event", "value"])
    data = load(tables)
    assert data.quality.tables["events"]["excluded"] == {"bad_ts": 1, "unknown_account": 1, "after_as_of": 1}
    e = data.events
    assert e["ts"].tolist() == [pd.Timestamp("2024-03-05 10:00"), pd.Timestamp("2024-03-06 11:30")]
    assert e["value"].tolist()[0] == 30.0 and np.isnan(e["value"][1])


def test_xlsx_missing_sheet_named(tmp_path):
    path = tmp_path / "client.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as xl:
        raw_tables()["accounts"].to_excel(xl, sheet_name="accounts", index=False)
        raw_tables()["revenue"].to_excel(xl, sheet_name="Sheet2", index=False)
    with pytest.raises(CskitError) as e:
        load_client(validate_params({"data": str(path)}))
    msg = str(e.value)
    assert (
        "revenue: required table is missing: no sheet named 'revenue' in client.xlsx (sheets: accounts, Sheet2)" in msg
    )
    assert "kpis: required table is missing" in msg


def test_a_kpi_of_only_zeros_and_ones_is_bounded_to_one():
    from cskit.params import Params
    from cskit.simulate import simulate_client

    sim = simulate_client(n_accounts=200, n_months=12, seed=3, mc_paths=0)
    data = client_from_frames(sim.tables, Params(client="flags"))
    flag = data.catalogue["onboarding_completed"]
    assert (flag.lower, flag.upper) == (0.0, 1.0)
    assert data.catalogue["login_days"].upper == 31.0  # the catalogue's own bound is kept
    assert data.catalogue["licenses"].upper == float("inf")


def test_row_order_and_duplicates_as_pandas_stable_sort():
    """loading._sorted (integer keys, one stable argsort) orders rows as DataFrame.sort_values(kind="stable")
    and flags the rows whose keys repeat the previous row's."""
    from cskit.loading import _sorted

    rng = np.random.default_rng(11)
    n = 5000
    pos = rng.integers(0, 300, n)
    months = (np.datetime64("2024-01", "M") + rng.integers(0, 6, n).astype("timedelta64[M]")).astype("datetime64[ns]")
    product = rng.choice(np.array(["(main)", "b", "Ａ"], dtype=object), n)
    keep = rng.random(n) > 0.2
    for keys in [(pos, months, product), (pos, months)]:
        idx = np.flatnonzero(keep)
        frame = pd.DataFrame({i: k[idx] for i, k in enumerate(keys)})
        expected = idx[frame.sort_values(list(frame.columns), kind="stable").index.to_numpy()]
        ordered = pd.DataFrame({i: k[expected] for i, k in enumerate(keys)})
        repeated = ordered.duplicated().to_numpy() & (ordered == ordered.shift()).all(axis=1).to_numpy()
        order, same = _sorted(keep, *keys)
        assert np.array_equal(order, expected)
        assert np.array_equal(same, repeated) and same.sum() > 100


def test_a_catalogue_kpi_written_as_text_is_named_as_text_not_as_empty():
    """A catalogue KPI whose every cell is text ('good' / 'bad') has values, just no numbers: the notice
    says so, with the count and examples, instead of calling the column empty."""
    tables = raw_tables()
    tables["kpis"]["login_days"] = ["good", "bad"] * 7
    data = load(tables)
    assert "login_days" not in data.kpis.columns
    (w,) = [w for w in data.quality.warnings if w.code == "kpi_column_text"]
    assert w.values == {"column": "login_days", "n": 14, "examples": "'good', 'bad'"}
    assert str(w).startswith("kpis.login_days: none of its 14 filled cell(s) is a number (e.g. 'good', 'bad')")
    assert not any(w.code == "kpi_column_empty" for w in data.quality.warnings)


def test_an_as_of_after_the_last_revenue_month_stops_with_the_months_named():
    """as_of two months past the revenue's last month (2024-06): no account pays at as_of, so the run
    stops at load, naming both months and the fix, instead of in a later stage."""
    with pytest.raises(CskitError) as e:
        client_from_frames(raw_tables(), validate_params({"as_of": "2024-08-31"}))
    msg = str(e.value)
    assert "as_of 2024-08 is after the last month with revenue (revenue.month: 2024-06)" in msg
    assert "set as_of: 2024-06-30" in msg
    assert load(raw_tables(), validate_params({"as_of": "2024-06-30"})).as_of == pd.Timestamp("2024-06-01")


def test_ids_that_lost_their_leading_zeros_are_named_as_such():
    """accounts keeps '000001'-style ids while revenue and kpis hold them as numbers ('1'), as a
    spreadsheet export does: every row is unknown, and the message says the ids differ by leading zeros."""
    tables = raw_tables()
    padded = {"A1": "000001", "A2": "000002", "A3": "000003"}
    tables["accounts"]["account_id"] = tables["accounts"]["account_id"].map(padded)
    tables["accounts"]["referred_by"] = tables["accounts"]["referred_by"].map(lambda x: padded.get(x, ""))
    for t in ("revenue", "kpis", "nps"):
        tables[t]["account_id"] = tables[t]["account_id"].str.lstrip("A0")
    with pytest.raises(CskitError) as e:
        client_from_frames(tables, P)
    assert ("revenue.account_id: 14 row(s) whose id is not in accounts match one of its ids but for leading "
            "zeros (e.g. '1' here, '000001' in accounts)") in str(e.value)
    assert "kpis.account_id: 14 row(s)" in str(e.value) and "nps.account_id: 2 row(s)" in str(e.value)


def test_an_empty_kpis_table_is_one_problem_not_one_per_column():
    """A kpis file with its header only: 'no usable rows', without a 'column has no values' line per KPI."""
    tables = raw_tables()
    tables["kpis"] = tables["kpis"].iloc[:0]
    with pytest.raises(CskitError) as e:
        client_from_frames(tables, P)
    assert "- kpis: no usable rows (read 0; the table is empty)" in str(e.value)
    assert "has no values" not in str(e.value)


def _term_client(contract_type: str | None, churn_day: str = "03-31") -> dict[str, pd.DataFrame]:
    """40 accounts from 2023-04-01; 30 of them leave on {2024,2025}-{churn_day}: churns at the term's end
    of annual contracts (2/12 of churns would fall in those two months of the cycle if renewals were monthly)."""
    ids = [f"C{i:02d}" for i in range(40)]
    churn = [f"{2024 + i % 2}-{churn_day}" if i < 30 else "" for i in range(40)]
    acc = pd.DataFrame({"account_id": ids, "contract_start": "2023-04-01", "churn_date": churn})
    if contract_type is not None:
        acc["contract_type"] = contract_type
    months = pd.period_range("2023-04", "2025-06", freq="M")
    rev = [[a, str(m), "1000"] for a, c in zip(ids, churn) for m in months if not c or m <= pd.Period(c[:7], "M")]
    rev = pd.DataFrame(rev, columns=["account_id", "month", "mrr"])
    kpis = rev[["account_id", "month"]].assign(login_days="3")
    return {"accounts": acc, "revenue": rev, "kpis": kpis}


def test_churns_at_anniversaries_of_contracts_all_monthly_are_named_as_likely_annual():
    """30 of 30 churns (tenure 11+ months) fall on a term's last day, 03-31 of a contract from 04-01
    (binomial p vs 2/12 far below 0.001), while no account is annual: the loader warns."""
    data = load(_term_client(None), validate_params({"as_of": "2025-06-30"}))
    (w,) = [w for w in data.quality.warnings if w.code == "churn_at_anniversaries"]
    # expected: at-risk months of tenure 11+ (10 open accounts to 26, 15 churned at 11, 15 at 23): 160 + 15 + 195,
    # of them anniversary months (11, 12, 23, 24): 40 + 15 + 45
    assert w.values == {"n": 30, "churns": 30, "share": 1.0, "expected": round(100 / 370, 6)}
    assert str(w).startswith("30 of 30 churns of accounts 11+ months old (100.0%) fall at an anniversary")
    assert "; 27.0% if contracts renewed monthly" in str(w)
    for quiet in (_term_client("annual"), _term_client(None, churn_day="09-15")):
        data = load(quiet, validate_params({"as_of": "2025-06-30"}))
        assert not any(w.code == "churn_at_anniversaries" for w in data.quality.warnings)


def test_as_of_not_set_and_the_last_revenue_month_unusable_names_those_rows_not_the_params():
    """as_of left out defaults to the last month in revenue.month; when every row of that month is
    excluded (an export whose current month has blank mrr), the message says so and does not tell the
    consultant to leave as_of out (they did)."""
    tables = raw_tables()
    rev = tables["revenue"]
    rev = pd.concat([rev, pd.DataFrame([[a, "2024-07", "", "core"] for a in ("A1", "A2")], columns=rev.columns)])
    tables["revenue"] = rev
    with pytest.raises(CskitError) as e:
        client_from_frames(tables, validate_params({}))
    msg = str(e.value)
    assert "as_of is not set, so it is the last month in revenue.month (2024-07)" in msg
    assert "the last month with usable revenue is 2024-06" in msg and "set as_of: 2024-06-30" in msg
    assert "leave it out" not in msg


def _constant_hazard_client(history: int, seed: int, n: int = 5000, hazard: float = 0.03) -> dict[str, pd.DataFrame]:
    """``n`` all-monthly accounts starting uniformly over ``history`` months before as_of 2025-06, each
    leaving in any month of its contract with probability ``hazard``: no anniversary effect at all."""
    rng = np.random.default_rng(seed)
    as_of = pd.Period("2025-06", "M")
    start = rng.integers(0, history, n)  # months after the first month of the history
    tenure = rng.geometric(hazard, n) - 1  # the month of the contract it leaves in
    churned = start + tenure < history
    first = as_of - (history - 1)
    ids = [f"A{i:04d}" for i in range(n)]
    acc = pd.DataFrame({
        "account_id": ids, "contract_start": [str((first + int(s)).start_time.date()) for s in start],
        "churn_date": [str((first + int(s + t)).start_time.date() + pd.Timedelta(days=int(d))) if c else ""
                       for s, t, c, d in zip(start, tenure, churned, rng.integers(0, 28, n))],
        "contract_type": "monthly",
    })
    last = np.where(churned, start + tenure, history - 1)
    rev = pd.DataFrame([[a, str(first + m), "1000"] for a, s, e in zip(ids, start, last) for m in range(s, e + 1)],
                       columns=["account_id", "month", "mrr"])
    return {"accounts": acc, "revenue": rev, "kpis": rev[["account_id", "month"]].assign(login_days="3")}


@pytest.mark.parametrize("history", [14, 15, 16, 18])
def test_constant_hazard_monthly_clients_with_short_histories_get_no_anniversary_warning(history):
    """Contracts under 18 months old: tenures 11-13 are nearly the only long ones observable, so most
    churns of 11+ months fall at an anniversary by exposure alone (a test against 2 in 12 warned on most
    of these); against the share expected from each account's months at risk, none warns."""
    for seed in range(3):
        tables = _constant_hazard_client(history, seed)
        data = load(tables, validate_params({"as_of": "2025-06-30"}))
        assert not any(w.code == "churn_at_anniversaries" for w in data.quality.warnings), (history, seed)
