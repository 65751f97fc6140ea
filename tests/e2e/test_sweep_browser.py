"""Sweeps and the gallery in real headless Chromium (1400 px and a 420 px phone): a 2×3 sweep ends as a grid video
in the gallery whose cells are reusable; the gallery's detail keeps its buttons on the screen; the grid fits a
phone; Download all gives the videos."""

from __future__ import annotations

import io
import zipfile

import pytest
from playwright.sync_api import expect

from studio import tab_generate
from studio.jobs import run_job
from tests.e2e.test_browser import browser, set_number, shots_dir  # noqa: F401 (fixture)
from tests.e2e.test_creators import fill_job, open_page, wait_text
from tests.studio_server import running_studio
from tests.test_pipeline import write_image, write_wav

pytestmark = [pytest.mark.e2e]
# A schedule with many keyframes: its settings JSON is thousands of pixels tall (issue 29: ~2,300 px)
KEYFRAMES = [[str(step), 4.0 + step / 4, 2.5, 5.0 + step / 3, "linear"] for step in range(1, 13)]


def pick(page, elem_id: str, option: str) -> None:
    """Choose an option of a Gradio dropdown as a user does: open it, click the option."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id}").get_by_role("option", name=option, exact=True).click()
    page.wait_for_function(f"document.querySelector('#{elem_id} input').value === {option!r}", timeout=10_000)


def in_view(page, elem_id: str) -> bool:
    box = page.locator(f"#{elem_id}").bounding_box()
    size = page.viewport_size
    return box is not None and 0 <= box["y"] and box["y"] + box["height"] <= size["height"] and \
        box["x"] + box["width"] <= size["width"]  # fmt: skip


def test_a_sweep_grid_in_the_gallery_and_the_gallery_on_a_phone(browser, tmp_path):  # noqa: F811
    image = write_image(tmp_path / "face.png", size=(64, 64))
    audio = write_wav(tmp_path / "voice.wav", 0.5)
    shots = shots_dir(tmp_path)
    with running_studio(tmp_path / "data") as (url, ctx):
        # an entry with a long keyframe schedule, made before the page opens
        values = dict(prompt="a man sings on a boat", image=str(image), audio=str(audio), model="tiny", steps=12,
                      seed=11, keyframes=KEYFRAMES)  # fmt: skip
        request, names = tab_generate.make_request(ctx, **values)
        keyed = run_job(ctx, request, "tiny", names=names).generation_id

        page = open_page(browser, url)
        fill_job(page, image, audio)
        set_number(page, "steps", 1)
        page.get_by_text("Sweep: compare settings side by side").click()
        pick(page, "sweep-x-axis", "Audio scale")
        page.locator("#sweep-x-values").locator("textarea, input").first.fill("3, 5, 7.5")
        pick(page, "sweep-y-axis", "Seed")
        page.locator("#sweep-y-values").locator("textarea, input").first.fill("1, 2")
        page.locator("#sweep-run").click()
        wait_text(page, "status", "Sweep cell", timeout=120_000)  # the cells run as jobs, one after another
        wait_text(page, "status", "Sweep grid #8 done", timeout=300_000)
        page.wait_for_selector("#result-video video", timeout=30_000)
        page.screenshot(path=str(shots / "sweep-done-1400.png"), full_page=True)
        rows, total = ctx.store.list_generations()
        assert total == 8 and all(row.status == "done" for row in rows)
        grid = rows[0]
        cells = grid.settings["sweep"]["cells"]
        assert [c["id"] for c in cells] == list(range(2, 8))
        assert [(c["x"], c["y"]) for c in cells][-1] == ("Audio scale 7.5", "Seed 2")
        assert [ctx.store.get(c["id"]).seed for c in cells] == [1, 1, 1, 2, 2, 2]
        scales = [ctx.store.get(c["id"]).settings["guidance"]["scales"]["scale_a"] for c in cells]
        assert scales == [3.0, 5.0, 7.5, 3.0, 5.0, 7.5]

        # the grid in the gallery: its cells listed, one picked and reused
        page.get_by_role("tab", name="Gallery").click()
        page.wait_for_function("document.querySelector('#gallery-grid').innerText.includes('#8')", timeout=30_000)
        page.locator("#gallery-grid img").first.click()
        wait_text(page, "gallery-summary", "Cells")
        page.wait_for_selector("#gallery-video video", timeout=30_000)
        pick(page, "gallery-cell", "#7 Audio scale 7.5 · Seed 2")
        page.locator("#gallery-reuse").click()
        expect(page.locator("#seed input").first).to_have_value("2", timeout=30_000)
        assert page.locator("#scale-a input[type=number]").first.input_value() == "7.5"

        # the detail of an entry with a long schedule keeps Use these settings and Delete on the screen
        page.get_by_role("tab", name="Gallery").click()
        for width in (1400, 420):
            page.set_viewport_size({"width": width, "height": 900})
            page.locator("#gallery-grid img").last.click()  # the oldest entry: the keyframed one
            wait_text(page, "gallery-summary", f"#{keyed}")
            page.locator("#gallery-settings-box").get_by_text("Every setting").first.click()  # open the settings box
            page.wait_for_function("document.querySelector('#gallery-settings .cm-content')"
                                   " && document.querySelector('#gallery-settings').innerText.includes('status')",
                                   timeout=30_000)  # fmt: skip
            settings_box = page.locator("#gallery-settings").bounding_box()
            assert settings_box["height"] < 700, settings_box  # it scrolls instead of growing
            page.locator("#gallery-video").scroll_into_view_if_needed()
            page.evaluate("document.querySelector('#gallery-video').scrollIntoView({block: 'start'})")
            assert in_view(page, "gallery-reuse") and in_view(page, "gallery-delete"), width
            page.screenshot(path=str(shots / f"gallery-detail-{width}.png"), full_page=False)
            page.locator("#gallery-settings-box").get_by_text("Every setting").first.click()  # closed again

        # on a phone every thumbnail of the grid is inside the screen
        page.set_viewport_size({"width": 420, "height": 900})
        page.locator("#gallery-grid").scroll_into_view_if_needed()
        boxes = [page.locator("#gallery-grid img").nth(i).bounding_box() for i in range(8)]
        assert all(b is not None and b["x"] >= 0 and b["x"] + b["width"] <= 420 for b in boxes), boxes
        page.screenshot(path=str(shots / "gallery-grid-420.png"), full_page=True)

        # Download all gives the visitor's videos
        page.locator("#gallery-download-all").click()
        link = page.locator("#gallery-download-all-file a").first
        link.wait_for(timeout=30_000)
        body = page.request.get(link.get_attribute("href")).body()
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            names = archive.namelist()
            assert sorted(names) == [f"humo-{gid:06d}.mp4" for gid in range(1, 9)]
            assert archive.read(names[0])[4:8] == b"ftyp"  # mp4s, not thumbnails
        # the grid's own "Download All" (it gave the thumbnails) is gone
        buttons = page.locator("#gallery-grid button").evaluate_all(
            "els => els.map(e => [e.getAttribute('aria-label'), e.title, e.innerText].join(' '))"
        )
        assert not any("download" in b.lower() for b in buttons), buttons
