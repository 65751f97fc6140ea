"""Fixtures shared by every test module (helpers that make media files: tests/media_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media_files import write_image, write_wav


@pytest.fixture(scope="session")
def good_media(tmp_path_factory) -> dict[str, Path]:
    """A 64x64 face and 0.3 s / 0.5 s voices: a tiny job from them takes about a second on CPU."""
    folder = tmp_path_factory.mktemp("good-media")
    return {
        "image": Path(write_image(folder / "face.png", size=(64, 64))),
        "audio": Path(write_wav(folder / "voice.wav", 0.3)),
        "audio05": Path(write_wav(folder / "voice05.wav", 0.5)),
    }
