"""Huge inputs cost the studio nothing (refused from their headers, in well under a second, without decoding), and
Gradio's cache of uploads and served media is aged out instead of growing for ever.

The server runs in this process, so its resident memory is this process's VmRSS (sampled every 5 ms while the
request runs, so the figure is the peak). With `cache_ttl_s=2` the app's `delete_cache` (studio/app.py) sweeps the
cache every few seconds: every upload is sent just before the request that uses it.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import pytest

from tests.robustness import helpers as h
from tests.robustness.rawapi import RawClient
from tests.studio_server import running_studio

MB = 1 << 20


class PeakRSS:
    """The highest VmRSS seen while the block runs."""

    def __enter__(self):
        self.start = self.peak = h.rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, h.rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.end = h.rss_bytes()
        self.peak = max(self.peak, self.end)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / MB


def values(image, audio, **changes) -> list:
    base = {"prompt": "a man talks", "image": image, "audio": audio, "negative_prompt": "", "model": "tiny",
            "resolution": "custom", "height": 32, "width": 32, "frames": 0, "steps": 1, "seed": 1,
            "preset": "official"}  # fmt: skip
    base.update(changes)
    return list(base.values())


def keep_uploading(url: str, folder: Path, stop: threading.Event) -> None:
    """Another visitor uploading small files until `stop` (what a busy page does while it picks faces)."""
    folder.mkdir(exist_ok=True)
    with RawClient(url) as client:
        i = 0
        while not stop.is_set():
            path = folder / f"{i}.png"
            path.write_bytes(i.to_bytes(8, "little") * 100)
            client.upload(path)
            i += 1
            stop.wait(0.01)


def cache_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_huge_inputs_are_cheap_and_the_cache_is_aged_out(tmp_path, good_media, gradio_cache):
    figures: dict = {}
    two_hours = h.sparse_wav(tmp_path / "two-hours.wav", 2 * 3600)
    bomb = h.png_header_only(tmp_path / "144mp.png", 12000, 12000)
    with running_studio(tmp_path / "data", cache_ttl_s=2) as (url, ctx):
        with RawClient(url) as client:

            def image():
                return client.upload(good_media["image"])

            def audio():
                return client.upload(good_media["audio"])

            warm = client.generate(values(image(), audio()))  # loads the pipeline: not part of the figures below
            assert "done" in warm.status, warm.status

            # a 2-hour voice (230 MB of samples): refused from its header
            with PeakRSS() as rss:  # the upload (Gradio's) and the answer (the studio's)
                upload_started = time.perf_counter()
                voice = client.upload(two_hours)
                figures["2-h wav upload s"] = round(time.perf_counter() - upload_started, 2)
                answer = client.generate(values(image(), voice))
            figures["2-h wav answer s"] = round(answer.seconds, 3)
            figures["2-h wav peak RSS growth MB"] = round(rss.growth_mb, 1)
            assert answer.status.startswith("✖ ") and "long" in answer.status, answer.status
            assert h.classify(answer) == h.OWN, answer.status
            assert answer.seconds < 1.0, figures
            assert rss.growth_mb < 200, figures

            # a 166-byte PNG declaring 12000x12000 (144 MP)
            with PeakRSS() as rss:
                big = client.upload(bomb)
                answer = client.generate(values(big, audio()))
            figures["144-MP PNG answer s"] = round(answer.seconds, 3)
            figures["144-MP PNG peak RSS growth MB"] = round(rss.growth_mb, 1)
            assert answer.status.startswith("✖ ") and "megapixels" in answer.status, answer.status
            assert h.classify(answer) == h.OWN, answer.status
            assert answer.seconds < 1.0, figures
            assert rss.growth_mb < 200, figures

            # ~100 small bad uploads and a few good jobs, while other visitors keep uploading: the cache stays
            # bounded instead of growing with them
            rng = random.Random(7)
            sizes, uploaded = [], 0
            others = threading.Thread(target=keep_uploading, args=(url, tmp_path / "others", stop := threading.Event()))
            others.start()
            for i in range(100):
                junk = tmp_path / "junk" / f"{i:03d}.png"
                junk.parent.mkdir(exist_ok=True)
                junk.write_bytes(rng.randbytes(20_000))
                uploaded += junk.stat().st_size
                answer = client.generate(values(client.upload(junk), audio()))
                assert h.classify(answer) == h.OWN, answer.status
                sizes.append(h.folder_bytes(gradio_cache))
            for seed in (11, 12, 13):
                assert "done" in client.generate(values(image(), audio(), seed=seed)).status
                sizes.append(h.folder_bytes(gradio_cache))
            stop.set()
            others.join()
        figures["bytes uploaded by the loop MB"] = round(uploaded / MB, 2)
        figures["cache max in the loop's first half MB"] = round(max(sizes[:50]) / MB, 2)
        figures["cache max in the loop's second half MB"] = round(max(sizes[50:]) / MB, 2)
        assert max(sizes[50:]) <= max(sizes[:50]) + MB, figures  # no growth with the number of requests

        # after the TTL, everything the run left is swept: the 2-hour upload too
        started = time.monotonic()
        deadline = started + ctx.options.cache_ttl_s + 15  # studio/app.py sweeps every max(1, ttl // 4) s
        while time.monotonic() < deadline and (Path(voice["path"]).exists() or h.folder_bytes(gradio_cache) > MB):
            time.sleep(0.5)
        figures["cache after the TTL MB"] = round(h.folder_bytes(gradio_cache) / MB, 3)
        figures["cache files after the TTL"] = len(cache_files(gradio_cache))
        figures["swept within s"] = round(time.monotonic() - started, 1)
        print("\nmemory and cache:", json.dumps(figures))
        out = Path(os.environ.get("HUMO_ROBUSTNESS_DIR") or tmp_path)
        out.mkdir(parents=True, exist_ok=True)
        (out / "memory.json").write_text(json.dumps(figures, indent=1))
        assert not Path(voice["path"]).exists(), "the 2-hour upload is still in the cache after the TTL"
        left = {str(p.relative_to(gradio_cache)): p.stat().st_size for p in cache_files(gradio_cache)}
        assert h.folder_bytes(gradio_cache) <= MB, (figures, {k: v for k, v in left.items() if v > 100_000})
        h.assert_clean(h.audit(ctx.store))
