"""Issue 29's newcomer traps, without a browser: a public voice too long for the frame cap is warned about on
upload in the refusal's own words (and Long video greyed out), stale lines are cleared when the state changes,
keyframes parse as typed, and what this machine cannot run is marked and refused before a gallery row exists."""

from __future__ import annotations

import pytest

from engine.errors import InputError
from studio import admission, models, tab_generate
from studio.app import public_notice
from studio.context import StudioContext, StudioOptions
from studio.jobs import validate_request
from tests.test_pipeline import write_image, write_wav


@pytest.fixture
def public_ctx(tmp_path):
    context = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="tiny", public=True))
    yield context
    context.store.close()


def test_a_public_voice_over_the_frame_cap_is_warned_on_upload_as_generate_would_refuse_it(public_ctx, tmp_path):
    voice = str(write_wav(tmp_path / "long.wav", 8.55))
    text, long_video = tab_generate.voice_check(public_ctx, voice, 0)
    request, names = tab_generate.make_request(public_ctx, "a person talks", str(write_image(tmp_path / "f.png")),
                                               voice, model="tiny", steps=2, consent=True)  # fmt: skip
    with pytest.raises(InputError) as refused:
        validate_request(public_ctx, request, names)
    assert text.startswith(f"⚠ {refused.value}")  # the same sentence before Generate as after it
    assert "213 frames" in text and "at most 97 (3.9 s)" in text
    assert long_video["interactive"] is False and "97 frames" in long_video["info"]
    # Frames set to the cap takes the voice's beginning: no warning then
    assert not tab_generate.voice_check(public_ctx, voice, 97)[0].startswith("⚠")
    short = str(write_wav(tmp_path / "short.wav", 2.0))
    assert not tab_generate.voice_check(public_ctx, short, 0)[0].startswith("⚠")
    # the banner states the same cap: voices used whole up to the frame cap's seconds, not the 60 s upload cap
    notice = public_notice(public_ctx.options)
    assert f"voices up to {admission.public_voice_seconds(public_ctx.options):.1f} s used whole" in notice
    assert "3.9 s used whole" in notice


def test_long_video_stays_offered_in_a_local_studio(ctx, tmp_path):
    voice = str(write_wav(tmp_path / "long.wav", 8.55))
    text, long_video = tab_generate.voice_check(ctx, voice, 0)
    assert not text.startswith("⚠") and long_video["interactive"] is True


def test_stale_lines_go_when_the_state_changes(ctx, tmp_path):
    image, voice = str(write_image(tmp_path / "f.png")), str(write_wav(tmp_path / "v.wav", 1.0))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really a voice" * 4)
    # the mode line never says TIA for a voice that cannot be read
    line = tab_generate.mode_line(ctx, image, None, str(broken))
    assert "TIA" not in line and "TI" in line and "could not be read" in line
    assert "TIA" in tab_generate.mode_line(ctx, image, None, voice)
    # the reload's "add the reference image and the voice again" goes once both are back
    assert tab_generate.restore_note(image, voice) == ""
    assert tab_generate.restore_note(image, None) == {"__type__": "update"}


def test_untrained_models_and_missing_attention_backends_are_marked_and_refused_before_a_row(ctx, tmp_path):
    from studio import advanced

    labels = dict((value, label) for label, value in models.model_labels(["tiny", "humo-nano"]))
    assert "untrained test model" in labels["tiny"] and labels["humo-nano"] == "humo-nano"
    # the list refreshed while the page is open (a run finished) keeps the same labels
    update, known = models.picker_update(ctx, "local", ["humo-nano"])
    assert ("tiny (untrained test model: noise)", "tiny") in update["choices"] and "tiny" in known
    done = tab_generate.JobResult(3, "done", None, {"seed": 1})
    assert "noise" in tab_generate.format_result(done, models.untrained("tiny"))
    assert "noise" not in tab_generate.format_result(done, models.untrained("humo-nano"))
    # this CPU machine lacks flash / FlashAttention 3 / sage: said in the list, refused before any row
    choices = dict((value, label) for label, value in advanced.backend_choices("cpu"))
    assert choices["native"] == "native" and all("not here" in choices[b] for b in ("flash", "_flash_3", "sage"))
    runner = tab_generate.JobRunner(ctx, None)
    values = dict(prompt="a person talks", image=image_of(tmp_path), audio=str(write_wav(tmp_path / "v.wav", 0.5)),
                  model="tiny", resolution="custom", height=32, width=32, steps=1, seed=3)  # fmt: skip
    out = list(runner.job_stream("page", **values, options={"attention_backend": "flash"}))
    assert "cannot run here" in out[-1][2] and ctx.store.list_generations()[1] == 0


def image_of(tmp_path) -> str:
    return str(write_image(tmp_path / "face.png"))


def test_a_linear_ramp_is_one_formula_line_and_keyframes_are_added_as_typed():
    from engine import guidance as g
    from engine.schedulers import official_timesteps
    from studio import guidance_editor

    grid = [int(t) for t in official_timesteps(20, 5.0)]
    keys = [g.Keyframe("16", scale_a=2.0, segment="linear")]
    schedule = g.curve_schedule("official", "1.7b", "TIA", grid, {"scale_a": 9.0}, keys).validate()
    lines = guidance_editor.describe(schedule, grid).splitlines()
    ramp = [line for line in lines if "ramps linearly" in line]
    assert len(ramp) == 1 and len(lines) <= 4, lines  # was one line per step of the ramp
    assert "(steps 1–15)" in ramp[0] and any("(steps 16–20)" in line for line in lines), lines  # then it holds
    rows = guidance_editor.add_keyframe([["", None, None, None, ""]], "t950", None, None, 11, "hold")
    assert rows == [["t950", None, None, 11.0, "hold"]]
    rows = guidance_editor.add_keyframe(rows, "12", 4, None, None, "linear")
    assert [r[0] for r in rows] == ["t950", "12"]
    with pytest.raises(InputError, match="at least one scale"):
        guidance_editor.add_keyframe(rows, "14", None, None, None, "hold")
    with pytest.raises(InputError, match="row 3"):
        guidance_editor.add_keyframe(rows, "x", 1, None, None, "hold")
