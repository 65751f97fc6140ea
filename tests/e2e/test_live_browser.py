"""Generate live in real headless Chromium: the first chunk plays in the page before the job ends; Stop keeps it."""

from __future__ import annotations

import shutil

import pytest

from studio import live_job
from tests.e2e.test_browser import CHROMIUM, browser, set_number, shots_dir, video_seconds  # noqa: F401 (browser: the fixture)
from tests.studio_server import running_studio
from tests.test_pipeline import write_image, write_wav

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not shutil.which(CHROMIUM) and not CHROMIUM.startswith("/"), reason="chromium missing"),
    pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                       reason="Gradio's streaming video needs ffmpeg and ffprobe on PATH (apt-get install ffmpeg)"),
]  # fmt: skip


def test_live_chunks_play_before_the_job_ends_and_stop_keeps_them(browser, tmp_path, monkeypatch):  # noqa: F811
    # the tiny test model stands in for a model measured fast enough; 17-frame chunks, slow steps, so the job is
    # still running when the first chunk is in the page
    monkeypatch.setitem(live_job.MEASURED_CPU_RTF, "tiny", live_job.LIVE_MIN_RTF)
    image = write_image(tmp_path / "face.png", size=(64, 64))
    audio = write_wav(tmp_path / "voice.wav", 4.0)  # 97 frames: chunks of 17, then 12 new frames each (8 chunks)
    shots = shots_dir(tmp_path)
    with running_studio(tmp_path / "data", device="cpu") as (url, ctx):
        ctx.pipeline("tiny").default_frames = 17
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector("#prompt textarea")
        page.locator("#prompt textarea").fill("a young man talks in a bright studio")
        page.locator("#image input[type=file]").set_input_files(image)
        page.locator("#audio input[type=file]").set_input_files(audio)
        page.wait_for_function("document.querySelector('#mode').innerText.includes('TIA')", timeout=30_000)
        set_number(page, "steps", 100)  # the studio's most: a chunk takes seconds, Stop lands before the last
        page.locator("#generate-live").click()

        page.wait_for_function("document.querySelector('#status').innerText.includes('chunk 1/8')", timeout=180_000)
        duration = video_seconds(page, "live-video", timeout=60_000)
        rows, _ = ctx.store.list_generations()
        assert rows[0].status == "running"  # the first chunk plays in the page while the job goes on
        page.locator("#stop").click()
        assert duration > 0.3  # 17 frames = 0.68 s (the player may count the stream's audio too)
        page.screenshot(path=str(shots / "live-01-first-chunk.png"), full_page=True)
        page.wait_for_function(
            "['stopped', 'done', 'failed'].some(w => document.querySelector('#status').innerText.includes(w))",
            timeout=180_000,
        )
        assert "stopped" in page.locator("#status").inner_text()
        rows, _ = ctx.store.list_generations()
        row = rows[0]
        assert row.status == "stopped" and row.video_path and row.thumbnail_path
        from engine import media

        info = media.probe(ctx.store.abs_path(row.video_path))
        kept = info["video"]["frames"]  # the chunks finished before Stop: the first, then 12 frames a chunk
        assert kept < 97 and (kept - 17) % 12 == 0 and info["audio"] is not None
        page.screenshot(path=str(shots / "live-02-stopped.png"), full_page=True)
