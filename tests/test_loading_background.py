"""The loader reads a folder's kpis and nps files in a background thread while it checks the accounts and
revenue (cskit.loading._Reads, _Early): every count, notice and message must be as if each step had run
in order, and no thread may outlive the load. The reference here is the plain in-order load: each file
read in turn (loading._read_csv), then client_from_frames."""
import threading
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from cskit import loading
from cskit.errors import CskitError
from cskit.loading import client_from_frames, load_client, parse_numbers
from cskit.notices import records
from cskit.params import validate_params

ACCOUNTS = pd.DataFrame(
    [["A1", "2024-01-15", "", "SMB"], ["A2", "2024-02-01", "2024-05-20", "Mid"], ["A3", "2024-03-10", "", ""],
     ["A4", "not a date", "", "SMB"], ["A1", "2024-01-20", "", "SMB"]],
    columns=["account_id", "contract_start", "churn_date", "segment"],
)
MONTHS = {"A1": range(1, 7), "A2": range(2, 6), "A3": range(3, 7)}


def tables() -> dict[str, pd.DataFrame]:
    rev = [[a, f"2024-{m:02d}", str(100 * (m + 1)), "core"] for a, ms in MONTHS.items() for m in ms]
    rev += [["A9", "2024-03", "100", "core"], ["A1", "2024-13", "100", "core"], ["A2", "2024-03", "-5", "core"]]
    kpi = [[a, f"2024-{m:02d}", str(m + i), f"0.{m}", "x" if (a, m) == ("A1", 2) else str(10 * m)]
           for i, (a, ms) in enumerate(MONTHS.items()) for m in ms]
    kpi += [["A1", "2024-03", "1", "0.1", "1"], ["A7", "2024-03", "1", "0.1", "1"]]
    return {
        "accounts": ACCOUNTS,
        "revenue": pd.DataFrame(rev, columns=["account_id", "month", "mrr", "product"]),
        "kpis": pd.DataFrame(kpi, columns=["account_id", "month", "login_days", "active_user_rate", "custom_metric"]),
        "nps": pd.DataFrame([["A1", "2024-03-05", "9"], ["A3", "2024-04-01", "11"], ["A7", "2024-04-02", "3"]],
                            columns=["account_id", "date", "score"]),
    }


def write(folder: Path, frames: dict[str, pd.DataFrame], encodings: dict[str, str] | None = None) -> Path:
    folder.mkdir()
    for name, df in frames.items():
        df.to_csv(folder / f"{name}.csv", index=False, encoding=(encodings or {}).get(name, "utf-8"))
    return folder


def in_order(folder: Path, params):
    """The load with every file read in turn, then checked in order."""
    report = loading._Report()
    frames, unread = {}, set()
    for name in ("accounts", "revenue", "kpis", "nps"):
        df = loading._read_csv(folder / f"{name}.csv", report)
        if df is None:
            unread.add(name)
        else:
            frames[name] = df
    return client_from_frames(frames, params, source=str(folder), _report=report, _unread=frozenset(unread))


def outcome(load):
    try:
        data = load()
    except CskitError as e:
        return str(e)
    return data


def assert_same_load(folder: Path, params):
    before = set(threading.enumerate())
    got = outcome(lambda: load_client(params))
    assert set(threading.enumerate()) <= before  # the reading thread was joined
    want = outcome(lambda: in_order(folder, params))
    if isinstance(want, str):
        assert got == want
        return want
    for name in ("accounts", "revenue", "kpis", "nps"):
        assert_frame_equal(getattr(got, name), getattr(want, name), check_exact=True)
    assert got.as_of == want.as_of and got.static_kpis == want.static_kpis and got.catalogue == want.catalogue
    assert got.quality.to_dict() == want.quality.to_dict()  # every count, and the notices in their order
    assert records(got.quality.warnings) == records(want.quality.warnings)
    return want


