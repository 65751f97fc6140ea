"""The studio's live jobs (issue #30): chunks reach the page as they finish, Stop keeps them (tiny model, CPU)."""

from __future__ import annotations

import threading

import pytest

from engine import media
from engine.errors import InputError
from engine.generate import GenerationRequest
from studio import live_job
from studio.context import StudioContext, StudioOptions
from studio.jobs import JobProgress
from tests.media_files import write_image, write_wav


@pytest.fixture()
def ctx(tmp_path, monkeypatch):
    # the tiny test model stands in for a model measured fast enough here; 17-frame chunks keep it quick
    monkeypatch.setitem(live_job.MEASURED_CPU_RTF, "tiny", live_job.LIVE_MIN_RTF)
    context = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="tiny", device="cpu"))
    context.pipeline("tiny").default_frames = 17
    yield context
    context.store.close()


def _request(tmp_path) -> GenerationRequest:
    return GenerationRequest(prompt="a person talks", images=[str(write_image(tmp_path / "face.png"))],
                             audio=str(write_wav(tmp_path / "voice.wav", 1.5)), height=32, width=32,
                             num_inference_steps=2, seed=7)  # fmt: skip


def test_live_job_hands_every_chunk_over_before_the_end(ctx, tmp_path):
    seen = []

    def on_progress(event):
        if isinstance(event, live_job.ChunkReady):  # the segment is playable when the page gets it
            info = media.probe(event.segment)
            seen.append((event.index, info["video"]["frames"], info["audio"] is not None))
            row = ctx.store.get(event.generation_id)
            assert row.status == "running"  # the job is not over yet

    result = live_job.run_live_job(ctx, _request(tmp_path), "tiny", on_progress=on_progress)
    assert result.status == "done"
    assert seen == [(0, 17, True), (1, 12, True), (2, 8, True)]
    row = ctx.store.get(result.generation_id)
    assert row.status == "done" and row.thumbnail_path
    assert media.probe(result.video_path)["video"]["frames"] == 37
    assert media.read_settings(result.video_path)["live"]["chunk_frames"] == 17


def test_stop_keeps_the_finished_chunks_as_a_playable_stopped_row(ctx, tmp_path):
    stop = threading.Event()
    steps = []

    def on_progress(event):
        if isinstance(event, JobProgress):
            steps.append(event.step)
        if isinstance(event, live_job.ChunkReady) and event.index == 0:
            stop.set()  # Stop while the second chunk is being made

    result = live_job.run_live_job(ctx, _request(tmp_path), "tiny", stop_event=stop, on_progress=on_progress)
    assert result.status == "stopped"
    row = ctx.store.get(result.generation_id)
    assert row.status == "stopped" and row.video_path and row.thumbnail_path
    video = ctx.store.abs_path(row.video_path)
    info = media.probe(video)
    assert info["video"]["frames"] == 17 and info["audio"] is not None  # the first chunk, with its voice
    assert len(media.read_video_frames(video)) == 17
    assert media.read_settings(video)["live"]["frames_kept"] == 17


def test_live_is_refused_for_a_model_not_measured_fast_enough(tmp_path):
    context = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="tiny", device="cpu"))
    try:
        with pytest.raises(InputError) as err:
            live_job.run_live_job(context, _request(tmp_path), "tiny")
        assert err.value.field == "model" and "humo-nano-4step" in str(err.value)
        assert context.store.list_generations(owner="local")[1] == 0  # refused before a row exists
    finally:
        context.store.close()
