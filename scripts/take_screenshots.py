"""Retake the README's screenshots: the studio on HuMo-nano in Debian's chromium, at 1400 px and at 420 px.

    .venv/bin/python scripts/take_screenshots.py [--out assets/screenshots]

Generate tab after one click on the bundled example and Generate (seed 0, the README's example), the same page on a
phone-sized window, and the gallery with that video at both widths.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.test_browser import ARGS, CHROMIUM, generated_video_seconds  # noqa: E402
from tests.studio_server import running_studio  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "assets" / "screenshots"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import json

    from playwright.sync_api import sync_playwright

    case = json.loads((ROOT / "assets/examples/cases.json").read_text())["nano"]
    with tempfile.TemporaryDirectory() as tmp, running_studio(Path(tmp) / "data", model=None) as (url, ctx):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#prompt textarea")
            page.get_by_text(case["prompt"][:40]).first.click()  # the example row (seed 0 comes with it)
            page.wait_for_function("document.querySelector('#audio-info').innerText.includes('frames')")
            page.locator("#generate").click()
            generated_video_seconds(page, timeout=600_000)
            page.evaluate(
                "(() => { const v = document.querySelector('#result-video video'); v.pause(); v.currentTime = 1.2 })()"
            )
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "nano-example.png"))  # what one sees without scrolling
            page.screenshot(path=str(out / "generate.png"), full_page=True)
            page.set_viewport_size({"width": 420, "height": 900})
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "generate-420.png"), full_page=True)
            page.set_viewport_size({"width": 1400, "height": 1000})
            page.get_by_role("tab", name="Gallery").click()
            page.wait_for_selector("#gallery-grid img", timeout=30_000)
            page.locator("#gallery-grid img").first.click()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(out / "gallery.png"), full_page=True)
            page.set_viewport_size({"width": 420, "height": 900})  # the phone grid and the bounded detail
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "gallery-420.png"), full_page=True)
            browser.close()
        print(f"screenshots in {out}: {sorted(p.name for p in out.glob('*.png'))} ({ctx.default_model})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
