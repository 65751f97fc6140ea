"""Gradio's file routes serve media copies only: the database, its WAL, the secret, uploads, the data folder's
videos and the repository's own files are never served, however the path is spelled. And nothing a visitor sends
makes the studio open its database file (which would drop SQLite's POSIX locks and let the next process that opens
and closes the database delete the live WAL: decisions of 2026-12-01).

The studio runs the way `make run` does: the data folder is `./data` relative to the working directory.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from tests.robustness.helpers import all_rows, assert_clean, audit
from tests.robustness.rawapi import RawClient
from tests.studio_server import running_studio

ROOT = Path(__file__).resolve().parents[2]


def get(url: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    """The raw request line as given (no client-side normalisation of `..` or `%2e`)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def spellings(target: Path, cache: Path, cwd: Path) -> dict[str, str]:
    """Ways to name one file in a file-route URL."""
    t = str(target)
    up = os.path.relpath(target, cache)  # ../../…/data/humo.db from inside the cache
    out = {
        "absolute": f"/gradio_api/file={t}",
        "legacy /file=": f"/file={t}",
        "double slash": f"/gradio_api/file=/{t}",
        "slashes encoded": "/gradio_api/file=" + urllib.parse.quote(t, safe=""),
        "all encoded": "/gradio_api/file=" + "".join(f"%{b:02x}" for b in t.encode()),
        "../ from the cache": f"/gradio_api/file={cache}/{up}",
        "%2e%2e from the cache": f"/gradio_api/file={cache}/{up.replace('..', '%2e%2e')}",
        "%2e%2e%2f from the cache": f"/gradio_api/file={cache}/{up.replace('../', '%2e%2e%2f')}",
        "double-encoded dots": f"/gradio_api/file={cache}/{up.replace('..', '%252e%252e')}",
        "legacy ../ from the cache": f"/file={cache}/{up}",
        "with a query": f"/gradio_api/file={t}?download=1",
    }
    if target.is_relative_to(cwd):
        rel = target.relative_to(cwd).as_posix()
        out["relative to the working dir"] = f"/gradio_api/file={rel}"
        out["./relative"] = f"/gradio_api/file=./{rel}"
        out["relative with //"] = f"/gradio_api/file={rel.replace('/', '//')}"
        out["relative with /./"] = f"/gradio_api/file={rel.replace('/', '/./')}"
    return out


@pytest.fixture
def app_dir(tmp_path, monkeypatch):
    """A working directory like a deployment's: the studio's data folder is ./data inside it."""
    folder = tmp_path / "app"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def external_count(db: Path) -> int:
    """Open the database from another process, count the rows, close it (what the sqlite3 shell does)."""
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "print(c.execute('select count(*) from generations').fetchone()[0]); c.close()"
    )
    out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def studio_count(ctx) -> int:
    with ctx.store.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM generations").scalar_one()


def job(url: str, media, image=None) -> object:
    with RawClient(url) as client:
        image = image if image is not None else client.upload(media["image"])
        return client.generate(["a woman talks", image, client.upload(media["audio"]), "", "tiny", "custom", 32, 32,
                                0, 1, 5, "official", None, None, None, None, None, False, True])  # fmt: skip


