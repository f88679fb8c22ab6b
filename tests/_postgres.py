"""A real, throwaway PostgreSQL server for tests (``PostgresStore``, recovery, multi-node).

The server is started from the binaries on PATH or in /usr/local/bin (``initdb``, ``pg_ctl``)
in a temporary folder, listening on 127.0.0.1 on a free port, and stopped by the PID it wrote;
as root (which PostgreSQL refuses) it runs as the ``postgres`` user. ``conftest.py`` exposes
one server per test session as the ``postgres`` fixture; each test takes its own database with
:meth:`PostgresServer.new_database`, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def find_binary(name: str) -> str | None:
    """``name`` on PATH, else in /usr/local/bin, else None."""
    local = f"/usr/local/bin/{name}"
    return shutil.which(name) or (local if os.access(local, os.X_OK) else None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb, start on 127.0.0.1:<port>, stop by PID.

    Calls ``pytest.skip`` (with the reason) when the binaries or the ``postgres`` user needed
    to run it are missing.
    """

    def __init__(self) -> None:
        initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found on PATH or in /usr/local/bin")
        self.root = Path(tempfile.mkdtemp(prefix="raygent-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.pid: int | None = None
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        try:
            self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            # Sessions on many actors and a cluster's nodes connect at once: room for them all.
            opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
            self._run([pg_ctl, "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts, "-w", "-t", "60", "start"])
            self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except BaseException:
            self.stop()
            raise
        self.base = f"host=127.0.0.1 port={self.port} user=postgres"

    def _run(self, cmd: list[str]) -> None:
        proc = subprocess.run(self.as_user + cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}\n{tail}")

    def new_database(self) -> str:
        """Create an empty database and return its libpq conninfo string."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.base + " dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"{self.base} dbname={name}"

    def stop(self) -> None:
        """Stop our postmaster (only it, by PID) and remove its folder; safe to call twice."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGINT)  # "fast" shutdown
                for _ in range(300):  # bounded: 30 s
                    os.kill(self.pid, 0)
                    time.sleep(0.1)
            except ProcessLookupError:
                pass
            self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)
