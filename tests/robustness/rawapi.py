"""A small raw-HTTP client of the studio's `/generate` API (what gradio_client does, without its JSON encoder).

gradio_client cannot send NaN, inf or a lone surrogate; this posts the JSON text itself to
`/gradio_api/queue/join` (with a session hash: each session is its own visitor in public mode) and reads the
answer from the `/gradio_api/queue/data` event stream.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

N_INPUTS = 19  # API_INPUTS of studio/tab_generate.py


@dataclass
class Answer:
    """What the studio answered: `kind` is "validation" (refused at arrival, HTTP 422), "queue_full" (503),
    "http" (another HTTP status), "output" (the job's last output), "error" (the event failed), "timeout"."""

    kind: str
    http_status: int | None = None
    message: str = ""  # the validator's message, or the event's error text
    data: list | None = None  # output: (video, gallery id, status, preview, *error boxes)
    seconds: float = 0.0
    raw: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.data and len(self.data) > 2 and isinstance(self.data[2], str):
            return self.data[2]
        return ""

    @property
    def error_boxes(self) -> list[str]:
        return [b for b in (self.data or [])[4:] if isinstance(b, str)]

    @property
    def video(self):
        return (self.data or [None])[0]

    @property
    def gallery_id(self):
        return (self.data or [None, None])[1]


class RawClient:
    """One visitor (one session hash) of a running studio."""

    def __init__(self, url: str, session_hash: str | None = None, timeout: float = 120.0, fn_index: int | None = None,
                 http: httpx.Client | None = None, headers: dict | None = None):  # fmt: skip
        self.url = url.rstrip("/") + "/"
        self.session_hash = session_hash or secrets.token_hex(8)
        self.timeout = timeout
        self._own_http = http is None
        assert http is None or headers is None, "headers go with a client of this visitor's own"
        self.http = http or httpx.Client(timeout=timeout, headers=headers)
        self.fn_index = generate_fn_index(self.url, self.http) if fn_index is None else fn_index

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def upload(self, path: str | Path, name: str | None = None) -> dict:
        """Upload a file as the page does; returns its FileData value."""
        path = Path(path)
        name = name or path.name
        with path.open("rb") as f:
            r = self.http.post(self.url + "gradio_api/upload", files=[("files", (name, f))])
        r.raise_for_status()
        return {"path": r.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def generate_json(self, data_json: str, timeout: float | None = None) -> Answer:
        """Submit `data_json` (the JSON text of the 19 inputs' list) and wait for the answer."""
        started = time.perf_counter()
        head = json.dumps({"fn_index": self.fn_index, "session_hash": self.session_hash, "event_data": None,
                           "trigger_id": None})  # fmt: skip
        body = '{"data": ' + data_json + ", " + head[1:]
        r = self.http.post(
            self.url + "gradio_api/queue/join",
            content=body.encode("utf-8"),
            headers={"content-type": "application/json"},
        )
        if r.status_code == 422:
            return Answer("validation", 422, validation_message(r), seconds=time.perf_counter() - started, raw=r.text)
        if r.status_code == 503:
            return Answer("queue_full", 503, r.text, seconds=time.perf_counter() - started, raw=r.text)
        if r.status_code != 200:
            return Answer("http", r.status_code, r.text[:2000], seconds=time.perf_counter() - started, raw=r.text)
        event_id = r.json()["event_id"]
        return self._read(event_id, started, timeout or self.timeout)

    def join_and_leave(self, values: list) -> str:
        """Queue a job, read the first message of its stream and go away (a tab closed while the job waits);
        returns the event id."""
        values = list(values) + [None] * (N_INPUTS - len(values))
        head = json.dumps({"fn_index": self.fn_index, "session_hash": self.session_hash, "event_data": None,
                           "trigger_id": None})  # fmt: skip
        body = '{"data": ' + json.dumps(values) + ", " + head[1:]
        r = self.http.post(self.url + "gradio_api/queue/join", content=body.encode(),
                           headers={"content-type": "application/json"})  # fmt: skip
        r.raise_for_status()
        with self.http.stream(
            "GET", self.url + "gradio_api/queue/data", params={"session_hash": self.session_hash}
        ) as s:
            for _ in s.iter_text():
                break
        return r.json()["event_id"]

    def generate(self, values: list, timeout: float | None = None) -> Answer:
        """Submit Python values (NaN/inf floats are sent as JSON NaN/Infinity; padded with None to 19)."""
        values = list(values) + [None] * (N_INPUTS - len(values))
        return self.generate_json(json.dumps(values, allow_nan=True), timeout)

    def _read(self, event_id: str, started: float, timeout: float) -> Answer:
        last_output = None
        deadline = started + timeout
        with self.http.stream(
            "GET", self.url + "gradio_api/queue/data", params={"session_hash": self.session_hash}, timeout=timeout
        ) as stream:
            buffer = ""
            for chunk in stream.iter_text():
                buffer += chunk
                while "\n\n" in buffer:
                    line, buffer = buffer.split("\n\n", 1)
                    line = line.strip()
                    if not line.startswith("data:"):
                        continue
                    msg = json.loads(line[5:])
                    if msg.get("msg") in ("heartbeat", "close_stream") or msg.get("event_id") != event_id:
                        continue
                    if msg["msg"] == "process_generating":
                        last_output = msg.get("output")
                    if msg["msg"] == "process_completed":
                        output = msg.get("output") or {}
                        seconds = time.perf_counter() - started
                        if not msg.get("success", False) or "error" in output:
                            text = output.get("error")
                            return Answer("error", 200, "" if text is None else str(text), seconds=seconds, raw=msg)
                        data = output.get("data")
                        if not data and last_output:  # generators: the final message may repeat nothing
                            data = last_output.get("data")
                        return Answer("output", 200, data=data, seconds=seconds, raw=msg)
                if time.perf_counter() > deadline:
                    break
        return Answer("timeout", seconds=time.perf_counter() - started)


def generate_fn_index(url: str, http: httpx.Client | None = None) -> int:
    """The dependency id of the `/generate` API (what gradio_client calls fn_index)."""
    config = (http or httpx).get(url.rstrip("/") + "/config").json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == "generate")


def validation_message(response: httpx.Response) -> str:
    """The refusal text of a 422 validation answer (the first invalid parameter's message)."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text
    if isinstance(detail, list):
        messages = [d.get("message", "") for d in detail if isinstance(d, dict) and d.get("is_valid") is False]
        return " ".join(m for m in messages if m)
    return str(detail)
