"""Behaviour-preservation check for refactoring commits (issue 10).

``python bench/same_results.py``            prints a sha256 per result file of the demo (params/demo.yaml)
                                             and of the peer client, computed from the working tree;
``python bench/same_results.py REV_A REV_B`` exports both revisions (``git archive``) to temporary folders,
                                             runs the same there and reports every file whose bytes differ
                                             (exit 1 if any; ``--keep DIR`` copies both outputs there).
``results/run.json`` records where and when a run happened (paths, input hashes), so it differs between
the two folders by construction and is left out.

Each client runs ``cskit.pipeline.analyse`` + ``Diagnosis.write`` (no notebook, no HTML) in a fresh process
with BLAS pinned to one thread, as ``cskit run`` does. The peer client is built as the tests build it:
``Params(client="peer", data=<shared/peer-data/churnsim-crm6>)`` with every other key at its default.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER = (Path("/work/shared/peer-data/churnsim-crm6"), HERE.parents[1] / "shared" / "peer-data" / "churnsim-crm6")
VARYING = {"run.json"}  # provenance of the run (paths, times): not a result
THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def peer_folder() -> Path:
    for path in PEER:
        if (path / "accounts.csv").is_file():
            return path
    raise SystemExit("peer data not found (shared/peer-data/churnsim-crm6)")


def hashes(root: Path, out: Path) -> dict[str, str]:
    """Run both clients with the cskit found under ``root``; return {client/file: sha256}."""
    code = (
        "import sys; from cskit.params import Params, load_params; from cskit.pipeline import analyse\n"
        "root, out, peer = sys.argv[1:4]\n"
        "analyse(load_params(root + '/params/demo.yaml'), base=root).write(out + '/demo')\n"
        "analyse(Params(client='peer', data=peer)).write(out + '/peer')\n"
    )
    env = {**os.environ, **THREADS, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code, str(root), str(out), str(peer_folder())], check=True, env=env,
                   cwd=root)
    return {
        str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(out.rglob("*")) if path.is_file() and path.name not in VARYING
    }


def resolve(rev: str) -> str:
    """The commit id of ``rev`` now."""
    return subprocess.run(["git", "rev-parse", "--short", rev], check=True, capture_output=True, text=True,
                          cwd=HERE.parent).stdout.strip()


def export(rev: str, target: Path) -> Path:
    """The files of ``rev`` (git archive) under ``target``."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev], check=True, capture_output=True,
                             cwd=HERE.parent).stdout
    target.mkdir(parents=True)
    (target / "src.tar").write_bytes(archive)
    with tarfile.open(target / "src.tar") as tar:
        tar.extractall(target, filter="data")
    return target


def main(argv: list[str]) -> int:
    keep = None
    if "--keep" in argv:  # --keep DIR: on a difference, copy both sides' outputs there to inspect
        at = argv.index("--keep")
        keep, argv = argv[at + 1], argv[:at] + argv[at + 2:]
    with tempfile.TemporaryDirectory(prefix="cskit-same-") as tmp:
        tmp = Path(tmp)
        if not argv:
            for name, digest in hashes(HERE.parent, tmp / "out").items():
                print(digest, name)
            return 0
        rev_a, rev_b = (resolve(rev) for rev in argv[:2])  # a branch may move while the first side runs
        a = hashes(export(rev_a, tmp / "a"), tmp / "out_a")
        b = hashes(export(rev_b, tmp / "b"), tmp / "out_b")
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        print(json.dumps({"files": len(a.keys() | b.keys()), "differ": differ}, indent=1))
        print(f"{rev_a} vs {rev_b}: {len(a.keys() | b.keys()) - len(differ)} of {len(a.keys() | b.keys())} "
              f"result files byte-identical")
        if differ and keep:
            for side in ("out_a", "out_b"):
                shutil.copytree(tmp / side, Path(keep) / side, dirs_exist_ok=True)
            print(f"outputs kept in {keep}")
        return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
