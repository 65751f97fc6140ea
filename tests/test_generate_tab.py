"""The Generate tab's parts without a browser: the schedule editor (engine schedules), the plot, settings that
round-trip through the gallery and through an mp4, the queue list, variations (tiny model, real SQLite/ffmpeg)."""

from __future__ import annotations

import re

import pytest

from engine import guidance as g
from engine.errors import InputError
from engine.schedulers import official_timesteps
from studio import eta, guidance_editor, tab_gallery, tab_generate
from studio.jobs import run_job
from studio.queue_view import JobBoard
from tests.test_pipeline import write_image, write_wav

GRID = [int(t) for t in official_timesteps(50, 5.0)]


# ---------------------------------------------------------------------------------------------- engine schedules
@pytest.mark.parametrize("variant", ["17b", "1.7b"])
@pytest.mark.parametrize("mode", ["TIA", "TA", "TI", "T"])
@pytest.mark.parametrize("preset", ["official", "tighter lip-sync", "faster"])
def test_a_curve_without_keyframes_is_the_preset_itself(variant, mode, preset):
    made = g.curve_schedule(preset, variant, mode, GRID).to_dict()
    assert made.pop("source")["preset"] == preset
    assert made == g.preset_schedule(preset, variant, mode).to_dict()


def test_keyframes_give_each_step_the_presets_phase_for_its_own_scales():
    keys = [g.Keyframe("11", scale_a=2.0, segment="linear"), g.Keyframe("t500", scale_t=3.0)]
    schedule = g.curve_schedule("official", "17b", "TIA", GRID, {"scale_t": 5.0, "scale_a": 5.5}, keys).validate()
    curve = g.scale_curve({"scale_t": 5.0, "scale_i": 3.0, "scale_a": 5.5}, keys, GRID)
    assert [c["scale_a"] for c in curve[:11]] == pytest.approx([5.5 - 0.35 * i for i in range(11)])  # the ramp
    late = next(i for i, t in enumerate(GRID) if t <= 500)
    assert curve[late - 1]["scale_t"] == 5.0 and curve[late]["scale_t"] == 3.0  # held, then the jump
    for t, scales in zip(GRID, curve, strict=True):
        expected = g.preset_schedule("official", "17b", "TIA", **scales).phase_for(t).weights
        got = schedule.phase_for(t).weights
        assert got.keys() == expected.keys() and all(got[b] == pytest.approx(w) for b, w in expected.items()), t
    assert 980 in [p.above for p in schedule.phases]  # the official switch survives as a boundary
    assert schedule.preset == "custom" and len(schedule.phases) < len(GRID)  # equal steps merged
    back = g.GuidanceSchedule.from_dict(schedule.to_dict())
    assert back.to_dict() == schedule.to_dict()


def test_bad_keyframes_say_what_to_change():
    with pytest.raises(InputError, match="outside the run"):
        g.curve_schedule("official", "17b", "TIA", GRID[:8], None, [g.Keyframe("20", scale_t=2.0)])
    with pytest.raises(InputError, match="hold' or 'linear"):
        g.Keyframe("3", segment="smooth")
    with pytest.raises(InputError, match="row 2"):
        guidance_editor.parse_keyframes({"data": [["3", 2, None, None, "hold"], ["x", None, None, None, ""]]})
    with pytest.raises(InputError, match="row 1 text"):
        guidance_editor.parse_keyframes([["3", "lots", None, None, "hold"]])


# ---------------------------------------------------------------------------------------------- editor view
def test_any_edit_turns_the_label_to_custom(ctx):
    def label(**kw):
        values = dict(preset="official", scale_t=7.0, scale_i=4.0, scale_a=7.5, switch=980, keyframes=[])
        values.update(kw)
        return tab_generate.guidance_view(ctx, "humo-nano", "x.png", None, "a.wav", *values.values(), 8, 0, 64, 64)[2]

    assert label() == "**Schedule: official**"
    assert "custom" in label(scale_a=9.0)
    assert "custom" in label(keyframes=[["4", None, None, 2.0, "linear"]])
    assert label(switch=950) == "**Schedule: official**"  # HuMo-nano (1.7B) has no switch: nothing changed


