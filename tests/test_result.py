"""The result files' writers give the bytes pandas gives (cskit.result)."""
import numpy as np
import pandas as pd
import pytest

from cskit import result as R
from cskit.result import csv_parts, formatted_floats, month_text, write_csv

EDGE = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-5, 1e-4, 123456.0, 1234567.0, 1e16, 2.5, 0.1 + 0.2, 1 / 3, -1e-300,
        5e-324, 999999.5, 1.234567e-5, 11.0, -3.0]


def _frame(rng) -> pd.DataFrame:
    x = np.concatenate([EDGE, rng.normal(size=3000) * 10.0 ** rng.integers(-8, 9, 3000),
                        np.round(rng.normal(size=3000) * 20, 2), np.full(50, np.nan)])
    n = len(x)
    return pd.DataFrame({
        "account_id": [f"A{i:05d}" if i % 7 else None for i in range(n)],
        "x": x, "y": x[::-1].copy(),
        "k": np.arange(n), "label": ["a,b" if i % 5 == 0 else 'q"t' if i % 5 == 1 else "é" for i in range(n)],
        "f32": x.astype(np.float32), "flag": x > 0, "mixed": pd.Series(x, dtype=object),
        "month": pd.date_range("2024-01-01", periods=n, freq="D"),
    })


@pytest.mark.parametrize("fmt", ["%.6g", "%.10g", "%.2f"])
@pytest.mark.parametrize("kind", ["arrow", "arrow in halves", "pandas"])
def test_write_csv_gives_pandas_bytes_and_leaves_the_frame(tmp_path, monkeypatch, fmt, kind):
    """Text without quotes, floats, integers and flags: Arrow's join (csv_parts; its rows in two halves, one
    by a thread, from SPLIT_ROWS rows on: 6,069 here); a frame with a date column, text with commas and
    quotes, a float32 or object column of numbers: pandas."""
    df = _frame(np.random.default_rng(5))
    if kind != "pandas":
        df = df.drop(columns=["month", "label", "f32", "mixed"]).assign(tier=np.where(df["x"] > 0, "green", "red"))
    monkeypatch.setattr(R, "SPLIT_ROWS", 1000 if kind == "arrow in halves" else 10**9)
    parts = csv_parts(df, fmt)
    assert (parts is not None) == (kind != "pandas")
    assert parts is None or len(parts) == (3 if kind == "arrow in halves" else 2)  # the header, the rows' parts
    before = df.copy()
    df.to_csv(tmp_path / "pandas.csv", index=False, float_format=fmt, lineterminator="\n", encoding="utf-8")
    write_csv(df, tmp_path / "kit.csv", float_format=fmt)
    assert (tmp_path / "kit.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    pd.testing.assert_frame_equal(df, before)


def test_write_csv_one_column_and_repeated_names(tmp_path):
    for df in (pd.DataFrame({"x": [np.nan, 1.0, np.nan]}),
               pd.DataFrame([[1.5, 2.25], [np.nan, -0.0]], columns=["a", "a"])):
        df.to_csv(tmp_path / "p.csv", index=False, float_format="%.6g", lineterminator="\n", encoding="utf-8")
        write_csv(df, tmp_path / "k.csv")
        assert (tmp_path / "k.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()


def test_formatted_floats_by_hand():
    got = formatted_floats(np.array([0.0, -0.0, np.nan, 1234567.0, 2.5, 2.5, 1e-5]), "%.6g")
    assert list(got) == ["0", "-0", "", "1.23457e+06", "2.5", "2.5", "1e-05"]


def test_month_text_as_strftime():
    dates = pd.Series(pd.to_datetime(["2024-01-31", None, "2023-12-01", "2024-01-01"]))
    assert list(month_text(dates)[[0, 2, 3]]) == ["2024-01", "2023-12", "2024-01"]
    assert pd.isna(month_text(dates)[1])
    expected = dates.dt.strftime("%Y-%m")
    pd.testing.assert_series_equal(pd.Series(month_text(dates), dtype=object), expected.astype(object))


@pytest.mark.parametrize("split", [10**9, 2])
def test_csv_parts_by_hand(monkeypatch, split):
    monkeypatch.setattr(R, "SPLIT_ROWS", split)
    df = pd.DataFrame({"a": ["x", None, ""], "b": [1.5, np.nan, -0.0], "c": [True, False, True], "d": [3, -4, 0]})
    parts = [bytes(p) for p in csv_parts(df, "%.6g")]
    assert parts[0] == b"a,b,c,d\n"
    assert b"".join(parts[1:]) == b"x,1.5,True,3\n,,False,-4\n,-0,True,0\n"
    assert parts[1:] == ([b"x,1.5,True,3\n", b",,False,-4\n,-0,True,0\n"] if split == 2 else
                         [b"x,1.5,True,3\n,,False,-4\n,-0,True,0\n"])
