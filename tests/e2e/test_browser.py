"""The studio in real headless Chromium (Debian's package, driven by playwright): generate, gallery, stop."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine import media, nano
from tests.studio_server import running_studio
from tests.test_pipeline import write_image, write_wav
from training import analysis

ROOT = Path(__file__).resolve().parents[2]
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


def generated_video_seconds(page, timeout: int = 120_000) -> float:
    """Waits for the job to finish and its video to load in the Result player; returns the video's duration."""
    page.wait_for_function(
        "document.querySelector('#status') && document.querySelector('#status').innerText.includes('done')",
        timeout=timeout,
    )
    page.wait_for_selector("#result-video video", timeout=30_000)
    return video_seconds(page, "result-video", timeout=30_000, ready=2)


def video_seconds(page, elem_id: str, timeout: int, ready: int = 1) -> float:
    """Waits until the player in `#elem_id` has a video with a length (readyState >= `ready`); returns its seconds."""
    return page.wait_for_function(
        f"(() => {{ const v = document.querySelector('#{elem_id} video');"
        f" return v && v.readyState >= {ready} && v.duration > 0 ? v.duration : null }})()",
        timeout=timeout,
    ).json_value()


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
        assert 0.4 < generated_video_seconds(page) < 0.7  # 13 frames at 25 fps
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
        page.wait_for_function("document.querySelector('#stop-info').innerText.includes('Stopping')")
        page.wait_for_function(
            "['stopped', 'done', 'failed'].some(w => document.querySelector('#status').innerText.includes(w))",
            timeout=120_000,
        )
        assert "stopped" in page.locator("#status").inner_text()
        # issue 29: the "Stopping…" line goes once the job has ended (it stayed through later jobs)
        page.wait_for_function("document.querySelector('#stop-info').innerText.trim() === ''", timeout=30_000)
        page.screenshot(path=str(shots / "04-stopped.png"), full_page=True)
        rows, total = ctx.store.list_generations()
        assert total == 2 and rows[0].status == "stopped" and rows[0].video_path is None


@pytest.mark.skipif(not nano.is_present(), reason="assets/humo-nano missing (python -m training nano)")
def test_studio_opens_on_nano_and_renders_its_example(browser, tmp_path, monkeypatch):
    """No downloaded weights: the studio starts on HuMo-nano, one click fills the bundled example, and Generate
    gives a 2-second video of the prompt's scene (scored on the stored mp4, as the gallery keeps it)."""
    monkeypatch.setenv("HUMO_MODELS_DIR", str(tmp_path / "no-models"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(ROOT)  # the example's paths are relative to the repository
    case = json.loads((ROOT / "assets/examples/cases.json").read_text())["nano"]
    shots = shots_dir(tmp_path)
    with running_studio(tmp_path / "data", model=None) as (url, ctx):
        assert ctx.default_model == "humo-nano"
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector("#prompt textarea")
        assert "HuMo-nano" in page.locator("#nano-banner").inner_text()
        page.get_by_text(case["prompt"][:40]).first.click()  # the example row
        page.wait_for_function("document.querySelector('#audio-info').innerText.includes('49 frames')")
        assert page.locator("#prompt textarea").input_value() == case["prompt"]
        assert page.locator("#scale-a input[type=number]").first.input_value() == "7.5"  # 1.7B's official scales
        set_number(page, "seed", 0)
        page.locator("#generate").click()
        assert 1.8 < generated_video_seconds(page, timeout=180_000) < 2.1  # 49 frames at 25 fps
        # the screenshot shows the middle of the clip (the first frames are the model's weakest)
        page.evaluate(
            "(() => { const v = document.querySelector('#result-video video'); v.pause(); v.currentTime = 1.2 })()"
        )
        page.wait_for_function("document.querySelector('#result-video video').currentTime > 1.1")
        page.screenshot(path=str(shots / "05-nano-example.png"), full_page=True)
        rows, total = ctx.store.list_generations()
        row = rows[0]
        assert total == 1 and row.status == "done" and row.model_id == "humo-nano"
        frames = media.read_video_frames(ctx.store.data_dir / row.video_path)
        assert analysis.text_score(frames, case["prompt"]) > 0.5  # the red room the prompt asks for