def test_controls_that_cannot_apply_are_disabled_with_a_reason(ctx):
    reasons = guidance_editor.applicable("official", "17b", "TIA")
    assert reasons["scale_t"] is None and reasons["scale_a"] is None and reasons["switch"] is None
    assert "jointly" in reasons["scale_i"]
    assert guidance_editor.applicable("official", "1.7b", "TIA")["switch"]  # 1.7B: no switch
    faster = guidance_editor.applicable("faster", "1.7b", "TIA")
    assert faster["scale_t"] is None and "faster" in faster["scale_i"] and "faster" in faster["scale_a"]
    updates = tab_generate.guidance_controls(ctx, "official", "humo-nano", None, None, "a.wav")
    assert [u["interactive"] for u in updates[:4]] == [True, False, True, False]  # TA on 1.7B
    assert "no reference image" in updates[4]


def test_plot_shows_the_schedule_the_grid_and_the_passes():
    nano_grid = [int(t) for t in official_timesteps(12, 2.0)]
    schedule = g.curve_schedule("official", "17b", "TIA", nano_grid)
    svg = guidance_editor.plot_svg(schedule, nano_grid)
    legend = re.findall(r'class="legend"[^>]*>([^<]+)<', svg)
    assert legend[:3] == ["text", "image", "audio"] and "passes per step (36 in all)" in legend[3]
    assert [int(n) for n in re.findall(r'data-passes="(\d+)"', svg)] == schedule.passes_per_step(nano_grid)
    assert f"t={nano_grid[0]}" in svg and f"t={nano_grid[-1]}" in svg  # the model's own timesteps label the steps
    lines = dict(re.findall(r'data-modality="(\w+)" points="([^"]+)"', svg))
    text_y = [float(p.split(",")[1]) for p in lines["text"].split()]
    assert text_y[0] != text_y[-1]  # 17B TIA: the text weight drops after the switch (5 -> 3)
    assert len(text_y) == 12


# ---------------------------------------------------------------------------------------------- round trips
def _job_values(tmp_path, **kw):
    values = dict(prompt="a person talks", image=str(write_image(tmp_path / "face.png")),
                  audio=str(write_wav(tmp_path / "voice.wav", 0.5)), negative_prompt="blurry", model="tiny",
                  resolution="custom", height=32, width=48, frames=0, steps=3, seed=11, preset="official",
                  scale_t=3.0, scale_i=2.0, scale_a=12.0, switch=980, extra_images=None, long_video=True,
                  keyframes=[["2", None, None, 6.0, "linear"]])  # fmt: skip
    values.update(kw)
    return values


def test_use_these_settings_restores_every_setting_exactly(ctx, tmp_path):
    values = _job_values(tmp_path)
    request, names = tab_generate.make_request(ctx, **values)
    result = run_job(ctx, request, "tiny", names=names)
    assert result.status == "done"
    reused = tab_gallery.settings_for_reuse(ctx, result.generation_id)
    for name in ("prompt", "negative_prompt", "model", "height", "width", "steps", "seed", "long_video", "preset",
                 "scale_t", "scale_i", "scale_a", "switch", "keyframes"):  # fmt: skip
        assert reused[name] == values[name], name
    assert reused["resolution"] == "custom" and reused["frames"] == 0
    assert reused["image"].endswith(".png") and reused["audio"].endswith(".wav")
    job_fields = {k: reused[k] for k in (*tab_generate.API_INPUTS, "keyframes") if k in reused}
    again, _ = tab_generate.make_request(ctx, **{**job_fields, "image": values["image"], "audio": values["audio"]})
    assert again.guidance == request.guidance and again.window_frames == request.window_frames == 97
    assert (again.height, again.width, again.num_inference_steps, again.seed) == (32, 48, 3, 11)


def test_a_preset_size_comes_back_as_its_preset(ctx, tmp_path):
    request, names = tab_generate.make_request(ctx, **_job_values(tmp_path, resolution="64×64 (HuMo-nano, tiny)",
                                                                  long_video=False, frames=9, keyframes=None))  # fmt: skip
    result = run_job(ctx, request, "tiny", names=names)
    reused = tab_gallery.settings_for_reuse(ctx, result.generation_id)
    assert reused["resolution"] == "64×64 (HuMo-nano, tiny)" and (reused["height"], reused["width"]) == (64, 64)
    assert reused["frames"] == 9 and reused["long_video"] is False
    assert reused["keyframes"] == [tab_generate.EMPTY_KEYFRAME]  # a row to type into, no keyframe


