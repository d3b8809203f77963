"""Test-wide settings.

BLAS sums in a thread-count-dependent order (last digits of model fits change with it) and, on a
shared 2-core machine, multithreaded OpenBLAS is many times slower for the small matrices cskit
fits. ``cskit run`` pins one thread; the tests do the same, before numpy is imported.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# the thread settings above must precede every import that may load numpy
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

_PEER_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "shared" / "peer-data" / "churnsim-crm6",  # CI: shared/ beside the clone
    Path("/work/shared/peer-data/churnsim-crm6"),  # a developer's checkout elsewhere on this machine
)


@pytest.fixture(scope="session")
def peer() -> Path:
    """The external test client of DESIGN §9 (another project's simulator, with planted truth).

    It is part of the workplace (``../shared/peer-data/``), not of the repo; a test that needs it fails
    (never skips) when it is missing, so a green run always includes it."""
    for path in _PEER_CANDIDATES:
        if (path / "accounts.csv").is_file():
            return path
    pytest.fail("peer data not found: put shared/ (with peer-data/churnsim-crm6) beside the repository")


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 (tests/pgcluster.py): installed with apt-get when
    missing, started in a temporary folder on a free port, stopped and removed at the end. Skips, with
    the reason in pytest's summary line, only where no server can be had (not root and not installed)."""
    import pgcluster

    try:
        cluster = pgcluster.start()
    except pgcluster.Unavailable as e:
        pytest.skip(f"PostgreSQL tests not run: {e}")
    yield cluster
    cluster.stop()