def test_row_problems_in_every_table_counted_and_noted_in_order(tmp_path):
    folder = write(tmp_path / "c", tables())
    # header mappings that match nothing: a notice per table, in table order, before any row's
    params = validate_params({"as_of": "2024-06-30", "data": str(folder),
                              "columns": {"accounts": {"Kunde": "kunde"}, "kpis": {"Monat": "monat"}}})
    data = assert_same_load(folder, params)
    excluded = {t: v["excluded"] for t, v in data.quality.tables.items()}
    assert excluded["accounts"] == {"bad_contract_start": 1, "duplicate_account_id": 1}
    assert excluded["revenue"] == {"bad_month": 1, "negative_mrr": 1, "unknown_account": 1}
    assert excluded["kpis"] == {"duplicate_account_month": 1, "unknown_account": 1}
    assert excluded["nps"] == {"score_out_of_range": 1, "unknown_account": 1}
    assert data.quality.tables["kpis"]["blanked_cells"] == {"custom_metric": 1}
    codes = [w.code for w in data.quality.warnings]
    assert codes.index("mapping_missing") < codes.index("rows_excluded")
    assert [w.values["table"] for w in data.quality.warnings if w.code == "mapping_missing"] == ["accounts", "kpis"]


@pytest.mark.parametrize("shift_jis", [("kpis",), ("nps",), ("kpis", "nps")])
def test_a_background_file_in_shift_jis_is_read_again_and_noted_in_order(tmp_path, shift_jis):
    frames = tables()
    frames["accounts"] = frames["accounts"].assign(segment=["中小", "中堅", "", "中小", "中小"])
    for table in shift_jis:
        frames[table] = frames[table].assign(account_id=frames[table]["account_id"].replace("A7", "顧客7"))
    frames["revenue"] = frames["revenue"].assign(product="基本")
    folder = write(tmp_path / "c", frames, {"revenue": "cp932"} | {t: "cp932" for t in shift_jis})
    data = assert_same_load(folder, validate_params({"as_of": "2024-06-30", "data": str(folder)}))
    notes = [w.values["file"] for w in data.quality.warnings if w.code == "read_as_shift_jis"]
    assert notes == ["revenue.csv", *(f"{t}.csv" for t in shift_jis)]


def test_fatal_problems_of_background_tables_stop_the_load_with_the_same_message(tmp_path):
    frames = tables()
    frames["kpis"] = frames["kpis"].drop(columns="month")  # a required column missing
    folder = write(tmp_path / "c", frames)
    (folder / "nps.csv").write_bytes(b"account_id,date,score\n\xff\xfe\xfa,2024-01-01,1\n")  # not UTF-8 nor cp932
    message = assert_same_load(folder, validate_params({"as_of": "2024-06-30", "data": str(folder)}))
    assert isinstance(message, str)
    assert "kpis: required column 'month' is missing" in message and "nps.csv: unreadable" in message
    assert "Row-level problems" not in message  # the accounts' rows are not checked when the load stops first


def test_no_as_of_from_revenue_stops_with_the_same_message(tmp_path):
    frames = tables()
    frames["revenue"] = frames["revenue"].assign(month="someday")
    folder = write(tmp_path / "c", frames)
    message = assert_same_load(folder, validate_params({"data": str(folder)}))
    assert isinstance(message, str) and "as_of cannot be set" in message


def test_a_failure_in_the_early_checks_is_raised_where_the_in_order_load_raises_it(tmp_path, monkeypatch):
    folder = write(tmp_path / "c", tables())
    params = validate_params({"as_of": "2024-06-30", "data": str(folder)})

    def broken(*args, **kwargs):
        raise RuntimeError("account rows")

    monkeypatch.setattr(loading, "_account_rows", broken)
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="account rows"):
        load_client(params)
    assert set(threading.enumerate()) <= before


