"""Two visitors of one public studio in two real Chromium contexts: B sees nothing of A's (gallery, last settings,
page config, API), A's gallery survives a reload, and once A deletes the entry its video's URL is gone."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client

from tests.e2e.test_browser import CHROMIUM, browser, set_number  # noqa: F401  (browser: the shared fixture)
from tests.robustness.helpers import all_rows, assert_clean, audit
from tests.studio_server import running_studio

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing: `make test` installs it"),
]
SECRET_PROMPT = "a lighthouse keeper named Ottoline sings at dawn"


def open_studio(browser, url: str):  # noqa: F811
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#prompt textarea")
    page.wait_for_function("document.querySelector('#estimate') && document.querySelector('#estimate').innerText")
    return context, page


def gallery_label(page) -> str:
    page.get_by_role("tab", name="Gallery").click()
    page.wait_for_function("document.body.innerText.includes('generations')", timeout=30_000)
    return page.locator("text=/Page \\d+ of \\d+ · \\d+ generations/").first.inner_text()


@pytest.mark.slow
def test_two_visitors_see_only_their_own(browser, tmp_path, good_media):  # noqa: F811
    with running_studio(tmp_path / "data", public=True) as (url, ctx):
        a_context, a = open_studio(browser, url)
        a.locator("#prompt textarea").fill(SECRET_PROMPT)
        a.locator("#image input[type=file]").set_input_files(str(good_media["image"]))
        a.locator("#audio input[type=file]").set_input_files(str(good_media["audio05"]))
        a.wait_for_function("document.querySelector('#audio-info').innerText.includes('fps')")
        set_number(a, "steps", 1)
        a.locator("#consent input[type=checkbox]").check()
        a.locator("#generate").click()
        a.wait_for_function("document.querySelector('#status').innerText.includes('done')", timeout=120_000)
        a.wait_for_selector("#result-video video", timeout=30_000)
        video_url = a.locator("#result-video video").get_attribute("src")
        assert video_url and "/file=" in video_url
        assert a_context.request.get(video_url).status == 200
        rows = all_rows(ctx.store)
        assert len(rows) == 1 and rows[0].status == "done" and rows[0].owner.startswith("anon:")
        a_row = rows[0]
        assert str(ctx.store.data_dir) not in video_url  # a cached copy, never the data folder's file

        # B: an empty form, an empty gallery, nothing of A's in its page or config
        b_context, b = open_studio(browser, url)
        # (the copy's URL is an unguessable content hash: whoever holds it may fetch it, until A deletes the entry)
        b_before = b_context.request.get(video_url).status
        assert b.locator("#prompt textarea").input_value() == ""
        assert gallery_label(b).endswith("· 0 generations")
        assert b.locator("#gallery-grid img").count() == 0
        config = b_context.request.get(url + "config").text()
        for secret in (SECRET_PROMPT, video_url.split("/file=")[-1], a_row.owner.split(":", 1)[1]):
            assert secret not in config and secret not in b.content()
        # B's API: generating only; no gallery, download, delete, training or settings endpoint to reach A's row
        api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
        assert set(api["named_endpoints"]) <= {"/generate", "/generate_live", "/dub"}, api["named_endpoints"].keys()
        assert api["unnamed_endpoints"] == {}, api["unnamed_endpoints"].keys()

        # A reloads: the gallery and the last settings are A's still
        a.reload()
        a.wait_for_selector("#prompt textarea")
        a.wait_for_function(
            f"document.querySelector('#prompt textarea').value.includes({SECRET_PROMPT[:20]!r})", timeout=30_000
        )
        assert gallery_label(a).endswith("· 1 generations")
        a.wait_for_selector("#gallery-grid img", timeout=30_000)
        assert f"#{a_row.id}" in a.locator("#gallery-grid").inner_text()
        thumb_url = a.locator("#gallery-grid img").first.get_attribute("src")

        # A deletes the entry: its video and thumbnail URLs stop working, for anyone
        a.locator("#gallery-grid img").first.click()
        a.wait_for_function("document.querySelector('#gallery-summary').innerText.includes('seed')")
        a.locator("#gallery-delete").click()
        a.locator("#gallery-delete-confirm").click()  # Delete asks first
        a.wait_for_function(f"document.querySelector('#gallery-summary').innerText.includes('Deleted #{a_row.id}')")
        statuses = {
            "A video": a_context.request.get(video_url).status,
            "B video": b_context.request.get(video_url).status,
            "A thumbnail": a_context.request.get(thumb_url).status,
        }
        print(f"\nB fetching A's video URL: {b_before} before A deletes it, {statuses} after")
        assert all(s in (403, 404) for s in statuses.values()), statuses
        assert all_rows(ctx.store) == []
        assert_clean(audit(ctx.store))
        a_context.close()
        b_context.close()
