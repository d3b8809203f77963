"""Run parameters (DESIGN §4), validated in one place before anything runs.

The YAML's top-level keys are the notebook's papermill parameters. PyYAML turns dates into ``date``
objects, ``yes`` into True and ``007`` into 7, so every key is checked here with pydantic
(``extra="forbid"``) and a wrong key or value is answered with a message naming it.
"""
from __future__ import annotations

import calendar
import datetime as dt
import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cskit.catalogue import DEFAULT_CATALOGUE
from cskit.errors import CskitError
from cskit.warehouse import is_url, parse_url, public_data, shown_data

REPO_ROOT = Path(__file__).resolve().parents[1]  # the cskit repository (the kit is installed editable)
SAFE_CLIENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
TABLES = ("accounts", "revenue", "kpis", "nps", "events")
DATABASE_SUFFIXES = (".duckdb", ".db", ".ddb")


class KPIOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ja: str | None = None
    en: str | None = None
    category: str | None = None
    lower: float | None = None
    upper: float | None = None
    direction: Literal[1, -1] | None = None


EVENT_AGGS = ("count", "active_days", "distinct_users", "sum", "mean", "max")


class EventKPI(BaseModel):
    """One KPI of ``events_kpis`` (DESIGN §7): ``{event: name or [names], agg: ...}`` or ``{ratio: [a, b]}``."""

    model_config = ConfigDict(extra="forbid")
    event: str | list[str] | None = None
    agg: Literal["count", "active_days", "distinct_users", "sum", "mean", "max"] | None = None
    ratio: tuple[str, str] | None = None

    @field_validator("event")
    @classmethod
    def _event_names(cls, v: Any) -> Any:
        if v is None:
            return v
        names = [v] if isinstance(v, str) else v
        if not names:
            raise ValueError("the event list is empty: name at least one event")
        if any(not str(n).strip() for n in names):
            raise ValueError("an event name is empty")
        return [str(n).strip() for n in names]

    @model_validator(mode="after")
    def _one_kind(self) -> EventKPI:
        if self.ratio is not None:
            if self.event is not None or self.agg is not None:
                raise ValueError("give either {ratio: [a, b]} or {event: ..., agg: ...}, not both")
        elif self.event is None or self.agg is None:
            raise ValueError(f"needs both event (a name or a list) and agg (one of {', '.join(EVENT_AGGS)}), "
                             "or ratio: [a, b]")
        return self

    @property
    def events(self) -> list[str]:
        """The event names this KPI counts (empty for a ratio)."""
        return list(self.event or [])


