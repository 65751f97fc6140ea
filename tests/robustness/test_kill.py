"""SIGKILL the studio mid-denoise and during the mp4 write, then restart it on the same data folder: the rows are
failed ("interrupted"), no half-written or orphaned file is left, earlier rows survive, and the next job finishes.

The studio runs as a subprocess (`python app.py`); the test watches its progress through a read-only sqlite3
connection that it opens and closes again and again, from another process, while the studio writes: the pattern
that deleted the live WAL while Gradio itself still opened the database file.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from studio.store import INTERRUPTED_ERROR
from tests.media_files import write_wav
from tests.robustness.helpers import all_rows, assert_clean, audit
from tests.studio_server import free_port, running_studio

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


class StudioProcess:
    """`python app.py --model tiny` on a free port, in its own process group (SIGKILL takes ffmpeg along)."""

    def __init__(self, data: Path, cache: Path, log: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "GRADIO_TEMP_DIR": str(cache), "PYTHONPATH": str(ROOT), **(env or {})}
        command = [sys.executable, "app.py", "--port", str(self.port), "--data-dir", str(data), "--model", "tiny"]
        self.log = log.open("w")
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the studio exited: {log.read_text()[-2000:]}"
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("the studio did not start")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the studio and its ffmpeg children, like a crashed container
        self.proc.wait(timeout=30)
        self.log.close()


def latest_row(db: Path) -> tuple | None:
    """(id, status, step, total_steps) of the newest row, read through a short read-only connection."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT id, status, step, total_steps FROM generations ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        con.close()


def part_files(data: Path) -> list[str]:
    return sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if ".part." in p.name)


def args(media, size: int, frames: int, steps: int) -> tuple:
    return ("a man talks", handle_file(str(media["image"])), handle_file(str(media["voice"])), "", "tiny", "custom",
            size, size, frames, steps, 1)  # fmt: skip


def test_sigkill_mid_denoise_and_during_mp4_write_then_restart(tmp_path, good_media, gradio_cache):
    data, db = tmp_path / "data", tmp_path / "data" / "humo.db"
    media = {"image": good_media["image"], "voice": write_wav(tmp_path / "voice4s.wav", 4.0)}
    figures = {}

    # 1. a finished job while we poll the database from this process, then a 200-step job killed mid-denoise
    studio = StudioProcess(data, gradio_cache, tmp_path / "studio1.log")
    client = Client(studio.url, verbose=False)
    job = client.submit(*args(media, 32, 9, 2), api_name="/generate")
    polls = 0
    while not job.done():
        latest_row(db) if db.exists() else None
        polls += 1
        time.sleep(0.01)
    assert "done" in job.result()[2]
    done_id = latest_row(db)[0]
    job = client.submit(*args(media, 64, 97, 200), api_name="/generate")
    deadline = time.monotonic() + 120
    while True:
        row = latest_row(db)
        polls += 1
        if row and row[0] != done_id and row[1] == "running" and (row[2] or 0) >= 1:
            break
        assert time.monotonic() < deadline, f"the job never reached step 1: {row}"
        time.sleep(0.01)
    studio.kill()
    killed_denoise = latest_row(db)
    figures["mid-denoise kill at step"] = f"{killed_denoise[2]}/{killed_denoise[3]}"
    assert killed_denoise[1] == "running" and killed_denoise[3] == 200
    assert part_files(data) == []  # nothing is written before the last step

    # 2. restart; a job killed while ffmpeg writes its mp4 (a .part file exists); the prompt's tags file lies
    # beside it (removed at the restart), none in the system's temporary folder
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    studio = StudioProcess(data, gradio_cache, tmp_path / "studio2.log", env={"TMPDIR": str(system_tmp)})
    client = Client(studio.url, verbose=False)
    job = client.submit(*args(media, 64, 97, 2), api_name="/generate")
    deadline = time.monotonic() + 120
    while not part_files(data):
        assert not job.done(), f"the job finished before its mp4 write was seen: {job.result()[2]}"
        assert time.monotonic() < deadline, "no .part file appeared"
        time.sleep(0.002)
    studio.kill()
    killed_write = latest_row(db)
    figures["mp4-write kill: row"] = killed_write[1:]
    figures["mp4-write kill: part files"] = part_files(data)
    assert not list(system_tmp.glob("humo-tags-*")), list(system_tmp.iterdir())
    assert killed_write[1] == "running" and killed_write[2] == killed_write[3] == 2

    # 3. leftovers a crash may leave: a hidden half-written mp4, an input saved but never recorded, a stray video
    (data / "videos" / ".hidden.part.mp4").write_bytes(b"half a video")
    orphan = data / "inputs" / "ab" / ("ab" * 32 + ".png")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"an upload no row references")
    (data / "videos" / "000999.mp4").write_bytes(b"a video no row references")

    # 4. the studio restarts on the same folder
    with running_studio(data) as (url, ctx):
        figures["startup report"] = ctx.startup_report
        assert ctx.startup_report.startswith("1 interrupted job(s) marked failed")
        rows = {r.id: r for r in all_rows(ctx.store)}
        assert set(rows) == {done_id, killed_denoise[0], killed_write[0]}, "a row was lost"
        assert rows[done_id].status == "done" and ctx.store.abs_path(rows[done_id].video_path).is_file()
        for gid in (killed_denoise[0], killed_write[0]):
            assert rows[gid].status == "failed" and rows[gid].error == INTERRUPTED_ERROR, rows[gid]
            assert rows[gid].video_path is None
        assert part_files(data) == [] and not orphan.exists() and not (data / "videos" / "000999.mp4").exists()
        assert_clean(audit(ctx.store))
        result = Client(url, verbose=False).predict(*args(media, 32, 9, 2), api_name="/generate")
        assert "done" in result[2]
        assert ctx.store.get(int(result[1])).status == "done"
        assert_clean(audit(ctx.store))
    figures["read-only polls of the live database"] = polls
    print("\nkill test:", figures)


def test_sigterm_empties_the_cache_and_a_start_ages_out_old_uploads(tmp_path, good_media, gradio_cache):
    """Docker, systemd and Spaces stop with SIGTERM: the studio shuts down as on Ctrl+C and empties Gradio's cache;
    uploads an earlier run left (no set of the new process knows them) are aged out at the next start."""
    import httpx

    stale = gradio_cache / "f00d" / "left-from-before.wav"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an upload from before a restart")
    old = time.time() - 2 * 3600  # older than the cache's age limit (an hour)
    os.utime(stale, (old, old))
    studio = StudioProcess(tmp_path / "data", gradio_cache, tmp_path / "studio.log")
    try:
        deadline = time.monotonic() + 30
        while stale.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not stale.exists()
        with good_media["image"].open("rb") as f:
            uploaded = Path(httpx.post(studio.url + "gradio_api/upload", files=[("files", ("face.png", f))]).json()[0])
        assert uploaded.is_file()
        os.killpg(studio.proc.pid, signal.SIGTERM)
        code = studio.proc.wait(timeout=60)
    finally:
        if studio.proc.poll() is None:
            studio.kill()
        studio.log.close()
    assert not uploaded.exists(), (code, (tmp_path / "studio.log").read_text()[-2000:])
