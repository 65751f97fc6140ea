"""Owners in the store: every query filters by owner; ids are never reused; start-up removes leftovers."""

from __future__ import annotations

import sqlite3
import time
from types import SimpleNamespace

import pytest
from alembic import command

from engine.errors import InputError
from studio import owners
from studio.owners import issue_visitor, parse_auth, request_owner, visitor_key
from studio.paths import DataPaths
from studio.store import LOCAL_OWNER, NotFoundError, Store, alembic_config
from tests.test_store import _finish, _new, _upload

A, B = "anon:" + "a" * 32, "anon:" + "b" * 32


@pytest.fixture
def store(tmp_path, db_url):  # SQLite and PostgreSQL (tests/conftest.py)
    s = Store.open(tmp_path / "data", url=db_url)
    yield s
    s.close()


def test_every_query_is_the_owners_own(store, tmp_path):
    mine = _finish(store, _new(store, "alpha by A", owner=A).id)
    theirs = _finish(store, _new(store, "alpha by B", owner=B).id)
    rows, total = store.list_generations(owner=A)
    assert total == 1 and [r.id for r in rows] == [mine.id]
    assert [r.id for r in store.list_generations(query="alpha", owner=B)[0]] == [theirs.id]
    assert store.list_generations()[1] == 0  # the local owner has nothing of the visitors'
    assert store.get(mine.id, owner=A).prompt == "alpha by A"
    with pytest.raises(NotFoundError) as err:
        store.get(mine.id, owner=B)
    assert str(err.value) == f"no generation with id {mine.id} (never created, or deleted)"  # reads as missing
    with pytest.raises(NotFoundError):
        store.delete(mine.id, owner=B)
    assert store.abs_path(mine.video_path).is_file()  # B's delete touched nothing
    assert store.delete(mine.id, owner=A)
    assert store.count_active(A) == 0
    _new(store, owner=A)
    assert store.count_active(A) == 1 and store.count_active(B) == 0


def test_last_settings_are_per_owner(store):
    store.set_setting("generate.last", {"prompt": "A's secret prompt"}, owner=A)
    assert store.get_setting("generate.last", owner=B) is None
    assert store.get_setting("generate.last") is None
    store.set_setting("generate.last", {"prompt": "B's"}, owner=B)
    assert store.get_setting("generate.last", owner=A) == {"prompt": "A's secret prompt"}
    with pytest.raises(InputError):
        store.set_setting("k", 1, owner="")


def test_deleted_ids_are_never_reused(store):
    first = _finish(store, _new(store).id)
    second = _finish(store, _new(store).id)
    store.delete(second.id)
    store.delete(first.id)
    assert _new(store).id == second.id + 1


def test_migration_gives_existing_rows_the_local_owner(tmp_path):
    paths = DataPaths.at(tmp_path / "data").ensure()
    command.upgrade(alembic_config(paths.sqlite_url), "0002")
    raw = sqlite3.connect(paths.db)
    raw.execute(
        "INSERT INTO generations (created_at, status, prompt, negative_prompt, mode, model_id, settings, timings,"
        " input_hashes, input_paths) VALUES ('2026-01-02 03:04:05', 'done', 'old', '', 'TA', 'tiny', '{}', '{}',"
        " '{}', '[]')"
    )
    raw.execute(
        "INSERT INTO app_settings (key, value, updated_at) VALUES ('generate.last', '{\"x\": 1}', '2026-01-02')"
    )
    raw.commit()
    raw.close()
    with Store.open(paths.root) as store:
        rows, total = store.list_generations(owner=LOCAL_OWNER)
        assert total == 1 and rows[0].owner == LOCAL_OWNER and rows[0].prompt == "old"
        assert store.get_setting("generate.last") == {"x": 1}
        assert store.get_setting("generate.last", owner=A) is None
        store.delete(rows[0].id)
        assert _new(store).id == 2  # AUTOINCREMENT after the rebuild
    raw = sqlite3.connect(paths.db)
    assert "AUTOINCREMENT" in raw.execute("SELECT sql FROM sqlite_master WHERE name='generations'").fetchone()[0]
    raw.close()


