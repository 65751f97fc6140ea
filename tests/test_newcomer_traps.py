"""Issue 29's newcomer traps, without a browser: a public voice too long for the frame cap is warned about on
upload in the refusal's own words (and Long video greyed out), stale lines are cleared when the state changes,
keyframes parse as typed, and what this machine cannot run is marked and refused before a gallery row exists."""

from __future__ import annotations

import pytest

from engine.errors import InputError
from studio import admission, tab_generate
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