class Params(BaseModel):
    """Every key of params/<client>.yaml. Defaults follow DESIGN §4."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    client: str = "demo"
    language: Literal["ja", "en"] = "ja"
    currency: str = "JPY"
    data: str = "data/demo"
    columns: dict[Literal["accounts", "revenue", "kpis", "nps", "events"], dict[str, str]] = Field(
        default_factory=dict
    )
    as_of: dt.date | None = None
    horizon_months: int = Field(12, ge=1, le=60)
    ltv_months: int = Field(36, ge=1, le=120)
    gross_margin: float = Field(1.0, gt=0, le=1)
    improvement_pct: float = Field(10, gt=0, le=100)
    kpi_lag_months: int = Field(1, ge=0, le=12)
    alpha: float = Field(0.05, gt=0, lt=1)
    bootstrap: int = Field(200, ge=0, le=5000)
    seed: int = Field(0, ge=0)
    kpis: dict[str, KPIOverride] = Field(default_factory=dict)
    tables: dict[Literal["accounts", "revenue", "kpis", "nps", "events"], str] = Field(default_factory=dict)
    events_kpis: dict[str, EventKPI] = Field(default_factory=dict)
    timezone: str = "UTC"
    engine: Literal["duckdb", "spark"] = "duckdb"
    alert_drop: float = Field(15, gt=0, le=100)
    alert_months: int = Field(3, ge=1, le=11)
    previous: str = ""
    client_name: str = Field("", max_length=200)  # the client's display name in titles (any text); [client]

    @field_validator("client")
    @classmethod
    def _safe_client(cls, v: str) -> str:
        if not SAFE_CLIENT.match(v):
            raise ValueError(
                "must be 1-64 letters, digits, '-' or '_' (it becomes a folder under output/)"
            )
        return v

    @field_validator(
        "horizon_months", "ltv_months", "gross_margin", "improvement_pct", "kpi_lag_months", "alpha", "bootstrap",
        "seed", "alert_drop", "alert_months", mode="before",
    )
    @classmethod
    def _not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a number, not true/false (YAML reads yes/no/on/off as true/false)")
        return v

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        if is_url(v):
            parse_url(v)  # a ValueError names what is wrong, with the password masked
        return v

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for name, table in v.items():
            parts = table.strip().split(".")
            if len(parts) > 2 or not all(p.strip() for p in parts) or any(ord(c) < 32 for c in table):
                raise ValueError(f"{name}: {table!r} is not a table name; write table or schema.table, "
                                 "e.g. tables: {accounts: crm_accounts, revenue: billing.mrr}")
        data = info.data.get("data", "")
        if v and not (is_url(data) or Path(data).suffix.lower() in DATABASE_SUFFIXES):
            raise ValueError("names a database's tables, so data must be a database URL (postgresql://..., "
                             "duckdb:///...) or a .duckdb file; a folder's tables are its accounts.csv, "
                             "revenue.csv, ... files")
        return {k: t.strip() for k, t in v.items()}

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", v):
            raise ValueError("must be a 3-letter ISO code such as JPY or USD")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not a time zone: use an IANA name such as Asia/Tokyo, Europe/Berlin or UTC") from None
        return v

    @field_validator("events_kpis")
    @classmethod
    def _event_kpi_names(cls, v: dict[str, EventKPI]) -> dict[str, EventKPI]:
        for name in v:
            if not name.isidentifier():
                raise ValueError(f"KPI name {name!r} must be letters, digits and _ (not starting with a digit)")
        return v

    @model_validator(mode="after")
    def _ratios(self) -> Params:
        known = set(self.events_kpis) | set(DEFAULT_CATALOGUE) | set(self.kpis)
        problems = []
        for name, kpi in self.events_kpis.items():
            for operand in kpi.ratio or ():
                if operand == name:
                    problems.append(f"events_kpis.{name}.ratio: {name!r} cannot divide itself")
                elif operand not in known:
                    problems.append(
                        f"events_kpis.{name}.ratio: {operand!r} is not a KPI of events_kpis nor of the catalogue "
                        "(a column of the kpis table outside the catalogue: declare it under "
                        f"kpis: {{{operand}: {{}}}})"
                    )
        if _ratio_cycle(self.events_kpis):
            problems.append("events_kpis: ratios refer to each other in a circle (break the cycle)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of(cls, v: Any) -> Any:
        if v is None or isinstance(v, dt.date):
            return v
        if isinstance(v, str):
            text = v.strip()
            if not text:
                return None
            month = re.fullmatch(r"(\d{4})-(\d{1,2})", text)
            try:
                if month:  # YYYY-MM: the analysis month, taken as its last day
                    y, m = int(month.group(1)), int(month.group(2))
                    return dt.date(y, m, calendar.monthrange(y, m)[1])
                return dt.date.fromisoformat(text)
            except ValueError as e:
                raise ValueError(f"is not a real date ({e}): write YYYY-MM-DD (e.g. 2026-06-30) or YYYY-MM "
                                 "(the month's last day), or leave it empty for the last month of revenue") from None
        raise ValueError("must be a date YYYY-MM-DD or a month YYYY-MM (or empty for the last month of revenue)")

    def __repr_args__(self):
        """repr / str show ``data`` with a URL's password masked (a notebook cell printing params)."""
        for key, value in super().__repr_args__():
            yield key, shown_data(value) if key == "data" and isinstance(value, str) else value

    def papermill_parameters(self, base: Path | None = None) -> dict[str, Any]:
        """The params as papermill injects them: plain JSON types, ``data`` as an absolute path."""
        out = self.model_dump(mode="json")
        out["data"] = public_data(str(resolve_data_path(self.data, base)))
        if self.previous:
            out["previous"] = str(resolve_data_path(self.previous, base))
        return out


def _ratio_cycle(spec: dict[str, EventKPI]) -> bool:
    """True if ratios of ``spec`` depend on each other in a cycle."""
    state: dict[str, int] = {}

    def visit(name: str) -> bool:
        if state.get(name) == 1:
            return True
        if state.get(name) == 2 or name not in spec or spec[name].ratio is None:
            return False
        state[name] = 1
        found = any(visit(o) for o in spec[name].ratio)
        state[name] = 2
        return found

    return any(visit(n) for n in spec)