def test_clean_leftovers_removes_partials_and_unreferenced_files(store, tmp_path):
    done = _finish(
        store, _new(store, input_paths=[store.save_input(_upload(tmp_path, "f.png", b"face"), "image")[0]]).id
    )
    orphan_rel, _ = store.save_input(_upload(tmp_path, "g.png", b"orphan"), "image")
    store.discard_inputs([])  # nothing to release
    part = store.paths.videos / ".000009.abcd1234.part.mp4"
    part.write_bytes(b"half")
    stray_video = store.paths.videos / "000099.mp4"
    stray_video.write_bytes(b"no row")
    counts = store.clean_leftovers()
    # the orphan input is still claimed by this front-end (saved, never recorded): a live job may be about to use it
    assert counts == {"partial": 1, "unreferenced": 1}
    assert not part.exists() and not stray_video.exists()
    assert all(store.abs_path(p).is_file() for p in done.files())
    assert store.discard_inputs([orphan_rel]) == [orphan_rel]  # a refused job releases and removes its upload
    assert not store.abs_path(orphan_rel).exists()


def test_request_owner_rules(tmp_path):
    key = visitor_key(tmp_path)
    visitor = issue_visitor(key)
    visitor_id = visitor.split(".")[1]
    page = SimpleNamespace(username=None, session_hash="s1")
    assert request_owner(False, page, visitor, key) == LOCAL_OWNER
    assert request_owner(True, page, visitor, key) == f"anon:{visitor_id}"
    api = request_owner(True, page, None, key)  # an API client: an id issued from its session
    assert api.startswith("anon:api-") and api == request_owner(True, page, None, key)
    assert api != request_owner(True, SimpleNamespace(username=None, session_hash="s2"), None, key)
    assert request_owner(True, SimpleNamespace(username="ada", session_hash="s"), visitor, key) == "user:ada"
    assert request_owner(False, SimpleNamespace(username="ada"), None, key) == "user:ada"
    signed_in = SimpleNamespace(username=None, session={"oauth_info": {"userinfo": {"preferred_username": "bo"}}})
    assert request_owner(True, signed_in, visitor, key) == "user:bo"  # a Hugging Face login on a Space
    with pytest.raises(ValueError, match="signing key"):  # a door that forgot the key owns nothing, API or page
        request_owner(True, page, None)


def test_every_public_door_passes_the_signing_key():
    """Each studio callback that asks who the visitor is hands over the studio's signing key (a missing key once
    made Generate live refuse every page visitor and sign API ids with an empty key)."""
    import re

    from tests.test_imports import ROOT

    calls = [(path.name, call) for path in (ROOT / "studio").glob("*.py")
             for call in re.findall(r"request_owner\(([^)]*)\)", path.read_text())]  # fmt: skip
    public = [(name, call) for name, call in calls if not call.startswith("False") and "public: bool" not in call]
    assert public and all("visitor_key" in call for _, call in public), public


def test_only_visitor_ids_the_studio_issued_are_owners(tmp_path):
    """Issue 27: ids are signed with a key kept in the data folder, expire, and a chosen, forged, re-signed (with
    another key) or expired value is refused, as is a browser value that names an API client's owner."""
    key = visitor_key(tmp_path)
    assert key == visitor_key(tmp_path) and len(key) == 32  # created once, then read
    assert (tmp_path / owners.KEY_FILE).stat().st_mode & 0o077 == 0  # the server's alone
    page = SimpleNamespace(username=None, session_hash="s1")
    good = issue_visitor(key)
    version, vid, expiry, sig = good.split(".")
    forged = [
        "a" * 32,  # any 20–64 characters were an id before
        "session-" + "s1" * 10,  # a browser value naming an API client's owner
        f"v1.{vid}.{int(expiry) + 10**6}.{sig}",  # a longer expiry under the old signature
        f"v1.{'b' * 32}.{expiry}.{sig}",  # another id under this signature
        issue_visitor(b"k" * 32),  # signed with a published / other key
        issue_visitor(key, now=0),  # expired long ago
        good + "x",
    ]
    for value in forged:
        with pytest.raises(InputError, match="no valid visitor id"):
            request_owner(True, page, value, key)
    old = issue_visitor(key, vid, now=time.time() - 0.75 * owners.VISITOR_TTL_S)  # past half its life
    renewed = owners.renew_visitor(key, old)
    assert renewed != old and owners.verify_visitor(key, renewed)[0] == vid  # the same visitor, a later expiry
    assert owners.verify_visitor(key, renewed)[1] > owners.verify_visitor(key, old)[1]
    assert owners.renew_visitor(key, good) == good  # fresh: kept
    assert owners.renew_visitor(key, "a" * 32).split(".")[1] != "a" * 32  # anything else: a new id

    assert parse_auth("ada:pw1, bob:pw2") == [("ada", "pw1"), ("bob", "pw2")]
    assert parse_auth("") is None
    with pytest.raises(InputError):
        parse_auth("ada")
