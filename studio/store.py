"""The gallery store: every generation the studio ran, its settings, inputs and output files.

SQLAlchemy 2 ORM over SQLite in the data folder (`studio.paths`), or any SQLAlchemy URL (`HUMO_DB_URL`).
The schema is owned by Alembic (`studio/migrations`); `Store.open` upgrades it to head.

Threads: one `Store` is shared by all Gradio callbacks. Every method opens its own short session, so
calls are thread-safe, and returns detached `Generation` objects (all columns loaded, safe to read
from any thread; changing them changes nothing in the database).

SQLite specifics: WAL journal (readers never wait for the writer), foreign keys on, a busy timeout,
and write transactions that start with `BEGIN IMMEDIATE` so two writers queue on the busy timeout
instead of failing with "database is locked" when a read lock cannot be upgraded.

Files: stored paths are relative to the data folder. `delete` removes the row first and the files
after the commit, keeping any file another row still references, so no row ever points to a
deleted file. Inputs from `save_input` are pinned in this process until `create_generation` records
them, so a concurrent `delete` cannot remove an upload before its row exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
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
    Integer,
    MetaData,
    String,
    Text,
    cast,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from engine.errors import InputError
from engine.guidance import MODES
from studio.paths import ENV_DB_URL, DataPaths, clean_ext

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
PLACEHOLDER_NAME = "_placeholder.png"  # thumbs/: the gallery's picture for rows without a video
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

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

    def files(self) -> list[str]:
        """Every data-folder file this row references (video, thumbnail, inputs), without repeats."""
        paths = [self.video_path, self.thumbnail_path, *(self.input_paths or [])]
        return list(dict.fromkeys(p for p in paths if p))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (datetimes as ISO 8601 UTC)."""
        out: dict[str, Any] = {}
        for column in self.__table__.columns:
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


# --- engine ------------------------------------------------------------------------------------------


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration without an alembic.ini: the migrations folder and, optionally, a database URL."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser interpolation
    return cfg


def _casefold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


