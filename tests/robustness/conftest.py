"""Fixtures of the robustness tests: a Gradio cache folder of each test module's own (small valid inputs:
tests/conftest.py's `good_media`)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module", autouse=True)
def gradio_cache(tmp_path_factory) -> Path:
    """GRADIO_TEMP_DIR of this module alone (set before any server starts), so cache sizes measured are ours."""
    folder = tmp_path_factory.mktemp("gradio-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(folder))
        yield folder