def test_load_settings_from_an_mp4_fills_the_form_like_reuse(ctx, tmp_path):
    values = _job_values(tmp_path)
    request, names = tab_generate.make_request(ctx, **values)
    result = run_job(ctx, request, "tiny", names=names)
    loaded, message = tab_generate.settings_from_video(ctx, str(result.video_path))
    reused = tab_gallery.settings_for_reuse(ctx, result.generation_id)
    assert "loaded (seed 11)" in message and "add its image and voice again" in message
    for name in tab_generate.SETTINGS_FIELDS:
        if name != "frames":  # the mp4 records the frames made; a long video's come from its voice either way
            assert loaded[name] == reused[name], name


def test_load_settings_refuses_what_is_not_ours(ctx, tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video")
    values, message = tab_generate.settings_from_video(ctx, str(fake))
    assert values == {} and "fake.mp4" in message
    hostile = {"prompt": "x", "height": 10**9, "width": 64, "num_inference_steps": "many", "seed": 5,
               "model_id": "../../etc", "guidance": {"phases": "nope"}}  # fmt: skip
    values, notes = tab_generate.form_values(ctx, hostile)
    assert values["seed"] == 5 and "height" not in values and "steps" not in values and "model" not in values
    assert any("Height" in n for n in notes) and any("guidance" in n for n in notes)


def test_reload_restores_the_inputs_of_the_last_run(ctx, tmp_path):
    values = _job_values(tmp_path, long_video=False)
    request, names = tab_generate.make_request(ctx, **values)
    remembered = {k: values.get(k) for k in tab_generate.REMEMBERED}
    ctx.store.set_setting(tab_generate.LAST_SETTINGS_KEY, remembered)
    empty = tab_generate.restore_last_settings(ctx, "someone-else")
    assert empty[-1] == ""  # nothing remembered for another owner
    before = tab_generate.restore_last_settings(ctx, "local")
    assert "add the reference image and the voice again" in before[-1]
    run_job(ctx, request, "tiny", names=names)
    after = tab_generate.restore_last_settings(ctx, "local")
    media = dict(zip(tab_generate.MEDIA_FIELDS, after[-4:-1], strict=True))
    assert media["image"]["value"].endswith(".png") and media["audio"]["value"].endswith(".wav")
    assert "inputs are back" in after[-1]


# ---------------------------------------------------------------------------------------------- queue
def test_queue_board_cancels_only_the_owners_waiting_jobs():
    board = JobBoard()
    first = board.arrive("alice", "s1", "first job")
    second = board.arrive("alice", "s1", "second job")
    board.arrive("bob", "s2", "bob's job")
    assert board.start("alice", "s1") is first and first.state == "running"
    assert [r[1:4] for r in board.rows("alice")] == [["first job", "running", "now"], ["second job", "queued",
                                                                                         "1 ahead"]]  # fmt: skip
    assert [r[4] for r in board.rows("alice")] == ["estimating…", "after the jobs ahead"]  # no progress yet
    board.progress("s1", 30.0)  # the running job says 30 s are left
    assert [r[4] for r in board.rows("alice")] == ["ends in about 30 s", "after the jobs ahead"]
    assert [r[3] for r in board.rows("bob")] == ["2 ahead"]  # bob sees the count, not alice's jobs
    assert "No job" in board.cancel("bob", second.id)  # another owner's job reads as unknown
    assert "use Stop" in board.cancel("alice", first.id)
    assert "will not run" in board.cancel("alice", second.id)
    board.finish(first)
    cancelled = board.start("alice", "s1")
    assert cancelled is second and board.cancelled(cancelled) and board.rows("alice") == []
    board.prune(lambda session: session != "s2", grace_s=0)  # bob's page went away while waiting
    assert board.rows("bob") == []
    batch = board.arrive("alice", "s1", "four variations", count=4)
    board.start("alice", "s1")
    assert board.rows("alice")[0][2] == "running (1 of 4)"
    board.stop_running("s2")  # Stop on another page changes nothing here
    assert not board.cancelled(batch)
    board.stop_running("s1")  # Stop on this page: no further variation starts
    assert board.cancelled(batch)


def test_variations_are_consecutive_seeds():
    assert tab_generate.variation_seeds(41, 3) == [41, 42, 43]
    assert tab_generate.variation_seeds(-1, 1) == [-1]  # one job: the job draws its own
    drawn = tab_generate.variation_seeds(-1, 2)
    assert drawn[1] == drawn[0] + 1 and drawn[0] >= 0
    with pytest.raises(InputError, match="Variations"):
        tab_generate.variation_seeds(1, 99)
    # a public studio admits one job per visitor: one click, one video (N variations would be N jobs on one ticket)
    with pytest.raises(InputError, match="one video per job"):
        tab_generate.variation_seeds(1, 3, public=True)
    assert tab_generate.variation_seeds(1, 1, public=True) == [1]


def test_generate_event_runs_variations_and_skips_a_cancelled_job(ctx, tmp_path):
    """The page's generate callback itself (no browser): 2 variations make 2 rows with seeds s, s+1; a job
    cancelled while it waited ends at once without a row."""
    import gradio as gr

    from studio.app import build_app

    demo = build_app(ctx)
    runner = next(fn.fn.__self__ for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "on_generate")
    values = _job_values(tmp_path, long_video=False, keyframes=None, steps=2)
    args = [values.get(k) for k in tab_generate.API_INPUTS]
    request = gr.Request(username=None, session_hash="page-1")
    page = dict.fromkeys(tab_generate.PAGE_INPUTS)

    def page_values(variations):  # the page sends PAGE_INPUTS, then the visitor
        return [*args, *{**page, "variations": variations}.values(), None]

    assert runner.admit_job(request, *page_values(2))[0]["is_valid"]
    assert ctx.board.rows("local")[0][4] == "after the jobs ahead"  # nothing measured for this model yet
    list(runner.on_generate(request, *page_values(2)))
    rows, total = ctx.store.list_generations(page=1, page_size=10)
    assert total == 2 and sorted(r.seed for r in rows) == [11, 12] and all(r.status == "done" for r in rows)
    runner.admit_job(request, *page_values(1))
    (waiting_row,) = ctx.board.rows("local")
    # this model has run here now: a waiting job shows its own measured time (before any run: "after the jobs ahead")
    seconds = float(re.fullmatch(r"ends in about ([\d.]+) s", waiting_row[4]).group(1))
    real = sum(r.timings["total_s"] for r in rows) / 2
    assert 0.3 * real <= seconds <= 3 * real + 1, (seconds, real)
    waiting = waiting_row[0]  # arrived, not yet started: listed without a gallery number
    assert "will not run" in runner.queue_action("cancel", request, f"new {waiting}")[0]
    out = list(runner.on_generate(request, *page_values(1)))
    assert "cancelled before it started" in out[-1][2]
    assert ctx.store.list_generations(page=1, page_size=10)[1] == 2 and ctx.board.rows("local") == []


def test_advanced_options_run_are_stored_and_come_back(ctx, tmp_path):
    from studio import advanced

    options, _ = advanced.read_options(False, step_cache="0.05", attention_backend="native", memory_mode="auto")
    assert options.step_cache == 0.05 and not options.is_default()
    request, names = tab_generate.make_request(ctx, **_job_values(tmp_path, long_video=False, keyframes=None))
    result = run_job(ctx, request, "tiny", names=names, advanced=options)
    assert result.status == "done"
    pipe = ctx.pipeline("tiny")
    assert not pipe.transformer.is_cache_enabled  # taken off again after the job: the next job is plain
    reused = tab_gallery.settings_for_reuse(ctx, result.generation_id)
    assert (reused["step_cache"], reused["compile"], reused["memory_mode"]) == (0.05, False, "auto")
    loaded, _ = tab_generate.settings_from_video(ctx, str(result.video_path))  # the mp4 keeps them too
    assert {k: loaded[k] for k in advanced.FIELDS if k in loaded} == {
        k: reused[k] for k in advanced.FIELDS if k in reused
    }
    with pytest.raises(InputError, match="safetensors"):
        advanced.read_options(False, lora_files=[str(write_wav(tmp_path / "evil.pt", 0.1))])
    with pytest.raises(InputError, match="2 LoRA scales for 1"):
        advanced.parse_scales("1, 2", 1)
    with pytest.raises(InputError, match="public studio"):
        advanced.read_options(True, compile=True)


def test_queue_times_add_up_the_jobs_ahead():
    board = JobBoard()
    board.arrive("bob", "s2", "bob's job")
    board.start("bob", "s2")
    board.progress("s2", 60.0)  # its progress: 60 s left
    board.arrive("alice", "s1", "two variations", count=2, seconds=30.0)
    (row,) = board.rows("alice")
    assert row[3] == "1 ahead" and row[4] == "ends in about 120 s"  # 60 s left ahead + 2 × 30 s


# ---------------------------------------------------------------------------------------------- custom phases
# A schedule no preset makes: an image-and-audio-guided early phase against N·I·A, then a 3-branch late phase.
CUSTOM_PHASES = {"phases": [{"above": 900, "weights": {"T·I·A": 4.0, "N·I·A": -3.0}},
                            {"above": None, "weights": {"T·I·A": 3.0, "T·∅·A": -1.0, "N·∅·0": -1.0}}]}  # fmt: skip


def test_custom_phases_run_as_typed_and_come_back(ctx, tmp_path, monkeypatch):
    import json

    from engine.models import HuMoTransformer3DModel

    calls: list[tuple] = []
    original = HuMoTransformer3DModel.forward

    def counted(self, hidden_states, *args, **kwargs):
        calls.append(tuple(hidden_states.shape))  # a step's branches are one batched call
        return original(self, hidden_states, *args, **kwargs)

    monkeypatch.setattr(HuMoTransformer3DModel, "forward", counted)
    typed = json.dumps(CUSTOM_PHASES)
    values = _job_values(tmp_path, long_video=False, frames=9, steps=4, keyframes=None, phases=typed)
    request, names = tab_generate.make_request(ctx, **values)
    schedule = request.guidance  # the object, as it travels to the loop
    assert [(p.above, {str(b): w for b, w in p.weights.items()}) for p in schedule.phases] == [
        (p["above"], p["weights"]) for p in CUSTOM_PHASES["phases"]]  # fmt: skip
    grid = [int(t) for t in official_timesteps(4, eta.sampling_shift("tiny"))]
    result = run_job(ctx, request, "tiny", names=names)
    assert result.status == "done"
    # the job's own calls (9 frames -> 3 latent frames + the reference, 32×48 -> 4×6); the time estimate's probes
    # run the transformer at other sizes
    passes = [shape[0] for shape in calls if shape[2:] == (4, 4, 6)]
    assert passes == schedule.passes_per_step(grid) and 2 in passes and 3 in passes  # what ran is what was typed
    plot, _, label = tab_generate.guidance_view(ctx, "tiny", "x.png", None, "a.wav", *[values[k] for k in (
        "preset", "scale_t", "scale_i", "scale_a", "switch")], None, 4, 9, 32, 48, typed)  # fmt: skip
    assert "custom phases" in label and 'data-passes="3"' in plot
    reused = tab_gallery.settings_for_reuse(ctx, result.generation_id)
    loaded, _ = tab_generate.settings_from_video(ctx, str(result.video_path))
    assert loaded["phases"] == reused["phases"]
    again, _ = tab_generate.make_request(ctx, **{**values, "phases": reused["phases"], "preset": "faster"})
    assert again.guidance.phases == request.guidance.phases  # the typed phases win over the controls


def test_editor_schedules_come_back_as_controls_and_others_as_phases(ctx):
    official = g.preset_schedule("official", "1.7b", "TIA", scale_a=9.0)  # what the CLI writes: no editor source
    values = tab_generate.guidance_form_values(official.to_dict())
    assert (values["preset"], values["scale_a"], values["phases"]) == ("official", 9.0, "")
    edited = official.to_dict()
    edited["phases"][0]["weights"] = {"T·I·A": 2.0, "N·∅·0": -1.0}  # a --guidance-json file that kept the name
    values = tab_generate.guidance_form_values(edited)
    assert set(values) == {"phases"} and '"T·I·A": 2.0' in values["phases"]


def test_bad_custom_phases_say_what_to_change(ctx, tmp_path):
    import json

    cases = [
        ('{"phases": [', "not valid JSON (line 1"),
        (json.dumps({"phases": [{"weights": {"T·I·A": 2.0, "N·∅·0": -0.5}}]}), "sum to 1.5"),
        (json.dumps({"phases": [{"above": 900 - i, "weights": {"T·I·A": 1.0}} for i in range(40)]}), "at most 32"),
        (json.dumps({"phases": [{"weights": {"T·I·X": 1.0}}]}), "Cannot read guidance branch"),
        ("x" * 30_000, "at most 20,000 characters"),
    ]
    for text, message in cases:
        with pytest.raises(InputError, match=re.escape(message)) as info:
            tab_generate.make_request(ctx, **_job_values(tmp_path, long_video=False, keyframes=None, phases=text))
        assert info.value.field == "guidance"
    voiceless = _job_values(tmp_path, audio=None, long_video=False, frames=9, keyframes=None,
                            phases=json.dumps(CUSTOM_PHASES))  # fmt: skip
    with pytest.raises(InputError, match=r"uses a voice \(A\) but this job has none"):
        tab_generate.make_request(ctx, **voiceless)
