"""engine/audio.py: decoding any container to 16 kHz mono, Whisper features, bands, windows, errors (§4.4)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from engine import audio
from engine.errors import InputError
from engine.media import ffmpeg_exe


def tone(seconds: float, sr: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return amplitude * np.sin(2 * np.pi * freq * t)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def dominant_frequency(x: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


@pytest.fixture(scope="module")
def stereo_wav(tmp_path_factory) -> str:
    """1.3 s at 44.1 kHz, 440 Hz left, 440 Hz at another amplitude right."""
    folder = tmp_path_factory.mktemp("audio")
    left, right = tone(1.3, 44100, amplitude=0.6), tone(1.3, 44100, amplitude=0.2)
    return audio.write_wav(folder / "stereo.wav", np.stack([left, right], axis=1), 44100)


# ---------------------------------------------------------------------------------------------- decoding
def test_wav_resampled_to_16k_mono_with_exact_length(stereo_wav):
    x = audio.load_audio(stereo_wav)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == 20800  # 1.3 s * 16000
    assert abs(dominant_frequency(x) - 440) < 2
    # mono is the channel mean (librosa's to_mono): amplitude (0.6 + 0.2) / 2 = 0.4
    assert abs(np.abs(x[2000:-2000]).max() - 0.4) < 0.01


def test_stereo_at_16k_is_exact_channel_mean(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.uniform(-0.5, 0.5, size=(8000, 2))
    path = audio.write_wav(tmp_path / "lr.wav", data, 16000, dtype="float32")  # lossless: the file holds `data`
    x = audio.load_audio(path)
    np.testing.assert_allclose(x, data.astype(np.float32).mean(axis=1), atol=1e-6)


@pytest.mark.parametrize(
    "suffix,codec",
    [
        (".mp3", ["-c:a", "libmp3lame"]),
        (".flac", ["-c:a", "flac"]),
        (".ogg", ["-c:a", "libvorbis"]),
        (".m4a", ["-c:a", "aac"]),
    ],
)
def test_compressed_containers_decode(tmp_path, stereo_wav, suffix, codec):
    out = tmp_path / f"voice{suffix}"
    ffmpeg("-i", stereo_wav, *codec, str(out))
    x = audio.load_audio(out)
    assert x.dtype == np.float32
    if suffix == ".flac":
        assert len(x) == 20800
    else:  # lossy codecs may keep a few ms of encoder padding
        assert abs(len(x) - 20800) <= 0.03 * 16000
    assert abs(dominant_frequency(x) - 440) < 2


def test_audio_track_of_mp4_decodes(tmp_path, stereo_wav):
    out = tmp_path / "clip.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=red:s=32x32:r=25:d=1.3",
        "-i",
        stereo_wav,
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(out),
    )
    x = audio.load_audio(out)
    assert abs(len(x) - 20800) <= 0.05 * 16000
    assert abs(dominant_frequency(x) - 440) < 2


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as err:
        audio.load_audio(tmp_path / "nope.wav")
    assert err.value.field == "audio" and "not found" in str(err.value)


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio at all")
    with pytest.raises(InputError) as err:
        audio.load_audio(path)
    assert err.value.field == "audio" and "WAV, MP3" in str(err.value)


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "broken.mp3"
    path.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)))
    with pytest.raises(InputError) as err:
        audio.load_audio(path)
    assert err.value.field == "audio"


def test_video_without_audio_track(tmp_path):
    out = tmp_path / "silent_video.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=32x32:r=25:d=0.4", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out))
    with pytest.raises(InputError) as err:
        audio.load_audio(out)
    assert err.value.field == "audio" and "no audio track" in str(err.value)


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    header_only = audio.write_wav(tmp_path / "header.wav", np.zeros(0), 16000)
    for path in (empty, header_only):
        with pytest.raises(InputError) as err:
            audio.load_audio(path)
        assert err.value.field == "audio"


# ---------------------------------------------------------------------------------------------- counts
def test_frame_counts():
    assert audio.num_video_frames(640) == 1
    assert audio.num_video_frames(639) == 0
    assert audio.num_video_frames(11200) == 17  # 0.7 s
    assert audio.num_video_frames(44100, sampling_rate=44100) == 25
    assert [audio.snap_frames(f) for f in (1, 2, 4, 5, 8, 9, 97, 100)] == [1, 1, 1, 5, 5, 9, 97, 97]
    with pytest.raises(InputError):
        audio.snap_frames(0)


# ---------------------------------------------------------------------------------------------- bands
def test_group_whisper_layers_official_33_states():
    t50, c = 40, 3
    t = torch.arange(t50, dtype=torch.float32)
    layers = torch.arange(33, dtype=torch.float32)
    channels = torch.arange(c, dtype=torch.float32) * 0.01
    hidden = 100 * t[:, None, None] + layers[None, :, None] + channels[None, None, :]  # [T50, 33, C]
    out = audio.group_whisper_layers(hidden)
    assert out.shape == (20, 5, c)
    band_offsets = torch.tensor([3.5, 11.5, 19.5, 27.5, 32.0])  # means of 0-7, 8-15, 16-23, 24-31; layer 32
    # values are linear in time, so align_corners linear interpolation is exact: output i samples t = i*(T50-1)/(T25-1)
    src = torch.arange(20, dtype=torch.float32) * (t50 - 1) / (20 - 1)
    expected = 100 * src[:, None, None] + band_offsets[None, :, None] + channels[None, None, :]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-3)
    # a batch of one (the official precomputed-feature layout) gives the same
    torch.testing.assert_close(audio.group_whisper_layers(hidden[None]), out)
    # more than 33 states (allowed by the precomputed path): the official fixed indices, state 32 as the last band
    extra = torch.cat([hidden, torch.full((t50, 1, c), -5000.0)], dim=1)
    torch.testing.assert_close(audio.group_whisper_layers(extra), out)


def test_group_whisper_layers_nonlinear_time_matches_manual_interpolation():
    torch.manual_seed(0)
    hidden = torch.randn(7, 33, 4)
    out = audio.group_whisper_layers(hidden)
    assert out.shape == (3, 5, 4)  # int(7 / 50 * 25) = 3
    bands = torch.stack(
        [
            hidden[:, 0:8].mean(1),
            hidden[:, 8:16].mean(1),
            hidden[:, 16:24].mean(1),
            hidden[:, 24:32].mean(1),
            hidden[:, 32],
        ],
        1,
    )
    # align_corners: outputs at source positions 0, 3, 6
    torch.testing.assert_close(out, bands[[0, 3, 6]])


def test_output_length_follows_official_float_expression():
    # int(58 / 50.0 * 25) is 28, not 29: the official float expression, kept for parity
    assert audio.group_whisper_layers(torch.zeros(58, 33, 2)).shape[0] == 28
    assert audio.group_whisper_layers(torch.zeros(194, 33, 2)).shape[0] == 97


def test_band_generalisation_for_small_encoders():
    hidden = torch.arange(3, dtype=torch.float32).view(1, 3, 1).expand(4, 3, 1)  # states 0, 1, 2
    out = audio.group_whisper_layers(hidden)
    # first H-1 = 2 states spread over 4 groups ([0], [0], [1], [1]) and the last state alone
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.0, 0.0, 1.0, 1.0, 2.0]))
    hidden = torch.arange(9, dtype=torch.float32).view(1, 9, 1).expand(4, 9, 1)  # 8 + 1 states
    torch.testing.assert_close(audio.group_whisper_layers(hidden)[0, :, 0], torch.tensor([0.5, 2.5, 4.5, 6.5, 8.0]))


# ---------------------------------------------------------------------------------------------- windows
def test_window_audio_features_index_pattern():
    t25 = 15
    feats = (torch.arange(t25, dtype=torch.float32) + 1).view(t25, 1, 1).expand(t25, 5, 2).clone()  # a_k = k + 1
    windows = audio.window_audio_features(feats, num_frames=17)
    assert windows.shape == (5, 8, 5, 2)
    got = windows[:, :, 0, 0].long().tolist()
    assert got == [
        [0, 0, 0, 0, 0, 1, 2, 3],  # 3 zero slots, frames -2, -1 (zero), 0, 1, 2
        [0, 1, 2, 3, 4, 5, 6, 7],  # frames -1 .. 6
        [4, 5, 6, 7, 8, 9, 10, 11],  # frames 3 .. 10
        [8, 9, 10, 11, 12, 13, 14, 15],  # frames 7 .. 14
        [12, 13, 14, 15, 0, 0, 0, 0],  # frames 11 .. 18; 15.. are past the audio
    ]
    assert (windows[..., 1, :] == windows[..., 0, :]).all()  # every band and channel windowed alike


def test_window_single_frame_and_long_video():
    feats = torch.ones(3, 5, 2)
    assert audio.window_audio_features(feats, 1).shape == (1, 8, 5, 2)
    long = audio.window_audio_features(feats, 97)
    assert long.shape == (25, 8, 5, 2)
    assert long[2:].abs().sum() == 0  # all windows past the audio are zeros


# ---------------------------------------------------------------------------------------------- Whisper
@pytest.fixture(scope="module")
def whisper():
    torch.manual_seed(0)
    config = WhisperConfig(
        d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=128, max_source_positions=1500,
    )  # fmt: skip
    encoder = WhisperEncoder(config).eval()
    return encoder, WhisperFeatureExtractor(feature_size=128), config


def speechy(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * env * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def test_extract_whisper_features_shape_and_trim(whisper):
    encoder, fe, _ = whisper
    x = speechy(0.7)
    hidden = audio.extract_whisper_features(x, encoder, fe)
    assert hidden.shape == (2 * 17, 3, 16)  # 2·N25 frames, embeddings + 2 layers, d_model
    mel = fe(x, sampling_rate=16000, return_tensors="pt").input_features
    direct = encoder(mel, output_hidden_states=True).hidden_states
    torch.testing.assert_close(hidden[:, 2], direct[2][0, :34])
    torch.testing.assert_close(hidden[:, 0], direct[0][0, :34])


def test_extract_whisper_features_chunks_over_30s(whisper):
    encoder, fe, _ = whisper
    x = speechy(31.0)  # 496000 samples: a full 30 s chunk and a 1 s chunk
    hidden = audio.extract_whisper_features(x, encoder, fe)
    n25 = 496000 // 640
    assert hidden.shape == (2 * n25, 3, 16) and 2 * n25 == 1550
    for start, rows in ((0, slice(0, 1500)), (480000, slice(1500, 1550))):
        mel = fe(x[start : start + 480000], sampling_rate=16000, return_tensors="pt").input_features
        assert mel.shape[-1] == 3000  # each chunk padded to 30 s
        ref = torch.stack(encoder(mel, output_hidden_states=True).hidden_states, dim=2)[0]
        torch.testing.assert_close(hidden[rows], ref[: rows.stop - rows.start])


def test_whisper_model_wrapper_accepted(whisper):
    encoder, fe, config = whisper
    model = WhisperModel(config).eval()
    model.encoder.load_state_dict(encoder.state_dict())
    x = speechy(0.3)
    torch.testing.assert_close(
        audio.extract_whisper_features(x, model, fe), audio.extract_whisper_features(x, encoder, fe)
    )


def test_encode_audio_matches_step_by_step(whisper, tmp_path):
    encoder, fe, _ = whisper
    x = speechy(0.7)
    windows, frames = audio.encode_audio(x, encoder, fe)
    assert frames == 17 and windows.shape == (5, 8, 5, 16)
    expected = audio.window_audio_features(
        audio.group_whisper_layers(audio.extract_whisper_features(x, encoder, fe)), 17
    )
    torch.testing.assert_close(windows, expected)
    # from a file: the same pipeline after decoding
    path = audio.write_wav(tmp_path / "v.wav", x, 16000)
    from_file, frames_file = audio.encode_audio(path, encoder, fe)
    assert frames_file == 17 and from_file.shape == windows.shape
    # an explicit longer frame count pads with zero windows and is snapped to 4n+1
    longer, n = audio.encode_audio(x, encoder, fe, num_frames=30)
    assert n == 29 and longer.shape[0] == 8
    torch.testing.assert_close(longer[:4], windows[:4])
    assert longer[6:].abs().sum() == 0


def test_encode_audio_rejects_silence_and_too_short(whisper, tmp_path):
    encoder, fe, _ = whisper
    with pytest.raises(InputError) as err:
        audio.encode_audio(np.zeros(16000, np.float32), encoder, fe)
    assert err.value.field == "audio" and "silent" in str(err.value) and "remove the audio" in str(err.value)
    quiet = audio.write_wav(tmp_path / "quiet.wav", 1e-5 * np.random.default_rng(0).standard_normal(16000), 16000)
    with pytest.raises(InputError, match="silent"):
        audio.encode_audio(quiet, encoder, fe)
    with pytest.raises(InputError, match="shorter than one video frame"):
        audio.encode_audio(speechy(0.02), encoder, fe)
