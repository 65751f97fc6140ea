"""Live (chunked causal) generation: chunks final once denoised, one chunk = the plain call (tiny models, CPU)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import live, media
from engine.components import build_tiny_components
from engine.errors import InputError
from engine.generate import GenerationRequest
from engine.long_video import match_colors
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
    kwargs = dict(image=face, audio=audio, chunk_frames=17, seed=5, **BASE)
    chunks = list(live.generate_chunks(pipe, "a person talks", color_match=False, **kwargs))
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


def test_colour_matching_moves_later_chunks_to_the_first_chunks_colours(pipe, tmp_path, face):
    audio = write_wav(tmp_path / "long.wav", 1.5)
    kwargs = dict(image=face, audio=audio, chunk_frames=17, seed=5, **BASE)
    raw = list(live.generate_chunks(pipe, "a person talks", color_match=False, **kwargs))
    matched = list(live.generate_chunks(pipe, "a person talks", **kwargs))
    assert np.array_equal(matched[0].frames, raw[0].frames)  # the first chunk is the reference, untouched
    # chunk 1 is made from the same motion frames either way; matching moves its whole 17 frames (motion frames
    # included) to the first chunk's per-channel mean and spread before its new frames are yielded
    features = live.audio_lib.audio_features(
        live.audio_lib.load_audio(audio), pipe.audio_encoder, pipe.feature_extractor
    )
    made = pipe("a person talks", image=face, num_frames=17, seed=live.chunk_seed(5, 1),
                audio_embeds=live.audio_lib.window_audio_features(features[12:], 17),
                motion_frames=raw[0].frames[-5:], **BASE).frames[0]  # fmt: skip
    assert np.array_equal(made[5:], raw[1].frames)
    moved = match_colors(np.concatenate([raw[0].frames, made]), 17)[17:]
    np.testing.assert_allclose(moved.reshape(-1, 3).mean(0), raw[0].frames.reshape(-1, 3).mean(0), atol=2e-3)
    assert np.array_equal(moved[5:], matched[1].frames) and not np.array_equal(moved[5:], raw[1].frames)


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


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def _decoded(path, minimum: int, timeout: float = 30.0) -> np.ndarray:
    """The frames a reader gets from a (growing) file once it holds at least `minimum` of them."""
    deadline = time.monotonic() + timeout
    while True:
        try:  # every coded frame once, as a player shows them (no frame-rate conversion)
            raw = media.run_ffmpeg(["-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                                    "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])  # fmt: skip
            frames = np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)
        except RuntimeError:
            frames = np.zeros((0, H, W, 3), np.uint8)
        if len(frames) >= minimum or time.monotonic() > deadline:
            return frames
        time.sleep(0.2)


def test_streamed_file_plays_while_it_grows_and_equals_the_non_streamed_one(pipe, tmp_path, face):
    audio = write_wav(tmp_path / "voice.wav", 1.5)  # 37 frames -> chunks of 17, 12, 8 new frames
    request = GenerationRequest(prompt="a person talks", images=[str(face)], audio=str(audio), height=H, width=W,
                                num_inference_steps=2, seed=5)  # fmt: skip
    streamed = tmp_path / "live.mp4"
    seen = {}

    def after(chunk):
        seen[chunk.index] = media.to_uint8(chunk.frames)
        if chunk.index == 0:  # the first chunk is readable before the second one is made (but its last frame,
            # which the muxer writes when the next packet comes: engine.media.FragmentedMp4Writer)
            seen["partial"] = _decoded(streamed, len(chunk.frames) - 1)
            seen["settings"] = media.read_settings(streamed)

    path, record = live.chunked_to_file(pipe, request, streamed, chunk_frames=17, on_chunk=after)
    partial = seen["partial"]
    assert len(partial) >= 16 and _psnr(partial[:16], seen[0][:16]) > 25
    assert seen["settings"]["live"] == {"chunk_frames": 17, "motion_frames": 5, "color_match": True}
    assert seen["settings"]["seed"] == 5 and seen["settings"]["num_frames"] == 37
    final = _decoded(path, 37)
    assert len(final) == 37 == len(media.read_video_frames(path))
    # a finished chunk is never rewritten: what a reader decoded while the file grew is what the finished file holds
    assert np.array_equal(partial[:16], final[:16])
    made = np.concatenate([seen[0], seen[1], seen[2]])
    print("PSNR streamed/made", _psnr(final, made))
    assert _psnr(final, made) > 25  # the tiny model's frames are noise-like: x264 at CRF 18 keeps ~28 dB of them

    whole, whole_record = live.chunked_to_file(pipe, request, tmp_path / "whole.mp4", stream=False, chunk_frames=17)
    assert whole_record == record  # the same settings, so the same watermark payload
    other = _decoded(whole, 37)
    assert len(other) == len(final) == 37
    print("PSNR whole/made", _psnr(other, made), "streamed/whole", _psnr(other, final))
    assert _psnr(other, made) > 25 and _psnr(other, final) > 30  # the same frames through two x264 configurations
    info, whole_info = media.probe(path), media.probe(whole)
    assert info["audio"] is not None and whole_info["audio"] is not None
    assert abs(info["duration"] - whole_info["duration"]) < 0.1


def test_cli_stream_grows_while_it_runs_and_matches_the_chunked_file(tmp_path):
    from engine.cli import main

    audio = write_wav(tmp_path / "a.wav", 1.5)  # 37 frames
    common = ["generate", "--model", "tiny", "--audio", str(audio), "--prompt", "x", "--height", "32", "--width", "32",
              "--steps", "2", "--seed", "4", "--chunk-frames", "17"]  # fmt: skip
    streamed = tmp_path / "live.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "engine", *common, "--stream", "--out", str(streamed)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("chunk 1/3"):  # the first chunk is final: a reader gets its frames from the growing file
            partial = _decoded(streamed, 16)
            assert len(partial) >= 16
    assert proc.wait() == 0, lines
    assert [line.split(":")[0] for line in lines if line.startswith("chunk")] == ["chunk 1/3", "chunk 2/3", "chunk 3/3"]
    final = _decoded(streamed, 37)
    assert np.array_equal(partial[:16], final[:16])
    whole = tmp_path / "whole.mp4"
    assert main([*common, "--out", str(whole)]) == 0
    assert media.read_settings(whole) == media.read_settings(streamed)
    other = _decoded(whole, 37)
    assert len(other) == len(final) == 37 and _psnr(other, final) > 30


def test_cli_refuses_stream_with_windows(capsys):
    from engine.cli import main

    assert main(["generate", "--model", "tiny", "--prompt", "x", "--stream", "--window-frames", "17"]) != 0
    assert "--stream / --chunk-frames replace --window-frames" in capsys.readouterr().err
