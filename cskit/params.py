"""Run parameters (DESIGN §4), validated in one place before anything runs.

The YAML's top-level keys are the notebook's papermill parameters. PyYAML turns dates into ``date``
objects, ``yes`` into True and ``007`` into 7, so every key is checked here with pydantic
(``extra="forbid"``) and a wrong key or value is answered with a message naming it.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cskit.errors import CskitError

SAFE_CLIENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
TABLES = ("accounts", "revenue", "kpis", "nps", "events")


class KPIOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ja: str | None = None
    en: str | None = None
    category: str | None = None
    lower: float | None = None
    upper: float | None = None
    direction: Literal[1, -1] | None = None


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
        "seed", mode="before",
    )
    @classmethod
    def _not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a number, not true/false (YAML reads yes/no/on/off as true/false)")
        return v

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", v):
            raise ValueError("must be a 3-letter ISO code such as JPY or USD")
        return v

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of(cls, v: Any) -> Any:
        if v is None or isinstance(v, dt.date):
            return v
        if isinstance(v, str):
            try:
                return dt.date.fromisoformat(v.strip())
            except ValueError:
                pass
        raise ValueError("must be a date YYYY-MM-DD (or empty for the last month of revenue)")

    def papermill_parameters(self, base: Path | None = None) -> dict[str, Any]:
        """The params as papermill injects them: plain JSON types, ``data`` as an absolute path."""
        out = self.model_dump(mode="json")
        out["data"] = str(resolve_data_path(self.data, base))
        return out


def resolve_data_path(data: str, base: Path | None = None) -> Path | str:
    """Resolve ``data`` against ``base`` (the current directory by default); URLs are left as they are."""
    if "://" in data:
        return data
    p = Path(data).expanduser()
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    return p.resolve()


def _describe(err: dict) -> str:
    loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(Params.model_fields)
        return f"- unknown key '{loc}' (value {value!r}). Allowed keys: {allowed}."
    msg = err["msg"].removeprefix("Value error, ")
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
    """Read and validate a params YAML file."""
    path = Path(path)
    if not path.is_file():
        raise CskitError(f"Params file not found: {path}. Copy params/template.yaml and edit it.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CskitError(f"Params file {path} is not valid UTF-8 YAML: {e}") from None
    return validate_params(raw)
