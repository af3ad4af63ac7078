"""A throwaway PostgreSQL cluster for the sweep tests: Debian's server (initdb and pg_ctl from
/usr/lib/postgresql/*/bin), on a free port on 127.0.0.1, in a temporary folder, run by an unprivileged
user (``postgres`` when the tests run as root: the server refuses root). ``cluster_or_skip`` skips a
test, with the reason in one line, where the server or the driver is missing; CI installs both
(.ci/run) and sets CHARLM_REQUIRE_POSTGRES=1, which turns that skip into a failure."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

USER, PASSWORD = "charlm", "sweep-test-password"  # the role the tests' URLs log in as (by password)
HBA = """\
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


def server_bin() -> Path | None:
    """The newest installed server's programs, or CHARLM_PG_BIN."""
    if os.environ.get("CHARLM_PG_BIN"):
        return Path(os.environ["CHARLM_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _skip(reason: str) -> None:
    if os.environ.get("CHARLM_REQUIRE_POSTGRES") == "1":  # CI: the server must be there
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """One server: ``start``, ``restart``, ``stop``; ``database()`` makes a fresh database and gives its URL."""

    def __init__(self, bin_dir: Path):
        self.bin, self.port = bin_dir, free_port()
        self.root = Path(tempfile.mkdtemp(prefix="charlm-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "run"
        self.sockets.mkdir()
        self.owner = "postgres" if os.geteuid() == 0 else None
        if self.owner:
            entry = pwd.getpwnam(self.owner)
            for path in (self.root, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.databases = 0

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", self.owner, "--"] if self.owner else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> "Cluster":
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        (self.data / "pg_hba.conf").write_text(HBA)
        self._pg_ctl("start")
        with self.connect() as connection:
            connection.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", action, *extra)

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def connect(self):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True)

    def database(self) -> str:
        """A new, empty database the test role owns; its URL, with the password."""
        self.databases += 1
        name = f"sweep_{os.getpid()}_{self.databases}"
        with self.connect() as connection:
            connection.execute(f"CREATE DATABASE {name} OWNER {USER}")
        return self.url(name)

    def url(self, database: str, password: str = PASSWORD, port: int | None = None) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{port or self.port}/{database}"


def cluster_or_skip() -> Cluster:
    """A started cluster, or a skip (a failure in CI) naming what is missing."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _skip("PostgreSQL test: the psycopg driver is not installed (pip install -e '.[test]')")
    bin_dir = server_bin()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        _skip("PostgreSQL test: no server (apt-get install postgresql; CI installs it)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _skip("PostgreSQL test: running as root without runuser to start the server as postgres")
    return Cluster(bin_dir).start()
