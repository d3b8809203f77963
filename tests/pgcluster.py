"""A throwaway PostgreSQL server for the warehouse tests: Debian's ``postgresql`` package (installed
with apt-get when missing and we are root), a cluster in a temporary folder, listening on 127.0.0.1 on
a free port of its own, password authentication (scram-sha-256) for TCP connections.

As root, ``initdb`` and ``pg_ctl`` refuse to run, so they run as the ``postgres`` user the package
creates (``su postgres -s /bin/sh -c ...``); as any other user they run as that user.
"""
from __future__ import annotations

import glob
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class Unavailable(RuntimeError):
    """No PostgreSQL server can be had on this machine (the reason says why)."""


@dataclass
class Cluster:
    root: Path
    bindir: Path
    port: int
    superuser: str
    superpassword: str
    as_user: str | None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, user: str, password: str | None, database: str) -> str:
        from urllib.parse import quote

        auth = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "")
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.superuser, password=self.superpassword,
                               dbname=database, autocommit=True)

    def stop(self) -> None:
        _run(self, f"{self.bindir / 'pg_ctl'} -D {self.root / 'data'} -m immediate -w stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _install() -> None:
    if os.geteuid() != 0:
        raise Unavailable("PostgreSQL is not installed and we are not root (apt-get install postgresql)")
    if not shutil.which("apt-get"):
        raise Unavailable("PostgreSQL is not installed and there is no apt-get on this machine")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise Unavailable(f"apt-get install postgresql failed: {done.stderr.strip().splitlines()[-1:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cluster_or_user, command: str, check: bool = True) -> subprocess.CompletedProcess:
    user = cluster_or_user.as_user if isinstance(cluster_or_user, Cluster) else cluster_or_user
    argv = ["su", user, "-s", "/bin/sh", "-c", command] if user else ["/bin/sh", "-c", command]
    done = subprocess.run(argv, capture_output=True, text=True, cwd="/")
    if check and done.returncode != 0:
        raise Unavailable(f"{command.split()[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done


def start(superpassword: str = "cskit-test-superuser") -> Cluster:
    """Install (if needed), initialise and start a cluster; the caller stops it with ``cluster.stop()``."""
    bindir = _bindir()
    if bindir is None:
        _install()
        bindir = _bindir()
        if bindir is None:
            raise Unavailable("apt-get installed postgresql but no initdb was found under /usr/lib/postgresql")
    as_user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="cskit-pg-"))
    root.chmod(0o755)
    (root / "pwfile").write_text(superpassword + "\n")
    if as_user:
        shutil.chown(root, user=as_user)
        shutil.chown(root / "pwfile", user=as_user)
    cluster = Cluster(root, bindir, _free_port(), "postgres", superpassword, as_user)
    try:
        q = shlex.quote
        _run(cluster, f"{q(str(bindir / 'initdb'))} -D {q(str(root / 'data'))} -U postgres -E UTF8 --locale=C "
                      f"--auth-local=trust --auth-host=scram-sha-256 --pwfile={q(str(root / 'pwfile'))}")
        options = f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c TimeZone=Asia/Tokyo"
        _run(cluster, f"{q(str(bindir / 'pg_ctl'))} -D {q(str(root / 'data'))} -l {q(str(root / 'log'))} -w -t 60 "
                      f"-o {q(options)} start")
    except Exception:
        cluster.stop()
        raise
    return cluster
