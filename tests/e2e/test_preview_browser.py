"""Previews you can judge, in real headless Chromium (issue 29): on HuMo-nano the predicted clean video plays in
the result area, with its cost beside it, before the job ends; a LoRA added to the library once is picked by name
and recorded by name + sha256."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.test_browser import CHROMIUM, browser, set_number, shots_dir, video_seconds  # noqa: F401 (browser: the fixture)
from tests.studio_server import running_studio

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not shutil.which(CHROMIUM) and not CHROMIUM.startswith("/"), reason="chromium missing"),
]


def test_preview_video_plays_before_the_job_ends_and_a_library_lora_is_picked_by_name(browser, tmp_path):  # noqa: F811
    from engine import nano

    if not nano.is_present():
        pytest.skip("assets/humo-nano missing")
    from safetensors.torch import save_file

    from tests.test_lora import lora_tensors

    case = json.loads((ROOT / "assets/examples/cases.json").read_text())["nano"]
    shots = shots_dir(tmp_path)
    with running_studio(tmp_path / "data", model="humo-nano", device="cpu") as (url, ctx):
        lora = tmp_path / "my-style.safetensors"
        tensors = lora_tensors(ctx.pipeline("humo-nano"))
        save_file({f"transformer.{n}.lora_{x}.weight": t * 0.1 for n, (a, b) in tensors.items()
                   for x, t in (("A", a), ("B", b))}, str(lora))  # fmt: skip
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector("#prompt textarea")
        # the library: add the file once under a name, with its match report
        page.get_by_text("Advanced options").click()
        page.get_by_text("LoRA library (add once").click()
        page.locator("#lora-lib-file input[type=file]").set_input_files(str(lora))
        page.locator("#lora-lib-name input").fill("style")
        page.locator("#lora-lib-add").click()
        page.wait_for_function("document.querySelector('#lora-lib-table').innerText.includes('style')", timeout=60_000)
        assert "3 of 3 modules apply" in page.locator("#lora-lib-table").inner_text()
        page.locator("#lora-library input").click()
        page.get_by_role("option", name="style").click()
        page.keyboard.press("Escape")
        # a job long enough for previews to land before it ends
        page.locator("#prompt textarea").fill(case["prompt"])
        page.locator("#image input[type=file]").set_input_files(str(ROOT / case["img_paths"][0]))
        page.locator("#audio input[type=file]").set_input_files(str(ROOT / case["audio_path"]))
        page.wait_for_function("document.querySelector('#mode').innerText.includes('TIA')", timeout=60_000)
        set_number(page, "steps", 12)  # the first preview lands after step 1
        page.locator("#generate").click()
        duration = video_seconds(page, "preview", timeout=240_000)
        rows, _ = ctx.store.list_generations()
        assert rows[0].status == "running"  # the preview plays while the job goes on
        assert duration > 0
        label = page.locator("#preview").inner_text()
        assert "predicted clean video after step" in label and "of a" in label and "s step" in label
        page.screenshot(path=str(shots / "preview-01-playing.png"), full_page=False)
        page.wait_for_function(
            "['done', 'failed', 'stopped'].some(w => document.querySelector('#status').innerText.includes(w))",
            timeout=600_000,
        )
        rows, _ = ctx.store.list_generations()
        assert rows[0].status == "done", rows[0].error
        entry = ctx.store.get(rows[0].id).settings["advanced"]["loras"][0]
        assert entry["file"].startswith("library:style@") and entry["scale"] == 1.0
        page.screenshot(path=str(shots / "preview-02-done.png"), full_page=False)
