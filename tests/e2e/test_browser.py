"""The studio in real headless Chromium (Debian's package, driven by playwright): generate, gallery, stop."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.studio_server import running_studio
from tests.test_pipeline import write_image, write_wav

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing: `make test` installs it"),
]


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def shots_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("HUMO_SCREENSHOT_DIR", tmp_path / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def test_generate_gallery_and_stop(browser, tmp_path):
    image = write_image(tmp_path / "face.png", size=(64, 64))
    audio = write_wav(tmp_path / "voice.wav", 0.6)
    shots = shots_dir(tmp_path)
    with running_studio(tmp_path / "data") as (url, ctx):
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector("#prompt textarea")
        assert "untrained" in page.locator("#demo-banner").inner_text()

        page.locator("#prompt textarea").fill("a young man talks in a bright studio")
        page.locator("#image input[type=file]").set_input_files(image)
        page.locator("#audio input[type=file]").set_input_files(audio)
        page.wait_for_function("document.querySelector('#audio-info').innerText.includes('fps')")
        assert "13 frames" in page.locator("#audio-info").inner_text()  # 0.6 s -> 15 -> snapped to 13
        page.wait_for_function("document.querySelector('#mode').innerText.includes('TIA')", timeout=30_000)
        set_number(page, "scale-a", 7)
        page.wait_for_function("document.querySelector('#estimate').innerText.includes('passes per step')")
        set_number(page, "steps", 3)
        page.screenshot(path=str(shots / "01-generate-filled.png"), full_page=True)

        page.locator("#generate").click()
        page.wait_for_function(
            "document.querySelector('#status') && document.querySelector('#status').innerText.includes('done')",
            timeout=120_000,
        )
        page.wait_for_selector("#result-video video", timeout=30_000)
        ready = page.wait_for_function(
            "(() => { const v = document.querySelector('#result-video video');"
            " return v && v.readyState >= 2 && v.duration > 0 ? v.duration : null })()",
            timeout=30_000,
        ).json_value()
        assert 0.4 < ready < 0.7  # 13 frames at 25 fps
        page.evaluate("document.querySelector('#result-video video').play()")
        page.wait_for_function("document.querySelector('#result-video video').currentTime > 0", timeout=30_000)
        page.screenshot(path=str(shots / "02-generate-done.png"), full_page=True)
        rows, total = ctx.store.list_generations()
        assert total == 1 and rows[0].status == "done"
        row = rows[0]
        assert row.settings["guidance"]["scales"]["scale_a"] == 7

        # after a reload, the video is in the gallery
        page.reload()
        page.get_by_role("tab", name="Gallery").click()
        page.wait_for_selector("#gallery-grid img", timeout=30_000)
        assert f"#{row.id}" in page.locator("#gallery-grid").inner_text()
        page.locator("#gallery-grid img").first.click()
        page.wait_for_function("document.querySelector('#gallery-summary').innerText.includes('seed')")
        page.screenshot(path=str(shots / "03-gallery.png"), full_page=True)

        # a second, longer job stopped midway is marked stopped
        page.get_by_role("tab", name="Generate").click()
        # the last run's settings came back after the reload
        page.wait_for_function("document.querySelector('#prompt textarea').value.includes('bright studio')")
        page.locator("#image input[type=file]").set_input_files(image)
        set_number(page, "steps", 100)
        set_number(page, "frames", 97)  # a long enough job to press Stop in the middle of it
        page.locator("#generate").click()
        page.wait_for_function(
            "document.querySelector('#status').innerText.match(/step ([3-9]|[1-9][0-9])\\//)", timeout=120_000
        )
        page.locator("#stop").click()
        page.wait_for_function(
            "['stopped', 'done', 'failed'].some(w => document.querySelector('#status').innerText.includes(w))",
            timeout=120_000,
        )
        assert "stopped" in page.locator("#status").inner_text()
        assert "Stopping" in page.locator("#stop-info").inner_text()
        page.screenshot(path=str(shots / "04-stopped.png"), full_page=True)
        rows, total = ctx.store.list_generations()
        assert total == 2 and rows[0].status == "stopped" and rows[0].video_path is None