def resolve_data_path(data: str, base: Path | None = None) -> Path | str:
    """Resolve ``data`` against ``base`` (the current directory by default). Database URLs stay URLs
    (a relative ``duckdb://`` path is made absolute)."""
    if is_url(data):
        url = parse_url(data)
        if url.backend == "duckdb" and not Path(url.path).expanduser().is_absolute():
            return "duckdb://" + str(((base or Path.cwd()) / url.path).resolve())
        return data
    p = Path(data).expanduser()
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    return p.resolve()


def absolute_data(params: Params, base: str | Path | None = None) -> Params:
    """``params`` with ``data`` made absolute.

    (Here, not in :mod:`cskit.pipeline`: ``cskit run``'s own process uses it without importing pandas.)
    A relative ``data`` is resolved against ``base`` (default: the current directory). When ``base``
    is not given and the path does not exist there but does under the cskit repository root, the
    root is used: a notebook kernel started in ``notebooks/`` (JupyterLab, nbval) still finds
    ``data/demo``. The current directory is never changed.
    """
    resolved = resolve_data_path(params.data, Path(base) if base is not None else None)
    if base is None and isinstance(resolved, Path) and not resolved.exists():
        fallback = resolve_data_path(params.data, REPO_ROOT)
        if isinstance(fallback, Path) and fallback.exists():
            resolved = fallback
    update = {"data": str(resolved)}
    if params.previous:
        previous = resolve_data_path(params.previous, Path(base) if base is not None else None)
        update["previous"] = str(previous)
    return params.model_copy(update=update)


def _describe(err: dict) -> str:
    loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
    value = err.get("input")
    if isinstance(value, str) and is_url(value):
        value = shown_data(value)
    elif isinstance(value, dict) and isinstance(value.get("data"), str):
        value = {**value, "data": shown_data(value["data"])}
    if err["type"] == "extra_forbidden":
        model = (
            {"events_kpis": EventKPI, "kpis": KPIOverride}.get(str(err["loc"][0]), Params)
            if len(err["loc"]) > 1
            else Params
        )
        allowed = ", ".join(model.model_fields)
        close = difflib.get_close_matches(str(err["loc"][-1]), list(model.model_fields), n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"- unknown key '{loc}' (value {value!r}).{hint} Allowed keys: {allowed}."
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a check across keys: its message names them
        return "- " + "\n- ".join(msg.split("; ")) + "."
    if err["type"] == "literal_error" and str(err["loc"][-1]) == "agg":
        msg = f"unknown aggregation; use one of {', '.join(EVENT_AGGS)}"
    return f"- key '{loc}': {msg} (got {value!r})."


def validate_params(raw: dict[str, Any] | None) -> Params:
    """Validate a dict of params; raise :class:`CskitError` naming every bad key and value."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CskitError(f"Params must be a mapping of key: value; got {type(raw).__name__}.")
    try:
        return Params(**raw)
    except ValidationError as e:
        lines = [_describe(err) for err in e.errors()]
        raise CskitError("Invalid params:\n" + "\n".join(lines)) from None


def load_params(path: str | Path) -> Params:
    """Read and validate a params YAML file. It must say where the data is (``data:``): the default
    (data/demo, for a Params made in code) would diagnose the demo client under the file's client name."""
    path = Path(path)
    if not path.is_file():
        raise CskitError(f"Params file not found: {path}. Copy params/template.yaml and edit it.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:  # a params file saved by a Japanese Windows editor: Shift_JIS (cp932) is read as such
            text = data.decode("cp932")
        except UnicodeDecodeError:
            raise CskitError(f"Params file {path} is neither UTF-8 nor Shift_JIS text. Fix: save it as UTF-8 "
                             "(in Notepad: 名前を付けて保存 → 文字コード UTF-8).") from None
    try:
        raw = yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 - a SafeLoader (dates kept as text)
    except yaml.YAMLError as e:
        raise CskitError(f"Params file {path} is not valid YAML: {e}") from None
    if raw is None:  # every default would diagnose the demo client (data: data/demo) under its name
        raise CskitError(f"Params file {path} is empty (or holds only comments). Fix: set at least client: and "
                         "data: (copy params/template.yaml, where every key is documented).")
    params = validate_params(raw)
    if "data" not in raw:  # the default (data/demo) would be diagnosed under this file's client
        raise CskitError(f"Params file {path} does not say where the client's data is. Fix: add data: (a folder "
                         "of CSVs, an .xlsx or .duckdb file, or a database URL; see params/template.yaml).")
    return params


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader without its timestamp type: a date stays text, so an impossible one
    (``as_of: 2026-13-45``) reaches validation and is answered naming the key, not with a traceback."""


_ParamsLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
