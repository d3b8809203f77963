"""Coded notices: every warning and note a stage leaves for the reader, as a record.

A :class:`Notice` carries a ``code`` (what happened), the ``values`` that make it specific (table,
column, counts, KPI names, examples), a ``severity`` ("warning": a figure may be affected; "note":
for information) and the ``stage`` that raised it. The words are not written here: ``cskit.narrative``
renders a notice from its code in Japanese or English (:func:`cskit.narrative.notice`), so a Japanese
report never carries an English sentence and nothing has to recognise a warning by its wording.

A notice *is* its English sentence (a ``str`` subclass): code that logs, joins or searches warnings
keeps working, and the record travels with it. Result files store notices as records
(:func:`records`): ``{"code", "severity", "stage", "values", "message"}``, the message being the
English rendering.

Examples
--------
>>> n = Notice("as_of_defaulted", stage="load", severity="note", as_of="2026-06")
>>> n.code, n.values["as_of"]
('as_of_defaulted', '2026-06')
>>> str(n).startswith("as_of is not set in params: using 2026-06")
True
"""
from __future__ import annotations

from typing import Any, Iterable

SEVERITIES = ("warning", "note")


class Notice(str):
    """One coded warning or note; its ``str`` value is the English rendering (see module docstring).

    Parameters
    ----------
    code : str
        A key of ``cskit.narrative.NOTICE_TEXT``.
    stage : str
        The stage that raised it: load, models, triggers, potential, health, metrics, report.
    severity : {"warning", "note"}
    **values
        JSON-serialisable values (numbers, strings, lists of them, nested notices).
    """

    code: str
    stage: str
    severity: str
    values: dict[str, Any]

    def __new__(cls, code: str, *, stage: str, severity: str = "warning", **values: Any) -> "Notice":
        from cskit.narrative import notice_text

        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
        obj = super().__new__(cls, notice_text(code, values, "en"))
        obj.code, obj.stage, obj.severity, obj.values = code, stage, severity, dict(values)
        return obj

    def __reduce__(self):
        return (_rebuild, (self.code, self.stage, self.severity, self.values))

    def __repr__(self) -> str:
        return f"Notice({self.code!r}, stage={self.stage!r}, severity={self.severity!r})"

    def to_dict(self) -> dict[str, Any]:
        """The record written to result files (values JSON-safe, nested notices as records)."""
        return {"code": self.code, "severity": self.severity, "stage": self.stage,
                "values": _plain(self.values), "message": str(self)}


def _rebuild(code: str, stage: str, severity: str, values: dict) -> Notice:
    return Notice(code, stage=stage, severity=severity, **values)


def _plain(x: Any) -> Any:
    if isinstance(x, Notice):
        return x.to_dict()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, str):  # numpy scalar
        return x.item()
    return x


def records(notices: Iterable[Any]) -> list[dict[str, Any]]:
    """Notices as result-file records; a plain string (a stage not yet coded) becomes code "text"."""
    out = []
    for n in notices:
        if isinstance(n, Notice):
            out.append(n.to_dict())
        else:
            out.append({"code": "text", "severity": "warning", "stage": "", "values": {"text": str(n)},
                        "message": str(n)})
    return out


def from_record(record: dict[str, Any]) -> Notice | str:
    """A record of :func:`records` back as a Notice (a "text" record as its string)."""
    if record.get("code") == "text":
        return str(record.get("message", ""))
    values = {k: (from_record(v) if isinstance(v, dict) and "code" in v and "values" in v else v)
              for k, v in record.get("values", {}).items()}
    return Notice(record["code"], stage=record.get("stage", ""), severity=record.get("severity", "warning"), **values)
