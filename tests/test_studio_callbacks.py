"""Studio callbacks and the job lifecycle without a browser (tiny model, real SQLite, real ffmpeg)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.generate import GenerationRequest
from studio import eta, tab_gallery, tab_generate
from studio.context import StudioContext, StudioOptions
from studio.jobs import JobProgress, JobResult, run_job, stream_job
from tests.test_pipeline import write_image, write_wav

ROOT = Path(__file__).resolve().parents[1]


def request(tmp_path, **kw) -> GenerationRequest:
    base = dict(
        prompt="a person talks",
        images=[write_image(tmp_path / "face.png")],
        audio=write_wav(tmp_path / "voice.wav", 0.4),
        height=32,
        width=32,
        num_inference_steps=2,
        seed=7,
    )
    base.update(kw)
    return GenerationRequest(**base)


def test_audio_summary_and_mode(tmp_path):
    text, frames = tab_generate.audio_summary(write_wav(tmp_path / "a.wav", 3.96))
    assert frames == 97 and "3.96 s" in text and "97 frames" in text
    bad = tmp_path / "bad.wav"
    bad.write_text("nope")
    text, frames = tab_generate.audio_summary(str(bad))
    assert frames is None and text.startswith("⚠")

    def mode(*inputs):  # the mode the line states, exactly ("TI" must not pass for "TIA")
        return tab_generate.mode_label(*inputs).split("Mode: ")[1].split("*")[0]

    assert mode("x.png", None, "a.wav") == "TIA"
    assert mode(None, [], "a.wav") == "TA"
    assert mode(None, ["y.png"], None) == "TI"
    assert mode(None, None, None) == "T"


def test_guidance_plot_and_estimate(ctx):
    schedule = tab_generate.build_schedule("17b", "TIA", "official", 5.0, None, 5.5, 980)
    frame = tab_generate.guidance_plot_data(schedule, 50)
    text = frame[frame.modality == "text"].sort_values("step")["weight"].tolist()
    assert len(text) == 50 and text[:5] == [5.0] * 5 and text[5:] == [3.0] * 45  # the time-adaptive switch
    assert set(frame.modality) == {"text", "image", "audio"}
    # HuMo-nano samples with flow shift 2: its grid leaves 980 after 2 steps, not 5, and the plot shows that
    nano = tab_generate.guidance_plot_data(schedule, 50, eta.sampling_shift("humo-nano"))
    assert nano[nano.modality == "text"].sort_values("step")["weight"].tolist()[:3] == [5.0, 5.0, 3.0]
    estimate = tab_generate.estimate_text(ctx, "humo-17b", schedule, 50, 97, 480, 832)
    assert "3 transformer passes per step" in estimate and "150" in estimate
    lipsync = tab_generate.build_schedule("17b", "TIA", "tighter lip-sync", None, None, None, None)
    assert lipsync.effective_weights([500])["audio"][0] > schedule.effective_weights([500])["audio"][0]
    with pytest.raises(InputError):
        tab_generate.build_schedule("17b", "TIA", "official", float("nan"), None, 5.5, 980)


def test_sliders_start_on_the_default_models_official_scales(tmp_path):
    """1.7B models (HuMo-nano included) and 17B ones have different official scales (reference §4.8, §4.12)."""
    for model, expected in (("humo-nano", (7.0, 4.0, 7.5)), ("humo-17b", (5.0, 3.0, 5.5))):
        context = StudioContext.create(StudioOptions(data_dir=tmp_path / model, model=model))
        scales = tab_generate.starting_scales(context)
        context.store.close()
        assert (scales["scale_t"], scales["scale_i"], scales["scale_a"]) == expected
        # a model picked later: its preset scales (what the model dropdown's change event puts on the sliders)
        assert tab_generate.preset_scales(context, "official", model, "x.png", None, "a.wav") == expected


def test_error_goes_next_to_the_input():
    updates = tab_generate.error_updates("audio", "The audio is silent.")
    assert updates["audio"].endswith("The audio is silent.") and updates["prompt"] == "" and updates["image"] == ""
    assert tab_generate.error_updates("width", "bad")["height"]


def test_job_done_row_files_and_settings(ctx, tmp_path):
    events = []
    result = run_job(ctx, request(tmp_path), "tiny", on_progress=events.append)
    assert result.status == "done"
    row = ctx.store.get(result.generation_id)
    assert row.status == "done" and row.seed == 7 and row.mode == "TIA"
    assert ctx.store.abs_path(row.video_path).exists() and ctx.store.abs_path(row.thumbnail_path).exists()
    assert not Path(row.video_path).is_absolute()
    # inputs were copied into the data folder, so the entry can be re-run after the uploads are gone
    assert len(row.input_paths) == 2 and all(ctx.store.abs_path(p).exists() for p in row.input_paths)
    assert [e.step for e in events] == [1, 2] and events[-1].total == 2
    # the predicted clean video after step 1 (the first preview measures its cost); none after the last step
    assert events[0].preview_video.endswith(".mp4") and "after step 1/2" in events[0].preview_note
    assert events[-1].preview_video is None
    values = tab_gallery.settings_for_reuse(ctx, row.id)
    assert values["prompt"] == "a person talks" and values["seed"] == 7 and values["steps"] == 2
    assert values["image"].endswith(".png") and values["audio"].endswith(".wav")


def test_job_stop_marks_stopped_and_leaves_no_video(ctx, tmp_path):
    stop = threading.Event()

    def on_progress(event: JobProgress):
        if event.step == 1:
            stop.set()

    result = run_job(ctx, request(tmp_path, num_inference_steps=5), "tiny", stop_event=stop, on_progress=on_progress)
    assert result.status == "stopped"
    row = ctx.store.get(result.generation_id)
    assert row.status == "stopped" and row.video_path is None
    assert not list((ctx.store.data_dir / "videos").glob("*.mp4"))
    assert not list((ctx.store.data_dir / "videos").glob("*tmp*"))


def test_bad_audio_is_refused_before_any_row_or_file(ctx, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is text")
    with pytest.raises(InputError) as err:
        run_job(ctx, request(tmp_path, audio=str(bad)), "tiny")
    assert err.value.field == "audio" and "notes.wav" in str(err.value)
    assert ctx.store.list_generations()[1] == 0
    assert not [p for p in (ctx.store.data_dir / "inputs").rglob("*") if p.is_file()]


def test_validation_before_any_row(ctx, tmp_path):
    with pytest.raises(InputError) as err:
        run_job(ctx, request(tmp_path, height=30), "tiny")
    assert err.value.field == "height"
    assert ctx.store.list_generations()[1] == 0


def test_public_mode_caps(tmp_path):
    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "d", model="tiny", public=True))
    with pytest.raises(InputError) as err:
        run_job(ctx, request(tmp_path, num_inference_steps=80), "tiny")
    assert err.value.field == "steps"


def test_stream_job_yields_progress_then_result(ctx, tmp_path):
    events = list(stream_job(ctx, request(tmp_path, num_inference_steps=3), "tiny"))
    assert isinstance(events[-1], JobResult) and events[-1].status == "done"
    assert [e.step for e in events[:-1]] == [1, 2, 3]


def test_a_closed_stream_stops_its_job_and_keeps_the_ticket_until_the_work_ends(tmp_path):
    """Decision 11: the consumer going away (Gradio closes the generator) stops the job at its next step; the
    owner's admission ticket comes back only when the worker thread has ended, and the turn is free again."""
    from studio import admission

    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "d", model="tiny", public=True))
    try:
        assert admission.admit(ctx, "anon:a", "1.2.3.4") is None
        stream = stream_job(ctx, request(tmp_path, num_inference_steps=20), "tiny", owner="anon:a")
        first = next(stream)
        stream.close()  # the page went away
        admission.release(ctx, "anon:a")  # what on_generate's finally does at once
        assert "already have a job" in admission.admit(ctx, "anon:a", "1.2.3.4")  # the work has not ended yet
        for _ in range(600):
            if ctx.store.get(first.generation_id, owner="anon:a").status != "running":
                break
            threading.Event().wait(0.05)
        threading.Event().wait(0.3)  # the worker thread's last lines (the ticket) after the row's mark
        row = ctx.store.get(first.generation_id, owner="anon:a")
        assert row.status == "stopped" and row.step < 20, (row.status, row.step)
        assert ctx.working == {} and admission.admit(ctx, "anon:a", "1.2.3.4") is None
        with ctx.turn():
            pass  # free again
    finally:
        ctx.store.close()


