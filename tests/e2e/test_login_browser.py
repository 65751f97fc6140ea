"""Under `--auth` every route but the login needs a login (studio/guards.py): the login page still draws and signs a
user in, in a real Chromium, and the studio's page comes up after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_browser import CHROMIUM, browser  # noqa: F401  (browser: the shared fixture)
from tests.studio_server import running_studio

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing: `make test` installs it"),
]


def test_the_login_page_signs_in_behind_the_route_guard(browser, tmp_path):  # noqa: F811
    with running_studio(tmp_path / "data", auth=[("ada", "pw")]) as (url, ctx):
        page = browser.new_context().new_page()
        page.goto(url)
        page.get_by_label("username").fill("ada")
        page.get_by_label("password").fill("pw")
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("#prompt textarea", timeout=60_000)
        assert page.locator("#prompt textarea").is_visible()
