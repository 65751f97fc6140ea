"""Live (chunked causal) generation: chunks final once denoised, one chunk = the plain call (tiny models, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import live
from engine.components import build_tiny_components
from engine.errors import InputError
from engine.pipeline import GenerationInterrupted, HuMoPipeline
from engine.registry import load_pipeline
from tests.media_files import write_image, write_wav

H = W = 32
BASE = dict(height=H, width=W, num_inference_steps=2)


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny")


@pytest.fixture(scope="module")
def pipe_17b():
    return HuMoPipeline(**build_tiny_components(variant="17b"))


@pytest.fixture(scope="module")
def face(tmp_path_factory):
    return write_image(tmp_path_factory.mktemp("live") / "face.png")


def test_plan_chunks_covers_the_clip_with_motion_overlap():
    spans = live.plan_chunks(101, 17, 5)
    assert spans[0] == (0, 17) and spans[-1][1] == 101
    for (_s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert e0 - s1 == 5  # the motion frames are shared
        assert (e1 - s1) % 4 == 1 and e1 - s1 <= 17
    assert live.plan_chunks(17, 17, 5) == [(0, 17)]
    assert live.plan_chunks(9, 17, 5) == [(0, 9)]


@pytest.mark.parametrize(
    "chunk,motion,field",
    [(16, 5, "chunk_frames"), (3, 1, "chunk_frames"), (17, 4, "motion_frames"), (17, 17, "motion_frames")],
)
def test_bad_chunking_gives_clear_errors(pipe, chunk, motion, field):
    with pytest.raises(InputError) as err:
        next(live.generate_chunks(pipe, "a person", num_frames=33, chunk_frames=chunk, motion_frames=motion, **BASE))
    assert err.value.field == field


def test_bad_motion_frames_are_refused_before_any_encoder(pipe):
    with pytest.raises(InputError) as err:
        pipe("a person", num_frames=17, motion_frames=np.zeros((4, H, W, 3), np.float32), **BASE)
    assert err.value.field == "motion_frames"


@pytest.mark.parametrize("variant", ["1.7b", "17b"])
def test_clip_in_one_chunk_equals_the_plain_call(request, tmp_path, face, variant):
    pipe = request.getfixturevalue("pipe" if variant == "1.7b" else "pipe_17b")
    audio = write_wav(tmp_path / "short.wav", 0.7)  # 17 frames
    chunks = list(
        live.generate_chunks(pipe, "a person talks", image=face, audio=audio, chunk_frames=17, seed=3, **BASE)
    )
    plain = pipe("a person talks", image=face, audio=audio, seed=3, **BASE)
    assert len(chunks) == 1 and chunks[0].last
    assert (chunks[0].start_frame, chunks[0].end_frame) == (0, 17)
    assert torch.equal(torch.from_numpy(chunks[0].frames), torch.from_numpy(plain.frames[0]))


def test_chunk_is_held_to_the_motion_frames_of_the_chunk_before(pipe, tmp_path, face):
    audio = write_wav(tmp_path / "long.wav", 1.5)  # 37 frames -> chunks (0,17), (12,29), (24,37)
    chunks = list(
        live.generate_chunks(pipe, "a person talks", image=face, audio=audio, chunk_frames=17, seed=5, **BASE)
    )
    assert [(c.start_frame, c.end_frame) for c in chunks] == [(0, 17), (17, 29), (29, 37)]
    assert [len(c.frames) for c in chunks] == [17, 12, 8]
    assert chunks[-1].last and not chunks[0].last
    # each chunk's voice is the voice of its frames (640 samples a frame at 16 kHz)
    assert [len(c.audio) for c in chunks[:-1]] == [17 * 640, 12 * 640]
    assert [c.elapsed_s for c in chunks] == sorted(c.elapsed_s for c in chunks)
    # the second chunk is the plain call of its span, except that its first latent frames are known: re-running
    # chunk 1 with other motion frames changes it, and re-running it with the same ones gives it back exactly
    features = live.audio_lib.audio_features(
        live.audio_lib.load_audio(audio), pipe.audio_encoder, pipe.feature_extractor
    )
    first = pipe("a person talks", image=face, audio=audio, num_frames=17, seed=5, **BASE).frames[0]
    again = pipe("a person talks", image=face, num_frames=17, seed=live.chunk_seed(5, 1),
                 audio_embeds=live.audio_lib.window_audio_features(features[12:], 17),
                 motion_frames=first[-5:], **BASE).frames[0]  # fmt: skip
    assert np.array_equal(again[5:], chunks[1].frames)
    other = pipe("a person talks", image=face, num_frames=17, seed=live.chunk_seed(5, 1),
                 audio_embeds=live.audio_lib.window_audio_features(features[12:], 17),
                 motion_frames=np.zeros_like(first[-5:]), **BASE).frames[0]  # fmt: skip
    assert not np.allclose(other[5:], chunks[1].frames)


def test_stop_mid_clip_keeps_the_finished_chunks(pipe, tmp_path, face):
    audio = write_wav(tmp_path / "stop.wav", 1.5)
    calls = []

    def stop_in_second_chunk(p, step, t, kwargs):
        calls.append(step)
        if len(calls) == 3:  # step 1 of chunk 2
            p._interrupt = True
        return {}

    got = []
    with pytest.raises(GenerationInterrupted):
        for chunk in live.generate_chunks(pipe, "a person", image=face, audio=audio, chunk_frames=17, seed=1,
                                          callback_on_step_end=stop_in_second_chunk, **BASE):  # fmt: skip
            got.append(chunk)
    assert [c.index for c in got] == [0] and len(got[0].frames) == 17