def test_a_job_waits_queued_for_the_turn_and_a_stop_while_it_waits_ends_it(ctx, tmp_path):
    """One job at a time on the pipelines: a job whose turn has not come stays `queued`; stopped meanwhile, it
    ends `stopped` without ever running."""
    stop, results = threading.Event(), []
    with ctx.turn():  # another job holds the pipelines
        worker = threading.Thread(target=lambda: results.append(run_job(ctx, request(tmp_path), "tiny", stop)))
        worker.start()
        for _ in range(200):
            if ctx.store.list_generations()[1]:
                break
            threading.Event().wait(0.05)
        threading.Event().wait(1.0)
        (row,), _ = ctx.store.list_generations()
        assert row.status == "queued"  # waiting for its turn, not running beside the other job
        stop.set()
        worker.join(30)
    assert results[0].status == "stopped" and ctx.store.get(row.id).started_at is None


def test_gallery_paging_search_delete(ctx, tmp_path):
    ids = [
        run_job(ctx, request(tmp_path, prompt=f"clip number {i}", num_inference_steps=1), "tiny").generation_id
        for i in range(3)
    ]
    items, row_ids, label, pages = tab_gallery.gallery_page(ctx, 1)
    assert row_ids == ids[::-1] and "3 generations" in label and pages == 1
    items, row_ids, _, _ = tab_gallery.gallery_page(ctx, 1, "number 1")
    assert row_ids == [ids[1]]
    video, settings, summary = tab_gallery.detail(ctx, ids[0])
    assert video.endswith(".mp4") and '"seed": 7' in settings
    video_file = Path(video)
    assert "Deleted" in tab_gallery.delete_generation(ctx, ids[0])
    assert not video_file.exists()
    assert tab_gallery.gallery_page(ctx, 1)[1] == ids[:0:-1]


