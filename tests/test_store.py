"""Gallery store: rows, status transitions, search, files, migrations, concurrency. Every test taking `store` or
`db_url` runs on SQLite and on a real PostgreSQL server (tests/postgres.py)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from engine.errors import InputError
from studio.paths import DB_FILENAME, SUBDIRS, DataPaths
from studio.store import Base, Store, alembic_config, escape_like


@pytest.fixture
def store(tmp_path: Path, db_url):
    s = Store.open(tmp_path / "data", url=db_url)
    yield s
    s.close()


def _new(store: Store, prompt: str = "a person talking", **kw):
    fields = {"prompt": prompt, "mode": "TIA", "model_id": "humo-17b", "total_steps": 4, **kw}
    return store.create_generation(**fields)


def _media(store: Store, gen_id: int) -> tuple[str, str]:
    """Write a fake video and thumbnail for `gen_id` where the job layer would; return their relative paths."""
    video, thumb = DataPaths.video_rel(gen_id), DataPaths.thumb_rel(gen_id)
    store.abs_path(video).write_bytes(b"mp4" + bytes([gen_id % 256]))
    store.abs_path(thumb).write_bytes(b"jpg")
    return video, thumb


def _upload(tmp_path: Path, name: str, content: bytes) -> Path:
    p = tmp_path / "uploads" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(content)
    return p


def _finish(store: Store, gen_id: int):
    store.mark_running(gen_id)
    video, thumb = _media(store, gen_id)
    return store.mark_done(gen_id, video, thumb, timings={"total_s": 1.5}, seed=7)


# --- layout and paths -------------------------------------------------------------------------------


def test_open_creates_layout_and_paths_are_relative(tmp_path):
    with Store.open(tmp_path / "data") as store:
        root = (tmp_path / "data").resolve()
        assert store.data_dir == root
        assert (root / DB_FILENAME).is_file()
        for sub in SUBDIRS:
            assert (root / sub).is_dir(), sub
        assert store.rel_path(root / "videos" / "x.mp4") == "videos/x.mp4"
        assert store.abs_path("videos/x.mp4") == root / "videos" / "x.mp4"
        for bad in ("../outside.mp4", "/etc/passwd", "videos/../../x"):
            with pytest.raises(InputError):
                store.abs_path(bad)
        with pytest.raises(InputError, match="outside the data folder"):
            store.rel_path(tmp_path / "elsewhere.mp4")

        src = _upload(tmp_path, "face.PNG", b"png-bytes")
        rel, _ = store.save_input(src, "image")
        row = _new(store, input_paths=[store.abs_path(rel)])  # absolute inside the folder: stored relative
        store.mark_running(row.id)
        video, thumb = _media(store, row.id)
        store.mark_done(row.id, store.abs_path(video), store.abs_path(thumb))

    raw = sqlite3.connect(root / DB_FILENAME)
    video_path, thumb_path, inputs = raw.execute(
        "SELECT video_path, thumbnail_path, input_paths FROM generations"
    ).fetchone()
    raw.close()
    assert (video_path, thumb_path) == ("videos/000001.mp4", "thumbs/000001.jpg")
    assert inputs == f'["{rel}"]' and rel.startswith("inputs/") and rel.endswith(".png")


def test_env_vars_choose_data_dir_and_db_url(tmp_path, monkeypatch):
    monkeypatch.setenv("HUMO_DATA_DIR", str(tmp_path / "from_env"))
    monkeypatch.setenv("HUMO_DB_URL", f"sqlite:///{(tmp_path / 'other.db').as_posix()}")
    with Store.open() as store:
        assert store.data_dir == (tmp_path / "from_env").resolve()
        _new(store)
    assert (tmp_path / "other.db").is_file()
    assert not (tmp_path / "from_env" / DB_FILENAME).exists()
    with Store.open(tmp_path / "arg", url="sqlite://") as store:  # arguments win; in-memory works
        assert store.data_dir == (tmp_path / "arg").resolve()
        assert store.list_generations()[1] == 0


# --- rows and status transitions --------------------------------------------------------------------


def test_lifecycle_fields_and_timestamps(store):
    settings = {"guidance": {"scale_a": 5.5, "scale_t": 5.0, "switch_t": 980}, "steps": 50, "size": (480, 832)}
    row = _new(
        store,
        negative_prompt="blurry",
        model_hash="ab" * 32,
        settings=settings,
        input_hashes={"images": ["1" * 64], "audio": "2" * 64},
    )
    assert row.status == "queued" and row.id == 1
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == timedelta(0)
    assert row.settings["size"] == [480, 832]  # as it reads back from JSON

    store.mark_running(row.id)
    running = store.update_progress(row.id, 2, 4)
    assert (running.status, running.step, running.total_steps) == ("running", 2, 4)

    done = store.mark_done(row.id, *_media(store, row.id), timings={"total_s": 12.5, "per_step_s": [3.0] * 4}, seed=42)
    got = store.get(row.id)
    assert got.status == done.status == "done"
    assert (got.seed, got.step, got.error) == (42, 4, None)
    assert got.timings == {"total_s": 12.5, "per_step_s": [3.0] * 4}
    assert got.settings == {
        "guidance": {"scale_a": 5.5, "scale_t": 5.0, "switch_t": 980},
        "steps": 50,
        "size": [480, 832],
    }
    assert got.input_hashes == {"images": ["1" * 64], "audio": "2" * 64}
    assert (got.negative_prompt, got.model_hash) == ("blurry", "ab" * 32)
    assert got.created_at <= got.started_at <= got.finished_at <= datetime.now(UTC)
    assert got.to_dict()["finished_at"].endswith("+00:00")


def test_invalid_transitions_and_unknown_ids(store):
    row = _new(store)
    with pytest.raises(ValueError, match="queued"):
        store.mark_done(row.id, *_media(store, row.id))  # must run first
    with pytest.raises(ValueError, match="only recorded while running"):
        store.update_progress(row.id, 1, 4)
    _finish(store, row.id)
    for call in (store.mark_running, store.mark_stopped, lambda i: store.mark_failed(i, "x")):
        with pytest.raises(ValueError, match="is done"):
            call(row.id)
    assert store.get(row.id).status == "done"

    with pytest.raises(KeyError, match="no generation with id 999"):
        store.get(999)
    with pytest.raises(KeyError):
        store.mark_running(999)
    with pytest.raises(KeyError):
        store.delete(999)

    other = _new(store)
    store.mark_running(other.id)
    for step, total in ((5, 4), (-1, 4), (0, 0)):
        with pytest.raises(InputError):
            store.update_progress(other.id, step, total)
    with pytest.raises(InputError, match="mode"):
        _new(store, mode="XYZ")
    with pytest.raises(InputError, match="seed"):
        _new(store, seed=-1)
    with pytest.raises(InputError, match="JSON"):
        _new(store, settings={"x": object()})
    with pytest.raises(InputError, match="does not exist"):
        store.mark_done(other.id, "videos/missing.mp4")
    assert store.get(other.id).status == "running"  # a rejected call changes nothing


def test_failed_and_stopped(store):
    a, b, c = _new(store), _new(store), _new(store)
    store.mark_stopped(a.id)  # stopped while still queued
    store.mark_running(b.id)
    store.mark_failed(b.id, "CUDA out of memory")
    store.mark_running(c.id)
    store.mark_stopped(c.id, "stopped at step 3")
    assert (store.get(a.id).status, store.get(a.id).error) == ("stopped", None)
    assert (store.get(b.id).status, store.get(b.id).error) == ("failed", "CUDA out of memory")
    assert store.get(c.id).error == "stopped at step 3"
    assert all(store.get(i).finished_at is not None for i in (a.id, b.id, c.id))


# --- listing and search ------------------------------------------------------------------------------


def test_paging_newest_first(store, tmp_path):
    ids = [_new(store, prompt=f"prompt {i}").id for i in range(30)]
    pages = [store.list_generations(page=p, page_size=12) for p in (1, 2, 3, 4)]
    assert [len(rows) for rows, _ in pages] == [12, 12, 6, 0]
    assert {total for _, total in pages} == {30}
    assert [r.id for rows, _ in pages for r in rows] == ids[::-1]

    # Order follows created_at, not id: make the oldest row the newest.
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None)  # stored naive UTC
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE generations SET created_at = :t WHERE id = :i"), {"t": later, "i": ids[0]})
    rows, _ = store.list_generations(page_size=3)
    assert [r.id for r in rows] == [ids[0], ids[29], ids[28]]

    with pytest.raises(InputError):
        store.list_generations(page=0)
    with pytest.raises(InputError):
        store.list_generations(page_size=0)


def test_search_is_case_insensitive_and_escapes_wildcards(store):
    prompts = ["Growth 100% sure", "100 percent", "1000 cats", "a_b test", "axb test", "CAFÉ au lait", "back\\slash"]
    ids = {p: _new(store, prompt=p).id for p in prompts}

    def found(query, **kw):
        rows, total = store.list_generations(query=query, **kw)
        assert total == len(rows)
        return sorted(r.prompt for r in rows)

    assert found("100%") == ["Growth 100% sure"]
    assert found("a_b") == ["a_b test"]
    assert found("growth") == ["Growth 100% sure"]
    assert found("café") == ["CAFÉ au lait"]
    assert found("\\") == ["back\\slash"]
    assert found("100") == ["100 percent", "1000 cats", "Growth 100% sure"]
    assert found("   ") == sorted(prompts)  # blank query: no filter
    assert found("nothing like this") == []

    store.mark_running(ids["1000 cats"])
    assert found("100", status="running") == ["1000 cats"]
    assert found(None, status=["queued", "running"]) == sorted(prompts)
    with pytest.raises(InputError, match="status"):
        store.list_generations(status="finished")
    assert escape_like("100%_\\") == "100\\%\\_\\\\"


# --- inputs and deletion -------------------------------------------------------------------------------


def test_save_input_content_addressed_and_deduplicated(store, tmp_path):
    content = b"\x89PNG fake image bytes" * 1000
    rel, sha = store.save_input(_upload(tmp_path, "face.PNG", content), "image")
    assert sha == hashlib.sha256(content).hexdigest()
    assert rel == f"inputs/{sha[:2]}/{sha}.png"
    assert store.abs_path(rel).read_bytes() == content

    again, sha2 = store.save_input(_upload(tmp_path, "same-bytes.png", content), "image")
    assert (again, sha2) == (rel, sha)
    voice, _ = store.save_input(_upload(tmp_path, "voice.wav", b"RIFF audio"), "audio")
    files = sorted(p.relative_to(store.data_dir).as_posix() for p in store.paths.inputs.rglob("*") if p.is_file())
    assert files == sorted([rel, voice])  # one copy each, no temporary files left

    with pytest.raises(InputError, match="empty"):
        store.save_input(_upload(tmp_path, "empty.png", b""), "image")
    with pytest.raises(InputError, match="does not exist"):
        store.save_input(tmp_path / "nope.png", "image")
    with pytest.raises(InputError, match="kind"):
        store.save_input(_upload(tmp_path, "x.txt", b"x"), "text")
    assert len([p for p in store.paths.inputs.rglob("*") if p.is_file()]) == 2


def test_delete_removes_files_but_keeps_shared_inputs(store, tmp_path):
    shared, _ = store.save_input(_upload(tmp_path, "shared.jpg", b"shared face"), "image")
    own, _ = store.save_input(_upload(tmp_path, "own.wav", b"own voice"), "audio")
    a = _new(store, input_paths=[shared, own])
    b = _new(store, input_paths=[shared])
    _finish(store, a.id)
    _finish(store, b.id)
    a_files = [store.abs_path(p) for p in store.get(a.id).files()]
    assert len(a_files) == 4 and all(p.is_file() for p in a_files)

    removed = store.delete(a.id)
    assert sorted(removed) == sorted(["videos/000001.mp4", "thumbs/000001.jpg", own])
    assert not any(store.abs_path(p).exists() for p in removed)
    assert store.abs_path(shared).is_file()  # b still uses it
    with pytest.raises(KeyError):
        store.get(a.id)
    assert [r.id for r in store.list_generations()[0]] == [b.id]

    assert sorted(store.delete(b.id)) == sorted(["videos/000002.mp4", "thumbs/000002.jpg", shared])
    assert not store.abs_path(shared).exists()
    assert store.list_generations() == ([], 0)


def test_delete_keeps_input_shared_under_unusual_name(store):
    # A caller may record any file in the data folder; the reference check must still find it.
    odd = store.paths.inputs / 'café "quoted" 50%.png'
    odd.write_bytes(b"x")
    a = _new(store, input_paths=[odd])
    b = _new(store, input_paths=[store.rel_path(odd)])
    store.mark_stopped(a.id)
    store.mark_stopped(b.id)
    assert store.delete(a.id) == []
    assert odd.is_file()
    assert store.delete(b.id) == ['inputs/café "quoted" 50%.png']
    assert not odd.exists()


def test_delete_refuses_active_rows_and_keeps_pinned_uploads(store, tmp_path):
    active = _new(store)
    with pytest.raises(ValueError, match="stop it"):
        store.delete(active.id)
    assert store.get(active.id).status == "queued"

    src = _upload(tmp_path, "face.png", b"face")
    rel, _ = store.save_input(src, "image")
    first = _new(store, input_paths=[rel])
    store.mark_stopped(first.id)
    store.save_input(src, "image")  # a new upload of the same file, its row not created yet
    assert store.delete(first.id) == []
    assert store.abs_path(rel).is_file()  # pinned: the coming row needs it
    second = _new(store, input_paths=[rel])
    store.mark_stopped(second.id)
    assert store.delete(second.id) == [rel]
    assert not store.abs_path(rel).exists()


# --- settings ----------------------------------------------------------------------------------------


def test_settings_roundtrip_across_reopen(tmp_path, db_url):
    last_run = {"mode": "TIA", "steps": 50, "guidance": {"scale_a": 5.5}, "size": [480, 832], "seed": None}
    with Store.open(tmp_path / "data", url=db_url) as store:
        assert store.get_setting("generate.last", {"fallback": 1}) == {"fallback": 1}
        store.set_setting("generate.last", last_run)
        store.set_setting("theme", "dark")
        store.set_setting("theme", "light")
        with pytest.raises(InputError):
            store.set_setting("bad", {1, 2})
        with pytest.raises(InputError):
            store.set_setting("", 1)
    with Store.open(tmp_path / "data", url=db_url) as store:
        assert store.get_setting("generate.last") == last_run
        assert store.get_setting("theme") == "light"
        assert store.get_setting("bad", "unset") == "unset"


# --- schema and SQLite ---------------------------------------------------------------------------------


def test_migration_from_0001_keeps_rows(tmp_path):
    paths = DataPaths.at(tmp_path / "data").ensure()
    command.upgrade(alembic_config(paths.sqlite_url), "0001")
    raw = sqlite3.connect(paths.db)
    assert {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")} == {
        "alembic_version",
        "generations",
    }
    columns = (
        "created_at, status, prompt, negative_prompt, mode, model_id, settings, timings, input_hashes, input_paths"
    )
    for prompt, status in (("old one", "done"), ("old two", "running")):
        raw.execute(
            f"INSERT INTO generations ({columns}) VALUES ('2026-01-02 03:04:05.000000', ?, ?, '', 'TA', 'humo-1.7b',"
            " '{\"steps\": 50}', '{}', '{}', '[]')",
            (status, prompt),
        )
    raw.commit()
    raw.close()

    with Store.open(paths.root) as store:
        rows, total = store.list_generations()
        assert total == 2
        assert {(r.prompt, r.status, r.mode) for r in rows} == {("old one", "done", "TA"), ("old two", "running", "TA")}
        assert rows[0].settings == {"steps": 50}
        assert rows[0].created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert store.recover_crashed() == 1
        store.set_setting("k", [1])
        insp = inspect(store.engine)
        assert "app_settings" in insp.get_table_names()
        assert "ix_generations_created_at" in {ix["name"] for ix in insp.get_indexes("generations")}
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
        assert [r.prompt for r in store.list_generations(query="OLD ONE")[0]] == ["old one"]  # 0004 folded it


def test_models_match_migration_head_and_downgrade_works(tmp_path, db_url):
    """From an empty database: the migrations make exactly the models' schema (alembic check), down and up."""
    url = db_url or f"sqlite:///{(tmp_path / 'h.db').as_posix()}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    command.upgrade(cfg, "head")
    assert {"generations", "app_settings", "instances", "file_claims", "admission_tickets"} <= set(
        inspect(engine).get_table_names()
    )
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    engine.dispose()


def test_sqlite_pragmas(tmp_path):
    store = Store.open(tmp_path / "data")
    raw = sqlite3.connect(store.paths.db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    raw.close()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()


def test_concurrent_writes_from_threads(store):
    threads_n, rows_n = 8, 25
    errors: list[BaseException] = []
    created: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads_n)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(rows_n):
                row = store.create_generation(prompt=f"thread {t} row {i}", mode="TA", model_id="m", total_steps=2)
                store.mark_running(row.id)
                store.update_progress(row.id, 1, 2)
                if i % 2:
                    store.mark_failed(row.id, f"err {t}/{i}")
                else:
                    store.mark_stopped(row.id)
                store.list_generations(page_size=5)  # readers interleaved with writers
                with lock:
                    created.append(row.id)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    assert errors == []
    total_rows = threads_n * rows_n
    assert len(set(created)) == total_rows
    rows, total = store.list_generations(page_size=200)
    assert total == total_rows and {r.id for r in rows} == set(created)
    assert len(store.list_generations(status="failed", page_size=200)[0]) == threads_n * (rows_n // 2)
    assert all(r.step == 1 and r.finished_at is not None for r in rows)