def test_file_routes_serve_no_data_folder_or_repository_file(app_dir, good_media, gradio_cache):
    with running_studio(Path("data"), public=True) as (url, ctx):
        data, db = ctx.store.data_dir, ctx.store.data_dir / "humo.db"
        answer = job(url, good_media)
        assert "done" in answer.status, answer.status
        row = all_rows(ctx.store)[0]
        served = answer.video["video"] if isinstance(answer.video, dict) and "video" in answer.video else answer.video
        served_url = urllib.parse.urlsplit(served["url"])
        status, body = get(url, served_url.path + (f"?{served_url.query}" if served_url.query else ""))
        assert status == 200 and len(body) > 1000  # the page's own copy is served: the probes below are meaningful

        link_dir = gradio_cache / "planted"
        link_dir.mkdir()
        (link_dir / "humo-link.db").symlink_to(db)
        (link_dir / "data-link").symlink_to(data, target_is_directory=True)
        targets = {
            "humo.db": db,
            "humo.db-wal": data / "humo.db-wal",
            "humo.db-shm": data / "humo.db-shm",
            "visitor-signing.key": data / "visitor-signing.key",
            "an upload (inputs/)": data / row.input_paths[0],
            "a video (videos/)": data / row.video_path,
            "a thumbnail (thumbs/)": data / row.thumbnail_path,
            "app.py": ROOT / "app.py",
            "README.md": ROOT / "README.md",
            "studio/store.py": ROOT / "studio" / "store.py",
            "/etc/passwd": Path("/etc/passwd"),
        }
        assert all(p.is_file() for p in targets.values()), {k: p for k, p in targets.items() if not p.is_file()}
        probes = {}
        for name, target in targets.items():
            for how, path in spellings(target, gradio_cache, app_dir).items():
                probes[f"{name} · {how}"] = path
        probes["symlink in the cache → humo.db"] = f"/gradio_api/file={link_dir / 'humo-link.db'}"
        probes["symlinked folder in the cache → data/humo.db"] = (
            f"/gradio_api/file={link_dir / 'data-link' / 'humo.db'}"
        )
        probes["symlinked folder in the cache → data/visitor-signing.key"] = (
            f"/gradio_api/file={link_dir / 'data-link' / 'visitor-signing.key'}"
        )
        probes["the data folder itself"] = f"/gradio_api/file={data}"
        answers = {name: get(url, path) for name, path in probes.items()}
        answers["HEAD humo.db"] = get(url, f"/gradio_api/file={db}", "HEAD")
        served_bad = {k: (s, b[:80]) for k, (s, b) in answers.items() if s not in (403, 404)}
        codes = sorted({s for s, _ in answers.values()})
        print(f"\n{len(answers)} file-route probes, answers {codes}")
        assert served_bad == {}, served_bad

        # the database was never opened by the studio process: another process may open and close it safely
        rows_before = studio_count(ctx)
        assert external_count(db) == rows_before
        assert (data / "humo.db-wal").exists(), "the external close deleted the live WAL"
        answer = job(url, good_media)
        assert "done" in answer.status
        new_id = int(answer.gallery_id)
        assert external_count(db) == studio_count(ctx) == rows_before + 1, "another process cannot see the new row"
    with running_studio(Path("data"), public=True) as (url, ctx):
        assert new_id in {r.id for r in all_rows(ctx.store)}, "the row made after the external open/close was lost"
        assert_clean(audit(ctx.store))


def test_an_api_value_cannot_make_the_studio_open_its_database(app_dir, good_media, gradio_cache):
    """The image slot of `/generate` takes `{"path": ...}` without Gradio's FileData marker (gr.Image's data model
    does not require it), so Gradio never checks that the file was uploaded; the studio must refuse any path
    outside Gradio's upload folder before opening it. Here the path is the studio's own database."""
    with running_studio(Path("data"), public=True) as (url, ctx):
        db = ctx.store.data_dir / "humo.db"
        assert "done" in job(url, good_media).status
        answer = job(url, good_media, image={"path": str(db)})
        # refused at arrival (studio.api_values, before Gradio or the job read anything), by the user's file name
        assert answer.kind == "validation" and "must be a file" in answer.message, answer
        assert str(ctx.store.data_dir) not in answer.raw, answer.raw
        assert external_count(db) == studio_count(ctx)
        assert (ctx.store.data_dir / "humo.db-wal").exists(), (
            f"an external open/close deleted the live WAL after the studio answered {answer.status!r}"
        )
        assert "done" in job(url, good_media).status
        assert external_count(db) == studio_count(ctx), "rows committed by the studio are invisible to others"