def test_crash_recovery_on_start(tmp_path):
    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "d", model="tiny"))
    row = ctx.store.create_generation(prompt="x", mode="T", model_id="tiny")
    ctx.store.mark_running(row.id)
    ctx.store.close()
    ctx2 = StudioContext.create(StudioOptions(data_dir=tmp_path / "d", model="tiny"))
    assert ctx2.store.get(row.id).status == "failed"


def test_app_builds_with_demo_banner(ctx):
    from studio.app import DEMO_BANNER, build_app

    demo = build_app(ctx)
    config = demo.get_config_file()
    texts = [c.get("props", {}).get("value") for c in config["components"]]
    assert DEMO_BANNER in texts
    assert any(d.get("api_name") == "generate" for d in config["dependencies"])


def test_long_video_job_reports_windows(ctx, tmp_path):
    events = []
    req = request(
        tmp_path, audio=write_wav(tmp_path / "long.wav", 1.4), num_inference_steps=2, window_frames=17, window_overlap=2
    )
    result = run_job(ctx, req, "tiny", on_progress=events.append)
    assert result.status == "done" and result.settings["num_frames"] == 33  # 1.4 s -> 35 -> 33 frames
    assert any("window 2/" in e.message for e in events)
    assert "window" in tab_generate.format_progress(events[-1])


def test_long_video_job_can_be_stopped(ctx, tmp_path):
    stop = threading.Event()
    stop.set()  # pressed before the first window finishes
    req = request(tmp_path, audio=write_wav(tmp_path / "long.wav", 1.4), num_inference_steps=3, window_frames=17)
    result = run_job(ctx, req, "tiny", stop_event=stop)
    assert result.status == "stopped" and ctx.store.get(result.generation_id).video_path is None


@pytest.mark.dist
def test_worker_group_job_equals_single_process_and_reports_progress(tmp_path):
    """--gpus 2 in the studio: a torchrun worker group (gloo here) writes the same video; rank 0 reports steps."""
    import numpy as np

    from engine.media import read_video_frames

    single = StudioContext.create(StudioOptions(data_dir=tmp_path / "one", model="tiny"))
    group = StudioContext.create(StudioOptions(data_dir=tmp_path / "two", model="tiny", gpus=2))
    req = request(tmp_path, num_inference_steps=3)
    a = run_job(single, req, "tiny")
    events = []
    b = run_job(group, req, "tiny", on_progress=events.append)
    assert a.status == b.status == "done", b.error
    assert [e.step for e in events] == [1, 2, 3] and "2 GPUs" in events[-1].message
    np.testing.assert_array_equal(read_video_frames(a.video_path), read_video_frames(b.video_path))
    assert group.store.get(b.generation_id).seed == 7


@pytest.mark.dist
def test_worker_group_stop(tmp_path):
    group = StudioContext.create(StudioOptions(data_dir=tmp_path / "two", model="tiny", gpus=2))
    stop = threading.Event()
    result = run_job(group, request(tmp_path, num_inference_steps=400, height=64, width=64), "tiny", stop_event=stop,
                     on_progress=lambda e: stop.set() if e.step >= 2 else None)  # fmt: skip
    assert result.status == "stopped" and group.store.get(result.generation_id).video_path is None
    assert not list((group.store.data_dir / "videos").glob("*.mp4"))
