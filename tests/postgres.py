"""A PostgreSQL server of the tests' own: Debian's binaries (`make test` installs the `postgresql` package), `initdb`
into a temporary folder, the postmaster started directly as our child with a Unix socket in that folder (no TCP
port to collide with), stopped by `pg_ctl stop` on that folder. On Linux the kernel also sends it SIGQUIT (immediate
shutdown) when the test process dies without stopping it (a SIGKILLed pytest), so no server outlives its tests.
Never a system-wide service, never another process.

PostgreSQL refuses to run as root; as root (CI), the server runs as the `postgres` user the package created.
Durability is off (fsync, synchronous_commit): a test server that dies loses nothing anyone keeps.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

SUPERUSER = "humo"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGQUIT when the process that started it dies (Linux prctl; kept across exec)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0)


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
        self._server: subprocess.Popen | None = None

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=self.root, capture_output=True, text=True, check=True, **self._user)

    def start(self) -> PostgresServer:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync", "--no-instructions")  # fmt: skip
        settings = {"listen_addresses": "", "unix_socket_directories": str(self.root), "fsync": "off",
                    "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "300"}  # fmt: skip
        command = [str(self.bindir / "postgres"), "-D", str(self.data)]
        command += [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        # Its own session (a Ctrl-C in the test terminal does not reach it); `stop` ends it, or our death does.
        with self.log.open("w") as log:
            self._server = subprocess.Popen(command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=_die_with_parent, **self._user)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                self.connect().close()
                return self
            except psycopg.OperationalError:
                if self._server.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)

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
        """`pg_ctl stop` (fast: open sessions are ended); if that fails, SIGQUIT the postmaster we started. Then the
        folder goes."""
        if self._server is not None:
            if self._server.poll() is None:
                try:
                    self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
                except subprocess.CalledProcessError:
                    self._server.send_signal(signal.SIGQUIT)
            self._server.wait(timeout=60)
            self._server = None
        shutil.rmtree(self.root, ignore_errors=True)