def kpi_table(sorted_rows: bool, unknown: int = 0) -> pd.DataFrame:
    """KPIs of three accounts; with columns the loader leaves out (contract_months, a text column, an
    empty one) between the KPI columns, so that the kept columns' rows move up in the float block."""
    rows = [[a, f"2024-{m:02d}", str(m * (i + 1)), "3", f"note {m}", "", f"{m}.5", "" if m == 4 else str(-m)]
            for i, (a, ms) in enumerate(MONTHS.items()) for m in ms]
    cols = ["account_id", "month", "login_days", "contract_months", "memo", "blank", "rate", "seats"]
    df = pd.DataFrame(rows, columns=cols)
    df.loc[3, "rate"] = "x"  # a bad cell: blanked, the row kept
    if not sorted_rows:  # file order reversed, an unknown account and a duplicate account-month: gathered
        df = pd.concat([df.iloc[::-1], pd.DataFrame([["A8", "2024-03", "1", "3", "n", "", "1", "1"],
                                                     ["A1", "2024-02", "99", "3", "n", "", "9", "9"]],
                                                    columns=cols)], ignore_index=True)
    if unknown:  # rows of accounts not in accounts, most of the file: the kept rows are copied out
        other = pd.DataFrame([[f"X{i}", "2024-03", "1", "3", "n", "", "1", "1"] for i in range(unknown)], columns=cols)
        df = pd.concat([other, df], ignore_index=True)
    return df


@pytest.mark.parametrize(("sorted_rows", "unknown"), [(True, 0), (False, 0), (False, 40)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_kpi_columns_parsed_by_threads_into_the_block(monkeypatch, sorted_rows, unknown, threads):
    monkeypatch.setattr(loading, "PARSE_THREADS", threads)
    frames = tables()
    frames["kpis"] = kpi_table(sorted_rows, unknown)
    data = client_from_frames(frames, validate_params({"as_of": "2024-06-30"}))
    raw = frames["kpis"]
    # the expected frame, by pandas: the first row of each known account-month, in (account, month) order
    want = raw[raw["account_id"].isin(["A1", "A2", "A3"])].drop_duplicates(["account_id", "month"])
    want = want.sort_values(["account_id", "month"], kind="stable").reset_index(drop=True)
    got = data.kpis
    assert list(got.columns) == ["account_id", "month", "login_days", "rate", "seats"]
    assert got["account_id"].tolist() == want["account_id"].tolist()
    for col in ("login_days", "rate", "seats"):
        expected = pd.to_numeric(want[col].replace("", None), errors="coerce").to_numpy(dtype=float)
        assert got[col].to_numpy().tolist() == pytest.approx(expected.tolist(), nan_ok=True)
    assert data.quality.tables["kpis"]["blanked_cells"] == {"rate": 1}
    codes = [w.code for w in data.quality.warnings]
    assert "contract_months_ignored" in codes and "kpi_column_empty" in codes and "text_columns_ignored" in codes
    assert codes.index("contract_months_ignored") < codes.index("kpi_column_empty") < codes.index("cells_blanked")
    one = client_from_frames(frames, validate_params({"as_of": "2024-06-30"}))
    if threads != 1:
        monkeypatch.setattr(loading, "PARSE_THREADS", 1)
        one = client_from_frames(frames, validate_params({"as_of": "2024-06-30"}))
    assert_frame_equal(got, one.kpis, check_exact=True)
    assert records(data.quality.warnings) == records(one.quality.warnings)


def test_a_failure_parsing_a_kpi_column_in_a_thread_is_raised_by_the_load(monkeypatch):
    """A KPI column whose parse raises in a parse thread (loading._Parsing): the load raises that error in
    its own thread, and no thread outlives it."""
    monkeypatch.setattr(loading, "PARSE_THREADS", 2)
    monkeypatch.setattr(loading.os, "cpu_count", lambda: 2)  # (threads whatever the machine's cores)
    frames = tables()
    frames["kpis"] = kpi_table(True)
    into, where = loading._numbers_into, []

    def failing(s, out):
        if s.name == "rate":
            where.append(threading.current_thread().name)
            raise RuntimeError("parse rate")
        return into(s, out)

    monkeypatch.setattr(loading, "_numbers_into", failing)
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="parse rate"):
        client_from_frames(frames, validate_params({"as_of": "2024-06-30"}))
    assert where == ["cskit-parse"]
    assert set(threading.enumerate()) <= before


def test_an_interrupt_while_checking_early_leaves_no_thread(tmp_path, monkeypatch):
    folder = write(tmp_path / "c", tables())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loading._Early, "of", interrupted)
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        load_client(validate_params({"as_of": "2024-06-30", "data": str(folder)}))
    assert set(threading.enumerate()) <= before


