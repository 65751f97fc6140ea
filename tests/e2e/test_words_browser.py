"""Words in headless Chromium: the gallery at phone width (its page label on one line, Delete asks first) and the
Models tab's download (its size confirmed first, Cancel)."""

from __future__ import annotations

import pytest

from studio.jobs import run_job
from tests.e2e.test_browser import browser, shots_dir  # noqa: F401  (fixture)
from tests.studio_server import running_studio
from tests.test_studio_callbacks import request

pytestmark = pytest.mark.e2e


def test_page_label_at_420px_and_delete_asks_first(browser, tmp_path):  # noqa: F811
    with running_studio(tmp_path / "data") as (url, ctx):
        row = run_job(ctx, request(tmp_path), "tiny")
        page = browser.new_page(viewport={"width": 420, "height": 900})
        page.goto(url)
        page.get_by_role("tab", name="Gallery").click()
        label = page.locator("#gallery-page-label p").first
        page.wait_for_function("document.querySelector('#gallery-page-label').innerText.includes('generations')")
        page.screenshot(path=str(shots_dir(tmp_path) / "gallery-420.png"), full_page=True)
        box = label.bounding_box()
        line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('#gallery-page-label p')).lineHeight)")
        assert box["width"] > 120 and box["height"] < 2.5 * line, (box, line)  # was one letter per line

        page.locator("#gallery-grid img").first.click()
        page.wait_for_function("document.querySelector('#gallery-summary').innerText.includes('seed')")
        page.locator("#gallery-delete").click()
        question = page.locator("#gallery-delete-question")
        question.wait_for(state="visible")
        assert f"Delete #{row.generation_id}" in question.inner_text()
        page.locator("#gallery-delete-cancel").click()
        question.wait_for(state="hidden")
        assert ctx.store.get(row.generation_id).status == "done"  # kept
        page.locator("#gallery-delete").click()
        page.locator("#gallery-delete-confirm").click()
        page.wait_for_function(
            f"document.querySelector('#gallery-summary').innerText.includes('Deleted #{row.generation_id}')"
        )
        assert ctx.store.list_generations()[1] == 0


def test_download_confirms_its_size_and_can_be_cancelled(browser, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HUMO_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with running_studio(tmp_path / "data") as (url, _):
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.get_by_role("tab", name="Models").click()
        page.locator("#models-download").click()
        page.wait_for_function("document.querySelector('#models-status').innerText.includes('GB for humo-1.7b?')")
        assert "free" in page.locator("#models-status").inner_text()
        confirm, cancel = page.locator("#models-download-confirm"), page.locator("#models-download-cancel")
        assert confirm.is_visible() and cancel.is_visible()  # nothing starts before the size is confirmed
        cancel.click()
        confirm.wait_for(state="hidden")
        assert "cancelled" in page.locator("#models-status").inner_text()
