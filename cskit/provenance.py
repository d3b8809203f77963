"""What made an output folder: ``results/run.json`` (DESIGN §6).

The params (the data URL without its password; nothing else secret is a param; the params file's hash
is taken with the password masked), the cskit version and a
fingerprint (size and SHA-256) of every input file, so a reader can tell which data and settings a
report came from and whether a rerun used the same. No timestamps: the same inputs give the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

FULL_HASH_BYTES = 256 * 2**20  # larger files (event logs) are fingerprinted by size + head + tail
SAMPLE_BYTES = 16 * 2**20
# A JSON file of fingerprints taken beforehand (``cskit run`` hashes the input files in its own, otherwise
# idle, process while the kernel analyses: :func:`take_fingerprints`); an entry is used only for the same
# file at the same size and modification time, any other file is hashed here.
FINGERPRINTS_ENV = "CSKIT_FINGERPRINTS"


def fingerprint(path: Path) -> dict[str, Any]:
    """``{"file", "bytes", "sha256"}`` of one file; above FULL_HASH_BYTES the hash covers the first and
    last SAMPLE_BYTES and the size (``"sha256_of": "head+tail"``), so a 10 GB log costs milliseconds.
    Taken from ``$CSKIT_FINGERPRINTS`` when that file holds it for this file as it is now."""
    known = _taken(Path(path))
    return dict(known) if known is not None else _hash(Path(path))


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _taken(path: Path) -> dict[str, Any] | None:
    """The fingerprint of ``path`` in ``$CSKIT_FINGERPRINTS``, if it was taken of the file as it is now."""
    source = os.environ.get(FINGERPRINTS_ENV)
    if not source:
        return None
    try:
        entries = json.loads(Path(source).read_text(encoding="utf-8"))
        name, size, mtime = _stamp(path)
    except (OSError, ValueError):  # not written (yet), or unreadable: hash here
        return None
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, dict) and [e.get("path"), e.get("size"), e.get("mtime_ns")] == [name, size, mtime]:
            return e.get("fingerprint")
    return None


def write_fingerprints(files: list[Path], target: str | Path) -> None:
    """Hash ``files`` and write their fingerprints to ``target`` (what :data:`FINGERPRINTS_ENV` names):
    :func:`save_fingerprints` of :func:`take_fingerprints`."""
    save_fingerprints(take_fingerprints(files), target)


def take_fingerprints(files: list[Path], stop: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
    """The fingerprint of each of ``files`` with the file's path, size and modification time (a file that
    changed while it was hashed, or cannot be read, is left out); the files not yet hashed when ``stop()``
    turns true are left out too."""
    entries = []
    for f in files:
        if stop is not None and stop():
            break
        try:
            before = _stamp(f)
            record = _hash(f)
            if _stamp(f) != before:
                continue
        except OSError:
            continue
        entries.append({"path": before[0], "size": before[1], "mtime_ns": before[2], "fingerprint": record})
    return entries


def save_fingerprints(entries: list[dict[str, Any]], target: str | Path) -> None:
    """Write :func:`take_fingerprints`' ``entries`` to ``target``, whole or not at all (a temporary file
    renamed)."""
    target = Path(target)
    partial = target.with_name(target.name + ".part")
    partial.write_text(json.dumps(entries), encoding="utf-8")
    os.replace(partial, target)


def _hash(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
            return {"file": path.name, "bytes": size, "sha256": h.hexdigest()}
        h.update(f.read(SAMPLE_BYTES))
        f.seek(size - SAMPLE_BYTES)
        h.update(f.read(SAMPLE_BYTES))
        h.update(str(size).encode())
    return {"file": path.name, "bytes": size, "sha256": h.hexdigest(), "sha256_of": "head+tail"}


def input_files(data: str) -> list[Path]:
    """The files a ``data`` param points at: the file itself, or every visible file of the folder
    (recursively: events may be a folder of Parquet parts); none for a database URL."""
    if "://" in data:
        return []
    p = Path(data)
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(
            f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
    return []


def input_records(data: str) -> list[dict[str, Any]]:
    """run.json's ``inputs``: the :func:`fingerprint` of each file of a ``data`` param (:func:`input_files`),
    named by its path inside a data folder."""
    root = Path(data) if "://" not in data else None
    inputs = []
    for f in input_files(data):
        rec = fingerprint(f)
        if root is not None and root.is_dir():
            rec["file"] = f.relative_to(root).as_posix()
        inputs.append(rec)
    return inputs


def run_record(params: Any, version: str, *, params_file: str | Path | None = None,
               inputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The content of run.json for ``params`` (a :class:`cskit.params.Params`); ``inputs``: the
    :func:`input_records` of its ``data`` when taken beforehand (else taken here)."""
    from cskit.warehouse import mask, public_data, secrets_of

    values = params.model_dump(mode="json")
    data = str(values.get("data", ""))
    if "://" in data:
        values["data"] = public_data(data)
    inputs = input_records(data) if inputs is None else inputs
    out = {"cskit_version": version, "params": values, "inputs": inputs}
    if params_file:
        pf = Path(params_file)
        out["params_file"] = pf.name
        if pf.is_file():
            raw = pf.read_bytes()
            if "://" in data:  # the hash of a file holding a password would let one test guesses of it
                raw = mask(raw.decode("utf-8", errors="replace"), secrets_of(data)).encode("utf-8")
            out["params_sha256"] = hashlib.sha256(raw).hexdigest()
    return out


def write_run(results: Path, params: Any, version: str, *, params_file: str | Path | None = None,
              inputs: list[dict[str, Any]] | None = None) -> Path:
    """Write ``results/run.json`` (sorted keys, no timestamp; ``inputs`` as for :func:`run_record`);
    return its path."""
    path = Path(results) / "run.json"
    record = run_record(params, version, params_file=params_file, inputs=inputs)
    path.write_text(json.dumps(record, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