# Numbers as clients write them that DuckDB's CSV reader and parse_numbers read alike (the kpis file is then
# read by DuckDB as numbers: loading._read_kpis_typed), and cells where they differ or DuckDB refuses
# (the file is then read as text): either way the load is the in-order load of the text cells.
SAME_NUMBERS = [" 7", "8 ", "+1", "-2", ".5", "5.", "-.25", "1e3", "1E+02", "2.5e-3", "007", "-0", "1e-400", "",
                "0.30000000000000004", "123456789012345678901234567890"]
TRAPS = ["1_000", "+-1", "inf", "-Infinity", "nan", "NaN", "1e400", "NA", "-", " ", "１２", "1,234", "x", "12円"]


def number_kpis(trap: str | None) -> pd.DataFrame:
    cells = SAME_NUMBERS + [str(i) for i in range(18 - len(SAME_NUMBERS))]
    rows = [[a, f"2024-{m:02d}"] for a, ms in MONTHS.items() for m in ms]  # 14 account-months
    return pd.DataFrame([r + [cells[i], str(i) if trap is None or i != 5 else trap, cells[-1 - i]]
                         for i, r in enumerate(rows)], columns=["account_id", "Monat", "seats", "logins", "rate"])


def test_kpis_read_as_numbers_give_the_text_cells_load(tmp_path):
    frames = tables()
    frames["kpis"] = number_kpis(None)
    folder = write(tmp_path / "c", frames)
    params = validate_params({"as_of": "2024-06-30", "data": str(folder), "columns": {"kpis": {"Monat": "month"}}})
    typed = loading._read_kpis_typed(folder / "kpis.csv", loading._connect(), {"Monat": "month"})
    assert typed is not None and str(typed["seats"].dtype) == "double[pyarrow]"
    assert str(typed["Monat"].dtype) == "string[pyarrow]"  # mapped to month: read as text
    data = assert_same_load(folder, params)
    assert data.kpis["seats"].iloc[:3].tolist() == [7.0, 8.0, 1.0]  # (A1's first months, in file order)
    assert "blanked_cells" not in data.quality.tables["kpis"]


@pytest.mark.parametrize("trap", TRAPS)
def test_cells_duckdb_reads_otherwise_send_the_kpis_file_to_the_text_reading(tmp_path, trap):
    frames = tables()
    frames["kpis"] = number_kpis(trap)
    folder = write(tmp_path / "c", frames)
    params = validate_params({"as_of": "2024-06-30", "data": str(folder), "columns": {"kpis": {"Monat": "month"}}})
    try:
        typed = loading._read_kpis_typed(folder / "kpis.csv", loading._connect(), {"Monat": "month"})
    except loading.duckdb.Error:
        typed = None
    assert typed is None
    data = assert_same_load(folder, params)
    bad = trap not in ("nan", "NaN", "NA", "-", " ")  # (missing markers and blank cells are no values, not bad)
    assert data.quality.tables["kpis"].get("blanked_cells", {}) == ({"logins": 1} if bad and trap not in (
        "1,234", "１２", "12円") else {})


@pytest.mark.parametrize("trap", ["1_000", "+-1"])
def test_without_the_guard_duckdb_would_read_grouped_digits_and_a_double_sign_as_numbers(tmp_path, monkeypatch, trap):
    frames = tables()
    frames["kpis"] = number_kpis(trap)
    folder = write(tmp_path / "c", frames)
    monkeypatch.setattr(loading, "_plain_numbers", lambda path: True)
    typed = loading._read_kpis_typed(folder / "kpis.csv", loading._connect(), {"Monat": "month"})
    assert typed["logins"].iloc[5] == {"1_000": 1000.0, "+-1": -1.0}[trap]  # while parse_numbers says: not a number
    assert parse_numbers(pd.Series([trap]))[1].tolist() == [True]


