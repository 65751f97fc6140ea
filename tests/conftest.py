"""Fixtures shared by every test module (helpers that make media files: tests/media_files.py; the PostgreSQL
server: tests/postgres.py)."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server started for this test session (tests/postgres.py), stopped at its end."""
    from tests.postgres import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL missing: `make test` installs Debian's postgresql package"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the PostgreSQL tests, not skip them
        pytest.skip(message)
    server = PostgresServer(bindir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str | None:
    """The store's database, once per backend: None (SQLite in the data folder, the default) or the URL of a new
    database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture()
def ctx(tmp_path):
    """A local studio on the untrained tiny model over a fresh data folder (its own SQLite gallery)."""
    from studio.context import StudioContext, StudioOptions

    context = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="tiny"))
    yield context
    context.store.close()
