"""One media layer: a voice file gives the trainer's cache exactly the waveform and Whisper features it gives the
sampler (training decodes through engine.audio, not its own ffmpeg command)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine import media
from engine.audio import extract_whisper_features, load_audio, write_wav

FRAMES = 17  # one clip: 17 frames at 25 fps = 0.68 s
RATE = 44100


@pytest.fixture(scope="module")
def stereo_voice(tmp_path_factory):
    """A 16-bit stereo 44.1 kHz voice as long as one clip, different in each channel."""
    from training.synth import synth_speech

    root = tmp_path_factory.mktemp("parity")
    rng = np.random.default_rng(4)
    samples = FRAMES * RATE // 25
    left = synth_speech(samples, rng, pitch_hz=140.0, sampling_rate=RATE)
    right = 0.5 * synth_speech(samples, rng, pitch_hz=210.0, sampling_rate=RATE)
    return write_wav(root / "voice.wav", np.stack([left, right], axis=1), RATE)


@pytest.fixture(scope="module")
def cached_clip(stereo_voice):
    """The voice through training's whole data path: a clip of a video dubbed with it, then the encoded cache."""
    from engine.registry import load_pipeline
    from training.cache import build_cache, load_cached
    from training.raw import build_clips
    from training.synth import Scene, sample_identity, write_synth_clip

    root = stereo_voice.parent
    person = sample_identity(np.random.default_rng(0), "p")
    write_synth_clip(root / "src" / "talk.mp4", person, Scene(), frames=21, size=(64, 64), audio="none")
    manifest = root / "src" / "manifest.jsonl"
    manifest.write_text(json.dumps({"video": "talk.mp4", "audio": str(stereo_voice), "caption": "a person"}) + "\n")
    report = build_clips(
        manifest, root / "clips", frames=FRAMES, size=(64, 64), speech_filter=False, min_face_fraction=0.0,
        progress=False,
    )  # fmt: skip
    assert report.written == 1, dict(report.skipped)
    pipe = load_pipeline("tiny")
    build_cache(pipe, root / "clips", root / "cache", progress=False)
    entry = json.loads((root / "clips" / "manifest.jsonl").read_text().splitlines()[0])
    clips, _ = load_cached(root / "cache")
    return pipe, root / "clips" / entry["audio"], clips[0]


def test_the_clip_holds_the_samplers_waveform(stereo_voice, cached_clip):
    _, clip_audio, _ = cached_clip
    sampler = load_audio(stereo_voice)  # what HuMoPipeline decodes (soxr, channel mean)
    trainer = load_audio(clip_audio)  # what training.cache encodes
    assert sampler.shape == (FRAMES * 640,) and sampler.dtype == np.float32
    assert np.array_equal(trainer, sampler)
    # the bug this replaces: ffmpeg's default resampler and downmix give other samples
    default = np.frombuffer(
        media.run_ffmpeg(["-v", "error", "-i", str(stereo_voice), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"]),
        np.float32,
    )
    assert not np.array_equal(default[: len(sampler)], sampler)


def test_cache_and_sampler_get_identical_whisper_features(stereo_voice, cached_clip):
    pipe, clip_audio, clip = cached_clip
    sampled, frames = pipe.encode_audio(str(stereo_voice), FRAMES)  # the pipeline's audio step
    assert frames == FRAMES and clip["has_audio"] == 1
    assert torch.equal(clip["audio_embeds"], sampled.float())
    hidden = [
        extract_whisper_features(load_audio(p), pipe.audio_encoder, pipe.feature_extractor)
        for p in (stereo_voice, clip_audio)
    ]
    assert torch.equal(hidden[0], hidden[1])
