"""A studio server on a free port for the API and browser tests (tiny model by default, temporary data folder)."""

from __future__ import annotations

import socket
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_studio(data_dir: Path, public: bool = False, model: str | None = "tiny", **options):
    """Yields (url, ctx) of a launched studio (the app's own launch options); closes it afterwards.
    `model=None`: the studio's own default; `options`: more StudioOptions fields."""
    from studio.app import create_app, launch_options
    from studio.context import StudioOptions

    demo, ctx = create_app(StudioOptions(data_dir=data_dir, model=model, public=public, **options))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(ctx))
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield url, ctx
    finally:
        demo.close()
        ctx.store.close()