def _install_sqlite_events(engine: Engine, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own BEGIN handling is replaced by ours (`_on_begin`): it would otherwise start
        # transactions lazily (deferred) and commit implicitly before DDL.
        dbapi_conn.isolation_level = None
        # SQLite's lower() only folds ASCII; search should find "CAFÉ" for "café".
        dbapi_conn.create_function("lower", 1, _casefold, deterministic=True)
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


def make_engine(url: str) -> tuple[Engine, bool]:
    """Engine for `url` with the settings the store needs; also says whether calls must be serialized."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return create_engine(u, pool_pre_ping=True, pool_size=8, max_overflow=8), False
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


# --- files shared between rows -----------------------------------------------------------------------

# Guards the window between "is this file still referenced?" and unlinking it (see module docstring).
_FILES_LOCK = threading.RLock()
_PINNED: Counter[str] = Counter()


def _pin(path: Path) -> None:
    with _FILES_LOCK:
        _PINNED[str(path)] += 1


def _unpin(path: Path) -> None:
    with _FILES_LOCK:
        key = str(path)
        if _PINNED[key] <= 1:
            _PINNED.pop(key, None)
        else:
            _PINNED[key] -= 1


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

    def __init__(self, paths: DataPaths, url: str) -> None:
        self.paths = paths
        self.url = url
        self.engine, serialize = make_engine(url)
        # Same pool as `engine`; on SQLite its transactions begin IMMEDIATE (write lock up front).
        self._write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._reads = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._writes = sessionmaker(bind=self._write_engine, expire_on_commit=False)
        self._serial: AbstractContextManager[Any] = threading.RLock() if serialize else nullcontext()

    # lifecycle

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str] | None = None, url: str | None = None) -> Store:
        """Open (creating if needed) the data folder and database, and migrate the schema to head.

        data_dir: argument, else `$HUMO_DATA_DIR`, else `./data`. url: argument, else `$HUMO_DB_URL`,
        else SQLite `<data_dir>/humo.db`. Media files always live in the data folder.
        """
        paths = DataPaths.at(data_dir).ensure()
        store = cls(paths, url or os.environ.get(ENV_DB_URL) or paths.sqlite_url)
        try:
            store.upgrade()
        except BaseException:
            store.close()
            raise
        return store

    def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations up to `revision`, in one transaction (SQLite: holding the write lock)."""
        cfg = alembic_config(self.url)
        with self._serial, self._write_engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def close(self) -> None:
        """Close every pooled connection."""
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
        `inputs/` renamed into place. The file stays pinned in this process until `create_generation`
        records it, so a concurrent `delete` of another row using it does not remove it.
        """
        if kind not in INPUT_KINDS:
            raise InputError(f"input kind {kind!r}: use one of {', '.join(INPUT_KINDS)}", field="kind")
        src = Path(src_path)
        if not src.is_file():
            raise InputError(f"{kind} file {src} does not exist: upload it again", field=kind)
        self.paths.inputs.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.paths.inputs, prefix=".upload-", suffix=".tmp")
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
            with _FILES_LOCK:
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.is_file():
                    tmp.unlink()  # already stored: same bytes, same name
                else:
                    os.replace(tmp, dest)
                _pin(dest)
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
        # Holding the files lock, a delete either sees this row or sees the inputs still pinned.
        with _FILES_LOCK if rels else nullcontext():
            for rel in rels:  # re-check: a delete may have removed an unpinned file meanwhile
                self._existing_rel(rel, "input_paths")
            with self._write() as session:
                session.add(row)
            for rel in rels:
                _unpin(self.abs_path(rel))
        return row

    def get(self, generation_id: int, owner: str = LOCAL_OWNER) -> Generation:
        """`owner`'s row with this id (NotFoundError, a KeyError, if none: another owner's row reads as missing)."""
        with self._read() as session:
            return self._row(session, generation_id, owner)

    @staticmethod
    def _row(session: Session, generation_id: int, owner: str | None = None) -> Generation:
        """The row; with `owner`, only that owner's (the job layer's own transitions pass None)."""
        row = session.get(Generation, _check_id(generation_id))
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
            row = self._row(session, generation_id)
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
            row = self._row(session, generation_id)
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

    def mark_stopped(self, generation_id: int, error: str | None = None) -> Generation:
        """queued/running -> stopped (the user pressed Stop)."""
        return self._transition(
            generation_id, "stopped", error=None if error is None else _clip_error(error), finished_at=utcnow()
        )

    def recover_crashed(self) -> int:
        """Mark rows left queued/running by a crash as failed; returns how many.

        Call once at studio start, before the job worker runs (it would otherwise fail live jobs).
        """
        with self._write() as session:
            result = session.execute(
                update(Generation)
                .where(Generation.status.in_(ACTIVE_STATUSES))
                .values(status="failed", error=INTERRUPTED_ERROR, finished_at=utcnow())
            )
            return int(result.rowcount or 0)

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
            filters.append(Generation.prompt.ilike(f"%{escape_like(query.strip())}%", escape="\\"))
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
        """Delete `owner`'s finished row and then its files that no other row references; returns the removed
        paths. Queued/running rows raise ValueError: stop them first.
        """
        with _FILES_LOCK:
            with self._write() as session:
                row = self._row(session, generation_id, owner)
                if row.status in ACTIVE_STATUSES:
                    raise ValueError(f"generation {generation_id} is {row.status}: stop it before deleting it")
                owned = row.files()
                session.delete(row)
                session.flush()
                shared = {rel for rel in owned if self._referenced(session, rel)}
            # The row is committed: only now do files go, so no row ever points to a missing file.
            removed = []
            for rel in owned:
                path = self.abs_path(rel)
                if rel in shared or _PINNED[str(path)] > 0:
                    continue
                if path.is_file():
                    path.unlink()
                    removed.append(rel)
            return removed

    def discard_inputs(self, rels: Iterable[str]) -> list[str]:
        """Release inputs saved for a job refused before its row existed; remove those no row references.

        Returns the removed paths. (A refused job must leave no file behind.)"""
        removed = []
        with _FILES_LOCK:
            for rel in dict.fromkeys(rels):
                path = self.abs_path(rel)
                _unpin(path)
                with self._read() as session:
                    keep = self._referenced(session, rel)
                if not keep and _PINNED[str(path)] == 0 and path.is_file():
                    path.unlink()
                    removed.append(rel)
        return removed

    def clean_leftovers(self) -> dict[str, int]:
        """At start-up, before any job: remove half-written files (`*.part.*`, `.upload-*`) and media and inputs
        that no row references (a crash between writing a file and recording it). Returns counts per kind."""
        with self._read() as session:
            rows = session.execute(
                select(Generation.video_path, Generation.thumbnail_path, Generation.input_paths)
            ).all()
        referenced = {p for video, thumb, inputs in rows for p in (video, thumb, *(inputs or [])) if p}
        counts = {"partial": 0, "unreferenced": 0}
        with _FILES_LOCK:
            for folder in (self.paths.videos, self.paths.thumbs, self.paths.inputs, self.paths.previews):
                for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
                    if not path.is_file() or path.is_symlink() or _PINNED[str(path)] > 0:
                        continue
                    partial = ".part." in path.name or path.name.startswith(".upload-")
                    if partial or (path.name != PLACEHOLDER_NAME and self.rel_path(path) not in referenced):
                        path.unlink()
                        counts["partial" if partial else "unreferenced"] += 1
        return counts

    @staticmethod
    def _referenced(session: Session, rel: str) -> bool:
        """Whether any row references `rel` as its video, thumbnail or one of its inputs."""
        # Prefilter in SQL on the JSON text (the serializer is json.dumps, so the quoted form matches
        # exactly), then confirm in Python to rule out look-alikes.
        in_inputs = cast(Generation.input_paths, Text).like(f"%{escape_like(json.dumps(rel))}%", escape="\\")
        candidates = session.execute(
            select(Generation.video_path, Generation.thumbnail_path, Generation.input_paths).where(
                or_(Generation.video_path == rel, Generation.thumbnail_path == rel, in_inputs)
            )
        ).all()
        return any(rel in (video, thumb) or rel in (inputs or []) for video, thumb, inputs in candidates)

    # app settings

    def get_setting(self, key: str, default: Any = None, owner: str = LOCAL_OWNER) -> Any:
        """`owner`'s stored JSON value of `key`, or `default` when never set."""
        with self._read() as session:
            row = session.get(AppSetting, (check_owner(owner), self._check_key(key)))
            return default if row is None else row.value

    def set_setting(self, key: str, value: Any, owner: str = LOCAL_OWNER) -> None:
        """Store a JSON-serializable value under `owner`'s `key` (replacing any previous one)."""
        value = _json_value(value, "value")
        with self._write() as session:
            row = session.get(AppSetting, (check_owner(owner), self._check_key(key)))
            if row is None:
                session.add(AppSetting(owner=owner, key=key, value=value, updated_at=utcnow()))
            else:
                row.value, row.updated_at = value, utcnow()

    @staticmethod
    def _check_key(key: str) -> str:
        if not isinstance(key, str) or not key or len(key) > 200:
            raise InputError(
                f"setting key must be a non-empty string of at most 200 characters, got {key!r}", field="key"
            )
        return key
