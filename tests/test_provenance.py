"""results/run.json's input fingerprints (cskit/provenance.py): the SHA-256 of each file, by hand; the
fingerprints `cskit run` takes beforehand are used only for the same file unchanged, and give the bytes
a fresh hash gives."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from cskit import provenance as P


@pytest.fixture
def files(tmp_path):
    (tmp_path / "data").mkdir()
    a, b = tmp_path / "data" / "accounts.csv", tmp_path / "data" / "revenue.csv"
    a.write_bytes(b"account_id,start_date\nA1,2024-01-01\n")
    b.write_bytes(b"x" * 3_000_000)  # more than one 1 MB block
    return [a, b]


def test_fingerprint_is_the_files_sha256(files):
    for f in files:
        assert P.fingerprint(f) == {"file": f.name, "bytes": f.stat().st_size,
                                    "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}


def test_fingerprints_taken_beforehand_are_used_for_the_same_file(files, tmp_path, monkeypatch):
    fresh = [P.fingerprint(f) for f in files]
    taken = tmp_path / "fingerprints.json"
    P.write_fingerprints(files, taken)
    assert not (tmp_path / "fingerprints.json.part").exists()
    monkeypatch.setenv(P.FINGERPRINTS_ENV, str(taken))

    def no_hash(path):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(P, "_hash", no_hash)
    assert [P.fingerprint(f) for f in files] == fresh


def test_hashing_stops_between_files_when_asked(files):
    """``stop`` is asked before each file: true after the first file's hash, the second is left out."""
    asked = []

    def stop():
        asked.append(1)
        return len(asked) > 1

    entries = P.take_fingerprints(files, stop=stop)
    assert [e["path"] for e in entries] == [str(files[0])] and len(asked) == 2
    assert entries[0]["fingerprint"]["sha256"] == hashlib.sha256(files[0].read_bytes()).hexdigest()
    assert len(P.take_fingerprints(files)) == 2


def test_a_file_changed_since_is_hashed_again(files, tmp_path, monkeypatch):
    taken = tmp_path / "fingerprints.json"
    P.write_fingerprints(files, taken)
    monkeypatch.setenv(P.FINGERPRINTS_ENV, str(taken))
    files[0].write_bytes(b"account_id,start_date\nA2,2024-01-01\n")  # same size, new content
    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert P.fingerprint(files[0])["sha256"] == hashlib.sha256(files[0].read_bytes()).hexdigest()
    # a file the fingerprints do not name, or fingerprints not written (yet), or unreadable: hashed here
    other = tmp_path / "nps.csv"
    other.write_bytes(b"nps\n")
    assert P.fingerprint(other)["sha256"] == hashlib.sha256(b"nps\n").hexdigest()
    for content in (None, "{not json"):
        if content is None:
            taken.unlink()
        else:
            taken.write_text(content, encoding="utf-8")
        assert P.fingerprint(files[1])["sha256"] == hashlib.sha256(files[1].read_bytes()).hexdigest()


def test_run_record_with_and_without_fingerprints_taken(files, tmp_path, monkeypatch):
    from cskit.params import validate_params

    params = validate_params({"client": "c", "data": str(files[0].parent)})
    plain = json.dumps(P.run_record(params, "0"), sort_keys=True)
    taken = tmp_path / "fingerprints.json"
    P.write_fingerprints(P.input_files(params.data), taken)
    monkeypatch.setenv(P.FINGERPRINTS_ENV, str(taken))
    assert json.dumps(P.run_record(params, "0"), sort_keys=True) == plain
