"""The gallery store: every generation the studio ran, its settings, inputs and output files.

SQLAlchemy 2 ORM over SQLite in the data folder (`studio.paths`, the embedded default), or PostgreSQL
(`HUMO_DB_URL=postgresql://...`, psycopg 3) for several front-ends sharing one gallery and one media folder.
The schema is owned by Alembic (`studio/migrations`); `Store.open` upgrades it to head (on PostgreSQL under an
advisory lock, so front-ends starting together migrate once).

Threads: one `Store` is shared by all Gradio callbacks. Every method opens its own short session, so
calls are thread-safe, and returns detached `Generation` objects (all columns loaded, safe to read
from any thread; changing them changes nothing in the database).

SQLite specifics: WAL journal (readers never wait for the writer), foreign keys on, a busy timeout,
and write transactions that start with `BEGIN IMMEDIATE` so two writers queue on the busy timeout
instead of failing with "database is locked" when a read lock cannot be upgraded.

PostgreSQL specifics: READ COMMITTED, so every read-check-write of a row locks it (`SELECT ... FOR UPDATE`);
settings are upserts; search runs on a case-folded copy of the prompt (`prompt_folded`, Python's casefold),
never on the server's locale (a C-locale database's lower() leaves "É" alone); the database must be UTF8.

Front-ends: each open store is an *instance* (`studio.leases`: a row in `instances` plus a lock the OS or the
server drops when its process dies). Rows record the instance running them; a starting or sweeping front-end
fails only rows whose instance is dead and removes only files no live instance can still want.

Files: stored paths are relative to the data folder. `delete` removes the row first and the files
after the commit, keeping any file another row still references or an instance claims, so no row ever
points to a deleted file. Inputs from `save_input` are claimed (a `file_claims` row of this instance) until
`create_generation` records them, so a `delete` in any front-end cannot remove an upload before its row
exists. Checking and unlinking happen under `Leases.files_lock`, across front-ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    cast,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from engine.errors import InputError
from engine.guidance import MODES
from studio.leases import Leases
from studio.paths import ENV_DB_URL, DataPaths, clean_ext

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "stopped")
ACTIVE_STATUSES = ("queued", "running")
# Allowed status changes; done, failed and stopped are final.
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "failed", "stopped"}),
    "running": frozenset({"done", "failed", "stopped"}),
    "done": frozenset(),
    "failed": frozenset(),
    "stopped": frozenset(),
}
INPUT_KINDS = ("image", "audio", "video")
INTERRUPTED_ERROR = "interrupted (studio restarted)"
MAX_PAGE_SIZE = 200
MAX_ERROR_CHARS = 20_000
MAX_SEED = 2**63 - 1  # BIGINT
SQLITE_BUSY_TIMEOUT_MS = 30_000
# The owner of everything made without a login in local mode (today's single user); see `studio.owners`.
LOCAL_OWNER = "local"
MAX_OWNER_CHARS = 200
MAX_ADDRESS_CHARS = 100
PLACEHOLDER_NAME = "_placeholder.png"  # thumbs/: the gallery's picture for rows without a video
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
HEARTBEAT_S = 10.0  # how often a front-end proves it is alive and sweeps up after dead ones
BACKENDS = ("sqlite", "postgresql")
# A file the job layer writes for generation N before its row references it: videos/000007.mp4, its temporary
# .000007.1a2b3c4d.part.mp4, thumbs/000007.jpg (see DataPaths.video_rel and engine.media).
_ROW_FILE = re.compile(r"^\.?(\d+)\.")
_UPLOAD_PREFIX = ".upload-"

_COPY_CHUNK = 1 << 20


def utcnow() -> datetime:
    return datetime.now(UTC)


class NotFoundError(KeyError):
    """No row with that id. A KeyError whose str() is the plain message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out; stored naive UTC (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware datetime (e.g. datetime.now(UTC))")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


class Generation(Base):
    """One generation request and its outcome. Matches migration head (`tests/test_store.py` checks)."""

    __tablename__ = "generations"
    __table_args__ = (
        CheckConstraint("status IN ({})".format(", ".join(f"'{s}'" for s in STATUSES)), name="status"),
        {"sqlite_autoincrement": True},  # a deleted id is never handed to a later row
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Who may see, reuse and delete the row: every query of the store filters by it.
    owner: Mapped[str] = mapped_column(
        String(MAX_OWNER_CHARS), default=LOCAL_OWNER, server_default=LOCAL_OWNER, index=True
    )
    consent: Mapped[bool | None] = mapped_column(Boolean)  # public mode: "I have the right to use this face and voice"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    prompt: Mapped[str] = mapped_column(Text, default="")
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    mode: Mapped[str] = mapped_column(String(8))
    model_id: Mapped[str] = mapped_column(String(200))
    model_hash: Mapped[str | None] = mapped_column(String(128))
    seed: Mapped[int | None] = mapped_column(BigInteger)  # the seed actually used
    # Every setting needed to reproduce the run: guidance schedule, steps, size, frames, scheduler, ...
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # seconds: total, per step, ...
    input_hashes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # e.g. {"images": [sha], "audio": sha}
    input_paths: Mapped[list[str]] = mapped_column(JSON, default=list)  # relative to the data folder
    video_path: Mapped[str | None] = mapped_column(String(500))
    thumbnail_path: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    # The front-end instance that created (and runs) the row; only its death makes an active row orphaned.
    # No foreign key: rows outlive the instances that made them.
    instance_id: Mapped[int | None] = mapped_column(Integer)
    # prompt.casefold(): search folds case the same way on every database, whatever the server's locale.
    prompt_folded: Mapped[str] = mapped_column(Text, default="", server_default="")

    def files(self) -> list[str]:
        """Every data-folder file this row references (video, thumbnail, inputs), without repeats."""
        paths = [self.video_path, self.thumbnail_path, *(self.input_paths or [])]
        return list(dict.fromkeys(p for p in paths if p))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (datetimes as ISO 8601 UTC)."""
        out: dict[str, Any] = {}
        for column in self.__table__.columns:
            if column.key in ("prompt_folded", "instance_id"):
                continue  # bookkeeping of the store (a search copy of the prompt, the front-end running it)
            value = getattr(self, column.key)
            out[column.key] = value.isoformat() if isinstance(value, datetime) else value
        return out

    def __repr__(self) -> str:
        return f"Generation(id={self.id!r}, status={self.status!r}, mode={self.mode!r}, prompt={self.prompt[:40]!r})"


class AppSetting(Base):
    """Small key/value memory of the app (e.g. the Generate tab's last-run settings)."""

    __tablename__ = "app_settings"

    owner: Mapped[str] = mapped_column(
        String(MAX_OWNER_CHARS), primary_key=True, default=LOCAL_OWNER, server_default=LOCAL_OWNER
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Instance(Base):
    """One running front-end (an open `Store`): alive while its lease lock is held (`studio.leases`)."""

    __tablename__ = "instances"
    __table_args__ = ({"sqlite_autoincrement": True},)  # an id is never reused: a dead one's lock file stays its own

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FileClaim(Base):
    """A data-folder file an instance saved for a row it has not created yet (`Store.save_input`): no front-end
    removes it meanwhile. Gone with its instance."""

    __tablename__ = "file_claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(500), index=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AdmissionTicket(Base):
    """A public studio's admitted job, from arrival until its work has ended (`studio.admission`): counted across
    every front-end on the gallery. Gone with its instance, so a dead front-end's tickets stop counting."""

    __tablename__ = "admission_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(MAX_OWNER_CHARS), index=True)
    address: Mapped[str] = mapped_column(String(MAX_ADDRESS_CHARS), index=True)
    session: Mapped[str | None] = mapped_column(String(200))  # the page's Gradio session (None: an API call)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- engine ------------------------------------------------------------------------------------------


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration without an alembic.ini: the migrations folder and, optionally, a database URL."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser interpolation
    return cfg


def _install_sqlite_events(engine: Engine, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own BEGIN handling is replaced by ours (`_on_begin`): it would otherwise start
        # transactions lazily (deferred) and commit implicitly before DDL.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            if wal:
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")  # durable across app crashes in WAL mode
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front (IMMEDIATE) so they wait on busy_timeout rather than
        # fail when a deferred read transaction cannot be upgraded.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def database_url(url: str | URL) -> URL:
    """`url` as the store uses it: PostgreSQL through psycopg 3 (also for `postgres://` and `postgresql://`),
    or SQLite; any other database is refused here, with what to use instead."""
    u = make_url(url)
    backend = "postgresql" if u.get_backend_name() == "postgres" else u.get_backend_name()
    if backend not in BACKENDS:
        raise InputError(
            f"HUMO_DB_URL: {u.get_backend_name()} is not supported; use SQLite (the default, one machine) or "
            "PostgreSQL (postgresql://user:password@host/dbname) for several front-ends",
            field="db_url",
        )
    if backend == "postgresql" and u.drivername != "postgresql+psycopg":
        u = u.set(drivername="postgresql+psycopg")
    return u


def make_engine(url: str | URL) -> tuple[Engine, bool]:
    """Engine for `url` with the settings the store needs; also says whether calls must be serialized."""
    u = database_url(url)
    if u.get_backend_name() == "postgresql":
        # pre_ping: a connection the server closed (restart, idle timeout) is replaced before a job's write uses it.
        # UTF8 on the wire whatever the server's default, so a wrong database is refused with our own message
        # (`Store._check_server`) rather than failing inside SQLAlchemy on bytes.
        engine = create_engine(u, pool_pre_ping=True, pool_size=8, max_overflow=8, pool_timeout=60,
                               connect_args={"client_encoding": "utf8"})  # fmt: skip
        return engine, False
    memory = u.database in (None, "", ":memory:") or u.query.get("mode") == "memory"
    connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    if memory:
        # One connection shared by every thread (each connection would see its own empty database),
        # so the store serializes its calls.
        engine = create_engine(u, connect_args=connect_args, poolclass=StaticPool)
    else:
        # Gradio runs callbacks in a thread pool: enough connections that readers never queue.
        engine = create_engine(u, connect_args=connect_args, pool_size=8, max_overflow=8, pool_timeout=60)
    _install_sqlite_events(engine, wal=not memory)
    return engine, memory


def escape_like(text: str, escape: str = "\\") -> str:
    """`text` with LIKE wildcards (% and _) and the escape character escaped, for `.like(..., escape=escape)`."""
    return text.replace(escape, escape * 2).replace("%", escape + "%").replace("_", escape + "_")


def _json_value(value: Any, field: str) -> Any:
    """A JSON-safe copy of `value` (tuples become lists), as it will read back from the database."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise InputError(f"{field} must be JSON-serializable (dict/list/str/number/bool/None): {e}", field=field) from e


def _check_id(generation_id: Any) -> int:
    if isinstance(generation_id, bool) or not isinstance(generation_id, int):
        raise InputError(f"generation id must be an int, got {generation_id!r}", field="id")
    return generation_id


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed must be an int from 0 to {MAX_SEED}, got {seed!r}", field="seed")
    return seed


def check_owner(owner: Any) -> str:
    """An owner id: a non-empty string of at most MAX_OWNER_CHARS (see `studio.owners`)."""
    if not isinstance(owner, str) or not owner or len(owner) > MAX_OWNER_CHARS:
        raise InputError(f"owner must be a non-empty string of at most {MAX_OWNER_CHARS} characters", field="owner")
    return owner


def _clip_error(error: Any) -> str:
    text = str(error)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 40] + f"\n... [{len(text) - MAX_ERROR_CHARS + 40} characters cut]"
    return text


# --- the store -----------------------------------------------------------------------------------------


class Store:
    """Gallery storage over one data folder and one database. Create with `Store.open()`."""

    def __init__(self, paths: DataPaths, url: str | URL) -> None:
        self.paths = paths
        self.url = database_url(url).render_as_string(hide_password=False)
        self.engine, serialize = make_engine(self.url)
        # Same pool as `engine`; on SQLite its transactions begin IMMEDIATE (write lock up front).
        self._write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._reads = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._writes = sessionmaker(bind=self._write_engine, expire_on_commit=False)
        self._serial: AbstractContextManager[Any] = threading.RLock() if serialize else nullcontext()
        self._leases = Leases.for_engine(self.engine)
        self._keeper: threading.Thread | None = None
        self._closing = threading.Event()

    # lifecycle

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str] | None = None, url: str | URL | None = None) -> Store:
        """Open (creating if needed) the data folder and database, migrate the schema to head and register this
        front-end as a live instance.

        data_dir: argument, else `$HUMO_DATA_DIR`, else `./data`. url: argument, else `$HUMO_DB_URL`,
        else SQLite `<data_dir>/humo.db`. Media files always live in the data folder: front-ends sharing a
        PostgreSQL database must share that folder too (one path, mounted on every machine).
        """
        paths = DataPaths.at(data_dir).ensure()
        store = cls(paths, url or os.environ.get(ENV_DB_URL) or paths.sqlite_url)
        try:
            store._check_server()
            store.upgrade()
            store._register()
        except BaseException:
            store.close()
            raise
        return store

    def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations up to `revision`, in one transaction (SQLite: holding the write lock;
        PostgreSQL: holding an advisory lock, so a second front-end starting at once waits, then finds head)."""
        cfg = alembic_config(self.url)
        with self._serial, self._write_engine.begin() as conn:
            self._leases.migrate_lock(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def _check_server(self) -> None:
        """A PostgreSQL database must store text as UTF8 (SQL_ASCII would hand back bytes for every prompt)."""
        if self.engine.dialect.name != "postgresql":
            return
        with self.engine.connect() as conn:
            encoding = conn.execute(text("SHOW server_encoding")).scalar_one()
        if encoding.upper().replace("-", "") != "UTF8":
            raise InputError(
                f"the database {self.engine.url.database!r} stores text as {encoding}: create it with "
                "ENCODING 'UTF8' (createdb -E UTF8 -T template0 NAME) and point HUMO_DB_URL at it",
                field="db_url",
            )

    @property
    def instance_id(self) -> int | None:
        """This front-end's id in `instances` (rows it creates carry it)."""
        return self._leases.instance_id

    def _register(self) -> None:
        def insert_row(conn: Any) -> int:
            now = self._leases.now(conn)
            values = {"host": socket.gethostname()[:255], "pid": os.getpid(), "started_at": now, "heartbeat_at": now}
            return int(conn.execute(insert(Instance).values(**values)).inserted_primary_key[0])

        with self._serial:
            self._leases.register(self._write_engine, insert_row)

    def heartbeat(self) -> dict[str, int]:
        """Prove this front-end alive, then sweep up after dead ones: fail the rows they left queued or running
        and, when one died, remove the files nobody alive wants (`clean_leftovers`). Returns what was done."""
        self._leases.keep()
        with self._write() as session:
            now = self._leases.now(session.connection())
            beat = update(Instance).where(Instance.id == self.instance_id).values(heartbeat_at=now)
            if not session.execute(beat).rowcount:
                # Taken for dead while the lease was down (PostgreSQL): come back under the same id. Its rows were
                # failed meanwhile, so their jobs end failed rather than run twice.
                log.warning("studio instance %s was swept as dead; registering it again", self.instance_id)
                values = {"host": socket.gethostname()[:255], "pid": os.getpid(), "started_at": now}
                session.execute(insert(Instance).values(id=self.instance_id, heartbeat_at=now, **values))
        failed, dead = self._reap()
        removed = self.clean_leftovers() if dead else {"partial": 0, "unreferenced": 0}
        return {"failed": failed, "dead_instances": dead, **removed}

    def start_heartbeat(self, every_s: float = HEARTBEAT_S) -> None:
        """Run `heartbeat` every `every_s` seconds in a daemon thread until `close` (a serving front-end does)."""

        def beat() -> None:
            while not self._closing.wait(every_s):
                try:
                    report = self.heartbeat()
                except Exception:  # a database hiccup: the next beat tries again
                    log.exception("studio heartbeat failed")
                    continue
                if report["failed"] or report["dead_instances"]:
                    log.warning("swept up after stopped front-ends: %s", report)

        self._keeper = threading.Thread(target=beat, name=f"humo-heartbeat-{self.instance_id}", daemon=True)
        self._keeper.start()

    def close(self) -> None:
        """Stop the heartbeat, give this instance up and close every pooled connection. Rows this front-end left
        queued or running become orphans that the next sweep of any front-end fails."""
        if self._closing.is_set():
            return
        self._closing.set()
        if self._keeper is not None:
            self._keeper.join(timeout=60)
        if self.instance_id is not None:
            try:
                with self._write() as session:
                    session.execute(delete(Instance).where(Instance.id == self.instance_id))
            except Exception:  # the database is gone: the others' sweep finds the lock free
                log.warning("could not unregister studio instance %s", self.instance_id, exc_info=True)
        self._leases.release()
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._serial, self._reads() as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._serial, self._writes() as session, session.begin():
            yield session

    # paths

    @property
    def data_dir(self) -> Path:
        return self.paths.root

    def abs_path(self, rel: str | os.PathLike[str]) -> Path:
        """Absolute path of a stored (relative) path."""
        return self.paths.abs_path(rel)

    def rel_path(self, path: str | os.PathLike[str]) -> str:
        """Relative (posix) path to store for a file inside the data folder."""
        return self.paths.rel_path(path)

    def _existing_rel(self, path: str | os.PathLike[str], field: str) -> str:
        try:
            rel = self.rel_path(path)
        except InputError as e:
            raise InputError(str(e), field=field) from None
        if not self.abs_path(rel).is_file():
            raise InputError(f"{field}: {rel} does not exist in the data folder {self.data_dir}", field=field)
        return rel

    # inputs

    def save_input(self, src_path: str | os.PathLike[str], kind: str) -> tuple[str, str]:
        """Copy an uploaded file to `inputs/<sha[:2]>/<sha><ext>`; return (relative path, sha256).

        Identical content (and extension) is stored once. The copy is atomic: a temporary file in
        `inputs/` (named for this instance, so no other front-end takes it for a crash's leftover) renamed into
        place. The file stays claimed by this instance until `create_generation` records it (or `discard_inputs`
        lets it go), so a `delete` of another row using it, in any front-end, does not remove it.
        """
        if kind not in INPUT_KINDS:
            raise InputError(f"input kind {kind!r}: use one of {', '.join(INPUT_KINDS)}", field="kind")
        src = Path(src_path)
        if not src.is_file():
            raise InputError(f"{kind} file {src} does not exist: upload it again", field=kind)
        self.paths.inputs.mkdir(parents=True, exist_ok=True)
        prefix = f"{_UPLOAD_PREFIX}{self.instance_id}-"
        fd, tmp_name = tempfile.mkstemp(dir=self.paths.inputs, prefix=prefix, suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out, src.open("rb") as f:
                while chunk := f.read(_COPY_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size == 0:
                raise InputError(f"{kind} file {src.name} is empty: choose another file", field=kind)
            sha = digest.hexdigest()
            rel = DataPaths.input_rel(sha, clean_ext(src.name))
            dest = self.abs_path(rel)
            with self._leases.files_lock():
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.is_file():
                    tmp.unlink()  # already stored: same bytes, same name
                else:
                    os.replace(tmp, dest)
                with self._write() as session:
                    session.add(FileClaim(path=rel, instance_id=self.instance_id, created_at=utcnow()))
            return rel, sha
        finally:
            tmp.unlink(missing_ok=True)

    # generations

    def create_generation(
        self,
        *,
        prompt: str,
        mode: str,
        model_id: str,
        negative_prompt: str = "",
        model_hash: str | None = None,
        seed: int | None = None,
        settings: dict[str, Any] | None = None,
        input_hashes: dict[str, Any] | None = None,
        input_paths: Iterable[str | os.PathLike[str]] = (),
        total_steps: int | None = None,
        owner: str = LOCAL_OWNER,
        consent: bool | None = None,
    ) -> Generation:
        """Record a new queued generation of `owner`. Input paths must be files inside the data folder
        (see `save_input`)."""
        if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
            raise InputError("prompt and negative_prompt must be strings", field="prompt")
        if mode not in MODES:
            raise InputError(f"mode {mode!r}: use one of {', '.join(MODES)}", field="mode")
        if not isinstance(model_id, str) or not model_id or len(model_id) > 200:
            raise InputError(
                f"model_id must be a non-empty string of at most 200 characters, got {model_id!r}", field="model_id"
            )
        if model_hash is not None and (not isinstance(model_hash, str) or len(model_hash) > 128):
            raise InputError("model_hash must be a string of at most 128 characters", field="model_hash")
        if total_steps is not None and (
            isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1
        ):
            raise InputError(f"total_steps must be a positive int, got {total_steps!r}", field="total_steps")
        if isinstance(input_paths, str | os.PathLike):
            raise InputError("input_paths must be a list of paths, not one path", field="input_paths")
        rels = [self._existing_rel(p, "input_paths") for p in input_paths]
        row = Generation(
            owner=check_owner(owner),
            instance_id=self.instance_id,
            prompt_folded=prompt.casefold(),
            consent=consent,
            status="queued",
            created_at=utcnow(),
            prompt=prompt,
            negative_prompt=negative_prompt,
            mode=mode,
            model_id=model_id,
            model_hash=model_hash,
            seed=_check_seed(seed),
            settings=_json_value(settings or {}, "settings"),
            timings={},
            input_hashes=_json_value(input_hashes or {}, "input_hashes"),
            input_paths=rels,
            total_steps=total_steps,
        )
        # Holding the files lock, a delete either sees this row or sees the inputs still claimed; the row and the
        # end of its inputs' claims commit together.
        with self._leases.files_lock() if rels else nullcontext():
            for rel in rels:  # re-check: a delete may have removed an unclaimed file meanwhile
                self._existing_rel(rel, "input_paths")
            with self._write() as session:
                session.add(row)
                for rel in rels:
                    self._release_claim(session, rel)
        return row

    def get(self, generation_id: int, owner: str = LOCAL_OWNER) -> Generation:
        """`owner`'s row with this id (NotFoundError, a KeyError, if none: another owner's row reads as missing)."""
        with self._read() as session:
            return self._row(session, generation_id, owner)

    @staticmethod
    def _row(session: Session, generation_id: int, owner: str | None = None, lock: bool = False) -> Generation:
        """The row; with `owner`, only that owner's (the job layer's own transitions pass None). `lock`: a write's
        read-check-write holds the row until commit (PostgreSQL's FOR UPDATE; SQLite's writer already is alone)."""
        row = session.get(Generation, _check_id(generation_id), with_for_update=True if lock else None)
        if row is None or (owner is not None and row.owner != check_owner(owner)):
            raise NotFoundError(f"no generation with id {generation_id} (never created, or deleted)")
        return row

    def count_active(self, owner: str) -> int:
        """How many of `owner`'s rows are queued or running (public mode admits one at a time)."""
        with self._read() as session:
            query = select(func.count()).select_from(Generation)
            return int(
                session.scalar(
                    query.where(Generation.owner == check_owner(owner), Generation.status.in_(ACTIVE_STATUSES))
                )
                or 0
            )

    def _transition(self, generation_id: int, new_status: str, **values: Any) -> Generation:
        with self._write() as session:
            row = self._row(session, generation_id, lock=True)
            if new_status not in TRANSITIONS[row.status]:
                raise ValueError(f"generation {generation_id} is {row.status}: it cannot become {new_status}")
            row.status = new_status
            for key, value in values.items():
                setattr(row, key, value)
            if new_status == "done" and row.total_steps is not None:
                row.step = row.total_steps  # a finished run shows full progress
            return row

    def mark_running(self, generation_id: int) -> Generation:
        """queued -> running; sets started_at and resets progress."""
        return self._transition(generation_id, "running", started_at=utcnow(), step=0)

    def update_progress(self, generation_id: int, step: int, total: int) -> Generation:
        """Record denoising progress of a running generation (0 <= step <= total)."""
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (step, total))
        if not ok or total < 1 or not 0 <= step <= total:
            raise InputError(f"progress must satisfy 0 <= step <= total, total >= 1; got {step}/{total}", field="step")
        with self._write() as session:
            row = self._row(session, generation_id, lock=True)
            if row.status != "running":
                raise ValueError(f"generation {generation_id} is {row.status}: progress is only recorded while running")
            row.step, row.total_steps = step, total
            return row

    def mark_done(
        self,
        generation_id: int,
        video_path: str | os.PathLike[str],
        thumbnail_path: str | os.PathLike[str] | None = None,
        timings: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> Generation:
        """running -> done. The video (and thumbnail, if given) must already exist in the data folder."""
        video = self._existing_rel(video_path, "video_path")
        thumb = None if thumbnail_path is None else self._existing_rel(thumbnail_path, "thumbnail_path")
        values: dict[str, Any] = {
            "video_path": video,
            "thumbnail_path": thumb,
            "timings": _json_value(timings or {}, "timings"),
            "finished_at": utcnow(),
            "error": None,
        }
        if seed is not None:
            values["seed"] = _check_seed(seed)
        return self._transition(generation_id, "done", **values)

    def mark_failed(self, generation_id: int, error: str) -> Generation:
        """queued/running -> failed, with the error message shown to the user."""
        return self._transition(generation_id, "failed", error=_clip_error(error), finished_at=utcnow())

    def mark_stopped(
        self,
        generation_id: int,
        error: str | None = None,
        video_path: str | os.PathLike[str] | None = None,
        thumbnail_path: str | os.PathLike[str] | None = None,
    ) -> Generation:
        """queued/running -> stopped (the user pressed Stop). A live job keeps what it finished: the video (and
        thumbnail) of its finished chunks, which must already exist in the data folder."""
        values: dict[str, Any] = {}
        if video_path is not None:
            values["video_path"] = self._existing_rel(video_path, "video_path")
        if thumbnail_path is not None:
            values["thumbnail_path"] = self._existing_rel(thumbnail_path, "thumbnail_path")
        return self._transition(
            generation_id,
            "stopped",
            error=None if error is None else _clip_error(error),
            finished_at=utcnow(),
            **values,
        )

    def recover_crashed(self) -> int:
        """Fail the rows that dead front-ends left queued or running (and forget those front-ends); returns how
        many rows. A row of a live front-end, this one's included, is never touched: call it at start-up (before
        the job worker runs) and let the heartbeat call it while serving.

        Dead: its lease lock is free and its heartbeat older than the backend's grace (`studio.leases`). Rows made
        before front-ends had ids (no instance) count as orphaned.
        """
        return self._reap()[0]

    def _dead_instances(self, session: Session) -> list[int]:
        """The instances whose lock is free and whose heartbeat is older than the grace (`studio.leases`)."""
        conn = session.connection()
        instances = session.execute(select(Instance.id, Instance.heartbeat_at)).all()
        held = self._leases.held(conn, [i for i, _ in instances])
        cutoff = self._leases.now(conn) - timedelta(seconds=self._leases.grace_s)
        return [i for i, beat in instances if i not in held and beat <= cutoff]

    def _reap(self) -> tuple[int, int]:
        """(rows failed, dead instances removed); their claims and tickets go with them (ON DELETE CASCADE)."""
        with self._write() as session:
            dead = self._dead_instances(session)
            if dead:
                session.execute(delete(Instance).where(Instance.id.in_(dead)))
            orphaned = or_(Generation.instance_id.is_(None), Generation.instance_id.not_in(select(Instance.id)))
            result = session.execute(
                update(Generation)
                .where(Generation.status.in_(ACTIVE_STATUSES), orphaned)
                .values(status="failed", error=INTERRUPTED_ERROR, finished_at=utcnow())
            )
        self._leases.forget(dead)
        return int(result.rowcount or 0), len(dead)

    def list_generations(
        self,
        page: int = 1,
        page_size: int = 24,
        query: str | None = None,
        status: str | Iterable[str] | None = None,
        owner: str = LOCAL_OWNER,
    ) -> tuple[list[Generation], int]:
        """One page of `owner`'s rows, newest first, and the total number of matching rows.

        query: case-insensitive substring of the prompt (wildcards are literal). status: one or several.
        A page past the end is empty.
        """
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise InputError(f"page must be an int >= 1, got {page!r}", field="page")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InputError(
                f"page_size must be an int from 1 to {MAX_PAGE_SIZE}, got {page_size!r}", field="page_size"
            )
        filters = [Generation.owner == check_owner(owner)]
        if query is not None and query.strip():
            folded = escape_like(query.strip().casefold())
            filters.append(Generation.prompt_folded.like(f"%{folded}%", escape="\\"))
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            unknown = [s for s in wanted if s not in STATUSES]
            if unknown or not wanted:
                raise InputError(f"status {unknown or wanted!r}: use one of {', '.join(STATUSES)}", field="status")
            filters.append(Generation.status.in_(wanted))
        with self._read() as session:
            total = session.scalar(select(func.count()).select_from(Generation).where(*filters)) or 0
            rows = session.scalars(
                select(Generation)
                .where(*filters)
                .order_by(Generation.created_at.desc(), Generation.id.desc())
                .limit(page_size)
                .offset((page - 1) * page_size)
            ).all()
        return list(rows), int(total)

    def delete(self, generation_id: int, owner: str = LOCAL_OWNER) -> list[str]:
        """Delete `owner`'s finished row and then its files that no other row references and no front-end claims;
        returns the removed paths. Queued/running rows raise ValueError: stop them first.
        """
        with self._leases.files_lock():
            with self._write() as session:
                row = self._row(session, generation_id, owner, lock=True)
                if row.status in ACTIVE_STATUSES:
                    raise ValueError(f"generation {generation_id} is {row.status}: stop it before deleting it")
                owned = row.files()
                session.delete(row)
                session.flush()
                kept = {rel for rel in owned if self._in_use(session, rel)}
            # The row is committed: only now do files go, so no row ever points to a missing file.
            return self._unlink([rel for rel in owned if rel not in kept])

    def discard_inputs(self, rels: Iterable[str]) -> list[str]:
        """Release inputs saved for a job refused before its row existed (one claim per `save_input`); remove
        those no row references and no front-end claims. Returns the removed paths. (A refused job must leave no
        file behind.)"""
        rels = list(rels)
        with self._leases.files_lock():
            with self._write() as session:
                for rel in rels:
                    self._release_claim(session, rel)
                unused = [rel for rel in dict.fromkeys(rels) if not self._in_use(session, rel)]
            return self._unlink(unused)

    def _unlink(self, rels: Iterable[str]) -> list[str]:
        """Remove these data-folder files (those still there); returns the removed ones. Under the files lock."""
        removed = []
        for rel in rels:
            path = self.abs_path(rel)
            if path.is_file():
                path.unlink(missing_ok=True)  # another front-end may have just removed it too
                removed.append(rel)
        return removed

    def clean_leftovers(self) -> dict[str, int]:
        """Remove half-written files (`*.part.*`, `.upload-*`) and media and inputs that no row references (a
        crash between writing a file and recording it), sparing whatever a live front-end may still want: the
        files of its queued and running rows, its uploads in progress and its claimed inputs. Returns counts per
        kind. Runs at start-up and whenever a heartbeat found a dead front-end."""
        counts = {"partial": 0, "unreferenced": 0}
        with self._leases.files_lock():
            # The folder first, the database second: every file listed was made after the row, claim or instance
            # that protects it committed, so a job that starts meanwhile never loses a file.
            listed = [
                path
                for folder in (self.paths.videos, self.paths.thumbs, self.paths.inputs, self.paths.previews)
                for path in (sorted(folder.rglob("*")) if folder.is_dir() else [])
                if path.is_file() and not path.is_symlink() and path.name != PLACEHOLDER_NAME
            ]
            with self._read() as session:
                g = Generation
                rows = session.execute(select(g.id, g.status, g.video_path, g.thumbnail_path, g.input_paths)).all()
                claimed = set(session.scalars(select(FileClaim.path)))
                live = {str(i) for i in session.scalars(select(Instance.id))}
            referenced = claimed | {p for _, _, *files in rows for p in (*files[:2], *(files[2] or [])) if p}
            active = {str(gid) for gid, status, *_ in rows if status in ACTIVE_STATUSES}
            for path in listed:
                partial = ".part." in path.name or path.name.startswith(_UPLOAD_PREFIX)
                if self._wanted(path, partial, referenced, active, live):
                    continue
                path.unlink(missing_ok=True)
                counts["partial" if partial else "unreferenced"] += 1
        return counts

    def _wanted(self, path: Path, partial: bool, referenced: set[str], active: set[str], live: set[str]) -> bool:
        """Whether a listed data-folder file is still wanted (see `clean_leftovers`)."""
        if path.name.startswith(_UPLOAD_PREFIX):
            return path.name[len(_UPLOAD_PREFIX) :].split("-", 1)[0] in live
        match = _ROW_FILE.match(path.name)
        if match and path.parent in (self.paths.videos, self.paths.thumbs, self.paths.previews):
            if str(int(match.group(1))) in active:  # being written for a queued or running row
                return True
        return not partial and self.rel_path(path) in referenced

    def _in_use(self, session: Session, rel: str) -> bool:
        """Whether any row references `rel` (video, thumbnail or input) or any front-end claims it."""
        if session.scalar(select(FileClaim.id).where(FileClaim.path == rel).limit(1)) is not None:
            return True
        # Prefilter in SQL on the JSON text (the serializer is json.dumps, so the quoted form matches
        # exactly), then confirm in Python to rule out look-alikes.
        in_inputs = cast(Generation.input_paths, Text).like(f"%{escape_like(json.dumps(rel))}%", escape="\\")
        candidates = session.execute(
            select(Generation.video_path, Generation.thumbnail_path, Generation.input_paths).where(
                or_(Generation.video_path == rel, Generation.thumbnail_path == rel, in_inputs)
            )
        ).all()
        return any(rel in (video, thumb) or rel in (inputs or []) for video, thumb, inputs in candidates)

    def _release_claim(self, session: Session, rel: str) -> None:
        """End one of this instance's claims on `rel` (none: a path the caller did not save through us)."""
        claim = session.scalar(
            select(FileClaim.id).where(FileClaim.path == rel, FileClaim.instance_id == self.instance_id).limit(1)
        )
        if claim is not None:
            session.execute(delete(FileClaim).where(FileClaim.id == claim))

    # admission tickets (studio.admission decides; the store counts across front-ends)

    def take_ticket(
        self, owner: str, address: str, session_hash: str | None, per_address: int, queue: int
    ) -> tuple[str, int] | None:
        """Take an admission ticket for `owner` unless one of the caps is reached; None when taken, else (which cap,
        how many tickets count against it): ("owner", n) when the owner holds one on any front-end, ("address", n)
        when `address` holds `per_address` there, ("queue", n) when this front-end holds `queue`.

        One transaction counts and inserts, serialized across front-ends (SQLite: BEGIN IMMEDIATE, the one writer;
        PostgreSQL: an advisory transaction lock, since FOR UPDATE cannot lock rows not yet inserted). Tickets of
        dead front-ends are deleted first: they stop counting as soon as their instance is dead."""
        owner, address = check_owner(owner), str(address)[:MAX_ADDRESS_CHARS]
        with self._write() as session:
            self._leases.admission_lock(session.connection())
            dead = self._dead_instances(session)
            if dead:
                session.execute(delete(AdmissionTicket).where(AdmissionTicket.instance_id.in_(dead)))
            counts = session.execute(
                select(
                    func.count().filter(AdmissionTicket.owner == owner),
                    func.count().filter(AdmissionTicket.address == address),
                    func.count().filter(AdmissionTicket.instance_id == self.instance_id),
                )
            ).one()
            for cap, n, limit in zip(("owner", "address", "queue"), counts, (1, per_address, queue), strict=True):
                if n >= limit:
                    return cap, int(n)
            now = self._leases.now(session.connection())
            session.add(
                AdmissionTicket(
                    owner=owner,
                    address=address,
                    session=session_hash and str(session_hash)[:200],
                    instance_id=self.instance_id,
                    created_at=now,
                )  # fmt: skip
            )
        return None

    def tickets(self) -> list[tuple[str, str, str | None, float]]:
        """This front-end's tickets: (owner, address, session, age in seconds), oldest first."""
        with self._read() as session:
            now = self._leases.now(session.connection())
            rows = session.execute(
                select(
                    AdmissionTicket.owner, AdmissionTicket.address, AdmissionTicket.session, AdmissionTicket.created_at
                )  # fmt: skip
                .where(AdmissionTicket.instance_id == self.instance_id)
                .order_by(AdmissionTicket.id)
            ).all()
        return [(o, a, s, (now - at).total_seconds()) for o, a, s, at in rows]

    def drop_tickets(self, owners: Iterable[str]) -> None:
        """Give back this front-end's tickets of `owners` (their jobs ended, or their pages went away)."""
        owners = list(owners)
        if owners:
            with self._write() as session:
                session.execute(
                    delete(AdmissionTicket).where(
                        AdmissionTicket.instance_id == self.instance_id, AdmissionTicket.owner.in_(owners)
                    )
                )

    # app settings

    def get_setting(self, key: str, default: Any = None, owner: str = LOCAL_OWNER) -> Any:
        """`owner`'s stored JSON value of `key`, or `default` when never set."""
        with self._read() as session:
            row = session.get(AppSetting, (check_owner(owner), self._check_key(key)))
            return default if row is None else row.value

    def set_setting(self, key: str, value: Any, owner: str = LOCAL_OWNER) -> None:
        """Store a JSON-serializable value under `owner`'s `key` (replacing any previous one)."""
        value = _json_value(value, "value")
        dialect_insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        upsert = dialect_insert(AppSetting).values(
            owner=check_owner(owner), key=self._check_key(key), value=value, updated_at=utcnow()
        )
        # One statement: two front-ends (or threads) setting a new key at once both succeed, the last one wins.
        upsert = upsert.on_conflict_do_update(
            index_elements=[AppSetting.owner, AppSetting.key],
            set_={"value": upsert.excluded.value, "updated_at": upsert.excluded.updated_at},
        )
        with self._write() as session:
            session.execute(upsert)

    @staticmethod
    def _check_key(key: str) -> str:
        if not isinstance(key, str) or not key or len(key) > 200:
            raise InputError(
                f"setting key must be a non-empty string of at most 200 characters, got {key!r}", field="key"
            )
        return key
