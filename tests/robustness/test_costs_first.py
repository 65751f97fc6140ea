"""Costs checked before work (issue 27, items 2 and 4): a dub's cost is read from the headers of its video and voice
and refused before any frame is decoded, in public and in local mode and at every door (the dub, its mask preview);
a flood of previews never takes the places jobs wait in. Through a real server and its raw HTTP API.

Time and memory are printed (bench/ is where they are measured); the tests assert the refusal, its typed message,
and that no frame was decoded before it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest

from engine import dub
from engine.audio import write_wav
from tests.robustness.rawapi import RawClient
from tests.studio_server import running_studio


def colour_mp4(path: Path, width: int, height: int, seconds: float) -> Path:
    from imageio_ffmpeg import get_ffmpeg_exe

    cmd = [get_ffmpeg_exe(), "-y", "-hide_banner", "-v", "error", "-f", "lavfi", "-i",
           f"color=c=gray:s={width}x{height}:d={seconds}:r=25", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def fn_index(url: str, http, api_name: str | None = None, output_elem: str | None = None) -> int:
    config = http.get(url + "config").json()
    if api_name:
        return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
    ids = {c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == output_elem}
    return next(d["id"] for d in config["dependencies"] if ids & set(d["outputs"]) and not d.get("queue", True))


class PeakRSS:
    """The largest rise of this process's resident memory while the block runs (sampled every 5 ms)."""

    def __init__(self):
        self.process, self.rise, self._done = psutil.Process(), 0, threading.Event()

    def _sample(self):
        while not self._done.is_set():
            self.rise = max(self.rise, self.process.memory_info().rss - self.base)
            time.sleep(0.005)

    def __enter__(self):
        self.base = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self.thread.join()


@pytest.fixture()
def no_decode(monkeypatch):
    """Any frame decoded of a dub's source fails the test (the studio runs in this process)."""
    calls = []
    monkeypatch.setattr(dub, "load_video", lambda *a, **k: calls.append(a) or pytest.fail("decoded before refusal"))
    return calls


def dub_values(client: RawClient, video: Path, audio: Path) -> list:
    return [client.upload(video), client.upload(audio), "a person talks", -1, 0.5, 4, 1, True, None]


def send(client: RawClient, values: list):
    return client.generate_json(json.dumps(values), timeout=60)


@pytest.mark.slow
def test_an_oversized_public_dub_is_refused_from_its_headers(tmp_path, no_decode):
    """A 60-s voice (within the voice cap) ping-pongs a 2-s 832×480 source (within the size caps) to 1497 frames."""
    video = colour_mp4(tmp_path / "source.mp4", 832, 480, 2.0)
    voice = write_wav(tmp_path / "voice60.wav", 0.1 * np.sin(np.arange(16000 * 60) / 9.0).astype(np.float32))
    with running_studio(tmp_path / "data", public=True) as (url, ctx):
        with RawClient(url) as client:
            client.fn_index = fn_index(url, client.http, "dub")
            values = dub_values(client, video, voice)
            with PeakRSS() as memory:
                answer = send(client, values)
        print(f"\npublic oversized dub refused in {answer.seconds:.2f} s, RSS rise {memory.rise / 2**20:.0f} MiB")
        assert answer.kind == "output", answer
        assert "This dub would make 1497 frames; this public studio makes at most 97" in answer.data[2]
        assert no_decode == []


@pytest.mark.slow
def test_a_4096_square_source_is_refused_in_local_mode_at_the_dub_and_its_preview(tmp_path, no_decode):
    video = colour_mp4(tmp_path / "huge.mp4", 4096, 4096, 0.2)
    voice = write_wav(tmp_path / "voice.wav", 0.1 * np.sin(np.arange(16000) / 9.0).astype(np.float32))
    with running_studio(tmp_path / "data") as (url, ctx), RawClient(url) as client:
        client.fn_index = fn_index(url, client.http, "dub")
        values = dub_values(client, video, voice)
        with PeakRSS() as memory:
            answer = send(client, values)
        print(f"\nlocal 4096² dub refused in {answer.seconds:.2f} s, RSS rise {memory.rise / 2**20:.0f} MiB")
        assert answer.kind == "output", answer
        assert "huge.mp4 is 4096×4096; the studio takes videos up to 1920×1080 pixels per frame" in answer.data[2]
        preview = fn_index(url, client.http, output_elem="dub-mask")
        body = {"fn_index": preview, "data": [values[0], -1, 0.5, ""], "session_hash": client.session_hash}
        started = time.perf_counter()
        r = client.http.post(url + "gradio_api/run/predict", json=body)
        print(f"local 4096² mask preview refused in {time.perf_counter() - started:.2f} s")
        assert r.status_code == 200, r.text
        assert "huge.mp4 is 4096×4096" in r.json()["data"][1]
        assert no_decode == []


@pytest.mark.slow
def test_a_flood_of_mask_previews_leaves_other_visitors_jobs_admitted(tmp_path, good_media):
    video = colour_mp4(tmp_path / "small.mp4", 320, 240, 1.0)
    with running_studio(tmp_path / "data", public=True) as (url, ctx):
        flooder = RawClient(url)
        preview = fn_index(url, flooder.http, output_elem="dub-mask")
        file = flooder.upload(video)
        body = {"fn_index": preview, "data": [file, -1, 0.5, ""], "session_hash": flooder.session_hash}
        answers: list = []
        stop = threading.Event()

        def flood():
            while not stop.is_set():
                answers.append(flooder.http.post(url + "gradio_api/run/predict", json=body).status_code)

        with ThreadPoolExecutor(12) as pool, RawClient(url) as visitor:
            for _ in range(12):
                pool.submit(flood)
            time.sleep(1.0)
            image, audio = visitor.upload(good_media["image"]), visitor.upload(good_media["audio"])
            job = visitor.generate(["a visitor talks", image, audio, "", "tiny", "custom", 32, 32, 0, 1, 3, "official",
                                    None, None, None, None, None, False, True])  # fmt: skip
            stop.set()
        flooder.close()
        print(f"\n{len(answers)} previews answered during the job: {sorted(set(answers))}")
        assert job.kind == "output" and "done" in job.status, job
        assert answers and set(answers) == {200}, set(answers)


@pytest.mark.slow
def test_an_over_cap_voice_on_public_generate_is_refused_from_its_header(tmp_path, good_media, monkeypatch):
    """Issue 27 item 2 at the generate door: a 60-s voice (within the voice cap) makes 1497 frames; the public frame
    cap (97) refuses it from the voice's header, before the reference image or the voice is decoded."""
    import engine.audio
    import engine.media

    decoded = []
    for module, name in ((engine.audio, "load_audio"), (engine.media, "load_image")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: decoded.append(_n) or pytest.fail("decoded first"))
    voice = write_wav(tmp_path / "voice60.wav", 0.1 * np.sin(np.arange(16000 * 60) / 9.0).astype(np.float32))
    with running_studio(tmp_path / "data", public=True) as (url, ctx), RawClient(url) as client:
        values = ["a man talks", client.upload(good_media["image"]), client.upload(voice), "", "tiny", "custom",
                  64, 64, 0, 4, 1, "official", None, None, None, None, None, False, True]  # fmt: skip
        with PeakRSS() as memory:
            answer = client.generate(values)
        print(f"\npublic over-cap voice on /generate refused in {answer.seconds:.2f} s, "
              f"RSS rise {memory.rise / 2**20:.0f} MiB")  # fmt: skip
        assert answer.kind == "output", answer
        assert "This job would make 1497 frames (59.9 s); this public studio makes at most 97" in answer.data[2]
        assert decoded == []
