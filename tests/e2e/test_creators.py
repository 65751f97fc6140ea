"""The creators' parts of the Generate tab in real headless Chromium: a schedule edited in the page reproduces
through the gallery, a waiting job is cancelled by its number from the queue list, and an mp4 fills the form with its settings."""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pytest
from playwright.sync_api import expect

from engine import media
from studio import tab_generate
from studio.jobs import run_job
from tests.e2e.test_browser import browser, generated_video_seconds, set_number  # noqa: F401 (fixture)
from tests.studio_server import running_studio
from tests.test_pipeline import write_image, write_wav

pytestmark = [pytest.mark.e2e]
QUEUE_ROWS = "#queue-table [role=gridcell][data-col='0']"  # one cell per listed job (the table's rows are virtual)


def open_page(browser, url):  # noqa: F811 (the fixture's name)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.wait_for_selector("#prompt textarea")
    return page


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def wait_text(page, elem_id: str, needle: str, timeout: int = 60_000) -> None:
    try:
        page.wait_for_function(
            f"(() => {{ const e = document.querySelector('#{elem_id}'); return e && e.innerText.includes({needle!r}) }})()",
            timeout=timeout,
        )
    except Exception as exc:  # say what the page showed instead (a bare timeout told CI nothing)
        element = page.locator(f"#{elem_id}")
        shown = element.inner_text() if element.count() else "(no element)"
        raise AssertionError(f"#{elem_id} never showed {needle!r}; it shows {shown!r}") from exc


def fill_job(page, image, audio, prompt="a woman talks in a green room") -> None:
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#image input[type=file]").set_input_files(image)
    page.locator("#audio input[type=file]").set_input_files(audio)
    wait_text(page, "audio-info", "fps")
    wait_text(page, "mode", "TIA")


@contextlib.contextmanager
def job_page(browser, tmp_path, steps: int):  # noqa: F811 (the fixture's name)
    """A running studio and a page with a job's prompt, face and voice filled in, and its steps: (page, ctx)."""
    image = write_image(tmp_path / "face.png", size=(64, 64))
    audio = write_wav(tmp_path / "voice.wav", 0.5)
    with running_studio(tmp_path / "data") as (url, ctx):
        page = open_page(browser, url)
        fill_job(page, image, audio)
        set_number(page, "steps", steps)
        yield page, ctx


def type_keyframe(page, cells: list[str], row: int = 0) -> None:
    """Type one keyframe in the editor's row of inputs, key by key as a user does, and press Add (row: the table
    row it then fills)."""
    at, *scales, segment = cells
    page.locator("#key-at input, #key-at textarea").first.type(at)
    for elem_id, value in zip(("key-t", "key-i", "key-a"), scales, strict=True):
        if value:  # blank: the scale is kept
            page.locator(f"#{elem_id} input, #{elem_id} textarea").first.type(value)
    if segment:
        page.locator("#key-segment input").click()
        page.get_by_role("option", name=segment, exact=True).click()
    page.locator("#key-add").click()
    expect(page.locator(f'#keyframes [data-testid="cell-{row}-0"]')).to_have_text(at, timeout=10_000)


def test_an_edited_schedule_reproduces_through_the_gallery(browser, tmp_path):  # noqa: F811
    with job_page(browser, tmp_path, steps=4) as (page, ctx):
        set_number(page, "seed", 123)
        wait_text(page, "schedule-label", "official")
        type_keyframe(page, ["3", "", "", "11", "linear"])  # audio ramps to 11 by step 3
        wait_text(page, "schedule-label", "custom")
        wait_text(page, "estimate", "steps 3")  # the formulas list which steps each phase covers
        page.locator("#generate").click()
        generated_video_seconds(page, timeout=300_000)  # generous: CI runners share their cores
        wait_text(page, "estimate", "measured on this machine, 1 run")  # the estimate after the run is its costs
        rows, total = ctx.store.list_generations()
        assert total == 1
        first = rows[0]
        keyframes = first.settings["guidance"]["source"]["keyframes"]
        assert keyframes == [{"at": "3", "scale_t": None, "scale_i": None, "scale_a": 11.0, "segment": "linear"}]

        # the gallery shows the row without Refresh (it updates when the job ends); reuse fills everything back
        page.get_by_role("tab", name="Gallery").click()
        page.wait_for_selector("#gallery-grid img", timeout=30_000)
        page.locator("#gallery-grid img").first.click()
        wait_text(page, "gallery-summary", "seed 123")
        page.locator("#gallery-reuse").click()
        wait_text(page, "schedule-label", "custom")
        assert page.locator("#seed input").first.input_value() == "123"
        assert page.locator("#keyframes [data-testid='cell-0-3']").inner_text().strip() == "11"
        page.locator("#generate").click()
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('#2') && "
            "document.querySelector('#status').innerText.includes('done')",
            timeout=300_000,
        )
        rows, total = ctx.store.list_generations()
        assert total == 2
        second = rows[0]
        assert second.settings["guidance"] == first.settings["guidance"]
        for name in ("height", "width", "num_inference_steps", "seed", "num_frames", "negative_prompt"):
            assert second.settings[name] == first.settings[name], name
        a = media.read_video_frames(ctx.store.abs_path(first.video_path))
        b = media.read_video_frames(ctx.store.abs_path(second.video_path))
        assert a.shape == b.shape and np.abs(np.asarray(a, float) - np.asarray(b, float)).max() < 1e-6