@pytest.mark.parametrize(("body", "plain"), [("ACC_001,2024-01,5\n", True), ("A1,2024-01,1_0\n", False),
                                             ("A1,2024-01,+-3\n", False), ("", True), ("A1,2024_01,5\n", False),
                                             ("A1,2024-01,5_\n_A,x,y", True)])
def test_plain_numbers_looks_past_the_header_for_grouped_digits_and_double_signs(tmp_path, body, plain):
    path = tmp_path / "kpis.csv"
    path.write_text("account_id,month,seat_1_2\n" + body, encoding="utf-8")
    assert loading._plain_numbers(path) is plain


def test_the_background_tables_key_columns_are_coded_by_the_reading_thread(tmp_path, monkeypatch):
    frames = tables()
    frames["kpis"] = frames["kpis"].rename(columns={"month": "Monat"})
    folder = write(tmp_path / "c", frames)
    params = validate_params({"as_of": "2024-06-30", "data": str(folder), "columns": {"kpis": {"Monat": "month"}}})
    assert_same_load(folder, params)
    calls = []
    code = loading._code

    def recorded(s):
        calls.append((threading.current_thread().name, s.name, len(s)))
        return code(s)

    monkeypatch.setattr(loading, "_code", recorded)
    load_client(params)
    n_kpis, n_nps = len(frames["kpis"]), len(frames["nps"])
    ahead = [(name, n) for thread, name, n in calls if thread == "cskit-read"]
    assert sorted(ahead) == sorted([("account_id", n_kpis), ("Monat", n_kpis), ("account_id", n_nps), ("date", n_nps)])
    here = [(name, n) for thread, name, n in calls if thread != "cskit-read"]  # (not coded again)
    assert not {("account_id", n_kpis), ("month", n_kpis), ("account_id", n_nps), ("date", n_nps)} & set(here)
    assert ("contract_start", len(frames["accounts"])) in here  # (the accounts' and revenue's: by this thread)


@pytest.mark.parametrize(("body", "plain"), [("A1,2024-01,1E+05\n", True), ("A1,2024-01,+5\nA2,2024-01,-+5\n", True),
                                             ("A1,2024-01,1E+05\nA2,2024-01,+-5\n", False), ("A1,2024-01,5+\n", True)])
def test_plain_numbers_tells_a_plus_sign_from_a_double_sign(tmp_path, body, plain):
    path = tmp_path / "kpis.csv"
    path.write_text("account_id,month,seats\n" + body, encoding="utf-8")
    assert loading._plain_numbers(path) is plain


def test_nps_rows_checked_by_a_thread_count_and_note_as_checked_in_turn(monkeypatch):
    frames = tables()
    params = validate_params({"as_of": "2024-06-30"})
    threads = []
    check = loading._nps_rows
    monkeypatch.setattr(loading, "_nps_rows", lambda *a: (threads.append(threading.current_thread().name),
                                                          check(*a))[1])
    monkeypatch.setattr(loading.os, "cpu_count", lambda: 2)  # two cores: checked by a thread
    beside = client_from_frames(frames, params)
    assert threads == ["cskit-check"]
    monkeypatch.setattr(loading.os, "cpu_count", lambda: 1)  # one core: checked in turn
    in_turn = client_from_frames(frames, params)
    assert threads == ["cskit-check", threading.current_thread().name]
    assert_frame_equal(beside.nps, in_turn.nps, check_exact=True)
    assert beside.quality.to_dict() == in_turn.quality.to_dict()
    assert records(beside.quality.warnings) == records(in_turn.quality.warnings)
    assert list(beside.quality.tables) == ["accounts", "revenue", "kpis", "nps"]
    assert beside.quality.tables["nps"]["excluded"] == {"score_out_of_range": 1, "unknown_account": 1}


