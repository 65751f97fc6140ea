"""The Dub tab in real headless Chromium: upload a video and a new voice, see the mask, dub, watch the result, find
it in the gallery."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import media
from tests.e2e.test_browser import CHROMIUM, browser, set_number, shots_dir  # noqa: F401  (browser: the fixture)
from tests.studio_server import running_studio
from tests.test_dub import write_clip

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing: `make test` installs it"),
]


def test_dub_tab_upload_dub_watch_and_gallery(browser, tmp_path):  # noqa: F811
    clip, voice_b, _ = write_clip(tmp_path, "speaker", frames=17, seed=3)
    shots = shots_dir(tmp_path)
    with running_studio(tmp_path / "data") as (url, ctx):
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.get_by_role("tab", name="Dub").click()
        page.locator("#dub-video input[type=file]").set_input_files(str(clip))
        page.locator("#dub-audio input[type=file]").set_input_files(str(voice_b))
        # the mask preview on the first frame names the face it found
        page.wait_for_function("document.querySelector('#dub-mask-info').innerText.includes('face(s) found')",
                               timeout=60_000)  # fmt: skip
        assert page.locator("#dub-mask img").count() == 1
        set_number(page, "dub-steps", 2)
        set_number(page, "dub-seed", 4)
        page.screenshot(path=str(shots / "dub-01-filled.png"), full_page=True)
        page.locator("#dub-run").click()
        page.wait_for_function("document.querySelector('#dub-status').innerText.includes('done')", timeout=180_000)
        page.wait_for_selector("#dub-result video", timeout=30_000)
        seconds = page.wait_for_function(
            "(() => { const v = document.querySelector('#dub-result video');"
            " return v && v.readyState >= 2 && v.duration > 0 ? v.duration : null })()",
            timeout=30_000,
        ).json_value()
        assert 0.5 < seconds < 0.9  # 17 frames at 25 fps
        page.screenshot(path=str(shots / "dub-02-done.png"), full_page=True)
        rows, total = ctx.store.list_generations()
        assert total == 1 and rows[0].status == "done" and rows[0].settings["kind"] == "dub"
        assert media.read_settings(ctx.store.data_dir / rows[0].video_path)["provenance"]["ai_generated"]

        page.get_by_role("tab", name="Gallery").click()
        page.wait_for_selector("#gallery-grid img", timeout=30_000)
        assert f"#{rows[0].id}" in page.locator("#gallery-grid").inner_text()
        page.screenshot(path=str(shots / "dub-03-gallery.png"), full_page=True)
