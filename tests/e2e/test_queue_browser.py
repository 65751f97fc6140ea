"""Issue 29 in real headless Chromium at a desktop (1400 px) and a phone (420 px) width: the queue list names jobs
by their gallery numbers, a named waiting job is cancelled and another moved up (and runs first); a public
visitor is warned about a too-long voice before Generate, with the consent box in view of Generate; a keyframe
typed as `t950` arrives whole."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import browser, set_number  # noqa: F401 (fixture)
from tests.e2e.test_creators import fill_job, select_job, text_of, wait_text
from tests.studio_server import running_studio
from tests.test_pipeline import write_image, write_wav

pytestmark = [pytest.mark.e2e]
WIDTHS = (1400, 420)
JOB_CELLS = "#queue-table [role=gridcell][data-col='0']"


def open_at(browser, url, width: int):  # noqa: F811 (the fixture's name)
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(url)
    page.wait_for_selector("#prompt textarea")
    return page


def listed_jobs(page) -> list[str]:
    return [t.strip() for t in page.locator(JOB_CELLS).all_inner_texts()]


@pytest.mark.parametrize("width", WIDTHS)
def test_queue_numbers_are_the_gallerys_cancel_and_reorder(browser, tmp_path, width):  # noqa: F811
    image = write_image(tmp_path / "face.png", size=(64, 64))
    audio = write_wav(tmp_path / "voice.wav", 0.5)
    with running_studio(tmp_path / "data") as (url, ctx):
        page = open_at(browser, url, width)
        fill_job(page, str(image), str(audio))
        set_number(page, "steps", 1)
        with ctx.turn():  # another job holds the pipelines: the three clicks wait in the line with their rows
            for _ in range(3):
                page.locator("#generate").click()
                page.wait_for_timeout(300)
            page.wait_for_function(f"document.querySelectorAll({JOB_CELLS!r}).length === 3", timeout=60_000)
            rows, total = ctx.store.list_generations()
            ids = sorted(r.id for r in rows)
            assert total == 3 and all(r.status == "queued" for r in rows)
            assert listed_jobs(page) == [f"#{i}" for i in ids]  # the gallery's numbers, in turn order
            table = text_of(page, "queue-table")
            assert "tiny · 1 steps · 64×64" in table and "waiting" in table and "3 ahead" in table
            # the list sits in the result column, beside (desktop) or right under (phone) Generate and the result
            panel = page.locator("#queue-table").bounding_box()
            settings_top = page.locator("#resolution").bounding_box()["y"]
            assert panel["y"] < settings_top, (panel, settings_top)
            assert panel["x"] + panel["width"] <= width + 1  # not cut off on a phone
            select_job(page, f"#{ids[1]}")
            page.locator("#queue-cancel").click()
            wait_text(page, "queue-info", f"Job #{ids[1]} is cancelled")
            page.wait_for_function(f"document.querySelectorAll({JOB_CELLS!r}).length === 2", timeout=15_000)
            select_job(page, f"#{ids[2]}")
            page.locator("#queue-up").click()
            wait_text(page, "queue-info", f"Job #{ids[2]} moved up")
            page.wait_for_function(
                f"Array.from(document.querySelectorAll({JOB_CELLS!r})).map(e => e.innerText.trim()).join(',') === "
                f"'#{ids[2]},#{ids[0]}'",
                timeout=15_000,
            )
        for _ in range(600):  # the turn is free: the two jobs left run, the moved one first
            rows = {r.id: r for r in ctx.store.list_generations()[0]}
            if all(rows[i].status not in ("queued", "running") for i in ids):
                break
            page.wait_for_timeout(200)
        assert [rows[i].status for i in ids] == ["done", "stopped", "done"]
        assert "cancelled before it started" in rows[ids[1]].error
        assert rows[ids[2]].started_at < rows[ids[0]].started_at  # reordering changed which job ran next
        page.wait_for_function(f"document.querySelectorAll({JOB_CELLS!r}).length === 0", timeout=30_000)
        page.get_by_role("tab", name="Gallery").click()
        page.locator("#gallery-refresh").click()
        for gid in ids:  # the gallery shows the same numbers
            page.wait_for_selector(f"#gallery-grid :text('#{gid} ')", timeout=30_000)


def in_view(page, elem_id: str) -> bool:
    box = page.locator(f"#{elem_id}").bounding_box()
    height = page.viewport_size["height"]
    return box is not None and box["height"] > 0 and 0 <= box["y"] and box["y"] + box["height"] <= height


@pytest.mark.parametrize("width", WIDTHS)
def test_a_public_visitor_is_warned_before_generate_with_consent_in_view(browser, tmp_path, width):  # noqa: F811
    image = write_image(tmp_path / "face.png", size=(64, 64))
    voice = write_wav(tmp_path / "speech.wav", 8.55)
    with running_studio(tmp_path / "data", public=True) as (url, ctx):
        page = open_at(browser, url, width)
        page.locator("#prompt textarea").fill("a woman talks")
        page.locator("#image input[type=file]").set_input_files(str(image))
        page.locator("#audio input[type=file]").set_input_files(str(voice))
        # on upload, before Generate: the refusal's own sentence, with the banner's number
        wait_text(page, "audio-info", "would make 213 frames")
        assert "at most 97 (3.9 s)" in text_of(page, "audio-info")
        assert "voices up to 3.9 s used whole" in text_of(page, "public-notice")
        expect_disabled = page.locator("#long-video input[type=checkbox]")
        assert expect_disabled.is_disabled()
        assert ctx.store.list_generations(owner="local")[1] == 0
        # the consent box is in view whenever Generate is
        page.locator("#generate").scroll_into_view_if_needed()
        assert in_view(page, "generate") and in_view(page, "consent"), width


@pytest.mark.parametrize("width", WIDTHS)
def test_a_keyframe_typed_as_t950_arrives_whole(browser, tmp_path, width):  # noqa: F811
    with running_studio(tmp_path / "data") as (url, ctx):
        page = open_at(browser, url, width)
        wait_text(page, "schedule-label", "official")
        page.locator("#key-at input, #key-at textarea").first.fill("")
        page.locator("#key-at input, #key-at textarea").first.type("t950")  # key by key, as a user types
        page.locator("#key-a input, #key-a textarea").first.type("11")
        page.locator("#key-add").click()
        wait_text(page, "key-info", "Keyframe t950 added")
        assert page.locator("#keyframes [data-testid='cell-0-0']").inner_text().strip() == "t950"
        assert page.locator("#keyframes [data-testid='cell-0-3']").inner_text().strip() == "11"
        assert page.locator("#keyframes [data-testid='cell-0-1']").inner_text().strip() == ""  # blank: kept
        wait_text(page, "schedule-label", "custom")
        page.locator("#key-remove").click()
        wait_text(page, "schedule-label", "official")
