"""A PostgreSQL server of the tests' own: Debian's binaries (`make test` installs the `postgresql` package), `initdb`
into a temporary folder, a Unix socket in that folder (no TCP port to collide with), stopped by `pg_ctl stop` on
that folder. Never a system-wide service, never another process.

PostgreSQL refuses to run as root; as root (CI), the server runs as the `postgres` user the package created.
Durability is off (fsync, synchronous_commit): a test server that dies loses nothing anyone keeps.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

SUPERUSER = "humo"


def find_bindir() -> Path | None:
    """The newest Debian PostgreSQL's bin folder (`/usr/lib/postgresql/<major>/bin`), or None when not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """One running server; `create_database()` gives each test a database of its own."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="humo-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._user: dict = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self._started = False

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=self.root, capture_output=True, text=True, check=True, **self._user)

    def start(self) -> PostgresServer:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync", "--no-instructions")  # fmt: skip
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.root}' -c fsync=off -c synchronous_commit=off"
            " -c full_page_writes=off -c max_connections=300"
        )
        # Its own session: a Ctrl-C in the test terminal does not reach the server; `stop` ends it.
        subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                        "-o", options, "start"], cwd=self.root, capture_output=True, text=True, check=True,
                       start_new_session=True, **self._user)  # fmt: skip
        self._started = True
        return self

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL of `dbname` on this server (psycopg 3, over the socket)."""
        return f"postgresql+psycopg://{SUPERUSER}@/{dbname}?host={self.root}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=str(self.root), user=SUPERUSER, dbname=dbname, autocommit=True)

    def create_database(self, encoding: str = "UTF8", ctype: str = "C") -> str:
        """A new empty database; returns its URL. The default ctype "C" is the hard case for search: the server's
        lower() and ILIKE then fold ASCII only."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self.connect() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING '{encoding}' LC_COLLATE 'C' "
                         f"LC_CTYPE '{ctype}'")  # fmt: skip
        return self.url(name)

    def stop(self) -> None:
        """`pg_ctl stop` (fast: open sessions are ended); if that fails, SIGQUIT the postmaster this server's
        pid file names. Then the folder goes."""
        if self._started:
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            except subprocess.CalledProcessError:
                pid_file = self.data / "postmaster.pid"
                if pid_file.is_file():
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
            self._started = False
        shutil.rmtree(self.root, ignore_errors=True)
