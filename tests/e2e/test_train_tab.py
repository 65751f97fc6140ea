"""The Train tab in headless Chromium: launch a run on a synthetic cache, see it train, stop it, resume it."""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_browser import browser, shots_dir  # noqa: F401  (fixture)
from tests.studio_server import running_studio

pytestmark = pytest.mark.e2e


@pytest.fixture()
def cache(tmp_path):
    from engine.registry import load_pipeline
    from training.cache import build_cache
    from training.raw import build_clips
    from training.synth import make_synth_dataset

    src = make_synth_dataset(tmp_path / "src", num_clips=2, frames=17, size=(64, 64))
    build_clips(src, tmp_path / "clips", frames=17, size=(64, 64), progress=False)
    build_cache(load_pipeline("tiny"), tmp_path / "clips", tmp_path / "cache", progress=False)
    return tmp_path / "cache"


def test_launch_stop_resume(browser, cache, tmp_path):  # noqa: F811
    shots = shots_dir(tmp_path)
    with running_studio(tmp_path / "data") as (url, ctx):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        page.locator("#train-name textarea, #train-name input").first.fill("e2e-run")
        page.locator("#train-dataset textarea, #train-dataset input").first.fill(str(cache))
        steps = page.locator("#train-steps input").first
        steps.fill("100000")
        page.locator("#train-launch").click()
        page.wait_for_function("document.querySelector('#train-message').innerText.includes('started')", timeout=30_000)
        # the run trains: the status shows steps advancing
        page.wait_for_function(
            "document.querySelector('#train-status').innerText.match(/step [0-9]+\\//)", timeout=120_000
        )
        # the loss plot draws a line: a stroked path (an empty first frame used to leave it without a colour)
        page.wait_for_function(
            "(() => { const p = document.querySelector('#train-plot g.mark-line path');"
            " return p && p.getAttribute('stroke') && (p.getAttribute('d') || '').includes('L') })()",
            timeout=60_000,
        )
        page.screenshot(path=str(shots / "train-running.png"), full_page=True)
        page.locator("#train-stop").click()
        page.wait_for_function("document.querySelector('#train-message').innerText.includes('stopped')", timeout=90_000)
        run_dir = ctx.store.data_dir / "runs" / "e2e-run"
        checkpoints = list(run_dir.glob("checkpoints/step-*/state.pt"))
        assert checkpoints, "stopping must keep a checkpoint"
        stopped_at = max(int(p.parent.name.split("-")[1]) for p in checkpoints)
        page.locator("#train-resume").click()
        page.wait_for_function("document.querySelector('#train-message').innerText.includes('started')", timeout=30_000)
        deadline = time.time() + 60
        while time.time() < deadline and "resumed from" not in (run_dir / "train.log").read_text():
            time.sleep(0.5)
        assert f"at step {stopped_at}" in (run_dir / "train.log").read_text()
        page.locator("#train-stop").click()
        page.wait_for_function("document.querySelector('#train-message').innerText.includes('stopped')", timeout=90_000)