def test_custom_phases_typed_in_the_page_run_and_come_back(browser, tmp_path):  # noqa: F811
    """A schedule the controls cannot make (a branch mix of no preset), typed as JSON in the page, is what runs,
    and the gallery's reuse puts the same JSON back."""
    import json

    from tests.test_generate_tab import CUSTOM_PHASES

    with job_page(browser, tmp_path, steps=3) as (page, ctx):
        page.get_by_text("Custom phases (JSON").click()
        page.locator("#to-phases").click()  # the editor's schedule as a starting point
        page.wait_for_function("document.querySelector('#phases .cm-content').innerText.includes('T·I·A')")
        page.locator("#phases .cm-content").click()
        page.keyboard.press("Control+A")
        page.keyboard.insert_text(json.dumps(CUSTOM_PHASES))
        wait_text(page, "schedule-label", "custom phases")
        wait_text(page, "estimate", "N·I·A")  # the formulas under the plot are the typed ones
        page.locator("#generate").click()
        generated_video_seconds(page, timeout=300_000)
        rows, total = ctx.store.list_generations()
        assert total == 1
        ran = rows[0].settings["guidance"]["phases"]
        assert [(p["above"], p["weights"]) for p in ran] == [
            (p["above"], p["weights"]) for p in CUSTOM_PHASES["phases"]
        ]
        page.locator("#phases .cm-content").click()
        page.keyboard.press("Control+A")
        page.keyboard.press("Delete")  # cleared: the controls' schedule again
        wait_text(page, "schedule-label", "Schedule: official")
        page.get_by_role("tab", name="Gallery").click()
        page.wait_for_selector("#gallery-grid img", timeout=30_000)
        page.locator("#gallery-grid img").first.click()
        page.locator("#gallery-reuse").click()
        wait_text(page, "schedule-label", "custom phases")
        box = json.loads(page.locator("#phases .cm-content").inner_text())
        assert [(p["above"], p["weights"]) for p in box["phases"]] == [(p["above"], p["weights"]) for p in ran]


def select_job(page, number: str) -> None:
    """Click a job of the queue list by its gallery number ("#12"): by its text, not its place, since the list
    refreshes every 2 s and a row may have just left it."""
    page.locator(QUEUE_ROWS).filter(has_text=re.compile(f"^\\s*{re.escape(number)}\\s*$")).click()
    page.wait_for_function(f"document.querySelector('#queue-job textarea').value === {number!r}", timeout=15_000)


def test_two_queued_jobs_cancel_one(browser, tmp_path):  # noqa: F811
    with job_page(browser, tmp_path, steps=100) as (
        page,
        ctx,
    ):  # long enough to queue a second job behind it (Stop ends it)
        page.locator("#generate").click()
        wait_text(page, "status", "step", timeout=300_000)
        page.locator("#prompt textarea").focus()
        page.keyboard.press("Control+Enter")  # the shortcut; a second press of Generate queues a second job
        page.wait_for_function(f"document.querySelectorAll({QUEUE_ROWS!r}).length >= 2", timeout=60_000)
        table = text_of(page, "queue-table")
        assert "running" in table and "waiting" in table and "1 ahead" in table
        running, waiting = (f"#{r.id}" for r in sorted(ctx.store.list_generations()[0], key=lambda r: r.id))
        select_job(page, waiting)  # the job, by its number
        page.locator("#queue-cancel").click()
        wait_text(page, "queue-info", "will not run")
        page.locator("#stop").click()
        page.wait_for_function(f"document.querySelectorAll({QUEUE_ROWS!r}).length === 0", timeout=300_000)
        rows = {f"#{r.id}": r for r in ctx.store.list_generations()[0]}
        assert len(rows) == 2 and rows[running].status in ("stopped", "done")  # Stop may come after its last step
        # the cancelled one ended under the number it was listed and cancelled by, without running
        assert rows[waiting].status == "stopped" and "cancelled before it started" in rows[waiting].error
        assert rows[waiting].started_at is None


def test_load_settings_from_an_mp4(browser, tmp_path):  # noqa: F811
    image = write_image(tmp_path / "face.png", size=(64, 64))
    audio = write_wav(tmp_path / "voice.wav", 0.5)
    with running_studio(tmp_path / "data") as (url, ctx):
        values = dict(prompt="a man sings on a boat", image=str(image), audio=str(audio), model="tiny",
                      resolution="custom", height=32, width=48, steps=3, seed=77, preset="tighter lip-sync",
                      scale_t=3.0, scale_i=2.0, scale_a=12.0, keyframes=[["t500", 4.0, None, None, "hold"]])  # fmt: skip
        request, names = tab_generate.make_request(ctx, **values)
        made = run_job(ctx, request, "tiny", names=names)
        page = open_page(browser, url)
        # Generate and the result are reached before the settings, on a wide and on a phone-sized screen
        for width in (1400, 420):
            page.set_viewport_size({"width": width, "height": 900})
            settings_top = page.locator("#resolution").bounding_box()["y"]
            assert page.locator("#generate").bounding_box()["y"] < min(settings_top, 1000), width
            assert page.locator("#result-video").bounding_box()["y"] < settings_top, width
        page.set_viewport_size({"width": 1400, "height": 1100})
        # the example carries the README's seed
        set_number(page, "seed", 5)
        page.get_by_text(tab_generate.example_rows()[0][0][:40]).first.click()  # the example row
        page.wait_for_function("document.querySelector('#seed input').value === '0'", timeout=30_000)
        page.get_by_text("Load settings from a video made here").click()
        page.locator("#settings-file input[type=file]").set_input_files(str(made.video_path))
        wait_text(page, "settings-info", "loaded (seed 77)")
        assert page.locator("#prompt textarea").input_value() == "a man sings on a boat"
        assert page.locator("#seed input").first.input_value() == "77"
        assert page.locator("#height input").first.input_value() == "32"
        assert page.locator("#scale-a input[type=number]").first.input_value() == "12"
        assert "t500" in text_of(page, "keyframes")
        wait_text(page, "schedule-label", "custom")