def test_a_failure_in_the_nps_thread_is_raised_where_the_in_turn_check_raises_it(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("nps rows")

    monkeypatch.setattr(loading, "_nps_rows", broken)
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="nps rows"):
        client_from_frames(tables(), validate_params({"as_of": "2024-06-30"}))
    assert set(threading.enumerate()) <= before


def test_the_kpis_float_block_is_mapped_by_the_reading_thread(tmp_path, monkeypatch):
    frames = tables()
    folder = write(tmp_path / "c", frames)
    params = validate_params({"as_of": "2024-06-30", "data": str(folder)})
    assert_same_load(folder, params)
    made = []
    mapped = loading.mapped_block
    monkeypatch.setattr(loading, "mapped_block", lambda shape: (made.append((threading.current_thread().name, shape)),
                                                                 mapped(shape))[1])
    load_client(params)
    assert made == [("cskit-read", (3, len(frames["kpis"])))]  # (login_days, active_user_rate, custom_metric)
    frames["kpis"].loc[len(frames["kpis"])] = [""] * 5  # a blank row, dropped: a block of its own rows, made here
    folder = write(tmp_path / "d", frames)
    made.clear()
    params = validate_params({"as_of": "2024-06-30", "data": str(folder)})
    load_client(params)
    assert made == [("cskit-read", (3, len(frames["kpis"]))),
                    (threading.current_thread().name, (3, len(frames["kpis"]) - 1))]
    monkeypatch.undo()
    assert_same_load(folder, params)


@pytest.mark.parametrize("trap", ["1_000", "+-1"])
def test_a_kpis_file_with_carriage_returns_alone_gets_the_text_cells_load(tmp_path, trap):
    # old Excel for Mac's "CSV (Macintosh)" ends lines with "\r" alone: DuckDB reads its rows, so the guard
    # must look past the header's "\r" too (it used to find no "\n", take the file for a header alone and
    # let DuckDB read "1_000" as 1000 where the text reading blanks and counts the cell)
    frames = tables()
    frames["kpis"] = number_kpis(trap)
    folder = write(tmp_path / "c", frames)
    path = folder / "kpis.csv"
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r"))
    assert b"\n" not in path.read_bytes()
    assert loading._plain_numbers(path) is False
    params = validate_params({"as_of": "2024-06-30", "data": str(folder), "columns": {"kpis": {"Monat": "month"}}})
    data = assert_same_load(folder, params)
    assert data.quality.tables["kpis"]["blanked_cells"] == {"logins": 1}


@pytest.mark.parametrize("at", [0, 1, 2, 3])
def test_plain_numbers_finds_a_pair_across_its_scan_windows(tmp_path, monkeypatch, at):
    monkeypatch.setattr(loading, "SCAN_BYTES", 4)
    body = "A1,2024-01,55\n"
    for pair, plain in (("1_2", False), ("+-", False), ("x_2", True)):
        path = tmp_path / "kpis.csv"
        path.write_text("account_id,month,seats\n" + "X" * at + pair + "\n" + body, encoding="utf-8")
        assert loading._plain_numbers(path) is plain, (pair, at)


@pytest.mark.parametrize("cores", [1, 2])
def test_the_early_checks_let_their_tables_go_with_them_on_one_core_too(monkeypatch, cores):
    """The early checks' work (holding the typed tables: 0.4 GB at 100k accounts) is freed with the
    checks, without a garbage collection, whether a thread did it or (one core) the caller."""
    import gc
    import weakref

    class Tables:
        pass

    monkeypatch.setattr(loading.os, "cpu_count", lambda: cores)

    def checked() -> weakref.ref:
        tables = Tables()
        early = loading._Beside(lambda report: tables is not None)
        assert early.merged(loading._Report()) is True
        assert (early.beside.thread is None) == (cores == 1)
        return weakref.ref(tables)

    gc.disable()
    try:
        assert checked()() is None
    finally:
        gc.enable()
