"""Several studio front-ends on one gallery: one database (SQLite on one machine, or a real PostgreSQL server started
by the tests) and one media folder. Rows and files keep their owner across front-ends; a front-end that starts or
sweeps fails and removes only what a dead front-end left (studio/leases.py); the PostgreSQL path's own rules."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from engine.errors import InputError
from studio import tab_gallery
from studio.context import StudioContext, StudioOptions
from studio.leases import INSTANCE_NS, PostgresLeases
from studio.store import INTERRUPTED_ERROR, AdmissionTicket, Instance, NotFoundError, Store, alembic_config
from tests.test_store import _finish, _media, _new, _upload

ROOT = Path(__file__).resolve().parents[1]
ADA, BOB = "user:ada", "anon:" + "b" * 32


@pytest.fixture
def two(tmp_path, db_url):
    """Two front-ends (two stores, as two studio processes would open them) on one database and one data folder."""
    first = Store.open(tmp_path / "data", url=db_url)
    second = Store.open(tmp_path / "data", url=db_url)
    yield first, second
    second.close()
    first.close()


def _instances(store: Store) -> set[int]:
    with store.engine.connect() as conn:
        return set(conn.execute(select(Instance.id)).scalars())


def test_rows_and_files_keep_their_owner_across_front_ends(two, tmp_path):
    first, second = two
    assert first.instance_id != second.instance_id
    face, _ = first.save_input(_upload(tmp_path, "face.png", b"ada's face"), "image")
    row = _finish(first, _new(first, "ada's clip", owner=ADA, input_paths=[face]).id)
    files = [first.abs_path(p) for p in row.files()]
    assert len(files) == 3 and all(p.is_file() for p in files)

    # Made through the first, listed by its owner through the second, hidden from anyone else there.
    listed, total = second.list_generations(owner=ADA, query="ADA'S")
    assert total == 1 and [r.id for r in listed] == [row.id] and listed[0].instance_id == first.instance_id
    assert second.abs_path(listed[0].video_path) == files[0]  # the same media folder
    assert second.list_generations(owner=BOB) == ([], 0)
    with pytest.raises(NotFoundError):
        second.get(row.id, owner=BOB)
    with pytest.raises(NotFoundError):
        second.delete(row.id, owner=BOB)
    assert all(p.is_file() for p in files)

    # Deleting through the second removes the files the first would have served; the first no longer has the row.
    assert sorted(second.delete(row.id, owner=ADA)) == sorted(row.files())
    assert not any(p.exists() for p in files)
    with pytest.raises(NotFoundError):
        first.get(row.id, owner=ADA)
    assert first.list_generations(owner=ADA) == ([], 0)
    assert _new(second, owner=ADA).id == row.id + 1  # one sequence of ids for every front-end, never reused


def test_a_claimed_input_survives_a_delete_in_another_front_end(two, tmp_path):
    first, second = two
    shared_face = _upload(tmp_path, "face.png", b"the same face")
    rel, _ = second.save_input(shared_face, "image")
    old = _finish(second, _new(second, owner=ADA, input_paths=[rel]).id)
    # The first front-end saves the same face for a job whose row does not exist yet; meanwhile the old row goes.
    assert first.save_input(shared_face, "image")[0] == rel
    assert rel not in second.delete(old.id, owner=ADA)
    assert first.abs_path(rel).is_file()
    new = first.create_generation(prompt="again", mode="TI", model_id="tiny", input_paths=[rel], owner=ADA)
    first.mark_stopped(new.id)
    assert first.delete(new.id, owner=ADA) == [rel]  # the claim ended with its row's creation: the last user goes


def test_a_starting_front_end_spares_a_live_ones_jobs_and_files(tmp_path, db_url):
    first = Store.open(tmp_path / "data", url=db_url)
    queued, running = _new(first), _new(first)
    first.mark_running(running.id)
    video, thumb = _media(first, running.id)  # written just before mark_done, with their temporaries
    part = first.paths.videos / f".{running.id:06d}.1a2b3c4d.part.mp4"
    part.write_bytes(b"half a video")
    claimed, _ = first.save_input(_upload(tmp_path, "face.png", b"a face in flight"), "image")
    copying = first.paths.inputs / f".upload-{first.instance_id}-k2j3.tmp"  # save_input's copy in progress
    copying.write_bytes(b"half an upload")
    # Left by no one alive: a pre-instance upload temporary, a dead row's part file, a video of no row.
    debris = [first.paths.inputs / ".upload-x1y2.tmp", first.paths.videos / ".000998.ffff0000.part.mp4"]
    stray = first.paths.videos / "000999.mp4"
    for path in [*debris, stray]:
        path.write_bytes(b"left behind")

    second = Store.open(tmp_path / "data", url=db_url)  # the second front-end starts as StudioContext.create does
    assert second.recover_crashed() == 0
    assert second.clean_leftovers() == {"partial": 2, "unreferenced": 1}
    assert not any(p.exists() for p in [*debris, stray])
    for path in (first.abs_path(video), first.abs_path(thumb), part, first.abs_path(claimed), copying):
        assert path.is_file(), path
    assert (first.get(queued.id).status, first.get(running.id).status) == ("queued", "running")
    assert second.heartbeat() == {"failed": 0, "dead_instances": 0, "partial": 0, "unreferenced": 0}

    # The first front-end finishes its work as if nothing happened.
    assert first.mark_done(running.id, video, thumb).status == "done"
    assert first.create_generation(prompt="p", mode="TI", model_id="tiny", input_paths=[claimed]).input_paths == [
        claimed
    ]
    second.close()
    first.close()


CRASH = """
import json, os, signal, sys
from studio.store import Store
store = Store.open(sys.argv[1], url=sys.argv[2] or None)
queued = store.create_generation(prompt="queued", mode="T", model_id="tiny")
running = store.create_generation(prompt="running", mode="T", model_id="tiny")
store.mark_running(running.id)
part = store.paths.videos / f".{running.id:06d}.00000000.part.mp4"
part.write_bytes(b"half")
src = store.paths.root.parent / "crash-face.png"
src.write_bytes(b"a face the crashed front-end saved")
claimed, _ = store.save_input(src, "image")
upload = store.paths.inputs / f".upload-{store.instance_id}-zzzz.tmp"
upload.write_bytes(b"half an upload")
print(json.dumps({"instance": store.instance_id, "rows": [queued.id, running.id],
                  "files": [str(part), str(store.abs_path(claimed)), str(upload)]}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no cleanup: as a crash or an OOM kill
"""


def test_a_crashed_front_end_is_swept_up_by_a_live_one(tmp_path, db_url, monkeypatch):
    survivor = Store.open(tmp_path / "data", url=db_url)
    mine = _new(survivor)
    survivor.mark_running(mine.id)
    done = _finish(survivor, _new(survivor).id)
    proc = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path / "data"), db_url or ""], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    crashed = json.loads(proc.stdout)
    files = [Path(p) for p in crashed["files"]]
    assert all(p.is_file() for p in files) and crashed["instance"] in _instances(survivor)

    if db_url:  # PostgreSQL: a lock-less instance is given its heartbeat's grace before it counts as dead
        assert survivor.heartbeat()["failed"] == 0
        assert survivor.get(crashed["rows"][1]).status == "running"
        monkeypatch.setattr(PostgresLeases, "grace_s", 0.0)
    report = survivor.heartbeat()
    assert report == {"failed": 2, "dead_instances": 1, "partial": 2, "unreferenced": 1}
    for gid in crashed["rows"]:
        row = survivor.get(gid)
        assert (row.status, row.error) == ("failed", INTERRUPTED_ERROR) and row.finished_at is not None
    assert not any(p.exists() for p in files)
    assert _instances(survivor) == {survivor.instance_id}
    lock_files = sorted(p.name for p in (tmp_path / "data").glob("humo.db.locks/instance-*.lock"))
    assert lock_files == ([] if db_url else [f"instance-{survivor.instance_id}.lock"])  # the dead one's is gone
    # The survivor's own rows and files are untouched.
    assert survivor.get(mine.id).status == "running" and survivor.get(done.id).status == "done"
    assert all(survivor.abs_path(p).is_file() for p in done.files())
    assert survivor.heartbeat()["failed"] == 0
    survivor.close()
    # A front-end that closes gives its instance up; the next start fails what it left running.
    with Store.open(tmp_path / "data", url=db_url) as again:
        assert again.recover_crashed() == 1 and again.get(mine.id).error == INTERRUPTED_ERROR


def test_two_studios_share_one_gallery_while_jobs_run(tmp_path, db_url, good_media):
    """Two StudioContexts (two front-ends) on one database and data folder: a real tiny job through the first,
    the second starting while it runs, then the gallery of each owner through the second."""
    from engine.generate import GenerationRequest
    from studio.jobs import run_job

    options = dict(data_dir=tmp_path / "data", db_url=db_url, model="tiny")
    first = StudioContext.create(StudioOptions(**options))
    started: list[StudioContext] = []

    def start_second(progress) -> None:  # at the first step of the first front-end's job
        if not started:
            assert first.store.get(progress.generation_id, owner=ADA).status == "running"
            started.append(StudioContext.create(StudioOptions(**options)))

    request = GenerationRequest(prompt="Ada talks", images=[str(good_media["image"])], audio=str(good_media["audio"]),
                                height=32, width=32, num_inference_steps=2, seed=3)  # fmt: skip
    try:
        result = run_job(first, request, owner=ADA, on_progress=start_second)
        assert started, result.error
        second = started[0]
        assert second.startup_report == (
            "0 interrupted job(s) marked failed, 0 half-written file(s) and 0 unreferenced file(s) removed"
        )
        assert result.status == "done", result.error
        _, ids, label, _ = tab_gallery.gallery_page(second, owner=ADA)
        assert ids == [result.generation_id] and "1 generations" in label
        assert tab_gallery.gallery_page(second, owner=BOB)[1] == []
        video, _, summary = tab_gallery.detail(second, result.generation_id, owner=ADA)
        assert video is not None and "Ada talks" in summary
        assert tab_gallery.detail(second, result.generation_id, owner=BOB)[0] is None
        row = second.store.get(result.generation_id, owner=ADA)
        paths = [second.store.abs_path(p) for p in row.files()]
        assert tab_gallery.delete_generation(second, result.generation_id, owner=ADA) == f"Deleted #{row.id}."
        assert not any(p.exists() for p in paths)
        assert tab_gallery.gallery_page(first, owner=ADA)[1] == []
    finally:
        for ctx in [*started, first]:
            ctx.store.close()


def test_copies_served_of_an_entry_deleted_elsewhere_are_evicted(two, tmp_path, monkeypatch):
    """Each front-end serves copies from a cache of its own: a delete through the other one removes the files but
    can evict only its own copies; this one's go at its next `evict_orphans` (every ORPHAN_EVERY_S)."""
    from studio import serving

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache-of-the-first"))
    first, second = two
    gone = _finish(first, _new(first, owner=ADA).id)
    kept = _finish(first, _new(first, owner=ADA).id)
    copies = [serving.served_copy(first.abs_path(row.video_path)) for row in (gone, kept)]
    assert all(Path(c).is_file() and c in serving.SERVED for c in copies)
    second.delete(gone.id, owner=ADA)  # the second front-end's own cache is elsewhere: the first's copy stays
    assert Path(copies[0]).is_file()
    assert serving.evict_orphans() == 1
    assert not Path(copies[0]).exists() and copies[0] not in serving.SERVED
    assert not Path(copies[0]).parent.exists()  # its hash folder too: the old URL is gone
    assert Path(copies[1]).is_file() and serving.evict_orphans() == 0


# --- PostgreSQL's own rules ------------------------------------------------------------------------------------


def test_front_ends_starting_together_migrate_once(postgres, tmp_path):
    url = postgres.create_database()
    stores, errors = [], []
    barrier = threading.Barrier(3)

    def start(i: int) -> None:
        try:
            barrier.wait()
            stores.append(Store.open(tmp_path / "data", url=url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len({s.instance_id for s in stores}) == 3
    with stores[0].engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0005"]
    for store in stores:
        store.close()


def test_a_front_end_whose_lease_connection_drops_is_not_taken_for_dead(postgres, tmp_path, monkeypatch):
    """The server ends the first front-end's lease session (a network blip, an idle timeout): the second one's sweep
    spares it for the grace, and the first one's next heartbeat takes its lock again."""
    url = postgres.create_database()
    first, second = Store.open(tmp_path / "data", url=url), Store.open(tmp_path / "data", url=url)
    job = _new(first)
    first.mark_running(job.id)
    query = ("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s"
             " AND objsubid = 2")  # fmt: skip
    with postgres.connect(make_url(url).database) as admin:
        (pid,) = admin.execute(query, (INSTANCE_NS, first.instance_id)).fetchone()
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        for _ in range(100):  # the backend exits and its lock goes
            if admin.execute(query, (INSTANCE_NS, first.instance_id)).fetchone() is None:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the terminated session kept its lock")
        assert second.heartbeat()["failed"] == 0  # lock-less, but its heartbeat is fresh: alive
        first.heartbeat()
        (again,) = admin.execute(query, (INSTANCE_NS, first.instance_id)).fetchone()
        assert again != pid
    monkeypatch.setattr(PostgresLeases, "grace_s", 0.0)
    assert second.heartbeat()["failed"] == 0 and first.get(job.id).status == "running"  # the lock alone suffices
    second.close()
    first.close()


def test_postgres_urls_and_refusals(postgres, tmp_path):
    plain = postgres.create_database().replace("postgresql+psycopg://", "postgres://")
    with Store.open(tmp_path / "data", url=plain) as store:  # postgres:// and postgresql:// mean psycopg 3
        assert store.engine.dialect.driver == "psycopg"
        assert _new(store).id == 1
    ascii_db = postgres.create_database(encoding="SQL_ASCII")
    with pytest.raises(InputError, match="ENCODING 'UTF8'"):
        Store.open(tmp_path / "data", url=ascii_db)
    with postgres.connect(make_url(ascii_db).database) as conn:  # refused before any table was made
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
    with pytest.raises(InputError, match="mysql is not supported"):
        Store.open(tmp_path / "data", url="mysql://u@localhost/humo")


def test_postgres_upgrade_from_0002_keeps_ids_and_folds_old_prompts(postgres, tmp_path):
    """0003 alters PostgreSQL's tables in place: a rebuilt table's new sequence would hand out id 1 again."""
    url = postgres.create_database()
    command.upgrade(alembic_config(url), "0002")
    engine = create_engine(url)
    with engine.begin() as conn:
        for prompt in ("Straße im REGEN", "CAFÉ"):
            conn.execute(
                text("INSERT INTO generations (created_at, status, prompt, negative_prompt, mode, model_id, settings,"
                     " timings, input_hashes, input_paths) VALUES (now(), 'done', :p, '', 'TA', 'tiny', '{}', '{}',"
                     " '{}', '[]')"),
                {"p": prompt},
            )  # fmt: skip
    engine.dispose()
    with Store.open(tmp_path / "data", url=url) as store:
        assert _new(store).id == 3
        assert [r.prompt for r in store.list_generations(query="strasse")[0]] == ["Straße im REGEN"]
        assert [r.prompt for r in store.list_generations(query="café")[0]] == ["CAFÉ"]
        assert {r.owner for r in store.list_generations(page_size=10)[0]} == {"local"}


HOLD_TICKETS = """
import os, signal, sys
from studio.store import Store
store = Store.open(sys.argv[1], url=sys.argv[2] or None)
assert store.take_ticket("anon:dan", "203.0.113.5", None, 2, 20) is None
assert store.take_ticket("anon:eve", "203.0.113.5", None, 2, 20) is None
print(store.instance_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # killed holding two tickets: no release, no close
"""


def test_admission_caps_hold_across_front_ends(tmp_path, db_url, monkeypatch):
    """Issue 31: admission is counted in the database. A visitor or an address at its cap on one front-end is
    refused on the other; a release frees the slot for the other; a killed front-end's tickets stop counting once
    it is dead."""
    from studio import admission

    options = StudioOptions(data_dir=tmp_path / "data", db_url=db_url, model="tiny", public=True)
    first, second = StudioContext.create(options), StudioContext.create(options)
    here, shared = "198.51.100.1", "192.0.2.7"
    try:
        assert admission.admit(first, ADA, here, "s1") is None
        assert "You already have a job queued or running" in admission.admit(second, ADA, "198.51.100.2", "s2")
        assert admission.tickets(first) == {ADA: here} and admission.tickets(second) == {}

        # Two visitors behind one address, one on each front-end: the third hears about its network on either.
        assert admission.admit(first, BOB, shared) is None
        assert admission.admit(second, "anon:carol", shared) is None
        for ctx in (first, second):
            assert "Your network already has jobs" in admission.admit(ctx, "anon:dave", shared)

        # A release on one front-end frees the slot for the other.
        admission.release(first, ADA)
        assert admission.admit(second, ADA, here) is None and admission.tickets(first) == {BOB: shared}
        admission.release(second, "anon:carol")
        assert admission.admit(first, "anon:dave", shared) is None

        # A front-end killed holding tickets: they count while it may be alive, not once it is dead.
        proc = subprocess.run([sys.executable, "-c", HOLD_TICKETS, str(tmp_path / "data"), db_url or ""], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == -9, proc.stderr[-2000:]
        killed = int(proc.stdout)
        if db_url:  # PostgreSQL: its heartbeat's grace first (studio/leases.py)
            assert "Your network already has jobs" in admission.admit(first, "anon:fay", "203.0.113.5")
            monkeypatch.setattr(PostgresLeases, "grace_s", 0.0)
        assert admission.admit(first, "anon:fay", "203.0.113.5") is None
        assert "anon:dan" not in admission.tickets(first) | admission.tickets(second)
        assert admission.admit(second, "anon:dan", "203.0.113.5") is None  # dan's old ticket is gone too
        assert second.store.heartbeat()["dead_instances"] == 1 and killed not in _instances(second.store)
        with second.store.engine.connect() as conn:
            holders = set(conn.execute(select(AdmissionTicket.instance_id)).scalars())
        assert holders == {first.store.instance_id, second.store.instance_id}
    finally:
        second.store.close()
        first.store.close()


def test_admission_is_one_count_when_front_ends_admit_at_once(two):
    """Eight visitors behind one address arrive at once, alternating between two front-ends: the count and the insert
    are one serialized transaction, so exactly the address's two are admitted (and one ticket per visitor)."""
    stores, barrier = two, threading.Barrier(8)
    answers: list = [None] * 8

    def arrive(i: int) -> None:
        barrier.wait()
        answers[i] = stores[i % 2].take_ticket(f"anon:v{i}", "192.0.2.9", None, 2, 20)

    threads = [threading.Thread(target=arrive, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert answers.count(None) == 2, answers
    assert sorted(a for a in answers if a) == [("address", 2)] * 6
    assert len(stores[0].tickets()) + len(stores[1].tickets()) == 2
    barrier = threading.Barrier(8)
    answers = [None] * 8

    def same_owner(i: int) -> None:
        barrier.wait()
        answers[i] = stores[i % 2].take_ticket("anon:one", f"198.51.100.{i}", None, 2, 20)

    threads = [threading.Thread(target=same_owner, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert answers.count(None) == 1 and answers.count(("owner", 1)) == 7, answers
