"""Params validation: every wrong key or value is refused with a message naming it."""
import datetime as dt
from pathlib import Path

import pytest
import yaml

from cskit.errors import CskitError
from cskit.params import Params, load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]


def refused(raw: dict) -> str:
    with pytest.raises(CskitError) as e:
        validate_params(raw)
    return str(e.value)


def test_defaults_follow_design():
    p = validate_params({})
    assert (p.client, p.language, p.currency, p.data) == ("demo", "ja", "JPY", "data/demo")
    assert p.as_of is None and p.columns == {} and p.kpis == {}
    assert (p.horizon_months, p.ltv_months, p.gross_margin, p.improvement_pct) == (12, 36, 1.0, 10)
    assert (p.kpi_lag_months, p.alpha, p.bootstrap, p.seed) == (1, 0.05, 200, 0)


def test_unknown_key_named_with_value_and_allowed_keys():
    msg = refused({"horizon_month": 6})
    assert "unknown key 'horizon_month'" in msg and "6" in msg and "horizon_months" in msg


def test_wrong_type_named():
    msg = refused({"horizon_months": "twelve"})
    assert "'horizon_months'" in msg and "'twelve'" in msg


def test_out_of_range_named():
    msg = refused({"alpha": 1.5})
    assert "'alpha'" in msg and "1.5" in msg


def test_yaml_boolean_for_a_number_refused():
    msg = refused(yaml.safe_load("bootstrap: yes"))
    assert "'bootstrap'" in msg and "true/false" in msg


def test_bad_date_named():
    msg = refused({"as_of": "2026-13-01"})
    assert "'as_of'" in msg and "'2026-13-01'" in msg and "YYYY-MM-DD" in msg
    assert msg.count("2026-13-01") == 1


@pytest.mark.parametrize("client", ["../x", "a/b", "", "a b", "x" * 65])
def test_unsafe_client_refused(client):
    msg = refused({"client": client})
    assert "'client'" in msg and repr(client) in msg


def test_bad_language_and_currency_named_together():
    msg = refused({"language": "fr", "currency": "yen"})
    assert "'language'" in msg and "'fr'" in msg and "'currency'" in msg and "'yen'" in msg


def test_columns_table_name_checked():
    msg = refused({"columns": {"acounts": {"顧客ID": "account_id"}}})
    assert "columns.acounts" in msg


def test_kpi_override_field_checked():
    msg = refused({"kpis": {"login_days": {"upper": "many"}}})
    assert "kpis.login_days.upper" in msg and "'many'" in msg


def test_yaml_date_object_and_iso_string_as_of():
    p = validate_params(yaml.safe_load("as_of: 2026-06-30"))
    assert p.as_of == dt.date(2026, 6, 30)
    assert validate_params({"as_of": "2026-06-30"}).as_of == dt.date(2026, 6, 30)


def test_yaml_scientific_string_alpha():
    """PyYAML reads 1e-3 as a string; pydantic turns it into the number."""
    assert validate_params(yaml.safe_load("alpha: 1e-3")).alpha == pytest.approx(0.001)


def test_template_documents_every_key_with_its_default():
    raw = yaml.safe_load((ROOT / "params/template.yaml").read_text(encoding="utf-8"))
    assert list(raw) == list(Params.model_fields)
    assert validate_params(raw) == Params()


def test_demo_params_valid():
    p = load_params(ROOT / "params/demo.yaml")
    assert (p.client, p.data, p.language, str(p.as_of)) == ("demo", "data/demo", "ja", "2026-06-30")


def test_missing_params_file(tmp_path):
    with pytest.raises(CskitError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def _write(tmp_path, text: str, encoding: str = "utf-8"):
    path = tmp_path / "p.yaml"
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("text", ["", "# client: acme\n# data: data/acme\n"])
def test_an_empty_params_file_is_refused_instead_of_running_the_demo(tmp_path, text):
    """An empty file (or one of comments only, e.g. saved before editing) would take every default,
    data: data/demo included, and diagnose the demo client under its name: it is refused."""
    with pytest.raises(CskitError) as e:
        load_params(_write(tmp_path, text))
    assert str(e.value).startswith(f"Params file {tmp_path / 'p.yaml'} is empty")
    assert "set at least client: and data:" in str(e.value)


def test_a_params_file_without_data_is_refused_not_run_on_the_demo(tmp_path):
    """data's default (data/demo) would diagnose the demo client under the file's client name."""
    with pytest.raises(CskitError) as e:
        load_params(_write(tmp_path, "client: acme\nlanguage: en\n"))
    assert str(e.value).startswith(f"Params file {tmp_path / 'p.yaml'} does not say where the client's data is")
    assert "Fix: add data:" in str(e.value)
    assert load_params(_write(tmp_path, "client: acme\ndata: somewhere\n")).data == "somewhere"


def test_impossible_date_names_the_key_instead_of_a_traceback(tmp_path):
    with pytest.raises(CskitError) as e:
        load_params(_write(tmp_path, "client: t\nas_of: 2026-13-45\n"))
    assert "key 'as_of': is not a real date (month must be in 1..12)" in str(e.value) and "'2026-13-45'" in str(e.value)
    with pytest.raises(CskitError, match="key 'as_of': is not a real date"):
        load_params(_write(tmp_path, "as_of: 2026-02-30\n"))


def test_a_month_as_of_is_taken_as_its_last_day(tmp_path):
    assert load_params(_write(tmp_path, "data: d\n" + "as_of: 2026-06\n")).as_of == dt.date(2026, 6, 30)
    assert load_params(_write(tmp_path, "data: d\n" + "as_of: 2024-02\n")).as_of == dt.date(2024, 2, 29)
    assert load_params(_write(tmp_path, "data: d\n" + "as_of: 2026-06-15\n")).as_of == dt.date(2026, 6, 15)


def test_a_misspelt_key_gets_a_did_you_mean(tmp_path):
    with pytest.raises(CskitError) as e:
        load_params(_write(tmp_path, "horizon_month: 12\nlangauge: en\n"))
    assert "unknown key 'horizon_month' (value 12). Did you mean 'horizon_months'?" in str(e.value)
    assert "unknown key 'langauge' (value 'en'). Did you mean 'language'?" in str(e.value)
    with pytest.raises(CskitError) as e:
        load_params(_write(tmp_path, "zzz: 1\n"))
    assert "Did you mean" not in str(e.value)


def test_a_shift_jis_params_file_is_read(tmp_path):
    p = load_params(_write(tmp_path, "client: t\ndata: d\nclient_name: 株式会社テスト\n", encoding="cp932"))
    assert p.client_name == "株式会社テスト"
    (tmp_path / "bad.yaml").write_bytes(b"client: \x81\x00\xff\n")
    with pytest.raises(CskitError, match="neither UTF-8 nor Shift_JIS"):
        load_params(tmp_path / "bad.yaml")
