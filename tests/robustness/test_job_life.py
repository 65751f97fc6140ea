"""A job's life belongs to the studio, not to the page (issue 27, item 1; DESIGN.md decision 11).

Through a real server and its raw HTTP API: a visitor starts a long job, POSTs Gradio's `/cancel` (or closes its
stream) mid-job and joins again at once; a second visitor's job waits behind. The pipeline must never run two
jobs: at most one row is `running` at any moment, the cancelled job ends `stopped` at its next step, the others
`done`, and no row holds a raw exception.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.robustness.helpers import all_rows
from tests.robustness.rawapi import RawClient
from tests.studio_server import running_studio

LONG_STEPS = 200  # the most the API takes: a tiny job of this many steps runs for several seconds on CPU


def values(client: RawClient, media, steps: int) -> list:
    image, audio = client.upload(media["image"]), client.upload(media["audio"])
    return ["a visitor talks", image, audio, "", "tiny", "custom", 32, 32, 0, steps, 3, "official", None, None, None,
            None, None, False, True]  # fmt: skip


def join(client: RawClient, data: list) -> str:
    body = {"data": data, "fn_index": client.fn_index, "session_hash": client.session_hash, "event_data": None,
            "trigger_id": None}  # fmt: skip
    r = client.http.post(client.url + "gradio_api/queue/join", json=body)
    r.raise_for_status()
    return r.json()["event_id"]


def wait_running(ctx, timeout: float = 60.0) -> int:
    """The id of the first row that reached `running` with at least one step done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [r for r in all_rows(ctx.store) if r.status == "running" and (r.step or 0) >= 1]
        if running:
            return running[0].id
        time.sleep(0.05)
    raise AssertionError("no job started running")


class Stream:
    """A page's event stream (`/gradio_api/queue/data`, opened after its join) read in a thread until closed:
    Gradio runs a session's events only while its stream is open."""

    def __init__(self, client: RawClient):
        self.client, self.closed = client, threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        c = self.client
        with (
            httpx.Client(timeout=300) as http,
            http.stream("GET", c.url + "gradio_api/queue/data", params={"session_hash": c.session_hash}) as stream,
        ):
            for _ in stream.iter_text():
                if self.closed.is_set():
                    return  # leaving the block closes the connection: the page went away

    def close(self):
        self.closed.set()
        self.thread.join(30)


class RunningWatch:
    """Samples the gallery every 20 ms: the most rows `running` at one moment."""

    def __init__(self, ctx):
        self.ctx, self.most, self._stop = ctx, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.most = max(self.most, sum(r.status == "running" for r in all_rows(self.ctx.store)))
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def settle(ctx, count: int, timeout: float = 180.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = all_rows(ctx.store)
        if len(rows) >= count and all(r.status in ("done", "failed", "stopped") for r in rows):
            return rows
        time.sleep(0.1)
    return all_rows(ctx.store)


@pytest.mark.slow
@pytest.mark.parametrize("leave", ["cancel", "close"])
def test_a_cancelled_job_stops_and_the_next_jobs_wait_their_turn(tmp_path, good_media, leave):
    with running_studio(tmp_path / "data") as (url, ctx), RawClient(url) as first, RawClient(url) as second:
        long_job = values(first, good_media, LONG_STEPS)
        with RunningWatch(ctx) as watch:
            event = join(first, long_job)
            page = Stream(first)
            gid = wait_running(ctx)
            if leave == "cancel":
                body = {"session_hash": first.session_hash, "fn_index": first.fn_index, "event_id": event}
                assert first.http.post(url + "gradio_api/cancel", json=body).status_code == 200
            page.close()  # the page goes away (after its cancel, or without one)
            again = threading.Thread(target=lambda: first.generate(values(first, good_media, 3)))
            behind = threading.Thread(target=lambda: second.generate(values(second, good_media, 3)))
            again.start()
            behind.start()
            again.join(180)
            behind.join(180)
            rows = settle(ctx, 3)
        statuses = {r.id: r.status for r in rows}
        assert statuses[gid] == "stopped", statuses
        assert sorted(s for i, s in statuses.items() if i != gid) == ["done", "done"], statuses
        assert watch.most == 1, f"{watch.most} rows were running at once"
        for row in rows:
            text = json.dumps(row.to_dict())
            assert "Traceback" not in text and "Error:" not in text, text
