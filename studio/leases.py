"""Which studio front-ends are alive, and the lock that guards the shared media folder.

Several front-ends may share one gallery (one database, one media folder). Each open `studio.store.Store` is an
*instance*: a row in `instances` and a lock that the operating system or the database server releases when its
process dies, however it dies:

- SQLite (front-ends on one machine): an exclusive `flock` on `<db>.locks/instance-<id>.lock`. A separate file,
  never the database: closing any descriptor of the database file drops SQLite's own POSIX locks (DESIGN facts).
- PostgreSQL: a session advisory lock (keys `INSTANCE_NS`, id) on a connection kept open for the instance's life;
  every other front-end reads `pg_locks` to see whose lock is held.

An instance is dead when its lock is free and its heartbeat is older than `grace_s`. On SQLite the lock alone
decides (grace 0: a flock cannot be lost while its process lives). On PostgreSQL the lock rides on a TCP
connection that a network blip or an idle timeout may drop while the process lives; the front-end takes it again
at its next heartbeat, and the grace keeps others from taking it for dead meanwhile.

`files_lock` serializes, across front-ends, "is this file still referenced or claimed?" with unlinking it (and
with claiming it): a thread lock first, then `flock` on `<db>.locks/files.lock` (SQLite) or a transaction
advisory lock held on its own connection (PostgreSQL). Never take it inside a write transaction: it is always the
outer lock, so no front-end waits for it while holding row locks.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

try:
    import fcntl
except ImportError:  # Windows: no flock; see SQLiteLeases
    fcntl = None

log = logging.getLogger(__name__)

# Advisory lock keys (two int4 keys: pg_locks shows them as classid, objid with objsubid 2). "HUMO", "HUMP".
INSTANCE_NS = 0x48554D4F
MUTEX_NS = 0x48554D50
FILES_KEY = 1
MIGRATE_KEY = 2
ADMISSION_KEY = 3


class Leases:
    """The instance lease and the files lock of one store, for its database backend (`for_engine`)."""

    grace_s = 0.0  # how long a heartbeat keeps a lock-less instance alive

    def __init__(self) -> None:
        self.instance_id: int | None = None
        self._thread_lock = threading.RLock()
        self._files_depth = 0

    @staticmethod
    def for_engine(engine: Engine) -> Leases:
        u = make_url(engine.url)
        if u.get_backend_name() == "postgresql":
            return PostgresLeases(engine)
        memory = u.database in (None, "", ":memory:") or u.query.get("mode") == "memory"
        return SQLiteLeases(None if memory else Path(u.database))

    def register(self, write_engine: Engine, insert_row: Callable[[Connection], int]) -> int:
        """Insert this instance's row with `insert_row(conn) -> id` and hold its lock before the row commits, so no
        other front-end ever sees the row without its lock."""
        raise NotImplementedError

    def held(self, conn: Connection, candidates: Iterable[int]) -> set[int]:
        """Of `candidates`, the instance ids whose lock is held now (this instance's always)."""
        raise NotImplementedError

    def forget(self, dead: Iterable[int]) -> None:
        """Remove what dead instances left outside the database (their lock files)."""

    def keep(self) -> None:
        """Heartbeat: make sure this instance still holds its lock (take it again if its connection dropped)."""

    def now(self, conn: Connection) -> datetime:
        """The time heartbeats are measured in (the database server's on PostgreSQL: front-ends' clocks differ)."""
        return datetime.now(UTC)

    def migrate_lock(self, conn: Connection) -> None:
        """Called first inside the migration transaction: one front-end migrates, the others wait and see head."""

    def admission_lock(self, conn: Connection) -> None:
        """Called first inside an admission's write transaction: one front-end counts and takes a ticket at a time
        (SQLite's BEGIN IMMEDIATE already makes its writer the only one)."""

    @contextmanager
    def files_lock(self) -> Iterator[None]:
        """The lock over the media folder's files (re-entrant within a thread; see the module docstring)."""
        with self._thread_lock:  # only the thread holding it reads or changes the depth
            if self._files_depth:
                self._files_depth += 1
                try:
                    yield
                finally:
                    self._files_depth -= 1
                return
            with self._cross_process_files_lock():
                self._files_depth = 1
                try:
                    yield
                finally:
                    self._files_depth = 0

    def _cross_process_files_lock(self) -> AbstractContextManager[None]:
        return nullcontext()

    def release(self) -> None:
        """Give the lease up (the store is closing)."""


class SQLiteLeases(Leases):
    """flock files beside the database. An in-memory database belongs to one store: no other instance exists."""

    def __init__(self, db: Path | None) -> None:
        super().__init__()
        self.folder = None if db is None or fcntl is None else db.with_name(db.name + ".locks")
        self._instance_fd: int | None = None
        self._files_fd: int | None = None

    def _path(self, instance_id: int) -> Path:
        return self.folder / f"instance-{instance_id}.lock"

    def register(self, write_engine: Engine, insert_row: Callable[[Connection], int]) -> int:
        with write_engine.begin() as conn:
            instance_id = insert_row(conn)
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._path(instance_id), os.O_RDWR | os.O_CREAT, 0o600)
                self._instance_fd = fd  # closed by release() if the commit fails
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new id (AUTOINCREMENT): nobody else has it
        self.instance_id = instance_id
        return instance_id

    def held(self, conn: Connection, candidates: Iterable[int]) -> set[int]:
        others = [i for i in candidates if i != self.instance_id]
        alive = {self.instance_id} if self.instance_id is not None else set()
        if self.folder is None:
            # One process only: fcntl missing (every other instance counts as gone, as before several front-ends
            # existed) or an in-memory database (no other instance can exist).
            return alive
        for instance_id in others:
            try:
                fd = os.open(self._path(instance_id), os.O_RDWR)
            except FileNotFoundError:
                continue  # its lock file is gone: so is it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alive.add(instance_id)
            finally:
                os.close(fd)  # flock is per open file: closing ours never touches the owner's lock
        return alive

    def forget(self, dead: Iterable[int]) -> None:
        if self.folder is not None:
            for instance_id in dead:
                self._path(instance_id).unlink(missing_ok=True)

    @contextmanager
    def _cross_process_files_lock(self) -> Iterator[None]:
        if self.folder is None:
            yield
            return
        if self._files_fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._files_fd = os.open(self.folder / "files.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._files_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._files_fd, fcntl.LOCK_UN)

    def release(self) -> None:
        for fd in (self._instance_fd, self._files_fd):
            if fd is not None:
                os.close(fd)
        if self._instance_fd is not None and self.instance_id is not None:
            self._path(self.instance_id).unlink(missing_ok=True)
        self._instance_fd = self._files_fd = None


class PostgresLeases(Leases):
    """Advisory locks: a session lock per instance on a connection of its own, a transaction lock for the files."""

    grace_s = 30.0  # three heartbeats (studio.store.HEARTBEAT_S)

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self._lease: Connection | None = None

    def register(self, write_engine: Engine, insert_row: Callable[[Connection], int]) -> int:
        # The lease connection registers the row itself: the lock is taken in the same transaction, before commit.
        lease = self.engine.connect()
        try:
            with lease.begin():
                instance_id = insert_row(lease)
                lease.execute(text("SELECT pg_advisory_lock(:ns, :id)"), {"ns": INSTANCE_NS, "id": instance_id})
        except BaseException:
            lease.invalidate()  # never back to the pool holding a lock
            lease.close()
            raise
        self._lease, self.instance_id = lease, instance_id
        return instance_id

    def held(self, conn: Connection, candidates: Iterable[int]) -> set[int]:
        rows = conn.execute(
            text(
                "SELECT CAST(objid AS bigint) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND CAST(classid AS bigint) = :ns AND objsubid = 2"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"ns": INSTANCE_NS},
        ).scalars()
        locked = set(rows)
        return {i for i in candidates if i in locked} | ({self.instance_id} if self.instance_id is not None else set())

    def now(self, conn: Connection) -> datetime:
        value = conn.execute(text("SELECT timezone('utc', now())")).scalar_one()
        return value.replace(tzinfo=UTC)

    def keep(self) -> None:
        if self.instance_id is None:
            return
        try:
            if self._lease is not None:
                self._lease.execute(text("SELECT 1")).scalar_one()  # keeps an idle-timeout from closing it, too
                self._lease.rollback()
                return
        except DBAPIError as exc:
            log.warning("the lease connection of studio instance %s dropped (%s): taking the lock again",
                        self.instance_id, exc)  # fmt: skip
            self._drop_lease()
        lease = self.engine.connect()
        try:
            # try_: the server may not have noticed yet that the old connection died (it still holds the lock);
            # the next heartbeat tries again rather than blocking this one.
            query = text("SELECT pg_try_advisory_lock(:ns, :id)")
            taken = lease.execute(query, {"ns": INSTANCE_NS, "id": self.instance_id}).scalar_one()
            lease.commit()
        except BaseException:
            lease.invalidate()
            lease.close()
            raise
        if not taken:
            lease.close()
            log.warning("studio instance %s: its lock is still held by its old connection; retrying", self.instance_id)
            return
        self._lease = lease

    def migrate_lock(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": MUTEX_NS, "key": MIGRATE_KEY})

    def admission_lock(self, conn: Connection) -> None:
        # Counting rows FOR UPDATE would not stop two front-ends inserting at once (READ COMMITTED sees no phantom):
        # the count and the insert are serialized instead, ended with the transaction.
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": MUTEX_NS, "key": ADMISSION_KEY})

    @contextmanager
    def _cross_process_files_lock(self) -> Iterator[None]:
        # A transaction lock on a connection of its own: ended by commit, by rollback when the pool takes the
        # connection back, or by the server when this process dies. The store's own work uses other connections.
        with self.engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": MUTEX_NS, "key": FILES_KEY})
            yield

    def _drop_lease(self) -> None:
        if self._lease is not None:
            try:
                self._lease.invalidate()
                self._lease.close()
            except Exception:  # already broken: nothing left to close
                pass
            self._lease = None

    def release(self) -> None:
        self._drop_lease()  # the server ends the session, and with it the lock
